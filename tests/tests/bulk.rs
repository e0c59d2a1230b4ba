//! Bulk CSV loads as an authority's back office sends them: a job, its progress, the reject
//! report; a bad row never stops the others, and the same file twice changes nothing.

use std::time::{Duration, Instant};

use mpay_tests::{Daemon, http_request};
use serde_json::Value;

const ENTITY: &str = "00123456782";
const KEY: &str = "demo-castelverde-key";

fn upload(d: &Daemon, csv: &[u8]) -> Value {
    d.bulk_upload(ENTITY, KEY, csv)
}

fn finished(d: &Daemon, job: &Value) -> Value {
    d.bulk_finished(ENTITY, KEY, job)
}

fn rejects(d: &Daemon, job: &Value) -> Vec<Vec<String>> {
    let addr = d.api.expect("api address");
    let path = format!("/api/v1/entities/{ENTITY}/bulk/{}/rejects", job["id"]);
    let (status, body) = http_request(
        addr,
        "GET",
        &path,
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .expect("rejects");
    assert_eq!(status, 200);
    csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(body.as_slice())
        .records()
        .map(|r| r.expect("report row").iter().map(str::to_string).collect())
        .collect()
}

/// The reject of a line: row; field; code; reason; original.
fn at_line<'a>(report: &'a [Vec<String>], line: &str) -> &'a [String] {
    report
        .iter()
        .find(|r| r[0] == line)
        .unwrap_or_else(|| panic!("no reject for line {line}: {report:?}"))
}

const FILE: &str = "\u{feff}iupd;kind;debtor_code;debtor_name;description;option;due;amount;t1_category;t2_beneficiary;t2_amount;t2_remittance;t2_category
B-1;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa scolastica;single;2031-01-31;45,00;9/0201102SE/;;;;
B-2;TARI;BNCGLI80A41H501C;Giulia Bianchi;TARI 2030;single;2031-03-31;300.00;9/0101101IM/;80001234568;15.00;TEFA;9/0101102IM/
B-2;TARI;BNCGLI80A41H501C;Giulia Bianchi;TARI 2030;plan;2031-03-31;150.00;9/0101101IM/;80001234568;7.50;TEFA;9/0101102IM/
B-2;TARI;BNCGLI80A41H501C;Giulia Bianchi;TARI 2030;plan;2031-06-30;150.00;9/0101101IM/;80001234568;7.50;TEFA;9/0101102IM/
B-3;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa scolastica;single;2031-01-31;12.345;9/0201102SE/;;;;
B-4;MENSA;NOTACODE;Mario Rossi;Mensa scolastica;single;2031-01-31;20.00;9/0201102SE/;;;;
B-1;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa scolastica;single;2031-02-28;45.00;9/0201102SE/;;;;
";

#[test]
fn a_file_loads_with_rejects_and_loading_it_again_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 30).ready();
    let job = finished(&d, &upload(&d, FILE.as_bytes()));
    assert_eq!(job["rows_total"], 7, "{job}");
    assert_eq!(job["rows_done"], 7, "{job}");
    // B-1's rows are not consecutive: neither is loaded. B-3 and B-4 have a bad field.
    assert_eq!(job["created"], 1, "{job}");
    assert_eq!(job["rejected_rows"], 4, "{job}");
    assert!(job["file_error"].is_null(), "{job}");

    let report = rejects(&d, &job);
    assert_eq!(report.len(), 4, "{report:?}");
    let line = |n: &str| at_line(&report, n);
    // row; field; code; reason; original
    assert!(line("6")[1].contains("amount"), "{report:?}");
    assert_eq!(line("6")[2], "INVALID_FIELD", "{report:?}");
    assert!(line("6")[3].contains("two decimals"), "{report:?}");
    assert!(line("7")[1].contains("debtor"), "{report:?}");
    for l in ["2", "8"] {
        assert_eq!(line(l)[2], "DUPLICATE_IUPD", "{report:?}");
        assert!(line(l)[3].contains("not consecutive"), "{report:?}");
        assert!(line(l)[4].starts_with("B-1;"), "{report:?}");
    }
    let (status, _) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/B-1"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 404, "nothing of B-1 is loaded");

    // The positions are there, with the plan and the province's share.
    let (status, p) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/B-2"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["options"].as_array().map(Vec::len), Some(2), "{p}");
    let (_, ledger) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/B-2/ledger"),
        Some(KEY),
        None,
    );
    let events = ledger["events"].as_array().map(Vec::len);

    // The same file again: nothing new.
    let again = finished(&d, &upload(&d, FILE.as_bytes()));
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["unchanged"], 1, "{again}");
    assert_eq!(again["rejected_rows"], 4, "{again}");
    let (_, ledger) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/B-2/ledger"),
        Some(KEY),
        None,
    );
    assert_eq!(ledger["events"].as_array().map(Vec::len), events);

    // A cancellation row.
    let cancel = "action,iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n\
                  cancel,B-2,TARI,BNCGLI80A41H501C,Giulia Bianchi,TARI 2030,2031-03-31,300.00,x\n";
    let job = finished(&d, &upload(&d, cancel.as_bytes()));
    assert_eq!(job["cancelled"], 1, "{job}");
    let (_, p) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/B-2"),
        Some(KEY),
        None,
    );
    assert_eq!(p["status"], "Cancelled", "{p}");
}

