//! Treasury movements (key `MOVEMENT`: entity, account, the bank's reference), each stored once
//! with the `Credited` facts it adds to positions, in one commit: a statement loaded twice
//! loads nothing the second time.

use std::collections::BTreeMap;

use jiff::Timestamp;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::{Event, Position};
use mpay_common::reconcile::Movement;
use serde::{Deserialize, Serialize};

use super::codec::{self, Stored};
use super::{PositionId, Store, StoreError, StoredEvent, keys};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovementRecord {
    pub entity: EntityFiscalCode,
    /// The statement it came in (`MsgId`).
    pub statement: String,
    pub movement: Movement,
    pub received_at: Timestamp,
    pub source: String,
    /// `Credited` facts it added.
    pub credited: u32,
    pub commit: u64,
}

impl Stored for MovementRecord {}

impl Store {
    /// Stores the movements not held yet, each with its `Credited` facts, in one commit; gives
    /// how many were new.
    pub fn record_movements(
        &self,
        movements: Vec<(MovementRecord, Vec<(PositionId, Event)>)>,
    ) -> Result<usize, StoreError> {
        let applying = self.group.begin();
        let w = self.writer();
        let commit = w.commit + 1;
        let mut batch = super::kv::Batch::default();
        let mut positions: BTreeMap<PositionId, (Position, Position)> = BTreeMap::new();
        let mut new = 0;
        for (mut record, credits) in movements {
            let key = keys::movement(
                &record.entity,
                &record.movement.account,
                &record.movement.reference,
            );
            if self.data.get(&key)?.is_some() {
                continue;
            }
            let mut credited = 0;
            for (id, event) in credits {
                let entry = match positions.remove(&id) {
                    Some(e) => e,
                    None => match self.position(id)? {
                        Some(p) => (p.clone(), p),
                        None => continue,
                    },
                };
                let (before, mut after) = entry;
                let seq = after.events;
                match after.apply(&event) {
                    Ok(()) => {
                        let stored = StoredEvent { commit, event };
                        batch.insert(keys::ledger(id, seq), codec::encode(&stored)?);
                        batch.insert(keys::change(commit, id), before.events.to_be_bytes());
                        credited += 1;
                    }
                    Err(e) => {
                        tracing::warn!(movement = ?record.movement.reference, "credit not recorded: {e}")
                    }
                }
                positions.insert(id, (before, after));
            }
            record.credited = credited;
            record.commit = commit;
            batch.insert(key, codec::encode(&record)?);
            new += 1;
        }
        if new == 0 {
            drop(w);
            applying.wait_durable()?;
            return Ok(0);
        }
        let mut updated = Vec::new();
        for (id, (before, after)) in positions {
            if after.events > before.events {
                self.write_position(&mut batch, id, Some(&before), &after)?;
                updated.push((id, after));
            }
        }
        self.commit(applying, w, batch, updated, |_| {})?;
        Ok(new)
    }

    /// The entity's movements, in key order (account, reference), at most `limit`.
    pub fn movements(
        &self,
        entity: &EntityFiscalCode,
        limit: usize,
    ) -> Result<Vec<MovementRecord>, StoreError> {
        self.data
            .scan_prefix(keys::movements_of(entity))
            .take(limit)
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a movement")
            })
            .collect()
    }
}
