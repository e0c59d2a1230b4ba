//! Validated identifiers: fiscal codes, notice numbers (NAV), IUV, IUPD, IBAN, postal accounts.
//!
//! Every type is parsed once at the edge (`FromStr`, serde) and is valid from then on, so the
//! rest of the daemon never re-checks. NAV/IUV layout and the mod-93 check digit follow
//! PROTOCOL.md §6; fiscal-code algorithms are the official Agenzia delle Entrate ones.

use std::fmt;
use std::str::FromStr;

use iban::IbanLike;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// The one error type for identifiers: which kind, which value, and exactly what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("{kind} \"{value}\": {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: String,
}

/// Longest value echoed back in an error; longer inputs are cut so a hostile request cannot
/// blow up logs. Every valid identifier here is far shorter.
const MAX_ECHO: usize = 64;

impl IdError {
    fn new(kind: &'static str, value: &str, reason: impl Into<String>) -> IdError {
        let value = match value.char_indices().nth(MAX_ECHO) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        IdError {
            kind,
            value,
            reason: reason.into(),
        }
    }
}

/// Common string-newtype plumbing; each type provides `fn parse(&str) -> Result<Self, IdError>`
/// and keeps its canonical text in field `.0`.
macro_rules! string_id {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        id_serde!($t, $t);
    };
}

/// Serde for an identifier, as its text. A text format (an authority's JSON, the console's RPC)
/// is untrusted and parsed; the store's binary format holds only identifiers that were parsed
/// when they were admitted, so its text is taken as it is: checking every IBAN, fiscal code and
/// NAV again was most of the cost of reading a position from the store. `$trusted` builds the
/// value from its canonical text.
macro_rules! id_serde {
    ($t:ident, $trusted:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$t, D::Error> {
                let checked = deserializer.is_human_readable();
                let text = String::deserialize(deserializer)?;
                if checked {
                    text.parse().map_err(de::Error::custom)
                } else {
                    Ok($trusted(text))
                }
            }
        }
    };
}

/// `s` must be exactly `len` ASCII digits.
fn exact_digits(kind: &'static str, s: &str, len: usize) -> Result<(), IdError> {
    let n = s.chars().count();
    if n != len {
        return Err(IdError::new(
            kind,
            s,
            format!("must be {len} digits, found {n}"),
        ));
    }
    all_digits(kind, s)
}

fn all_digits(kind: &'static str, s: &str) -> Result<(), IdError> {
    match s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, c)) => Err(IdError::new(
            kind,
            s,
            format!("character {} ({c:?}) must be a digit", i + 1),
        )),
        None => Ok(()),
    }
}

/// Decodes a store key: exactly `len` bytes holding the canonical text.
fn from_key_bytes<T: FromStr<Err = IdError>>(
    kind: &'static str,
    key: &[u8],
    len: usize,
) -> Result<T, IdError> {
    // Lossy so that a corrupt key still yields a readable error naming the bad character.
    let text = String::from_utf8_lossy(key);
    if key.len() != len {
        return Err(IdError::new(
            kind,
            &text,
            format!("store key must be {len} bytes, found {}", key.len()),
        ));
    }
    text.parse()
}

/// Check digit of the 11-digit numeric codice fiscale / partita IVA (a Luhn variant).
fn numeric_cf_check(first_ten: &[u8]) -> u8 {
    let sum: u32 = first_ten
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let d = u32::from(c - b'0');
            // Index 1, 3, ... are the even 1-based positions, which get doubled.
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    // `sum % 10` is < 10, so the result is a single digit.
    ((10 - sum % 10) % 10) as u8
}