#[test]
fn a_file_that_cannot_be_read_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let cases: [(&[u8], &str, &str, &str); 4] = [
        (
            b"# layout v2\niupd;kind\nX;Y\n",
            "0",
            "UNKNOWN_LAYOUT",
            "this mpayd reads layout v1",
        ),
        (b"iupd;kind\nX;Y\n", "0", "MISSING_COLUMN", "missing column"),
        (
            b"iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category;colour\n",
            "0",
            "UNKNOWN_COLUMN",
            "unknown column \"colour\"",
        ),
        // A Latin-1 line is refused alone, with its line number; the others would load.
        (
            b"iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category\nB;K;ANONIMO;Citt\xe0;D;2031-01-01;1.00;c\n",
            "2",
            "NOT_UTF8",
            "line 2 is not UTF-8",
        ),
    ];
    for (file, row, code, reason) in cases {
        let job = finished(&d, &upload(&d, file));
        assert_eq!(job["created"], 0, "{job}");
        assert_eq!(job["rejected_rows"], job["rows_total"], "{job}");
        assert_eq!(job["file_error"].is_string(), row == "0", "{job}");
        let report = rejects(&d, &job);
        assert_eq!(report.len(), 1, "{report:?}");
        assert_eq!(report[0][0], row, "{report:?}");
        assert_eq!(report[0][2], code, "{report:?}");
        assert!(
            report[0][3].contains(reason),
            "expected {reason:?} in {report:?}"
        );
    }
}

#[test]
fn files_dropped_in_the_inbox_are_loaded_and_moved_to_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let inbox = d.data_dir.join("inbox").join(ENTITY);
    std::fs::create_dir_all(&inbox).expect("inbox");
    let file = "iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n\
                IN-1,MENSA,RSSMRA80A01H501U,Mario Rossi,Mensa,2031-01-31,30.00,9/0201102SE/\n\
                IN-2,MENSA,RSSMRA80A01H501U,Mario Rossi,Mensa,2031-01-31,0.00,9/0201102SE/\n";
    // Written under another name first, as a careful back office does.
    std::fs::write(inbox.join(".mensa.part"), file).expect("write");
    std::fs::rename(inbox.join(".mensa.part"), inbox.join("mensa.csv")).expect("rename");
    let done = inbox.join("done").join("mensa.csv");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(Instant::now() < deadline, "the inbox file was not loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!inbox.join("mensa.csv").exists());
    let report = std::fs::read_to_string(inbox.join("done").join("mensa.csv.rejects.csv"))
        .expect("reject report beside the file");
    assert!(report.contains("IN-2"), "{report}");
    let (status, p) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/IN-1"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{p}");
    // Uploads go through the inbox too, and end in done/.
    let job = finished(&d, &upload(&d, FILE.as_bytes()));
    let name = job["file"].as_str().expect("file name");
    assert!(inbox.join("done").join(name).exists(), "{job}");

    // The same name dropped again: archived beside the first, neither report overwritten.
    let first = finished(&d, &serde_json::json!({"id": 1}));
    assert_eq!(first["file"], "mensa.csv", "{first}");
    let again = "iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n\
                 IN-3,MENSA,RSSMRA80A01H501U,Mario Rossi,Mensa,2031-01-31,31.00,9/0201102SE/\n";
    std::fs::write(inbox.join(".mensa.part"), again).expect("write");
    std::fs::rename(inbox.join(".mensa.part"), inbox.join("mensa.csv")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let (_, j) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{ENTITY}/bulk/3"),
            Some(KEY),
            None,
        );
        if j["status"] == "done" {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "the second file was not loaded: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(second["archived"], "mensa.csv.job3", "{second}");
    assert!(inbox.join("done").join("mensa.csv.job3").exists());
    assert_eq!(second["created"], 1, "{second}");
    assert!(rejects(&d, &second).is_empty());
    assert_eq!(
        rejects(&d, &first).len(),
        1,
        "the first report is still there"
    );

    // A name as long as the file system allows: its report's name is cut to fit, not lost.
    let long = format!("{}.csv", "x".repeat(251));
    std::fs::write(inbox.join(".long.part"), file).expect("write");
    std::fs::rename(inbox.join(".long.part"), inbox.join(&long)).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, j) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{ENTITY}/bulk/4"),
            Some(KEY),
            None,
        );
        if j["status"] == "done" {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "the long name was not loaded: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(job["file"], long.as_str(), "{job}");
    let report = rejects(&d, &job);
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(report[0][4].contains("IN-2"), "{report:?}");
    let names: Vec<String> = std::fs::read_dir(inbox.join("done"))
        .expect("done")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("xxxx") && n.ends_with(".rejects.csv")),
        "{names:?}"
    );
}

