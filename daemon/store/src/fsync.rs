//! Making sled's writes survive a power cut.
//!
//! sled 0.34's flush writes its log with `pwrite` and waits with `sync_file_range`, which writes
//! neither the file's metadata (its new size) nor the disk's volatile cache, and it never syncs
//! the files it creates for large values (`blobs/`) or the folders they live in. `StoreFiles`
//! finishes the job after each flush: `fdatasync` of `db`, of every new blob file, and of each
//! folder whose entries changed. fsync acts on the file, so our own descriptor is enough.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Makes a folder's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, each one durably: a folder exists after a power cut
/// only once its parent was synced.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// The names in a folder (none if it does not exist).
fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// sled's files in a store folder, and what of them is known to be durable.
pub struct StoreFiles {
    dir: PathBuf,
    db: File,
    /// The store folder's entries as of its last sync.
    entries: BTreeSet<OsString>,
    /// The blob files synced so far (sled never rewrites a blob: it writes a new one).
    blobs: BTreeSet<OsString>,
}

impl StoreFiles {
    /// Opens `dir/db` (sled has created it) and makes the folder and what sled created in it
    /// durable.
    pub fn open(dir: &Path) -> io::Result<StoreFiles> {
        let db = File::open(dir.join("db"))?;
        let mut files = StoreFiles {
            dir: dir.to_path_buf(),
            db,
            entries: BTreeSet::new(),
            blobs: BTreeSet::new(),
        };
        for name in ["conf", "db"] {
            let path = dir.join(name);
            if path.exists() {
                File::open(path)?.sync_all()?;
            }
        }
        files.sync()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// After sled's flush: syncs `db`, the blob files written since the last call, and the
    /// folders whose entries changed.
    pub fn sync(&mut self) -> io::Result<()> {
        self.db.sync_data()?;
        let blobs_dir = self.dir.join("blobs");
        let blobs = names(&blobs_dir)?;
        if blobs != self.blobs {
            for name in blobs.difference(&self.blobs) {
                match File::open(blobs_dir.join(name)) {
                    Ok(f) => f.sync_data()?,
                    // Collected by sled since it was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            sync_dir(&blobs_dir)?;
            self.blobs = blobs;
        }
        let entries = names(&self.dir)?;
        if entries != self.entries {
            sync_dir(&self.dir)?;
            self.entries = entries;
        }
        Ok(())
    }
}