fn check_numeric_cf(kind: &'static str, s: &str) -> Result<(), IdError> {
    exact_digits(kind, s, 11)?;
    let b = s.as_bytes();
    let expected = numeric_cf_check(&b[..10]);
    let found = b[10] - b'0';
    if found != expected {
        return Err(IdError::new(
            kind,
            s,
            format!("check digit is {found}, expected {expected}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fiscal codes

/// Codice fiscale of a creditor institution (EC): 11 digits with check digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityFiscalCode(String);

impl EntityFiscalCode {
    const KIND: &'static str = "entity fiscal code";

    fn parse(s: &str) -> Result<Self, IdError> {
        check_numeric_cf(Self::KIND, s)?;
        Ok(EntityFiscalCode(s.to_owned()))
    }

    /// The ASCII digits, for fixed-width store keys.
    pub fn as_bytes_key(&self) -> [u8; 11] {
        let mut key = [0; 11];
        // Exactly 11 ASCII bytes is an invariant of the type.
        key.copy_from_slice(self.0.as_bytes());
        key
    }

    pub fn from_key(key: &[u8]) -> Result<Self, IdError> {
        from_key_bytes(Self::KIND, key, 11)
    }
}

string_id!(EntityFiscalCode);

/// Partita IVA (or a legal person's numeric codice fiscale): 11 digits with check digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VatNumber(String);

impl VatNumber {
    const KIND: &'static str = "VAT number";

    fn parse(s: &str) -> Result<Self, IdError> {
        check_numeric_cf(Self::KIND, s)?;
        Ok(VatNumber(s.to_owned()))
    }
}

string_id!(VatNumber);

/// Codice fiscale of a natural person, `AAAAAA99A99A999A`, stored upper-case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonalFiscalCode(String);

/// Letters replacing digits 0..9 in omocodic codes.
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";
/// Month letters January..December.
const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";
/// Values of characters in odd (1-based) positions for the check character; index is the digit
/// value or the letter's offset from 'A'.
const CF_ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// Digit value of an omocodia-capable position (digit or letter from `OMOCODIA`).
fn omocodia_value(c: u8) -> Option<u8> {
    if c.is_ascii_digit() {
        Some(c - b'0')
    } else {
        OMOCODIA.iter().position(|&l| l == c).map(|p| p as u8)
    }
}

/// Check character over the first 15 upper-case alphanumeric characters.
fn personal_cf_check(first_15: &[u8]) -> u8 {
    let sum: u32 = first_15
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let idx = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'A'
            };
            // Index 0, 2, ... are the odd 1-based positions.
            if i % 2 == 0 {
                CF_ODD[usize::from(idx)]
            } else {
                u32::from(idx)
            }
        })
        .sum();
    b'A' + (sum % 26) as u8
}

impl PersonalFiscalCode {
    const KIND: &'static str = "personal fiscal code";

    fn parse(s: &str) -> Result<Self, IdError> {
        let kind = Self::KIND;
        let up = s.to_ascii_uppercase();
        let n = up.chars().count();
        if n != 16 {
            return Err(IdError::new(
                kind,
                s,
                format!("must be 16 characters, found {n}"),
            ));
        }
        if let Some((i, c)) = up
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_alphanumeric())
        {
            return Err(IdError::new(
                kind,
                s,
                format!("character {} ({c:?}) must be a letter or a digit", i + 1),
            ));
        }
        // All 16 characters are ASCII now, so bytes and characters coincide.
        let b = up.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            let pos = i + 1;
            let ch = char::from(c);
            match pos {
                7 | 8 | 10 | 11 | 13 | 14 | 15 => {
                    if omocodia_value(c).is_none() {
                        return Err(IdError::new(
                            kind,
                            s,
                            format!(
                                "character {pos} ({ch:?}) must be a digit or an omocodia letter (LMNPQRSTUV)"
                            ),
                        ));
                    }
                }
                _ => {
                    if !c.is_ascii_uppercase() {
                        return Err(IdError::new(
                            kind,
                            s,
                            format!("character {pos} ({ch:?}) must be a letter"),
                        ));
                    }
                }
            }
        }
        if !MONTHS.contains(&b[8]) {
            return Err(IdError::new(
                kind,
                s,
                format!(
                    "character 9 ({:?}) must be a month letter (one of ABCDEHLMPRST)",
                    char::from(b[8])
                ),
            ));
        }
        let day = omocodia_value(b[9]).unwrap_or(0) * 10 + omocodia_value(b[10]).unwrap_or(0);
        if !matches!(day, 1..=31 | 41..=71) {
            return Err(IdError::new(
                kind,
                s,
                format!(
                    "characters 10-11 (\"{}{}\") give day {day}, expected 1-31 (men) or 41-71 (women)",
                    char::from(b[9]),
                    char::from(b[10])
                ),
            ));
        }
        let expected = personal_cf_check(&b[..15]);
        if b[15] != expected {
            return Err(IdError::new(
                kind,
                s,
                format!(
                    "check character is {:?}, expected {:?}",
                    char::from(b[15]),
                    char::from(expected)
                ),
            ));
        }
        Ok(PersonalFiscalCode(up))
    }
}

string_id!(PersonalFiscalCode);

/// Who owes a debt position: pagoPA `entityUniqueIdentifierValue`. Serialised as the plain code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DebtorCode {
    Person(PersonalFiscalCode),
    Legal(VatNumber),
    Anonymous,
}

impl DebtorCode {
    /// pagoPA's code for an unidentified debtor.
    pub const ANONYMOUS: &'static str = "ANONIMO";

    /// pagoPA `entityUniqueIdentifierType`: 'F' natural person, 'G' legal person.
    pub fn entity_type(&self) -> char {
        match self {
            DebtorCode::Person(_) | DebtorCode::Anonymous => 'F',
            DebtorCode::Legal(_) => 'G',
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DebtorCode::Person(p) => p.as_str(),
            DebtorCode::Legal(v) => v.as_str(),
            DebtorCode::Anonymous => Self::ANONYMOUS,
        }
    }

    /// From the canonical text of a stored code (see `id_serde`).
    fn trusted(text: String) -> DebtorCode {
        match text.len() {
            16 => DebtorCode::Person(PersonalFiscalCode(text)),
            _ if text == DebtorCode::ANONYMOUS => DebtorCode::Anonymous,
            _ => DebtorCode::Legal(VatNumber(text)),
        }
    }
}

