//! Property tests for `mpay_common::money`.

use mpay_common::money::Cents;
use proptest::prelude::*;

const MAX: i64 = Cents::MAX_AMOUNT.0;

fn valid_cents() -> impl Strategy<Value = Cents> {
    // Edges explicitly, small amounts often, then anything in range.
    prop_oneof![Just(0), Just(MAX), 0..=999_i64, 0..=MAX].prop_map(Cents)
}

proptest! {
    #[test]
    fn display_parses_back_strictly_and_leniently(c in (0..=MAX).prop_map(Cents)) {
        let text = c.to_string();
        prop_assert_eq!(&text, &c.to_xsd_string());
        prop_assert_eq!(Cents::parse_xsd(&text), Ok(c));
        prop_assert_eq!(Cents::parse_api(&text), Ok(c));
        prop_assert_eq!(Cents::parse_api(&text.replace('.', ",")), Ok(c));
        prop_assert_eq!(Cents::parse_api(&format!("  {text}\t")), Ok(c));
        // Without trailing zero decimals the lenient parser still gets the same value.
        let short = text.trim_end_matches('0').trim_end_matches('.');
        prop_assert_eq!(Cents::parse_api(short), Ok(c));
    }

    #[test]
    fn checked_add_and_sub_stay_in_bounds(a in any::<i64>(), b in any::<i64>(),
                                          x in 0..=MAX, y in 0..=MAX) {
        for (l, r) in [(a, b), (x, y), (x, b), (a, y)] {
            let results = [Cents(l).checked_add(Cents(r)), Cents(l).checked_sub(Cents(r))];
            for Cents(v) in results.into_iter().flatten() {
                prop_assert!((0..=MAX).contains(&v));
            }
        }
        // Exact whenever the true result is in range.
        let sum = i128::from(x) + i128::from(y);
        prop_assert_eq!(
            Cents(x).checked_add(Cents(y)).map(Cents::get).map(i128::from),
            (sum <= i128::from(MAX)).then_some(sum)
        );
        prop_assert_eq!(Cents(x).checked_sub(Cents(y)), (x >= y).then(|| Cents(x - y)));
    }

    #[test]
    fn sum_is_exact_or_none(v in prop::collection::vec(0..=MAX / 4, 0..8)) {
        let exact: i128 = v.iter().map(|&c| i128::from(c)).sum();
        let got = Cents::sum(v.iter().copied().map(Cents));
        prop_assert_eq!(
            got.map(|c| i128::from(c.get())),
            (exact <= i128::from(MAX)).then_some(exact)
        );
    }

    #[test]
    fn parsers_never_panic_and_stay_in_range(s in ".{0,24}", t in "[-+ 0-9.,eE]{0,16}") {
        for input in [&s, &t] {
            for c in [Cents::parse_api(input), Cents::parse_xsd(input)].into_iter().flatten() {
                prop_assert!((0..=MAX).contains(&c.get()));
            }
        }
    }

    #[test]
    fn serde_json_round_trip(c in valid_cents()) {
        let json = serde_json::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&json, &c.get().to_string());
        let back: Cents =
            serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, c);
        let from_text: Cents = serde_json::from_str(&format!("\"{c}\""))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(from_text, c);
    }
}
