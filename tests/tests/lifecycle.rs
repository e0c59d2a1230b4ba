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
        log.contains("entity         00123456782 Comune di Castelverde"),
        "{log}"
    );

    let status = daemon.stop();
    assert!(status.success(), "{status}");

    // A restart reuses the data: nothing is generated twice.
    let daemon = Daemon::demo(&data, 300).ready();
    assert_eq!(daemon.health()["store"]["positions"], 300);
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
