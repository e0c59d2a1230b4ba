//! Property tests for `mpay_common::ids`.

use mpay_common::ids::{
    AuxDigit, DebtorCode, EntityFiscalCode, Iban, IdError, Iupd, Iuv, IuvSettings, Nav,
    PersonalFiscalCode, PostalAccount,
};
use proptest::prelude::*;

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Any valid settings.
fn settings() -> impl Strategy<Value = IuvSettings> {
    (0..4_u8, 0..=99_u8).prop_map(|(aux, code)| match aux {
        0 => IuvSettings {
            aux: AuxDigit::Zero,
            segregation_code: None,
            application_code: Some(code),
        },
        1 => IuvSettings {
            aux: AuxDigit::One,
            segregation_code: None,
            application_code: None,
        },
        2 => IuvSettings {
            aux: AuxDigit::Two,
            segregation_code: None,
            application_code: None,
        },
        _ => IuvSettings {
            aux: AuxDigit::Three,
            segregation_code: Some(code),
            application_code: None,
        },
    })
}

fn base_width(aux: AuxDigit) -> u32 {
    match aux {
        AuxDigit::Zero | AuxDigit::Three => 13,
        AuxDigit::Two => 15,
        AuxDigit::One => 17,
    }
}

/// Settings plus two sequence numbers that fit their IUV base.
fn settings_and_seqs() -> impl Strategy<Value = (IuvSettings, u64, u64)> {
    settings().prop_flat_map(|s| {
        let limit = 10_u64.pow(base_width(s.aux));
        let seq = prop_oneof![Just(0), Just(limit - 1), 0..1000_u64, 0..limit];
        (Just(s), seq.clone(), seq)
    })
}

/// A valid 11-digit numeric fiscal code, found as the only valid completion of 10 random digits.
fn entity_fiscal_code() -> impl Strategy<Value = EntityFiscalCode> {
    "[0-9]{10}".prop_filter_map("no valid check digit", |prefix| {
        (0..10)
            .filter_map(|d| format!("{prefix}{d}").parse::<EntityFiscalCode>().ok())
            .next()
    })
}

