//! Shared fixtures for the model and ledger tests: valid identifiers, a valid position and
//! shorthands for events. Each test file uses a different subset.
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(dead_code, clippy::inconsistent_digit_grouping)]

use jiff::Timestamp;
use jiff::civil::{Date, date};
use mpay_common::ids::{AuxDigit, EntityFiscalCode, Iban, IuvSettings, Nav};
use mpay_common::ledger::{Actor, Change, Event, OfflineChannel, Position};
use mpay_common::model::{
    Debtor, Instalment, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;

/// The creditor entity that owns every fixture position.
pub const ENTITY: &str = "00123456782";
/// Two other valid beneficiaries.
pub const OTHER: &str = "00987654324";
pub const THIRD: &str = "80001234568";
pub const BANK_IBAN: &str = "IT92R0306902117100000046111";
/// A Poste Italiane IBAN (ABI 07601).
pub const POSTAL_IBAN: &str = "IT88Q0760102600000012345678";

/// The day the tests pretend it is; fixture positions are payable on it.
pub fn today() -> Date {
    date(2025, 6, 15)
}

pub fn entity() -> EntityFiscalCode {
    ENTITY.parse().expect("valid entity fiscal code")
}

pub fn fiscal(code: &str) -> EntityFiscalCode {
    code.parse().expect("valid fiscal code")
}

pub fn bank() -> Iban {
    BANK_IBAN.parse().expect("valid bank IBAN")
}

pub fn postal() -> Iban {
    POSTAL_IBAN.parse().expect("valid postal IBAN")
}

pub fn settings() -> IuvSettings {
    IuvSettings {
        aux: AuxDigit::Three,
        segregation_code: Some(1),
        application_code: None,
    }
}

/// The `seq`-th notice of the fixture installation.
pub fn nav(seq: u64) -> Nav {
    settings().notice(seq).expect("valid sequence")
}

/// Transfer `id` (1-based) of `amount` cents.
pub fn transfer(id: u8, beneficiary: &str, target: TransferTarget, amount: i64) -> Transfer {
    Transfer {
        id,
        beneficiary: fiscal(beneficiary),
        target,
        amount: Cents(amount),
        remittance: format!("transfer {id}"),
        category: "9/0101108TS/".to_owned(),
        metadata: Vec::new(),
    }
}

/// A valid instalment with NAV `seq`, split into transfers of the given amounts: the first to
/// the entity's bank account, the second to `OTHER`'s postal account, the others to `THIRD`.
pub fn instalment(seq: u64, transfers: &[i64]) -> Instalment {
    let nav = nav(seq);
    let transfers: Vec<Transfer> = transfers
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let id = u8::try_from(i + 1).expect("few transfers");
            match i {
                0 => transfer(id, ENTITY, TransferTarget::Bank(bank()), amount),
                1 => transfer(id, OTHER, TransferTarget::Postal(postal()), amount),
                _ => transfer(id, THIRD, TransferTarget::Bank(bank()), amount),
            }
        })
        .collect();
    Instalment {
        iuv: nav.iuv(),
        nav,
        amount: Cents(transfers.iter().map(|t| t.amount.get()).sum()),
        due: date(2025, 12, 31),
        description: format!("instalment {seq}"),
        transfers,
        metadata: Vec::new(),
    }
}

pub fn option(kind: OptionKind, instalments: Vec<Instalment>) -> PaymentOption {
    PaymentOption { kind, instalments }
}

pub fn debtor() -> Debtor {
    Debtor {
        code: "RSSMRA85T10A562S"
            .parse()
            .expect("valid personal fiscal code"),
        name: "Mario Rossi".to_owned(),
        street: Some("Via Roma 1".to_owned()),
        postal_code: Some("00100".to_owned()),
        city: Some("Roma".to_owned()),
        province: Some("RM".to_owned()),
        country: Some("IT".to_owned()),
        email: None,
    }
}

pub fn position_data(options: Vec<PaymentOption>) -> PositionData {
    PositionData {
        iupd: "TARI-2025-0001".parse().expect("valid IUPD"),
        kind: "TARI".to_owned(),
        debtor: debtor(),
        description: "Tassa rifiuti 2025".to_owned(),
        validity: None,
        expiry: None,
        options,
    }
}

/// NAV 1 only: one single payment of 100.00 EUR, 70.00 to the entity and 30.00 to `OTHER`.
pub fn single() -> PositionData {
    position_data(vec![option(
        OptionKind::Single,
        vec![instalment(1, &[70_00, 30_00])],
    )])
}

/// NAV 1 pays 300.00 at once (single option); NAVs 2 and 3 pay 150.00 each (plan option).
pub fn single_and_plan() -> PositionData {
    position_data(vec![
        option(OptionKind::Single, vec![instalment(1, &[200_00, 100_00])]),
        option(
            OptionKind::Plan,
            vec![
                instalment(2, &[100_00, 50_00]),
                instalment(3, &[100_00, 50_00]),
            ],
        ),
    ])
}

