//! Reconciliation (DESIGN.md §5), pure: the reporting flows PSPs send, and how each of their rows
//! stands against the positions and their receipts. No IO: the daemon finds the positions and
//! stores the flows; the same inputs always give the same classes, whatever order they came in.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::{Iupd, Nav};
use crate::ledger::{Arrival, InstalmentState, Position};
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

/// How long reporting and crediting may take before a transfer is an anomaly (days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tolerances {
    /// From the payment to its flow row (pagoPA: D+2 working days, revisions until D+4).
    pub report_days: i32,
    /// From the flow to the treasury's credit (counted from the payment, after `report_days`).
    pub credit_days: i32,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            report_days: 4,
            credit_days: 3,
        }
    }
}

/// Where one transfer of a notice stands, from the payer's side to the treasury's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferClass {
    /// Nothing paid through pagoPA on it.
    NotPaidViaPagoPa,
    /// Paid, reported and credited.
    Reconciled,
    /// Paid; the flow may still come (within the tolerance).
    WaitingForReport,
    /// Paid and reported; the credit may still come.
    WaitingForCredit,
    /// Paid, and no flow reported it within the tolerance.
    NotReported,
    /// Reported, and no credit within the tolerance.
    NotCredited,
    /// The flows report another amount than the receipts paid.
    AmountMismatch,
    /// More was received than is owed: a refund is due.
    RefundDue,
}

impl TransferClass {
    pub fn is_anomaly(self) -> bool {
        matches!(
            self,
            TransferClass::NotReported
                | TransferClass::NotCredited
                | TransferClass::AmountMismatch
                | TransferClass::RefundDue
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TransferClass::NotPaidViaPagoPa => "not-paid-via-pagopa",
            TransferClass::Reconciled => "reconciled",
            TransferClass::WaitingForReport => "waiting-for-report",
            TransferClass::WaitingForCredit => "waiting-for-credit",
            TransferClass::NotReported => "not-reported",
            TransferClass::NotCredited => "not-credited",
            TransferClass::AmountMismatch => "amount-mismatch",
            TransferClass::RefundDue => "refund-due",
        }
    }
}

/// The class of transfer `slot` of `inst` (of option `option`) on `today`.
pub fn classify_transfer(
    p: &Position,
    option: usize,
    inst: &InstalmentState,
    slot: usize,
    today: Date,
    tolerances: Tolerances,
) -> TransferClass {
    let account = p.account_of(option, inst);
    if account.refund().get(slot).is_some_and(|r| *r > Cents::ZERO) {
        return TransferClass::RefundDue;
    }
    let mut paid = 0i64;
    let mut last_paid: Option<Date> = None;
    for pay in inst.receipts() {
        paid += pay.transfers.get(slot).map_or(0, |c| c.get());
        if let crate::ledger::PaidVia::PagoPa { paid_at, .. } = &pay.via {
            let day = crate::calendar::rome_date(*paid_at);
            last_paid = Some(last_paid.map_or(day, |d: Date| d.max(day)));
        }
    }
    if paid == 0 {
        return TransferClass::NotPaidViaPagoPa;
    }
    let id = inst.terms.transfers.get(slot).map_or(0, |t| t.id);
    let reported: i64 = inst
        .reports
        .iter()
        .filter(|r| r.transfer == id)
        .map(|r| r.amount)
        .sum();
    let credited = inst.credited.get(slot).map_or(0, |c| c.get());
    let days_since = |d: Date| (today - d).get_days();
    if reported == 0 {
        let late = last_paid.is_some_and(|d| days_since(d) > tolerances.report_days);
        return if late {
            TransferClass::NotReported
        } else {
            TransferClass::WaitingForReport
        };
    }
    if reported != paid {
        return TransferClass::AmountMismatch;
    }
    if credited >= paid {
        return TransferClass::Reconciled;
    }
    // The credit follows the flow, which follows the payment: both tolerances from the payment.
    let late =
        last_paid.is_some_and(|d| days_since(d) > tolerances.report_days + tolerances.credit_days);
    if late {
        TransferClass::NotCredited
    } else {
        TransferClass::WaitingForCredit
    }
}

