//! The services: the daemon's logic, in plain Rust, behind every interface. The REST API, the
//! station's SOAP, the inbox files and the console's RPC are adapters that translate their
//! requests into these calls and the `ServiceError`s back into their own answers; no rule lives
//! in an adapter (DESIGN.md invariant 8).
//!
//! - `console`: what the operators' console asks: lookups by any key, search by typed text,
//!   status, the live feed, traffic, jobs, audit, and audited manual adjustments.
//! - `flows`: reporting flows received, stored with their ledger facts, classified row by row.
//! - `positions`: load (one path for the API and bulk files), read, and every variation.
//! - `report`: each entity's daily report (CSV and JSON, outbox and API).
//! - `search`: one entity's positions by status, debtor, kind and due dates.
//! - `statements`: the citizen statement, per entity or across entities.
//! - `treasury`: treasury statements (camt.053): movements stored once, classified, and the
//!   credit facts of the flows they settle.
//! - `worklist`: what reconciliation says needs a look.
//!
//! The calls block on the store: async adapters run them in `spawn_blocking`.

pub mod console;
pub mod flows;
pub mod positions;
pub mod report;
pub mod runs;
pub mod search;
pub mod statements;
#[cfg(test)]
mod tests;
pub mod treasury;
pub mod worklist;

use mpay_common::ledger::LedgerError;
use mpay_common::model::ModelError;

use crate::store::{StoreError, WriteError};

/// What kind of refusal or failure; each adapter maps it to its own status (HTTP, RPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: `field` says where.
    Invalid,
    /// What the request names does not exist (for this entity).
    NotFound,
    /// The request is valid but the state forbids it (a paid notice, a taken number).
    Conflict,
    /// The store cannot write now (a failed flush, closing).
    Unavailable,
    /// A fault of ours: a corrupt value, a failed task.
    Internal,
}

/// Why a service refused or failed. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// A stable code that programs act on (listed in the OpenAPI document's `Error`).
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, as a path (`options[0].instalments[1].amount`).
    pub field: Option<String>,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Invalid, "INVALID_FIELD", message).at(field)
    }

    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::NotFound, "NOT_FOUND", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Conflict, code, message)
    }

    /// The same error, naming `field`.
    pub fn at(mut self, field: impl Into<String>) -> ServiceError {
        self.field = Some(field.into());
        self
    }

    fn at_opt(self, field: Option<&str>) -> ServiceError {
        match field {
            Some(f) => self.at(f),
            None => self,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ServiceError {
        self.code = code;
        self
    }

    /// A ledger refusal. `nav_field` names the request field that carried the notice numbers
    /// the refusal is about (the URL's for reductions and payments, `replaced` for plans).
    pub fn ledger(e: LedgerError, nav_field: Option<&str>) -> ServiceError {
        let message = e.to_string();
        let conflict = |code| ServiceError::conflict(code, message.clone());
        let field = |field: &str, code| ServiceError::field(field, message.clone()).with_code(code);
        match &e {
            LedgerError::Invalid(m) => ServiceError::field(m.field.clone(), m.reason.clone()),
            LedgerError::NotAReduction { .. } => field("new_amount", "NOT_A_REDUCTION"),
            LedgerError::BadReduction { .. } => field("transfer_amounts", "BAD_REDUCTION"),
            LedgerError::ZeroPayment(_) => field("amount", "ZERO_PAYMENT"),
            LedgerError::BadSplit { .. } => field("transfer_amounts", "BAD_SPLIT"),
            LedgerError::ReferenceReused { .. } => conflict("REFERENCE_REUSED").at("reference"),
            LedgerError::NothingOpen(_) => conflict("NOTICE_PAID").at_opt(nav_field),
            LedgerError::OtherOption(_) => conflict("OTHER_OPTION").at_opt(nav_field),
            LedgerError::TwoOptions(_) => conflict("TWO_OPTIONS").at_opt(nav_field),
            LedgerError::PaidInFull => conflict("POSITION_PAID"),
            LedgerError::NothingReplaced => field("replaced", "NOTHING_REPLACED"),
            LedgerError::UnknownNav(_) => match nav_field {
                Some(f) => field(f, "UNKNOWN_NOTICE"),
                None => ServiceError::not_found(message.clone()).with_code("UNKNOWN_NOTICE"),
            },
            LedgerError::UnknownTransfer { .. } => field("transfer", "UNKNOWN_TRANSFER"),
            LedgerError::AlreadyPaid(_) => conflict("NOTICE_PAID").at_opt(nav_field),
            LedgerError::NotPayable(_) => conflict("NOTICE_NOT_PAYABLE").at_opt(nav_field),
            LedgerError::NavReused(_) => conflict("NAV_REUSED").at("instalments"),
            LedgerError::IupdChanged { .. } => field("iupd", "IUPD_CHANGED"),
            LedgerError::PositionCancelled => conflict("POSITION_CANCELLED"),
            LedgerError::NotCancelled => conflict("NOT_CANCELLED"),
            LedgerError::HasPayments(_) => conflict("HAS_PAYMENTS"),
            LedgerError::HasVariations => conflict("HAS_VARIATIONS"),
            LedgerError::NotLoaded(_) | LedgerError::AlreadyLoaded => conflict("CONFLICT"),
        }
    }

    /// A store write that was not made; see `ledger` for `nav_field`.
    pub fn write(e: WriteError, nav_field: Option<&str>) -> ServiceError {
        match e {
            WriteError::Rejected(l) => ServiceError::ledger(l, nav_field),
            WriteError::Exists(_) => {
                ServiceError::conflict("POSITION_EXISTS", e.to_string()).at("iupd")
            }
            WriteError::NavTaken { .. } => {
                ServiceError::conflict("NAV_TAKEN", e.to_string()).at_opt(nav_field)
            }
            WriteError::Conflict(reason) => ServiceError::conflict("CONFLICT", reason),
            WriteError::NotFound => ServiceError::not_found("no such position"),
            WriteError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store: {e}");
        match e {
            StoreError::Unavailable(_) => {
                ServiceError::new(ErrorKind::Unavailable, "UNAVAILABLE", e.to_string())
            }
            _ => ServiceError::new(ErrorKind::Internal, "INTERNAL", e.to_string()),
        }
    }
}

impl From<WriteError> for ServiceError {
    fn from(e: WriteError) -> Self {
        ServiceError::write(e, None)
    }
}

impl From<ModelError> for ServiceError {
    fn from(e: ModelError) -> Self {
        ServiceError::field(e.field, e.reason)
    }
}
