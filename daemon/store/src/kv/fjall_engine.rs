//! The key-value interface on fjall 3: one keyspace a table, in `STORE/fjall/`. fjall writes
//! every batch to its journal and makes it durable on `persist(SyncData)`, which syncs the
//! journal file; the journal's folder is synced by fjall when a journal file is created, and
//! tables (SSTs) are written and synced before the journal that covered them is dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::{Batch, Entry, Tuning, Value};
use crate::StoreError;

/// Where fjall's files live inside a store folder: apart from mpay's own files beside them.
pub fn dir(store_dir: &Path) -> PathBuf {
    store_dir.join("fjall")
}

/// Values larger than this go to blob files beside the tables. A position's snapshot stays
/// inline; a flow's record (megabytes for a big flow) must not: a block holds at least one
/// value, a block larger than the cache's share is never cached, and every point read that
/// lands on it would read and checksum it again.
const SEPARATION_THRESHOLD: u32 = 16 << 10;

/// How long a close waits for the memtables to be written out: well within systemd's stop
/// timeout (60 s in the unit).
const WRITE_OUT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            fjall::Error::Locked => StoreError::Unavailable("the store is locked".into()),
            other => StoreError::Corrupt(format!("fjall: {other:?}")),
        }
    }
}

#[derive(Clone)]
pub struct FjallKv {
    db: Database,
    /// Every table opened, for the flush at close.
    tables: Arc<Mutex<Vec<Keyspace>>>,
    /// The memtable size of the `data` table; the others get a quarter.
    write_buffer: u64,
}

#[derive(Clone)]
pub struct FjallTable {
    db: Database,
    keyspace: Keyspace,
}

impl FjallKv {
    pub fn open(store_dir: &Path, tuning: Tuning) -> Result<FjallKv, StoreError> {
        let path = dir(store_dir);
        crate::fsync::create_dir_all(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        // A store closed a moment ago in this process keeps its lock until fjall's workers let go
        // of it: wait a little before calling it in use.
        let mut attempts = 0;
        let db = loop {
            match Database::builder(&path)
                .cache_size(tuning.cache_bytes)
                // The store persists before every acknowledgement (the group commit).
                .manual_journal_persist(true)
                .open()
            {
                Err(fjall::Error::Locked) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fjall::Error::Locked) => {
                    return Err(StoreError::Unavailable(format!(
                        "{} is in use by another process (is mpayd already running?)",
                        store_dir.display()
                    )));
                }
                other => break other?,
            }
        };
        Ok(FjallKv {
            db,
            tables: Arc::default(),
            write_buffer: tuning.write_buffer_bytes.max(4 << 20),
        })
    }

    pub fn table(&self, name: &str) -> Result<FjallTable, StoreError> {
        let memtable = match name {
            "data" => self.write_buffer,
            _ => self.write_buffer / 4,
        };
        let keyspace = self.db.keyspace(name, || {
            KeyspaceCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size(memtable)
                // Index and filter blocks in partitions at every level (fjall's default starts
                // at level 3): unpartitioned, a big table's index is one block, read and
                // checksummed whole by every lookup that misses the cache. Loading 10M
                // positions spent 95 % of its time there. (fjall keeps these options from a
                // keyspace's creation: older stores change only through backup and restore.)
                .index_block_partitioning_policy(PartitioningPolicy::all(true))
                .filter_block_partitioning_policy(PartitioningPolicy::all(true))
                .with_kv_separation(Some(
                    KvSeparationOptions::default().separation_threshold(SEPARATION_THRESHOLD),
                ))
        })?;
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(keyspace.clone());
        Ok(FjallTable {
            db: self.db.clone(),
            keyspace,
        })
    }

    pub fn flush(&self) -> Result<(), String> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| format!("cannot sync the store's journal: {e}"))
    }

    /// At close: the memtables are written out as tables, so that the next open has no journal
    /// to replay (a reopen after a crash still replays it). The write-out waits for fjall's
    /// workers, which may be deep in a compaction of a large store: past `WRITE_OUT_WAIT` the
    /// close goes on without it, since everything is already durable in the journal.
    pub fn flush_for_close(&self) -> Result<(), String> {
        // Durable first: writing the memtables out only spares the next open its replay.
        self.flush()?;
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (done, written) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mpay-close".into())
            .spawn(move || {
                let result = tables
                    .iter()
                    .try_for_each(Keyspace::rotate_memtable_and_wait);
                let _ = done.send(result);
            })
            .map_err(|e| format!("cannot start writing out the memtables: {e}"))?;
        match written.recv_timeout(WRITE_OUT_WAIT) {
            Ok(result) => result.map_err(|e| format!("cannot write out the memtables: {e}")),
            Err(_) => {
                tracing::warn!(
                    "the memtables were not written out within {} s: the next start replays \
                     the store's journal",
                    WRITE_OUT_WAIT.as_secs()
                );
                Ok(())
            }
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    pub fn memory(&self) -> (u64, u64) {
        (self.db.cache_size(), self.db.write_buffer_size())
    }
}

impl FjallTable {
    pub fn get(&self, key: impl AsRef<[u8]>) -> fjall::Result<Option<fjall::Slice>> {
        self.keyspace.get(key)
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> fjall::Result<bool> {
        self.keyspace.contains_key(key)
    }

    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(&self.keyspace, k, v),
                None => b.remove(&self.keyspace, k),
            }
        }
        Ok(b.commit()?)
    }

    pub fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(&self, range: R) -> fjall::Iter {
        self.keyspace.range(range)
    }

    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> fjall::Iter {
        self.keyspace.prefix(prefix)
    }

    pub fn iter(&self) -> fjall::Iter {
        self.keyspace.iter()
    }
}

pub fn entry(guard: fjall::Guard) -> Result<Entry, StoreError> {
    let (k, v) = guard.into_inner()?;
    Ok((Value::Fjall(k), Value::Fjall(v)))
}
