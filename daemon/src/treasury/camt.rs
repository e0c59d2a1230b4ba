//! camt.053 statements, read into movements. Namespace-aware (any `camt.053.001.*`), strict on
//! the document's shape, tolerant of what banks add; an entry that cannot be read is set aside
//! with its reason and never blocks the others. Pure: no IO.

use jiff::civil::Date;
use mpay_common::money::Cents;
use mpay_common::reconcile::{BadRow, Movement};

use crate::pagopa::soap::{Elem, read_tree};

/// A statement file: its id, and its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// `GrpHdr/MsgId`.
    pub message_id: String,
    pub movements: Vec<Movement>,
    pub bad_entries: Vec<BadRow>,
}

fn child<'a>(e: &'a Elem, name: &str) -> Option<&'a Elem> {
    e.children.iter().find(|c| c.local == name)
}

fn children<'a>(e: &'a Elem, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
    e.children.iter().filter(move |c| c.local == name)
}

fn path<'a>(e: &'a Elem, names: &[&str]) -> Option<&'a Elem> {
    names.iter().try_fold(e, |at, n| child(at, n))
}

fn text(e: Option<&Elem>) -> Option<String> {
    e.map(|e| e.text.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Reads a camt.053 document; `Err` says why the whole document is not one.
pub fn parse(xml: &str) -> Result<Statement, String> {
    let root = read_tree(xml).map_err(|e| format!("document: {e}"))?;
    let camt = root
        .ns
        .as_deref()
        .is_some_and(|ns| ns.starts_with("urn:iso:std:iso:20022:tech:xsd:camt.053."));
    if root.local != "Document" || !camt {
        return Err(format!(
            "document: not a camt.053 statement (root {}{})",
            root.ns
                .as_deref()
                .map(|n| format!("{{{n}}}"))
                .unwrap_or_default(),
            root.local
        ));
    }
    let report = child(&root, "BkToCstmrStmt").ok_or("document: no BkToCstmrStmt")?;
    let message_id =
        text(path(report, &["GrpHdr", "MsgId"])).ok_or("BkToCstmrStmt/GrpHdr/MsgId: missing")?;
    let mut movements = Vec::new();
    let mut bad_entries = Vec::new();
    let mut n = 0;
    for stmt in children(report, "Stmt") {
        let account = text(path(stmt, &["Acct", "Id", "IBAN"]))
            .or_else(|| text(path(stmt, &["Acct", "Id", "Othr", "Id"])))
            .unwrap_or_default();
        let statement_id = text(child(stmt, "Id")).unwrap_or_default();
        for entry in children(stmt, "Ntry") {
            n += 1;
            match movement(entry, &account, &message_id, &statement_id, n) {
                Ok(m) => movements.push(m),
                Err((field, reason)) => bad_entries.push(BadRow {
                    row: n,
                    field: format!("Ntry[{n}]/{field}"),
                    reason,
                }),
            }
        }
    }
    if n == 0 {
        return Err("BkToCstmrStmt: no statement entry (Stmt/Ntry)".into());
    }
    Ok(Statement {
        message_id,
        movements,
        bad_entries,
    })
}

fn movement(
    entry: &Elem,
    account: &str,
    message_id: &str,
    statement_id: &str,
    n: usize,
) -> Result<Movement, (String, String)> {
    let amount_text = text(child(entry, "Amt")).ok_or(("Amt".to_owned(), "missing".to_owned()))?;
    // ISO amounts have up to five decimals; money here has two.
    let amount = Cents::parse_api(&amount_text)
        .map_err(|e| ("Amt".to_owned(), format!("{amount_text:?}: {e}")))?;
    let sign = match text(child(entry, "CdtDbtInd")).as_deref() {
        Some("CRDT") => 1,
        Some("DBIT") => -1,
        other => {
            return Err(("CdtDbtInd".to_owned(), format!("{other:?}: CRDT or DBIT")));
        }
    };
    let date = |names: &[&str], field: &str| -> Result<Option<Date>, (String, String)> {
        match text(path(entry, names)).or_else(|| {
            // Some banks give a date-time.
            text(path(entry, &[names[0], "DtTm"])).map(|t| t.chars().take(10).collect())
        }) {
            None => Ok(None),
            Some(t) => t
                .parse()
                .map(Some)
                .map_err(|e| (field.to_owned(), format!("{t:?}: {e}"))),
        }
    };
    let booked =
        date(&["BookgDt", "Dt"], "BookgDt")?.ok_or(("BookgDt".to_owned(), "missing".to_owned()))?;
    let value_date = date(&["ValDt", "Dt"], "ValDt")?;
    let reference = text(child(entry, "AcctSvcrRef"))
        .or_else(|| text(child(entry, "NtryRef")))
        .unwrap_or_else(|| format!("{message_id}/{statement_id}/{n}"));
    let mut remittance = Vec::new();
    for details in children(entry, "NtryDtls") {
        for tx in children(details, "TxDtls") {
            if let Some(info) = child(tx, "RmtInf") {
                remittance.extend(children(info, "Ustrd").filter_map(|u| text(Some(u))));
            }
        }
    }
    if let Some(extra) = text(child(entry, "AddtlNtryInf")) {
        remittance.push(extra);
    }
    Ok(Movement {
        account: account.to_owned(),
        booked,
        value_date,
        amount: sign * amount.get(),
        reference,
        remittance: remittance.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn statement(entries: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt>\
             <GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>2026-11-30T07:00:00</CreDtTm></GrpHdr>\
             <Stmt><Id>1</Id><Acct><Id><IBAN>IT92R0306902117100000046111</IBAN></Id></Acct>\
             {entries}</Stmt></BkToCstmrStmt></Document>"
        )
    }

    #[test]
    fn entries_become_movements_and_a_bad_one_is_set_aside() {
        let xml = statement(
            "<Ntry><Amt Ccy=\"EUR\">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>\
             <BookgDt><Dt>2026-11-28</Dt></BookgDt><ValDt><Dt>2026-11-28</Dt></ValDt>\
             <AcctSvcrRef>TRN-1</AcctSvcrRef><NtryDtls><TxDtls><RmtInf>\
             <Ustrd>/PUR/LGPE-RIVERSAMENTO/URI/2026-11-27BCITITMM-0001</Ustrd></RmtInf>\
             </TxDtls></NtryDtls></Ntry>\
             <Ntry><Amt Ccy=\"EUR\">12,5</Amt><CdtDbtInd>DBIT</CdtDbtInd>\
             <BookgDt><Dt>2026-11-28</Dt></BookgDt></Ntry>\
             <Ntry><Amt Ccy=\"EUR\">abc</Amt><CdtDbtInd>CRDT</CdtDbtInd>\
             <BookgDt><Dt>2026-11-28</Dt></BookgDt></Ntry>",
        );
        let s = parse(&xml).expect("a statement");
        assert_eq!(s.message_id, "STMT-1");
        assert_eq!(s.movements.len(), 2);
        let m = &s.movements[0];
        assert_eq!((m.amount, m.reference.as_str()), (10_000, "TRN-1"));
        assert!(m.remittance.contains("LGPE-RIVERSAMENTO"));
        assert_eq!(s.movements[1].amount, -1_250);
        assert_eq!(s.movements[1].reference, "STMT-1/1/2");
        assert_eq!(s.bad_entries.len(), 1);
        assert_eq!(s.bad_entries[0].field, "Ntry[3]/Amt");
        assert!(parse("<Document/>").is_err());
        assert!(parse(&xml[..xml.len() / 2]).is_err(), "truncated");
    }
}
