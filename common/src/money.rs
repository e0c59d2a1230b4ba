//! Euro amounts as integer cents.
//!
//! pagoPA carries amounts as `xsd:decimal` restricted to `\d+\.\d{2}` with a maximum of
//! 999999999.99 (PROTOCOL.md §3). Everything here is integer arithmetic on cents: a binary
//! float never touches an amount, neither when parsing nor when formatting.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-negative euro amount in cents, at most [`Cents::MAX_AMOUNT`].
///
/// The field is public for pattern matching and constants; values built through it are not
/// range-checked, so prefer [`Cents::from_cents`] for untrusted numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i64);

/// Why an amount was refused. Every message names the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum MoneyError {
    #[error("amount {input:?}: empty")]
    Empty { input: String },
    #[error("amount {input:?}: negative amounts are not allowed")]
    Negative { input: String },
    #[error("amount {input:?}: at most two decimals")]
    TooManyDecimals { input: String },
    #[error("amount {input:?}: above the maximum 999999999.99")]
    AboveMaximum { input: String },
    #[error("amount {input:?}: character {position} ({found:?}) is not allowed; {expected}")]
    InvalidCharacter {
        input: String,
        /// 1-based character position in the input.
        position: usize,
        found: char,
        expected: &'static str,
    },
    #[error("amount {input:?}: {reason}")]
    Malformed { input: String, reason: &'static str },
}

/// Longest input echoed back in an error; longer inputs are cut so a hostile request cannot
/// blow up logs.
const MAX_ECHO: usize = 64;

fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

const XSD_SHAPE: &str = "expected digits, a '.' and exactly two decimals (e.g. \"12.50\")";
const API_SHAPE: &str =
    "expected digits with an optional '.' or ',' and up to two decimals (e.g. \"12,50\")";

impl Cents {
    pub const ZERO: Cents = Cents(0);
    /// 999,999,999.99 EUR, the pagoPA `stAmount` maximum.
    pub const MAX_AMOUNT: Cents = Cents(99_999_999_999);

    /// Range-checked constructor: `0..=MAX_AMOUNT` cents.
    pub fn from_cents(cents: i64) -> Result<Cents, MoneyError> {
        if cents < 0 {
            Err(MoneyError::Negative {
                input: format!("{cents} cents"),
            })
        } else if cents > Self::MAX_AMOUNT.0 {
            Err(MoneyError::AboveMaximum {
                input: format!("{cents} cents"),
            })
        } else {
            Ok(Cents(cents))
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// Strict pagoPA `stAmount`: exactly `\d+\.\d{2}`, no sign, no whitespace.
    pub fn parse_xsd(s: &str) -> Result<Cents, MoneyError> {
        if s.is_empty() {
            return Err(MoneyError::Empty { input: echo(s) });
        }
        if s.starts_with('-') {
            return Err(MoneyError::Negative { input: echo(s) });
        }
        if let Some((i, c)) = s
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        {
            return Err(MoneyError::InvalidCharacter {
                input: echo(s),
                position: i + 1,
                found: c,
                expected: XSD_SHAPE,
            });
        }
        let Some((int, frac)) = s.split_once('.') else {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "missing the '.' and the two decimals",
            });
        };
        if frac.contains('.') {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "more than one '.'",
            });
        }
        if int.is_empty() {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "missing digits before the '.'",
            });
        }
        match frac.len() {
            2 => {}
            n if n > 2 => return Err(MoneyError::TooManyDecimals { input: echo(s) }),
            _ => {
                return Err(MoneyError::Malformed {
                    input: echo(s),
                    reason: "exactly two decimals are required",
                });
            }
        }
        from_parts(s, int, frac)
    }

    /// Lenient amount for our own REST API: `12`, `12.5`, `12.50`, `12,50`, surrounding
    /// whitespace ignored. No sign, no thousands separators, no exponent, at most 2 decimals.
    pub fn parse_api(s: &str) -> Result<Cents, MoneyError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(MoneyError::Empty { input: echo(s) });
        }
        if t.starts_with('-') {
            return Err(MoneyError::Negative { input: echo(s) });
        }
        if t.starts_with('+') {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "a sign is not allowed",
            });
        }
        let mut separator = None;
        for (i, c) in t.char_indices() {
            match c {
                '0'..='9' => {}
                '.' | ',' => {
                    if separator.is_some() {
                        return Err(MoneyError::Malformed {
                            input: echo(s),
                            reason: "only one decimal separator is allowed (no thousands separators)",
                        });
                    }
                    separator = Some(i);
                }
                'e' | 'E' => {
                    return Err(MoneyError::Malformed {
                        input: echo(s),
                        reason: "exponent notation is not allowed",
                    });
                }
                _ => {
                    // Position counted in the caller's untrimmed input, which is what they sent.
                    let lead = s.len() - s.trim_start().len();
                    let position = s[..lead + i].chars().count() + 1;
                    return Err(MoneyError::InvalidCharacter {
                        input: echo(s),
                        position,
                        found: c,
                        expected: API_SHAPE,
                    });
                }
            }
        }
        let (int, frac) = match separator {
            // Separators are ASCII, so `i + 1` is a char boundary.
            Some(i) => (&t[..i], &t[i + 1..]),
            None => (t, ""),
        };
        if int.is_empty() {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "missing digits before the decimal separator",
            });
        }
        if separator.is_some() && frac.is_empty() {
            return Err(MoneyError::Malformed {
                input: echo(s),
                reason: "missing digits after the decimal separator",
            });
        }
        if frac.len() > 2 {
            return Err(MoneyError::TooManyDecimals { input: echo(s) });
        }
        from_parts(s, int, frac)
    }

    /// Same as `Display`: two decimals with a '.', the pagoPA wire format.
    pub fn to_xsd_string(self) -> String {
        self.to_string()
    }

    /// `None` on overflow or when the result leaves `0..=MAX_AMOUNT`.
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).and_then(in_range)
    }

    /// `None` on overflow or when the result leaves `0..=MAX_AMOUNT` (e.g. goes negative).
    pub fn checked_sub(self, other: Cents) -> Option<Cents> {
        self.0.checked_sub(other.0).and_then(in_range)
    }

    /// Total of the amounts; `None` as soon as a partial sum leaves the valid range.
    pub fn sum<I: IntoIterator<Item = Cents>>(it: I) -> Option<Cents> {
        it.into_iter()
            .try_fold(Cents::ZERO, |acc, c| acc.checked_add(c))
    }
}

