//! The money rules proven over generated histories: random positions (1–5 transfers, a province
//! share, a revenue stamp) put through random reductions, reschedulings, offline payments,
//! receipts, cancellations, restores and debtor changes. After every step the invariants of
//! ARCHITECTURE.md ("Money") must hold, and at the end the ledger must fold to the same state.
//!
//! `cargo test -p mpay-common --test histories` runs 2,000 histories; set `MPAY_HISTORIES` for more
//! (the README's nightly command runs 200,000).
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::collections::HashMap;

use jiff::civil::date;
use mpay_common::ids::Nav;
use mpay_common::ledger::{
    Change, Event, OfflineChannel, PaidTransfer, Position, PositionStatus, split,
};
use mpay_common::model::{Instalment, OptionKind, PositionData, TransferTarget};
use mpay_common::money::Cents;
use proptest::prelude::*;
use support::{ENTITY, entity, event, instalment, nav, option, position_data, today};

/// A position to start from: `shape` picks single or single + plan, `transfers` the split of
/// each notice (the second share is the province's), `stamp` a revenue stamp on the single.
#[derive(Clone, Debug)]
struct Start {
    plan: usize,
    transfers: Vec<i64>,
    stamp: Option<i64>,
}

fn start() -> impl Strategy<Value = Start> {
    (
        0..4_usize,
        prop::collection::vec(1_00..500_00_i64, 1..5),
        prop::option::of(1_00..20_00_i64),
    )
        .prop_map(|(plan, transfers, stamp)| Start {
            plan,
            transfers,
            stamp,
        })
}

fn data(s: &Start) -> PositionData {
    let mut single = instalment(1, &s.transfers);
    if let Some(amount) = s.stamp {
        let id = u8::try_from(single.transfers.len() + 1).expect("few");
        single.transfers.push(support::stamp(id, amount));
        single.amount = Cents(single.amount.get() + amount);
    }
    let mut options = vec![option(OptionKind::Single, vec![single])];
    if s.plan > 0 {
        // The plan splits the same debt, without the stamp, in `plan + 1` instalments.
        let n = i64::try_from(s.plan + 1).expect("small");
        let plan: Vec<Instalment> = (0..n)
            .map(|k| {
                let parts: Vec<i64> = s
                    .transfers
                    .iter()
                    .map(|t| t / n + i64::from(k == 0) * (t % n))
                    .collect();
                instalment(2 + u64::try_from(k).expect("small"), &parts)
            })
            .collect();
        options.push(option(OptionKind::Plan, plan));
    }
    position_data(options)
}

/// A change described independently of the state; `materialise` makes it against the position
/// as it stands.
#[derive(Clone, Debug)]
enum Op {
    Reduce {
        notice: usize,
        per_mille: u32,
        explicit: bool,
    },
    Reschedule {
        notice: usize,
        both: bool,
        parts: usize,
    },
    /// `per_mille` of what is due (above 1000: more than due); `repeat` reuses the last
    /// reference.
    Offline {
        notice: usize,
        per_mille: u32,
        repeat: bool,
        explicit: bool,
    },
    /// `skew`: the PSP moves that many cents between the first two transfers; `short`: pays
    /// that many cents less than asked.
    Receipt {
        notice: usize,
        skew: i64,
        short: i64,
    },
    Cancel,
    Restore,
    Debtor,
}

fn op() -> impl Strategy<Value = Op> {
    let notice = 0..16_usize;
    prop_oneof![
        3 => (notice.clone(), 0..1000_u32, prop::bool::weighted(0.3))
            .prop_map(|(notice, per_mille, explicit)| Op::Reduce { notice, per_mille, explicit }),
        2 => (notice.clone(), prop::bool::weighted(0.3), 1..4_usize)
            .prop_map(|(notice, both, parts)| Op::Reschedule { notice, both, parts }),
        4 => (notice.clone(), 1..1300_u32, prop::bool::weighted(0.15), prop::bool::weighted(0.2))
            .prop_map(|(notice, per_mille, repeat, explicit)| Op::Offline { notice, per_mille, repeat, explicit }),
        4 => (notice, prop_oneof![4 => Just(0_i64), 1 => -300..300_i64], prop_oneof![4 => Just(0_i64), 1 => -500..500_i64])
            .prop_map(|(notice, skew, short)| Op::Receipt { notice, skew, short }),
        1 => Just(Op::Cancel),
        1 => Just(Op::Restore),
        1 => Just(Op::Debtor),
    ]
}

