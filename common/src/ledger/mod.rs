//! The variation ledger: every change to a position is an immutable event, and the position's
//! current state is the fold of its events. Statuses are derived from that state, bottom-up.
//!
//! `Position::apply` (in `rules`) is the single place where the rules of variations live: the
//! store appends an event only after applying it to the current state succeeded, so a stored
//! ledger always folds. `state` derives the money from the fold, per transfer; `split` divides
//! amounts over transfers.

mod rules;
pub mod split;
mod state;

pub use state::{
    Account, Arrival, InstalmentState, InstalmentStatus, NotPayable, OptionState, PaidVia, Payable,
    Payment, PaymentFlag, Position, PositionStatus, Progress, Refund, Withdrawal, WithdrawalKind,
};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{Iupd, Nav};
use crate::model::{Debtor, ModelError, PaymentOption, PositionData};
use crate::money::Cents;

/// Who made a change. Every mutation names one (DESIGN.md §8.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// An authority's system, through its API key (the key's name, never the key).
    ApiKey(String),
    /// A console operator (the configured operator name).
    Operator(String),
    /// pagoPA's node (receipts).
    Node,
    /// mpay itself (daily run, expiry, demo loader).
    System,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::ApiKey(k) => write!(f, "api-key:{k}"),
            Actor::Operator(o) => write!(f, "operator:{o}"),
            Actor::Node => f.write_str("node"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// How money collected outside pagoPA reached the authority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfflineChannel {
    Counter,
    F24,
    PostalSlip,
    BankTransfer,
    Pos,
    Other,
}

/// What happened to a position. One variant per variation the authority, the node, an operator or
/// the system can make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The position was loaded (carico). Always the first event.
    Loaded(PositionData),
    /// The authority replaced the position's data before anything was paid.
    Updated(PositionData),
    DebtorUpdated(Debtor),
    /// Sgravio: the instalment's amount goes down; zero cancels it.
    Reduced {
        nav: Nav,
        old_amount: Cents,
        new_amount: Cents,
        /// New amount of each transfer, in order; they add up to `new_amount`.
        transfer_amounts: Vec<Cents>,
        /// Reference of the administrative act that grants the reduction.
        act: String,
    },
    /// Rateizzazione: unpaid instalments are replaced by a new plan; the old notices stop being
    /// payable.
    Rescheduled {
        replaced: Vec<Nav>,
        plan: PaymentOption,
    },
    /// Money collected outside pagoPA. Recorded whatever the notice's state: what does not fit
    /// becomes a refund due. `(channel, reference)` names one payment within the position.
    PaidOffline {
        nav: Nav,
        channel: OfflineChannel,
        date: Date,
        amount: Cents,
        reference: String,
        /// The split over the notice's transfers when the authority gives it; otherwise in
        /// proportion to what is open on each.
        transfer_amounts: Option<Vec<Cents>>,
    },
    Cancelled,
    /// Undoes a cancellation: the same notices become payable again.
    Restored,
    /// A pagoPA receipt (paSendRT, outcome OK) for one of the position's notices. Never
    /// refused: money moved.
    PaidViaPagoPa {
        nav: Nav,
        receipt_id: String,
        amount: Cents,
        psp: String,
        paid_at: Timestamp,
        /// The receipt's transfers, as parsed.
        transfers: Vec<PaidTransfer>,
        /// What the station found wrong with it before the ledger looked (accounts).
        flags: Vec<PaymentFlag>,
    },
    /// A reporting-flow row names one transfer of this notice (reconciliation, per transfer).
    /// A later revision of the same flow replaces what the earlier one reported on the transfer.
    Reported {
        nav: Nav,
        /// `indiceDatiSingoloPagamento` / `idTransfer`, 1..=5.
        transfer: u8,
        flow_id: String,
        /// The flow's revision (`dataOraFlusso`, or the FdR revision number).
        revision: String,
        /// `identificativoUnivocoRiscossione`: the receiptId the row reports.
        iur: String,
        /// What the row says was paid (positive, also for a revocation).
        amount: Cents,
        /// `codiceEsitoSingoloPagamento`: 0 executed, 3 revoked, 4 stand-in, 8 stand-in without
        /// receipt, 9 without receipt.
        outcome: u8,
        date: Date,
    },
    /// The treasury credited money that includes this transfer's share.
    Credited {
        nav: Nav,
        transfer: u8,
        /// The flow the credit settled, if it was a flow's cumulative credit.
        flow_id: Option<String>,
        /// The treasury movement's reference.
        reference: String,
        amount: Cents,
        date: Date,
    },
    /// An operator's audited note or correction that changes no amount.
    OperatorAdjustment {
        note: String,
    },
}