fn in_range(c: i64) -> Option<Cents> {
    (0..=Cents::MAX_AMOUNT.0).contains(&c).then_some(Cents(c))
}

/// `int` and `frac` are pure ASCII digits, `frac` at most 2 long (already checked by callers).
fn from_parts(input: &str, int: &str, frac: &str) -> Result<Cents, MoneyError> {
    let max_euros = Cents::MAX_AMOUNT.0 / 100;
    let mut euros: i64 = 0;
    for b in int.bytes() {
        euros = euros * 10 + i64::from(b - b'0');
        // Checked at every digit so that no input length can overflow; leading zeros are fine.
        if euros > max_euros {
            return Err(MoneyError::AboveMaximum { input: echo(input) });
        }
    }
    let mut cents: i64 = 0;
    for i in 0..2 {
        cents = cents * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    let total = euros * 100 + cents;
    if total > Cents::MAX_AMOUNT.0 {
        return Err(MoneyError::AboveMaximum { input: echo(input) });
    }
    Ok(Cents(total))
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values outside the range can only come from the public field; still print them sanely.
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

struct CentsVisitor;

impl Visitor<'_> for CentsVisitor {
    type Value = Cents;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount as integer cents or as a decimal string such as \"12.50\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cents, E> {
        Cents::from_cents(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cents, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(MoneyError::AboveMaximum {
                input: format!("{v} cents"),
            })),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cents, E> {
        Cents::parse_api(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cents, D::Error> {
        // Binary formats (postcard in the store) cannot do `deserialize_any`; they always hold
        // what `serialize` wrote, an i64.
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(CentsVisitor)
        } else {
            deserializer.deserialize_i64(CentsVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xsd(s: &str) -> Result<i64, String> {
        Cents::parse_xsd(s)
            .map(Cents::get)
            .map_err(|e| e.to_string())
    }

    fn api(s: &str) -> Result<i64, String> {
        Cents::parse_api(s)
            .map(Cents::get)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn constants_and_constructor() {
        assert_eq!(Cents::ZERO.get(), 0);
        assert_eq!(Cents::MAX_AMOUNT.to_string(), "999999999.99");
        assert_eq!(Cents::from_cents(0), Ok(Cents::ZERO));
        assert_eq!(Cents::from_cents(99_999_999_999), Ok(Cents::MAX_AMOUNT));
        assert_eq!(
            Cents::from_cents(-1).map_err(|e| e.to_string()),
            Err("amount \"-1 cents\": negative amounts are not allowed".to_owned())
        );
        assert!(matches!(
            Cents::from_cents(100_000_000_000),
            Err(MoneyError::AboveMaximum { .. })
        ));
    }

    #[test]
    fn xsd_accepts_exactly_two_decimals() {
        assert_eq!(xsd("0.00"), Ok(0));
        assert_eq!(xsd("0.05"), Ok(5));
        assert_eq!(xsd("1234.50"), Ok(123_450));
        assert_eq!(xsd("00012.34"), Ok(1234));
        assert_eq!(xsd("999999999.99"), Ok(99_999_999_999));
    }

    #[test]
    fn xsd_rejections_name_the_problem() {
        assert_eq!(xsd(""), Err("amount \"\": empty".to_owned()));
        assert_eq!(
            xsd("12.345"),
            Err("amount \"12.345\": at most two decimals".to_owned())
        );
        assert_eq!(
            xsd("-1.00"),
            Err("amount \"-1.00\": negative amounts are not allowed".to_owned())
        );
        assert_eq!(
            xsd("1000000000.00"),
            Err("amount \"1000000000.00\": above the maximum 999999999.99".to_owned())
        );
        assert_eq!(
            xsd("0000000000000000000000000001000000000.00"),
            Err(
                "amount \"0000000000000000000000000001000000000.00\": above the maximum 999999999.99"
                    .to_owned()
            )
        );
        let e = xsd("12,50").expect_err("comma is not XSD");
        assert!(e.contains("character 3 (',') is not allowed"), "{e}");
        for bad in ["12", "12.5", ".50", "1.2.30", " 1.00", "+1.00", "1e2"] {
            assert!(xsd(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn api_is_lenient_in_form_only() {
        assert_eq!(api("12"), Ok(1200));
        assert_eq!(api("12.5"), Ok(1250));
        assert_eq!(api("12.50"), Ok(1250));
        assert_eq!(api("12,50"), Ok(1250));
        assert_eq!(api("  0,05\n"), Ok(5));
        assert_eq!(api("999999999.99"), Ok(99_999_999_999));
        assert_eq!(
            api("12.345"),
            Err("amount \"12.345\": at most two decimals".to_owned())
        );
        assert_eq!(
            api("-1"),
            Err("amount \"-1\": negative amounts are not allowed".to_owned())
        );
        assert_eq!(api("   "), Err("amount \"   \": empty".to_owned()));
        assert!(api("1.000,50").is_err_and(|e| e.contains("thousands")));
        assert!(api("1e3").is_err_and(|e| e.contains("exponent")));
        assert!(api("+1").is_err_and(|e| e.contains("sign")));
        assert!(api(",5").is_err_and(|e| e.contains("before")));
        assert!(api("5.").is_err_and(|e| e.contains("after")));
        assert!(api("1000000000").is_err_and(|e| e.contains("above the maximum")));
        let e = api(" 1 000").expect_err("inner space");
        assert!(e.contains("character 3 (' ')"), "{e}");
        let e = api("1€").expect_err("euro sign");
        assert!(e.contains("character 2 ('€')"), "{e}");
    }

    #[test]
    fn long_inputs_are_cut_in_errors() {
        let long = "9".repeat(10_000);
        let e = api(&long).expect_err("too large");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn display_always_two_decimals() {
        assert_eq!(Cents(123_450).to_string(), "1234.50");
        assert_eq!(Cents(5).to_string(), "0.05");
        assert_eq!(Cents(0).to_xsd_string(), "0.00");
        assert_eq!(Cents(-5).to_string(), "-0.05");
    }

    #[test]
    fn checked_arithmetic_stays_in_range() {
        assert_eq!(Cents(100).checked_add(Cents(5)), Some(Cents(105)));
        assert_eq!(Cents::MAX_AMOUNT.checked_add(Cents(1)), None);
        assert_eq!(Cents(i64::MAX).checked_add(Cents(1)), None);
        assert_eq!(Cents(5).checked_sub(Cents(5)), Some(Cents::ZERO));
        assert_eq!(Cents(5).checked_sub(Cents(6)), None);
        assert_eq!(Cents(i64::MIN).checked_sub(Cents(1)), None);
        assert_eq!(Cents::sum([Cents(1), Cents(2), Cents(3)]), Some(Cents(6)));
        assert_eq!(Cents::sum(Vec::new()), Some(Cents::ZERO));
        assert_eq!(Cents::sum([Cents::MAX_AMOUNT, Cents(1)]), None);
    }

    #[test]
    fn serde_integer_out_string_or_integer_in() {
        let json = serde_json::to_string(&Cents(1250)).expect("serialize");
        assert_eq!(json, "1250");
        let from_int: Cents = serde_json::from_str("1250").expect("integer");
        let from_str: Cents = serde_json::from_str("\"12,50\"").expect("string");
        assert_eq!(from_int, Cents(1250));
        assert_eq!(from_str, Cents(1250));
        for bad in [
            "-1",
            "12.5",
            "\"12.345\"",
            "100000000000",
            "18446744073709551615",
        ] {
            assert!(
                serde_json::from_str::<Cents>(bad).is_err(),
                "{bad} accepted"
            );
        }
        let e = serde_json::from_str::<Cents>("\"-3\"").expect_err("negative");
        assert!(e.to_string().contains("negative"), "{e}");
    }
}
