//! Rules of the variation ledger (`mpay_common::ledger`): which changes apply, what they do to
//! the position, and the statuses derived from the result.
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use jiff::civil::date;
use mpay_common::ledger::{
    Actor, Change, DoublePayment, Event, InstalmentState, InstalmentStatus, LedgerError,
    OfflineChannel, Position, PositionStatus, Progress,
};
use mpay_common::model::{OptionKind, PositionData};
use mpay_common::money::Cents;
use proptest::prelude::*;
use support::{
    OTHER, apply, at, entity, event, fiscal, instalment, load, loaded, nav, offline, option,
    receipt, reduced, rescheduled, single, single_and_plan, today,
};

/// Applies `change` as event `n`, which must be refused; returns why and checks that the
/// position did not change at all.
#[track_caller]
fn refuse(position: &mut Position, n: i64, change: Change) -> LedgerError {
    let before = position.clone();
    let name = change.name();
    let e = position
        .apply(&event(n, change))
        .expect_err(&format!("{name} should be refused"));
    assert_eq!(*position, before, "a refused {name} changed the position");
    e
}

fn inst(position: &Position, seq: u64) -> &InstalmentState {
    position
        .instalment(&nav(seq))
        .unwrap_or_else(|| panic!("no instalment {seq}"))
}

fn status_of(position: &Position, seq: u64) -> InstalmentStatus {
    position.instalment_status(inst(position, seq), today())
}

fn amounts(i: &InstalmentState) -> Vec<i64> {
    i.terms.transfers.iter().map(|t| t.amount.get()).collect()
}

// ---------------------------------------------------------------------------------------------
// Loading and the ledger itself

#[test]
fn first_event_must_be_loaded() {
    let e = Position::load(entity(), &event(0, Change::Cancelled)).expect_err("not a load");
    assert_eq!(e, LedgerError::NotLoaded("cancelled"));
    let e = Position::load(entity(), &event(0, offline(1, 1_00))).expect_err("not a load");
    assert_eq!(e, LedgerError::NotLoaded("paid-offline"));

    let e = Position::fold(entity(), &[]).expect_err("empty ledger");
    assert_eq!(e, LedgerError::NotLoaded("nothing"));
    let e = Position::fold(entity(), &[event(0, Change::Restored), loaded(single())])
        .expect_err("load comes second");
    assert_eq!(e, LedgerError::NotLoaded("restored"));
}

#[test]
fn load_builds_the_initial_state() {
    let p = load(single_and_plan());
    assert_eq!(p.entity, entity());
    assert_eq!(p.iupd.as_str(), "TARI-2025-0001");
    assert_eq!(p.events, 1);
    assert_eq!(p.created_at, at(0));
    assert_eq!(p.updated_at, at(0));
    assert!(!p.cancelled);
    assert!(p.double_payments.is_empty());
    assert_eq!(p.options.len(), 2);
    assert_eq!(p.options[0].kind, OptionKind::Single);
    assert_eq!(p.options[1].kind, OptionKind::Plan);
    for (seq, amount) in [(1, 300_00), (2, 150_00), (3, 150_00)] {
        let i = inst(&p, seq);
        assert_eq!(i.terms.amount, Cents(amount));
        assert_eq!(i.original_amount, Cents(amount));
        assert_eq!(i.due(), Cents(amount));
        assert_eq!(i.offline_paid(), Cents::ZERO);
        assert!(i.receipt.is_none() && i.offline.is_empty() && !i.withdrawn);
        assert_eq!(status_of(&p, seq), InstalmentStatus::Unpaid);
    }
    assert!(p.instalment(&nav(4)).is_none());
    assert_eq!(p.status(today()), PositionStatus::Valid);
    assert_eq!(p.progress(), Progress::None);
    // The cheapest way to settle: both plan instalments.
    assert_eq!(p.open_amount(), Cents(300_00));
}

#[test]
fn load_validates_the_data_for_the_entity() {
    let mut data = single();
    data.options[0].instalments[0].amount = Cents(99_99);
    let e = Position::load(entity(), &loaded(data)).expect_err("invalid data");
    let LedgerError::Invalid(m) = e else {
        panic!("expected Invalid, got {e}");
    };
    assert_eq!(m.field, "options[0].instalments[0].transfers");

    // Valid data, but the first transfer is not to the loading entity.
    let e = Position::load(fiscal(OTHER), &loaded(single())).expect_err("wrong entity");
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field.ends_with("transfers[0].beneficiary")),
        "{e}"
    );
}

#[test]
fn second_loaded_is_refused() {
    let mut p = load(single());
    let e = refuse(&mut p, 1, Change::Loaded(single()));
    assert_eq!(e, LedgerError::AlreadyLoaded);
    let e = Position::fold(entity(), &[loaded(single()), loaded(single())]).expect_err("two loads");
    assert_eq!(e, LedgerError::AlreadyLoaded);
}

#[test]
fn failed_apply_leaves_the_position_unchanged() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, offline(2, 10_00));
    let before = p.clone();

    // Rescheduling withdraws NAV 3 in its working copy before it finds NAV 2 paid.
    let e = refuse(
        &mut p,
        2,
        rescheduled(&[3, 2], vec![instalment(10, &[1_00])]),
    );
    assert_eq!(e, LedgerError::AlreadyPaid(nav(2)));
    assert!(!inst(&p, 3).withdrawn);
    assert!(p.instalment(&nav(10)).is_none());

    // The reduction sets transfer 1 before it finds that transfer 2 would grow.
    let e = refuse(&mut p, 3, reduced(3, 150_00, 140_00, &[89_99, 50_01]));
    assert!(matches!(e, LedgerError::BadReduction { .. }), "{e}");
    let e = refuse(&mut p, 3, reduced(1, 300_00, 290_00, &[100_00, 190_00]));
    assert!(matches!(e, LedgerError::BadReduction { .. }), "{e}");
    assert_eq!(amounts(inst(&p, 1)), [200_00, 100_00]);

    refuse(&mut p, 4, offline(2, 140_01));
    refuse(&mut p, 5, Change::Restored);
    refuse(&mut p, 6, Change::Cancelled);
    refuse(&mut p, 7, receipt(99, "R-unknown", 1_00));
    refuse(&mut p, 8, Change::Loaded(single_and_plan()));

    assert_eq!(p, before);
    assert_eq!(p.events, 2);
    assert_eq!(p.updated_at, at(1));
}

