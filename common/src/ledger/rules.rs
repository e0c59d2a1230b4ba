//! The variation rules: how each event changes a position, or why it cannot.

use std::collections::BTreeSet;

use crate::ids::EntityFiscalCode;
use crate::model::{OptionKind, PositionData, TransferTarget};
use crate::money::Cents;

use super::split;
use super::state::{
    Arrival, InstalmentState, OptionState, PaidVia, Payment, PaymentFlag, Position, ReportLine,
    Withdrawal, WithdrawalKind, total,
};
use super::{Change, Event, LedgerError, PaidTransfer};

fn options_from(data: &PositionData) -> Vec<OptionState> {
    data.options
        .iter()
        .map(|o| OptionState {
            kind: o.kind,
            instalments: o
                .instalments
                .iter()
                .cloned()
                .map(|i| InstalmentState::new(i, data.expiry))
                .collect(),
        })
        .collect()
}

/// Per transfer, the smaller of two amounts.
fn least(a: &[Cents], b: &[Cents]) -> Vec<Cents> {
    a.iter().zip(b).map(|(x, y)| (*x).min(*y)).collect()
}

impl Position {
    /// Starts a position from its first event, which must be `Loaded` with valid data.
    pub fn load(entity: EntityFiscalCode, event: &Event) -> Result<Position, LedgerError> {
        Position::start(entity, event, Admit::Strict)
    }

    /// Starts a position from the first event of a stored ledger, whose data was valid by the
    /// rules of its day (see `replay`).
    pub fn load_stored(entity: EntityFiscalCode, event: &Event) -> Result<Position, LedgerError> {
        Position::start(entity, event, Admit::Stored)
    }