#[test]
fn links_in_an_inbox_are_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let inbox = d.data_dir.join("inbox").join(ENTITY);
    std::fs::create_dir_all(&inbox).expect("inbox");
    // Another entity's file, and the daemon's configuration, linked into this inbox.
    let other = d.data_dir.join("inbox").join("00987654324").join("done");
    std::fs::create_dir_all(&other).expect("other inbox");
    let theirs = other.join("debtors.csv");
    std::fs::write(
        &theirs,
        "iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n\
         THEIRS-1,MENSA,RSSMRA80A01H501U,Mario Rossi,Mensa,2031-01-31,30.00,9/0201102SE/\n",
    )
    .expect("their file");
    std::os::unix::fs::symlink(&theirs, inbox.join("stolen.csv")).expect("link");
    std::os::unix::fs::symlink(d.data_dir.join("mpayd.toml"), inbox.join("config.xml"))
        .expect("link");
    // A real file named in capitals is taken, as any other: by then the links have been seen.
    let file = "iupd,kind,debtor_code,debtor_name,description,due,amount,t1_category\n\
                CAPS-1,MENSA,RSSMRA80A01H501U,Mario Rossi,Mensa,2031-01-31,30.00,9/0201102SE/\n";
    std::fs::write(inbox.join(".caps.part"), file).expect("write");
    std::fs::rename(inbox.join(".caps.part"), inbox.join("MENSA.CSV")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inbox.join("done").join("MENSA.CSV").exists() {
        assert!(Instant::now() < deadline, "MENSA.CSV was not loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        inbox.join("stolen.csv").exists(),
        "the link is left where it is"
    );
    assert!(
        inbox.join("config.xml").exists(),
        "the link is left where it is"
    );
    assert!(!inbox.join("done").join("config.xml.result.json").exists());
    let (status, _) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/THEIRS-1"),
        Some(KEY),
        None,
    );
    assert_eq!(
        status, 404,
        "another entity's debtors are not loaded as ours"
    );
    let (status, _) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/CAPS-1"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200);

    // A `done` that is a link elsewhere: the next file stays in the inbox, nothing moves there.
    std::fs::rename(inbox.join("done"), inbox.join("done-real")).expect("move done");
    std::os::unix::fs::symlink(&other, inbox.join("done")).expect("link done");
    std::fs::write(inbox.join(".next.part"), file.replace("CAPS-1", "CAPS-2")).expect("write");
    std::fs::rename(inbox.join(".next.part"), inbox.join("next.csv")).expect("rename");
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !other.join("next.csv").exists(),
        "nothing was moved through the link"
    );
}