#[test]
fn events_counter_and_updated_at_advance() {
    let mut p = load(single_and_plan());
    assert_eq!((p.events, p.updated_at), (1, at(0)));
    apply(&mut p, 5, offline(2, 1_00));
    assert_eq!((p.events, p.updated_at), (2, at(5)));
    apply(
        &mut p,
        9,
        Change::OperatorAdjustment {
            note: "called the debtor".to_owned(),
        },
    );
    assert_eq!((p.events, p.updated_at), (3, at(9)));
    // Even a change that moves no money is an event; created_at stays the load's.
    apply(
        &mut p,
        12,
        Change::Reported {
            nav: nav(2),
            flow_id: "2025-06-12BCITITMM-0001".to_owned(),
            amount: Cents(1_00),
        },
    );
    assert_eq!((p.events, p.updated_at, p.created_at), (4, at(12), at(0)));
    // A refused event counts for nothing.
    refuse(&mut p, 13, Change::Restored);
    assert_eq!((p.events, p.updated_at), (4, at(12)));
}

// ---------------------------------------------------------------------------------------------
// Updated, DebtorUpdated

#[test]
fn updated_replaces_an_unpaid_position() {
    let mut p = load(single());
    let mut data = single_and_plan();
    data.description = "Tassa rifiuti 2025, ricalcolata".to_owned();
    data.expiry = Some(date(2025, 12, 31));
    apply(&mut p, 1, Change::Updated(data.clone()));
    assert_eq!(p.description, data.description);
    assert_eq!(p.expiry, data.expiry);
    assert_eq!(p.instalments().count(), 3);
    assert_eq!(inst(&p, 1).terms.amount, Cents(300_00));
    assert_eq!(inst(&p, 1).original_amount, Cents(300_00));
}

#[test]
fn updated_is_refused_with_payments_another_iupd_or_invalid_data() {
    let mut p = load(single_and_plan());
    let mut other = single_and_plan();
    other.iupd = "TARI-2025-0002".parse().expect("valid IUPD");
    let e = refuse(&mut p, 1, Change::Updated(other));
    assert!(matches!(e, LedgerError::IupdChanged { .. }), "{e}");

    let mut invalid = single_and_plan();
    invalid.description = String::new();
    let e = refuse(&mut p, 1, Change::Updated(invalid));
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field == "description"),
        "{e}"
    );

    apply(&mut p, 1, offline(3, 1_00));
    let e = refuse(&mut p, 2, Change::Updated(single_and_plan()));
    assert!(matches!(e, LedgerError::HasPayments(_)), "{e}");
}

#[test]
fn updated_is_refused_after_a_reduction_or_a_plan() {
    // Replacing would undo the reduction, or make the notice a plan replaced payable again.
    let mut p = load(single());
    apply(&mut p, 1, reduced(1, 100_00, 80_00, &[60_00, 20_00]));
    let e = refuse(&mut p, 2, Change::Updated(single()));
    assert_eq!(e, LedgerError::HasVariations);
    assert_eq!(inst(&p, 1).terms.amount, Cents(80_00));

    let mut p = load(single_and_plan());
    apply(&mut p, 1, rescheduled(&[1], new_plan()));
    let e = refuse(&mut p, 2, Change::Updated(single_and_plan()));
    assert_eq!(e, LedgerError::HasVariations);
    assert!(inst(&p, 1).withdrawn);
}

#[test]
fn a_cancelled_position_is_neither_reduced_nor_rescheduled() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, Change::Cancelled);
    let e = refuse(&mut p, 2, reduced(1, 300_00, 200_00, &[200_00]));
    assert_eq!(e, LedgerError::PositionCancelled);
    let e = refuse(&mut p, 2, rescheduled(&[1], new_plan()));
    assert_eq!(e, LedgerError::PositionCancelled);
}

#[test]
fn debtor_update_needs_a_name() {
    let mut p = load(single());
    let mut debtor = support::debtor();
    debtor.name = "Maria Bianchi".to_owned();
    apply(&mut p, 1, Change::DebtorUpdated(debtor.clone()));
    assert_eq!(p.debtor, debtor);
    debtor.name = " ".to_owned();
    let e = refuse(&mut p, 2, Change::DebtorUpdated(debtor));
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field == "debtor.name"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reduced (sgravio)

#[test]
fn reduction_lowers_the_amount_and_the_transfers() {
    let mut p = load(single());
    apply(&mut p, 1, reduced(1, 100_00, 80_00, &[60_00, 20_00]));
    let i = inst(&p, 1);
    assert_eq!(i.terms.amount, Cents(80_00));
    assert_eq!(i.original_amount, Cents(100_00));
    assert_eq!(amounts(i), [60_00, 20_00]);
    assert_eq!(i.due(), Cents(80_00));
    assert!(!i.withdrawn);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Unpaid);
    assert_eq!(p.open_amount(), Cents(80_00));

    // The reduced amount is what settles the notice.
    refuse(&mut p, 2, offline(1, 80_01));
    apply(&mut p, 2, offline(1, 80_00));
    assert_eq!(status_of(&p, 1), InstalmentStatus::PaidOffline);
    assert_eq!(p.status(today()), PositionStatus::Paid);
}

