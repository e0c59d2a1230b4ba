//! The operators' console against a real daemon: the `mpay` binary's command line, its RPC
//! client, and the terminal UI driven in tmux. Operators are known by their uid on the Unix
//! socket; roles are enforced by the daemon; every adjustment is audited and lands in the same
//! ledger the REST API and the station read.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mpay_common::console::{Cursor, LiveEvent};
use mpay_console::client::{self, deadline};
use mpay_tests::{Daemon, mpay};
use mpayd::simulator::requests::{self, Caller, ReceiptSpec, read_answer};
use serde_json::Value;

const ENTITY: &str = "00123456782";
const KEY: &str = "demo-castelverde-key";

fn caller() -> Caller {
    Caller {
        id_pa: ENTITY.into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    }
}

/// A payable notice of the entity with a single transfer-free amount to reduce.
fn payable(d: &Daemon) -> Value {
    d.notices(false)
        .into_iter()
        .find(|n| n["entity"] == ENTITY)
        .expect("a payable notice")
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "mpay failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn socket(d: &Daemon) -> &Path {
    d.console.as_deref().expect("console socket")
}

fn verify_amount(d: &Daemon, nav: &str) -> String {
    let answer = read_answer(&d.soap(
        "paVerifyPaymentNotice",
        &requests::verify(&caller(), ENTITY, nav),
    ))
    .expect("verify answer");
    assert_eq!(answer.outcome, "OK", "{:?}", answer.fault_code);
    answer.amount.expect("amount")
}

#[test]
fn a_reduction_made_at_the_console_is_seen_by_the_api_the_station_and_the_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 60).ready();
    let s = socket(&d);
    let notice = payable(&d);
    let nav = notice["nav"].as_str().expect("nav").to_string();

    let status = json(&mpay(s, &["--json", "status"]));
    assert!(status["healthy"].as_bool().expect("healthy"), "{status}");
    assert!(status["positions"].as_u64().expect("positions") >= 60);

    let view = json(&mpay(s, &["--json", "position", "--nav", &nav]));
    let iupd = view["position"]["iupd"].as_str().expect("iupd").to_string();
    let found = json(&mpay(s, &["--json", "search", &iupd]));
    assert_eq!(found[0]["iupd"], iupd.as_str(), "{found}");
    let by_name = view["position"]["debtor"]["name"]
        .as_str()
        .expect("name")
        .split_whitespace()
        .nth(1)
        .expect("a name of two words at least")
        .to_lowercase();
    let found = json(&mpay(s, &["--json", "search", &by_name, "--limit", "500"]));
    assert!(
        found
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["iupd"] == iupd.as_str()),
        "a search by the name's second word {by_name} finds {iupd}: {found}"
    );

    let out = mpay(
        s,
        &[
            "--json",
            "reduce",
            "--nav",
            &nav,
            "--amount",
            "1.23",
            "--act",
            "DET-2026-9",
            "--reason",
            "errore di calcolo",
        ],
    );
    let after = json(&out);
    let last = after["ledger"].as_array().expect("ledger").last().cloned();
    assert_eq!(
        last.as_ref().map(|e| &e["event"]["actor"]["Operator"]),
        Some(&"demo".into())
    );

    // The REST API's ledger names the operator and the reason.
    let (status, ledger) = d.api_call(
        "GET",
        &format!("/api/v1/entities/{ENTITY}/positions/{iupd}/ledger"),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{ledger}");
    let text = ledger.to_string();
    assert!(
        text.contains("errore di calcolo") && text.contains("demo"),
        "{text}"
    );
    // The station offers the new amount.
    assert_eq!(verify_amount(&d, &nav), "1.23");

    // A refusal answers the same precise error as the API, exits 3 and changes nothing.
    let refused = mpay(
        s,
        &[
            "reduce", "--nav", &nav, "--amount", "5000.00", "--act", "X", "--reason", "troppo",
        ],
    );
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("NOT_A_REDUCTION"), "{stderr}");
    assert_eq!(verify_amount(&d, &nav), "1.23");

    // Both are in the audit trail, with who, from where and the outcome.
    let audit = json(&mpay(s, &["--json", "audit"]));
    let records = audit.as_array().expect("records");
    assert_eq!(records.len(), 2, "{audit}");
    assert!(
        records[0]["outcome"]
            .as_str()
            .expect("outcome")
            .starts_with("NOT_A_REDUCTION")
    );
    assert_eq!(records[1]["outcome"], "ok");
    assert_eq!(records[1]["action"], "reduce");
    assert_eq!(records[1]["reason"], "errore di calcolo");
    assert!(
        records[1]["origin"]
            .as_str()
            .expect("origin")
            .starts_with("uid ")
    );
    assert_eq!(records[1]["target"], format!("{ENTITY}/{iupd}").as_str());

    let missing = mpay(s, &["position", "--nav", "301999999999999982"]);
    assert_eq!(missing.status.code(), Some(5), "{missing:?}");

    // The dashboard's figures: two receipts for the notice, the second a double payment.
    let iuv = notice["iuv"].as_str().expect("iuv");
    for id in ["rt-console-1", "rt-console-2"] {
        let spec =
            ReceiptSpec::single(ENTITY, &nav, iuv, "1.23", id, "IT92R0306902117100000046111");
        let answer = d.soap("paSendRTV2", &requests::send_rt(&caller(), true, &spec));
        assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
    }
    let status = json(&mpay(s, &["--json", "status"]));
    assert_eq!(status["receipts_since_start"], 2, "{status}");
    assert_eq!(status["double_payments_since_start"], 1, "{status}");
}