#[test]
fn a_json_file_loads_each_position_through_the_same_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let position = |iupd: &str, amount: &str| {
        serde_json::json!({
            "iupd": iupd,
            "kind": "MENSA",
            "debtor": {"code": "RSSMRA80A01H501U", "name": "Mario Rossi"},
            "description": "Mensa scolastica",
            "options": [{"kind": "Single", "instalments": [{
                "amount": amount, "due": "2031-01-31", "description": "Mensa gennaio",
                "transfers": [{"amount": amount, "remittance": "Mensa", "category": "9/0201102SE/"}]
            }]}]
        })
    };
    let file = serde_json::json!([
        position("J-1", "30.00"),
        position("J-2", "1.234"),
        position("J-1", "31.00"),
        {"iupd": "J-3", "action": "cancel"}
    ]);
    let bytes = serde_json::to_vec(&file).expect("json");
    let job = finished(&d, &upload(&d, &bytes));
    assert_eq!(job["rows_total"], 4, "{job}");
    assert_eq!(job["created"], 1, "{job}");
    assert_eq!(job["rejected_rows"], 3, "{job}");
    let report = rejects(&d, &job);
    let reason = |row: &str| at_line(&report, row)[1..4].join(" ");
    assert!(reason("2").contains("amount"), "{report:?}");
    assert!(reason("3").contains("twice"), "{report:?}");
    assert!(
        reason("4").contains("NOT_FOUND no position J-3"),
        "{report:?}"
    );
    assert!(
        job["file"].as_str().is_some_and(|f| f.ends_with(".json")),
        "{job}"
    );
    let again = finished(&d, &upload(&d, &bytes));
    assert_eq!(again["unchanged"], 1, "{again}");
}

/// Positions of one instalment each; every 500th row has an amount with three decimals.
/// Rows `K-1`…: every 500th refused (an amount in tenths of a cent); every 1000th from the
/// first owed by `OTHER_DEBTOR`, everything else by Mario Rossi.
fn big_file(rows: u64) -> String {
    let mut f =
        String::from("iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category\n");
    for n in 1..=rows {
        let amount = if n % 500 == 0 { "1.001" } else { "25.00" };
        let debtor = match n % 1000 {
            1 => format!("{OTHER_DEBTOR};Luigi Verdi"),
            _ => "RSSMRA80A01H501U;Mario Rossi".into(),
        };
        f.push_str(&format!(
            "K-{n};MENSA;{debtor};Mensa {n};2031-01-31;{amount};9/0201102SE/\n"
        ));
    }
    f
}

/// A debtor of `big_file` and of nothing in the demo data.
const OTHER_DEBTOR: &str = "VRDLGU70A01F205R";

/// The iupds of the entity's positions owed by `debtor`, through the debtor index, every page.
fn owed_by(d: &Daemon, debtor: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/api/v1/entities/{ENTITY}/positions?debtor={debtor}&limit=1000{after}");
        let (status, page) = d.api_call("GET", &path, Some(KEY), None);
        assert_eq!(status, 200, "{page}");
        for p in page["positions"].as_array().expect("positions") {
            seen.push(p["iupd"].as_str().expect("iupd").to_owned());
        }
        match page["next"].as_u64() {
            Some(n) => after = format!("&after={n}"),
            None => return seen,
        }
    }
}

fn stored_positions(d: &Daemon) -> u64 {
    let (status, body) = mpay_tests::http_get(d.admin, "/healthz").expect("healthz");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_slice(&body).expect("healthz json");
    health["store"]["positions"].as_u64().expect("positions")
}

/// Kills the daemon once the job at `path` has done some of its `rows` and not all.
fn kill_half_way(d: Daemon, path: &str, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, j) = d.api_call("GET", path, Some(KEY), None);
        let done = j["rows_done"].as_u64().unwrap_or(0);
        assert!(done < rows, "the load finished before the kill: {j}");
        if done >= 1_500 {
            break;
        }
        assert!(Instant::now() < deadline, "the load did not start: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
}