    fn start(
        entity: EntityFiscalCode,
        event: &Event,
        admit: Admit,
    ) -> Result<Position, LedgerError> {
        let Change::Loaded(data) = &event.change else {
            return Err(LedgerError::NotLoaded(event.change.name()));
        };
        if admit == Admit::Strict {
            data.validate(&entity)?;
        }
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
            chosen: None,
            events: 1,
            created_at: event.at,
            updated_at: event.at,
        })
    }

    /// Folds a whole stored ledger (see `replay`).
    pub fn fold<'a>(
        entity: EntityFiscalCode,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Position, LedgerError> {
        let mut events = events.into_iter();
        let first = events.next().ok_or(LedgerError::NotLoaded("nothing"))?;
        let mut position = Position::load_stored(entity, first)?;
        for e in events {
            position.replay(e)?;
        }
        Ok(position)
    }

    fn find(&self, nav: &crate::ids::Nav) -> Result<(usize, usize), LedgerError> {
        self.locate(nav)
            .ok_or_else(|| LedgerError::UnknownNav(nav.clone()))
    }

    /// Applies one new event, or says why it cannot be applied and leaves the position
    /// unchanged. Every rule is checked: this is what the store appends.
    pub fn apply(&mut self, event: &Event) -> Result<(), LedgerError> {
        self.step(event, Admit::Strict)
    }

    /// Applies one event that is already in a stored ledger. A stored event was accepted by the
    /// rules of its day, and rules only ever grow stricter about what they admit: the checks
    /// added since (`Admit::Stored`) are not asked of it again, so every stored ledger folds.
    /// The effect of an event is the same either way.
    pub fn replay(&mut self, event: &Event) -> Result<(), LedgerError> {
        self.step(event, Admit::Stored)
    }

    fn step(&mut self, event: &Event, admit: Admit) -> Result<(), LedgerError> {
        // Work on a copy so that a failure half-way changes nothing.
        let mut next = self.clone();
        next.apply_in_place(&event.change, admit)?;
        next.events += 1;
        next.updated_at = event.at;
        *self = next;
        Ok(())
    }

    fn apply_in_place(&mut self, change: &Change, admit: Admit) -> Result<(), LedgerError> {
        let strict = admit == Admit::Strict;
        match change {
            Change::Loaded(_) => Err(LedgerError::AlreadyLoaded),
            Change::Updated(data) => self.replace(data, strict),
            Change::DebtorUpdated(debtor) => {
                if strict {
                    debtor.validate("debtor")?;
                }
                self.debtor = debtor.clone();
                Ok(())
            }
            Change::Reduced {
                nav,
                old_amount,
                new_amount,
                transfer_amounts,
                ..
            } => self.reduce(nav, *old_amount, *new_amount, transfer_amounts, strict),
            Change::Rescheduled { replaced, plan } => self.reschedule(replaced, plan, strict),
            Change::PaidOffline {
                nav,
                channel,
                date,
                amount,
                reference,
                transfer_amounts,
            } => {
                let reused = self.instalments().find_map(|i| {
                    i.payments.iter().find_map(|p| match &p.via {
                        PaidVia::Offline {
                            channel: c,
                            reference: r,
                            ..
                        } if c == channel && r == reference => Some((i.nav().clone(), p.amount)),
                        _ => None,
                    })
                });
                if let Some((nav, amount)) = reused.filter(|_| strict) {
                    return Err(LedgerError::ReferenceReused {
                        nav,
                        channel: *channel,
                        reference: reference.clone(),
                        amount,
                    });
                }
                let via = PaidVia::Offline {
                    channel: *channel,
                    date: *date,
                    reference: reference.clone(),
                };
                self.pay(
                    nav,
                    via,
                    *amount,
                    Split::Offline(transfer_amounts.as_deref()),
                    &[],
                )
            }
            Change::PaidViaPagoPa {
                nav,
                receipt_id,
                amount,
                psp,
                paid_at,
                transfers,
                flags,
            } => {
                let via = PaidVia::PagoPa {
                    receipt_id: receipt_id.clone(),
                    psp: psp.clone(),
                    paid_at: *paid_at,
                };
                self.pay(nav, via, *amount, Split::Receipt(transfers), flags)
            }
            Change::Cancelled => self.cancel(),
            Change::Restored => {
                if !self.cancelled {
                    return Err(LedgerError::NotCancelled);
                }
                self.cancelled = false;
                for o in &mut self.options {
                    for i in &mut o.instalments {
                        i.kept_at_cancel = None;
                    }
                }
                Ok(())
            }
            Change::Reported {
                nav,
                transfer,
                flow_id,
                revision,
                iur,
                amount,
                outcome,
                date,
            } => {
                let (o, k) = self.find(nav)?;
                let inst = &mut self.options[o].instalments[k];
                transfer_slot(inst, nav, *transfer)?;
                // A later revision of the flow replaces what the earlier said of this transfer.
                inst.reports.retain(|r| {
                    !(r.flow_id == *flow_id && r.transfer == *transfer && r.revision < *revision)
                });
                // A revocation (code 3) takes back what its row names.
                let signed = if *outcome == 3 {
                    -amount.get()
                } else {
                    amount.get()
                };
                inst.reports.push(ReportLine {
                    transfer: *transfer,
                    flow_id: flow_id.clone(),
                    revision: revision.clone(),
                    iur: iur.clone(),
                    amount: signed,
                    date: *date,
                });
                Ok(())
            }
            Change::Credited {
                nav,
                transfer,
                amount,
                ..
            } => {
                let (o, k) = self.find(nav)?;
                let slot = transfer_slot(&self.options[o].instalments[k], nav, *transfer)?;
                let c = &mut self.options[o].instalments[k].credited[slot];
                c.0 = c.0.saturating_add(amount.get());
                Ok(())
            }
            Change::OperatorAdjustment { .. } => Ok(()),
        }
    }

    /// A new body for the position: only while nothing happened to it but its load.
    fn replace(&mut self, data: &PositionData, strict: bool) -> Result<(), LedgerError> {
        if data.iupd != self.iupd {
            return Err(LedgerError::IupdChanged {
                old: self.iupd.clone(),
                new: data.iupd.clone(),
            });
        }
        if self.cancelled && strict {
            return Err(LedgerError::PositionCancelled);
        }
        if self.has_payments() {
            return Err(LedgerError::HasPayments(
                "only an unpaid position can be replaced".into(),
            ));
        }
        // A replacement starts from the new data alone: it would undo reductions and make
        // notices a plan replaced payable again.
        if self
            .instalments()
            .any(|i| i.withdrawn.is_some() || i.terms.amount != i.original_amount)
        {
            return Err(LedgerError::HasVariations);
        }
        if strict {
            data.validate(&self.entity)?;
        }
        self.kind = data.kind.clone();
        self.debtor = data.debtor.clone();
        self.description = data.description.clone();
        self.validity = data.validity;
        self.expiry = data.expiry;
        self.options = options_from(data);
        Ok(())
    }

    /// The notice as a variation finds it: it must be in force and part of the option being
    /// paid, if any.
    fn variable(&self, nav: &crate::ids::Nav, strict: bool) -> Result<(usize, usize), LedgerError> {
        if self.cancelled {
            return Err(LedgerError::PositionCancelled);
        }
        let (o, k) = self.find(nav)?;
        if self.options[o].instalments[k].withdrawn.is_some() {
            return Err(LedgerError::NotPayable(nav.clone()));
        }
        if strict && self.chosen.is_some_and(|c| c != o) {
            return Err(LedgerError::OtherOption(nav.clone()));
        }
        Ok((o, k))
    }

    /// Sgravio. Allowed after payments too: what was paid beyond the new amount is refunded.
    fn reduce(
        &mut self,
        nav: &crate::ids::Nav,
        old_amount: Cents,
        new_amount: Cents,
        transfer_amounts: &[Cents],
        strict: bool,
    ) -> Result<(), LedgerError> {
        let (o, k) = self.variable(nav, strict)?;
        let inst = &mut self.options[o].instalments[k];
        if new_amount >= inst.terms.amount || old_amount != inst.terms.amount {
            return Err(LedgerError::NotAReduction {
                nav: nav.clone(),
                current: inst.terms.amount,
                new: new_amount,
            });
        }
        let bad = |reason: String| LedgerError::BadReduction {
            nav: nav.clone(),
            reason,
        };
        if transfer_amounts.len() != inst.terms.transfers.len() {
            return Err(bad(format!(
                "{} transfer amounts given, the notice has {} transfers",
                transfer_amounts.len(),
                inst.terms.transfers.len()
            )));
        }
        if Cents::sum(transfer_amounts.iter().copied()) != Some(new_amount) {
            return Err(bad(
                "transfer amounts do not add up to the new amount".into()
            ));
        }
        let stamps = inst.stamps();
        for ((t, amount), stamp) in inst
            .terms
            .transfers
            .iter()
            .zip(transfer_amounts)
            .zip(stamps)
        {
            // `Cents.0` is public, so negative amounts are refused here too.
            if *amount < Cents::ZERO || *amount > t.amount {
                return Err(bad(format!(
                    "transfer {} would go from {} to {amount}",
                    t.id, t.amount
                )));
            }
            if strict && stamp && *amount != t.amount && *amount != Cents::ZERO {
                return Err(bad(format!(
                    "transfer {} is a revenue stamp: it stays {} or goes to zero",
                    t.id, t.amount
                )));
            }
        }
        for (t, amount) in inst.terms.transfers.iter_mut().zip(transfer_amounts) {
            t.amount = *amount;
        }
        inst.terms.amount = new_amount;
        if new_amount == Cents::ZERO {
            inst.withdrawn = Some(Withdrawal {
                kind: WithdrawalKind::ReducedToZero,
                kept: vec![Cents::ZERO; inst.terms.transfers.len()],
            });
        }
        Ok(())
    }

    /// Rateizzazione: the named notices are replaced (what was paid on them stays paid) and the
    /// plan joins their option, taking their place beside the notices not named.
    fn reschedule(
        &mut self,
        replaced: &[crate::ids::Nav],
        plan: &crate::model::PaymentOption,
        strict: bool,
    ) -> Result<(), LedgerError> {
        if self.cancelled {
            return Err(LedgerError::PositionCancelled);
        }
        if replaced.is_empty() {
            return Err(LedgerError::NothingReplaced);
        }
        if strict {
            plan.validate("plan", &self.entity)?;
        }
        for new in &plan.instalments {
            if self.instalment(&new.nav).is_some() {
                return Err(LedgerError::NavReused(new.nav.clone()));
            }
        }
        let mut touched = BTreeSet::new();
        let mut kept = Vec::with_capacity(replaced.len());
        for nav in replaced {
            let (o, k) = self.variable(nav, strict)?;
            let inst = &self.options[o].instalments[k];
            let account = self.account_of(o, inst);
            if strict && account.total_open() == Cents::ZERO {
                return Err(LedgerError::NothingOpen(nav.clone()));
            }
            touched.insert(o);
            kept.push((o, k, least(&account.paid, &account.owed)));
        }
        // The options that keep notices in force besides the replaced ones: the plan joins
        // that one. Two of them would leave the plan two debts to settle.
        let staying: Vec<usize> = touched
            .iter()
            .copied()
            .filter(|&o| {
                self.options[o]
                    .instalments
                    .iter()
                    .any(|i| i.withdrawn.is_none() && !replaced.contains(i.nav()))
            })
            .collect();
        let target = match staying.as_slice() {
            [] => touched.first().copied().unwrap_or(0),
            [one] => *one,
            [first, ..] if !strict => *first,
            _ => {
                return Err(LedgerError::TwoOptions(
                    "reschedule the notices of one option at a time".into(),
                ));
            }
        };
        for (o, k, kept) in kept {
            self.options[o].instalments[k].withdrawn = Some(Withdrawal {
                kind: WithdrawalKind::Replaced,
                kept,
            });
        }
        let option = &mut self.options[target];
        option.kind = OptionKind::Plan;
        option.instalments.extend(
            plan.instalments
                .iter()
                .cloned()
                .map(|i| InstalmentState::new(i, None)),
        );
        Ok(())
    }

    /// Cancels what is still open; what was paid stays paid.
    fn cancel(&mut self) -> Result<(), LedgerError> {
        if self.cancelled {
            return Err(LedgerError::PositionCancelled);
        }
        if self.has_payments() && self.open_amount() == Cents::ZERO {
            return Err(LedgerError::PaidInFull);
        }
        let kept: Vec<Vec<Vec<Cents>>> = self
            .options
            .iter()
            .enumerate()
            .map(|(o, opt)| {
                opt.instalments
                    .iter()
                    .map(|i| {
                        let a = self.account_of(o, i);
                        least(&a.paid, &a.owed)
                    })
                    .collect()
            })
            .collect();
        for (opt, kept) in self.options.iter_mut().zip(kept) {
            for (i, kept) in opt.instalments.iter_mut().zip(kept) {
                i.kept_at_cancel = Some(kept);
            }
        }
        self.cancelled = true;
        Ok(())
    }

    /// Records a payment, whatever the notice's state.
    fn pay(
        &mut self,
        nav: &crate::ids::Nav,
        via: PaidVia,
        amount: Cents,
        split: Split<'_>,
        noted: &[PaymentFlag],
    ) -> Result<(), LedgerError> {
        // `<=`: a negative amount (buildable through the public `Cents.0`) would count money
        // that never came.
        if amount <= Cents::ZERO {
            return Err(LedgerError::ZeroPayment(nav.clone()));
        }
        let (o, k) = self.find(nav)?;
        let inst = &self.options[o].instalments[k];
        let arrival = self.arrival(o, inst);
        let open = self.account_of(o, inst).open();
        let open_total = total(&open);
        let terms = inst.amounts();
        let stamps = inst.stamps();
        let n = terms.len();
        // The station flags accounts it does not know; the notice's own account is known too.
        let mut flags: Vec<PaymentFlag> = noted
            .iter()
            .filter(|f| match (f, &split) {
                (PaymentFlag::AccountDiffers { id }, Split::Receipt(paid)) => {
                    let own = inst
                        .terms
                        .transfers
                        .get(usize::from(*id).wrapping_sub(1))
                        .and_then(|t| match &t.target {
                            TransferTarget::Bank(iban) | TransferTarget::Postal(iban) => {
                                Some(iban.to_string())
                            }
                            TransferTarget::RevenueStamp(_) => None,
                        });
                    let named = paid
                        .iter()
                        .find(|t| t.id == *id)
                        .and_then(|t| t.account.clone());
                    own.is_none() || own != named
                }
                _ => true,
            })
            .cloned()
            .collect();
        let transfers = match split {
            Split::Offline(Some(given)) => {
                let bad = |reason: &str| LedgerError::BadSplit {
                    nav: nav.clone(),
                    reason: reason.into(),
                };
                if given.len() != n {
                    return Err(bad("one amount per transfer of the notice"));
                }
                if given.iter().any(|c| *c < Cents::ZERO) {
                    return Err(bad("transfer amounts must not be negative"));
                }
                if Cents::sum(given.iter().copied()) != Some(amount) {
                    return Err(bad("transfer amounts do not add up to the amount"));
                }
                given.to_vec()
            }
            Split::Offline(None) => split::allocate(amount, &open, &terms, &stamps),
            // The debt is settled by the rule, whatever split the PSP used: the receipt's own
            // transfers stay on the event for reconciliation, and any difference is flagged.
            Split::Receipt(paid) => {
                match receipt_split(paid, n, amount) {
                    Some(_) if arrival == Arrival::Due => {
                        for t in paid {
                            let i = usize::from(t.id) - 1;
                            let beneficiary = inst.terms.transfers[i].beneficiary.as_str();
                            if t.amount != open[i] || t.beneficiary != beneficiary {
                                flags.push(PaymentFlag::TransferDiffers { id: t.id });
                            }
                        }
                    }
                    Some(_) => {}
                    None if paid.is_empty() => {}
                    None => flags.push(PaymentFlag::TransfersDoNotAddUp),
                }
                split::allocate(amount, &open, &terms, &stamps)
            }
        };
        let overpaid = amount > open_total;
        let differs = match split {
            Split::Receipt(_) => amount != open_total,
            Split::Offline(_) => overpaid,
        };
        if arrival == Arrival::Due && differs {
            flags.insert(0, PaymentFlag::AmountDiffers { due: open_total });
        }
        if self.chosen.is_none() && inst.withdrawn.is_none() {
            self.chosen = Some(o);
        }
        self.options[o].instalments[k].payments.push(Payment {
            via,
            amount,
            transfers,
            arrival,
            flags,
        });
        Ok(())
    }
}