impl FromStr for DebtorCode {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.eq_ignore_ascii_case(Self::ANONYMOUS) {
            return Ok(DebtorCode::Anonymous);
        }
        // Dispatch on length so that a near-miss gets the precise reason of its own kind.
        match s.chars().count() {
            16 => s.parse().map(DebtorCode::Person),
            11 => s.parse().map(DebtorCode::Legal),
            n => Err(IdError::new(
                "debtor code",
                s,
                format!(
                    "must be a 16-character personal fiscal code, an 11-digit VAT number or \"ANONIMO\", found {n} characters"
                ),
            )),
        }
    }
}

impl TryFrom<String> for DebtorCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

id_serde!(DebtorCode, DebtorCode::trusted);

impl From<DebtorCode> for String {
    fn from(d: DebtorCode) -> String {
        match d {
            DebtorCode::Person(p) => p.0,
            DebtorCode::Legal(v) => v.0,
            DebtorCode::Anonymous => DebtorCode::ANONYMOUS.to_owned(),
        }
    }
}

impl fmt::Display for DebtorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// NAV / IUV

/// First digit of the NAV; selects the IUV layout (PROTOCOL.md §6). Serialised as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum AuxDigit {
    Zero,
    One,
    Two,
    Three,
}

impl AuxDigit {
    pub const fn digit(self) -> u8 {
        match self {
            AuxDigit::Zero => 0,
            AuxDigit::One => 1,
            AuxDigit::Two => 2,
            AuxDigit::Three => 3,
        }
    }

    /// Layouts 0, 2 and 3 end with a mod-93 check digit; layout 1 has none.
    pub const fn has_check_digit(self) -> bool {
        !matches!(self, AuxDigit::One)
    }
}

impl TryFrom<u8> for AuxDigit {
    type Error = IdError;
    fn try_from(d: u8) -> Result<Self, IdError> {
        match d {
            0 => Ok(AuxDigit::Zero),
            1 => Ok(AuxDigit::One),
            2 => Ok(AuxDigit::Two),
            3 => Ok(AuxDigit::Three),
            _ => Err(IdError::new(
                "aux digit",
                &d.to_string(),
                "must be 0, 1, 2 or 3",
            )),
        }
    }
}

impl From<AuxDigit> for u8 {
    fn from(a: AuxDigit) -> u8 {
        a.digit()
    }
}

impl fmt::Display for AuxDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.digit())
    }
}

/// The NAV check digit: the 16-digit number (aux digit + codes + IUV base) mod 93.
pub fn mod93_check(sixteen_digits: u64) -> u8 {
    // The remainder is < 93, so it fits.
    (sixteen_digits % 93) as u8
}

/// Value of a run of ASCII digits (caller guarantees digits and at most 19 of them).
fn digits_value(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &c| n * 10 + u64::from(c - b'0'))
}

/// Numero avviso: 18 digits, `aux [app|seg] base [check]`.
///
/// Ordering (and the store key) is numeric, so notices from one [`IuvSettings`] sort by sequence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nav(String);

impl Nav {
    const KIND: &'static str = "NAV";

    fn parse(s: &str) -> Result<Self, IdError> {
        exact_digits(Self::KIND, s, 18)?;
        let b = s.as_bytes();
        let aux = AuxDigit::try_from(b[0] - b'0').map_err(|_| {
            IdError::new(
                Self::KIND,
                s,
                format!(
                    "character 1 ({:?}) is the aux digit and must be 0, 1, 2 or 3",
                    char::from(b[0])
                ),
            )
        })?;
        if aux.has_check_digit() {
            let expected = mod93_check(digits_value(&b[..16]));
            let found = digits_value(&b[16..]);
            if found != u64::from(expected) {
                return Err(IdError::new(
                    Self::KIND,
                    s,
                    format!("check digit is {found:02}, expected {expected:02}"),
                ));
            }
        }
        Ok(Nav(s.to_owned()))
    }

    pub fn aux(&self) -> AuxDigit {
        // The first character was checked to be 0..=3 at construction.
        match self.0.as_bytes()[0] {
            b'0' => AuxDigit::Zero,
            b'1' => AuxDigit::One,
            b'2' => AuxDigit::Two,
            _ => AuxDigit::Three,
        }
    }

    /// The creditorReferenceId: the NAV without the aux digit, and for aux 0 also without the
    /// application code.
    pub fn iuv(&self) -> Iuv {
        let start = match self.aux() {
            AuxDigit::Zero => 3,
            _ => 1,
        };
        Iuv(self.0[start..].to_owned())
    }

    /// Segregation code (aux 3 only).
    pub fn segregation_code(&self) -> Option<u8> {
        (self.aux() == AuxDigit::Three).then(|| self.two_digits_after_aux())
    }

    /// Application code (aux 0 only).
    pub fn application_code(&self) -> Option<u8> {
        (self.aux() == AuxDigit::Zero).then(|| self.two_digits_after_aux())
    }

    fn two_digits_after_aux(&self) -> u8 {
        let b = self.0.as_bytes();
        (b[1] - b'0') * 10 + (b[2] - b'0')
    }

