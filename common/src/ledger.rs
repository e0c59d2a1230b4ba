//! The variation ledger: every change to a position is an immutable event, and the position's
//! current state is the fold of its events. Statuses are derived from that state, bottom-up.
//!
//! `Position::apply` is the single place where the rules of variations live: the store appends an
//! event only after applying it to the current state succeeded, so a stored ledger always folds.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{EntityFiscalCode, Iupd, Nav};
use crate::model::{Debtor, Instalment, ModelError, OptionKind, PaymentOption, PositionData};
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
    PaidOffline {
        nav: Nav,
        channel: OfflineChannel,
        date: Date,
        amount: Cents,
        reference: String,
    },
    Cancelled,
    /// Undoes a cancellation: the same notices become payable again.
    Restored,
    /// A pagoPA receipt (paSendRT) for one of the position's notices.
    PaidViaPagoPa {
        nav: Nav,
        receipt_id: String,
        amount: Cents,
        psp: String,
        paid_at: Timestamp,
    },
    /// A reporting-flow row names this notice.
    Reported {
        nav: Nav,
        flow_id: String,
        amount: Cents,
    },
    /// The treasury credited the money for this notice.
    Credited {
        nav: Nav,
        reference: String,
        amount: Cents,
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
    #[error("offline payment for {nav}: {amount} is more than the {due} still due")]
    Overpaid { nav: Nav, amount: Cents, due: Cents },
    #[error("offline payment for {0}: amount must be greater than zero")]
    ZeroPayment(Nav),
    #[error("the plan reuses notice number {0}, which this position already has")]
    NavReused(Nav),
    #[error("a rescheduling must replace at least one instalment")]
    NothingReplaced,
    #[error("the position's iupd cannot change from {old} to {new}")]
    IupdChanged { old: Iupd, new: Iupd },
}

/// An offline payment applied to an instalment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflinePayment {
    pub channel: OfflineChannel,
    pub date: Date,
    pub amount: Cents,
    pub reference: String,
}

/// A pagoPA receipt applied to an instalment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagoPaPayment {
    pub receipt_id: String,
    pub amount: Cents,
    pub psp: String,
    pub paid_at: Timestamp,
}

/// A payment that arrived for a notice that was no longer due: a refund is owed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoublePayment {
    pub nav: Nav,
    pub receipt_id: String,
    pub amount: Cents,
    /// What the notice was when the payment arrived.
    pub found: InstalmentStatus,
}

/// An instalment with everything that happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalmentState {
    /// Current terms: amounts reflect reductions.
    pub terms: Instalment,
    pub original_amount: Cents,
    pub offline: Vec<OfflinePayment>,
    pub receipt: Option<PagoPaPayment>,
    /// Replaced by a plan (rateizzazione) or reduced to zero.
    pub withdrawn: bool,
    pub reported: bool,
    pub credited: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstalmentStatus {
    Unpaid,
    Paid,
    PaidOffline,
    Cancelled,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionStatus {
    /// Not payable yet (validity date in the future).
    Draft,
    Valid,
    PartiallyPaid,
    Paid,
    Cancelled,
    Expired,
}

/// Reconciliation progress of a paid position (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    None,
    Reported,
    Credited,
}

impl InstalmentState {
    fn new(terms: Instalment) -> Self {
        InstalmentState {
            original_amount: terms.amount,
            terms,
            offline: Vec::new(),
            receipt: None,
            withdrawn: false,
            reported: false,
            credited: false,
        }
    }

    pub fn offline_paid(&self) -> Cents {
        // Bounded by `due()` at apply time, so the sum cannot overflow.
        Cents::sum(self.offline.iter().map(|p| p.amount)).unwrap_or(Cents::MAX_AMOUNT)
    }

    /// What is still owed on this notice.
    pub fn due(&self) -> Cents {
        if self.receipt.is_some() || self.withdrawn {
            return Cents::ZERO;
        }
        self.terms
            .amount
            .checked_sub(self.offline_paid())
            .unwrap_or(Cents::ZERO)
    }

    fn has_payment(&self) -> bool {
        self.receipt.is_some() || !self.offline.is_empty()
    }
}

/// A position as it stands: the fold of its ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub entity: EntityFiscalCode,
    pub iupd: Iupd,
    pub kind: String,
    pub debtor: Debtor,
    pub description: String,
    pub validity: Option<Date>,
    pub expiry: Option<Date>,
    pub options: Vec<OptionState>,
    pub cancelled: bool,
    pub double_payments: Vec<DoublePayment>,
    /// Number of events folded so far: the sequence number of the next event.
    pub events: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionState {
    pub kind: OptionKind,
    pub instalments: Vec<InstalmentState>,
}