/// What a treasury movement's remittance text (AT-05) says it is (PROTOCOL.md §11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remittance {
    /// `/PUR/LGPE-RIVERSAMENTO/[TXT/<prog>/]URI/<flow id>`: a flow's cumulative credit.
    Flow { id: String, prog: u8 },
    /// `/RFB/<IUV>[/<amount>]` or `/RFS/<RF…>[/<amount>]`: one payment.
    Single { iuv: String },
    /// Nothing pagoPA in it.
    Unknown,
}

/// The flow a credit names, if it is a credit and names one.
pub fn credited_flow(m: &Movement) -> Option<String> {
    match parse_remittance(&m.remittance) {
        Remittance::Flow { id, .. } if m.amount > 0 => Some(id),
        _ => None,
    }
}

/// Reads a remittance text tolerantly: the markers are searched, not anchored, in any case,
/// and any one character may stand for a separator, as banks mangle them.
pub fn parse_remittance(text: &str) -> Remittance {
    let upper = text.to_ascii_uppercase();
    let chars: Vec<char> = text.chars().collect();
    let upper_chars: Vec<char> = upper.chars().collect();
    let find = |from: usize, word: &str| -> Option<usize> {
        let w: Vec<char> = word.chars().collect();
        (from..upper_chars.len().saturating_sub(w.len() - 1))
            .find(|&i| upper_chars[i..i + w.len()] == w[..])
    };
    let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if let Some(at) = find(0, "LGPE-RIVERSAMENTO") {
        let mut i = at + "LGPE-RIVERSAMENTO".len() + 1;
        let mut prog = 0;
        if upper_chars.get(i..i + 3) == Some(&['T', 'X', 'T'][..]) {
            prog = chars
                .get(i + 4)
                .and_then(|c| c.to_digit(10))
                .and_then(|d| u8::try_from(d).ok())
                .unwrap_or(0);
            i += 6;
        }
        if upper_chars.get(i..i + 3) == Some(&['U', 'R', 'I'][..]) {
            let id: String = chars
                .iter()
                .skip(i + 4)
                .take_while(|c| id_char(**c))
                .take(35)
                .collect();
            // A flow id starts with its settlement date.
            if id.len() > 10 && id.as_bytes()[4] == b'-' && id.as_bytes()[7] == b'-' {
                return Remittance::Flow { id, prog };
            }
        }
    }
    for marker in ["RFB", "RFS"] {
        if let Some(at) = find(0, marker) {
            let iuv: String = chars
                .iter()
                .skip(at + 4)
                .skip_while(|c| **c == ' ')
                .take_while(|c| c.is_ascii_alphanumeric() || **c == ' ')
                .filter(|c| **c != ' ')
                .collect();
            if iuv.len() >= 15 {
                return Remittance::Single { iuv };
            }
        }
    }
    Remittance::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remittance_texts_are_read_through_what_banks_do_to_them() {
        let flow = |id: &str, prog| Remittance::Flow {
            id: id.into(),
            prog,
        };
        assert_eq!(
            parse_remittance("/PUR/LGPE-RIVERSAMENTO/URI/2022-02-01SELBIT2B-S003039139"),
            flow("2022-02-01SELBIT2B-S003039139", 0)
        );
        assert_eq!(
            parse_remittance(
                "/ZZ2SATISPAY EUROPE SA/ZZ3Comune/PUR/LGPE-RIVERSAMENTO/URI/2020-11-21GovPAYPsp-12/ZZ4/"
            ),
            flow("2020-11-21GovPAYPsp-12", 0)
        );
        assert_eq!(
            parse_remittance("pur lgpe-riversamento txt 2 uri 2024-05-03BCITITMM-0001"),
            flow("2024-05-03BCITITMM-0001", 2)
        );
        assert_eq!(
            parse_remittance("/RFB/01000000000000043/5.00/TXT/TARI"),
            Remittance::Single {
                iuv: "01000000000000043".into()
            }
        );
        assert_eq!(parse_remittance("STIPENDIO NOVEMBRE"), Remittance::Unknown);
        assert_eq!(
            parse_remittance("/PUR/LGPE-RIVERSAMENTO/URI/"),
            Remittance::Unknown
        );
    }
}