    /// The ASCII digits, for fixed-width store keys; byte order equals numeric order.
    pub fn as_bytes_key(&self) -> [u8; 18] {
        let mut key = [0; 18];
        // Exactly 18 ASCII bytes is an invariant of the type.
        key.copy_from_slice(self.0.as_bytes());
        key
    }

    pub fn from_key(key: &[u8]) -> Result<Nav, IdError> {
        from_key_bytes(Self::KIND, key, 18)
    }
}

string_id!(Nav);

/// Identificativo Univoco di Versamento (creditorReferenceId) of a NAV-based payment:
/// 15 digits (aux 0) or 17 digits (aux 1, 2, 3). Only the syntax is checked, since the check
/// digit depends on the aux digit, which the IUV alone does not carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iuv(String);

impl Iuv {
    const KIND: &'static str = "IUV";

    fn parse(s: &str) -> Result<Self, IdError> {
        let n = s.chars().count();
        if n != 15 && n != 17 {
            return Err(IdError::new(
                Self::KIND,
                s,
                format!("must be 15 or 17 digits, found {n}"),
            ));
        }
        all_digits(Self::KIND, s)?;
        Ok(Iuv(s.to_owned()))
    }
}

string_id!(Iuv);

/// How this installation numbers its notices (one generation point).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IuvSettings {
    pub aux: AuxDigit,
    /// Two-digit segregation code assigned by PagoPA; aux 3 only.
    pub segregation_code: Option<u8>,
    /// Two-digit application code; aux 0 only.
    pub application_code: Option<u8>,
}

impl IuvSettings {
    const KIND: &'static str = "IUV settings";

    fn describe(&self) -> String {
        let code = |c: Option<u8>| c.map_or_else(|| "none".to_owned(), |c| format!("{c:02}"));
        format!(
            "aux {}, segregation code {}, application code {}",
            self.aux,
            code(self.segregation_code),
            code(self.application_code)
        )
    }

    fn invalid(&self, reason: impl Into<String>) -> IdError {
        IdError::new(Self::KIND, &self.describe(), reason)
    }

    pub fn validate(&self) -> Result<(), IdError> {
        let two_digits = |what: &str, c: u8| {
            if c > 99 {
                Err(self.invalid(format!("{what} {c} must be two digits (00-99)")))
            } else {
                Ok(())
            }
        };
        match self.aux {
            AuxDigit::Three => {
                let Some(seg) = self.segregation_code else {
                    return Err(self.invalid("aux digit 3 requires a segregation code (00-99)"));
                };
                two_digits("segregation code", seg)?;
                if self.application_code.is_some() {
                    return Err(self.invalid("aux digit 3 takes no application code"));
                }
            }
            AuxDigit::Zero => {
                let Some(app) = self.application_code else {
                    return Err(self.invalid("aux digit 0 requires an application code (00-99)"));
                };
                two_digits("application code", app)?;
                if self.segregation_code.is_some() {
                    return Err(self.invalid("aux digit 0 takes no segregation code"));
                }
            }
            AuxDigit::One | AuxDigit::Two => {
                if self.segregation_code.is_some() || self.application_code.is_some() {
                    return Err(self.invalid(format!(
                        "aux digit {} takes neither a segregation code nor an application code",
                        self.aux
                    )));
                }
            }
        }
        Ok(())
    }

    /// Width of the IUV base that carries the sequence number.
    fn base_width(&self) -> u32 {
        match self.aux {
            AuxDigit::Zero | AuxDigit::Three => 13,
            AuxDigit::Two => 15,
            AuxDigit::One => 17,
        }
    }

    /// The NAV whose IUV base is `seq`, zero-padded. Deterministic, and strictly increasing in
    /// `seq` for fixed settings (fixed prefix, fixed-width base), which store keys rely on.
    pub fn notice(&self, seq: u64) -> Result<Nav, IdError> {
        self.validate()?;
        let width = self.base_width();
        let limit = 10_u64.pow(width);
        if seq >= limit {
            return Err(IdError::new(
                "IUV sequence",
                &seq.to_string(),
                format!(
                    "does not fit the {width}-digit IUV base of aux digit {} (maximum {})",
                    self.aux,
                    limit - 1
                ),
            ));
        }
        let code = |c: Option<u8>| u64::from(c.unwrap_or(0)) * 10_u64.pow(13);
        let head = match self.aux {
            AuxDigit::One => return Ok(Nav(format!("1{seq:017}"))),
            AuxDigit::Zero => code(self.application_code),
            AuxDigit::Two => 2 * 10_u64.pow(15),
            AuxDigit::Three => 3 * 10_u64.pow(15) + code(self.segregation_code),
        };
        let n = head + seq;
        Ok(Nav(format!("{n:016}{:02}", mod93_check(n))))
    }

    /// Whether `nav` was numbered under these settings (same aux digit and code).
    pub fn owns(&self, nav: &Nav) -> bool {
        nav.aux() == self.aux
            && match self.aux {
                AuxDigit::Zero => nav.application_code() == self.application_code,
                AuxDigit::Three => nav.segregation_code() == self.segregation_code,
                AuxDigit::One | AuxDigit::Two => true,
            }
    }

