//! The command line's own contract: help and version. (Also makes `cargo test` build the
//! `mpayd` binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_mpayd"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(env!("CARGO_BIN_EXE_mpayd"))
        .arg("--help")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "run",
        "check-config",
        "demo",
        "backup",
        "restore",
        "verify-backup",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}
