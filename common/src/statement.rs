//! The citizen statement (estratto conto) as the REST API and the console show it: every
//! position of one debtor with its notices, payments, variations and double payments, and the
//! totals. Built by the daemon's statement service from the ledger.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{EntityFiscalCode, Iupd, Iuv, Nav};
use crate::ledger::{Arrival, InstalmentStatus, OfflineChannel, PositionStatus};
use crate::model::OptionKind;
use crate::money::Cents;

/// Positions one statement lists at most per entity (`truncated` says when the debtor has more
/// with one of them).
pub const MAX_POSITIONS: usize = 1000;

/// An amount as integer cents and as euro text ("12.34").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub cents: i64,
    pub text: String,
}

impl From<Cents> for Money {
    fn from(c: Cents) -> Money {
        Money {
            cents: c.0,
            text: c.to_string(),
        }
    }
}

pub fn money(cents: i64) -> Money {
    Cents(cents).into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityRef {
    pub fiscal_code: EntityFiscalCode,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub debtor: String,
    /// The entity the statement is limited to; null: every entity served.
    pub entity: Option<EntityRef>,
    /// The day the statuses are computed for (Europe/Rome).
    pub date: Date,
    pub generated_at: Timestamp,
    pub totals: Totals,
    /// Newest first.
    pub positions: Vec<StatementPosition>,
    /// The debtor has more positions with one entity than a statement lists for it.
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub positions: usize,
    /// Sum over the positions of the least the debtor must still pay to settle each.
    pub open_amount: Money,
    /// Every pagoPA receipt, double payments included.
    pub paid_pagopa: Money,
    pub paid_offline: Money,
    /// What was received beyond what is owed, whichever way it came.
    pub refunds_due: Money,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatementPosition {
    pub entity: EntityRef,
    pub iupd: Iupd,
    pub kind: String,
    pub description: String,
    pub status: PositionStatus,
    pub validity: Option<Date>,
    pub expiry: Option<Date>,
    /// When the position was loaded, and when it last changed.
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub open_amount: Money,
    pub paid_pagopa: Money,
    pub paid_offline: Money,
    pub refunds_due: Money,
    pub notices: Vec<StatementNotice>,
    /// Oldest first.
    pub payments: Vec<PaymentLine>,
    /// Reductions, plan changes, cancellations, restores and replacements; oldest first.
    pub variations: Vec<Variation>,
    pub double_payments: Vec<DoublePaymentLine>,
    /// What is owed back, per notice and transfer (so per beneficiary).
    pub refunds: Vec<RefundLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatementNotice {
    pub nav: Nav,
    pub iuv: Iuv,
    /// Index of the payment option (0: the original; plans added by a reschedule follow).
    pub option: usize,
    pub option_kind: OptionKind,
    pub description: String,
    /// Current amount (after reductions).
    pub amount: Money,
    pub original_amount: Money,
    /// Still owed on this notice.
    pub due_amount: Money,
    /// Received for it, and of that what is owed back.
    pub paid_amount: Money,
    pub refund_amount: Money,
    pub due: Date,
    pub status: InstalmentStatus,
    /// `PAGOPA|002|NAV|CF|cents` exactly while the station would take a payment for it.
    pub qr: Option<String>,
}

/// Money received for the position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "via")]
pub enum PaymentLine {
    #[serde(rename = "pagopa")]
    PagoPa {
        nav: Nav,
        paid_at: Timestamp,
        psp: String,
        amount: Money,
        receipt_id: String,
        /// The notice was no longer due: a refund is owed (see `double_payments`).
        double_payment: bool,
    },
    #[serde(rename = "offline")]
    Offline {
        nav: Nav,
        channel: OfflineChannel,
        /// The day the money was paid.
        date: Date,
        amount: Money,
        reference: String,
        /// When the authority recorded it.
        recorded_at: Timestamp,
        reason: Option<String>,
        /// The notice was no longer due: a refund is owed (see `double_payments`).
        double_payment: bool,
    },
}

/// A change to what is owed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Variation {
    /// Sgravio.
    Reduced {
        at: Timestamp,
        reason: Option<String>,
        nav: Nav,
        old_amount: Money,
        new_amount: Money,
        /// The administrative act granting it.
        act: String,
    },
    /// Rateizzazione: `replaced` notices stop being payable, `new` ones form a plan.
    Rescheduled {
        at: Timestamp,
        reason: Option<String>,
        replaced: Vec<Nav>,
        new: Vec<Nav>,
    },
    Cancelled {
        at: Timestamp,
        reason: Option<String>,
    },
    Restored {
        at: Timestamp,
        reason: Option<String>,
    },
    /// The authority replaced the position's data before anything was paid.
    Updated {
        at: Timestamp,
        reason: Option<String>,
    },
}

/// A payment for a notice that was not due when it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoublePaymentLine {
    pub nav: Nav,
    /// The pagoPA receipt, or the offline payment's reference.
    pub receipt_id: Option<String>,
    pub reference: Option<String>,
    pub amount: Money,
    /// What the notice was when it arrived.
    pub found: Arrival,
}

/// Money owed back on one transfer of a notice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundLine {
    pub nav: Nav,
    pub transfer: u8,
    pub beneficiary: EntityFiscalCode,
    pub amount: Money,
}
