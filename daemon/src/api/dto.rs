//! The API's JSON: what an authority sends (the model with the parts mpay can fill in made
//! optional) and what it reads back (the ledger's fold with its derived statuses).
//!
//! Identifiers, amounts and dates use the domain types, so a bad value is refused while the body
//! is read, with the path of the field. Amounts are integer cents or strings such as "12.34";
//! answers always give integer cents.

use jiff::Timestamp;
use jiff::civil::Date;
use mpay_common::ids::{EntityFiscalCode, Iupd, Iuv, Nav};
use mpay_common::ledger::{
    Arrival, Change, InstalmentState, InstalmentStatus, Payment, Position, PositionStatus,
    Progress, Refund,
};
use mpay_common::model::{Debtor, Metadata, OptionKind, Transfer};
use mpay_common::money::Cents;
use serde::Serialize;

use crate::store::{PositionId, StoredEvent};

pub use mpay_common::requests::{
    InstalmentIn, OfflinePaymentIn, OptionIn, PositionIn, ReasonIn, ReductionIn, RescheduleIn,
    TransferIn,
};

/// A position as it stands, with derived statuses.
#[derive(Clone, Debug, Serialize)]
pub struct PositionOut {
    pub entity: EntityFiscalCode,
    pub iupd: Iupd,
    pub kind: String,
    pub description: String,
    pub debtor: Debtor,
    pub validity: Option<Date>,
    pub expiry: Option<Date>,
    pub status: PositionStatus,
    pub progress: Progress,
    /// What the debtor must still pay at least to settle (cents).
    pub open_amount: Cents,
    pub cancelled: bool,
    pub options: Vec<OptionOut>,
    /// Everything received, every payment once (cents).
    pub paid_amount: Cents,
    /// Received beyond what is owed (cents): see `refunds`.
    pub refunds_due: Cents,
    /// What is owed back, per notice and transfer (so per beneficiary).
    pub refunds: Vec<Refund>,
    /// Payments that arrived for a notice that was not due: paid twice, after a cancellation,
    /// on a replaced notice, through a second option.
    pub double_payments: Vec<DoublePaymentOut>,
    /// Number of ledger events.
    pub events: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Serialize)]
