//! The operators' worklist and its fixes, as the REST API, the RPC and the console see them.
//!
//! A worklist item is an anomaly reconciliation found (a flow row for an unknown IUV, a receipt
//! never reported, a credit naming no flow, …), named by a stable `key`. An operator resolves it
//! with a [`Fix`] and a reason; the fix is a [`Resolution`] kept for good, and undone only by a
//! later resolution that reverts it. Classes are computed afresh on every read, and resolutions
//! are laid over them by key, so a fix survives reclassification.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{EntityFiscalCode, Iupd, Nav};
use crate::ledger::Actor;

/// One thing to look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Stable name of the item: `flow:<flow>`, `flow-row:<flow>:<iur>:<iuv>:<transfer>`,
    /// `receipt:<receiptId>[:<nav>]`, `movement:<account>:<reference>` or
    /// `transfer:<iupd>:<nav>:<transfer>`.
    pub key: String,
    /// `flow`, `flow-row`, `receipt`, `movement` or `transfer`.
    pub subject: String,
    /// The class that makes it an anomaly (`amount-mismatch`, `not-reported`, …).
    pub class: String,
    /// Cents at stake.
    pub amount: i64,
    /// When it happened: the payment, the row's payment date, the booking, the flow's date.
    #[serde(default)]
    pub date: Option<Date>,
    pub iupd: Option<String>,
    pub nav: Option<String>,
    pub transfer: Option<u8>,
    pub flow_id: Option<String>,
    /// The receipt (IUR) or the bank's reference.
    pub reference: Option<String>,
    pub detail: String,
    /// The fix in force on it, if any.
    #[serde(default)]
    pub resolution: Option<Resolution>,
}

/// A page of the worklist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Worklist {
    pub items: Vec<WorkItem>,
    /// Pass as `after` for the next page of transfers; none at the end.
    pub next: Option<u64>,
}

/// Which items a worklist read returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Not resolved yet (the default).
    #[default]
    Open,
    Resolved,
    All,
}

/// Filters on the worklist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorklistQuery {
    pub class: Option<String>,
    pub state: ItemState,
    /// Items of at least this many cents.
    pub min_amount: Option<i64>,
    /// Items dated this many days ago or earlier.
    pub older_than_days: Option<u32>,
    /// Continue the transfers after this position.
    pub after: Option<u64>,
}

impl WorklistQuery {
    /// Whether `item` passes the filters (`today` for the age).
    pub fn admits(&self, item: &WorkItem, today: Date) -> bool {
        let state = match self.state {
            ItemState::Open => item.resolution.is_none(),
            ItemState::Resolved => item.resolution.is_some(),
            ItemState::All => true,
        };
        let old = match self.older_than_days {
            None => true,
            Some(days) => item.date.is_some_and(|d| {
                today
                    .checked_sub(jiff::Span::new().days(i64::from(days)))
                    .is_ok_and(|limit| d <= limit)
            }),
        };
        state
            && old
            && self.class.as_deref().is_none_or(|c| c == item.class)
            && self.min_amount.is_none_or(|m| item.amount.abs() >= m)
    }
}

/// What an operator does about an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fix {
    /// The row, receipt or credit belongs to this instalment (say, a row whose IUV the PSP
    /// mistyped). The instalment's own items are resolved by the link too.
    Link { iupd: Iupd, nav: Nav },
    /// The money is to be given back; the refund is followed outside mpay.
    RefundDue,
    /// The difference is accepted as it is.
    AcceptDifference,
    /// This credit is the settlement of that flow (a bank that lost the remittance text).
    AttachToFlow { flow_id: String },
    /// The receipt was asked for again (the node's receipt recovery); the item stays in view
    /// as resolved until a receipt makes it disappear.
    RecoveryRequested,
    /// Nothing to do, with a note why.
    Dismiss,
    /// Undoes resolution `id`, which stays in the trail.
    Revert { id: u64 },
}

impl Fix {
    /// The fix's name in the audit trail and on screen.
    pub fn name(&self) -> &'static str {
        match self {
            Fix::Link { .. } => "link",
            Fix::RefundDue => "refund-due",
            Fix::AcceptDifference => "accept-difference",
            Fix::AttachToFlow { .. } => "attach-to-flow",
            Fix::RecoveryRequested => "recovery-requested",
            Fix::Dismiss => "dismiss",
            Fix::Revert { .. } => "revert",
        }
    }
}

/// A fix as it is kept: numbered, attributed, never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub id: u64,
    pub entity: EntityFiscalCode,
    /// The item's key (for a revert, the reverted resolution's).
    pub key: String,
    pub fix: Fix,
    pub reason: String,
    pub actor: Actor,
    pub at: Timestamp,
}

/// The key a link resolves besides its own: the instalment it points at.
pub fn link_target(iupd: impl std::fmt::Display, nav: impl std::fmt::Display) -> String {
    format!("instalment:{iupd}:{nav}")
}

/// The resolutions in force, by the key they resolve, from every resolution of an entity in
/// the order they were made. A link also resolves its target instalment (`link_target`).
pub fn in_force(all: &[Resolution]) -> BTreeMap<String, Resolution> {
    let reverted: std::collections::BTreeSet<u64> = all
        .iter()
        .filter_map(|r| match r.fix {
            Fix::Revert { id } => Some(id),
            _ => None,
        })
        .collect();
    let mut out = BTreeMap::new();
    for r in all {
        if reverted.contains(&r.id) || matches!(r.fix, Fix::Revert { .. }) {
            continue;
        }
        if let Fix::Link { iupd, nav } = &r.fix {
            out.insert(link_target(iupd, nav), r.clone());
        }
        out.insert(r.key.clone(), r.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolution(id: u64, key: &str, fix: Fix) -> Resolution {
        Resolution {
            id,
            entity: "00000000000".parse().unwrap_or_else(|_| unreachable!()),
            key: key.into(),
            fix,
            reason: "because".into(),
            actor: Actor::Operator("anna".into()),
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_revert_takes_its_resolution_out_of_force_and_a_later_fix_counts() {
        let all = vec![
            resolution(1, "movement:a:1", Fix::Dismiss),
            resolution(2, "movement:a:1", Fix::Revert { id: 1 }),
            resolution(3, "flow:F", Fix::AcceptDifference),
            resolution(4, "movement:a:1", Fix::RefundDue),
        ];
        let f = in_force(&all);
        assert_eq!(f.len(), 2);
        assert_eq!(f["movement:a:1"].id, 4);
        assert_eq!(f["flow:F"].id, 3);
    }
}
