//! The console's figures against a demo mpayd: RPC lookups and searches over the Unix socket,
//! how soon a station exchange reaches a following console, what 16 following consoles cost the
//! station, how long a frame of each screen takes to draw at 200×60, and what an idle `mpay`
//! costs in CPU and memory. Prints each figure with its percentiles.
//!
//!     cargo build --release && cargo bench -p mpayd --bench console -- --positions 1000000
//!
//! Options: --positions N (1,000,000), --dir PATH (.bench-console, kept: the demo store takes a
//! few minutes to generate the first time), --bin DIR (target/release: mpayd and mpay),
//! --lookups N (10,000), --count N (verify requests per simulator run, 100,000).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use mpay_common::console::rpc::ConsoleClient;
use mpay_common::console::{Cursor, LiveEvent, PositionKey, PositionRow, Search};
use mpay_common::requests::PositionQuery;
use mpay_console::client::{self, deadline};
use mpay_console::tui::app::{App, Reply, Screen};
use mpay_console::tui::view::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

struct Args {
    positions: u64,
    dir: PathBuf,
    bin: PathBuf,
    lookups: usize,
    count: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        positions: 1_000_000,
        dir: PathBuf::from(".bench-console"),
        bin: PathBuf::from("target/release"),
        lookups: 10_000,
        count: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let num = |v: String| v.replace('_', "").parse::<u64>().context("a number");
        match flag.as_str() {
            "--positions" => a.positions = num(value()?)?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--bin" => a.bin = PathBuf::from(value()?),
            "--lookups" => a.lookups = num(value()?)? as usize,
            "--count" => a.count = num(value()?)?,
            "--bench" => {}
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(a)
}

/// p50 and p99 of durations, in microseconds.
fn percentiles(mut d: Vec<Duration>) -> (u128, u128) {
    d.sort_unstable();
    let at = |q: f64| {
        d.get(((d.len().saturating_sub(1)) as f64 * q).round() as usize)
            .map_or(0, Duration::as_micros)
    };
    (at(0.5), at(0.99))
}

fn report(what: &str, d: Vec<Duration>) {
    let n = d.len();
    let (p50, p99) = percentiles(d);
    println!("{what:<58} n={n:<6} p50 {p50:>6} µs  p99 {p99:>6} µs");
}

fn proc_stat(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_pages = fields.get(21)?.parse::<u64>().ok()?;
    Some((ticks, rss_pages * 4096))
}

/// A sample of the store's positions: pages of one entity's list from spread-out places.
async fn sample(
    c: &ConsoleClient,
    positions: u64,
    want: usize,
) -> anyhow::Result<Vec<PositionRow>> {
    let mut rows = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for entity in ["00123456782", "00987654324", "80001234568"] {
        for _ in 0..(want / 3000).max(1) {
            let query = PositionQuery {
                limit: Some(1000),
                after: Some(rng.u64(0..positions.max(1))),
                ..PositionQuery::default()
            };
            let page = client::answer(c.list(deadline(30), entity.parse()?, query).await)?;
            rows.extend(page);
        }
    }
    anyhow::ensure!(!rows.is_empty(), "the store has no positions to sample");
    Ok(rows)
}

async fn verify_load(bin: &Path, admin: &str, station: &str, count: u64) -> anyhow::Result<f64> {
    let mut command = Command::new(bin.join("mpayd"));
    command
        .args([
            "simulate",
            "--admin",
            &format!("http://{admin}"),
            "--target",
        ])
        .arg(format!("http://{station}/pagopa/paForNode"))
        .args([
            "--scenario",
            "verify",
            "--concurrency",
            "64",
            "--notices",
            "100000",
        ])
        .args(["--count", &count.to_string(), "--json"]);
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    report["per_second"].as_f64().context("per_second")
}

/// A console's traffic screen following the feed as the console does (`tui/worker.rs`): the
/// tail, at most ten times a second. `lossless` follows every event instead, as
/// `mpay traffic --follow` does.
async fn follow(
    socket: PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
    lossless: bool,
) -> anyhow::Result<u64> {
    let c = client::connect(&socket).await?.client;
    let mut cursor = client::answer(c.status(deadline(10)).await)?.cursor;
    let mut seen = 0;
    while !*stop.borrow() {
        let asked = Instant::now();
        let (max, tail) = if lossless { (1000, false) } else { (100, true) };
        let page = client::answer(c.events(deadline(10), cursor, max, 2000, tail).await)?;
        cursor = page.next;
        seen += page.events.len() as u64;
        if !lossless {
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(asked.elapsed())).await;
        }
    }
    Ok(seen)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let ready_file = a.dir.with_extension("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let mut daemon = Command::new(a.bin.join("mpayd"))
        .args(["demo", "--data-dir"])
        .arg(&a.dir)
        .args(["--positions", &a.positions.to_string(), "--traffic", "0"])
        .args([
            "--admin",
            "127.0.0.1:0",
            "--station",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start mpayd (cargo build --release first)")?;
    let result = run(&a, &ready_file).await;
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    result
}

async fn run(a: &Args, ready_file: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let ready: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(ready_file)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "mpayd not ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = |k: &str| ready[k].as_str().map(str::to_string).context("ready file");
    let (admin, station, socket) = (
        text("admin")?,
        text("station")?,
        PathBuf::from(text("console")?),
    );
    let c = client::connect(&socket).await?.client;
    let status = client::answer(c.status(deadline(10)).await)?;
    println!(
        "store: {} positions, {} MiB on disk, daemon RSS {} MiB",
        status.positions,
        status.disk_bytes >> 20,
        status.rss_bytes >> 20
    );
    let rows = sample(&c, status.positions, a.lookups).await?;
    let mut rng = fastrand::Rng::with_seed(11);

    // Lookups by NAV over the socket.
    let mut times = Vec::with_capacity(a.lookups);
    for _ in 0..a.lookups {
        let row = &rows[rng.usize(..rows.len())];
        let key = PositionKey::Nav(row.navs[0].clone());
        let t = Instant::now();
        client::answer(c.position(deadline(10), key).await)?;
        times.push(t.elapsed());
    }
    report("RPC position by NAV", times);

    // Searches: by fiscal code (the debtor index), by the start of a name word.
    let mut by_code = Vec::new();
    let mut by_name = Vec::new();
    for _ in 0..2000 {
        let row = &rows[rng.usize(..rows.len())];
        let search = Search {
            entity: None,
            text: row.debtor_code.to_string(),
            limit: Some(100),
        };
        let t = Instant::now();
        client::answer(c.search(deadline(10), search).await)?;
        by_code.push(t.elapsed());
        let word = row.debtor_name.split_whitespace().last().unwrap_or("a");
        let prefix: String = word.chars().take(4).collect();
        let search = Search {
            entity: None,
            text: prefix,
            limit: Some(100),
        };
        let t = Instant::now();
        client::answer(c.search(deadline(10), search).await)?;
        by_name.push(t.elapsed());
    }
    report("search by debtor fiscal code", by_code);
    report("search by name prefix (4 letters, 100 results)", by_name);

    // How soon a station exchange reaches a following console.
    let nav = rows[0].navs[0].to_string();
    let entity = rows[0].entity.to_string();
    let caller = mpayd::simulator::requests::Caller {
        id_pa: entity.clone(),
        broker: mpayd::demo::BROKER.into(),
        station: if entity == "80001234568" {
            "01111111116_02".into()
        } else {
            "01111111116_01".into()
        },
    };
    let body = mpayd::simulator::requests::verify(&caller, &entity, &nav);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start: Cursor = client::answer(c.status(deadline(10)).await)?.cursor;
    let follower = {
        let c = client::connect(&socket).await?.client;
        tokio::spawn(async move {
            let mut cursor = start;
            loop {
                let Ok(Ok(page)) = c.events(deadline(10), cursor, 500, 2000, false).await else {
                    return;
                };
                cursor = page.next;
                for e in page.events {
                    if let LiveEvent::Exchange(x) = e
                        && seen_tx.send((x.seq, Instant::now())).is_err()
                    {
                        return;
                    }
                }
            }
        })
    };
    let mut http = mpayd::http_client::Connection::new(&format!("http://{station}"))?;
    let mut answered = Vec::new();
    for _ in 0..500 {
        let request = hyper::Request::post("/pagopa/paForNode")
            .header("SOAPAction", "\"paVerifyPaymentNotice\"")
            .header("Content-Type", "text/xml");
        http.send(request, body.clone().into()).await?;
        answered.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delays = Vec::new();
    for sent in answered {
        let (_, at) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await?
            .context("follower ended")?;
        delays.push(at.saturating_duration_since(sent));
    }
    follower.abort();
    report("station answer → exchange in a following console", delays);

    // What 16 following consoles cost the station under full verify load: as the screens
    // follow it, then as 16 scripts that read every event.
    let alone = verify_load(&a.bin, &admin, &station, a.count).await?;
    for (what, lossless) in [("consoles following", false), ("lossless followers", true)] {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let followers: Vec<_> = (0..16)
            .map(|_| tokio::spawn(follow(socket.clone(), stop.clone(), lossless)))
            .collect();
        let watched = verify_load(&a.bin, &admin, &station, a.count).await?;
        let _ = stop_tx.send(true);
        let mut seen = 0;
        for f in followers {
            seen += f.await??;
        }
        println!(
            "verify at 64 connections: {alone:.0} req/s alone, {watched:.0} req/s with 16 \
             {what} ({seen} events delivered): {:.1} % less",
            (1.0 - watched / alone) * 100.0
        );
    }

    // Drawing: each screen at 200×60 with this daemon's data.
    let mut app = App::new(jiff::civil::date(2026, 11, 30));
    app.apply(Reply::Status(Box::new(client::answer(
        c.status(deadline(10)).await,
    )?)));
    app.apply(Reply::Traffic(client::answer(
        c.traffic(deadline(10), Default::default(), None, 2000)
            .await,
    )?));
    app.apply(Reply::Rows(rows.iter().take(500).cloned().collect()));
    app.apply(Reply::Jobs(client::answer(
        c.jobs(deadline(10), 200).await,
    )?));
    let mut terminal = Terminal::new(TestBackend::new(200, 60))?;
    for screen in Screen::ALL {
        app.screen = screen;
        let mut times = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            terminal.draw(|f| view::draw(f, &app, Theme { color: true }))?;
            times.push(t.elapsed());
        }
        report(&format!("draw {} at 200×60", screen.title()), times);
    }
    let view = client::answer(
        c.position(deadline(10), PositionKey::Nav(rows[0].navs[0].clone()))
            .await,
    )?;
    app.screen = Screen::Positions;
    app.apply(Reply::Position(Box::new(view)));
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        terminal.draw(|f| view::draw(f, &app, Theme { color: true }))?;
        times.push(t.elapsed());
    }
    report("draw a position's detail at 200×60", times);

    // An idle console in a real terminal: CPU and memory over 20 s.
    let server = format!("mpay-bench-{}", std::process::id());
    let command = format!(
        "{} --socket {}",
        a.bin.join("mpay").display(),
        socket.display()
    );
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&server)
            .args(args)
            .output()
    };
    tmux(&["new-session", "-d", "-x", "200", "-y", "60", &command])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pane_pid = String::from_utf8(tmux(&["list-panes", "-F", "#{pane_pid}"])?.stdout)?;
    let pid: u32 = pane_pid.trim().parse().context("the console's pid")?;
    let (t0, _) = proc_stat(pid).context("console stat")?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (t1, rss) = proc_stat(pid).context("console stat")?;
    let _ = tmux(&["kill-server"]);
    println!(
        "idle console: {:.2} % of a CPU over 20 s, RSS {} MiB",
        (t1 - t0) as f64 / 100.0 / 20.0 * 100.0,
        rss >> 20
    );
    Ok(())
}