pub struct OptionOut {
    pub kind: OptionKind,
    pub instalments: Vec<InstalmentOut>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InstalmentOut {
    pub nav: Nav,
    pub iuv: Iuv,
    pub status: InstalmentStatus,
    /// Current amount (after reductions).
    pub amount: Cents,
    pub original_amount: Cents,
    /// Still owed on this notice.
    pub due_amount: Cents,
    pub due: Date,
    pub description: String,
    pub transfers: Vec<Transfer>,
    pub metadata: Vec<Metadata>,
    /// Replaced by a plan or reduced to zero.
    pub withdrawn: bool,
    /// Every payment for this notice, with its split over the transfers.
    pub payments: Vec<Payment>,
    /// Owed, received and to refund, per transfer (cents, in transfer order).
    pub owed: Vec<Cents>,
    pub paid: Vec<Cents>,
    pub refund: Vec<Cents>,
    /// Per transfer: what the reporting flows say was paid, and what the treasury credited
    /// (cents).
    pub reported: Vec<Cents>,
    pub credited: Vec<Cents>,
    /// The notice's QR code text, `PAGOPA|002|NAV|CF|cents`, while something is owed.
    pub qr: Option<String>,
}

impl PositionOut {
    pub fn new(p: &Position, today: Date) -> PositionOut {
        let instalment = |o: usize, i: &InstalmentState| {
            let account = p.account_of(o, i);
            let payable = p.payable(i.nav(), today).and_then(Result::ok);
            InstalmentOut {
                nav: i.terms.nav.clone(),
                iuv: i.terms.iuv.clone(),
                status: p.instalment_status(i, today),
                amount: i.terms.amount,
                original_amount: i.original_amount,
                due_amount: account.total_open(),
                due: i.terms.due,
                description: i.terms.description.clone(),
                transfers: i.terms.transfers.clone(),
                metadata: i.terms.metadata.clone(),
                withdrawn: i.withdrawn.is_some(),
                payments: i.payments.clone(),
                refund: account.refund(),
                owed: account.owed,
                paid: account.paid,
                reported: i.reported(),
                credited: i.credited.clone(),
                qr: payable.map(|d| qr(i.nav(), &p.entity, d.amount)),
            }
        };
        PositionOut {
            entity: p.entity.clone(),
            iupd: p.iupd.clone(),
            kind: p.kind.clone(),
            description: p.description.clone(),
            debtor: p.debtor.clone(),
            validity: p.validity,
            expiry: p.expiry,
            status: p.status(today),
            progress: p.progress(),
            open_amount: p.open_amount(),
            cancelled: p.cancelled,
            options: p
                .options
                .iter()
                .enumerate()
                .map(|(n, o)| OptionOut {
                    kind: o.kind,
                    instalments: o.instalments.iter().map(|i| instalment(n, i)).collect(),
                })
                .collect(),
            paid_amount: p.total_paid(),
            refunds_due: p.refunds_due(),
            refunds: p.refunds(),
            double_payments: p
                .double_payments()
                .map(|(nav, pay)| DoublePaymentOut::new(nav, pay))
                .collect(),
            events: p.events,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// The text of a notice's QR code (pagoPA's `PAGOPA|002|NAV|CF|cents`).
pub fn qr(nav: &Nav, entity: &EntityFiscalCode, amount: Cents) -> String {
    format!("PAGOPA|002|{nav}|{entity}|{}", amount.0)
}

/// A payment for a notice that was not due.
#[derive(Clone, Debug, Serialize)]
pub struct DoublePaymentOut {
    pub nav: Nav,
    /// The pagoPA receipt, if it came through pagoPA.
    pub receipt_id: Option<String>,
    pub amount: Cents,
    /// What the notice was when it arrived.
    pub found: Arrival,
}

impl DoublePaymentOut {
    pub fn new(nav: &Nav, p: &Payment) -> DoublePaymentOut {
        DoublePaymentOut {
            nav: nav.clone(),
            receipt_id: p.receipt_id().map(str::to_string),
            amount: p.amount,
            found: p.arrival,
        }
    }
}

/// One line of the paged list.
#[derive(Clone, Debug, Serialize)]
pub struct PositionSummary {
    pub iupd: Iupd,
    pub kind: String,
    pub description: String,
    pub debtor: String,
    pub debtor_name: String,
    pub status: PositionStatus,
    pub open_amount: Cents,
    pub updated_at: Timestamp,
}

impl PositionSummary {
    pub fn new(p: &Position, today: Date) -> PositionSummary {
        PositionSummary {
            iupd: p.iupd.clone(),
            kind: p.kind.clone(),
            description: p.description.clone(),
            debtor: p.debtor.code.to_string(),
            debtor_name: p.debtor.name.clone(),
            status: p.status(today),
            open_amount: p.open_amount(),
            updated_at: p.updated_at,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PositionPage {
    pub positions: Vec<PositionSummary>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<PositionId>,
}

/// One ledger event.
#[derive(Clone, Debug, Serialize)]
pub struct EventOut {
    pub seq: usize,
    pub at: Timestamp,
    /// `api-key:NAME`, `operator:NAME`, `node` or `system`.
    pub actor: String,
    pub reason: Option<String>,
    /// Short name of the change: `loaded`, `reduced`, `paid-offline`, …
    pub change_type: &'static str,
    pub change: Change,
}

impl EventOut {
    pub fn new(seq: usize, stored: StoredEvent) -> EventOut {
        let e = stored.event;
        EventOut {
            seq,
            at: e.at,
            actor: e.actor.to_string(),
            reason: e.reason,
            change_type: e.change.name(),
            change: e.change,
        }
    }
}