    /// Rebuilds our NAV from an IUV (e.g. a receipt's creditorReferenceId), checking its check
    /// digit and that it carries our segregation/application code.
    pub fn nav_for_iuv(&self, iuv: &Iuv) -> Result<Nav, IdError> {
        self.validate()?;
        let iuv_error = |reason: String| IdError::new(Iuv::KIND, iuv.as_str(), reason);
        let text = match self.aux {
            AuxDigit::Zero => {
                if iuv.0.len() != 15 {
                    return Err(iuv_error(format!(
                        "has {} digits, but aux digit 0 IUVs have 15",
                        iuv.0.len()
                    )));
                }
                format!("0{:02}{}", self.application_code.unwrap_or(0), iuv.0)
            }
            aux => {
                if iuv.0.len() != 17 {
                    return Err(iuv_error(format!(
                        "has {} digits, but aux digit {aux} IUVs have 17",
                        iuv.0.len()
                    )));
                }
                format!("{aux}{}", iuv.0)
            }
        };
        let nav =
            Nav::parse(&text).map_err(|e| iuv_error(format!("as NAV {text}: {}", e.reason)))?;
        if let (Some(ours), Some(theirs)) = (self.segregation_code, nav.segregation_code())
            && ours != theirs
        {
            return Err(iuv_error(format!(
                "segregation code is {theirs:02}, ours is {ours:02}"
            )));
        }
        Ok(nav)
    }
}

// ---------------------------------------------------------------------------------------------
// IUPD

/// The entity's own identifier for a debt position (GPD `iupd`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iupd(String);

impl Iupd {
    const KIND: &'static str = "IUPD";
    pub const MAX_LEN: usize = 35;

    fn parse(s: &str) -> Result<Self, IdError> {
        let n = s.chars().count();
        if n == 0 {
            return Err(IdError::new(Self::KIND, s, "must not be empty"));
        }
        if n > Self::MAX_LEN {
            return Err(IdError::new(
                Self::KIND,
                s,
                format!("must be at most {} characters, found {n}", Self::MAX_LEN),
            ));
        }
        if let Some((i, c)) = s
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(IdError::new(
                Self::KIND,
                s,
                format!(
                    "character {} ({c:?}) is not allowed; use letters, digits, '.', '_' or '-'",
                    i + 1
                ),
            ));
        }
        Ok(Iupd(s.to_owned()))
    }
}

string_id!(Iupd);

// ---------------------------------------------------------------------------------------------
// Accounts

/// A validated IBAN (any country), kept in electronic format (no spaces, upper case).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iban(String);

/// ABI code of Poste Italiane.
const POSTE_ABI: &str = "07601";

/// Expected ISO 13616 check digits for a compact, alphanumeric, upper-case IBAN.
fn iban_check_digits(compact: &str) -> u32 {
    let rearranged = compact[4..]
        .bytes()
        .chain(compact[..2].bytes())
        .chain(*b"00");
    let rem = rearranged.fold(0_u32, |acc, c| {
        if c.is_ascii_digit() {
            (acc * 10 + u32::from(c - b'0')) % 97
        } else {
            (acc * 100 + u32::from(c - b'A') + 10) % 97
        }
    });
    98 - rem
}

impl Iban {
    const KIND: &'static str = "IBAN";

    fn parse(s: &str) -> Result<Self, IdError> {
        let compact: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let err = |reason: String| IdError::new(Self::KIND, s, reason);
        if compact.is_empty() {
            return Err(err("must not be empty".to_owned()));
        }
        if let Some(c) = compact.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(err(format!(
                "contains {c:?}; only letters, digits and spaces are allowed"
            )));
        }
        let n = compact.len();
        if !(15..=34).contains(&n) {
            return Err(err(format!(
                "must be 15 to 34 letters and digits, found {n}"
            )));
        }
        let b = compact.as_bytes();
        if !b[..2].iter().all(u8::is_ascii_uppercase) {
            return Err(err(format!(
                "must start with a two-letter country code, found \"{}\"",
                &compact[..2]
            )));
        }
        if !b[2..4].iter().all(u8::is_ascii_digit) {
            return Err(err(format!(
                "characters 3-4 must be the check digits, found \"{}\"",
                &compact[2..4]
            )));
        }
        let expected = iban_check_digits(&compact);
        if compact[2..4] != format!("{expected:02}") {
            return Err(err(format!(
                "check digits are {}, expected {expected:02}",
                &compact[2..4]
            )));
        }
        match compact.parse::<iban::Iban>() {
            Ok(i) => Ok(Iban(i.electronic_str().to_owned())),
            Err(iban::ParseIbanError::UnknownCountry(_)) => {
                Err(err(format!("unknown country code \"{}\"", &compact[..2])))
            }
            Err(iban::ParseIbanError::InvalidBban(_)) => Err(err(format!(
                "account part \"{}\" does not have the layout required for country {}",
                &compact[4..],
                &compact[..2]
            ))),
            // Our own checks above cover format and checksum; keep the library's word otherwise.
            Err(e @ iban::ParseIbanError::InvalidBaseIban { .. }) => Err(err(e.to_string())),
        }
    }

    /// The electronic format: no spaces, upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn country_code(&self) -> &str {
        &self.0[..2]
    }

    /// Italian IBAN of Poste Italiane (ABI 07601), i.e. a conto corrente postale.
    pub fn is_postal(&self) -> bool {
        self.country_code() == "IT" && self.as_str().get(5..10) == Some(POSTE_ABI)
    }
}