/// The demo's configuration with its one operator changed by `edit`.
fn with_operator(d: Daemon, edit: impl Fn(&str) -> String) -> Daemon {
    d.reconfigured(edit)
}

#[test]
fn roles_are_enforced_by_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 20).ready();
    let nav = payable(&d)["nav"].as_str().expect("nav").to_string();
    let d = with_operator(d, |t| t.replace("role = \"admin\"", "role = \"viewer\""));
    let s = socket(&d);
    // A viewer reads…
    let status = json(&mpay(s, &["--json", "status"]));
    assert!(status["positions"].as_u64().is_some());
    // …but may not adjust: refused by the daemon, audited, nothing changed.
    let before = verify_amount(&d, &nav);
    let out = mpay(
        s,
        &[
            "cancel",
            "--nav",
            &nav,
            "--reason",
            "prova di un visualizzatore",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FORBIDDEN") && stderr.contains("viewer"),
        "{stderr}"
    );
    assert_eq!(verify_amount(&d, &nav), before);
    let audit = json(&mpay(s, &["--json", "audit"]));
    assert!(
        audit[0]["outcome"]
            .as_str()
            .expect("outcome")
            .starts_with("FORBIDDEN"),
        "{audit}"
    );

    // A uid that is no operator is refused every call, with a message that says why.
    let own_uid = mpayd::demo::own_uid();
    let d = with_operator(d, |t| {
        t.replace(
            &format!("uid = {own_uid}"),
            &format!("uid = {}", own_uid + 4242),
        )
    });
    let out = mpay(socket(&d), &["status"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an operator"), "{stderr}");
}

#[test]
fn the_live_feed_resumes_after_a_restart_without_losing_or_repeating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 20).ready();
    let nav = payable(&d)["nav"].as_str().expect("nav").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let follow = |socket: &Path, from: Cursor, want: usize| -> (Vec<LiveEvent>, Cursor) {
        runtime.block_on(async {
            let c = client::connect(socket).await.expect("connect").client;
            let mut cursor = from;
            let mut got = Vec::new();
            let deadline_at = Instant::now() + Duration::from_secs(20);
            while got.len() < want && Instant::now() < deadline_at {
                let page = client::answer(c.events(deadline(10), cursor, 100, 2000, false).await)
                    .expect("events");
                cursor = page.next;
                got.extend(page.events);
            }
            (got, cursor)
        })
    };
    let start = runtime.block_on(async {
        let c = client::connect(socket(&d)).await.expect("connect").client;
        client::answer(c.status(deadline(10)).await)
            .expect("status")
            .cursor
    });
    for _ in 0..3 {
        verify_amount(&d, &nav);
    }
    let (first, cursor) = follow(socket(&d), start, 3);
    let seqs = |events: &[LiveEvent]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Exchange(x) => Some(x.seq),
                LiveEvent::Ledger(_) => None,
            })
            .collect()
    };
    assert_eq!(
        seqs(&first),
        [start.exchange, start.exchange + 1, start.exchange + 2]
    );

    // The daemon restarts; meanwhile more happens: two exchanges and a ledger change.
    let data = d.data_dir.clone();
    assert!(d.stop().success());
    let d = Daemon::run_config(&data.join("mpayd.toml"), &data).ready();
    verify_amount(&d, &nav);
    verify_amount(&d, &nav);
    let out = mpay(
        socket(&d),
        &[
            "cancel",
            "--nav",
            &nav,
            "--reason",
            "annullato in autotutela",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (second, _) = follow(socket(&d), cursor, 3);
    assert_eq!(
        seqs(&second),
        [start.exchange + 3, start.exchange + 4],
        "nothing lost, nothing repeated"
    );
    let changes: Vec<String> = second
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Ledger(c) => Some(c.event.change.name().to_string()),
            LiveEvent::Exchange(_) => None,
        })
        .collect();
    assert_eq!(changes, ["cancelled"]);
    // The same cursor read again gives the same events: they are stored, not in memory.
    let (again, _) = follow(socket(&d), cursor, 3);
    assert_eq!(seqs(&again), seqs(&second));
    // A screen asks for the tail: the newest exchange, and how many it passed over.
    let tail = runtime.block_on(async {
        let c = client::connect(socket(&d)).await.expect("connect").client;
        let mut behind = cursor;
        behind.commit = u64::MAX;
        client::answer(c.events(deadline(10), behind, 1, 0, true).await).expect("events")
    });
    assert_eq!(seqs(&tail.events), [start.exchange + 4]);
    assert_eq!(tail.skipped, 1);
}

