//! Configuration as a sysadmin writes it: the example is valid, mistakes are named.

use std::path::PathBuf;

use mpay_tests::mpayd;

fn example() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../daemon/mpayd.example.toml");
    std::fs::read_to_string(path).expect("example config")
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mpayd.toml");
    std::fs::write(&path, text).expect("write");
    let out = mpayd(&["check-config", path.to_str().expect("path")]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_example_configuration_is_valid() {
    let (ok, out) = check(&example());
    assert!(ok, "{out}");
    assert!(out.contains("valid (1 stations, 1 entities)"), "{out}");
}

#[test]
fn mistakes_are_refused_with_the_key_and_the_reason() {
    let cases = [
        (
            example().replace("[log]", "colour = \"red\"\n[log]"),
            "unknown field `colour`",
        ),
        (
            example().replace("00123456782", "00123456783"),
            "check digit is 3, expected 2",
        ),
        (
            example().replace("stations = [\"01111111116_01\"]", "stations = [\"nope\"]"),
            "entities[0].stations[0]: no [[stations]] has id \"nope\"",
        ),
        (
            example().replace(
                "postal_accounts = [\"IT88Q0760102600000012345678\"]",
                "postal_accounts = [\"IT92R0306902117100000046111\"]",
            ),
            "entities[0].postal_accounts[0]",
        ),
        (
            example().replace("primitive_version = 2", "primitive_version = 3"),
            "stations[0].primitive_version: must be 1 or 2",
        ),
        (
            example().replace("id = \"01111111116_01\"", "id = \"99999999999_01\""),
            "stations[0].id: \"99999999999_01\" is not a station of broker 01111111116",
        ),
        (
            example().replace("level = \"info\"", "level = \"inf\""),
            "log.level: \"inf\"",
        ),
        (
            example().replace("daily_at = \"06:30\"", "daily_at = \"6.30\""),
            "reconciliation.daily_at",
        ),
        (
            example().replace("segregation_code = 1", "application_code = 1"),
            "entities[0].iuv",
        ),
        (
            example().replace("listen = \"127.0.0.1:9480\"", "listen = \"localhost\""),
            "listen",
        ),
        (
            example().replace(EXAMPLE_KEY_HASH, "abc"),
            "entities[0].api_keys[0].sha256: must be the 64 hex characters",
        ),
        (
            example().replace(
                "name = \"tributi\"",
                &format!("name = \"tributi\"\nsha256 = \"{EXAMPLE_KEY_HASH}\"\n\n[[entities.api_keys]]\nname = \"tributi\""),
            ),
            "entities[0].api_keys[1].name: \"tributi\" appears twice",
        ),
    ];
    for (text, expected) in cases {
        let (ok, out) = check(&text);
        assert!(!ok, "accepted a bad configuration expecting {expected:?}");
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn an_unprotected_station_or_a_careless_tls_set_up_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let open = example().replace("allow = [\"127.0.0.0/8\"]", "allow = []");
    let (ok, out) = check(&open);
    assert!(!ok, "a station open to all was accepted");
    assert!(
        out.contains("station.listen") && out.contains("neither station.allow"),
        "{out}"
    );
    let (ok, out) = check(&open.replace("allow = []", "allow = [\"0.0.0.0/0\"]"));
    assert!(
        !ok && out.contains("station.listen"),
        "an allow-all list: {out}"
    );
    let (ok, out) = check(&open.replace("allow = []", "allow = []\nunprotected = true"));
    assert!(ok, "said explicitly: {out}");
    let (ok, out) = check(&open.replace("0.0.0.0:8443", "127.0.0.1:8443"));
    assert!(ok, "loopback only: {out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path.display().to_string()
    };
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let cert = file("station.crt", pem, 0o644);
    let private = file("private.key", "key", 0o640);
    let public = file("public.key", "key", 0o644);
    let one_ca = file("ca.pem", pem, 0o644);
    let no_ca = file("empty.pem", "", 0o644);
    let bundle = file("bundle.pem", &pem.repeat(140), 0o644);
    let tls = |key: &str, ca: &str| {
        open.replace(
            "# [station.tls]",
            &format!("[station.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n"),
        )
    };
    let (ok, out) = check(&tls(&private, &one_ca));
    assert!(ok, "mutual TLS with a private key: {out}");
    for (text, expected) in [
        (tls(&public, &one_ca), "station.tls.key"),
        (
            tls(&public, &one_ca),
            "readable by every user of this host (mode 0644)",
        ),
        (tls(&private, &no_ca), "holds no PEM certificate"),
        (tls(&private, &bundle), "holds 140 certificates"),
    ] {
        let (ok, out) = check(&text);
        assert!(!ok, "accepted, expecting {expected:?}");
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

/// The example's API key hash.
const EXAMPLE_KEY_HASH: &str = "8c1f8a7a5e1b3bcb5f2c7d7a2f0a7c6f1d2e3b4a5c6d7e8f9a0b1c2d3e4f5a6b";

/// `mpayd hash-key` with `input` on its standard input.
fn hash_key(input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(mpay_tests::mpayd_bin())
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpayd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write key");
    child.wait_with_output().expect("wait")
}

#[test]
fn hash_key_prints_the_sha256_of_the_key_on_stdin() {
    let out = hash_key("demo-castelverde-key\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0c66633100b2d60bf9ded045aeabe252cea380f56ae9b41f5c843b580d51f563"
    );
    // Keys that could never be presented as hashed, or too short to resist guessing.
    for bad in [
        " demo-castelverde-key\n",
        "demo-castelverde-key \n",
        "short\n",
    ] {
        let out = hash_key(bad);
        assert!(!out.status.success(), "{bad:?} was hashed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("blanks") || err.contains("16 characters"),
            "{err}"
        );
    }
}

#[test]
fn run_with_a_bad_configuration_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let text = example()
        .replace("/var/lib/mpay", data.to_str().expect("path"))
        .replace("00123456782", "00123456783");
    let path = dir.path().join("mpayd.toml");
    std::fs::write(&path, text).expect("write");
    let out = mpayd(&["run", "--config", path.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(
        !data.exists(),
        "a refused start must not create the data folder"
    );
}

#[test]
fn a_missing_file_is_said_once() {
    let out = mpayd(&["check-config", "/nonexistent/mpayd.toml"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("cannot read /nonexistent/mpayd.toml"),
        "{text}"
    );
}