impl Change {
    /// A short English name for logs, metrics and the console.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Loaded(_) => "loaded",
            Change::Updated(_) => "updated",
            Change::DebtorUpdated(_) => "debtor-updated",
            Change::Reduced { .. } => "reduced",
            Change::Rescheduled { .. } => "rescheduled",
            Change::PaidOffline { .. } => "paid-offline",
            Change::Cancelled => "cancelled",
            Change::Restored => "restored",
            Change::PaidViaPagoPa { .. } => "paid-via-pagopa",
            Change::Reported { .. } => "reported",
            Change::Credited { .. } => "credited",
            Change::OperatorAdjustment { .. } => "operator-adjustment",
        }
    }
}

/// One transfer of a pagoPA receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidTransfer {
    /// `idTransfer`: the notice's transfer it pays.
    pub id: u8,
    pub amount: Cents,
    /// The beneficiary's fiscal code, as the receipt names it.
    pub beneficiary: String,
    /// The IBAN credited; none for a revenue stamp.
    pub account: Option<String>,
}

/// One entry of a position's ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Timestamp,
    pub actor: Actor,
    /// Why, in the actor's words (required for operator changes).
    pub reason: Option<String>,
    pub change: Change,
}

impl Event {
    pub fn new(at: Timestamp, actor: Actor, change: Change) -> Self {
        Event {
            at,
            actor,
            reason: None,
            change,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Why a change cannot be applied to the position as it stands.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LedgerError {
    #[error("invalid position: {0}")]
    Invalid(#[from] ModelError),
    #[error("the first event of a ledger must be `loaded`, found `{0}`")]
    NotLoaded(&'static str),
    #[error("the position is already loaded")]
    AlreadyLoaded,
    #[error("notice {0} is not part of this position")]
    UnknownNav(Nav),
    #[error("notice {nav} has no transfer {transfer}")]
    UnknownTransfer { nav: Nav, transfer: u8 },
    #[error("notice {0} is already paid")]
    AlreadyPaid(Nav),
    #[error("notice {0} is no longer payable (cancelled or replaced by a plan)")]
    NotPayable(Nav),
    #[error("the position is cancelled")]
    PositionCancelled,
    #[error("the position is not cancelled")]
    NotCancelled,
    #[error("the position has payments: {0}")]
    HasPayments(String),
    #[error("the position is paid in full: nothing is left to cancel")]
    PaidInFull,
    #[error(
        "the position has reductions or a plan: change it with variations, not by replacing it"
    )]
    HasVariations,
    #[error("reduction of {nav}: new amount {new} must be below the current amount {current}")]
    NotAReduction {
        nav: Nav,
        current: Cents,
        new: Cents,
    },
    #[error("reduction of {nav}: {reason}")]
    BadReduction { nav: Nav, reason: String },
    #[error("payment for {0}: amount must be greater than zero")]
    ZeroPayment(Nav),
    #[error("payment for {nav}: {reason}")]
    BadSplit { nav: Nav, reason: String },
    #[error(
        "offline payment {reference:?} ({channel:?}) is already recorded on notice {nav} for \
         {amount}: one reference, one payment"
    )]
    ReferenceReused {
        nav: Nav,
        channel: OfflineChannel,
        reference: String,
        amount: Cents,
    },
    #[error("notice {0} is paid in full: nothing is left to change")]
    NothingOpen(Nav),
    #[error("notice {0} is not payable: the position is being paid through another option")]
    OtherOption(Nav),
    #[error("the rescheduled notices belong to two options that both stay in force: {0}")]
    TwoOptions(String),

    #[error("the plan reuses notice number {0}, which this position already has")]
    NavReused(Nav),
    #[error("a rescheduling must replace at least one instalment")]
    NothingReplaced,
    #[error("the position's iupd cannot change from {old} to {new}")]
    IupdChanged { old: Iupd, new: Iupd },
}