/// tmux on a server of its own, so that the test never touches an operator's sessions.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        // A server per terminal: the tests run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = format!("mpay-test-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &server, "new-session", "-d", "-s", "console"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .status()
            .expect("tmux (install it: apt-get install tmux)");
        assert!(status.success());
        Tmux { server }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.server, "send-keys", "-t", "console"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn text(&self, text: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.server, "send-keys", "-t", "console", "-l", text])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.server, "capture-pane", "-p", "-t", "console"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .status();
    }
}

#[test]
fn an_operator_reduces_a_notice_in_the_terminal_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 40).ready();
    let nav = payable(&d)["nav"].as_str().expect("nav").to_string();
    let command = format!(
        "{} --socket {}",
        mpay_tests::mpay_bin().display(),
        socket(&d).display()
    );
    let tmux = Tmux::start(120, 40, &command);
    tmux.wait_for("demo (admin)");
    tmux.keys(&["3", "/"]);
    tmux.text(&nav);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Positions (1)");
    tmux.keys(&["Enter"]);
    tmux.wait_for("ledger (");
    tmux.keys(&["r"]);
    tmux.wait_for("Reduce a notice");
    tmux.text("0.50");
    tmux.keys(&["Tab"]);
    tmux.text("DET-77");
    tmux.keys(&["Tab"]);
    tmux.text("sgravio dal terminale");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Apply this change?");
    tmux.keys(&["y"]);
    // The live feed may show the ledger entry before the answer comes back: wait for both.
    let screen = tmux.wait_for("done: reduced");
    assert!(screen.contains("operator:demo"), "{screen}");
    assert!(screen.contains("→ 0.50 (act DET-77)"), "{screen}");
    assert_eq!(verify_amount(&d, &nav), "0.50");
    // The dashboard counts that verify; q twice quits.
    tmux.keys(&["1"]);
    tmux.wait_for("paVerifyPaymentNotice");
    tmux.keys(&["q"]);
}