/// What the test knows independently of the fold.
#[derive(Default)]
struct Oracle {
    /// Every accepted payment's amount.
    paid: i64,
    payments: usize,
    /// Notices whose split was given explicitly or by a PSP, and how many reductions each had.
    tainted: Vec<Nav>,
    reductions: HashMap<Nav, i64>,
    next_seq: u64,
    references: u64,
}

fn pick(p: &Position, notice: usize) -> Nav {
    let all: Vec<&Nav> = p.instalments().map(|i| i.nav()).collect();
    all[notice % all.len()].clone()
}

fn materialise(p: &Position, op: &Op, o: &mut Oracle) -> Option<Change> {
    Some(match op {
        Op::Reduce {
            notice,
            per_mille,
            explicit,
        } => {
            let nav = pick(p, *notice);
            let inst = p.instalment(&nav)?;
            let current = inst.terms.amount;
            let new = Cents(current.get() * i64::from(*per_mille) / 1000);
            let cut = Cents(current.get() - new.get());
            let transfer_amounts = if new == Cents::ZERO {
                vec![Cents::ZERO; inst.terms.transfers.len()]
            } else if *explicit {
                // All of the cut from the first transfer that can take it.
                let mut a = inst.amounts();
                let stamps = inst.stamps();
                let i = (0..a.len()).find(|&i| !stamps[i] && a[i] >= cut)?;
                a[i] = Cents(a[i].get() - cut.get());
                o.tainted.push(nav.clone());
                a
            } else {
                split::reduction(&inst.amounts(), &inst.stamps(), cut)?
            };
            *o.reductions.entry(nav.clone()).or_default() += 1;
            Change::Reduced {
                nav,
                old_amount: current,
                new_amount: new,
                transfer_amounts,
                act: "act".into(),
            }
        }
        Op::Reschedule {
            notice,
            both,
            parts,
        } => {
            let first = pick(p, *notice);
            let mut replaced = vec![first.clone()];
            if *both {
                let second = pick(p, notice + 1);
                if second != first {
                    replaced.push(second);
                }
            }
            let open: i64 = replaced
                .iter()
                .filter_map(|n| p.instalment(n))
                .map(|i| p.due(i).get())
                .sum();
            let n = i64::try_from(*parts).expect("small");
            let amounts: Vec<Cents> = (0..n)
                .map(|k| Cents(open.max(n) / n + i64::from(k == 0) * (open.max(n) % n)))
                .collect();
            let shares = split::plan(p, &replaced, &amounts).ok()?;
            let instalments = amounts
                .iter()
                .zip(shares)
                .map(|(a, transfers)| {
                    o.next_seq += 1;
                    let nav = nav(o.next_seq);
                    Instalment {
                        iuv: nav.iuv(),
                        nav,
                        amount: *a,
                        due: date(2026, 1, 31),
                        description: "rata".into(),
                        transfers: transfers
                            .into_iter()
                            .filter(|t| t.amount > Cents::ZERO)
                            .collect(),
                        metadata: Vec::new(),
                    }
                })
                .collect();
            Change::Rescheduled {
                replaced,
                plan: option(OptionKind::Plan, instalments),
            }
        }
        Op::Offline {
            notice,
            per_mille,
            repeat,
            explicit,
        } => {
            let nav = pick(p, *notice);
            let inst = p.instalment(&nav)?;
            let base = p.due(inst).get().max(inst.terms.amount.get());
            let amount = (base * i64::from(*per_mille) / 1000).max(1);
            if !repeat {
                o.references += 1;
            }
            let transfer_amounts = explicit.then(|| {
                o.tainted.push(nav.clone());
                let mut a = vec![Cents::ZERO; inst.terms.transfers.len()];
                a[0] = Cents(amount);
                a
            });
            Change::PaidOffline {
                nav,
                channel: OfflineChannel::Counter,
                date: date(2025, 6, 1),
                amount: Cents(amount),
                reference: format!("BOLL-{}", o.references),
                transfer_amounts,
            }
        }
        Op::Receipt {
            notice,
            skew,
            short,
        } => {
            let nav = pick(p, *notice);
            let inst = p.instalment(&nav)?;
            // What the station would ask for, or the terms if it would not.
            let asked: Vec<(u8, i64)> = match p.payable(&nav, today())? {
                Ok(d) => d
                    .transfers
                    .iter()
                    .map(|(i, c)| (inst.terms.transfers[*i].id, c.get()))
                    .collect(),
                Err(_) => inst
                    .terms
                    .transfers
                    .iter()
                    .map(|t| (t.id, t.amount.get()))
                    .collect(),
            };
            let mut parts = asked.clone();
            if *skew != 0 && parts.len() >= 2 && parts[0].1 > skew.abs() && parts[1].1 > skew.abs()
            {
                parts[0].1 += skew;
                parts[1].1 -= skew;
                o.tainted.push(nav.clone());
            }
            if *short != 0 && parts[0].1 > short.abs() + 1 {
                parts[0].1 -= short;
                o.tainted.push(nav.clone());
            }
            o.next_seq += 1;
            let beneficiary = |id: u8| {
                inst.terms
                    .transfers
                    .iter()
                    .find(|t| t.id == id)
                    .map_or(ENTITY.to_owned(), |t| t.beneficiary.to_string())
            };
            Change::PaidViaPagoPa {
                nav: nav.clone(),
                receipt_id: format!("R-{}", o.next_seq),
                amount: Cents(parts.iter().map(|p| p.1).sum()),
                psp: "PSP".into(),
                paid_at: support::at(0),
                transfers: parts
                    .iter()
                    .map(|&(id, amount)| PaidTransfer {
                        id,
                        amount: Cents(amount),
                        beneficiary: beneficiary(id),
                        account: None,
                    })
                    .collect(),
                flags: Vec::new(),
            }
        }
        Op::Cancel => Change::Cancelled,
        Op::Restore => Change::Restored,
        Op::Debtor => {
            let mut d = support::debtor();
            d.name = format!("Debitore {}", o.next_seq);
            Change::DebtorUpdated(d)
        }
    })
}

