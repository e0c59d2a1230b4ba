//! The durable mark: the newest commit known to be on disk, kept in a file of its own beside
//! the engine's (`commit.mark`), so that the store can tell at open whether the engine came back
//! with less than it had made durable (a truncated or damaged file that the engine's own
//! recovery opens silently). The flusher writes it after a successful flush, at most once a
//! second and at close: so a loss of anything acknowledged more than a second before the crash
//! is found, at the price of one small write and sync a second.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FILE: &str = "commit.mark";
const EVERY: Duration = Duration::from_secs(1);

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The commit the mark says was durable; none without a mark (a store older than it, or new).
pub fn read(dir: &Path) -> io::Result<Option<u64>> {
    match std::fs::read(path(dir)) {
        // Created, and the process died before its first write.
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(b) => Ok(Some(u64::from_be_bytes(b))),
            Err(_) => Err(io::Error::other(format!(
                "{} is {} bytes long, not 8",
                path(dir).display(),
                bytes.len()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The flusher's side: the store's commit counter, and the mark's file.
pub struct Mark {
    commits: Arc<AtomicU64>,
    file: File,
    written: u64,
    at: Instant,
}

impl Mark {
    pub fn open(dir: &Path, commits: Arc<AtomicU64>) -> io::Result<Mark> {
        let existed = path(dir).exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path(dir))?;
        if !existed {
            super::fsync::sync_dir(dir)?;
        }
        let mut mark = Mark {
            written: commits.load(Ordering::Acquire),
            commits,
            file,
            at: Instant::now(),
        };
        // What the store holds at open is on disk: the mark starts there.
        let reached = mark.written;
        mark.after_flush(reached, true)?;
        Ok(mark)
    }

    /// Every commit applied now will be in the flush about to start.
    pub fn before_flush(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// After a successful flush that covered `reached`: writes the mark if a second has passed
    /// (or `now`), and syncs it.
    pub fn after_flush(&mut self, reached: u64, now: bool) -> io::Result<()> {
        if reached <= self.written && self.file.metadata()?.len() == 8 {
            return Ok(());
        }
        if !now && self.at.elapsed() < EVERY {
            return Ok(());
        }
        self.file.write_all_at(&reached.to_be_bytes(), 0)?;
        self.file.sync_data()?;
        self.written = reached;
        self.at = Instant::now();
        Ok(())
    }
}