#[test]
fn reduction_new_amount_must_be_below_the_current_one() {
    let mut p = load(single());
    let e = refuse(&mut p, 1, reduced(1, 100_00, 100_00, &[70_00, 30_00]));
    assert_eq!(
        e,
        LedgerError::NotAReduction {
            nav: nav(1),
            current: Cents(100_00),
            new: Cents(100_00),
        }
    );
    let e = refuse(&mut p, 1, reduced(1, 100_00, 120_00, &[90_00, 30_00]));
    assert!(
        matches!(
            e,
            LedgerError::NotAReduction {
                new: Cents(120_00),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn reduction_old_amount_must_match_the_current_one() {
    let mut p = load(single());
    let e = refuse(&mut p, 1, reduced(1, 90_00, 80_00, &[60_00, 20_00]));
    assert!(
        matches!(
            e,
            LedgerError::NotAReduction {
                current: Cents(100_00),
                ..
            }
        ),
        "{e}"
    );
    apply(&mut p, 1, reduced(1, 100_00, 80_00, &[60_00, 20_00]));
    // A second reduction starts from the reduced amount, not from the original one.
    let e = refuse(&mut p, 2, reduced(1, 100_00, 50_00, &[30_00, 20_00]));
    assert!(
        matches!(
            e,
            LedgerError::NotAReduction {
                current: Cents(80_00),
                ..
            }
        ),
        "{e}"
    );
    apply(&mut p, 2, reduced(1, 80_00, 50_00, &[30_00, 20_00]));
    assert_eq!(inst(&p, 1).terms.amount, Cents(50_00));
    assert_eq!(inst(&p, 1).original_amount, Cents(100_00));
}

#[test]
fn reduction_transfer_amounts_must_add_up() {
    let mut p = load(single());
    let e = refuse(&mut p, 1, reduced(1, 100_00, 80_00, &[60_00, 10_00]));
    assert!(
        matches!(&e, LedgerError::BadReduction { nav: n, reason } if *n == nav(1) && reason.contains("do not add up")),
        "{e}"
    );
    let e = refuse(&mut p, 1, reduced(1, 100_00, 80_00, &[80_00]));
    assert!(
        matches!(&e, LedgerError::BadReduction { reason, .. } if reason.contains("1 transfer amounts given, the notice has 2")),
        "{e}"
    );
    let e = refuse(&mut p, 1, reduced(1, 100_00, 80_00, &[50_00, 20_00, 10_00]));
    assert!(matches!(e, LedgerError::BadReduction { .. }), "{e}");
}

#[test]
fn reduction_transfers_must_not_grow() {
    let mut p = load(single());
    // Adds up to the new amount, but transfer 1 goes from 70.00 to 75.00.
    let e = refuse(&mut p, 1, reduced(1, 100_00, 80_00, &[75_00, 5_00]));
    assert!(
        matches!(&e, LedgerError::BadReduction { reason, .. } if reason.contains("transfer 1 would grow")),
        "{e}"
    );
    // Keeping one transfer as it is and lowering the other is fine.
    apply(&mut p, 1, reduced(1, 100_00, 90_00, &[70_00, 20_00]));
    assert_eq!(amounts(inst(&p, 1)), [70_00, 20_00]);
}

#[test]
fn reduction_keeps_the_transfers_of_a_payable_notice_above_zero() {
    let mut p = load(single());
    // The notice stays payable, so it must stay a valid notice: no zero transfer.
    let e = refuse(&mut p, 1, reduced(1, 100_00, 70_00, &[70_00, 0]));
    assert!(
        matches!(&e, LedgerError::BadReduction { reason, .. } if reason.contains("transfer 2 would be 0.00")),
        "{e}"
    );
    // Negative amounts (possible through the public `Cents.0`) add up but are refused.
    let e = refuse(&mut p, 1, reduced(1, 100_00, 60_00, &[70_00, -10_00]));
    assert!(matches!(e, LedgerError::BadReduction { .. }), "{e}");
    let e = refuse(&mut p, 1, reduced(1, 100_00, 0, &[10_00, -10_00]));
    assert!(matches!(e, LedgerError::BadReduction { .. }), "{e}");
    let e = refuse(&mut p, 1, reduced(1, 100_00, -1, &[0, -1]));
    assert!(
        matches!(
            e,
            LedgerError::BadReduction { .. } | LedgerError::NotAReduction { .. }
        ),
        "{e}"
    );
    // What is left is still valid for the model.
    apply(&mut p, 1, reduced(1, 100_00, 2, &[1, 1]));
    inst(&p, 1)
        .terms
        .validate("reduced", &entity())
        .expect("a reduced notice is a valid notice");
}

#[test]
fn reduction_to_zero_withdraws_the_instalment() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, reduced(3, 150_00, 0, &[0, 0]));
    let i = inst(&p, 3);
    assert!(i.withdrawn);
    assert_eq!(i.terms.amount, Cents::ZERO);
    assert_eq!(i.original_amount, Cents(150_00));
    assert_eq!(i.due(), Cents::ZERO);
    assert_eq!(status_of(&p, 3), InstalmentStatus::Cancelled);
    // The other notices are untouched.
    assert_eq!(status_of(&p, 2), InstalmentStatus::Unpaid);
    assert_eq!(p.status(today()), PositionStatus::Valid);

    // A withdrawn notice takes no offline payment and no further reduction.
    assert_eq!(
        refuse(&mut p, 2, offline(3, 1_00)),
        LedgerError::NotPayable(nav(3))
    );
    assert_eq!(
        refuse(&mut p, 2, reduced(3, 0, 0, &[0, 0])),
        LedgerError::NotPayable(nav(3))
    );
}

#[test]
fn reducing_the_only_notice_to_zero_cancels_the_position() {
    let mut p = load(single());
    apply(&mut p, 1, reduced(1, 100_00, 0, &[0, 0]));
    assert_eq!(status_of(&p, 1), InstalmentStatus::Cancelled);
    assert_eq!(p.status(today()), PositionStatus::Cancelled);
    assert_eq!(p.open_amount(), Cents::ZERO);
}

#[test]
fn paid_instalment_cannot_be_reduced() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    assert_eq!(
        refuse(&mut p, 2, reduced(2, 150_00, 100_00, &[70_00, 30_00])),
        LedgerError::AlreadyPaid(nav(2))
    );
    // A partial offline payment is a payment too.
    apply(&mut p, 2, offline(3, 10_00));
    assert_eq!(
        refuse(&mut p, 3, reduced(3, 150_00, 100_00, &[70_00, 30_00])),
        LedgerError::AlreadyPaid(nav(3))
    );
}

#[test]
fn reduction_of_an_unknown_notice_is_refused() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, reduced(7, 100_00, 80_00, &[60_00, 20_00])),
        LedgerError::UnknownNav(nav(7))
    );
}

// ---------------------------------------------------------------------------------------------
// Rescheduled (rateizzazione)

fn new_plan() -> Vec<mpay_common::model::Instalment> {
    vec![
        instalment(10, &[50_00, 50_00]),
        instalment(11, &[100_00, 100_00]),
    ]
}

