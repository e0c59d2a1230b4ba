//! Where a paid transfer stands as reports and credits arrive, and how a flow row is classed.
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use jiff::ToSpan;
use jiff::civil::{Date, date};
use mpay_common::ledger::{Change, Position};
use mpay_common::money::Cents;
use mpay_common::reconcile::{
    FlowRow, RowClass, RowOutcome, Tolerances, TransferClass, classify_row, classify_transfer,
};
use support::{apply, load, nav, offline, receipt, single};

fn paid_day() -> Date {
    mpay_common::calendar::rome_date(support::at(1000))
}

fn class(p: &Position, slot: usize, today: Date) -> TransferClass {
    let inst = p.instalment(&nav(1)).expect("notice");
    classify_transfer(p, 0, inst, slot, today, Tolerances::default())
}

fn reported(transfer: u8, amount: i64) -> Change {
    Change::Reported {
        nav: nav(1),
        transfer,
        flow_id: "F1".into(),
        revision: "2025-06-16T10:00:00".into(),
        iur: "R-1".into(),
        amount: Cents(amount),
        outcome: 0,
        date: paid_day(),
    }
}

#[test]
fn a_paid_transfer_waits_for_its_report_then_its_credit() {
    let mut p = load(single());
    let day = paid_day();
    assert_eq!(class(&p, 0, day), TransferClass::NotPaidViaPagoPa);
    apply(&mut p, 1, receipt(1, "R-1", 100_00));
    assert_eq!(class(&p, 0, day), TransferClass::WaitingForReport);
    assert_eq!(
        class(&p, 0, day + 4.days()),
        TransferClass::WaitingForReport
    );
    assert_eq!(class(&p, 0, day + 5.days()), TransferClass::NotReported);
    apply(&mut p, 2, reported(1, 70_00));
    assert_eq!(
        class(&p, 0, day + 5.days()),
        TransferClass::WaitingForCredit
    );
    assert_eq!(class(&p, 1, day + 5.days()), TransferClass::NotReported);
    assert_eq!(class(&p, 0, day + 8.days()), TransferClass::NotCredited);
    apply(
        &mut p,
        3,
        Change::Credited {
            nav: nav(1),
            transfer: 1,
            flow_id: Some("F1".into()),
            reference: "TRN".into(),
            amount: Cents(70_00),
            date: day,
        },
    );
    assert_eq!(class(&p, 0, day + 8.days()), TransferClass::Reconciled);
    apply(&mut p, 4, reported(2, 29_00));
    assert_eq!(class(&p, 1, day), TransferClass::AmountMismatch);
    assert!(TransferClass::AmountMismatch.is_anomaly());
}

#[test]
fn money_owed_back_is_a_refund_and_offline_money_is_not_reported() {
    let mut p = load(single());
    apply(&mut p, 1, offline(1, 100_00));
    assert_eq!(class(&p, 0, paid_day()), TransferClass::NotPaidViaPagoPa);
    apply(&mut p, 2, receipt(1, "R-2", 100_00));
    assert_eq!(class(&p, 0, paid_day()), TransferClass::RefundDue);
}

#[test]
fn flow_rows_are_classed_against_the_position() {
    let mut p = load(single());
    let iuv = nav(1).iuv().to_string();
    let row = |iur: &str, transfer: u8, amount: i64, outcome: RowOutcome| FlowRow {
        iuv: iuv.clone(),
        iur: iur.into(),
        transfer,
        amount: Cents(amount),
        outcome,
        date: date(2025, 6, 15),
    };
    let executed = row("R-1", 1, 70_00, RowOutcome::Executed);
    assert_eq!(classify_row(&executed, None, false), RowClass::UnknownIuv);
    assert_eq!(
        classify_row(&executed, Some(&p), false),
        RowClass::ReportedWithoutReceipt
    );
    let nine = row("R-9", 1, 70_00, RowOutcome::NoReceipt);
    assert_eq!(
        classify_row(&nine, Some(&p), false),
        RowClass::PaidWithoutReceipt
    );
    apply(&mut p, 1, receipt(1, "R-1", 100_00));
    assert_eq!(
        classify_row(&executed, Some(&p), false),
        RowClass::Reconciled
    );
    assert_eq!(classify_row(&executed, Some(&p), true), RowClass::Duplicate);
    let wrong = row("R-1", 1, 60_00, RowOutcome::Executed);
    assert_eq!(
        classify_row(&wrong, Some(&p), false),
        RowClass::AmountMismatch { paid: Cents(70_00) }
    );
    let revoked = row("R-1", 1, 70_00, RowOutcome::Revoked);
    assert_eq!(classify_row(&revoked, Some(&p), false), RowClass::Revoked);
    let no_such = row("R-1", 4, 1_00, RowOutcome::Executed);
    assert_eq!(
        classify_row(&no_such, Some(&p), false),
        RowClass::UnknownTransfer
    );
    apply(&mut p, 2, receipt(1, "R-2", 100_00));
    let twice = row("R-2", 1, 70_00, RowOutcome::Executed);
    assert_eq!(
        classify_row(&twice, Some(&p), false),
        RowClass::DoublePayment
    );
}