impl fmt::Display for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Iban {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Iban {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Iban> for String {
    fn from(i: Iban) -> String {
        i.0
    }
}

id_serde!(Iban, Iban);

impl AsRef<str> for Iban {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Number of a conto corrente postale: 12 digits, leading zeros kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostalAccount(String);

impl PostalAccount {
    const KIND: &'static str = "postal account";

    /// Accepts 1 to 12 digits; shorter numbers are left-padded with zeros, as printed on
    /// bollettini.
    fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::new(Self::KIND, s, "must not be empty"));
        }
        all_digits(Self::KIND, s)?;
        if s.len() > 12 {
            return Err(IdError::new(
                Self::KIND,
                s,
                format!("must be at most 12 digits, found {}", s.len()),
            ));
        }
        if s.bytes().all(|c| c == b'0') {
            return Err(IdError::new(Self::KIND, s, "must not be all zeros"));
        }
        Ok(PostalAccount(format!("{s:0>12}")))
    }

    /// The account number inside a postal IBAN (its last 12 characters).
    pub fn from_iban(iban: &Iban) -> Option<PostalAccount> {
        if !iban.is_postal() {
            return None;
        }
        iban.as_str().get(15..).and_then(|a| Self::parse(a).ok())
    }
}

string_id!(PostalAccount);

#[cfg(test)]
mod tests {
    use super::*;

    fn reason<T: FromStr<Err = IdError> + fmt::Debug>(s: &str) -> String {
        s.parse::<T>().expect_err(s).reason
    }

    #[test]
    fn entity_fiscal_code() {
        for ok in ["80005570561", "00743110157", "12345678903"] {
            let cf: EntityFiscalCode = ok.parse().expect(ok);
            assert_eq!(cf.as_str(), ok);
            assert_eq!(&cf.as_bytes_key(), ok.as_bytes());
            assert_eq!(EntityFiscalCode::from_key(&cf.as_bytes_key()), Ok(cf));
        }
        let e = "80018410566"
            .parse::<EntityFiscalCode>()
            .expect_err("bad check");
        assert_eq!(
            e.to_string(),
            "entity fiscal code \"80018410566\": check digit is 6, expected 5"
        );
        assert_eq!(
            reason::<EntityFiscalCode>("8000557056"),
            "must be 11 digits, found 10"
        );
        assert_eq!(
            reason::<EntityFiscalCode>("8000X570561"),
            "character 5 ('X') must be a digit"
        );
        assert_eq!(
            EntityFiscalCode::from_key(b"8000557056")
                .expect_err("short")
                .reason,
            "store key must be 11 bytes, found 10"
        );
        assert!(EntityFiscalCode::from_key(b"8000\xff570561").is_err());
    }

    #[test]
    fn vat_number_is_its_own_type() {
        let v: VatNumber = "00743110157".parse().expect("valid");
        assert_eq!(v.to_string(), "00743110157");
        assert_eq!(
            "00743110158".parse::<VatNumber>().expect_err("bad").kind,
            "VAT number"
        );
    }