#[test]
fn rescheduling_withdraws_the_replaced_notices_and_adds_the_plan() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, rescheduled(&[1], new_plan()));
    let old = inst(&p, 1);
    assert!(old.withdrawn);
    // The old terms are kept for the record; nothing is due on them.
    assert_eq!(old.terms.amount, Cents(300_00));
    assert_eq!(old.due(), Cents::ZERO);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Cancelled);

    assert_eq!(p.options.len(), 3);
    let plan = &p.options[2];
    assert_eq!(plan.kind, OptionKind::Plan);
    let navs: Vec<_> = plan
        .instalments
        .iter()
        .map(|i| i.terms.nav.clone())
        .collect();
    assert_eq!(navs, [nav(10), nav(11)]);
    for (seq, amount) in [(10, 100_00), (11, 200_00)] {
        assert_eq!(status_of(&p, seq), InstalmentStatus::Unpaid);
        assert_eq!(inst(&p, seq).due(), Cents(amount));
        assert_eq!(inst(&p, seq).original_amount, Cents(amount));
    }
    // The other option is untouched.
    assert_eq!(status_of(&p, 2), InstalmentStatus::Unpaid);
    assert_eq!(p.status(today()), PositionStatus::Valid);

    // The new notices are payable; the replaced one is not.
    apply(&mut p, 2, offline(10, 100_00));
    assert_eq!(status_of(&p, 10), InstalmentStatus::PaidOffline);
    apply(&mut p, 3, receipt(11, "R-11", 200_00));
    assert_eq!(status_of(&p, 11), InstalmentStatus::Paid);
    assert!(p.double_payments.is_empty());
    assert_eq!(
        refuse(&mut p, 4, offline(1, 1_00)),
        LedgerError::NotPayable(nav(1))
    );
}

#[test]
fn rescheduled_plan_is_a_plan_even_if_sent_as_single() {
    let mut p = load(single());
    apply(
        &mut p,
        1,
        Change::Rescheduled {
            replaced: vec![nav(1)],
            plan: option(OptionKind::Single, vec![instalment(10, &[50_00])]),
        },
    );
    assert_eq!(p.options[1].kind, OptionKind::Plan);
}

#[test]
fn position_is_paid_after_all_plan_instalments_are_paid() {
    let mut p = load(single());
    apply(&mut p, 1, rescheduled(&[1], new_plan()));
    assert_eq!(p.status(today()), PositionStatus::Valid);
    assert_eq!(p.open_amount(), Cents(300_00));
    apply(&mut p, 2, receipt(10, "R-10", 100_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    assert_eq!(p.open_amount(), Cents(200_00));
    apply(&mut p, 3, offline(11, 150_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    apply(&mut p, 4, offline(11, 50_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert_eq!(p.open_amount(), Cents::ZERO);
}

#[test]
fn rescheduling_the_rest_of_a_partly_paid_plan_does_not_settle_it() {
    // NAV 2 is paid, NAV 3 is replaced by a new plan: the debtor still owes the new plan.
    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    apply(
        &mut p,
        2,
        rescheduled(
            &[3],
            vec![
                instalment(10, &[50_00, 25_00]),
                instalment(11, &[50_00, 25_00]),
            ],
        ),
    );
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    assert_eq!(p.open_amount(), Cents(150_00));
    apply(&mut p, 3, receipt(10, "R-10", 75_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    apply(&mut p, 4, receipt(11, "R-11", 75_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
}

#[test]
fn rescheduling_cannot_replace_a_paid_instalment() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    apply(&mut p, 2, offline(3, 1_00));
    assert_eq!(
        refuse(&mut p, 3, rescheduled(&[2], new_plan())),
        LedgerError::AlreadyPaid(nav(2))
    );
    assert_eq!(
        refuse(&mut p, 3, rescheduled(&[3], new_plan())),
        LedgerError::AlreadyPaid(nav(3))
    );
}

#[test]
fn rescheduling_cannot_reuse_a_notice_number() {
    let mut p = load(single_and_plan());
    assert_eq!(
        refuse(
            &mut p,
            1,
            rescheduled(&[2, 3], vec![instalment(1, &[10_00])])
        ),
        LedgerError::NavReused(nav(1))
    );
    // Nor the number of a notice it replaces, nor of one replaced earlier.
    assert_eq!(
        refuse(
            &mut p,
            1,
            rescheduled(&[2, 3], vec![instalment(3, &[10_00])])
        ),
        LedgerError::NavReused(nav(3))
    );
    apply(&mut p, 1, rescheduled(&[2, 3], new_plan()));
    assert_eq!(
        refuse(&mut p, 2, rescheduled(&[10], vec![instalment(2, &[10_00])])),
        LedgerError::NavReused(nav(2))
    );
}

#[test]
fn rescheduling_plan_must_not_repeat_a_notice_number() {
    let mut p = load(single());
    let e = refuse(
        &mut p,
        1,
        rescheduled(
            &[1],
            vec![instalment(10, &[50_00]), instalment(10, &[50_00])],
        ),
    );
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field == "plan.instalments" && m.reason.contains("appears twice")),
        "{e}"
    );
}

#[test]
fn rescheduling_must_replace_something_with_something_valid() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, rescheduled(&[], new_plan())),
        LedgerError::NothingReplaced
    );
    let e = refuse(&mut p, 1, rescheduled(&[1], Vec::new()));
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field == "plan.instalments"),
        "{e}"
    );
    let mut bad = new_plan();
    bad[1].amount = Cents(1);
    let e = refuse(&mut p, 1, rescheduled(&[1], bad));
    assert!(
        matches!(&e, LedgerError::Invalid(m) if m.field == "plan.instalments[1].transfers"),
        "{e}"
    );
    assert_eq!(
        refuse(&mut p, 1, rescheduled(&[5], new_plan())),
        LedgerError::UnknownNav(nav(5))
    );
    // A notice already replaced cannot be replaced again.
    apply(&mut p, 1, rescheduled(&[1], new_plan()));
    assert_eq!(
        refuse(&mut p, 2, rescheduled(&[1], vec![instalment(20, &[1_00])])),
        LedgerError::NotPayable(nav(1))
    );
}

// ---------------------------------------------------------------------------------------------
// PaidOffline

#[test]
fn partial_then_full_offline_payment() {
    let mut p = load(single());
    apply(&mut p, 1, offline(1, 40_00));
    let i = inst(&p, 1);
    assert_eq!(i.offline_paid(), Cents(40_00));
    assert_eq!(i.due(), Cents(60_00));
    assert_eq!(status_of(&p, 1), InstalmentStatus::Unpaid);
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    assert_eq!(p.open_amount(), Cents(60_00));

    apply(&mut p, 2, offline(1, 60_00));
    let i = inst(&p, 1);
    assert_eq!(i.offline.len(), 2);
    assert_eq!(i.offline[1].channel, OfflineChannel::Counter);
    assert_eq!(i.offline_paid(), Cents(100_00));
    assert_eq!(i.due(), Cents::ZERO);
    assert_eq!(status_of(&p, 1), InstalmentStatus::PaidOffline);
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert_eq!(p.open_amount(), Cents::ZERO);
    // Offline money is not part of pagoPA reconciliation.
    assert_eq!(p.progress(), Progress::None);
}

#[test]
fn offline_overpayment_is_refused_with_the_due_amount() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, offline(1, 100_01)),
        LedgerError::Overpaid {
            nav: nav(1),
            amount: Cents(100_01),
            due: Cents(100_00),
        }
    );
    apply(&mut p, 1, offline(1, 40_00));
    assert_eq!(
        refuse(&mut p, 2, offline(1, 60_01)),
        LedgerError::Overpaid {
            nav: nav(1),
            amount: Cents(60_01),
            due: Cents(60_00),
        }
    );
    apply(&mut p, 2, offline(1, 60_00));
    assert_eq!(
        refuse(&mut p, 3, offline(1, 1)),
        LedgerError::Overpaid {
            nav: nav(1),
            amount: Cents(1),
            due: Cents::ZERO,
        }
    );
}