#[test]
fn a_load_killed_whose_file_left_the_inbox_still_has_its_positions_found_by_debtor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let d = Daemon::demo(&data, 10).ready();
    let rows = 6_000;
    let job = upload(&d, big_file(rows).as_bytes());
    let path = format!("/api/v1/entities/{}/bulk/{}", ENTITY, job["id"]);
    let file = d
        .data_dir
        .join("inbox")
        .join(ENTITY)
        .join(job["file"].as_str().expect("file"));
    kill_half_way(d, &path, rows);
    std::fs::remove_file(&file).expect("file taken out of the inbox");
    let d = Daemon::demo(&data, 10).ready();
    // The job will not carry on: it is abandoned, and what it loaded before the kill is put
    // in the search indexes at start.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, j) = d.api_call("GET", &path, Some(KEY), None);
        let verdi = owed_by(&d, OTHER_DEBTOR);
        if j["status"] == "abandoned" && verdi.iter().any(|iupd| iupd == "K-1001") {
            assert!(verdi.contains(&"K-1".to_string()), "{verdi:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{j} {verdi:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_load_killed_half_way_resumes_under_its_job_id_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let d = Daemon::demo(&data, 10).ready();
    let before = stored_positions(&d);
    let rows = 6_000;
    let job = upload(&d, big_file(rows).as_bytes());
    let id = job["id"].clone();
    let path = format!("/api/v1/entities/{ENTITY}/bulk/{id}");
    kill_half_way(d, &path, rows);
    let d = Daemon::demo(&data, 10).ready();
    let partly = stored_positions(&d) - before;
    assert!(
        partly > 0 && partly < rows,
        "{partly} positions in after the kill"
    );

    // The file is loaded again at start, under the job id the authority was given.
    let job = finished(&d, &serde_json::json!({ "id": id }));
    let rejected = rows / 500;
    assert_eq!(job["rows_done"], rows, "{job}");
    assert_eq!(job["rejected_rows"], rejected, "{job}");
    assert_eq!(
        job["created"].as_u64().unwrap_or(0) + job["unchanged"].as_u64().unwrap_or(0),
        rows - rejected,
        "{job}"
    );
    assert_eq!(
        stored_positions(&d) - before,
        rows - rejected,
        "each position once"
    );
    // It carried on after the last batch it had recorded: at most one batch is seen twice.
    assert!(job["unchanged"].as_u64() <= Some(500), "{job}");
    // Found by their debtor, those loaded before the kill too (their search entries, left
    // unwritten by the kill, were made again when the job carried on).
    let mut verdi = owed_by(&d, OTHER_DEBTOR);
    verdi.sort();
    assert_eq!(
        verdi,
        ["K-1", "K-1001", "K-2001", "K-3001", "K-4001", "K-5001"]
    );
    let report = rejects(&d, &job);
    assert_eq!(
        report.len() as u64,
        rejected,
        "each reject once: {report:?}"
    );
    assert!(report.iter().all(|r| r[1].contains("amount")), "{report:?}");

    // A finished job still answers after a restart, with its report; new jobs get new ids.
    d.stop();
    let d = Daemon::demo(&data, 10).ready();
    let (status, again) = d.api_call("GET", &path, Some(KEY), None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, job);
    assert_eq!(rejects(&d, &job).len() as u64, rejected);
    let next = finished(&d, &upload(&d, FILE.as_bytes()));
    assert!(next["id"].as_u64() > id.as_u64(), "{next} after {id}");
}

#[test]
fn a_position_with_an_unreadable_row_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    // P-1: three instalments, the second with a field too many; P-2 fine; a row without iupd.
    let file = b"iupd;kind;debtor_code;debtor_name;description;option;due;amount;t1_category\n\
        P-1;TARI;RSSMRA80A01H501U;Mario Rossi;TARI;plan;2031-01-31;10.00;9/0101101IM/\n\
        P-1;TARI;RSSMRA80A01H501U;Mario Rossi;TARI;plan;2031-02-28;10.00;9/0101101IM/;extra\n\
        P-1;TARI;RSSMRA80A01H501U;Mario Rossi;TARI;plan;2031-03-31;10.00;9/0101101IM/\n\
        P-2;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/\n\
        ;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/\n\
        P-3;MENSA;RSSMRA80A01H501U;Citt\xe0;Mensa;single;2031-01-31;5.00;9/0201102SE/\n\
        P-3;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-02-28;5.00;9/0201102SE/\n";
    let job = finished(&d, &upload(&d, file));
    assert_eq!(job["rows_total"], 7, "{job}");
    assert_eq!(job["created"], 1, "{job}");
    assert_eq!(job["rejected_rows"], 6, "{job}");
    let report = rejects(&d, &job);
    let line = |n: &str| at_line(&report, n);
    assert_eq!(line("3")[2], "NOT_CSV", "{report:?}");
    assert!(
        line("3")[3].contains("10 fields, the header has 9"),
        "{report:?}"
    );
    for l in ["2", "4"] {
        assert!(
            line(l)[3].contains("position refused at line 3"),
            "{report:?}"
        );
    }
    assert_eq!(line("6")[1], "iupd", "{report:?}");
    assert!(line("6")[3].contains("missing"), "{report:?}");
    assert_eq!(line("7")[2], "NOT_UTF8", "{report:?}");
    assert!(
        line("8")[3].contains("position refused at line 7"),
        "{report:?}"
    );
    for iupd in ["P-1", "P-3"] {
        let (status, _) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{ENTITY}/positions/{iupd}"),
            Some(KEY),
            None,
        );
        assert_eq!(status, 404, "nothing of {iupd} is loaded");
    }
    let tefa = b"iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category;t2_beneficiary;t2_category\n\
        T-1;TARI;RSSMRA80A01H501U;Mario Rossi;TARI;2031-01-31;100.00;9/0101101IM/;80001234568;9/0101102IM/\n";
    let job = finished(&d, &upload(&d, tefa));
    assert_eq!(job["rejected_rows"], 1, "{job}");
    let report = rejects(&d, &job);
    assert_eq!(report[0][1], "t2_amount", "{report:?}");
    assert!(report[0][3].contains("no t2_amount"), "{report:?}");
}

