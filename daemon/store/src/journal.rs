//! The traffic journal (giornale degli eventi): one summary record per exchange with the node,
//! kept for good in the `journal` tree, and the message bodies, kept within a retention budget.
//!
//! Bodies are most of the journal's bytes and are only ever appended, read rarely and dropped by
//! age: they go to append-only files per UTC day (`journal-bodies/YYYYMMDD-N.log` in the
//! store's folder), not into the engine. A summary points into its segment; a segment ends at
//! `SEGMENT_BYTES`. Pruning deletes days older than the retention, then segments oldest first
//! while the budget is exceeded, today's included, never the one being written. Writes come
//! from a background writer in batches: the file is synced, then the summaries commit like any
//! other write.
//!
//! A summary carries the CRC-32 of its bodies, checked on every read: a damaged or replaced file
//! is reported, never served as another exchange's bodies. Each process writes a day into a new
//! segment (`YYYYMMDD-N.log`), past any segment that a summary names or that is on disk, so no
//! summary can point into bytes written after it: not after a torn write, not after a restore
//! that brings back summaries whose files stayed behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, codec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The node called us.
    Inbound,
    /// We called the node.
    Outbound,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Set by the store, in order of arrival.
    pub seq: u64,
    pub at: Timestamp,
    pub direction: Direction,
    pub operation: String,
    pub entity: Option<String>,
    pub station: Option<String>,
    pub nav: Option<String>,
    pub iuv: Option<String>,
    /// "OK" or "KO".
    pub outcome: String,
    pub fault_code: Option<String>,
    pub latency_us: u64,
    pub remote: Option<String>,
    pub request_bytes: u32,
    pub response_bytes: u32,
    /// Where the bodies are (set by the store).
    pub body: Option<BodyRef>,
}

/// The place of an exchange's bodies: request then response, at `offset` in a file of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyRef {
    /// The file's day, YYYYMMDD (UTC).
    pub day: u32,
    /// Which of the day's files: 0 is `YYYYMMDD.log`, N is `YYYYMMDD-N.log`.
    pub segment: u32,
    pub offset: u64,
    pub request_len: u32,
    pub response_len: u32,
    /// CRC-32 of the request then the response; none in summaries written before it was kept.
    pub crc: Option<u32>,
}

/// Request and response as they crossed the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalBodies {
    pub at: Timestamp,
    pub request: String,
    pub response: String,
}

/// The folder of body files, beside the engine's files in the store folder.
pub(super) fn bodies_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("journal-bodies")
}

fn day_of(at: Timestamp) -> u32 {
    let date = at.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    u32::try_from(date.year()).unwrap_or(0) * 10_000
        + u32::try_from(date.month()).unwrap_or(0) * 100
        + u32::try_from(date.day()).unwrap_or(0)
}

fn day_file(dir: &Path, day: u32, segment: u32) -> PathBuf {
    match segment {
        0 => dir.join(format!("{day:08}.log")),
        n => dir.join(format!("{day:08}-{n}.log")),
    }
}

/// Bytes after which a day's segment ends and the next begins, so that a busy day's bodies can
/// be pruned a segment at a time within the budget.
const SEGMENT_BYTES: u64 = 64 << 20;

/// A body file's day and segment, from its name.
fn parse_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".log")?;
    match stem.split_once('-') {
        None => Some((stem.parse().ok()?, 0)),
        Some((day, n)) => Some((day.parse().ok()?, n.parse().ok()?)),
    }
}

/// Body files present, oldest first: (day, segment, path, size).
fn body_files(dir: &Path) -> Vec<(u32, u32, PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let (day, segment) = parse_name(&e.file_name().into_string().ok()?)?;
            let size = e.metadata().ok()?.len();
            Some((day, segment, e.path(), size))
        })
        .collect();
    files.sort_by_key(|(day, segment, _, _)| (*day, *segment));
    files
}

/// The day and segment this process writes bodies to (see the module's comment).
#[derive(Default)]
pub(super) struct Segment {
    current: Option<(u32, u32)>,
}

impl Store {
    /// The next journal sequence number, from the last stored record.
    pub(super) fn journal_next_seq(tree: &super::kv::Table) -> Result<u64, StoreError> {
        Ok(match tree.last()? {
            Some((k, _)) => super::keys::decode_u64(&k).map_or(0, |s| s + 1),
            None => 0,
        })
    }

    /// The sequence number the next exchange will get.
    pub fn next_journal_seq(&self) -> u64 {
        self.journal_seq.load(Ordering::Relaxed)
    }