#[test]
fn zero_offline_payment_is_refused() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, offline(1, 0)),
        LedgerError::ZeroPayment(nav(1))
    );
}

#[test]
fn negative_offline_payment_is_refused() {
    // `Cents.0` is public: a negative payment must not sneak in and make the notice look paid.
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, offline(1, -1)),
        LedgerError::ZeroPayment(nav(1))
    );
    assert_eq!(status_of(&p, 1), InstalmentStatus::Unpaid);
}

#[test]
fn offline_payment_on_a_cancelled_position_is_refused() {
    let mut p = load(single());
    apply(&mut p, 1, Change::Cancelled);
    assert_eq!(
        refuse(&mut p, 2, offline(1, 10_00)),
        LedgerError::PositionCancelled
    );
}

#[test]
fn offline_payment_after_a_pagopa_receipt_is_refused() {
    let mut p = load(single());
    apply(&mut p, 1, receipt(1, "R-1", 100_00));
    assert_eq!(
        refuse(&mut p, 2, offline(1, 10_00)),
        LedgerError::AlreadyPaid(nav(1))
    );
}

#[test]
fn offline_payment_for_an_unknown_notice_is_refused() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, offline(2, 10_00)),
        LedgerError::UnknownNav(nav(2))
    );
}

// ---------------------------------------------------------------------------------------------
// Cancelled / Restored

#[test]
fn cancel_with_payments_is_refused() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, offline(2, 1_00));
    assert!(matches!(
        refuse(&mut p, 2, Change::Cancelled),
        LedgerError::HasPayments(_)
    ));

    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(3, "R-3", 150_00));
    assert!(matches!(
        refuse(&mut p, 2, Change::Cancelled),
        LedgerError::HasPayments(_)
    ));
}

#[test]
fn cancel_twice_is_refused() {
    let mut p = load(single());
    apply(&mut p, 1, Change::Cancelled);
    assert_eq!(
        refuse(&mut p, 2, Change::Cancelled),
        LedgerError::PositionCancelled
    );
}

#[test]
fn restore_when_not_cancelled_is_refused() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, Change::Restored),
        LedgerError::NotCancelled
    );
    apply(&mut p, 1, Change::Cancelled);
    apply(&mut p, 2, Change::Restored);
    assert_eq!(
        refuse(&mut p, 3, Change::Restored),
        LedgerError::NotCancelled
    );
}

#[test]
fn cancel_then_restore_makes_the_same_notice_payable_again() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, Change::Cancelled);
    assert!(p.cancelled);
    assert_eq!(p.status(today()), PositionStatus::Cancelled);
    for seq in 1..=3 {
        assert_eq!(status_of(&p, seq), InstalmentStatus::Cancelled);
    }
    assert_eq!(p.open_amount(), Cents::ZERO);

    apply(&mut p, 2, Change::Restored);
    assert!(!p.cancelled);
    assert_eq!(p.status(today()), PositionStatus::Valid);
    for seq in 1..=3 {
        assert_eq!(status_of(&p, seq), InstalmentStatus::Unpaid);
        assert!(!inst(&p, seq).withdrawn);
    }
    assert_eq!(inst(&p, 1).terms.nav, nav(1));
    assert_eq!(inst(&p, 1).due(), Cents(300_00));
    apply(&mut p, 3, receipt(1, "R-1", 300_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert!(p.double_payments.is_empty());
}

#[test]
fn restore_keeps_notices_withdrawn_before_the_cancellation() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, rescheduled(&[2, 3], new_plan()));
    apply(&mut p, 2, Change::Cancelled);
    apply(&mut p, 3, Change::Restored);
    assert_eq!(status_of(&p, 2), InstalmentStatus::Cancelled);
    assert_eq!(status_of(&p, 10), InstalmentStatus::Unpaid);
}

// ---------------------------------------------------------------------------------------------
// PaidViaPagoPa

#[test]
fn receipt_pays_the_notice() {
    let mut p = load(single());
    apply(&mut p, 1, receipt(1, "R-1", 100_00));
    let i = inst(&p, 1);
    let r = i.receipt.as_ref().expect("receipt kept");
    assert_eq!(r.receipt_id, "R-1");
    assert_eq!(r.amount, Cents(100_00));
    assert_eq!(r.psp, "BCITITMM");
    assert_eq!(r.paid_at, at(1000));
    assert_eq!(i.due(), Cents::ZERO);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Paid);
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert!(p.double_payments.is_empty());
}

#[test]
fn second_receipt_for_the_same_notice_is_a_double_payment() {
    let mut p = load(single());
    apply(&mut p, 1, receipt(1, "R-1", 100_00));
    apply(&mut p, 2, receipt(1, "R-2", 100_00));
    assert_eq!(
        p.double_payments,
        [DoublePayment {
            nav: nav(1),
            receipt_id: "R-2".to_owned(),
            amount: Cents(100_00),
            found: InstalmentStatus::Paid,
        }]
    );
    let kept = inst(&p, 1).receipt.as_ref().expect("first receipt kept");
    assert_eq!(kept.receipt_id, "R-1");
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert_eq!(p.events, 3);
}

