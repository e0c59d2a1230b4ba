//! The operators' fixes to the worklist (`reconciliation` tree): key (entity, id), never
//! rewritten. A fix is durable before its answer goes back; ids are one sequence for all
//! entities, so the trail reads in order.

use mpay_common::ids::EntityFiscalCode;
use mpay_common::worklist::Resolution;

use super::codec::{self, Stored};
use super::{Store, StoreError};

impl Stored for Resolution {}

fn key(entity: &EntityFiscalCode, id: u64) -> Vec<u8> {
    let mut k = entity.as_bytes_key().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Store {
    /// Appends a resolution (its `id` is given here) and waits until it is durable.
    pub fn append_resolution(&self, mut r: Resolution) -> Result<Resolution, StoreError> {
        let mut next = self.resolution_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = match *next {
            Some(id) => id,
            None => {
                let mut max = 0;
                for entry in self.reconciliation.iter() {
                    let (k, _) = entry?;
                    let tail = k.len().checked_sub(8).map(|at| &k[at..]);
                    let id = tail
                        .and_then(super::keys::decode_u64)
                        .ok_or_else(|| StoreError::Corrupt("resolution key".into()))?;
                    max = max.max(id);
                }
                max + 1
            }
        };
        r.id = id;
        let applying = self.group.begin();
        self.group.accepting()?;
        self.reconciliation
            .insert(key(&r.entity, id), codec::encode(&r)?)?;
        *next = Some(id + 1);
        drop(next);
        applying.wait_durable()?;
        Ok(r)
    }

    /// Every resolution of the entity, oldest first.
    pub fn resolutions(&self, entity: &EntityFiscalCode) -> Result<Vec<Resolution>, StoreError> {
        self.reconciliation
            .scan_prefix(entity.as_bytes_key())
            .map(|entry| {
                let (_, v) = entry?;
                codec::decode(&v, "a resolution")
            })
            .collect()
    }
}