proptest! {
    #[test]
    fn notices_parse_back_with_consistent_iuv_and_order((s, a, b) in settings_and_seqs()) {
        let nav_a = s.notice(a).map_err(fail)?;
        let nav_b = s.notice(b).map_err(fail)?;
        for (seq, nav) in [(a, &nav_a), (b, &nav_b)] {
            let reparsed: Nav = nav.as_str().parse().map_err(fail)?;
            prop_assert_eq!(&reparsed, nav);
            prop_assert_eq!(nav.aux(), s.aux);
            prop_assert!(s.owns(nav));
            let iuv = nav.iuv();
            let iuv_len = if s.aux == AuxDigit::Zero { 15 } else { 17 };
            prop_assert_eq!(iuv.as_str().len(), iuv_len);
            prop_assert!(nav.as_str().ends_with(iuv.as_str()));
            prop_assert_eq!(iuv.as_str().parse::<Iuv>().map_err(fail)?, iuv.clone());
            prop_assert_eq!(&s.nav_for_iuv(&iuv).map_err(fail)?, nav);
            // The base digits are the sequence number, zero-padded.
            let width = base_width(s.aux) as usize;
            let base_start = match s.aux {
                AuxDigit::Zero | AuxDigit::Three => 3,
                AuxDigit::One | AuxDigit::Two => 1,
            };
            let base = &nav.as_str()[base_start..base_start + width];
            prop_assert_eq!(base.parse::<u64>().map_err(fail)?, seq);
            prop_assert_eq!(Nav::from_key(&nav.as_bytes_key()).map_err(fail)?, nav.clone());
            // Same sequence number, same NAV.
            prop_assert_eq!(&s.notice(seq).map_err(fail)?, nav);
        }
        prop_assert_eq!(a.cmp(&b), nav_a.cmp(&nav_b));
        prop_assert_eq!(a.cmp(&b), nav_a.as_bytes_key().cmp(&nav_b.as_bytes_key()));
    }

    #[test]
    fn sequence_beyond_the_base_is_refused(s in settings(), extra in 0..1000_u64) {
        let limit = 10_u64.pow(base_width(s.aux));
        let e = s.notice(limit + extra).err();
        prop_assert!(e.is_some_and(|e: IdError| e.kind == "IUV sequence"));
    }

    #[test]
    fn single_digit_change_is_detected(
        (s, seq, _) in settings_and_seqs()
            .prop_filter("aux 2 or 3", |(s, _, _)| matches!(s.aux, AuxDigit::Two | AuxDigit::Three)),
        pos in 0..18_usize,
        delta in 1..=9_u8,
    ) {
        let nav = s.notice(seq).map_err(fail)?;
        let mut bytes = nav.as_str().as_bytes().to_vec();
        bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
        // Turning the aux digit into 1 legitimately drops the check digit.
        prop_assume!(!(pos == 0 && bytes[0] == b'1'));
        let changed = String::from_utf8(bytes).map_err(fail)?;
        prop_assert!(changed.parse::<Nav>().is_err(), "{} accepted (from {})", changed, nav);
    }

    #[test]
    fn entity_fiscal_code_check_digit_is_unique_and_detects_changes(
        cf in entity_fiscal_code(), pos in 0..11_usize, delta in 1..=9_u8,
    ) {
        let prefix = &cf.as_str()[..10];
        let valid = (0..10)
            .filter(|d| format!("{prefix}{d}").parse::<EntityFiscalCode>().is_ok())
            .count();
        prop_assert_eq!(valid, 1);
        let mut bytes = cf.as_str().as_bytes().to_vec();
        bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
        let changed = String::from_utf8(bytes).map_err(fail)?;
        prop_assert!(changed.parse::<EntityFiscalCode>().is_err());
        prop_assert_eq!(EntityFiscalCode::from_key(&cf.as_bytes_key()).map_err(fail)?, cf);
    }

    #[test]
    fn personal_fiscal_code_has_exactly_one_check_character(
        head in "[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST]",
        day in prop_oneof![1..=31_u8, 41..=71_u8],
        tail in "[A-Z][0-9LMNPQRSTUV]{3}",
        lower in any::<bool>(),
    ) {
        let prefix = format!("{head}{day:02}{tail}");
        let valid: Vec<PersonalFiscalCode> = ('A'..='Z')
            .filter_map(|c| {
                let code = format!("{prefix}{c}");
                let code = if lower { code.to_ascii_lowercase() } else { code };
                code.parse().ok()
            })
            .collect();
        prop_assert_eq!(valid.len(), 1);
        prop_assert!(valid[0].as_str().starts_with(&prefix));
        let debtor: DebtorCode = valid[0].as_str().parse().map_err(fail)?;
        prop_assert_eq!(debtor.entity_type(), 'F');
    }

    #[test]
    fn serde_json_round_trips(
        (s, seq, _) in settings_and_seqs(), cf in entity_fiscal_code(),
    ) {
        let nav = s.notice(seq).map_err(fail)?;
        let json = serde_json::to_string(&nav).map_err(fail)?;
        prop_assert_eq!(&json, &format!("\"{nav}\""));
        prop_assert_eq!(serde_json::from_str::<Nav>(&json).map_err(fail)?, nav);

        let json = serde_json::to_string(&cf).map_err(fail)?;
        prop_assert_eq!(&json, &format!("\"{cf}\""));
        prop_assert_eq!(serde_json::from_str::<EntityFiscalCode>(&json).map_err(fail)?, cf);

        let json = serde_json::to_string(&s).map_err(fail)?;
        prop_assert_eq!(serde_json::from_str::<IuvSettings>(&json).map_err(fail)?, s);
    }

    #[test]
    fn parsers_never_panic(input in "\\PC{0,40}") {
        // Only totality matters here: every parser answers Ok or a structured error.
        let _ = input.parse::<Nav>();
        let _ = input.parse::<Iuv>();
        let _ = input.parse::<EntityFiscalCode>();
        let _ = input.parse::<PersonalFiscalCode>();
        let _ = input.parse::<DebtorCode>();
        let _ = input.parse::<Iupd>();
        let _ = input.parse::<Iban>();
        let _ = input.parse::<PostalAccount>();
        let _ = Nav::from_key(input.as_bytes());
        let _ = EntityFiscalCode::from_key(input.as_bytes());
    }
}
