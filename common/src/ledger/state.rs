//! A position as it stands, the fold of its ledger, and what is derived from it: what each
//! transfer owes, has received and must give back, whether a notice is payable, statuses.
//!
//! The money rules in one paragraph (ARCHITECTURE.md, "Money"): every instalment is accounted
//! per transfer. A transfer **owes** its current amount while its notice is in force; once the
//! notice is replaced by a plan, or the position cancelled, it owes only what it had received by
//! then; a notice of an option other than the one being paid owes nothing. Every payment is kept
//! as a fact, split over the transfers. What a transfer received beyond what it owes is a
//! **refund due** to the payer; what it owes beyond what it received is **open**.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{EntityFiscalCode, Iupd, Nav};
use crate::model::{Debtor, Instalment, OptionKind, TransferTarget};
use crate::money::Cents;

use super::OfflineChannel;

/// How a payment reached the authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaidVia {
    /// A pagoPA receipt (paSendRT).
    PagoPa {
        receipt_id: String,
        psp: String,
        paid_at: Timestamp,
    },
    /// Money collected outside pagoPA (counter, postal slip, F24, …).
    Offline {
        channel: OfflineChannel,
        date: Date,
        reference: String,
    },
}

/// What the notice was when a payment arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrival {
    /// Something was owed on it.
    Due,
    /// Already paid in full: paid twice.
    AlreadyPaid,
    /// The position was cancelled (it counts again if the position is restored).
    Cancelled,
    /// Replaced by a plan or reduced to zero.
    Withdrawn,
    /// The position is being paid through another option.
    OtherOption,
}

/// Something about a payment that does not fit the notice; the payment counts all the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentFlag {
    /// Paid a different amount from what was due.
    AmountDiffers { due: Cents },
    /// The receipt's transfers do not add up to its amount or name transfers the notice does
    /// not have: the amount was split as the notice's transfers are.
    TransfersDoNotAddUp,
    /// A transfer of the receipt differs from what the notice asked (amount or beneficiary).
    TransferDiffers { id: u8 },
    /// A transfer of the receipt names an account that is not the beneficiary's.
    AccountDiffers { id: u8 },
}

/// One payment for a notice, as a fact: it is never refused nor undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub via: PaidVia,
    pub amount: Cents,
    /// The amount's split over the notice's transfers, in order.
    pub transfers: Vec<Cents>,
    pub arrival: Arrival,
    pub flags: Vec<PaymentFlag>,
}

impl Payment {
    pub fn receipt_id(&self) -> Option<&str> {
        match &self.via {
            PaidVia::PagoPa { receipt_id, .. } => Some(receipt_id),
            PaidVia::Offline { .. } => None,
        }
    }

    pub fn via_pagopa(&self) -> bool {
        matches!(self.via, PaidVia::PagoPa { .. })
    }
}

/// Why a notice stopped being in force for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalKind {
    /// A rescheduling replaced it by a plan.
    Replaced,
    /// Reduced to zero.
    ReducedToZero,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub kind: WithdrawalKind,
    /// What each transfer had received by then and keeps owing (so it is not refunded).
    pub kept: Vec<Cents>,
}

/// An instalment with everything that happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalmentState {
    /// Current terms: amounts reflect reductions.
    pub terms: Instalment,
    pub original_amount: Cents,
    /// Not payable after this day: the position's expiry for a loaded notice, none for a plan
    /// granted later (it has its own dates).
    pub expiry: Option<Date>,
    pub payments: Vec<Payment>,
    pub withdrawn: Option<Withdrawal>,
    /// While the position is cancelled: what each transfer had received when it was.
    pub kept_at_cancel: Option<Vec<Cents>>,
    /// What the reporting flows say of this notice's transfers, each flow in its latest
    /// revision.
    pub reports: Vec<ReportLine>,
    /// Per transfer: what the treasury credited.
    pub credited: Vec<Cents>,
}

/// One flow row's word on a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    /// `idTransfer`, 1..=5.
    pub transfer: u8,
    pub flow_id: String,
    pub revision: String,
    pub iur: String,
    /// Cents; a revocation counts negative.
    pub amount: i64,
    /// The row's payment (or revocation) date.
    pub date: Date,
}

impl InstalmentState {
    pub(super) fn new(terms: Instalment, expiry: Option<Date>) -> Self {
        let n = terms.transfers.len();
        InstalmentState {
            original_amount: terms.amount,
            terms,
            expiry,
            payments: Vec::new(),
            withdrawn: None,
            kept_at_cancel: None,
            reports: Vec::new(),
            credited: vec![Cents::ZERO; n],
        }
    }

    pub fn nav(&self) -> &Nav {
        &self.terms.nav
    }

