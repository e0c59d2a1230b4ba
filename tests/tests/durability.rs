//! An acknowledged write survives a power cut: seen at the system-call level. The daemon runs
//! under strace; for a receipt, an API write and a bulk load, every file of the store written
//! before the acknowledgement went out on the socket was fsynced (or fdatasynced) after its last
//! write and before that acknowledgement. A kill -9 test cannot see this: the page cache
//! outlives the process, not a power cut.

use std::collections::HashMap;
use std::path::Path;

use mpay_tests::Daemon;
use mpayd::simulator::requests::{self, Caller, ReceiptSpec};
use serde_json::json;

const ENTITY: &str = "00123456782";
const KEY: &str = "demo-castelverde-key";

/// One system call as strace showed it: where it started and ended in the trace (a call another
/// thread interrupted spans an `<unfinished ...>` line and a `resumed` line).
#[derive(Debug)]
struct Call {
    name: String,
    /// The first argument as strace decoded it with -yy: `path` for a file, `TCP:[a->b]` for a
    /// socket.
    target: String,
    /// The rest of the first line (the arguments strace printed).
    args: String,
    start: usize,
    end: usize,
}

fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: HashMap<u32, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<...") {
            if let Some(i) = open.remove(&pid) {
                calls[i].end = n;
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let target = args
            .split_once('<')
            .and_then(|(_, t)| t.split_once(">,").or_else(|| t.split_once(">)")))
            .map(|(t, _)| t.to_string())
            .unwrap_or_default();
        calls.push(Call {
            name: name.to_string(),
            target,
            args: args.to_string(),
            start: n,
            end: n,
        });
        if rest.ends_with("<unfinished ...>") {
            open.insert(pid, calls.len() - 1);
        }
    }
    calls
}

fn is_write(c: &Call) -> bool {
    matches!(
        c.name.as_str(),
        "pwrite64" | "pwritev" | "pwritev2" | "write" | "writev"
    )
}

fn is_sync(c: &Call) -> bool {
    matches!(c.name.as_str(), "fsync" | "fdatasync")
}

/// The first answer with `status` sent from `port` at or after trace line `from`.
fn answer<'a>(calls: &'a [Call], port: u16, status: &str, from: usize) -> &'a Call {
    let local = format!(":{port}->");
    calls
        .iter()
        .find(|c| {
            c.start >= from
                && matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg")
                && c.target.starts_with("TCP:")
                && c.target.contains(&local)
                && c.args.contains(&format!("HTTP/1.1 {status}"))
        })
        .unwrap_or_else(|| panic!("no {status} answer from port {port} in the trace"))
}

/// Every store file written while the request was handled (from reading it off the socket to
/// the acknowledgement) was synced after its first such write and before the acknowledgement
/// started. Writes that start after that sync belong to later work and are not the acknowledged
/// write's; so do the journal's (bodies and summaries of exchanges, written once an answer is
/// ready, durable on their own schedule). Returns the files checked.
fn synced_before(calls: &[Call], store: &Path, ack: &Call) -> Vec<String> {
    let store = store.to_str().expect("utf-8 path");
    let bodies = format!("{store}/journal-bodies");
    let request = calls
        .iter()
        .find(|c| matches!(c.name.as_str(), "read" | "recvfrom") && c.target == ack.target)
        .expect("the request read from the acknowledgement's connection");
    let mut first_write: HashMap<&str, &Call> = HashMap::new();
    for c in calls
        .iter()
        .filter(|c| c.start > request.end && c.start < ack.start && is_write(c))
    {
        if c.target.starts_with(store) && !c.target.starts_with(&bodies) {
            first_write.entry(c.target.as_str()).or_insert(c);
        }
    }
    for (file, write) in &first_write {
        let synced = calls
            .iter()
            .any(|s| is_sync(s) && s.target == *file && s.start > write.end && s.end < ack.start);
        assert!(
            synced,
            "{file}: written at trace line {} ({}), not synced before the acknowledgement at line {}",
            write.start + 1,
            write.name,
            ack.start + 1
        );
    }
    first_write.keys().map(|f| f.to_string()).collect()
}

