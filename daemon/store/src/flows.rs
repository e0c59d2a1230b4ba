//! Reporting flows, stored raw and parsed in the `data` tree (key `FLOW`), together with the
//! per-transfer `Reported` facts their rows add to positions' ledgers: one atomic commit, so a
//! crash leaves either the flow and its facts or neither. Every revision of a flow (same id, a
//! later `dataOraFlusso`) is kept; a flow already held is not stored twice.

use std::collections::BTreeMap;

use jiff::Timestamp;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::Event;
use mpay_common::reconcile::Flow;
use serde::{Deserialize, Serialize};

use super::codec::{self, Stored};
use super::{PositionId, Store, StoreError, StoredEvent, keys};

/// A flow as received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub entity: EntityFiscalCode,
    /// `identificativoFlusso` and `dataOraFlusso` as the document gives them; for a document
    /// that could not be read, `unreadable-<digest>` and the time it arrived.
    pub flow_id: String,
    pub time: String,
    pub received_at: Timestamp,
    /// Who brought it: `api-key:NAME`, `inbox:FILE`, `node`.
    pub source: String,
    /// The parsed flow, or why it could not be read.
    pub flow: Option<Flow>,
    pub error: Option<String>,
    /// Ledger facts this flow added (rows matched to a notice's transfer).
    pub reported: u32,
    /// The commit that stored it (set by the store).
    pub commit: u64,
    pub raw: String,
}

impl Stored for FlowRecord {}

/// The result of `record_flow`.
#[derive(Debug)]
pub enum FlowRecorded {
    New(FlowRecord),
    /// The same flow (id and time) was already held: nothing changed.
    Held(FlowRecord),
}

impl Store {
    /// Stores a flow and appends `reports` (its `Reported` facts, and the `Credited` facts of
    /// movements that arrived before it) to their positions, in one commit with `settled`, those
    /// movements marked as credited. A fact a position no longer accepts is left out (and
    /// logged). Durable when it returns.
    pub fn record_flow(
        &self,
        mut record: FlowRecord,
        reports: Vec<(PositionId, Event)>,
        settled: Vec<super::MovementRecord>,
    ) -> Result<FlowRecorded, StoreError> {
        let key = keys::flow(&record.entity, &record.flow_id, &record.time);
        let mut by_position: BTreeMap<PositionId, Vec<Event>> = BTreeMap::new();
        for (id, event) in reports {
            by_position.entry(id).or_default().push(event);
        }
        // Warm the caches outside the writer lock (see `append`).
        for id in by_position.keys() {
            self.position(*id)?;
        }
        let applying = self.group.begin();
        let w = self.writer();
        if let Some(existing) = self.data.get(&key)? {
            drop(w);
            applying.wait_durable()?;
            return Ok(FlowRecorded::Held(codec::decode(&existing, "a flow")?));
        }
        let commit = w.commit + 1;
        let mut batch = super::kv::Batch::default();
        let mut updated = Vec::new();
        let mut reported = 0u32;
        for (id, events) in by_position {
            let Some(before) = self.position(id)? else {
                continue;
            };
            let mut after = before.clone();
            let mut seq = before.events;
            for event in events {
                match after.apply(&event) {
                    Ok(()) => {
                        let stored = StoredEvent { commit, event };
                        batch.insert(keys::ledger(id, seq), codec::encode(&stored)?);
                        batch.insert(keys::change(commit, id), before.events.to_be_bytes());
                        seq += 1;
                        reported += 1;
                    }
                    Err(e) => tracing::warn!(flow = ?record.flow_id, "row not reported: {e}"),
                }
            }
            if seq > before.events {
                self.write_position(&mut batch, id, Some(&before), &after)?;
                updated.push((id, after));
            }
        }
        record.reported = reported;
        record.commit = commit;
        batch.insert(key, codec::encode(&record)?);
        for mut m in settled {
            m.commit = commit;
            let key = keys::movement(&m.entity, &m.movement.account, &m.movement.reference);
            batch.insert(key, codec::encode(&m)?);
        }
        self.commit(applying, w, batch, updated, |_| {})?;
        Ok(FlowRecorded::New(record))
    }

    /// Every revision of flow `flow_id` of the entity, oldest first.
    pub fn flow_revisions(
        &self,
        entity: &EntityFiscalCode,
        flow_id: &str,
    ) -> Result<Vec<FlowRecord>, StoreError> {
        self.data
            .scan_prefix(keys::flow_prefix(entity, flow_id))
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a flow")
            })
            .collect()
    }

    /// The entity's flows, in key order (flow id, then time), from `after` (exclusive), at most
    /// `limit`.
    pub fn flows(
        &self,
        entity: &EntityFiscalCode,
        limit: usize,
    ) -> Result<Vec<FlowRecord>, StoreError> {
        self.data
            .scan_prefix(keys::flows_of(entity))
            .take(limit)
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a flow")
            })
            .collect()
    }
}
