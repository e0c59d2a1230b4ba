//! The key-value interface on sled 0.34: one sled tree a table, in `STORE/db`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Batch, Entry, Tuning, Value};
use crate::StoreError;
use crate::fsync::StoreFiles;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct SledKv {
    db: sled::Db,
    /// What sled's flush leaves unsynced (`fsync.rs`); only the flusher thread takes it.
    files: Arc<Mutex<StoreFiles>>,
}

impl SledKv {
    pub fn open(dir: &Path, tuning: Tuning) -> Result<SledKv, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(tuning.cache_bytes)
            // The store flushes before every acknowledgement; the timer would only add fsyncs.
            .flush_every_ms(None);
        let locked = |e: &sled::Error| {
            matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock"))
        };
        // A store closed a moment ago in this process (a restore, a restart in place) keeps its
        // lock until sled's own threads let go of it: wait a little before calling it in use.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(e) if locked(&e) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if locked(&e) => {
                    return Err(StoreError::Unavailable(format!(
                        "{} is in use by another process (is mpayd already running?)",
                        dir.display()
                    )));
                }
                other => break other?,
            }
        };
        let files = StoreFiles::open(dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", dir.display())))?;
        Ok(SledKv {
            db,
            files: Arc::new(Mutex::new(files)),
        })
    }

    pub fn table(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// sled's flush, then the syncs it leaves out.
    pub fn flush(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| e.to_string())?;
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync()
            .map_err(|e| format!("cannot sync the store's files: {e}"))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

pub fn apply(tree: &sled::Tree, batch: Batch) -> Result<(), StoreError> {
    let mut b = sled::Batch::default();
    for (k, v) in batch.ops {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    Ok(tree.apply_batch(b)?)
}

/// Keys in ascending order, a small batch at a time, each flushed. sled takes a run badly: one
/// that touches pages across a whole index grew the daemon by 0.5 GiB (1,000-key batches) to
/// 2.1 GiB (10,000) for a few seconds, so bulk loads on sled write their entries with each
/// commit instead (`Table::takes_runs`); this serves only a pending search record that came
/// with the backup of a fjall store.
pub fn ingest(tree: &sled::Tree, keys: &[Vec<u8>]) -> Result<(), StoreError> {
    for chunk in keys.chunks(1_000) {
        let mut b = sled::Batch::default();
        for k in chunk {
            b.insert(k.as_slice(), &[]);
        }
        tree.apply_batch(b)?;
        tree.flush()?;
    }
    Ok(())
}

pub fn entry(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry, StoreError> {
    let (k, v) = item?;
    Ok((Value::Sled(k), Value::Sled(v)))
}
