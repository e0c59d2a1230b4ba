//! The treasurer's giornale di cassa as CSV, read into movements through the entity's column
//! mapping (`[entities.treasury_csv]`): a column by its header's name or its number from 1.
//! Amounts in Italian or plain form (`1.234,56`, `1234.56`, `-12,00`), dates `YYYY-MM-DD` or
//! `DD/MM/YYYY` (or the configured format), a sign column (D/C, DARE/AVERE, +/-) or the
//! amount's own sign. A row that cannot be read is set aside with its line and field and never
//! blocks the others. Pure: no IO.

use jiff::civil::Date;
use mpay_common::money::Cents;
use mpay_common::reconcile::{BadRow, Movement};

use super::camt::Statement;
use crate::config::TreasuryCsv;

/// Where each field is in a row.
struct Columns {
    date: usize,
    amount: usize,
    sign: Option<usize>,
    remittance: usize,
    reference: Option<usize>,
    account: Option<usize>,
}

/// The column `spec` names: a header's name (any case) or a number from 1.
fn column(spec: &str, header: Option<&csv::StringRecord>, key: &str) -> Result<usize, String> {
    if let Ok(n) = spec.trim().parse::<usize>() {
        return n
            .checked_sub(1)
            .ok_or_else(|| format!("treasury_csv.{key}: columns count from 1"));
    }
    let header = header.ok_or_else(|| {
        format!("treasury_csv.{key}: {spec:?} is a name, and the layout has no header row")
    })?;
    header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(spec.trim()))
        .ok_or_else(|| {
            format!(
                "treasury_csv.{key}: no column {spec:?} in the header ({})",
                header.iter().collect::<Vec<_>>().join(", ")
            )
        })
}

/// An amount as Italian offices and banks write it; cents, signed.
pub fn amount(text: &str) -> Option<i64> {
    let t: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '€')
        .collect();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    // With a comma, the comma is the decimal separator and dots group thousands; without
    // one, dots before groups of three digits group thousands too (`1.000`).
    let grouped = digits.contains('.') && digits.split('.').skip(1).all(|g| g.len() == 3);
    let plain = if digits.contains(',') {
        digits.replace('.', "").replace(',', ".")
    } else if grouped {
        digits.replace('.', "")
    } else {
        digits.to_owned()
    };
    let cents = Cents::parse_api(&plain).ok()?.get();
    Some(if negative { -cents } else { cents })
}

fn date(text: &str, format: Option<&str>) -> Option<Date> {
    let t = text.trim();
    match format {
        Some(f) => Date::strptime(f, t).ok(),
        None => t
            .parse::<Date>()
            .ok()
            .or_else(|| Date::strptime("%d/%m/%Y", t).ok())
            .or_else(|| Date::strptime("%d-%m-%Y", t).ok()),
    }
}

/// `Some(true)` for a debit, `Some(false)` for a credit.
fn debit(text: &str) -> Option<bool> {
    match text.trim().to_ascii_uppercase().as_str() {
        "D" | "DARE" | "-" | "DBIT" | "ADDEBITO" | "USCITA" => Some(true),
        "C" | "A" | "AVERE" | "+" | "CRDT" | "ACCREDITO" | "ENTRATA" => Some(false),
        _ => None,
    }
}