fn check(p: &Position, start: &Start, o: &Oracle) -> Result<(), TestCaseError> {
    let today = today();
    let mut counted = 0_i64;
    let mut payments = 0_usize;
    for (opt, i) in p.notices() {
        let nav = i.nav();
        // 1. The transfers add up to the due; none below zero; stamps whole or gone.
        prop_assert_eq!(
            Cents::sum(i.terms.transfers.iter().map(|t| t.amount)),
            Some(i.terms.amount),
            "Σ transfers of {}",
            nav
        );
        for t in &i.terms.transfers {
            prop_assert!(
                t.amount >= Cents::ZERO,
                "{} transfer {} below zero",
                nav,
                t.id
            );
            if matches!(t.target, TransferTarget::RevenueStamp(_)) {
                let whole = start.stamp.map(Cents);
                prop_assert!(
                    t.amount == Cents::ZERO || Some(t.amount) == whole,
                    "stamp of {} is {}",
                    nav,
                    t.amount
                );
            }
        }
        // 2. Every payment split exactly, every cent counted once.
        for pay in &i.payments {
            prop_assert_eq!(Cents::sum(pay.transfers.iter().copied()), Some(pay.amount));
            prop_assert!(pay.transfers.iter().all(|c| *c >= Cents::ZERO));
            counted += pay.amount.get();
            payments += 1;
        }
        let a = p.account_of(opt, i);
        prop_assert_eq!(
            a.total_paid().get(),
            i.payments.iter().map(|p| p.amount.get()).sum::<i64>()
        );
        for ((owed, paid), (open, refund)) in a
            .owed
            .iter()
            .zip(&a.paid)
            .zip(a.open().iter().zip(a.refund()))
        {
            // What is owed is either still open or paid, and anything beyond is refunded.
            prop_assert_eq!(owed.get() - open.get(), paid.get() - refund.get());
            prop_assert!(open.get() == 0 || refund.get() == 0);
        }
        // 3. Default splits: each beneficiary within a cent per reduction of its share.
        let stamps = i.stamps();
        if !o.tainted.contains(nav) && !stamps.iter().any(|s| *s) && i.withdrawn.is_none() {
            let original: i64 = i.original_amount.get();
            let shares: Vec<i64> = loaded_shares(start, nav);
            if shares.len() == i.terms.transfers.len() && !shares.is_empty() {
                let total: i64 = shares.iter().sum();
                let k = o.reductions.get(nav).copied().unwrap_or(0) + 1;
                for (t, share) in i.terms.transfers.iter().zip(&shares) {
                    let exact = i128::from(*share) * i128::from(i.terms.amount.get());
                    let got = i128::from(t.amount.get()) * i128::from(total);
                    prop_assert!(
                        (exact - got).abs() <= i128::from(k) * i128::from(total),
                        "{} transfer {}: {} of {} (original {})",
                        nav,
                        t.id,
                        t.amount,
                        i.terms.amount,
                        original
                    );
                }
            }
        }
        // 4. The payable rule: the station's answer, the QR and the listing agree with the
        //    status, and ask for exactly what is open.
        let payable = p.payable(nav, today).expect("own notice");
        let status = p.instalment_status(i, today);
        prop_assert_eq!(
            payable.is_ok(),
            status == mpay_common::ledger::InstalmentStatus::Unpaid,
            "{} payable {:?} but {:?}",
            nav,
            payable,
            status
        );
        if let Ok(d) = &payable {
            prop_assert!(d.amount > Cents::ZERO);
            prop_assert_eq!(d.amount, a.total_open());
            prop_assert!(d.transfers.iter().all(|(_, c)| *c > Cents::ZERO));
            prop_assert_eq!(
                Cents::sum(d.transfers.iter().map(|(_, c)| *c)),
                Some(d.amount)
            );
            prop_assert!(!p.cancelled && i.withdrawn.is_none());
        }
    }
    prop_assert_eq!(counted, o.paid, "money counted by the fold");
    prop_assert_eq!(payments, o.payments, "payments recorded");
    prop_assert_eq!(p.total_paid().get(), o.paid);
    let refunds = p.refunds_due().get();
    prop_assert!((0..=o.paid).contains(&refunds));
    let status = p.status(today);
    if status == PositionStatus::Paid {
        prop_assert_eq!(p.open_amount(), Cents::ZERO);
        prop_assert!(p.has_payments());
    }
    if p.cancelled {
        prop_assert_eq!(p.open_amount(), Cents::ZERO);
        prop_assert!(
            p.notices()
                .all(|(_, i)| p.payable(i.nav(), today).is_some_and(|r| r.is_err()))
        );
    }
    Ok(())
}