#[test]
fn receipt_on_a_cancelled_position_is_a_double_payment() {
    let mut p = load(single());
    apply(&mut p, 1, Change::Cancelled);
    apply(&mut p, 2, receipt(1, "R-1", 100_00));
    assert_eq!(
        p.double_payments,
        [DoublePayment {
            nav: nav(1),
            receipt_id: "R-1".to_owned(),
            amount: Cents(100_00),
            found: InstalmentStatus::Cancelled,
        }]
    );
    assert!(inst(&p, 1).receipt.is_none());
    assert_eq!(p.status(today()), PositionStatus::Cancelled);
}

#[test]
fn receipt_on_a_withdrawn_notice_is_a_double_payment() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, rescheduled(&[1], new_plan()));
    apply(&mut p, 2, reduced(2, 150_00, 0, &[0, 0]));
    apply(&mut p, 3, receipt(1, "R-1", 300_00));
    apply(&mut p, 4, receipt(2, "R-2", 150_00));
    let found: Vec<_> = p
        .double_payments
        .iter()
        .map(|d| (d.nav.clone(), d.found))
        .collect();
    assert_eq!(
        found,
        [
            (nav(1), InstalmentStatus::Cancelled),
            (nav(2), InstalmentStatus::Cancelled)
        ]
    );
    assert!(inst(&p, 1).receipt.is_none() && inst(&p, 2).receipt.is_none());
}

#[test]
fn receipt_after_full_offline_payment_is_a_double_payment() {
    let mut p = load(single());
    apply(&mut p, 1, offline(1, 100_00));
    apply(&mut p, 2, receipt(1, "R-1", 100_00));
    assert_eq!(p.double_payments.len(), 1);
    assert_eq!(p.double_payments[0].found, InstalmentStatus::PaidOffline);
    assert_eq!(p.double_payments[0].receipt_id, "R-1");
    assert!(inst(&p, 1).receipt.is_none());
    assert_eq!(status_of(&p, 1), InstalmentStatus::PaidOffline);
}