/// A short stable digest, for the statement's id and references the file does not give.
fn digest(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a giornale di cassa; `default_account` is the entity's account for files without an
/// account column. `Err` (as `field: reason`) when the layout does not fit the file.
pub fn parse(text: &str, layout: &TreasuryCsv, default_account: &str) -> Result<Statement, String> {
    let delimiter = layout.delimiter.as_bytes().first().copied().unwrap_or(b';');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(layout.header)
        .flexible(true)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let header = if layout.header {
        Some(
            reader
                .headers()
                .map_err(|e| format!("document: the header row cannot be read: {e}"))?
                .clone(),
        )
    } else {
        None
    };
    let h = header.as_ref();
    let optional =
        |spec: &Option<String>, key| spec.as_deref().map(|s| column(s, h, key)).transpose();
    let cols = Columns {
        date: column(&layout.date, h, "date")?,
        amount: column(&layout.amount, h, "amount")?,
        sign: optional(&layout.sign, "sign")?,
        remittance: column(&layout.remittance, h, "remittance")?,
        reference: optional(&layout.reference, "reference")?,
        account: optional(&layout.account, "account")?,
    };
    let mut movements = Vec::new();
    let mut bad_entries = Vec::new();
    let mut seen = std::collections::HashMap::<String, u32>::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 1 + usize::from(layout.header);
        let bad = |field: &str, reason: String| BadRow {
            row: line,
            field: field.to_owned(),
            reason,
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                bad_entries.push(bad("row", format!("cannot be read: {e}")));
                continue;
            }
        };
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let get = |n: usize| record.get(n).unwrap_or("").trim();
        let Some(booked) = date(get(cols.date), layout.date_format.as_deref()) else {
            bad_entries.push(bad(
                &layout.date,
                format!("{:?} is not a date", get(cols.date)),
            ));
            continue;
        };
        let Some(mut cents) = amount(get(cols.amount)) else {
            bad_entries.push(bad(
                &layout.amount,
                format!("{:?} is not an amount", get(cols.amount)),
            ));
            continue;
        };
        if let Some(s) = cols.sign {
            match debit(get(s)) {
                Some(true) => cents = -cents.abs(),
                Some(false) => cents = cents.abs(),
                None => {
                    let field = layout.sign.as_deref().unwrap_or("sign");
                    bad_entries.push(bad(field, format!("{:?}: D/C, DARE/AVERE or +/-", get(s))));
                    continue;
                }
            }
        }
        let remittance = get(cols.remittance).to_owned();
        let account = cols
            .account
            .map(get)
            .filter(|a| !a.is_empty())
            .unwrap_or(default_account)
            .to_owned();
        let reference = match cols.reference.map(get).filter(|r| !r.is_empty()) {
            Some(r) => r.to_owned(),
            None => {
                // The same movement in a later export gets the same reference; two identical
                // ones on a day are told apart by their order.
                let base = digest(&[&booked.to_string(), &cents.to_string(), &remittance]);
                let n = seen.entry(base.clone()).or_default();
                *n += 1;
                format!("ROW-{base}-{n}")
            }
        };
        movements.push(Movement {
            account,
            booked,
            value_date: None,
            amount: cents,
            reference,
            remittance,
        });
    }
    if movements.is_empty() && bad_entries.is_empty() {
        return Err("document: no movements".into());
    }
    Ok(Statement {
        message_id: format!("CSV-{}", digest(&[text])),
        movements,
        bad_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> TreasuryCsv {
        TreasuryCsv::usual()
    }

    #[test]
    fn rows_become_movements_through_the_mapping() {
        let text = "Data contabile;Importo;Segno;Causale;Riferimento\n\
                    28/11/2026;1.234,56;A;/PUR/LGPE-RIVERSAMENTO/URI/2026-11-27BCITITMM-0001;SOP-1\n\
                    2026-11-28;12,00;D;COMMISSIONI;SOP-2\n\
                    31/02/2026;5,00;A;?;SOP-3\n\
                    28/11/2026;abc;A;?;SOP-4\n\
                    28/11/2026;7,00;X;?;SOP-5\n\
                    \n\
                    28/11/2026;30,00;A;RIMBORSO;\n";
        let s = parse(text, &layout(), "IT92R0306902117100000046111").expect("read");
        assert_eq!(s.movements.len(), 3);
        let m = &s.movements[0];
        assert_eq!(
            (m.amount, m.reference.as_str(), m.booked),
            (123_456, "SOP-1", jiff::civil::date(2026, 11, 28))
        );
        assert_eq!(m.account, "IT92R0306902117100000046111");
        assert_eq!(s.movements[1].amount, -1_200);
        assert!(s.movements[2].reference.starts_with("ROW-"));
        let bad: Vec<(usize, &str)> = s
            .bad_entries
            .iter()
            .map(|b| (b.row, b.field.as_str()))
            .collect();
        assert_eq!(bad, [(4, "Data contabile"), (5, "Importo"), (6, "Segno")]);
        // The same file again: the same ids.
        let again = parse(text, &layout(), "IT92R0306902117100000046111").expect("read");
        assert_eq!(again.message_id, s.message_id);
        assert_eq!(again.movements[2].reference, s.movements[2].reference);
    }

    #[test]
    fn a_layout_that_does_not_fit_says_which_key() {
        let mut l = layout();
        l.amount = "Euro".into();
        let e = parse("Data contabile;Importo\n", &l, "IT").expect_err("no such column");
        assert!(e.starts_with("treasury_csv.amount"), "{e}");
        l.amount = "2".into();
        l.header = false;
        l.date = "1".into();
        l.sign = None;
        l.reference = None;
        l.remittance = "3".into();
        let s = parse("2026-11-28;-4,50;spese\n", &l, "IT").expect("numbers");
        assert_eq!(s.movements[0].amount, -450);
        assert_eq!(amount("+1.000"), Some(100_000));
        assert_eq!(amount("€ 2,5"), Some(250));
    }
}