#[test]
fn acknowledged_writes_are_fsynced_before_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let trace = dir.path().join("trace.txt");
    let trace_arg = trace.to_str().expect("utf-8 path");
    let d = Daemon::demo_under(
        &[
            "strace",
            "-f",
            "-qq",
            "-yy",
            "-s",
            "64",
            "-e",
            "trace=read,recvfrom,pwrite64,pwritev,pwritev2,write,writev,sendto,sendmsg,fsync,\
             fdatasync,sync_file_range",
            "-o",
            trace_arg,
        ],
        &data,
        40,
    )
    .ready();
    let store = data.join("store");

    // A receipt for a payable notice: the only call the station gets in this test.
    let notice = d
        .notices(false)
        .into_iter()
        .find(|n| n["entity"] == ENTITY)
        .expect("a payable notice");
    let text = |k: &str| notice[k].as_str().expect("notice field").to_string();
    let amount = text("amount");
    let spec = ReceiptSpec::single(
        ENTITY,
        &text("nav"),
        &text("iuv"),
        &amount,
        "durable-1",
        "IT92R0306902117100000046111",
    );
    let caller = Caller {
        id_pa: ENTITY.into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    };
    let rt = d.soap("paSendRTV2", &requests::send_rt(&caller, true, &spec));
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");

    // An API write.
    let body = json!({
        "kind": "MENSA",
        "debtor": {"code": "RSSMRA80A01H501U", "name": "Mario Rossi"},
        "description": "Mensa scolastica",
        "options": [{"kind": "Single", "instalments": [{
            "amount": "42.00", "due": "2031-01-31", "description": "Mensa",
            "transfers": [{"amount": "42.00", "remittance": "Mensa", "category": "9/0201102SE/"}]
        }]}]
    });
    let (status, p) = d.api_call(
        "PUT",
        &format!("/api/v1/entities/{ENTITY}/positions/DURABLE-1"),
        Some(KEY),
        Some(&body),
    );
    assert_eq!(status, 201, "{p}");

    // A bulk load of several batches.
    let mut csv =
        String::from("iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category\n");
    for n in 1..=1200 {
        csv.push_str(&format!(
            "D-{n};MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa {n};2031-01-31;25.00;9/0201102SE/\n"
        ));
    }
    let job = d.bulk_finished(ENTITY, KEY, &d.bulk_upload(ENTITY, KEY, csv.as_bytes()));
    assert_eq!(job["created"], 1200, "{job}");

    let station_port = d.station.port();
    let api_port = d.api.expect("api address").port();
    let status = d.stop();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&trace).expect("trace");
    let calls = parse_trace(&text);
    // The file each commit is written to: sled's `db`, or one of fjall's journal files.
    let engine = mpay_tests::engine();
    let fjall = engine == "fjall";
    let db = match fjall {
        true => format!("{}/fjall/", store.display()),
        false => format!("{}/db", store.display()),
    };
    let wrote_db = |files: &[String]| {
        files
            .iter()
            .any(|f| if fjall { f.starts_with(&db) } else { *f == db })
    };

    let receipt_ack = answer(&calls, station_port, "200", 0);
    let files = synced_before(&calls, &store, receipt_ack);
    assert!(wrote_db(&files), "the receipt wrote {db}: {files:?}");

    let put_ack = answer(&calls, api_port, "201", receipt_ack.end);
    let files = synced_before(&calls, &store, put_ack);
    assert!(wrote_db(&files), "the PUT wrote {db}: {files:?}");

    // The job said "done" in the last answer before the daemon stopped.
    let done_ack = calls
        .iter()
        .rfind(|c| c.target.contains(&format!(":{api_port}->")) && c.args.contains("HTTP/1.1 200"))
        .expect("the job's last answer");
    synced_before(&calls, &store, done_ack);
    if engine == "fjall" {
        return;
    }

    // Every one of sled's flushes of db (a `sync_file_range`, from sled's own threads) is followed
    // by an fsync of db: in particular each bulk batch's.
    let flushes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.name == "sync_file_range" && c.target == db)
        .collect();
    assert!(flushes.len() > 3, "sled flushed db {} times", flushes.len());
    for f in flushes {
        let next_sync = calls
            .iter()
            .find(|s| s.start > f.end && is_sync(s) && s.target == db);
        assert!(
            next_sync.is_some(),
            "sled's flush at trace line {} is never followed by an fsync of db",
            f.start + 1
        );
    }
}