    #[test]
    fn personal_fiscal_code() {
        let p: PersonalFiscalCode = "rssmra85t10a562s".parse().expect("lowercase accepted");
        assert_eq!(p.as_str(), "RSSMRA85T10A562S");
        // Omocodic variants: trailing digits replaced by LMNPQRSTUV, check character recomputed.
        for ok in ["RSSMRA85T10A56NH", "RSSMRAURTMLARSNL", "BNCGLI80A41H501C"] {
            ok.parse::<PersonalFiscalCode>().expect(ok);
        }
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85T10A562X"),
            "check character is 'X', expected 'S'"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85T10A562"),
            "must be 16 characters, found 15"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA8AT10A562S"),
            "character 8 ('A') must be a digit or an omocodia letter (LMNPQRSTUV)"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSS1RA85T10A562S"),
            "character 4 ('1') must be a letter"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85F10A562S"),
            "character 9 ('F') must be a month letter (one of ABCDEHLMPRST)"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85T32A562S"),
            "characters 10-11 (\"32\") give day 32, expected 1-31 (men) or 41-71 (women)"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85T00A562S"),
            "characters 10-11 (\"00\") give day 0, expected 1-31 (men) or 41-71 (women)"
        );
        assert_eq!(
            reason::<PersonalFiscalCode>("RSSMRA85T1ÀA562S"),
            "character 11 ('À') must be a letter or a digit"
        );
    }

    #[test]
    fn debtor_code() {
        let p: DebtorCode = "RSSMRA85T10A562S".parse().expect("person");
        assert!(matches!(p, DebtorCode::Person(_)));
        assert_eq!(p.entity_type(), 'F');
        let g: DebtorCode = "00743110157".parse().expect("legal");
        assert!(matches!(g, DebtorCode::Legal(_)));
        assert_eq!(g.entity_type(), 'G');
        let a: DebtorCode = "ANONIMO".parse().expect("anonymous");
        assert_eq!(a, DebtorCode::Anonymous);
        assert_eq!(a.entity_type(), 'F');
        assert_eq!(a.to_string(), "ANONIMO");
        let e = "12345".parse::<DebtorCode>().expect_err("short");
        assert_eq!(e.kind, "debtor code");
        assert!(e.reason.contains("ANONIMO") && e.reason.contains("found 5"));
        assert_eq!(
            "00743110158"
                .parse::<DebtorCode>()
                .expect_err("bad vat")
                .kind,
            "VAT number"
        );
        let json = serde_json::to_string(&vec![p.clone(), g, a]).expect("serialize");
        assert_eq!(json, r#"["RSSMRA85T10A562S","00743110157","ANONIMO"]"#);
        let back: Vec<DebtorCode> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back[0], p);
        assert!(serde_json::from_str::<DebtorCode>("\"RSSMRA85T10A562X\"").is_err());
    }

    #[test]
    fn aux_digit() {
        assert_eq!(AuxDigit::try_from(3), Ok(AuxDigit::Three));
        assert_eq!(AuxDigit::Two.digit(), 2);
        assert_eq!(
            AuxDigit::try_from(4).expect_err("4").to_string(),
            "aux digit \"4\": must be 0, 1, 2 or 3"
        );
    }

    #[test]
    fn protocol_worked_examples() {
        // §6: real notice, aux 3, segregation 47.
        let nav: Nav = "347164923022221054".parse().expect("valid NAV");
        assert_eq!(nav.aux(), AuxDigit::Three);
        assert_eq!(nav.segregation_code(), Some(47));
        assert_eq!(nav.iuv().as_str(), "47164923022221054");
        assert_eq!(mod93_check(3_471_649_230_222_210), 54);

        // Aux 0, application code 01, base 123.
        let s0 = IuvSettings {
            aux: AuxDigit::Zero,
            segregation_code: None,
            application_code: Some(1),
        };
        let nav0 = s0.notice(123).expect("aux 0");
        assert_eq!(nav0.as_str(), "001000000000012370");
        assert_eq!(nav0.iuv().as_str(), "000000000012370");
        assert_eq!(nav0.application_code(), Some(1));

        // Aux 2, base 12345 -> check 71.
        let s2 = IuvSettings {
            aux: AuxDigit::Two,
            segregation_code: None,
            application_code: None,
        };
        let nav2 = s2.notice(12345).expect("aux 2");
        assert_eq!(nav2.as_str(), "200000000001234571");
        assert_eq!(nav2.iuv().as_str(), "00000000001234571");

        // The SANP documentation sample has a wrong check digit.
        let e = "311111111112222222"
            .parse::<Nav>()
            .expect_err("invalid sample");
        assert_eq!(
            e.to_string(),
            "NAV \"311111111112222222\": check digit is 22, expected 47"
        );
    }

    #[test]
    fn nav_rejections() {
        assert_eq!(
            reason::<Nav>("34716492302222105"),
            "must be 18 digits, found 17"
        );
        assert_eq!(
            reason::<Nav>("34716492302222105X"),
            "character 18 ('X') must be a digit"
        );
        assert_eq!(
            reason::<Nav>("447164923022221054"),
            "character 1 ('4') is the aux digit and must be 0, 1, 2 or 3"
        );
        // Aux 1 has no check digit: anything goes after the aux digit.
        let n1: Nav = "112345678901234567".parse().expect("aux 1");
        assert_eq!(n1.iuv().as_str(), "12345678901234567");
        assert_eq!(n1.segregation_code(), None);
    }

    #[test]
    fn nav_keys_and_serde() {
        let nav: Nav = "347164923022221054".parse().expect("valid");
        assert_eq!(Nav::from_key(&nav.as_bytes_key()), Ok(nav.clone()));
        assert!(Nav::from_key(b"347164923022221055").is_err());
        let json = serde_json::to_string(&nav).expect("serialize");
        assert_eq!(json, "\"347164923022221054\"");
        assert_eq!(serde_json::from_str::<Nav>(&json).expect("round trip"), nav);
        let e = serde_json::from_str::<Nav>("\"311111111112222222\"").expect_err("bad");
        assert!(e.to_string().contains("expected 47"), "{e}");
    }

    #[test]
    fn iuv() {
        "000000000012370".parse::<Iuv>().expect("15");
        "47164923022221054".parse::<Iuv>().expect("17");
        assert_eq!(
            reason::<Iuv>("1234567890123456"),
            "must be 15 or 17 digits, found 16"
        );
        assert_eq!(
            reason::<Iuv>("47164923022221O54"),
            "character 15 ('O') must be a digit"
        );
    }

    #[test]
    fn iuv_settings() {
        let s3 = IuvSettings {
            aux: AuxDigit::Three,
            segregation_code: Some(47),
            application_code: None,
        };
        s3.validate().expect("valid");
        let nav = s3.notice(1_649_230_222_210).expect("fits");
        assert_eq!(nav.as_str(), "347164923022221054");
        assert!(s3.owns(&nav));
        assert_eq!(s3.nav_for_iuv(&nav.iuv()), Ok(nav.clone()));
        let other = IuvSettings {
            segregation_code: Some(12),
            ..s3.clone()
        };
        assert!(!other.owns(&nav));
        assert!(other.nav_for_iuv(&nav.iuv()).is_err());

        let e = s3.notice(10_000_000_000_000).expect_err("too big");
        assert_eq!(
            e.to_string(),
            "IUV sequence \"10000000000000\": does not fit the 13-digit IUV base of aux digit 3 (maximum 9999999999999)"
        );

        let bad = |aux, seg, app| {
            IuvSettings {
                aux,
                segregation_code: seg,
                application_code: app,
            }
            .validate()
            .expect_err("invalid settings")
            .reason
        };
        assert_eq!(
            bad(AuxDigit::Three, None, None),
            "aux digit 3 requires a segregation code (00-99)"
        );
        assert_eq!(
            bad(AuxDigit::Three, Some(100), None),
            "segregation code 100 must be two digits (00-99)"
        );
        assert_eq!(
            bad(AuxDigit::Three, Some(1), Some(1)),
            "aux digit 3 takes no application code"
        );
        assert_eq!(
            bad(AuxDigit::Zero, None, None),
            "aux digit 0 requires an application code (00-99)"
        );
        assert_eq!(
            bad(AuxDigit::Two, Some(1), None),
            "aux digit 2 takes neither a segregation code nor an application code"
        );

        let s1 = IuvSettings {
            aux: AuxDigit::One,
            segregation_code: None,
            application_code: None,
        };
        assert_eq!(s1.notice(42).expect("aux 1").as_str(), "100000000000000042");

        let parsed: IuvSettings =
            serde_json::from_str(r#"{"aux":3,"segregation_code":47}"#).expect("json");
        assert_eq!(parsed, s3);
        assert!(serde_json::from_str::<IuvSettings>(r#"{"aux":4}"#).is_err());
        assert!(
            serde_json::from_str::<IuvSettings>(r#"{"aux":3,"segregation":47}"#).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn iupd() {
        "POS-2024_0001.a".parse::<Iupd>().expect("valid");
        "A".repeat(35).parse::<Iupd>().expect("35 chars");
        assert_eq!(reason::<Iupd>(""), "must not be empty");
        assert_eq!(
            reason::<Iupd>(&"A".repeat(36)),
            "must be at most 35 characters, found 36"
        );
        assert_eq!(
            reason::<Iupd>("POS 1"),
            "character 4 (' ') is not allowed; use letters, digits, '.', '_' or '-'"
        );
    }

    #[test]
    fn iban() {
        let i: Iban = "it60 x054 2811 1010 0000 0123 456".parse().expect("valid");
        assert_eq!(i.as_str(), "IT60X0542811101000000123456");
        assert_eq!(i.to_string(), "IT60X0542811101000000123456");
        assert!(!i.is_postal());
        assert_eq!(PostalAccount::from_iban(&i), None);

        // ABI 07601, CIN and IBAN check digits computed for this test.
        let p: Iban = "IT30O0760103200000012345678".parse().expect("postal");
        assert!(p.is_postal());
        assert_eq!(
            PostalAccount::from_iban(&p).map(String::from),
            Some("000012345678".to_owned())
        );

        assert_eq!(
            reason::<Iban>("IT61X0542811101000000123456"),
            "check digits are 61, expected 60"
        );
        assert_eq!(
            reason::<Iban>("IT60X05428111010000001234-56"),
            "contains '-'; only letters, digits and spaces are allowed"
        );
        assert_eq!(
            reason::<Iban>("XX10X0542811101000000123456"),
            "unknown country code \"XX\""
        );
        assert_eq!(
            reason::<Iban>("IT90X054281110100000012345"),
            "account part \"X054281110100000012345\" does not have the layout required for country IT"
        );
        let json = serde_json::to_string(&p).expect("serialize");
        assert_eq!(json, "\"IT30O0760103200000012345678\"");
        assert_eq!(serde_json::from_str::<Iban>(&json).expect("back"), p);
        assert!(p < i, "ordered by electronic form: IT30... < IT60...");
    }

    #[test]
    fn postal_account() {
        let a: PostalAccount = "12345678".parse().expect("short");
        assert_eq!(a.as_str(), "000012345678");
        "001234567890".parse::<PostalAccount>().expect("12 digits");
        assert_eq!(
            reason::<PostalAccount>("1234567890123"),
            "must be at most 12 digits, found 13"
        );
        assert_eq!(
            reason::<PostalAccount>("12 345"),
            "character 3 (' ') must be a digit"
        );
        assert_eq!(reason::<PostalAccount>("0000"), "must not be all zeros");
        assert_eq!(reason::<PostalAccount>(""), "must not be empty");
    }
}
