//! Online backup and verified restore.
//!
//! A backup holds the store's sources of truth only: the ledger (up to one commit number, so it is
//! a consistent cut taken while writes go on), the sequence counters and the append-only trees.
//! Snapshots and indexes are derived, and a restore rebuilds them by folding every ledger, which
//! also proves the backup readable before anything is replaced.
//!
//! File layout: `MPAYBAK2`, a length-prefixed JSON header, records
//! `[tree u8][key len u32][key][value len u32][value]`, then `0xFF`, the record count (u64) and the
//! SHA-256 of everything before it. Integers are big-endian. `MPAYBAK1` files, which end with a
//! CRC-32 instead, are still read. A digest inside the file finds damage; it cannot prove that
//! nobody rewrote the file, so `mpayd backup` prints the SHA-256 of the whole file for the
//! operator to keep elsewhere, and `verify-backup --sha256` compares it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use mpay_common::ledger::Position;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kv::{Batch, Engine, Table};
use super::{Store, StoreError, StoreOptions, StoredEvent, TREES, codec, keys};

const MAGIC: &[u8; 8] = b"MPAYBAK2";
/// The first format, whose trailer is a CRC-32.
const MAGIC_V1: &[u8; 8] = b"MPAYBAK1";
const END: u8 = 0xFF;
const DATA_TREE: u8 = 0;
/// Largest key or value a backup may hold; anything bigger is a damaged file.
const MAX_FIELD: u32 = 64 << 20;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackupSummary {
    pub mpay_version: String,
    pub store_format: u32,
    pub created_at: String,
    /// Every commit up to this one is in the backup, none after.
    pub commit: u64,
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub positions: u64,
    /// The SHA-256 of the whole file, in hex, once it has been read (never in the file).
    #[serde(skip)]
    pub file_sha256: Option<String>,
}

fn err(msg: impl Into<String>) -> StoreError {
    StoreError::Backup(msg.into())
}

/// Writes and digests at once.
struct Sink<W: Write> {
    out: W,
    digest: Sha256,
    records: u64,
}

impl<W: Write> Sink<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.digest.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| err(format!("cannot write: {e}")))
    }

    fn record(&mut self, tree: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let len = |n: usize| u32::try_from(n).map_err(|_| err("record too large"));
        self.put(&[tree])?;
        self.put(&len(key.len())?.to_be_bytes())?;
        self.put(key)?;
        self.put(&len(value.len())?.to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }
}

impl Store {
    /// Streams a consistent backup to `out` while the store keeps serving.
    pub fn backup(&self, out: impl Write) -> Result<BackupSummary, StoreError> {
        // Fix the cut: the commit number and the counters as of that commit.
        let (commit, meta) = {
            let w = self.writer();
            let meta: Vec<super::kv::Entry> = self
                .data
                .scan_prefix([keys::META])
                .collect::<Result<_, _>>()?;
            (w.commit, meta)
        };
        let mut summary = BackupSummary {
            mpay_version: mpay_common::VERSION.to_string(),
            store_format: super::STORE_FORMAT,
            created_at: jiff::Timestamp::now().to_string(),
            commit,
            records: 0,
            positions: 0,
            file_sha256: None,
        };
        let mut sink = Sink {
            out: BufWriter::with_capacity(1 << 20, out),
            digest: Sha256::new(),
            records: 0,
        };
        let header = serde_json::to_vec(&summary).map_err(|e| err(e.to_string()))?;
        sink.put(MAGIC)?;
        sink.put(&(header.len() as u32).to_be_bytes())?;
        sink.put(&header)?;
        for (k, v) in &meta {
            sink.record(DATA_TREE, k, v)?;
        }
        for entry in self.data.scan_prefix([keys::LEDGER]) {
            let (k, v) = entry?;
            let stored: StoredEvent = codec::decode(&v, "a ledger event")?;
            // Events committed after the cut belong to the next backup.
            if stored.commit > commit {
                continue;
            }
            if k.ends_with(&0u32.to_be_bytes()) {
                summary.positions += 1;
            }
            sink.record(DATA_TREE, &k, &v)?;
        }
        for prefix in RECORDS {
            for entry in self.data.scan_prefix([prefix]) {
                let (k, v) = entry?;
                if record_commit(prefix, &v)? <= commit {
                    sink.record(DATA_TREE, &k, &v)?;
                }
            }
        }
        for (i, name) in TREES.iter().enumerate() {
            let tree = self.db.table(name)?;
            for entry in tree.iter() {
                let (k, v) = entry?;
                sink.record(i as u8 + 1, &k, &v)?;
            }
        }
        let records = sink.records;
        sink.put(&[END])?;
        sink.put(&records.to_be_bytes())?;
        let digest = sink.digest.clone().finalize();
        sink.out
            .write_all(&digest)
            .and_then(|()| sink.out.flush())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        summary.records = records;
        Ok(summary)
    }
}