#[test]
fn an_operator_works_the_worklist_in_the_terminal_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The demo's payments and their settlement, with its anomalies, every two seconds.
    let d = Daemon::demo_with(
        &[],
        &dir.path().join("demo"),
        200,
        &["--traffic", "20", "--settle-every", "2"],
    )
    .ready();
    let command = format!(
        "{} --socket {}",
        mpay_tests::mpay_bin().display(),
        socket(&d).display()
    );
    let tmux = Tmux::start(160, 40, &command);
    tmux.wait_for("demo (admin)");
    // The unmatched credit of the first settlement, in the first entity's worklist.
    let deadline = Instant::now() + Duration::from_secs(30);
    tmux.keys(&["7", "/"]);
    tmux.text("not-pagopa");
    tmux.keys(&["Enter"]);
    while !tmux.screen().contains("RIMBORSO SPESE DI NOTIFICA") {
        assert!(Instant::now() < deadline, "{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(500));
        tmux.keys(&["g"]);
    }
    tmux.keys(&["x"]);
    tmux.wait_for("Dismiss with a note");
    tmux.text("rimborso spese dell'economato");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Dismiss with a note?");
    tmux.keys(&["y"]);
    tmux.wait_for("done: fix");
    // The fix is the daemon's: the command line sees it, attributed.
    let fixes = json(&mpay(
        socket(&d),
        &["--json", "fixes", "--entity", "00123456782"],
    ));
    assert_eq!(fixes[0]["fix"], "dismiss", "{fixes}");
    assert_eq!(fixes[0]["actor"]["Operator"], "demo", "{fixes}");
    // The flows screen lists the settlement's flows; Enter shows a flow's rows.
    tmux.keys(&["8"]);
    tmux.wait_for("DEMOPSP1");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Rows (");
    tmux.keys(&["q", "9"]);
    tmux.wait_for("Treasury movements");
    tmux.keys(&["q"]);
}

#[test]
fn a_remote_console_is_known_by_its_client_certificate() {
    use mpay_tests::pki::{ca, leaf};
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::demo(&dir.path().join("demo"), 20).ready();
    let nav = payable(&d)["nav"].as_str().expect("nav").to_string();
    let (ca_pem, issuer) = ca("mpay operators CA");
    let (_, stranger_ca) = ca("someone else's CA");
    let server = leaf("localhost", &issuer, true);
    let anna = leaf("anna", &issuer, false);
    let listed_nowhere = leaf("mallory", &issuer, false);
    let foreign = leaf("anna", &stranger_ca, false);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write pem");
        // Keys and certificates alike kept to their owner: a key others can read is refused.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        path.to_str().expect("utf-8 path").to_string()
    };
    let ca_path = write("ca.pem", &ca_pem);
    let (server_cert, server_key) = (
        write("server.pem", &server.0),
        write("server.key", &server.1),
    );
    let fingerprint: String = sha2::Sha256::digest(&anna.2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let d = with_operator(d, |t| {
        let tls = format!(
            "[console]\nlisten = \"127.0.0.1:0\"\n\n[console.tls]\ncert = \"{server_cert}\"\n\
             key = \"{server_key}\"\nclient_ca = \"{ca_path}\"\n"
        );
        format!(
            "{}\n[[operators]]\nname = \"anna\"\ncertificate_sha256 = \"{fingerprint}\"\n\
             role = \"operator\"\n",
            t.replace("[console]\n", &tls)
        )
    });
    let remote = d
        .remote_console
        .expect("remote console listener")
        .to_string();
    let as_remote = |who: &(String, String, Vec<u8>), args: &[&str]| {
        let cert = write("client.pem", &who.0);
        let key = write("client.key", &who.1);
        Command::new(mpay_tests::mpay_bin())
            .args([
                "--connect",
                &remote,
                "--cert",
                &cert,
                "--key",
                &key,
                "--ca",
                &ca_path,
            ])
            .args(args)
            .output()
            .expect("run mpay")
    };
    let status = as_remote(&anna, &["--json", "status"]);
    assert!(status.status.success(), "{status:?}");
    let out = as_remote(
        &anna,
        &["cancel", "--nav", &nav, "--reason", "annullato da remoto"],
    );
    assert!(out.status.success(), "{out:?}");
    let audit = json(&mpay(socket(&d), &["--json", "audit"]));
    assert_eq!(audit[0]["actor"]["Operator"], "anna", "{audit}");
    assert!(
        audit[0]["origin"]
            .as_str()
            .expect("origin")
            .starts_with("tls 127.0.0.1:")
    );
    // A certificate of the right CA that no operator has: refused by the daemon.
    let out = as_remote(&listed_nowhere, &["status"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no operator"),
        "{out:?}"
    );
    // A certificate of another CA: the TLS handshake fails.
    let out = as_remote(&foreign, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
