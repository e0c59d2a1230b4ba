//! The domain model (DESIGN.md §2): what an authority loads, as it loads it.
//!
//! `PositionData` is the authority's description of a debt position. Its current state, with
//! payments, reductions and plan changes applied, is `ledger::Position`, a fold of the ledger.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{DebtorCode, EntityFiscalCode, Iban, Iupd, Iuv, Nav};
use crate::money::Cents;

/// pagoPA allows at most five transfers (beneficiaries) per notice.
pub const MAX_TRANSFERS: usize = 5;
/// pagoPA's `metadata` carries at most ten key/value pairs per element.
pub const MAX_METADATA: usize = 10;
/// Free texts shown on receipts and notices (`stText140`).
pub const MAX_TEXT: usize = 140;
/// The years a due date may fall in.
pub const MIN_YEAR: i16 = 1900;
pub const MAX_YEAR: i16 = 9999;

/// A broken rule in what an authority loaded; `field` is a path such as
/// `options[0].instalments[1].transfers[0].amount`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ModelError {
    pub field: String,
    pub reason: String,
}

impl ModelError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub key: String,
    pub value: String,
}

/// The person or company who owes the money.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debtor {
    pub code: DebtorCode,
    pub name: String,
    #[serde(default)]
    pub street: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub province: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A digital revenue stamp (marca da bollo digitale): the PSP sells the stamp, no money reaches
/// the authority for this transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueStamp {
    /// `tipoBollo`, "01" for the 16 EUR stamp.
    pub stamp_type: String,
    /// base64 SHA-256 of the document the stamp is for.
    pub document_hash: String,
    /// two-letter province of residence of the debtor.
    pub province: String,
}

/// Where a transfer's money goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferTarget {
    /// A bank account registered on the node for the beneficiary.
    Bank(Iban),
    /// A Poste Italiane account (the IBAN of a conto corrente postale).
    Postal(Iban),
    RevenueStamp(RevenueStamp),
}

/// One beneficiary's share of an instalment (trasferimento).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// `idTransfer`, 1..=5.
    pub id: u8,
    pub beneficiary: EntityFiscalCode,
    pub target: TransferTarget,
    pub amount: Cents,
    pub remittance: String,
    /// Taxonomy category (`transferCategory`), e.g. `9/0101108TS/`.
    pub category: String,
    #[serde(default)]
    pub metadata: Vec<Metadata>,
}

/// One payable notice (rata). A single payment is a plan of one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instalment {
    pub nav: Nav,
    pub iuv: Iuv,
    pub amount: Cents,
    pub due: Date,
    pub description: String,
    pub transfers: Vec<Transfer>,
    #[serde(default)]
    pub metadata: Vec<Metadata>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptionKind {
    /// Pay everything with one notice (unica soluzione).
    Single,
    /// Pay by instalments (piano rateale).
    Plan,
}

/// One way of paying the position: a single payment or an instalment plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOption {
    pub kind: OptionKind,
    pub instalments: Vec<Instalment>,
}

/// A debt position as the authority describes it (posizione debitoria).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionData {
    pub iupd: Iupd,
    /// The authority's own type of debt: TARI, canteen, fine, …
    pub kind: String,
    pub debtor: Debtor,
    pub description: String,
    /// Payable from this day on (none: at once).
    #[serde(default)]
    pub validity: Option<Date>,
    /// Not payable after this day (none: until paid).
    #[serde(default)]
    pub expiry: Option<Date>,
    pub options: Vec<PaymentOption>,
}