    /// The transfers' current amounts.
    pub fn amounts(&self) -> Vec<Cents> {
        self.terms.transfers.iter().map(|t| t.amount).collect()
    }

    /// Which transfers are revenue stamps (paid whole or not at all, never reduced in part).
    pub fn stamps(&self) -> Vec<bool> {
        self.terms
            .transfers
            .iter()
            .map(|t| matches!(t.target, TransferTarget::RevenueStamp(_)))
            .collect()
    }

    /// What each transfer has received, every payment counted once.
    pub fn paid(&self) -> Vec<Cents> {
        let mut paid = vec![Cents::ZERO; self.terms.transfers.len()];
        for p in &self.payments {
            for (sum, share) in paid.iter_mut().zip(&p.transfers) {
                sum.0 = sum.0.saturating_add(share.0);
            }
        }
        paid
    }

    pub fn has_payment(&self) -> bool {
        !self.payments.is_empty()
    }

    /// Per transfer: what the reporting flows say was paid (revocations subtract).
    pub fn reported(&self) -> Vec<Cents> {
        self.terms
            .transfers
            .iter()
            .map(|t| {
                Cents(
                    self.reports
                        .iter()
                        .filter(|r| r.transfer == t.id)
                        .map(|r| r.amount)
                        .fold(0i64, i64::saturating_add),
                )
            })
            .collect()
    }

    /// The pagoPA payments, in the order they arrived.
    pub fn receipts(&self) -> impl Iterator<Item = &Payment> {
        self.payments.iter().filter(|p| p.via_pagopa())
    }
}

/// One notice's money, per transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub owed: Vec<Cents>,
    pub paid: Vec<Cents>,
}

impl Account {
    /// Still to be paid on each transfer.
    pub fn open(&self) -> Vec<Cents> {
        self.owed
            .iter()
            .zip(&self.paid)
            .map(|(o, p)| Cents((o.0 - p.0).max(0)))
            .collect()
    }

    /// Received beyond what is owed, on each transfer.
    pub fn refund(&self) -> Vec<Cents> {
        self.owed
            .iter()
            .zip(&self.paid)
            .map(|(o, p)| Cents((p.0 - o.0).max(0)))
            .collect()
    }

    pub fn total_owed(&self) -> Cents {
        total(&self.owed)
    }

    pub fn total_paid(&self) -> Cents {
        total(&self.paid)
    }

    pub fn total_open(&self) -> Cents {
        total(&self.open())
    }

    pub fn total_refund(&self) -> Cents {
        total(&self.refund())
    }
}

pub(super) fn total(amounts: &[Cents]) -> Cents {
    Cents(amounts.iter().map(|c| c.0).fold(0i64, i64::saturating_add))
}

/// A notice that can be paid now, and how: what the station asks for, per transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payable {
    pub amount: Cents,
    /// (index of the transfer in the notice, amount), transfers with nothing open left out.
    pub transfers: Vec<(usize, Cents)>,
}

