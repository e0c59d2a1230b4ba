//! The ledger's hot paths: applying one event to a position and folding a whole ledger.
//!
//!     cargo bench -p mpay-common --bench ledger

#![allow(clippy::inconsistent_digit_grouping)]

#[path = "../tests/support/mod.rs"]
mod support;

use mpay_common::ledger::{Change, Event, Position};
use support::*;

fn main() {
    divan::main();
}

/// A TARI-like ledger: loaded (single payment + 3-instalment plan), debtor update, a reduction,
/// two partial offline payments, a receipt, reported and credited.
fn ledger() -> Vec<Event> {
    let data = single_and_plan();
    let mut events = vec![loaded(data)];
    events.push(event(
        1,
        Change::OperatorAdjustment {
            note: "checked".into(),
        },
    ));
    events.push(event(2, reduced(2, 150_00, 140_00, &[90_00, 50_00])));
    events.push(event(3, offline(2, 40_00)));
    events.push(event(4, offline(2, 100_00)));
    events.push(event(5, receipt(3, "r-1", 150_00)));
    events
}

#[divan::bench]
fn apply_one_event(bencher: divan::Bencher) {
    let events = ledger();
    let position = Position::fold(entity(), &events[..events.len() - 1]).expect("fold");
    let last = events.last().expect("event").clone();
    bencher.bench(|| {
        let mut p = divan::black_box(&position).clone();
        p.apply(divan::black_box(&last)).expect("apply");
        p
    });
}

#[divan::bench]
fn fold_six_events(bencher: divan::Bencher) {
    let events = ledger();
    bencher.bench(|| Position::fold(entity(), divan::black_box(&events)).expect("fold"));
}

#[divan::bench]
fn validate_position(bencher: divan::Bencher) {
    let data = single_and_plan();
    bencher.bench(|| divan::black_box(&data).validate(&entity()).expect("valid"));
}
