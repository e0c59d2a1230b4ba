//! The audit trail (`audit` tree): every operator action, kept for good, numbered in order. A
//! record is durable before the action's answer goes back, whatever its outcome.

use mpay_common::console::AuditRecord;

use super::{Store, StoreError, codec};

impl Store {
    /// Appends a record (its `seq` is given here) and waits until it is durable.
    pub fn append_audit(&self, mut record: AuditRecord) -> Result<u64, StoreError> {
        let mut next = self.audit_seq.lock().unwrap_or_else(|p| p.into_inner());
        let seq = match *next {
            Some(seq) => seq,
            None => match self.audit.last()? {
                Some((k, _)) => super::keys::decode_id(&k)
                    .ok_or_else(|| StoreError::Corrupt("audit key".into()))?
                    .saturating_add(1),
                None => 1,
            },
        };
        record.seq = seq;
        let applying = self.group.begin();
        self.group.accepting()?;
        self.audit
            .insert(seq.to_be_bytes(), codec::encode(&record)?)?;
        *next = Some(seq + 1);
        drop(next);
        applying.wait_durable()?;
        Ok(seq)
    }

    /// Records before `before` (all: None), newest first, of one operator or all; at most
    /// `limit`.
    pub fn audit(
        &self,
        operator: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let end = before.unwrap_or(u64::MAX).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.audit.range(..end).rev() {
            if out.len() == limit {
                break;
            }
            let (_, v) = entry?;
            let record: AuditRecord = codec::decode(&v, "an audit record")?;
            let name = match &record.actor {
                mpay_common::ledger::Actor::Operator(name) => Some(name.as_str()),
                _ => None,
            };
            if operator.is_none_or(|o| name == Some(o)) {
                out.push(record);
            }
        }
        Ok(out)
    }
}
