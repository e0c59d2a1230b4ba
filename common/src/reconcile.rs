//! Reconciliation (DESIGN.md §5), pure: the reporting flows PSPs send, and how each of their rows
//! stands against the positions and their receipts. No IO: the daemon finds the positions and
//! stores the flows; the same inputs always give the same classes, whatever order they came in.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::Iuv;
use crate::ledger::{Arrival, Position};
use crate::money::Cents;

/// `codiceEsitoSingoloPagamento` (PROTOCOL.md §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowOutcome {
    /// 0: executed, a receipt exists.
    Executed,
    /// 3: revoked (refunded to the payer).
    Revoked,
    /// 4: executed while the node stood in for the station; the receipt says `standIn`.
    StandIn,
    /// 8: executed in stand-in, and no receipt reached the station.
    StandInNoReceipt,
    /// 9: executed without a receipt (late outcome, or a notice paid twice).
    NoReceipt,
}

impl RowOutcome {
    pub fn from_code(code: u8) -> Option<RowOutcome> {
        Some(match code {
            0 => RowOutcome::Executed,
            3 => RowOutcome::Revoked,
            4 => RowOutcome::StandIn,
            8 => RowOutcome::StandInNoReceipt,
            9 => RowOutcome::NoReceipt,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            RowOutcome::Executed => 0,
            RowOutcome::Revoked => 3,
            RowOutcome::StandIn => 4,
            RowOutcome::StandInNoReceipt => 8,
            RowOutcome::NoReceipt => 9,
        }
    }
}

/// One row of a flow (`datiSingoliPagamenti`): one transfer of one receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    pub iuv: String,
    /// `identificativoUnivocoRiscossione`: the receiptId.
    pub iur: String,
    /// `indiceDatiSingoloPagamento`: the transfer, 1..=5 (1 when absent).
    pub transfer: u8,
    /// Always positive; a revocation says so in `outcome`.
    pub amount: Cents,
    pub outcome: RowOutcome,
    pub date: Date,
}

/// A reporting flow (FlussoRiversamento), parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// `identificativoFlusso`: unique per PSP and year, reused only by a revision.
    pub id: String,
    /// `dataOraFlusso` as written: a later one with the same id is a revision.
    pub time: String,
    /// `identificativoUnivocoRegolamento`: the SCT's reference.
    pub settlement: String,
    pub settlement_date: Date,
    /// The PSP: (identifier type, code, name).
    pub sender_kind: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub bic: Option<String>,
    /// The creditor entity's fiscal code.
    pub receiver: String,
    pub receiver_name: Option<String>,
    pub declared_rows: u64,
    pub declared_total: Cents,
    pub rows: Vec<FlowRow>,
    /// Rows that could not be read: kept out of `rows`, never blocking them.
    pub bad_rows: Vec<BadRow>,
}

/// A flow row that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// 1-based position of the row in the flow.
    pub row: usize,
    pub field: String,
    pub reason: String,
}

impl Flow {
    /// Σ of the rows, revocations subtracted, as the PSP computed `importoTotalePagamenti`
    /// (revocation rows count positive in the total: the XSD forbids negative amounts).
    pub fn rows_total(&self) -> i64 {
        self.rows.iter().map(|r| r.amount.get()).sum()
    }

    /// Whether the declared totals agree with the rows.
    pub fn totals_agree(&self) -> bool {
        self.bad_rows.is_empty()
            && u64::try_from(self.rows.len()).is_ok_and(|n| n == self.declared_rows)
            && self.rows_total() == self.declared_total.get()
    }
}

/// Where one flow row stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowClass {
    /// A receipt with that IUR paid this transfer the amount the row says.
    Reconciled,
    /// The receipt paid this transfer another amount.
    AmountMismatch { paid: Cents },
    /// No notice of this entity has the IUV.
    UnknownIuv,
    /// The notice has no such transfer.
    UnknownTransfer,
    /// Executed without a receipt (codes 8, 9): money arrived that no receipt announced.
    PaidWithoutReceipt,
    /// Executed (0, 4) but no receipt with that IUR was stored.
    ReportedWithoutReceipt,
    /// A revocation (code 3): money given back to the payer.
    Revoked,
    /// The same (IUV, IUR, transfer) appears earlier in the flow.
    Duplicate,
    /// The receipt found its notice not due (paid twice, cancelled, another option): refund.
    DoublePayment,
}

impl RowClass {
    /// Whether an operator has to look at it.
    pub fn is_anomaly(&self) -> bool {
        !matches!(self, RowClass::Reconciled)
    }

    /// A stable short name for lists and counts.
    pub fn name(&self) -> &'static str {
        match self {
            RowClass::Reconciled => "reconciled",
            RowClass::AmountMismatch { .. } => "amount-mismatch",
            RowClass::UnknownIuv => "unknown-iuv",
            RowClass::UnknownTransfer => "unknown-transfer",
            RowClass::PaidWithoutReceipt => "paid-without-receipt",
            RowClass::ReportedWithoutReceipt => "reported-without-receipt",
            RowClass::Revoked => "revoked",
            RowClass::Duplicate => "duplicate",
            RowClass::DoublePayment => "double-payment",
        }
    }
}

/// The class of `row`, given the position holding its IUV (if any). `duplicate`: an earlier
/// row of the same flow had the same IUV, IUR and transfer.
pub fn classify_row(row: &FlowRow, position: Option<&Position>, duplicate: bool) -> RowClass {
    if duplicate {
        return RowClass::Duplicate;
    }
    let Some(p) = position else {
        return RowClass::UnknownIuv;
    };
    let Some(inst) = p.instalments().find(|i| i.terms.iuv.as_str() == row.iuv) else {
        return RowClass::UnknownIuv;
    };
    let Some(slot) = inst
        .terms
        .transfers
        .iter()
        .position(|t| t.id == row.transfer)
    else {
        return RowClass::UnknownTransfer;
    };
    if row.outcome == RowOutcome::Revoked {
        return RowClass::Revoked;
    }
    let receipt = inst
        .receipts()
        .find(|pay| pay.receipt_id() == Some(row.iur.as_str()));
    match (receipt, row.outcome) {
        (None, RowOutcome::StandInNoReceipt | RowOutcome::NoReceipt) => {
            RowClass::PaidWithoutReceipt
        }
        (None, _) => RowClass::ReportedWithoutReceipt,
        (Some(pay), _) => {
            let paid = pay.transfers.get(slot).copied().unwrap_or(Cents::ZERO);
            if pay.arrival != Arrival::Due {
                RowClass::DoublePayment
            } else if paid != row.amount {
                RowClass::AmountMismatch { paid }
            } else {
                RowClass::Reconciled
            }
        }
    }
}

/// The IUV a row names, if it is one.
pub fn row_iuv(row: &FlowRow) -> Option<Iuv> {
    row.iuv.parse().ok()
}
