//! The traffic journal (giornale degli eventi): one summary record per exchange with the node,
//! kept for good, and the message bodies, kept within a retention budget and pruned oldest first.
//!
//! Journal writes come from a background writer in batches; they do not hold up the answer to
//! the node, and ride on the next group-commit flush.

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
}

/// Request and response as they crossed the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalBodies {
    pub at: Timestamp,
    pub request: String,
    pub response: String,
}

const BODY_BYTES: &[u8] = b"body-bytes";

impl Store {
    pub(super) fn journal_trees(&self) -> Result<(sled::Tree, sled::Tree, sled::Tree), StoreError> {
        // Tree handles are reference-counted: cloning them is cheap.
        let [journal, bodies, meta] = &self.journal;
        Ok((journal.clone(), bodies.clone(), meta.clone()))
    }

    /// The next journal sequence number, from the last stored record.
    pub(super) fn journal_next_seq(db: &sled::Db) -> Result<u64, StoreError> {
        let tree = db.open_tree("journal")?;
        Ok(match tree.last()? {
            Some((k, _)) => super::keys::decode_u64(&k).map_or(0, |s| s + 1),
            None => 0,
        })
    }

    /// Appends records (with their bodies) and waits until they are durable.
    pub fn append_journal(
        &self,
        records: Vec<(JournalEntry, JournalBodies)>,
    ) -> Result<Vec<u64>, StoreError> {
        let (journal, bodies, meta) = self.journal_trees()?;
        let applying = self.group.begin();
        let mut summaries = sled::Batch::default();
        let mut contents = sled::Batch::default();
        let mut added = 0u64;
        let mut seqs = Vec::with_capacity(records.len());
        for (mut entry, body) in records {
            let seq = self.journal_seq.fetch_add(1, Ordering::Relaxed);
            entry.seq = seq;
            added += (body.request.len() + body.response.len()) as u64;
            summaries.insert(&seq.to_be_bytes(), codec::encode(&entry)?);
            contents.insert(&seq.to_be_bytes(), codec::encode(&body)?);
            seqs.push(seq);
        }
        journal.apply_batch(summaries)?;
        bodies.apply_batch(contents)?;
        meta.update_and_fetch(BODY_BYTES, |old| {
            let old = old.and_then(super::keys::decode_u64).unwrap_or(0);
            Some((old + added).to_be_bytes().to_vec())
        })?;
        applying.wait_durable()?;
        Ok(seqs)
    }

    /// Journal records from `from` on, at most `limit`.
    pub fn journal(&self, from: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let (journal, _, _) = self.journal_trees()?;
        journal
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
        let (journal, _, _) = self.journal_trees()?;
        journal
            .iter()
            .rev()
            .take(limit)
            .map(|e| {
                let (_, v) = e?;
                codec::decode(&v, "a journal record")
            })
            .collect()
    }

    pub fn journal_bodies(&self, seq: u64) -> Result<Option<JournalBodies>, StoreError> {
        let (_, bodies, _) = self.journal_trees()?;
        bodies
            .get(seq.to_be_bytes())?
            .map(|v| codec::decode(&v, "journal bodies"))
            .transpose()
    }

    /// Drops the oldest bodies until none is older than `max_age` and they total at most
    /// `max_bytes`. Summary records stay. Returns how many bodies were dropped.
    pub fn prune_journal_bodies(
        &self,
        max_age: std::time::Duration,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let (_, bodies, meta) = self.journal_trees()?;
        let mut total = meta
            .get(BODY_BYTES)?
            .and_then(|v| super::keys::decode_u64(&v))
            .unwrap_or(0);
        let cutoff = Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MIN);
        let mut dropped = 0u64;
        let mut batch = sled::Batch::default();
        for entry in bodies.iter() {
            let (k, v) = entry?;
            let body: JournalBodies = codec::decode(&v, "journal bodies")?;
            if body.at >= cutoff && total <= max_bytes {
                break;
            }
            total = total.saturating_sub((body.request.len() + body.response.len()) as u64);
            batch.remove(k);
            dropped += 1;
            if dropped.is_multiple_of(10_000) {
                bodies.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        bodies.apply_batch(batch)?;
        meta.insert(BODY_BYTES, &total.to_be_bytes())?;
        Ok(dropped)
    }

    pub fn journal_body_bytes(&self) -> u64 {
        self.journal_trees()
            .ok()
            .and_then(|(_, _, meta)| meta.get(BODY_BYTES).ok().flatten())
            .and_then(|v| super::keys::decode_u64(&v))
            .unwrap_or(0)
    }
}
