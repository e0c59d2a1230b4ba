//! The daemon as a sysadmin sees it: start, health, metrics, stop, crash, restart.

use mpay_tests::{Daemon, http_get, mpayd};

#[test]
fn demo_serves_health_and_metrics_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let daemon = Daemon::demo(&data, 300).ready();
    let health = daemon.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["positions"], 300);

    let (status, body) = http_get(daemon.admin, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(text.contains("mpay_positions 300"), "{text}");
    assert!(text.contains("mpay_store_healthy 1"), "{text}");
    assert!(text.contains("mpay_resident_memory_bytes"), "{text}");
    let log = daemon.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log file: {log}"
    );
    assert!(
        log.contains("entity         00123456782 Comune di Castelverde"),
        "{log}"
    );

    let status = daemon.stop();
    assert!(status.success(), "{status}");

    // A restart reuses the data: nothing is generated twice.
    let daemon = Daemon::demo(&data, 300).ready();
    assert_eq!(daemon.health()["store"]["positions"], 300);
    // The commit number goes on across restarts; the pair for the group-commit factor starts
    // again, like the flushes.
    let (_, body) = http_get(daemon.admin, "/metrics").expect("metrics");
    let text = String::from_utf8(body).expect("utf-8");
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(value("mpay_store_commits") > 0, "{text}");
    assert!(
        value("mpay_store_commits_since_start") < value("mpay_store_commits"),
        "{text}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_second_daemon_on_the_same_data_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let first = Daemon::demo(&data, 50).ready();
    let config = data.join("mpayd.toml");
    let out = mpayd(&["run", "--config", config.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(first.health()["store"]["positions"], 50);
}

#[test]
fn after_kill_9_the_daemon_restarts_with_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let daemon = Daemon::demo(&data, 400).ready();
    let before = daemon.health()["store"]["positions"].clone();
    assert!(!daemon.kill9().success());
    let daemon = Daemon::demo(&data, 400).ready();
    assert_eq!(daemon.health()["store"]["positions"], before);
    assert!(daemon.stop().success());
}

#[test]
fn a_log_that_cannot_be_written_never_stops_the_daemon() {
    // stderr on a full disk: every log line fails to be written.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let ready = dir.path().join("ready.json");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut child = std::process::Command::new(mpay_tests::mpayd_bin())
        .args([
            "demo",
            "--data-dir",
            data.to_str().expect("path"),
            "--positions",
            "20",
        ])
        .args([
            "--traffic",
            "0",
            "--admin",
            "127.0.0.1:0",
            "--station",
            "127.0.0.1:0",
        ])
        .args([
            "--api",
            "127.0.0.1:0",
            "--ready-file",
            ready.to_str().expect("path"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(full)
        .spawn()
        .expect("start mpayd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let admin = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(a) = v["admin"].as_str()
        {
            break a.parse().expect("address");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mpayd exited with {status} while its log could not be written");
        }
        assert!(std::time::Instant::now() < deadline, "mpayd not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // An error that is logged (an unknown path) is answered, and health still answers.
    assert_eq!(http_get(admin, "/nowhere").expect("admin").0, 404);
    assert_eq!(http_get(admin, "/healthz").expect("health").0, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "a SIGTERM stop with an unwritable log: {status}"
    );
}

#[test]
fn a_missing_store_is_an_error_unless_it_is_created_on_purpose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let daemon = Daemon::demo(&data, 30).ready();
    let config = data.join("mpayd.toml");
    let config = config.to_str().expect("path");
    assert!(daemon.stop().success());

    // The data folder lost its store (an unmounted disk, a wrong path): refused, nothing made.
    let moved = dir.path().join("store.elsewhere");
    std::fs::rename(data.join("store"), &moved).expect("move the store away");
    let out = mpayd(&["run", "--config", config]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no store") && err.contains("mpayd init"),
        "{err}"
    );
    assert!(
        !data.join("store").exists(),
        "a refused start created a store"
    );

    // Put back, it starts as before; created on purpose, a new installation starts empty.
    std::fs::rename(&moved, data.join("store")).expect("put the store back");
    let again = Daemon::run_config(&data.join("mpayd.toml"), &data).ready();
    assert_eq!(again.health()["store"]["positions"], 30);
    assert!(again.stop().success());
    std::fs::rename(data.join("store"), &moved).expect("move the store away");
    let out = mpayd(&["init", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("a new, empty store"));
    let fresh = Daemon::run_config(&data.join("mpayd.toml"), &data).ready();
    assert_eq!(fresh.health()["store"]["positions"], 0);
}

#[test]
fn the_service_unit_exposes_little() {
    // `systemd-analyze security` scores what a compromised daemon could reach (0 to 10): the
    // unit must stay under 2.0. Machines without systemd's tools skip the check.
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/dist/mpayd.service");
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the unit is not scored");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[test]
fn a_store_that_came_back_with_less_than_it_had_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let daemon = Daemon::demo(&data, 30).ready();
    assert!(daemon.stop().success());
    // The mark beside the engine's files says how far the store had come durably.
    let mark = data.join("store").join("commit.mark");
    let bytes = std::fs::read(&mark).expect("the durable mark");
    let reached = u64::from_be_bytes(bytes.as_slice().try_into().expect("8 bytes"));
    assert!(reached > 0);
    // As if the engine had recovered less than that (a damaged or truncated file).
    std::fs::write(&mark, (reached + 5).to_be_bytes()).expect("write");
    let config = data.join("mpayd.toml");
    let out = mpayd(&["run", "--config", config.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("holds commits up to {reached}"))
            && err.contains(&format!("commit {} was on disk", reached + 5))
            && err.contains("restore the latest backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&mark).expect("mark"),
        (reached + 5).to_be_bytes(),
        "a refused start leaves the mark as it was"
    );
    // Put right, the store opens as before.
    std::fs::write(&mark, reached.to_be_bytes()).expect("write");
    let again = Daemon::run_config(&config, &data).ready();
    assert_eq!(again.health()["store"]["positions"], 30);
    assert!(again.stop().success());
}

#[test]
fn under_systemd_the_daemon_says_ready_and_feeds_its_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket).expect("bind");
    systemd
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let notify = format!("NOTIFY_SOCKET={}", socket.display());
    // A 0.6 s watchdog: fed every 0.2 s while the runtime and the store answer.
    let wrapper = ["env", notify.as_str(), "WATCHDOG_USEC=600000"];
    let d = Daemon::demo_under(&wrapper, &dir.path().join("demo"), 10).ready();
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    while heard
        .iter()
        .filter(|m: &&String| *m == "WATCHDOG=1")
        .count()
        < 3
    {
        let n = systemd.recv(&mut buf).expect("the daemon's notifications");
        heard.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    assert!(heard.iter().any(|m| m.contains("READY=1")), "{heard:?}");
    assert!(d.stop().success());
}