/// The one rule for free text, everywhere: at most `max` characters, not blank when required, and
/// no control characters (a newline would forge log lines; a NUL or an escape reaches the node's
/// XML and the offices' spreadsheets).
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ModelError> {
    if required && value.trim().is_empty() {
        return Err(ModelError::new(field, "must not be empty"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(ModelError::new(
            field,
            format!("at most {max} characters, found {len}"),
        ));
    }
    if let Some((at, c)) = value.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(ModelError::new(
            field,
            format!(
                "contains a control character (U+{:04X}) at character {}: one line of \
                 printable text",
                u32::from(c),
                at + 1
            ),
        ));
    }
    Ok(())
}

impl Debtor {
    /// The lengths of pagoPA's `ctSubject`; a country is two capital letters (ISO 3166), an
    /// Italian province too; an e-mail is one address.
    pub fn validate(&self, field: &str) -> Result<(), ModelError> {
        let optional = |name: &str, value: &Option<String>, max: usize| match value {
            Some(v) => text(&format!("{field}.{name}"), v, max, false),
            None => Ok(()),
        };
        let two_capitals = |v: &str| v.len() == 2 && v.chars().all(|c| c.is_ascii_uppercase());
        text(&format!("{field}.name"), &self.name, 70, true)?;
        optional("street", &self.street, 70)?;
        optional("postal_code", &self.postal_code, 16)?;
        optional("city", &self.city, 35)?;
        optional("province", &self.province, 35)?;
        optional("country", &self.country, 2)?;
        optional("email", &self.email, 256)?;
        if let Some(country) = self.country.as_deref().filter(|c| !two_capitals(c)) {
            return Err(ModelError::new(
                format!("{field}.country"),
                format!("{country:?} is not a country code: two capital letters, e.g. IT"),
            ));
        }
        let italian = self.country.as_deref().is_none_or(|c| c == "IT");
        if let Some(province) = self
            .province
            .as_deref()
            .filter(|p| italian && !two_capitals(p))
        {
            return Err(ModelError::new(
                format!("{field}.province"),
                format!("{province:?} is not an Italian province: two capital letters, e.g. AN"),
            ));
        }
        if let Some(email) = &self.email {
            let shaped = email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !host.contains('@')
            });
            if !shaped || email.chars().any(char::is_whitespace) {
                return Err(ModelError::new(
                    format!("{field}.email"),
                    format!("{email:?} is not an e-mail address"),
                ));
            }
        }
        Ok(())
    }
}

fn metadata(field: &str, items: &[Metadata]) -> Result<(), ModelError> {
    if items.len() > MAX_METADATA {
        return Err(ModelError::new(
            field,
            format!("at most {MAX_METADATA} entries, found {}", items.len()),
        ));
    }
    for (i, m) in items.iter().enumerate() {
        text(&format!("{field}[{i}].key"), &m.key, MAX_TEXT, true)?;
        text(&format!("{field}[{i}].value"), &m.value, MAX_TEXT, true)?;
    }
    Ok(())
}