/// Why a notice cannot be paid now. The station, the statements, the API and the admin
/// listings all ask `Position::payable`, so they always agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPayable {
    /// The position's validity date is still to come.
    NotYetValid,
    Paid,
    Cancelled,
    Replaced,
    ReducedToZero,
    /// The position is being paid through another option.
    OtherOption,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstalmentStatus {
    Unpaid,
    Paid,
    PaidOffline,
    Cancelled,
    Expired,
    /// The position is being paid through another option.
    OtherOption,
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

/// Money owed back on one transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub nav: Nav,
    pub transfer: u8,
    pub beneficiary: EntityFiscalCode,
    pub amount: Cents,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionState {
    pub kind: OptionKind,
    /// The option's notices, withdrawn ones included; a plan granted by a rescheduling joins
    /// the option of the notices it replaces.
    pub instalments: Vec<InstalmentState>,
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
    /// The option being paid: the one that received the first payment while in force. A
    /// single payment and a plan are alternatives: the others owe nothing from then on.
    pub chosen: Option<usize>,
    /// Number of events folded so far: the sequence number of the next event.
    pub events: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Position {
    pub fn instalments(&self) -> impl Iterator<Item = &InstalmentState> {
        self.options.iter().flat_map(|o| o.instalments.iter())
    }

    /// Every notice with the index of its option.
    pub fn notices(&self) -> impl Iterator<Item = (usize, &InstalmentState)> {
        self.options
            .iter()
            .enumerate()
            .flat_map(|(o, opt)| opt.instalments.iter().map(move |i| (o, i)))
    }

    pub fn instalment(&self, nav: &Nav) -> Option<&InstalmentState> {
        self.instalments().find(|i| &i.terms.nav == nav)
    }

    /// (option, instalment) indexes of a notice.
    pub fn locate(&self, nav: &Nav) -> Option<(usize, usize)> {
        self.options.iter().enumerate().find_map(|(o, opt)| {
            opt.instalments
                .iter()
                .position(|i| &i.terms.nav == nav)
                .map(|k| (o, k))
        })
    }

    fn option_of(&self, inst: &InstalmentState) -> usize {
        self.locate(&inst.terms.nav).map_or(0, |(o, _)| o)
    }

    /// What each transfer of the instalment owes (see the module's rules).
    pub fn owed(&self, option: usize, inst: &InstalmentState) -> Vec<Cents> {
        if let Some(w) = &inst.withdrawn {
            return w.kept.clone();
        }
        if let Some(kept) = &inst.kept_at_cancel {
            return kept.clone();
        }
        if self.chosen.is_some_and(|c| c != option) {
            return vec![Cents::ZERO; inst.terms.transfers.len()];
        }
        inst.amounts()
    }

    pub fn account_of(&self, option: usize, inst: &InstalmentState) -> Account {
        Account {
            owed: self.owed(option, inst),
            paid: inst.paid(),
        }
    }

    /// The notice's money, per transfer.
    pub fn account(&self, inst: &InstalmentState) -> Account {
        self.account_of(self.option_of(inst), inst)
    }

    /// What is still owed on this notice.
    pub fn due(&self, inst: &InstalmentState) -> Cents {
        self.account(inst).total_open()
    }

    /// What the notice was, were a payment to arrive now.
    pub(super) fn arrival(&self, option: usize, inst: &InstalmentState) -> Arrival {
        if inst.withdrawn.is_some() {
            Arrival::Withdrawn
        } else if self.cancelled {
            Arrival::Cancelled
        } else if self.chosen.is_some_and(|c| c != option) {
            Arrival::OtherOption
        } else if self.account_of(option, inst).total_open() == Cents::ZERO {
            Arrival::AlreadyPaid
        } else {
            Arrival::Due
        }
    }

    /// **The** payable rule: whether notice `nav` can be paid on `today` (Europe/Rome), and what
    /// for. `None` if the position has no such notice.
    pub fn payable(&self, nav: &Nav, today: Date) -> Option<Result<Payable, NotPayable>> {
        let (o, k) = self.locate(nav)?;
        let inst = &self.options[o].instalments[k];
        Some(self.payable_at(o, inst, today))
    }

    fn payable_at(
        &self,
        option: usize,
        inst: &InstalmentState,
        today: Date,
    ) -> Result<Payable, NotPayable> {
        if self.cancelled {
            return Err(NotPayable::Cancelled);
        }
        if let Some(w) = &inst.withdrawn {
            return Err(match w.kind {
                WithdrawalKind::Replaced => NotPayable::Replaced,
                WithdrawalKind::ReducedToZero => NotPayable::ReducedToZero,
            });
        }
        if self.chosen.is_some_and(|c| c != option) {
            return Err(NotPayable::OtherOption);
        }
        let open = self.account_of(option, inst).open();
        let amount = total(&open);
        if amount == Cents::ZERO {
            return Err(NotPayable::Paid);
        }
        if self.validity.is_some_and(|v| v > today) {
            return Err(NotPayable::NotYetValid);
        }
        if inst.expiry.is_some_and(|e| e < today) {
            return Err(NotPayable::Expired);
        }
        Ok(Payable {
            amount,
            transfers: open
                .into_iter()
                .enumerate()
                .filter(|(_, c)| *c > Cents::ZERO)
                .collect(),
        })
    }

    /// The instalment's status on `today` (Europe/Rome civil date), from the payable rule.
    pub fn instalment_status(&self, inst: &InstalmentState, today: Date) -> InstalmentStatus {
        match self.payable_at(self.option_of(inst), inst, today) {
            Ok(_) | Err(NotPayable::NotYetValid) => InstalmentStatus::Unpaid,
            // Named after the first money that came in for it.
            Err(NotPayable::Paid) => match inst.payments.first() {
                Some(p) if !p.via_pagopa() => InstalmentStatus::PaidOffline,
                _ => InstalmentStatus::Paid,
            },
            Err(NotPayable::Cancelled | NotPayable::Replaced | NotPayable::ReducedToZero) => {
                InstalmentStatus::Cancelled
            }
            Err(NotPayable::OtherOption) => InstalmentStatus::OtherOption,
            Err(NotPayable::Expired) => InstalmentStatus::Expired,
        }
    }

    /// Total open on each option's notices.
    fn option_open(&self, o: usize) -> (Cents, Cents) {
        let (mut owed, mut open) = (Cents::ZERO, Cents::ZERO);
        for inst in &self.options[o].instalments {
            let a = self.account_of(o, inst);
            owed.0 = owed.0.saturating_add(a.total_owed().0);
            open.0 = open.0.saturating_add(a.total_open().0);
        }
        (owed, open)
    }

    fn in_force(&self, o: usize) -> bool {
        self.options[o]
            .instalments
            .iter()
            .any(|i| i.withdrawn.is_none())
    }

    /// The position's status, derived from its notices' (bottom-up).
    pub fn status(&self, today: Date) -> PositionStatus {
        if self.cancelled {
            return PositionStatus::Cancelled;
        }
        if let Some(o) = self.chosen {
            let (owed, open) = self.option_open(o);
            return if owed == Cents::ZERO {
                PositionStatus::Cancelled
            } else if open == Cents::ZERO {
                PositionStatus::Paid
            } else {
                PositionStatus::PartiallyPaid
            };
        }
        if !(0..self.options.len()).any(|o| self.in_force(o)) {
            return PositionStatus::Cancelled;
        }
        if self.expiry.is_some_and(|e| e < today)
            && self
                .notices()
                .all(|(_, i)| i.withdrawn.is_some() || i.expiry.is_some_and(|e| e < today))
        {
            return PositionStatus::Expired;
        }
        if self.validity.is_some_and(|v| v > today) {
            return PositionStatus::Draft;
        }
        PositionStatus::Valid
    }

    /// What the debtor must still pay at least to settle: the option being paid, or else the
    /// cheapest option in force.
    pub fn open_amount(&self) -> Cents {
        if self.cancelled {
            return Cents::ZERO;
        }
        if let Some(o) = self.chosen {
            return self.option_open(o).1;
        }
        (0..self.options.len())
            .filter(|o| self.in_force(*o))
            .map(|o| self.option_open(o).1)
            .filter(|c| *c > Cents::ZERO)
            .min()
            .unwrap_or(Cents::ZERO)
    }

    /// Everything received, every payment once.
    pub fn total_paid(&self) -> Cents {
        Cents(
            self.instalments()
                .flat_map(|i| i.payments.iter())
                .map(|p| p.amount.0)
                .fold(0i64, i64::saturating_add),
        )
    }

    /// What must be given back, per transfer.
    pub fn refunds(&self) -> Vec<Refund> {
        let mut out = Vec::new();
        for (o, inst) in self.notices() {
            let refund = self.account_of(o, inst).refund();
            for (t, amount) in inst.terms.transfers.iter().zip(refund) {
                if amount > Cents::ZERO {
                    out.push(Refund {
                        nav: inst.terms.nav.clone(),
                        transfer: t.id,
                        beneficiary: t.beneficiary.clone(),
                        amount,
                    });
                }
            }
        }
        out
    }

    pub fn refunds_due(&self) -> Cents {
        Cents(
            self.refunds()
                .iter()
                .map(|r| r.amount.0)
                .fold(0i64, i64::saturating_add),
        )
    }

    /// Payments that arrived for a notice that was not due: paid twice, after a cancellation,
    /// on a replaced notice or through a second option.
    pub fn double_payments(&self) -> impl Iterator<Item = (&Nav, &Payment)> {
        self.instalments().flat_map(|i| {
            i.payments
                .iter()
                .filter(|p| p.arrival != Arrival::Due)
                .map(move |p| (&i.terms.nav, p))
        })
    }

    pub fn has_payments(&self) -> bool {
        self.instalments().any(InstalmentState::has_payment)
    }

    /// How far reconciliation has come for what was paid through pagoPA: every transfer paid by
    /// a receipt reported (and credited) for at least what the receipts paid on it.
    pub fn progress(&self) -> Progress {
        let mut any = false;
        let (mut reported, mut credited) = (true, true);
        for i in self.instalments() {
            let reported_now = i.reported();
            let mut by_receipts = vec![0i64; i.terms.transfers.len()];
            for p in i.receipts() {
                for (sum, share) in by_receipts.iter_mut().zip(&p.transfers) {
                    *sum += share.get();
                }
            }
            for (t, due) in by_receipts.iter().enumerate() {
                if *due == 0 {
                    continue;
                }
                any = true;
                reported &= reported_now.get(t).is_some_and(|r| r.get() >= *due);
                credited &= i.credited.get(t).is_some_and(|c| c.get() >= *due);
            }
        }
        match (any, reported, credited) {
            (false, _, _) => Progress::None,
            (true, _, true) => Progress::Credited,
            (true, true, false) => Progress::Reported,
            _ => Progress::None,
        }
    }
}