/// The trailer's check: SHA-256, or CRC-32 in the first format.
enum Check {
    Sha256(Sha256),
    Crc32(crc32fast::Hasher),
}

impl Check {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Check::Sha256(d) => d.update(bytes),
            Check::Crc32(c) => c.update(bytes),
        }
    }

    fn expected(&self) -> Vec<u8> {
        match self {
            Check::Sha256(d) => d.clone().finalize().to_vec(),
            Check::Crc32(c) => c.clone().finalize().to_be_bytes().to_vec(),
        }
    }
}

/// A reader that digests every byte read: the SHA-256 of the whole file, trailer included.
struct Digesting<R> {
    inner: R,
    digest: Sha256,
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a backup record by record, checking lengths and, at the end, count and digest.
struct Source<R: Read> {
    input: Digesting<R>,
    check: Check,
    records: u64,
}

enum Item {
    Record(u8, Vec<u8>, Vec<u8>),
    End,
}

impl<R: Read> Source<R> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; n];
        self.input
            .read_exact(&mut buf)
            .map_err(|_| err("the file is truncated"))?;
        self.check.update(&buf);
        Ok(buf)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let b = self.take(4)?;
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if n > MAX_FIELD {
            return Err(err(format!(
                "a field claims {n} bytes: the file is damaged"
            )));
        }
        Ok(n as usize)
    }

    fn next(&mut self) -> Result<Item, StoreError> {
        let tree = self.take(1)?[0];
        if tree == END {
            let count = self.take(8)?;
            let count = u64::from_be_bytes(count.try_into().map_err(|_| err("count"))?);
            let expected = self.check.expected();
            let mut found = vec![0u8; expected.len()];
            self.input
                .read_exact(&mut found)
                .map_err(|_| err("the file is truncated"))?;
            if found != expected {
                return Err(err("checksum mismatch: the file is damaged"));
            }
            if count != self.records {
                return Err(err(format!(
                    "the file says {count} records, {} were read",
                    self.records
                )));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest).map_err(|e| err(e.to_string()))? != 0 {
                return Err(err("data after the end of the backup"));
            }
            return Ok(Item::End);
        }
        if usize::from(tree) > TREES.len() {
            return Err(err(format!("unknown tree {tree}: the file is damaged")));
        }
        let n = self.len()?;
        let key = self.take(n)?;
        let n = self.len()?;
        let value = self.take(n)?;
        self.records += 1;
        Ok(Item::Record(tree, key, value))
    }
}

fn open_source(path: &Path) -> Result<(Source<BufReader<File>>, BackupSummary), StoreError> {
    let file = File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut input = Digesting {
        inner: BufReader::with_capacity(1 << 20, file),
        digest: Sha256::new(),
    };
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| err(format!("{} is not an mpay backup", path.display())))?;
    let mut check = match &magic {
        MAGIC => Check::Sha256(Sha256::new()),
        MAGIC_V1 => Check::Crc32(crc32fast::Hasher::new()),
        _ => return Err(err(format!("{} is not an mpay backup", path.display()))),
    };
    check.update(&magic);
    let mut source = Source {
        input,
        check,
        records: 0,
    };
    let n = source.len()?;
    let header: BackupSummary = serde_json::from_slice(&source.take(n)?)
        .map_err(|e| err(format!("unreadable header: {e}")))?;
    if header.store_format > super::STORE_FORMAT {
        return Err(err(format!(
            "the backup has store format {}, this mpayd understands {} at most",
            header.store_format,
            super::STORE_FORMAT
        )));
    }
    Ok((source, header))
}