    /// Appends records with their bodies and waits until both are durable.
    pub fn append_journal(
        &self,
        records: Vec<(JournalEntry, JournalBodies)>,
    ) -> Result<Vec<u64>, StoreError> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("journal bodies: {what}: {e}"))
        };
        // One writer at a time appends to the files.
        let mut segment = self.journal_files.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Option<(u32, File, u64)> = None;
        let mut summaries = super::kv::Batch::default();
        let mut seqs = Vec::with_capacity(records.len());
        let mut pending = Vec::new();
        for (mut entry, body) in records {
            let day = day_of(body.at);
            let full = open
                .as_ref()
                .is_some_and(|(_, _, end)| end + pending.len() as u64 >= SEGMENT_BYTES);
            if full || open.as_ref().is_none_or(|(d, _, _)| *d != day) {
                if let Some((_, mut file, _)) = open.take() {
                    file.write_all(&pending).map_err(|e| io("write", e))?;
                    file.sync_data().map_err(|e| io("sync", e))?;
                    pending.clear();
                }
                let n = match segment.current {
                    Some((d, n)) if d == day && !full => n,
                    _ => self.new_segment(day)?,
                };
                segment.current = Some((day, n));
                let path = day_file(&self.bodies_dir, day, n);
                let created = !path.exists();
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&path.display().to_string(), e))?;
                if created {
                    // The day file's name must survive a power cut as well as its bytes.
                    super::fsync::sync_dir(&self.bodies_dir).map_err(|e| io("sync folder", e))?;
                }
                let len = file.metadata().map_err(|e| io("size", e))?.len();
                open = Some((day, file, len));
            }
            let Some((_, _, end)) = open.as_mut() else {
                continue;
            };
            let len = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX);
            let mut crc = crc32fast::Hasher::new();
            crc.update(body.request.as_bytes());
            crc.update(body.response.as_bytes());
            entry.body = Some(BodyRef {
                day,
                segment: segment.current.map_or(0, |(_, n)| n),
                offset: *end + pending.len() as u64,
                request_len: len(&body.request),
                response_len: len(&body.response),
                crc: Some(crc.finalize()),
            });
            pending.extend_from_slice(body.request.as_bytes());
            pending.extend_from_slice(body.response.as_bytes());
            let seq = self.journal_seq.fetch_add(1, Ordering::Relaxed);
            entry.seq = seq;
            summaries.insert(seq.to_be_bytes(), codec::encode(&entry)?);
            seqs.push(seq);
        }
        if let Some((_, mut file, _)) = open.take() {
            file.write_all(&pending).map_err(|e| io("write", e))?;
            file.sync_data().map_err(|e| io("sync", e))?;
        }
        let applying = self.group.begin();
        self.group.accepting()?;
        self.journal.apply(summaries)?;
        applying.wait_durable()?;
        Ok(seqs)
    }

    /// Journal records from `from` on, at most `limit`.
    pub fn journal(&self, from: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.journal
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|e| {
                let (_, v) = e?;
                codec::decode(&v, "a journal record")
            })
            .collect()
    }

    /// The last `limit` journal records, newest first.
    pub fn journal_tail(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.journal
            .iter()
            .rev()
            .take(limit)
            .map(|e| {
                let (_, v) = e?;
                codec::decode(&v, "a journal record")
            })
            .collect()
    }

    /// An exchange's bodies, unless its day was pruned (or it had none).
    pub fn journal_bodies(&self, seq: u64) -> Result<Option<JournalBodies>, StoreError> {
        let Some(v) = self.journal.get(seq.to_be_bytes())? else {
            return Ok(None);
        };
        let entry: JournalEntry = codec::decode(&v, "a journal record")?;
        let Some(r) = entry.body else {
            return Ok(None);
        };
        let path = day_file(&self.bodies_dir, r.day, r.segment);
        let Ok(mut file) = File::open(&path) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; r.request_len as usize + r.response_len as usize];
        let read = file
            .seek(SeekFrom::Start(r.offset))
            .and_then(|_| file.read_exact(&mut bytes));
        if read.is_err() {
            return Err(StoreError::Corrupt(format!(
                "the bodies of exchange {seq} are cut short in {}",
                path.display()
            )));
        }
        if let Some(expected) = r.crc
            && crc32fast::hash(&bytes) != expected
        {
            return Err(StoreError::Corrupt(format!(
                "the bodies of exchange {seq} in {} do not match their checksum: the file was \
                 damaged or replaced",
                path.display()
            )));
        }
        let response = bytes.split_off(r.request_len as usize);
        Ok(Some(JournalBodies {
            at: entry.at,
            request: String::from_utf8_lossy(&bytes).into_owned(),
            response: String::from_utf8_lossy(&response).into_owned(),
        }))
    }

    /// Deletes bodies, oldest first: every day older than `max_age`, then segments while they
    /// total more than `max_bytes`, today's included, never the segment being written. Summary
    /// records stay (their bodies then read as pruned). Returns how many files were deleted.
    pub fn prune_journal_bodies(
        &self,
        max_age: std::time::Duration,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let segment = self.journal_files.lock().unwrap_or_else(|p| p.into_inner());
        let now = Timestamp::now();
        let cutoff = day_of(
            now.checked_sub(
                jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MIN),
        );
        let files = body_files(&self.bodies_dir);
        let mut total: u64 = files.iter().map(|(_, _, _, size)| size).sum();
        let mut deleted = 0;
        for (day, n, path, size) in files {
            if segment.current == Some((day, n)) || (day >= cutoff && total <= max_bytes) {
                break;
            }
            std::fs::remove_file(&path).map_err(|e| {
                StoreError::Unavailable(format!("cannot prune {}: {e}", path.display()))
            })?;
            total = total.saturating_sub(size);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Bytes of bodies on disk.
    pub fn journal_body_bytes(&self) -> u64 {
        body_files(&self.bodies_dir)
            .iter()
            .map(|(_, _, _, size)| size)
            .sum()
    }

    /// The segment this process starts writing `day` into: past every segment of the day on
    /// disk and past the one the last summary names.
    fn new_segment(&self, day: u32) -> Result<u32, StoreError> {
        let on_disk = body_files(&self.bodies_dir)
            .into_iter()
            .filter(|(d, _, _, _)| *d == day)
            .map(|(_, n, _, _)| n)
            .max();
        let named = match self.journal.last()? {
            Some((_, v)) => codec::decode::<JournalEntry>(&v, "a journal record")?
                .body
                .filter(|b| b.day == day)
                .map(|b| b.segment),
            None => None,
        };
        Ok(match on_disk.max(named) {
            Some(n) => n + 1,
            None => 0,
        })
    }
}