#[test]
fn windows_and_old_mac_line_endings_give_the_file_s_own_line_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let rows = [
        "iupd;kind;debtor_code;debtor_name;description;option;due;amount;t1_category",
        "E-1;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/",
        "E-2;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5,000;9/0201102SE/",
        "E-3;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/;x",
        "E-4;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/",
    ];
    for (ending, tag) in [("\r\n", "W"), ("\r", "M"), ("\n", "U")] {
        let file = rows.join(ending).replace("E-", &format!("{tag}-")) + ending;
        let job = finished(&d, &upload(&d, file.as_bytes()));
        assert_eq!(job["rows_total"], 4, "{tag}: {job}");
        assert_eq!(job["created"], 2, "{tag}: {job}");
        let report = rejects(&d, &job);
        assert_eq!(report.len(), 2, "{tag}: {report:?}");
        assert!(
            at_line(&report, "3")[1].ends_with("amount"),
            "{tag}: {report:?}"
        );
        assert!(
            at_line(&report, "4")[3].contains("line 4 has 10 fields"),
            "{tag}: {report:?}"
        );
    }
}

#[test]
fn a_line_that_never_ends_or_an_empty_file_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let header = "iupd;kind;debtor_code;debtor_name;description;option;due;amount;t1_category\n";
    let row = "L-1;MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;single;2031-01-31;5.00;9/0201102SE/\n";
    // A header of a million columns (2 MB on one line), and a long row after a good one.
    let endless = ";".repeat(1 << 20);
    let long_row = format!(
        "{header}{row}L-2;{}\n{}",
        "x".repeat(100_000),
        row.replace("L-1", "L-3")
    );
    let cases: [(Vec<u8>, &str, &str); 5] = [
        (
            endless.into_bytes(),
            "LINE_TOO_LONG",
            "line 1 is longer than 64 KiB",
        ),
        (
            long_row.into_bytes(),
            "LINE_TOO_LONG",
            "line 3 is longer than 64 KiB",
        ),
        (Vec::new(), "EMPTY_FILE", "it is empty"),
        (b"\r\n\r\n".to_vec(), "EMPTY_FILE", "it is empty"),
        (
            br#"{"iupd": "J-1"}"#.to_vec(),
            "NOT_JSON",
            "a JSON bulk file is an array of positions",
        ),
    ];
    for (file, code, reason) in cases {
        let job = finished(&d, &upload(&d, &file));
        assert_eq!(job["created"], 0, "{job}");
        assert!(
            job["file_error"]
                .as_str()
                .is_some_and(|e| e.contains(reason)),
            "{job}"
        );
        let report = rejects(&d, &job);
        assert_eq!(report.len(), 1, "{report:?}");
        assert_eq!(report[0][2], code, "{report:?}");
    }
    let (status, _) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/L-1"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 404, "nothing of a refused file is loaded");
}