impl OptionState {
    /// Whether paying this option settled the position: every instalment is paid (receipt or
    /// offline in full) or reduced to zero, and at least one is paid. An instalment replaced by
    /// a plan (withdrawn, amount not zero) is not settled here: only paying the plan settles
    /// it, and the plan is an option of its own.
    fn is_paid(&self) -> bool {
        let paid = |i: &InstalmentState| {
            i.receipt.is_some() || (!i.offline.is_empty() && i.due() == Cents::ZERO)
        };
        let reduced_to_zero = |i: &InstalmentState| i.withdrawn && i.terms.amount == Cents::ZERO;
        self.instalments.iter().any(paid)
            && self
                .instalments
                .iter()
                .all(|i| paid(i) || reduced_to_zero(i))
    }
}

fn options_from(data: &PositionData) -> Vec<OptionState> {
    data.options
        .iter()
        .map(|o| OptionState {
            kind: o.kind,
            instalments: o
                .instalments
                .iter()
                .cloned()
                .map(InstalmentState::new)
                .collect(),
        })
        .collect()
}

impl Position {
    /// Starts a position from its first event, which must be `Loaded`.
    pub fn load(entity: EntityFiscalCode, event: &Event) -> Result<Position, LedgerError> {
        let Change::Loaded(data) = &event.change else {
            return Err(LedgerError::NotLoaded(event.change.name()));
        };
        data.validate(&entity)?;
        Ok(Position {
            entity,
            iupd: data.iupd.clone(),
            kind: data.kind.clone(),
            debtor: data.debtor.clone(),
            description: data.description.clone(),
            validity: data.validity,
            expiry: data.expiry,
            options: options_from(data),
            cancelled: false,
            double_payments: Vec::new(),
            events: 1,
            created_at: event.at,
            updated_at: event.at,
        })
    }

    /// Folds a whole ledger.
    pub fn fold<'a>(
        entity: EntityFiscalCode,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Position, LedgerError> {
        let mut events = events.into_iter();
        let first = events.next().ok_or(LedgerError::NotLoaded("nothing"))?;
        let mut position = Position::load(entity, first)?;
        for e in events {
            position.apply(e)?;
        }
        Ok(position)
    }

    pub fn instalments(&self) -> impl Iterator<Item = &InstalmentState> {
        self.options.iter().flat_map(|o| o.instalments.iter())
    }

    pub fn instalment(&self, nav: &Nav) -> Option<&InstalmentState> {
        self.instalments().find(|i| &i.terms.nav == nav)
    }

    fn instalment_mut(&mut self, nav: &Nav) -> Result<&mut InstalmentState, LedgerError> {
        self.options
            .iter_mut()
            .flat_map(|o| o.instalments.iter_mut())
            .find(|i| &i.terms.nav == nav)
            .ok_or_else(|| LedgerError::UnknownNav(nav.clone()))
    }

    fn has_payments(&self) -> bool {
        self.instalments().any(InstalmentState::has_payment)
    }