/// The transfer shares a notice started from: the loaded split for loaded notices, none for
/// plans (their split is checked through the ones they replace).
fn loaded_shares(start: &Start, nav: &Nav) -> Vec<i64> {
    data(start)
        .instalments()
        .find(|i| &i.nav == nav)
        .map(|i| i.transfers.iter().map(|t| t.amount.get()).collect())
        .unwrap_or_default()
}

fn histories() -> u32 {
    std::env::var("MPAY_HISTORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: histories(), ..ProptestConfig::default() })]

    #[test]
    fn generated_histories_never_lose_or_double_count_a_cent(
        start in start(),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        let first = support::loaded(data(&start));
        let mut p = Position::load(entity(), &first).expect("the start loads");
        let mut accepted: Vec<Event> = vec![first];
        let mut o = Oracle { next_seq: 100, ..Oracle::default() };
        for (n, op) in ops.iter().enumerate() {
            let Some(change) = materialise(&p, op, &mut o) else { continue };
            let amount = match &change {
                Change::PaidOffline { amount, .. } | Change::PaidViaPagoPa { amount, .. } => Some(*amount),
                _ => None,
            };
            let e = event(i64::try_from(n + 1).expect("small"), change);
            let before = p.clone();
            match p.apply(&e) {
                Ok(()) => {
                    if let Some(a) = amount {
                        o.paid += a.get();
                        o.payments += 1;
                    }
                    accepted.push(e);
                }
                Err(_) => prop_assert_eq!(&p, &before, "a refused change left a trace"),
            }
            check(&p, &start, &o)?;
        }
        // 5. Folding the ledger from scratch gives the incremental state.
        let folded = Position::fold(entity(), &accepted)
            .map_err(|e| TestCaseError::fail(format!("the accepted ledger does not fold: {e}")))?;
        prop_assert_eq!(&folded, &p);
    }
}
