//! Validation rules of `mpay_common::model`: every refusal names the field path and the reason.
//!
//! Amounts are written `euros_cents` (`150_00` is 150.00 EUR).
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use jiff::civil::date;
use mpay_common::model::{
    MAX_METADATA, MAX_TEXT, Metadata, ModelError, OptionKind, PositionData, RevenueStamp,
    TransferTarget,
};
use mpay_common::money::Cents;
use support::{
    ENTITY, OTHER, THIRD, bank, entity, fiscal, instalment, nav, position_data, postal, single,
    single_and_plan, transfer,
};

/// The error `data` is refused with, for the fixture entity.
fn refused(data: &PositionData) -> ModelError {
    data.validate(&entity())
        .expect_err("the position should be refused")
}

/// Asserts the field path exactly and that the reason contains every fragment.
#[track_caller]
fn assert_refused(data: &PositionData, field: &str, fragments: &[&str]) {
    let e = refused(data);
    assert_eq!(e.field, field, "wrong field in {e}");
    for f in fragments {
        assert!(
            e.reason.contains(f),
            "reason {:?} lacks {f:?} (field {})",
            e.reason,
            e.field
        );
    }
}

#[track_caller]
fn assert_valid(data: &PositionData) {
    if let Err(e) = data.validate(&entity()) {
        panic!("should be valid, refused with {e}");
    }
}

fn metadata(n: usize) -> Vec<Metadata> {
    (0..n)
        .map(|i| Metadata {
            key: format!("key{i}"),
            value: format!("value{i}"),
        })
        .collect()
}

#[test]
fn fixtures_are_valid() {
    assert_valid(&single());
    assert_valid(&single_and_plan());
    assert_eq!(single_and_plan().instalments().count(), 3);
    assert!(postal().is_postal());
    assert!(!bank().is_postal());
    // The fixture NAVs are distinct and carry our segregation code.
    assert_ne!(nav(1), nav(2));
    assert_eq!(nav(1).segregation_code(), Some(1));
}

#[test]
fn error_display_is_field_then_reason() {
    let mut data = single();
    data.description = String::new();
    assert_eq!(refused(&data).to_string(), "description: must not be empty");
}

#[test]
fn transfers_must_add_up_to_the_instalment_amount() {
    let mut data = single();
    data.options[0].instalments[0].transfers[1].amount = Cents(29_00);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers",
        &["add up to 99.00", "instalment amount is 100.00"],
    );

    // Raising the instalment instead of lowering a transfer is refused just the same.
    let mut data = single();
    data.options[0].instalments[0].amount = Cents(100_01);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers",
        &["add up to 100.00", "instalment amount is 100.01"],
    );
}

#[test]
fn transfer_sum_is_checked_in_every_option_and_instalment() {
    let mut data = single_and_plan();
    data.options[1].instalments[1].amount = Cents(149_99);
    assert_refused(
        &data,
        "options[1].instalments[1].transfers",
        &["add up to 150.00", "149.99"],
    );
}

#[test]
fn transfer_sum_overflow_is_refused() {
    let mut data = single();
    let inst = &mut data.options[0].instalments[0];
    inst.transfers[0].amount = Cents::MAX_AMOUNT;
    inst.transfers[1].amount = Cents(1);
    inst.amount = Cents::MAX_AMOUNT;
    assert_refused(&data, "options[0].instalments[0].transfers", &["overflows"]);
}

#[test]
fn an_instalment_needs_at_least_one_transfer() {
    let mut data = single();
    data.options[0].instalments[0].transfers.clear();
    assert_refused(
        &data,
        "options[0].instalments[0].transfers",
        &["between 1 and 5 transfers, found 0"],
    );
}

#[test]
fn an_instalment_has_at_most_five_transfers() {
    let mut data = single();
    data.options[0].instalments[0] = instalment(1, &[10_00; 6]);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers",
        &["between 1 and 5 transfers, found 6"],
    );
    data.options[0].instalments[0] = instalment(1, &[10_00; 5]);
    assert_valid(&data);
    data.options[0].instalments[0] = instalment(1, &[10_00]);
    assert_valid(&data);
}

#[test]
fn transfer_ids_must_be_one_to_n_in_order() {
    let mut data = single();
    let transfers = &mut data.options[0].instalments[0].transfers;
    transfers[0].id = 2;
    transfers[1].id = 1;
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[0].id",
        &["in order", "expected 1"],
    );

    let mut data = single();
    data.options[0].instalments[0].transfers[1].id = 3;
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].id",
        &["expected 2"],
    );

    let mut data = single();
    data.options[0].instalments[0].transfers[0].id = 0;
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[0].id",
        &["expected 1"],
    );
}

#[test]
fn instalment_amount_must_not_be_zero() {
    let mut data = single();
    data.options[0].instalments[0].amount = Cents::ZERO;
    assert_refused(
        &data,
        "options[0].instalments[0].amount",
        &["greater than zero"],
    );
}