    /// Applies one event, or says why it cannot be applied and leaves the position unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<(), LedgerError> {
        // Work on a copy so that a failure half-way changes nothing.
        let mut next = self.clone();
        next.apply_in_place(&event.change)?;
        next.events += 1;
        next.updated_at = event.at;
        *self = next;
        Ok(())
    }

    fn apply_in_place(&mut self, change: &Change) -> Result<(), LedgerError> {
        match change {
            Change::Loaded(_) => return Err(LedgerError::AlreadyLoaded),
            Change::Updated(data) => {
                if data.iupd != self.iupd {
                    return Err(LedgerError::IupdChanged {
                        old: self.iupd.clone(),
                        new: data.iupd.clone(),
                    });
                }
                if self.has_payments() {
                    return Err(LedgerError::HasPayments(
                        "only an unpaid position can be replaced".into(),
                    ));
                }
                // A replacement starts from the new data alone: it would undo reductions and
                // make notices a plan replaced payable again.
                if self
                    .instalments()
                    .any(|i| i.withdrawn || i.terms.amount != i.original_amount)
                {
                    return Err(LedgerError::HasVariations);
                }
                data.validate(&self.entity)?;
                self.kind = data.kind.clone();
                self.debtor = data.debtor.clone();
                self.description = data.description.clone();
                self.validity = data.validity;
                self.expiry = data.expiry;
                self.options = options_from(data);
            }
            Change::DebtorUpdated(debtor) => {
                crate::model::text("debtor.name", &debtor.name, 70, true)?;
                self.debtor = debtor.clone();
            }
            Change::Reduced {
                nav,
                old_amount,
                new_amount,
                transfer_amounts,
                ..
            } => {
                if self.cancelled {
                    return Err(LedgerError::PositionCancelled);
                }
                let inst = self.instalment_mut(nav)?;
                if inst.has_payment() {
                    return Err(LedgerError::AlreadyPaid(nav.clone()));
                }
                if inst.withdrawn {
                    return Err(LedgerError::NotPayable(nav.clone()));
                }
                if *new_amount >= inst.terms.amount || *old_amount != inst.terms.amount {
                    return Err(LedgerError::NotAReduction {
                        nav: nav.clone(),
                        current: inst.terms.amount,
                        new: *new_amount,
                    });
                }
                if transfer_amounts.len() != inst.terms.transfers.len() {
                    return Err(LedgerError::BadReduction {
                        nav: nav.clone(),
                        reason: format!(
                            "{} transfer amounts given, the notice has {} transfers",
                            transfer_amounts.len(),
                            inst.terms.transfers.len()
                        ),
                    });
                }
                if Cents::sum(transfer_amounts.iter().copied()) != Some(*new_amount) {
                    return Err(LedgerError::BadReduction {
                        nav: nav.clone(),
                        reason: "transfer amounts do not add up to the new amount".into(),
                    });
                }
                for (t, amount) in inst.terms.transfers.iter_mut().zip(transfer_amounts) {
                    if *amount > t.amount {
                        return Err(LedgerError::BadReduction {
                            nav: nav.clone(),
                            reason: format!("transfer {} would grow", t.id),
                        });
                    }
                    // A notice that stays payable keeps valid transfers (the model refuses a
                    // zero transfer); going to zero, every transfer goes to zero. `Cents.0` is
                    // public, so negative amounts are refused here too.
                    if *amount < Cents::ZERO
                        || (*amount == Cents::ZERO && *new_amount != Cents::ZERO)
                    {
                        return Err(LedgerError::BadReduction {
                            nav: nav.clone(),
                            reason: format!(
                                "transfer {} would be {amount}; the transfers of a payable notice \
                                 must stay above zero",
                                t.id
                            ),
                        });
                    }
                    t.amount = *amount;
                }
                inst.terms.amount = *new_amount;
                if *new_amount == Cents::ZERO {
                    inst.withdrawn = true;
                }
            }
            Change::Rescheduled { replaced, plan } => {
                if self.cancelled {
                    return Err(LedgerError::PositionCancelled);
                }
                if replaced.is_empty() {
                    return Err(LedgerError::NothingReplaced);
                }
                plan.validate("plan", &self.entity)?;
                for new in &plan.instalments {
                    if self.instalment(&new.nav).is_some() {
                        return Err(LedgerError::NavReused(new.nav.clone()));
                    }
                }
                for nav in replaced {
                    let inst = self.instalment_mut(nav)?;
                    if inst.has_payment() {
                        return Err(LedgerError::AlreadyPaid(nav.clone()));
                    }
                    if inst.withdrawn {
                        return Err(LedgerError::NotPayable(nav.clone()));
                    }
                    inst.withdrawn = true;
                }
                self.options.push(OptionState {
                    kind: OptionKind::Plan,
                    instalments: plan
                        .instalments
                        .iter()
                        .cloned()
                        .map(InstalmentState::new)
                        .collect(),
                });
            }
            Change::PaidOffline {
                nav,
                channel,
                date,
                amount,
                reference,
            } => {
                if self.cancelled {
                    return Err(LedgerError::PositionCancelled);
                }
                let inst = self.instalment_mut(nav)?;
                if inst.receipt.is_some() {
                    return Err(LedgerError::AlreadyPaid(nav.clone()));
                }
                if inst.withdrawn {
                    return Err(LedgerError::NotPayable(nav.clone()));
                }
                // `<=`: a negative amount (buildable through the public `Cents.0`) would make
                // `offline_paid` overflow to the maximum and mark the notice as paid.
                if *amount <= Cents::ZERO {
                    return Err(LedgerError::ZeroPayment(nav.clone()));
                }
                let due = inst.due();
                if *amount > due {
                    return Err(LedgerError::Overpaid {
                        nav: nav.clone(),
                        amount: *amount,
                        due,
                    });
                }
                inst.offline.push(OfflinePayment {
                    channel: *channel,
                    date: *date,
                    amount: *amount,
                    reference: reference.clone(),
                });
            }
            Change::Cancelled => {
                if self.cancelled {
                    return Err(LedgerError::PositionCancelled);
                }
                if self.has_payments() {
                    return Err(LedgerError::HasPayments(
                        "a position with payments cannot be cancelled".into(),
                    ));
                }
                self.cancelled = true;
            }
            Change::Restored => {
                if !self.cancelled {
                    return Err(LedgerError::NotCancelled);
                }
                self.cancelled = false;
            }
            Change::PaidViaPagoPa {
                nav,
                receipt_id,
                amount,
                psp,
                paid_at,
            } => {
                // A receipt is never refused: money moved. If the notice was not due any more the
                // payment is kept as a double payment, and a refund is owed.
                let cancelled = self.cancelled;
                let inst = self.instalment_mut(nav)?;
                let found = if inst.receipt.is_some() {
                    Some(InstalmentStatus::Paid)
                } else if inst.due() == Cents::ZERO && !inst.offline.is_empty() {
                    Some(InstalmentStatus::PaidOffline)
                } else if cancelled || inst.withdrawn {
                    Some(InstalmentStatus::Cancelled)
                } else {
                    None
                };
                let payment = PagoPaPayment {
                    receipt_id: receipt_id.clone(),
                    amount: *amount,
                    psp: psp.clone(),
                    paid_at: *paid_at,
                };
                match found {
                    None => inst.receipt = Some(payment),
                    Some(found) => self.double_payments.push(DoublePayment {
                        nav: nav.clone(),
                        receipt_id: receipt_id.clone(),
                        amount: *amount,
                        found,
                    }),
                }
            }
            Change::Reported { nav, .. } => self.instalment_mut(nav)?.reported = true,
            Change::Credited { nav, .. } => self.instalment_mut(nav)?.credited = true,
            Change::OperatorAdjustment { .. } => {}
        }
        Ok(())
    }

    /// The instalment's status on `today` (Europe/Rome civil date).
    pub fn instalment_status(&self, inst: &InstalmentState, today: Date) -> InstalmentStatus {
        if inst.receipt.is_some() {
            InstalmentStatus::Paid
        } else if !inst.offline.is_empty() && inst.due() == Cents::ZERO {
            InstalmentStatus::PaidOffline
        } else if self.cancelled || inst.withdrawn {
            InstalmentStatus::Cancelled
        } else if self.expiry.is_some_and(|e| e < today) {
            InstalmentStatus::Expired
        } else {
            InstalmentStatus::Unpaid
        }
    }

    /// The position's status, derived from its instalments' (bottom-up).
    pub fn status(&self, today: Date) -> PositionStatus {
        if self.cancelled {
            return PositionStatus::Cancelled;
        }
        if self.options.iter().any(OptionState::is_paid) {
            return PositionStatus::Paid;
        }
        if self.instalments().any(InstalmentState::has_payment) {
            return PositionStatus::PartiallyPaid;
        }
        if self
            .instalments()
            .all(|i| self.instalment_status(i, today) == InstalmentStatus::Cancelled)
        {
            return PositionStatus::Cancelled;
        }
        if self.expiry.is_some_and(|e| e < today) {
            return PositionStatus::Expired;
        }
        if self.validity.is_some_and(|v| v > today) {
            return PositionStatus::Draft;
        }
        PositionStatus::Valid
    }

    /// How far reconciliation has come for what was paid through pagoPA.
    pub fn progress(&self) -> Progress {
        let mut paid = self
            .instalments()
            .filter(|i| i.receipt.is_some())
            .peekable();
        if paid.peek().is_none() {
            return Progress::None;
        }
        let (mut reported, mut credited) = (true, true);
        for i in paid {
            reported &= i.reported;
            credited &= i.credited;
        }
        match (reported, credited) {
            (_, true) => Progress::Credited,
            (true, false) => Progress::Reported,
            _ => Progress::None,
        }
    }

    /// Total still owed across the instalments that are payable, per option with the smallest
    /// outstanding amount (what the debtor must pay at least to settle).
    pub fn open_amount(&self) -> Cents {
        // Nothing is owed on a cancelled position, nor once one option is fully paid.
        if self.cancelled || self.options.iter().any(OptionState::is_paid) {
            return Cents::ZERO;
        }
        self.options
            .iter()
            .filter_map(|o| Cents::sum(o.instalments.iter().map(InstalmentState::due)))
            .filter(|c| *c > Cents::ZERO)
            .min()
            .unwrap_or(Cents::ZERO)
    }
}