#[test]
fn receipt_for_an_unknown_notice_is_refused() {
    let mut p = load(single());
    assert_eq!(
        refuse(&mut p, 1, receipt(2, "R-2", 100_00)),
        LedgerError::UnknownNav(nav(2))
    );
    assert!(p.double_payments.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Derived statuses

#[test]
fn position_with_a_future_validity_is_draft() {
    let mut data = single();
    data.validity = Some(date(2025, 7, 1));
    let p = load(data);
    assert_eq!(p.status(today()), PositionStatus::Draft);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Unpaid);
    assert_eq!(p.status(date(2025, 6, 30)), PositionStatus::Draft);
    // Payable from the validity day on.
    assert_eq!(p.status(date(2025, 7, 1)), PositionStatus::Valid);
}

#[test]
fn unpaid_position_past_its_expiry_is_expired() {
    let mut data = single_and_plan();
    data.expiry = Some(date(2025, 6, 14));
    let mut p = load(data);
    assert_eq!(p.status(today()), PositionStatus::Expired);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Expired);
    // Still payable on the expiry day itself.
    assert_eq!(p.status(date(2025, 6, 14)), PositionStatus::Valid);
    assert_eq!(
        p.instalment_status(inst(&p, 1), date(2025, 6, 14)),
        InstalmentStatus::Unpaid
    );
    // Payments win over expiry.
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    assert_eq!(status_of(&p, 2), InstalmentStatus::Paid);
    assert_eq!(status_of(&p, 3), InstalmentStatus::Expired);
    apply(&mut p, 2, receipt(3, "R-3", 150_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
}

#[test]
fn position_in_its_validity_window_is_valid() {
    let mut data = single();
    data.validity = Some(date(2025, 1, 1));
    data.expiry = Some(date(2025, 12, 31));
    let p = load(data);
    assert_eq!(p.status(today()), PositionStatus::Valid);
    assert_eq!(status_of(&p, 1), InstalmentStatus::Unpaid);
}

#[test]
fn paying_the_single_option_pays_the_position() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(1, "R-1", 300_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
    // The plan's notices are not paid, but nothing is owed any more.
    assert_eq!(status_of(&p, 2), InstalmentStatus::Unpaid);
    assert_eq!(p.open_amount(), Cents::ZERO);
}

#[test]
fn paying_the_single_option_offline_pays_the_position() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, offline(1, 100_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    apply(&mut p, 2, offline(1, 200_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
}

#[test]
fn paying_one_plan_instalment_partially_pays_the_position() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    assert_eq!(p.status(today()), PositionStatus::PartiallyPaid);
    assert_eq!(p.open_amount(), Cents(150_00));
    apply(&mut p, 2, offline(3, 150_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
}

#[test]
fn an_instalment_reduced_to_zero_counts_as_settled() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, reduced(3, 150_00, 0, &[0, 0]));
    apply(&mut p, 2, receipt(2, "R-2", 150_00));
    assert_eq!(p.status(today()), PositionStatus::Paid);
    assert_eq!(p.open_amount(), Cents::ZERO);
}

#[test]
fn all_notices_withdrawn_means_cancelled() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, reduced(1, 300_00, 0, &[0, 0]));
    apply(&mut p, 2, reduced(2, 150_00, 0, &[0, 0]));
    assert_eq!(p.status(today()), PositionStatus::Valid);
    apply(&mut p, 3, reduced(3, 150_00, 0, &[0, 0]));
    assert!(!p.cancelled);
    assert_eq!(p.status(today()), PositionStatus::Cancelled);
}

fn reported(seq: u64) -> Change {
    Change::Reported {
        nav: nav(seq),
        flow_id: format!("FLOW-{seq}"),
        amount: Cents(1),
    }
}

fn credited(seq: u64) -> Change {
    Change::Credited {
        nav: nav(seq),
        reference: format!("TRN-{seq}"),
        amount: Cents(1),
    }
}

#[test]
fn progress_follows_the_least_advanced_receipt() {
    let mut p = load(single_and_plan());
    assert_eq!(p.progress(), Progress::None);
    apply(&mut p, 1, receipt(2, "R-2", 150_00));
    apply(&mut p, 2, receipt(3, "R-3", 150_00));
    assert_eq!(p.progress(), Progress::None);
    apply(&mut p, 3, reported(2));
    assert!(inst(&p, 2).reported);
    assert_eq!(p.progress(), Progress::None, "one receipt is not reported");
    apply(&mut p, 4, reported(3));
    assert_eq!(p.progress(), Progress::Reported);
    apply(&mut p, 5, credited(3));
    assert_eq!(
        p.progress(),
        Progress::Reported,
        "one receipt is not credited"
    );
    apply(&mut p, 6, credited(2));
    assert!(inst(&p, 2).credited);
    assert_eq!(p.progress(), Progress::Credited);
}

#[test]
fn progress_ignores_offline_payments_and_unknown_notices_are_refused() {
    let mut p = load(single_and_plan());
    apply(&mut p, 1, offline(2, 150_00));
    apply(&mut p, 2, receipt(3, "R-3", 150_00));
    apply(&mut p, 3, credited(3));
    // Only NAV 3 came through pagoPA, and it is credited.
    assert_eq!(p.progress(), Progress::Credited);
    assert_eq!(
        refuse(&mut p, 4, reported(9)),
        LedgerError::UnknownNav(nav(9))
    );
    assert_eq!(
        refuse(&mut p, 4, credited(9)),
        LedgerError::UnknownNav(nav(9))
    );
}

// ---------------------------------------------------------------------------------------------
// Fold and serde

/// A ledger that uses every kind of change.
fn full_ledger() -> Vec<Event> {
    let mut debtor = support::debtor();
    debtor.email = Some("mario.rossi@example.invalid".to_owned());
    let mut updated = single_and_plan();
    updated.description = "Tassa rifiuti 2025 (rettifica)".to_owned();
    [
        Change::Loaded(single_and_plan()),
        Change::Updated(updated),
        Change::DebtorUpdated(debtor),
        Change::Cancelled,
        Change::Restored,
        reduced(1, 300_00, 250_00, &[180_00, 70_00]),
        rescheduled(&[1], new_plan()),
        offline(2, 50_00),
        receipt(3, "R-3", 150_00),
        receipt(1, "R-1", 250_00),
        reported(3),
        credited(3),
        Change::OperatorAdjustment {
            note: "checked".to_owned(),
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(n, c)| event(i64::try_from(n).expect("small"), c))
    .map(|e| {
        if e.change.name() == "cancelled" {
            e.with_reason("sent by mistake")
        } else {
            e
        }
    })
    .collect()
}

#[test]
fn fold_equals_applying_one_by_one() {
    let events = full_ledger();
    let mut p = Position::load(entity(), &events[0]).expect("loads");
    for e in &events[1..] {
        p.apply(e)
            .unwrap_or_else(|err| panic!("{} refused: {err}", e.change.name()));
    }
    let folded = Position::fold(entity(), &events).expect("folds");
    assert_eq!(folded, p);
    assert_eq!(folded.events, 13);
    assert_eq!(folded.updated_at, at(12));
    assert_eq!(folded.double_payments.len(), 1);
    assert_eq!(folded.status(today()), PositionStatus::PartiallyPaid);

    // A ledger that stops folding part-way is refused as a whole.
    let mut broken = events.clone();
    broken.push(event(20, offline(1, 1_00)));
    assert_eq!(
        Position::fold(entity(), &broken).expect_err("withdrawn notice"),
        LedgerError::NotPayable(nav(1))
    );
}

#[test]
fn position_json_round_trip() {
    let p = Position::fold(entity(), &full_ledger()).expect("folds");
    let json = serde_json::to_string(&p).expect("serialize");
    let back: Position = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, p);
    assert_eq!(back.status(today()), p.status(today()));
}

#[test]
fn event_json_round_trip() {
    let mut events = full_ledger();
    events.push(Event::new(at(99), Actor::System, Change::Cancelled));
    events.push(Event::new(at(99), Actor::Node, reported(1)));
    for e in &events {
        let json = serde_json::to_string(e).expect("serialize");
        let back: Event = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(&back, e, "{json}");
    }
    assert_eq!(events[3].reason.as_deref(), Some("sent by mistake"));
    assert_eq!(Actor::ApiKey("tari".to_owned()).to_string(), "api-key:tari");
    assert_eq!(
        Actor::Operator("anna".to_owned()).to_string(),
        "operator:anna"
    );
    assert_eq!(Actor::Node.to_string(), "node");
    assert_eq!(Actor::System.to_string(), "system");
}

// ---------------------------------------------------------------------------------------------
// Random sequences of changes

/// A change described independently of the state; `materialise` turns it into a `Change`
/// against the position as it stands, so that many of them are accepted.
#[derive(Clone, Debug)]
enum Op {
    /// Pay `per_mille`‰ of what is due (0 and >1000 make refused payments).
    Offline {
        notice: usize,
        per_mille: u32,
    },
    /// Reduce to `per_mille`‰ of the current amount, split in proportion (or raw when `raw`).
    Reduce {
        notice: usize,
        per_mille: u32,
        raw: Option<Vec<u8>>,
        stale: bool,
    },
    Cancel,
    Restore,
    Receipt {
        notice: usize,
        exact: bool,
    },
    Reschedule {
        notice: usize,
        parts: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let notice = 0..64_usize;
    let raw = prop::option::weighted(0.2, prop::collection::vec(0..200_u8, 0..4));
    prop_oneof![
        4 => (notice.clone(), 0..1100_u32)
            .prop_map(|(notice, per_mille)| Op::Offline { notice, per_mille }),
        3 => (notice.clone(), 0..1001_u32, raw, prop::bool::weighted(0.1))
            .prop_map(|(notice, per_mille, raw, stale)| Op::Reduce { notice, per_mille, raw, stale }),
        1 => Just(Op::Cancel),
        1 => Just(Op::Restore),
        3 => (notice.clone(), any::<bool>()).prop_map(|(notice, exact)| Op::Receipt { notice, exact }),
        1 => (notice, 1..4_usize).prop_map(|(notice, parts)| Op::Reschedule { notice, parts }),
    ]
}

/// One of the position's notices, or (one time in eight) one it does not have.
fn pick(p: &Position, notice: usize) -> (mpay_common::ids::Nav, Option<&InstalmentState>) {
    let all: Vec<&InstalmentState> = p.instalments().collect();
    let found = if notice % 8 == 7 {
        None
    } else {
        all.get(notice % all.len().max(1))
    };
    match found {
        Some(i) => (i.terms.nav.clone(), Some(i)),
        None => (nav(999), None),
    }
}

/// Splits `new` over transfers in proportion to `old`, never above each old amount.
fn proportional(old: &[Cents], new: Cents) -> Vec<Cents> {
    let total: i64 = old.iter().map(|c| c.get()).sum();
    let mut out: Vec<i64> = old
        .iter()
        .map(|c| {
            if total == 0 {
                0
            } else {
                c.get() * new.get() / total
            }
        })
        .collect();
    let mut rest = new.get() - out.iter().sum::<i64>();
    for (o, c) in out.iter_mut().zip(old) {
        let room = (c.get() - *o).min(rest);
        *o += room;
        rest -= room;
    }
    out.into_iter().map(Cents).collect()
}

fn materialise(p: &Position, op: &Op, next_seq: &mut u64) -> Change {
    match op {
        Op::Offline { notice, per_mille } => {
            let (nav, inst) = pick(p, *notice);
            let due = inst.map_or(100_00, |i| i.due().get());
            Change::PaidOffline {
                nav,
                channel: OfflineChannel::Pos,
                date: date(2025, 6, 1),
                amount: Cents(due * i64::from(*per_mille) / 1000),
                reference: "POS".to_owned(),
            }
        }
        Op::Reduce {
            notice,
            per_mille,
            raw,
            stale,
        } => {
            let (nav, inst) = pick(p, *notice);
            let current = inst.map_or(Cents(100_00), |i| i.terms.amount);
            let new = Cents(current.get() * i64::from(*per_mille) / 1000);
            let old: Vec<Cents> = inst.map_or_else(Vec::new, |i| {
                i.terms.transfers.iter().map(|t| t.amount).collect()
            });
            let transfer_amounts = match raw {
                None => proportional(&old, new),
                Some(raw) => raw.iter().map(|&b| Cents(i64::from(b) * 1_00)).collect(),
            };
            Change::Reduced {
                nav,
                old_amount: if *stale {
                    inst.map_or(current, |i| i.original_amount)
                } else {
                    current
                },
                new_amount: new,
                transfer_amounts,
                act: "act".to_owned(),
            }
        }
        Op::Cancel => Change::Cancelled,
        Op::Restore => Change::Restored,
        Op::Receipt { notice, exact } => {
            let (nav, inst) = pick(p, *notice);
            let amount = match inst {
                Some(i) if *exact => i.terms.amount,
                _ => Cents(1_00),
            };
            Change::PaidViaPagoPa {
                nav,
                receipt_id: format!("R-{next_seq}"),
                amount,
                psp: "PSP".to_owned(),
                paid_at: at(0),
            }
        }
        Op::Reschedule { notice, parts } => {
            let (nav, _) = pick(p, *notice);
            let plan = (0..*parts)
                .map(|k| {
                    *next_seq += 1;
                    instalment(*next_seq, &[10_00 + i64::try_from(k).expect("small"), 5_00])
                })
                .collect();
            Change::Rescheduled {
                replaced: vec![nav],
                plan: option(OptionKind::Plan, plan),
            }
        }
    }
}

fn check_invariants(p: &Position) -> Result<(), TestCaseError> {
    for i in p.instalments() {
        let nav = &i.terms.nav;
        let sum = Cents::sum(i.terms.transfers.iter().map(|t| t.amount));
        prop_assert_eq!(sum, Some(i.terms.amount), "Σ transfers of {}", nav);
        prop_assert!(i.due() <= i.terms.amount, "due above amount for {}", nav);
        prop_assert!(i.due() >= Cents::ZERO);
        prop_assert!(
            i.offline_paid() <= i.terms.amount,
            "offline paid above amount for {}",
            nav
        );
        prop_assert!(i.terms.amount <= i.original_amount);
        prop_assert!(i.terms.transfers.iter().all(|t| t.amount >= Cents::ZERO));
        if i.withdrawn {
            prop_assert_eq!(i.due(), Cents::ZERO);
            prop_assert!(i.offline.is_empty() && i.receipt.is_none());
        } else {
            // A payable notice stays a valid notice.
            prop_assert!(
                i.terms.validate("x", &p.entity).is_ok(),
                "{} is no longer valid",
                nav
            );
        }
        if i.receipt.is_some() {
            prop_assert_eq!(i.due(), Cents::ZERO);
        }
    }
    let mut navs: Vec<_> = p.instalments().map(|i| &i.terms.nav).collect();
    let n = navs.len();
    navs.sort();
    navs.dedup();
    prop_assert_eq!(navs.len(), n, "duplicate NAVs");
    if p.cancelled {
        prop_assert!(
            p.instalments()
                .all(|i| i.receipt.is_none() && i.offline.is_empty())
        );
    }
    let status = p.status(today());
    if matches!(status, PositionStatus::Paid | PositionStatus::Cancelled) {
        prop_assert_eq!(
            p.open_amount(),
            Cents::ZERO,
            "{:?} but money is open",
            status
        );
    }
    if status == PositionStatus::Paid {
        prop_assert!(
            p.instalments()
                .any(|i| i.receipt.is_some() || !i.offline.is_empty())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_changes_keep_the_invariants_and_fold(
        start in prop_oneof![Just(single()), Just(single_and_plan())],
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let first = loaded(start);
        let mut p = Position::load(entity(), &first).expect("fixture loads");
        let mut accepted = vec![first];
        let mut next_seq = 100;
        for (n, op) in ops.iter().enumerate() {
            let change = materialise(&p, op, &mut next_seq);
            let e = event(i64::try_from(n + 1).expect("small"), change);
            let before = p.clone();
            match p.apply(&e) {
                Ok(()) => {
                    prop_assert_eq!(p.events, before.events + 1);
                    prop_assert_eq!(p.updated_at, e.at);
                    accepted.push(e);
                }
                Err(_) => prop_assert_eq!(&p, &before, "a refused change left a trace"),
            }
            check_invariants(&p)?;
        }
        prop_assert_eq!(usize::try_from(p.events).expect("fits"), accepted.len());
        let folded = Position::fold(entity(), &accepted)
            .map_err(|e| TestCaseError::fail(format!("accepted ledger does not fold: {e}")))?;
        prop_assert_eq!(&folded, &p);
    }
}

#[test]
fn loaded_event_carries_the_data() {
    let data: PositionData = single();
    let e = loaded(data.clone());
    assert_eq!(e.change, Change::Loaded(data));
    assert_eq!(e.actor, Actor::ApiKey("tari".to_owned()));
    assert_eq!(e.reason, None);
}