#[test]
fn rows_go_through_the_api_rules_and_can_replace() {
    use mpay_common::ids::{AuxDigit, IuvSettings};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let montalto = IuvSettings {
        aux: AuxDigit::Three,
        segregation_code: Some(2),
        application_code: None,
    };
    let foreign = montalto.notice(9_000_001).expect("nav");
    let head = "action;iupd;kind;debtor_code;debtor_name;description;nav;due;amount;\
                t1_category;t1_iban;t2_beneficiary;t2_amount;t2_remittance;t2_category\n";
    let row = |action: &str, iupd: &str, nav: &str, amount: &str, iban: &str, t2: &str| {
        let t2 = match t2 {
            "" => ";;;".to_string(),
            a => format!("80001234568;{a};TEFA;9/0101102IM/"),
        };
        format!(
            "{action};{iupd};TARI;RSSMRA80A01H501U;Mario Rossi;TARI 2031;{nav};2031-06-30;\
             {amount};9/0101101IM/;{iban};{t2}\n"
        )
    };
    let file = [
        head.to_string(),
        row("create", "U-1", "", "20.00", "", ""),
        // The TEFA share is more than the instalment: the transfers cannot add up.
        row("create", "S-1", "", "10.00", "", "15.00"),
        row("create", "N-1", foreign.as_ref(), "10.00", "", ""),
        row(
            "create",
            "I-1",
            "",
            "10.00",
            "IT64E0200802626000101010101",
            "",
        ),
        row("create", "T-1", "", "30.00", "", "5.00"),
    ]
    .concat();
    let job = finished(&d, &upload(&d, file.as_bytes()));
    assert_eq!(job["created"], 2, "{job}");
    assert_eq!(job["rejected_rows"], 3, "{job}");
    let report = rejects(&d, &job);
    assert!(at_line(&report, "3")[1].contains("transfers"), "{report:?}");
    assert!(at_line(&report, "4")[1].ends_with("nav"), "{report:?}");
    assert!(at_line(&report, "5")[1].contains("target"), "{report:?}");
    let (_, t) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/T-1"),
        Some(KEY),
        None,
    );
    let transfers = &t["options"][0]["instalments"][0]["transfers"];
    assert_eq!(transfers[0]["amount"], 2_500, "{t}");
    assert_eq!(transfers[1]["amount"], 500, "{t}");

    // An update row replaces the position; the same file again changes nothing.
    let update = [head.to_string(), row("update", "U-1", "", "25.00", "", "")].concat();
    let job = finished(&d, &upload(&d, update.as_bytes()));
    assert_eq!(job["replaced"], 1, "{job}");
    let job = finished(&d, &upload(&d, update.as_bytes()));
    assert_eq!(job["unchanged"], 1, "{job}");
    // An update for a position that does not exist creates nothing.
    let ghost = [
        head.to_string(),
        row("update", "U-404", "", "25.00", "", ""),
    ]
    .concat();
    let job = finished(&d, &upload(&d, ghost.as_bytes()));
    assert_eq!(
        (job["created"].as_u64(), job["rejected_rows"].as_u64()),
        (Some(0), Some(1)),
        "{job}"
    );
    assert_eq!(rejects(&d, &job)[0][2], "NOT_FOUND");

    // A file may name its layout; line numbers stay the file's.
    let named = [
        "# layout v1\n".to_string(),
        head.to_string(),
        row("create", "L-1", "", "10.00", "", ""),
        row("create", "L-2", "", "1.234", "", ""),
    ]
    .concat();
    let job = finished(&d, &upload(&d, named.as_bytes()));
    assert_eq!(job["created"], 1, "{job}");
    assert_eq!(at_line(&rejects(&d, &job), "4")[2], "INVALID_FIELD");

    // A JSON file that is not JSON: refused whole, with the reason.
    let job = finished(&d, &upload(&d, b"[{\"iupd\": "));
    assert!(
        job["file_error"]
            .as_str()
            .is_some_and(|e| e.contains("JSON")),
        "{job}"
    );
    assert_eq!(rejects(&d, &job)[0][2], "NOT_JSON");
}