#[test]
fn transfer_amount_must_not_be_zero() {
    let mut data = single();
    let inst = &mut data.options[0].instalments[0];
    inst.transfers[0].amount = Cents(100_00);
    inst.transfers[1].amount = Cents::ZERO;
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].amount",
        &["greater than zero"],
    );
}

#[test]
fn negative_amounts_built_through_the_public_field_are_refused() {
    // `Cents.0` is public and unchecked; validation must not let a negative amount through.
    let mut data = single();
    let inst = &mut data.options[0].instalments[0];
    inst.transfers[0].amount = Cents(101_00);
    inst.transfers[1].amount = Cents(-1_00);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].amount",
        &["greater than zero"],
    );

    let mut data = single();
    let inst = &mut data.options[0].instalments[0];
    inst.amount = Cents(-1);
    inst.transfers.truncate(1);
    inst.transfers[0].amount = Cents(-1);
    assert_refused(
        &data,
        "options[0].instalments[0].amount",
        &["greater than zero"],
    );
}

#[test]
fn iuv_must_match_the_notice_number() {
    let mut data = single();
    data.options[0].instalments[0].iuv = nav(2).iuv();
    let e = refused(&data);
    assert_eq!(e.field, "options[0].instalments[0].iuv");
    assert!(e.reason.contains(nav(2).iuv().as_str()), "{e}");
    assert!(e.reason.contains(nav(1).as_str()), "{e}");
    assert!(
        e.reason
            .contains(&format!("(expected {})", nav(1).iuv().as_str())),
        "{e}"
    );
}

#[test]
fn first_transfer_must_go_to_the_entity() {
    let mut data = single();
    data.options[0].instalments[0].transfers[0].beneficiary = fiscal(OTHER);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[0].beneficiary",
        &[ENTITY, OTHER],
    );

    // The same data loaded by another entity is refused for the same reason.
    let e = single()
        .validate(&fiscal(THIRD))
        .expect_err("not THIRD's position");
    assert_eq!(
        e.field,
        "options[0].instalments[0].transfers[0].beneficiary"
    );
    assert!(e.reason.contains(THIRD), "{e}");

    // Later transfers may go to anyone, the entity included.
    let mut data = single();
    data.options[0].instalments[0].transfers[1].beneficiary = entity();
    assert_valid(&data);
}

#[test]
fn postal_target_needs_a_poste_italiane_iban() {
    let mut data = single();
    data.options[0].instalments[0].transfers[1].target = TransferTarget::Postal(bank());
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].target",
        &[support::BANK_IBAN, "ABI 07601"],
    );

    // A postal IBAN is fine as a postal target and as a plain bank target.
    let mut data = single();
    data.options[0].instalments[0].transfers[0].target = TransferTarget::Postal(postal());
    data.options[0].instalments[0].transfers[1].target = TransferTarget::Bank(postal());
    assert_valid(&data);
}

#[test]
fn revenue_stamp_fields_are_checked() {
    let stamp = |province: &str| {
        TransferTarget::RevenueStamp(RevenueStamp {
            stamp_type: "01".to_owned(),
            document_hash: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned(),
            province: province.to_owned(),
        })
    };
    let mut data = single();
    data.options[0].instalments[0].transfers[1].target = stamp("RM");
    assert_valid(&data);

    data.options[0].instalments[0].transfers[1].target = stamp("rm");
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].target.province",
        &["two capital letters"],
    );
    data.options[0].instalments[0].transfers[1].target = stamp("ROM");
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].target.province",
        &["two capital letters"],
    );

    let mut data = single();
    data.options[0].instalments[0].transfers[1].target =
        TransferTarget::RevenueStamp(RevenueStamp {
            stamp_type: "001".to_owned(),
            document_hash: "x".to_owned(),
            province: "RM".to_owned(),
        });
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].target.stamp_type",
        &["at most 2 characters, found 3"],
    );
}

#[test]
fn single_option_has_exactly_one_instalment() {
    let mut data = single();
    data.options[0]
        .instalments
        .push(instalment(2, &[10_00, 5_00]));
    assert_refused(
        &data,
        "options[0].instalments",
        &["exactly one instalment, found 2"],
    );
    // The same two instalments make a valid plan.
    data.options[0].kind = OptionKind::Plan;
    assert_valid(&data);
}

#[test]
fn an_option_needs_an_instalment_and_a_position_an_option() {
    let mut data = single_and_plan();
    data.options[1].instalments.clear();
    assert_refused(
        &data,
        "options[1].instalments",
        &["at least one instalment"],
    );

    let data = position_data(Vec::new());
    assert_refused(&data, "options", &["at least one payment option"]);
}

#[test]
fn duplicate_nav_across_options_is_refused() {
    let mut data = single_and_plan();
    // The plan's second instalment reuses the single payment's notice number.
    data.options[1].instalments[1] = instalment(1, &[100_00, 50_00]);
    assert_refused(
        &data,
        "options",
        &[&format!("notice number {} appears twice", nav(1))],
    );
}

#[test]
fn duplicate_nav_within_an_option_is_refused() {
    let mut data = single_and_plan();
    data.options[1].instalments[1] = instalment(2, &[100_00, 50_00]);
    assert_refused(
        &data,
        "options[1].instalments",
        &[&format!("notice number {} appears twice", nav(2))],
    );
}