/// How much an event must pass to be applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// A new event: every rule.
    Strict,
    /// An event of a stored ledger: only what it needs to have an effect.
    Stored,
}

/// Where a payment's split over the transfers comes from.
#[derive(Clone, Copy)]
enum Split<'a> {
    /// Given by the authority, or `None` for the default.
    Offline(Option<&'a [Cents]>),
    /// The receipt's own transfers.
    Receipt(&'a [PaidTransfer]),
}

/// The index of transfer `id` (1-based) of the instalment.
fn transfer_slot(
    inst: &InstalmentState,
    nav: &crate::ids::Nav,
    id: u8,
) -> Result<usize, LedgerError> {
    inst.terms
        .transfers
        .iter()
        .position(|t| t.id == id)
        .ok_or_else(|| LedgerError::UnknownTransfer {
            nav: nav.clone(),
            transfer: id,
        })
}

/// The receipt's split by transfer, if its transfers name distinct transfers of the notice and
/// add up to its amount.
fn receipt_split(paid: &[PaidTransfer], n: usize, amount: Cents) -> Option<Vec<Cents>> {
    if paid.is_empty() {
        return None;
    }
    let mut shares = vec![Cents::ZERO; n];
    let mut seen = vec![false; n];
    for t in paid {
        let i = usize::from(t.id).checked_sub(1).filter(|i| *i < n)?;
        if seen[i] || t.amount < Cents::ZERO {
            return None;
        }
        seen[i] = true;
        shares[i] = t.amount;
    }
    (Cents::sum(shares.iter().copied()) == Some(amount)).then_some(shares)
}