/// The smallest notice number that appears more than once.
fn duplicate_nav<'a>(instalments: impl Iterator<Item = &'a Instalment>) -> Option<&'a Nav> {
    let mut navs: Vec<&Nav> = instalments.map(|i| &i.nav).collect();
    navs.sort();
    navs.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl Transfer {
    fn validate(&self, field: &str, position: usize) -> Result<(), ModelError> {
        if usize::from(self.id) != position + 1 {
            return Err(ModelError::new(
                format!("{field}.id"),
                format!(
                    "transfers are numbered 1..5 in order: expected {}",
                    position + 1
                ),
            ));
        }
        // `<=`: `Cents.0` is public, so a negative amount can be built without parsing.
        if self.amount <= Cents::ZERO {
            return Err(ModelError::new(
                format!("{field}.amount"),
                "must be greater than zero",
            ));
        }
        text(
            &format!("{field}.remittance"),
            &self.remittance,
            MAX_TEXT,
            true,
        )?;
        text(&format!("{field}.category"), &self.category, MAX_TEXT, true)?;
        metadata(&format!("{field}.metadata"), &self.metadata)?;
        match &self.target {
            TransferTarget::Postal(iban) if !iban.is_postal() => Err(ModelError::new(
                format!("{field}.target"),
                format!("{iban} is not a Poste Italiane account (ABI 07601)"),
            )),
            TransferTarget::RevenueStamp(s) => {
                text(
                    &format!("{field}.target.stamp_type"),
                    &s.stamp_type,
                    2,
                    true,
                )?;
                text(
                    &format!("{field}.target.document_hash"),
                    &s.document_hash,
                    72,
                    true,
                )?;
                if s.province.len() != 2 || !s.province.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(ModelError::new(
                        format!("{field}.target.province"),
                        "must be two capital letters",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Instalment {
    /// Checks one instalment: identifiers agree, 1..=5 transfers, Σ transfers = amount,
    /// the first transfer goes to the authority itself.
    pub fn validate(&self, field: &str, entity: &EntityFiscalCode) -> Result<(), ModelError> {
        if self.nav.iuv() != self.iuv {
            return Err(ModelError::new(
                format!("{field}.iuv"),
                format!(
                    "{} does not match the notice number {} (expected {})",
                    self.iuv,
                    self.nav,
                    self.nav.iuv()
                ),
            ));
        }
        if self.amount <= Cents::ZERO {
            return Err(ModelError::new(
                format!("{field}.amount"),
                "must be greater than zero",
            ));
        }
        // pagoPA's dates are xsd:date with four-digit years; the node refuses the rest.
        if !(MIN_YEAR..=MAX_YEAR).contains(&self.due.year()) {
            return Err(ModelError::new(
                format!("{field}.due"),
                format!(
                    "{} is not a date pagoPA accepts (years {MIN_YEAR}..{MAX_YEAR})",
                    self.due
                ),
            ));
        }
        text(
            &format!("{field}.description"),
            &self.description,
            MAX_TEXT,
            true,
        )?;
        metadata(&format!("{field}.metadata"), &self.metadata)?;
        if self.transfers.is_empty() || self.transfers.len() > MAX_TRANSFERS {
            return Err(ModelError::new(
                format!("{field}.transfers"),
                format!(
                    "between 1 and {MAX_TRANSFERS} transfers, found {}",
                    self.transfers.len()
                ),
            ));
        }
        for (i, t) in self.transfers.iter().enumerate() {
            t.validate(&format!("{field}.transfers[{i}]"), i)?;
        }
        if &self.transfers[0].beneficiary != entity {
            return Err(ModelError::new(
                format!("{field}.transfers[0].beneficiary"),
                format!(
                    "the first transfer must go to the creditor entity {entity}, not {}",
                    self.transfers[0].beneficiary
                ),
            ));
        }
        let total = Cents::sum(self.transfers.iter().map(|t| t.amount)).ok_or_else(|| {
            ModelError::new(format!("{field}.transfers"), "sum of amounts overflows")
        })?;
        if total != self.amount {
            return Err(ModelError::new(
                format!("{field}.transfers"),
                format!(
                    "transfer amounts add up to {total}, the instalment amount is {}",
                    self.amount
                ),
            ));
        }
        Ok(())
    }
}

impl PaymentOption {
    pub fn validate(&self, field: &str, entity: &EntityFiscalCode) -> Result<(), ModelError> {
        match (self.kind, self.instalments.len()) {
            (_, 0) => Err(ModelError::new(
                format!("{field}.instalments"),
                "at least one instalment",
            )),
            (OptionKind::Single, n) if n > 1 => Err(ModelError::new(
                format!("{field}.instalments"),
                format!("a single payment has exactly one instalment, found {n}"),
            )),
            _ => {
                for (i, inst) in self.instalments.iter().enumerate() {
                    inst.validate(&format!("{field}.instalments[{i}]"), entity)?;
                }
                // A rescheduling plan is validated on its own, without `PositionData::validate`,
                // so the option itself must not repeat a notice number.
                if let Some(dup) = duplicate_nav(self.instalments.iter()) {
                    return Err(ModelError::new(
                        format!("{field}.instalments"),
                        format!("notice number {dup} appears twice"),
                    ));
                }
                Ok(())
            }
        }
    }
}

impl PositionData {
    /// Checks every rule that does not depend on the store (NAV ownership and uniqueness across
    /// positions are the store's).
    pub fn validate(&self, entity: &EntityFiscalCode) -> Result<(), ModelError> {
        text("kind", &self.kind, 35, true)?;
        text("description", &self.description, MAX_TEXT, true)?;
        self.debtor.validate("debtor")?;
        if let (Some(from), Some(to)) = (self.validity, self.expiry)
            && to < from
        {
            return Err(ModelError::new(
                "expiry",
                format!("{to} is before the validity date {from}"),
            ));
        }
        if self.options.is_empty() {
            return Err(ModelError::new("options", "at least one payment option"));
        }
        for (i, option) in self.options.iter().enumerate() {
            option.validate(&format!("options[{i}]"), entity)?;
        }
        if let Some(dup) = duplicate_nav(self.instalments()) {
            return Err(ModelError::new(
                "options",
                format!("notice number {dup} appears twice"),
            ));
        }
        // An instalment due after the position expires would be born expired.
        if let Some(expiry) = self.expiry {
            for (o, option) in self.options.iter().enumerate() {
                for (i, inst) in option.instalments.iter().enumerate() {
                    if inst.due > expiry {
                        return Err(ModelError::new(
                            format!("options[{o}].instalments[{i}].due"),
                            format!("{} is after the position's expiry {expiry}", inst.due),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn instalments(&self) -> impl Iterator<Item = &Instalment> {
        self.options.iter().flat_map(|o| o.instalments.iter())
    }
}