#[test]
fn expiry_must_not_be_before_validity() {
    let mut data = single();
    data.validity = Some(date(2025, 7, 1));
    data.expiry = Some(date(2025, 6, 30));
    assert_refused(
        &data,
        "expiry",
        &["2025-06-30 is before the validity date 2025-07-01"],
    );
    // One payable day is fine, and so is either date alone (the notice due by the expiry).
    data.expiry = Some(date(2025, 7, 1));
    data.options[0].instalments[0].due = date(2025, 7, 1);
    assert_valid(&data);
    data.validity = None;
    data.expiry = Some(date(2000, 1, 1));
    data.options[0].instalments[0].due = date(2000, 1, 1);
    assert_valid(&data);
    // A notice due after the expiry would be born expired.
    data.options[0].instalments[0].due = date(2000, 1, 2);
    assert_refused(
        &data,
        "options[0].instalments[0].due",
        &["2000-01-02 is after the position's expiry 2000-01-01"],
    );
}

#[test]
fn position_description_must_not_be_empty() {
    let mut data = single();
    data.description = String::new();
    assert_refused(&data, "description", &["must not be empty"]);
    // Whitespace only counts as empty.
    data.description = " \t ".to_owned();
    assert_refused(&data, "description", &["must not be empty"]);
}

#[test]
fn instalment_description_must_not_be_empty() {
    let mut data = single_and_plan();
    data.options[1].instalments[0].description = " ".to_owned();
    assert_refused(
        &data,
        "options[1].instalments[0].description",
        &["must not be empty"],
    );
}

#[test]
fn texts_have_a_maximum_length_in_characters() {
    let mut data = single();
    // Multi-byte characters count once.
    data.description = "è".repeat(MAX_TEXT);
    assert_valid(&data);
    data.description = "è".repeat(MAX_TEXT + 1);
    assert_refused(&data, "description", &["at most 140 characters, found 141"]);

    let mut data = single();
    data.kind = "K".repeat(36);
    assert_refused(&data, "kind", &["at most 35 characters, found 36"]);

    let mut data = single();
    data.debtor.name = String::new();
    assert_refused(&data, "debtor.name", &["must not be empty"]);

    let mut data = single();
    data.options[0].instalments[0].transfers[0].remittance = String::new();
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[0].remittance",
        &["must not be empty"],
    );

    let mut data = single();
    data.options[0].instalments[0].transfers[1].category = "c".repeat(MAX_TEXT + 1);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].category",
        &["at most 140"],
    );
}

#[test]
fn too_many_metadata_entries_are_refused() {
    let mut data = single();
    data.options[0].instalments[0].metadata = metadata(MAX_METADATA);
    assert_valid(&data);
    data.options[0].instalments[0].metadata = metadata(MAX_METADATA + 1);
    assert_refused(
        &data,
        "options[0].instalments[0].metadata",
        &["at most 10 entries, found 11"],
    );

    let mut data = single();
    data.options[0].instalments[0].transfers[1].metadata = metadata(MAX_METADATA + 1);
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[1].metadata",
        &["at most 10 entries, found 11"],
    );
}

#[test]
fn metadata_keys_and_values_must_not_be_empty() {
    let mut data = single();
    let mut items = metadata(3);
    items[2].value = String::new();
    data.options[0].instalments[0].metadata = items;
    assert_refused(
        &data,
        "options[0].instalments[0].metadata[2].value",
        &["must not be empty"],
    );

    let mut data = single();
    let mut items = metadata(1);
    items[0].key = " ".to_owned();
    data.options[0].instalments[0].transfers[0].metadata = items;
    assert_refused(
        &data,
        "options[0].instalments[0].transfers[0].metadata[0].key",
        &["must not be empty"],
    );
}

#[test]
fn the_first_broken_rule_is_reported_with_its_full_path() {
    let mut data = single_and_plan();
    data.options[1].instalments[1].transfers[0].amount = Cents::ZERO;
    data.options[1].instalments[1].transfers[1].amount = Cents(150_00);
    assert_refused(
        &data,
        "options[1].instalments[1].transfers[0].amount",
        &["greater than zero"],
    );
}

#[test]
fn position_data_json_round_trip() {
    let mut data = single_and_plan();
    data.validity = Some(date(2025, 1, 1));
    data.expiry = Some(date(2025, 12, 31));
    data.options[0].instalments[0].metadata = metadata(2);
    data.options[1].instalments[0].transfers.push(transfer(
        3,
        THIRD,
        TransferTarget::RevenueStamp(RevenueStamp {
            stamp_type: "01".to_owned(),
            document_hash: "hash".to_owned(),
            province: "MI".to_owned(),
        }),
        16_00,
    ));
    data.options[1].instalments[0].amount = Cents(166_00);
    assert_valid(&data);
    let json = serde_json::to_string(&data).expect("serialize");
    let back: PositionData = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, data);
    assert_valid(&back);
}
