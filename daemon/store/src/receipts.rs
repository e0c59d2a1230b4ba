//! Receipts (paSendRT): stored with their raw XML, durably, before the node hears OK; the
//! instalment becomes paid through the ledger in the same atomic commit. A replay of the same
//! receipt finds the stored one and changes nothing.

use jiff::Timestamp;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::{Change, Event};
use mpay_common::money::Cents;
use serde::{Deserialize, Serialize};

use super::{PositionId, Store, StoreError, StoredEvent, codec, keys};

/// What a stored receipt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// The instalment became paid.
    Applied,
    /// The notice was already paid, paid offline or cancelled: the money is kept on the ledger
    /// as a double payment, and a refund is due.
    DoublePayment,
    /// No position of ours has that notice.
    Orphan,
    /// Sent to a secondary beneficiary: the primary entity's position is not ours to update.
    SecondaryBeneficiary,
    /// `outcome` KO: no money moved, nothing is paid.
    Ko,
    /// Its receiptId was already used by another receipt for a different notice: kept under
    /// its own key and flagged for the operators; it pays its notice all the same.
    ReceiptIdReused,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// The entity the receipt was sent to (`idPA`).
    pub entity: EntityFiscalCode,
    pub receipt_id: String,
    /// The entity owning the notice (`receipt/fiscalCode`).
    pub notice_entity: String,
    pub nav: String,
    pub iuv: String,
    pub amount: Cents,
    pub psp: String,
    pub station: String,
    pub v2: bool,
    pub stand_in: bool,
    pub received_at: Timestamp,
    pub position: Option<PositionId>,
    pub disposition: Disposition,
    /// The commit that stored it (set by the store).
    pub commit: u64,
    /// The request exactly as received.
    pub raw: String,
}

/// The result of `record_receipt`.
#[derive(Debug)]
pub enum Recorded {
    /// Stored now, durably.
    New(ReceiptRecord),
    /// Already stored by an earlier delivery: nothing changed.
    Replay(ReceiptRecord),
}

impl Store {
    /// The position holding the paid notice of the receipt's entity.
    fn paid_position(
        &self,
        record: &ReceiptRecord,
        payment: &Event,
    ) -> Result<Option<PositionId>, StoreError> {
        let Change::PaidViaPagoPa { nav, .. } = &payment.change else {
            return Ok(None);
        };
        Ok(self
            .data
            .get(keys::by_iuv(&record.entity, &nav.iuv()))?
            .and_then(|v| keys::decode_id(&v)))
    }

    /// Stores a receipt and, if `payment` (a `PaidViaPagoPa` event) names a notice of one of the
    /// entity's positions, appends it to that position's ledger in the same commit. The notice is
    /// looked up as of that commit (read again under the writer lock if anything committed since
    /// the first reading), so a concurrent variation cannot turn a payment into an orphan.
    /// Returns only once durable.
    pub fn record_receipt(
        &self,
        mut record: ReceiptRecord,
        payment: Option<Event>,
    ) -> Result<Recorded, StoreError> {
        let key = keys::receipt(&record.entity, &record.receipt_id);
        // The stored receipt, the paid notice's position id and that position.
        let read = || -> Result<_, StoreError> {
            let existing = self.data.get(&key)?;
            let found = match &payment {
                Some(event) => self.paid_position(&record, event)?,
                None => None,
            };
            let before = found.map(|id| self.position(id)).transpose()?.flatten();
            Ok((existing, found, before))
        };
        // Read outside the writer lock, so that no disk read or decoding happens while other
        // committers wait; read again under it only if a commit came in between.
        let seen = self.commits.load(std::sync::atomic::Ordering::Acquire);
        let mut reads = read()?;
        let applying = self.group.begin();
        let w = self.writer();
        if w.commit != seen {
            reads = read()?;
        }
        let (existing, found, before) = reads;
        let mut key = key;
        let mut reused = false;
        if let Some(existing) = existing {
            let first: ReceiptRecord = codec::decode(&existing, "a receipt")?;
            // The same receiptId for another notice is another payment, not a replay.
            let replay = if first.nav == record.nav {
                Some(first)
            } else {
                key = keys::receipt_reused(&record.entity, &record.receipt_id, &record.nav);
                reused = true;
                match self.data.get(&key)? {
                    Some(v) => Some(codec::decode(&v, "a receipt")?),
                    None => None,
                }
            };
            if let Some(stored) = replay {
                drop(w);
                // The first delivery may still be waiting for its fsync: OK only once it is
                // on disk.
                applying.wait_durable()?;
                return Ok(Recorded::Replay(stored));
            }
        }
        let commit = w.commit + 1;
        let mut batch = super::kv::Batch::default();
        let mut updated = Vec::new();
        if let Some(event) = payment {
            match found.zip(before) {
                Some((id, before)) => {
                    let mut after = before.clone();
                    match after.apply(&event) {
                        Ok(()) => {
                            let double =
                                after.double_payments().count() > before.double_payments().count();
                            record.disposition = if double {
                                Disposition::DoublePayment
                            } else {
                                Disposition::Applied
                            };
                            record.position = Some(id);
                            self.write_position(&mut batch, id, Some(&before), &after)?;
                            updated.push((id, after));
                            let stored = StoredEvent { commit, event };
                            batch.insert(keys::ledger(id, before.events), codec::encode(&stored)?);
                            batch.insert(keys::change(commit, id), before.events.to_be_bytes());
                        }
                        Err(e) => {
                            tracing::warn!(receipt = ?record.receipt_id, "receipt not applied: {e}");
                            record.disposition = Disposition::Orphan;
                        }
                    }
                }
                None => record.disposition = Disposition::Orphan,
            }
        }
        if reused {
            record.disposition = Disposition::ReceiptIdReused;
        }
        record.commit = commit;
        batch.insert(key, codec::encode(&record)?);
        self.commit(applying, w, batch, updated, |_| {})?;
        Ok(Recorded::New(record))
    }

    pub fn receipt(
        &self,
        entity: &EntityFiscalCode,
        receipt_id: &str,
    ) -> Result<Option<ReceiptRecord>, StoreError> {
        self.data
            .get(keys::receipt(entity, receipt_id))?
            .map(|v| codec::decode(&v, "a receipt"))
            .transpose()
    }

    /// The receipts sent to `entity`, in receiptId order, at most `limit`.
    pub fn receipts_of(
        &self,
        entity: &EntityFiscalCode,
        limit: usize,
    ) -> Result<Vec<ReceiptRecord>, StoreError> {
        self.data
            .scan_prefix(keys::receipt(entity, ""))
            .take(limit)
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a receipt")
            })
            .collect()
    }

    /// Every stored receipt, in key order (entity, receiptId).
    pub fn receipts(&self) -> impl Iterator<Item = Result<ReceiptRecord, StoreError>> + '_ {
        self.data.scan_prefix([keys::RECEIPT]).map(|entry| {
            let (_, v) = entry?;
            codec::decode(&v, "a receipt")
        })
    }
}
