//! Bulk load end to end: writes a CSV of realistic positions (one instalment each, a different
//! debtor on every row, half of them with a TEFA share to the province), starts a demo mpayd,
//! drops the file into the entity's inbox and follows the job to its end, sampling the daemon's
//! RSS. Prints rows/s and the RSS peak.
//!
//!     cargo build --release -p mpayd && cargo bench -p mpayd --bench bulk -- --rows 1000000
//!
//! Options: --rows N (default 1,000,000), --mpayd PATH (default target/release/mpayd),
//! --dir PATH (default: a temporary folder, removed at the end).

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use mpay_common::model::Debtor;

const ENTITY: &str = "00123456782";
const KEY: &str = "demo-castelverde-key";

fn write_file(path: &std::path::Path, rows: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category;\
         t2_beneficiary;t2_amount;t2_remittance;t2_category"
    )?;
    let mut rng = fastrand::Rng::with_seed(42);
    for n in 1..=rows {
        let Debtor { code, name, .. } = mpayd::demo::debtor(&mut rng);
        let cents = rng.u64(2_000..90_000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let tefa = if n % 2 == 1 {
            let t = cents / 20;
            format!("80001234568;{}.{:02};TEFA;9/0101102IM/", t / 100, t % 100)
        } else {
            ";;;".to_string()
        };
        writeln!(
            out,
            "TARI26-{n:07};TARI;{code};{name};TARI 2026;2026-12-31;{amount};9/0101101IM/;{tefa}"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// A GET with the entity's key; the body as JSON.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).with_context(|| format!("GET {path}: {answer}"))
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn main() -> anyhow::Result<()> {
    let mut rows = 1_000_000u64;
    let mut mpayd = PathBuf::from("target/release/mpayd");
    let mut dir: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => rows = value()?.replace('_', "").parse()?,
            "--mpayd" => mpayd = value()?.into(),
            "--dir" => dir = Some(value()?.into()),
            "--bench" => {}
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    if !mpayd.exists() {
        // cargo runs benches from the package's folder.
        mpayd = PathBuf::from("..").join(&mpayd);
    }
    let temp = tempfile::tempdir_in(".")?;
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("positions.csv");
    let started = Instant::now();
    write_file(&file, rows)?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "bulk bench: {rows} rows, {:.0} MiB, written in {:.1}s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let data = dir.join("demo");
    let ready = dir.join("ready.json");
    let mut daemon = Command::new(&mpayd)
        .args([
            "demo",
            "--positions",
            "1000",
            "--traffic",
            "0",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--admin", "127.0.0.1:0", "--station", "127.0.0.1:0"])
        .args(["--api", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mpayd.log"))?)
        .spawn()
        .with_context(|| format!("cannot start {}", mpayd.display()))?;
    let pid = daemon.id();
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(120);
        let api: SocketAddr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(api) = v["api"].as_str()
            {
                break api.parse()?;
            }
            anyhow::ensure!(Instant::now() < deadline, "mpayd did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        let inbox = data.join("inbox").join(ENTITY);
        std::fs::create_dir_all(&inbox)?;
        std::fs::rename(&file, inbox.join("positions.csv"))?;
        let dropped = Instant::now();
        let mut peak = 0;
        let job = loop {
            std::thread::sleep(Duration::from_millis(200));
            peak = peak.max(rss_mib(pid));
            let Ok(job) = get(api, &format!("/api/v1/entities/{ENTITY}/bulk/1")) else {
                continue;
            };
            if job["status"] != "running" && job["status"] != serde_json::Value::Null {
                break job;
            }
        };
        println!("job: {job}");
        // The inbox is looked at every few seconds: the job's own times say how long it took.
        let time = |k: &str| {
            job[k]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        };
        let took = match (time("started"), time("finished")) {
            (Some(s), Some(f)) => Duration::try_from(f.duration_since(s))?,
            _ => dropped.elapsed(),
        };
        println!(
            "bulk load: {rows} rows in {:.1}s: {:.0} rows/s end to end (read, validate, commit); \
             daemon RSS peak {peak} MiB (sampled every 200 ms)",
            took.as_secs_f64(),
            rows as f64 / took.as_secs_f64()
        );
        anyhow::Ok(())
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}
