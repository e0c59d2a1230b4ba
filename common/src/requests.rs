//! What a caller asks of the position services, in the shape the REST API and the console send
//! it: the model with the parts mpay can fill in made optional (notice numbers, transfer ids,
//! beneficiaries and accounts), and the variations.
//!
//! Identifiers, amounts and dates use the domain types, so a bad value is refused while the body
//! is read, with the path of the field. Amounts are integer cents or strings such as "12.34".

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{DebtorCode, EntityFiscalCode, Iuv, Nav};
use crate::ledger::{OfflineChannel, PositionStatus};
use crate::model::{Debtor, Metadata, OptionKind, TransferTarget};
use crate::money::Cents;

/// A position as an authority loads it (`PUT /positions/{iupd}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionIn {
    pub kind: String,
    pub debtor: Debtor,
    pub description: String,
    #[serde(default)]
    pub validity: Option<Date>,
    #[serde(default)]
    pub expiry: Option<Date>,
    pub options: Vec<OptionIn>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionIn {
    pub kind: OptionKind,
    pub instalments: Vec<InstalmentIn>,
}

/// An instalment; without `nav` (and `iuv`) mpay numbers it from the entity's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalmentIn {
    #[serde(default)]
    pub nav: Option<Nav>,
    #[serde(default)]
    pub iuv: Option<Iuv>,
    pub amount: Cents,
    pub due: Date,
    pub description: String,
    /// Required in a load. In a rescheduling, leave it empty and each beneficiary keeps its
    /// share of what the plan replaces.
    #[serde(default)]
    pub transfers: Vec<TransferIn>,
    #[serde(default)]
    pub metadata: Vec<Metadata>,
}

/// A transfer; `id` defaults to its position (1..5), `beneficiary` to the entity, `target` to the
/// beneficiary's first configured account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    #[serde(default)]
    pub id: Option<u8>,
    #[serde(default)]
    pub beneficiary: Option<EntityFiscalCode>,
    #[serde(default)]
    pub target: Option<TransferTarget>,
    pub amount: Cents,
    pub remittance: String,
    pub category: String,
    #[serde(default)]
    pub metadata: Vec<Metadata>,
}

/// Body of cancel and restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    pub reason: String,
}

/// Sgravio: the instalment's new amount; `transfer_amounts` default to each transfer keeping
/// its share (revenue stamps untouched).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReductionIn {
    pub new_amount: Cents,
    pub act: String,
    pub reason: String,
    #[serde(default)]
    pub transfer_amounts: Option<Vec<Cents>>,
}

/// Money collected outside pagoPA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflinePaymentIn {
    pub channel: OfflineChannel,
    pub date: Date,
    pub amount: Cents,
    /// Identifies the payment within the position with `channel`: the same payment posted
    /// again changes nothing.
    pub reference: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The amount's split over the notice's transfers; by default in proportion to what is
    /// open on each.
    #[serde(default)]
    pub transfer_amounts: Option<Vec<Cents>>,
}

/// Rateizzazione: `replaced` notices stop being payable, `instalments` become a new plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescheduleIn {
    pub replaced: Vec<Nav>,
    pub instalments: Vec<InstalmentIn>,
    pub reason: String,
    /// The administrative act that grants a plan for another total than what it replaces
    /// (interest, a reduction); without it the plan must total what is open on them.
    #[serde(default)]
    pub act: Option<String>,
}

/// A search among one entity's positions: every filter given must hold. Results come in the
/// order positions were created, `limit` at a time; `after` is the previous page's `next`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PositionQuery {
    pub status: Option<PositionStatus>,
    pub debtor: Option<DebtorCode>,
    pub kind: Option<String>,
    /// Some instalment falls due on or after this day…
    pub due_from: Option<Date>,
    /// …and on or before this one.
    pub due_to: Option<Date>,
    pub limit: Option<usize>,
    pub after: Option<u64>,
}
