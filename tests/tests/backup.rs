//! Backups as a sysadmin takes them: online from the running daemon, verified, restored only
//! when the daemon is stopped, never losing the store they replace.

use mpay_tests::{Daemon, mpayd};
use sha2::Digest;

fn run(args: &[&str]) -> (bool, String) {
    let out = mpayd(args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A demo store of `positions` in `dir/demo`, backed up to `dir/b.mpaybak`, its daemon stopped:
/// the data folder, its configuration and the backup.
fn backed_up(
    dir: &std::path::Path,
    positions: u64,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("demo");
    let daemon = Daemon::demo(&data, positions).ready();
    let config = data.join("mpayd.toml");
    let path = dir.join("b.mpaybak");
    let (ok, out) = run(&[
        "backup",
        "--config",
        config.to_str().expect("path"),
        path.to_str().expect("path"),
    ]);
    assert!(ok, "{out}");
    assert!(daemon.stop().success());
    (data, config, path)
}

#[test]
fn online_backup_then_restore_gives_back_the_same_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let daemon = Daemon::demo(&data, 250).ready();
    let config = data.join("mpayd.toml");
    let config = config.to_str().expect("path");
    let file = dir.path().join("nightly.mpaybak");
    let file = file.to_str().expect("path");

    // A link planted where the backup writes aside is not followed.
    let planted = dir.path().join("planted");
    std::fs::write(&planted, "keep me").expect("write");
    std::os::unix::fs::symlink(&planted, dir.path().join(".nightly.mpaybak.partial"))
        .expect("link");
    let (ok, out) = run(&["backup", "--config", config, file]);
    assert!(!ok, "{out}");
    assert_eq!(std::fs::read_to_string(&planted).expect("read"), "keep me");
    std::fs::remove_file(dir.path().join(".nightly.mpaybak.partial")).expect("unlink");

    let (ok, out) = run(&["backup", "--config", config, file]);
    assert!(ok, "{out}");
    assert!(out.contains("250 positions"), "{out}");
    // Every debtor is in it: the owner alone reads it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // Never overwrites an existing backup.
    let (ok, out) = run(&["backup", "--config", config, file]);
    assert!(!ok && out.contains("exists"), "{out}");

    let (ok, out) = run(&["verify-backup", file]);
    assert!(ok && out.contains("valid, 250 positions"), "{out}");
    // The digest printed at backup time is the file's own (what sha256sum says), and a file
    // rewritten since is refused even though its inner checks hold.
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .expect("a sha256 line")
        .to_string();
    let (ok, out) = run(&["verify-backup", file, "--sha256", &digest]);
    assert!(ok, "{out}");
    let last = if digest.ends_with('0') { '1' } else { '0' };
    let other = format!("{}{last}", &digest[..63]);
    let (ok, out) = run(&["verify-backup", file, "--sha256", &other]);
    assert!(!ok && out.contains("has been changed"), "{out}");
    let bytes = std::fs::read(file).expect("read");
    let whole: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(whole, digest);

    // Refused while the daemon runs, and the daemon is unaffected.
    let (ok, out) = run(&["restore", "--config", config, file]);
    assert!(!ok && out.contains("in use"), "{out}");
    assert_eq!(daemon.health()["store"]["positions"], 250);
    assert!(daemon.stop().success());

    let (ok, out) = run(&["restore", "--config", config, file]);
    assert!(ok, "{out}");
    assert!(out.contains("restored 250 positions"), "{out}");
    assert!(out.contains("previous store is kept in"), "{out}");
    let kept = std::fs::read_dir(&data)
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.before-restore-")
        })
        .count();
    assert_eq!(kept, 1);

    let daemon = Daemon::demo(&data, 250).ready();
    assert_eq!(daemon.health()["store"]["positions"], 250);
    assert!(daemon.stop().success());
}

#[test]
fn a_damaged_backup_is_refused_and_nothing_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, config, path) = backed_up(dir.path(), 40);
    let config = config.to_str().expect("path");

    let mut bytes = std::fs::read(&path).expect("read");
    let n = bytes.len() / 3;
    bytes[n] ^= 0xA5;
    std::fs::write(&path, &bytes).expect("write");
    let (ok, out) = run(&["restore", "--config", config, path.to_str().expect("path")]);
    assert!(!ok, "{out}");
    assert!(out.contains("damaged") || out.contains("backup"), "{out}");
    let entries: Vec<String> = std::fs::read_dir(&data)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries
            .iter()
            .any(|e| e.contains("before-restore") || e.starts_with("mpay-restore")),
        "{entries:?}"
    );
    let daemon = Daemon::demo(&data, 40).ready();
    assert_eq!(daemon.health()["store"]["positions"], 40);
}

#[test]
fn a_damaged_store_is_replaced_by_a_restore_without_being_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, config, path) = backed_up(dir.path(), 40);
    let config = config.to_str().expect("path");

    // The store's files are damaged beyond what its engine recovers from.
    let store = data.join("store");
    let files = mpay_tests::engine_files(&store);
    let mut damaged = Vec::new();
    for file in &files {
        let mut bytes = std::fs::read(file).expect("read store file");
        bytes.truncate(bytes.len() / 2);
        for b in bytes.iter_mut().skip(64).step_by(97) {
            *b ^= 0x5A;
        }
        std::fs::write(file, &bytes).expect("damage store file");
        damaged.push(bytes);
    }

    let (ok, out) = run(&["restore", "--config", config, path.to_str().expect("path")]);
    assert!(ok, "{out}");
    assert!(out.contains("restored 40 positions"), "{out}");
    // The damaged store was kept aside as it was, untouched by any attempt to open it.
    let aside = std::fs::read_dir(&data)
        .expect("ls")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.before-restore-")
        })
        .expect("the old store kept aside");
    let kept: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(aside.path().join(f.strip_prefix(&store).expect("in store"))))
        .collect::<Result<_, _>>()
        .expect("kept files");
    assert!(
        kept == damaged,
        "the damaged store was changed before it was kept aside"
    );
    let daemon = Daemon::demo(&data, 40).ready();
    assert_eq!(daemon.health()["store"]["positions"], 40);
}