/// The ledger entries of one position, gathered until the next position's begin.
type PendingLedger = (keys::PositionId, Vec<(Vec<u8>, Vec<u8>)>);

/// Rebuilds a store in `dir` (which must not exist) from a backup, folding every ledger;
/// `progress` hears how many records are in, every 10,000.
fn rebuild(
    path: &Path,
    dir: &Path,
    engine: Engine,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupSummary, StoreError> {
    // A record that does not decode is damage in the file, not in any store.
    rebuild_records(path, dir, engine, progress).map_err(|e| match e {
        StoreError::Corrupt(m) => err(format!("the file is damaged: {m}")),
        other => other,
    })
}

fn rebuild_records(
    path: &Path,
    dir: &Path,
    engine: Engine,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupSummary, StoreError> {
    let (mut source, mut summary) = open_source(path)?;
    let options = StoreOptions {
        engine,
        ..StoreOptions::default()
    };
    let store = Store::open(dir, &options)?;
    let trees: Vec<Table> = TREES
        .iter()
        .map(|n| store.db.table(n))
        .collect::<Result<_, _>>()?;
    let mut pending: Option<PendingLedger> = None;
    let mut batch = Batch::default();
    let mut batched = 0usize;
    let mut positions = 0u64;
    let flush_position =
        |pending: &mut Option<PendingLedger>, batch: &mut Batch| -> Result<u64, StoreError> {
            let Some((id, entries)) = pending.take() else {
                return Ok(0);
            };
            let events: Vec<StoredEvent> = entries
                .iter()
                .map(|(_, v)| codec::decode(v, "a ledger event"))
                .collect::<Result<_, _>>()?;
            let first = events
                .first()
                .ok_or_else(|| err(format!("position {id} has no events")))?;
            let mpay_common::ledger::Change::Loaded(_) = &first.event.change else {
                return Err(err(format!("position {id} does not start with `loaded`")));
            };
            let entity = entity_of(&first.event)?;
            let position = Position::fold(entity, events.iter().map(|s| &s.event))
                .map_err(|e| err(format!("position {id} does not fold: {e}")))?;
            store.write_position(batch, id, None, &position)?;
            for ((k, v), stored) in entries.into_iter().zip(&events) {
                batch.insert(keys::change(stored.commit, id).as_slice(), &k[9..13]);
                batch.insert(k, v);
            }
            Ok(1)
        };
    loop {
        match source.next()? {
            Item::End => break,
            Item::Record(DATA_TREE, key, value) => match key.first() {
                Some(&keys::META) => {
                    if key.as_slice() != keys::META_FORMAT {
                        batch.insert(key, value);
                    }
                }
                Some(&keys::LEDGER) if key.len() == 13 => {
                    let id = keys::decode_id(&key[1..9]).ok_or_else(|| err("ledger key"))?;
                    if pending.as_ref().is_some_and(|(p, _)| *p != id) {
                        positions += flush_position(&mut pending, &mut batch)?;
                        batched += 1;
                    }
                    pending
                        .get_or_insert_with(|| (id, Vec::new()))
                        .1
                        .push((key, value));
                }
                Some(&prefix) if RECORDS.contains(&prefix) => {
                    record_commit(prefix, &value)?;
                    batch.insert(key, value);
                    batched += 1;
                }
                _ => return Err(err("unexpected record in the data tree")),
            },
            Item::Record(tree, key, value) => {
                trees[usize::from(tree) - 1].insert(key, value)?;
            }
        }
        if batched >= 1000 {
            store.data.apply(std::mem::take(&mut batch))?;
            batched = 0;
        }
        if source.records % 10_000 == 0 {
            progress(source.records);
        }
    }
    positions += flush_position(&mut pending, &mut batch)?;
    batch.insert(keys::META_POSITIONS, positions.to_be_bytes());
    store.data.apply(batch)?;
    store.close()?;
    summary.records = source.records;
    summary.positions = positions;
    let whole = source.input.digest.finalize();
    summary.file_sha256 = Some(whole.iter().map(|b| format!("{b:02x}")).collect());
    Ok(summary)
}

/// The entity of a `loaded` event: the first transfer's beneficiary is always the creditor.
/// The records kept beside the ledgers, each carrying the commit that stored it: a backup
/// copies those up to its cut, a restore checks that each one reads.
const RECORDS: [u8; 3] = [keys::RECEIPT, keys::FLOW, keys::MOVEMENT];

/// The commit that stored a record of one of the `RECORDS` tables.
fn record_commit(prefix: u8, value: &[u8]) -> Result<u64, StoreError> {
    Ok(match prefix {
        keys::RECEIPT => codec::decode::<super::ReceiptRecord>(value, "a receipt")?.commit,
        keys::FLOW => codec::decode::<super::FlowRecord>(value, "a flow")?.commit,
        keys::MOVEMENT => codec::decode::<super::MovementRecord>(value, "a movement")?.commit,
        _ => return Err(err("not a record table")),
    })
}

fn entity_of(
    event: &mpay_common::ledger::Event,
) -> Result<mpay_common::ids::EntityFiscalCode, StoreError> {
    match &event.change {
        mpay_common::ledger::Change::Loaded(data) => data
            .instalments()
            .next()
            .and_then(|i| i.transfers.first())
            .map(|t| t.beneficiary.clone())
            .ok_or_else(|| err("a loaded position without transfers")),
        _ => Err(err("not a loaded event")),
    }
}

/// Checks a backup file end to end without touching any store: rebuilds it in a scratch folder
/// next to nothing of the user's, then throws the scratch copy away.
pub fn verify(path: &Path) -> Result<BackupSummary, StoreError> {
    let scratch = tempdir_near(&std::env::temp_dir())?;
    let result = rebuild(path, &scratch.join("store"), Engine::default(), &mut |_| {});
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn tempdir_near(base: &Path) -> Result<PathBuf, StoreError> {
    for _ in 0..100 {
        let p = base.join(format!("mpay-restore-{:016x}", fastrand::u64(..)));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(err(format!(
        "cannot create a scratch folder in {}",
        base.display()
    )))
}

/// Refuses while a process holds the store's lock (the running daemon). Checked on the lock
/// alone, without opening the store: a damaged store must not stop its own restore, and a failed
/// open must not touch it.
fn ensure_not_in_use(store_dir: &Path) -> Result<(), StoreError> {
    let Some(engine) = Engine::found_in(store_dir) else {
        return Ok(());
    };
    let db = engine.lock_file(store_dir);
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&db) {
        Ok(f) => f,
        // No store file: nothing anyone could hold.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(format!("cannot open {}: {e}", db.display()))),
    };
    // A store closed a moment ago in this process keeps its lock until the engine's threads let go
    // (see `Store::open`): wait a little before calling it in use.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if attempt <= 100 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "{} is in use by another process (is mpayd running? stop it first)",
                    store_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock {}: {e}", db.display())));
            }
        }
    }
}