/// One movement of a treasury statement (a camt.053 entry, a giornale di cassa line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// The account it was booked on (IBAN).
    pub account: String,
    pub booked: Date,
    pub value_date: Option<Date>,
    /// Cents: credits positive, debits negative.
    pub amount: i64,
    /// The bank's reference for it (`AcctSvcrRef`, else `NtryRef`, else its place in the
    /// statement).
    pub reference: String,
    /// The remittance text as the bank gave it.
    pub remittance: String,
}

/// Where a treasury movement stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovementClass {
    /// A flow's credit, for the flow's total.
    FlowCredit { flow_id: String },
    /// A flow's credit for another amount than the flow's total.
    FlowCreditDiffers { flow_id: String, flow_total: Cents },
    /// It names a flow this entity does not hold (yet: the flow may come later).
    UnknownFlow { flow_id: String },
    /// One payment's credit (`/RFB/`, `/RFS/`).
    SinglePayment { iuv: String },
    /// A credit that is not a pagoPA remittance.
    NotPagoPa,
    /// Money out of the account.
    Debit,
}

impl MovementClass {
    pub fn name(&self) -> &'static str {
        match self {
            MovementClass::FlowCredit { .. } => "flow-credit",
            MovementClass::FlowCreditDiffers { .. } => "flow-credit-differs",
            MovementClass::UnknownFlow { .. } => "unknown-flow",
            MovementClass::SinglePayment { .. } => "single-payment",
            MovementClass::NotPagoPa => "not-pagopa",
            MovementClass::Debit => "debit",
        }
    }

    pub fn is_anomaly(&self) -> bool {
        matches!(
            self,
            MovementClass::FlowCreditDiffers { .. }
                | MovementClass::UnknownFlow { .. }
                | MovementClass::NotPagoPa
        )
    }
}

/// The class of `m`, given the latest revision of the flow its remittance names (if held).
///
/// A flow may be settled by more than one credit (`/TXT/1/`…`/TXT/9/`: integrative SCTs after a
/// technical anomaly), so a flow's credit is judged by `settled`, the sum of every credit naming
/// that flow (this one included): the flow's total is a credit, anything else differs.
pub fn classify_movement(m: &Movement, flow: Option<&Flow>, settled: i64) -> MovementClass {
    if m.amount < 0 {
        return MovementClass::Debit;
    }
    match parse_remittance(&m.remittance) {
        Remittance::Flow { id, .. } => match flow {
            None => MovementClass::UnknownFlow { flow_id: id },
            Some(f) if f.declared_total.get() == settled => {
                MovementClass::FlowCredit { flow_id: id }
            }
            Some(f) => MovementClass::FlowCreditDiffers {
                flow_id: id,
                flow_total: f.declared_total,
            },
        },
        Remittance::Single { iuv } => MovementClass::SinglePayment { iuv },
        Remittance::Unknown => MovementClass::NotPagoPa,
    }
}

// ---------------------------------------------------------------------------------------------
// As the interfaces show them (REST, console)

/// One row, with where it stands and the position it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowView {
    #[serde(flatten)]
    pub row: FlowRow,
    pub class: RowClass,
    pub iupd: Option<Iupd>,
    pub nav: Option<Nav>,
}

/// A flow as stored, classified now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    pub flow_id: String,
    pub time: String,
    pub received_at: Timestamp,
    pub source: String,
    /// Why the document could not be read (then there are no rows).
    pub error: Option<String>,
    /// A later revision of the same flow replaces this one for reconciliation.
    pub superseded: bool,
    pub psp: Option<String>,
    pub settlement: Option<String>,
    pub settlement_date: Option<jiff::civil::Date>,
    pub declared_rows: u64,
    pub declared_total: Cents,
    pub rows_total: Cents,
    /// The declared count and total agree with the rows (and every row could be read).
    pub totals_agree: bool,
    /// Ledger facts the flow added when it arrived.
    pub reported: u32,
    /// How many rows of each class.
    pub classes: std::collections::BTreeMap<String, usize>,
    pub anomalies: usize,
    pub rows: Vec<RowView>,
    pub bad_rows: Vec<BadRow>,
}

/// A treasury movement as stored, classified now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovementView {
    #[serde(flatten)]
    pub movement: Movement,
    pub statement: String,
    pub received_at: Timestamp,
    pub credited: u32,
    pub class: MovementClass,
}