/// The `n`-th instant of a test ledger; increasing in `n`.
pub fn at(n: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + n * 60).expect("valid timestamp")
}

pub fn event(n: i64, change: Change) -> Event {
    Event::new(at(n), actor(&change), change)
}

/// Who makes each kind of change in the fixtures.
fn actor(change: &Change) -> Actor {
    match change {
        Change::PaidViaPagoPa { .. } => Actor::Node,
        Change::Loaded(_) | Change::Updated(_) => Actor::ApiKey("tari".to_owned()),
        _ => Actor::Operator("anna".to_owned()),
    }
}

pub fn loaded(data: PositionData) -> Event {
    event(0, Change::Loaded(data))
}

pub fn load(data: PositionData) -> Position {
    Position::load(entity(), &loaded(data)).expect("fixture position loads")
}

pub fn offline(seq: u64, amount: i64) -> Change {
    Change::PaidOffline {
        nav: nav(seq),
        channel: OfflineChannel::Counter,
        date: date(2025, 6, 10),
        amount: Cents(amount),
        reference: format!("counter receipt {seq}/{amount}"),
        transfer_amounts: None,
    }
}

pub fn receipt(seq: u64, receipt_id: &str, amount: i64) -> Change {
    Change::PaidViaPagoPa {
        nav: nav(seq),
        receipt_id: receipt_id.to_owned(),
        amount: Cents(amount),
        psp: "BCITITMM".to_owned(),
        paid_at: at(1000),
        transfers: Vec::new(),
        flags: Vec::new(),
    }
}

pub fn reduced(seq: u64, old: i64, new: i64, transfers: &[i64]) -> Change {
    Change::Reduced {
        nav: nav(seq),
        old_amount: Cents(old),
        new_amount: Cents(new),
        transfer_amounts: transfers.iter().copied().map(Cents).collect(),
        act: "determina 42/2025".to_owned(),
    }
}

pub fn rescheduled(replaced: &[u64], plan: Vec<Instalment>) -> Change {
    Change::Rescheduled {
        replaced: replaced.iter().copied().map(nav).collect(),
        plan: option(OptionKind::Plan, plan),
    }
}

/// Applies `change` as event `n`, which must be accepted.
pub fn apply(position: &mut Position, n: i64, change: Change) {
    let name = change.name();
    position
        .apply(&event(n, change))
        .unwrap_or_else(|e| panic!("{name} refused: {e}"));
}

/// A revenue stamp transfer (marca da bollo) of `amount` cents.
pub fn stamp(id: u8, amount: i64) -> Transfer {
    transfer(
        id,
        ENTITY,
        TransferTarget::RevenueStamp(mpay_common::model::RevenueStamp {
            stamp_type: "01".to_owned(),
            document_hash: "cXVlc3RvIMOoIHVuIGhhc2ggZGkgdW4gZG9jdW1lbnRvIGRpIHByb3ZhIQ=="
                .to_owned(),
            province: "RM".to_owned(),
        }),
        amount,
    )
}

/// NAV `seq` with the given transfers and, last, a revenue stamp of `stamp_amount`.
pub fn instalment_with_stamp(seq: u64, transfers: &[i64], stamp_amount: i64) -> Instalment {
    let mut i = instalment(seq, transfers);
    let id = u8::try_from(i.transfers.len() + 1).expect("few transfers");
    i.transfers.push(stamp(id, stamp_amount));
    i.amount = Cents(i.amount.get() + stamp_amount);
    i
}

/// A receipt for NAV `seq` whose transfers are `(idTransfer, amount)`.
pub fn receipt_split(seq: u64, receipt_id: &str, parts: &[(u8, i64)]) -> Change {
    let Change::PaidViaPagoPa {
        nav,
        receipt_id,
        psp,
        paid_at,
        ..
    } = receipt(seq, receipt_id, 0)
    else {
        unreachable!("receipt builds a receipt");
    };
    Change::PaidViaPagoPa {
        nav,
        receipt_id,
        amount: Cents(parts.iter().map(|p| p.1).sum()),
        psp,
        paid_at,
        transfers: parts
            .iter()
            .map(|&(id, amount)| mpay_common::ledger::PaidTransfer {
                id,
                amount: Cents(amount),
                beneficiary: if id == 1 { ENTITY } else { OTHER }.to_owned(),
                account: None,
            })
            .collect(),
        flags: Vec::new(),
    }
}

/// An offline payment with its own reference.
pub fn offline_ref(seq: u64, amount: i64, reference: &str) -> Change {
    Change::PaidOffline {
        nav: nav(seq),
        channel: OfflineChannel::PostalSlip,
        date: date(2025, 6, 10),
        amount: Cents(amount),
        reference: reference.to_owned(),
        transfer_amounts: None,
    }
}