#[test]
fn report_cells_that_look_like_formulas_are_kept_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let file = "iupd;kind;debtor_code;debtor_name;description;due;amount;t1_category\n\
                =HYPERLINK(\"http://x\");MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;2031-01-31;25.00;9/0201102SE/\n\
                @SUM(A1);MENSA;RSSMRA80A01H501U;Mario Rossi;Mensa;2031-01-31;25.00;9/0201102SE/\n";
    let job = finished(&d, &upload(&d, file.as_bytes()));
    assert_eq!(job["rejected_rows"], 2, "{job}");
    let report = rejects(&d, &job);
    let originals: Vec<&str> = report.iter().map(|r| r[4].as_str()).collect();
    assert!(originals[0].starts_with("'=HYPERLINK"), "{report:?}");
    assert!(originals[1].starts_with("'@SUM"), "{report:?}");
}

#[test]
fn an_entity_lists_its_own_jobs_newest_first_and_each_is_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            let job = finished(&d, &upload(&d, FILE.as_bytes()));
            job["id"].as_u64().expect("id")
        })
        .collect();
    // Another entity's job is not among this one's.
    let other = d.bulk_upload("00987654324", "demo-montalto-key", FILE.as_bytes());
    d.bulk_finished("00987654324", "demo-montalto-key", &other);
    let list = |query: &str| {
        let (status, page) = d.api_call(
            "GET",
            &format!("/api/v1/entities/{ENTITY}/bulk{query}"),
            Some(KEY),
            None,
        );
        assert_eq!(status, 200, "{page}");
        page
    };
    let all = list("");
    let listed: Vec<u64> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(
        listed,
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "{all}"
    );
    assert!(all["next"].is_null(), "{all}");
    assert_eq!(all["jobs"][0]["created"], 0, "{all}");
    let first = list("?limit=2");
    assert_eq!(first["jobs"].as_array().map(Vec::len), Some(2), "{first}");
    let rest = list(&format!("?limit=2&before={}", first["next"]));
    assert_eq!(rest["jobs"][0]["id"], ids[0], "{rest}");
    assert!(rest["next"].is_null(), "{rest}");
    let (status, bad) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/bulk?limit=0"),
        Some(KEY),
        None,
    );
    assert_eq!(
        (status, &bad["field"]),
        (400, &serde_json::json!("limit")),
        "{bad}"
    );
    let log = d.log_text();
    for id in ids {
        assert!(
            log.contains(&format!("job={id}")) && log.contains("bulk job done"),
            "{log}"
        );
    }
}

#[test]
fn an_entity_s_inbox_has_a_quota_and_cut_uploads_are_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 10).ready();
    // An upload cut short by a crash, and an authority's own hidden file.
    let inbox = d.data_dir.join("inbox").join(ENTITY);
    std::fs::create_dir_all(&inbox).expect("inbox");
    std::fs::write(
        inbox.join(".upload-20261201T000000.000000Z.part"),
        "iupd;kin",
    )
    .expect("write");
    std::fs::write(inbox.join(".mensa.part"), "iupd;kind").expect("write");
    let d = d.reconfigured(|text| text.replace("inbox_quota_mib = 2048", "inbox_quota_mib = 1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while inbox.join(".upload-20261201T000000.000000Z.part").exists() {
        assert!(Instant::now() < deadline, "the cut upload is still there");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inbox.join(".mensa.part").exists(), "not ours to remove");
    // Small files fit; one that would take the inbox past 1 MiB is refused, and not kept.
    finished(&d, &upload(&d, FILE.as_bytes()));
    let big = format!("{FILE}{}", "#".repeat(1 << 20));
    let addr = d.api.expect("api address");
    let (status, body) = mpay_tests::http_request(
        addr,
        "POST",
        &format!("/api/v1/entities/{ENTITY}/bulk"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        big.as_bytes(),
    )
    .expect("upload");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("api.inbox_quota_mib"), "{text}");
    let files = std::fs::read_dir(&inbox).expect("inbox").count();
    assert_eq!(files, 2, "only done/ and the authority's own file");
}