/// Restores a backup into `store_dir`, telling `progress` how many records are in every 10,000.
/// The backup is rebuilt and verified in a new folder beside
/// it first; only then is the current store (if any) moved aside, never deleted, and the new one
/// put in its place. Refuses while a daemon has the store open; never opens the current store,
/// so a damaged one can always be replaced. The new store is of `engine`, whatever the old one
/// was: a backup and a restore move a store from one engine to the other.
pub fn restore(
    backup: &Path,
    store_dir: &Path,
    engine: Engine,
    progress: &mut dyn FnMut(u64),
) -> Result<(BackupSummary, Option<PathBuf>), StoreError> {
    if store_dir.exists() {
        ensure_not_in_use(store_dir)?;
    }
    let parent = store_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
    let staging = tempdir_near(parent)?;
    let built = staging.join("store");
    let summary = match rebuild(backup, &built, engine, progress) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let kept = if store_dir.exists() {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let name = format!(
            "{}.before-restore-{stamp}",
            store_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("store")
        );
        let aside = parent.join(name);
        std::fs::rename(store_dir, &aside)
            .map_err(|e| err(format!("cannot move the current store aside: {e}")))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&built, store_dir) {
        // Never leave the daemon without a store: put the old one back.
        if let Some(aside) = &kept {
            let _ = std::fs::rename(aside, store_dir);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err(format!("cannot put the restored store in place: {e}")));
    }
    let _ = std::fs::remove_dir(&staging);
    // The renames are durable only once their folder is.
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(format!("cannot sync {}: {e}", parent.display())))?;
    Ok((summary, kept))
}
