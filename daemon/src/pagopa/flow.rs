//! The reporting flow (FlussoRiversamento 1.0.4, PROTOCOL.md §8), read strictly where the
//! document as a whole is concerned (namespace, element order, header fields) and leniently
//! where PSPs are known to stray (flow ids with `:` or `.`, codes 4 and 8 that the XSD does not
//! list, negative amounts on revocations). A row that cannot be read is set aside with its
//! reason: it never blocks the other rows. Pure: no IO.

use jiff::civil::{Date, DateTime};
use mpay_common::money::Cents;
use mpay_common::reconcile::{BadRow, Flow, FlowRow, RowOutcome};

use super::soap::{Elem, read_tree};

/// The namespace of FlussoRiversamento documents.
pub const FLOW_NS: &str = "http://www.digitpa.gov.it/schemas/2011/Pagamenti/";

/// Why a document is not a flow: the path of the element, and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FlowError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> FlowError {
    FlowError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The children of an element, taken in the order the XSD's sequence gives them.
struct Seq<'a> {
    path: String,
    items: &'a [Elem],
    at: usize,
}

impl<'a> Seq<'a> {
    fn of(path: impl Into<String>, parent: &'a Elem) -> Seq<'a> {
        Seq {
            path: path.into(),
            items: &parent.children,
            at: 0,
        }
    }

    fn field(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    fn opt(&mut self, name: &str) -> Result<Option<&'a Elem>, FlowError> {
        match self.items.get(self.at) {
            Some(e) if e.local == name => {
                if e.ns.as_deref() != Some(FLOW_NS) {
                    return Err(err(
                        self.field(name),
                        format!("must be in namespace {FLOW_NS}, found {}", e.display()),
                    ));
                }
                self.at += 1;
                Ok(Some(e))
            }
            _ => Ok(None),
        }
    }

    fn req(&mut self, name: &str) -> Result<&'a Elem, FlowError> {
        match self.opt(name)? {
            Some(e) => Ok(e),
            None => Err(err(
                self.field(name),
                match self.items.get(self.at) {
                    Some(found) => format!("expected here, found {}", found.display()),
                    None => "missing".to_owned(),
                },
            )),
        }
    }

    fn text(&mut self, name: &str, max: usize) -> Result<String, FlowError> {
        let e = self.req(name)?;
        let value = e.text.trim();
        let n = value.chars().count();
        if n == 0 || n > max {
            return Err(err(
                self.field(name),
                format!("must be 1 to {max} characters, found {n}"),
            ));
        }
        Ok(value.to_owned())
    }

    fn opt_text(&mut self, name: &str) -> Result<Option<String>, FlowError> {
        Ok(self.opt(name)?.map(|e| e.text.trim().to_owned()))
    }

    fn date(&mut self, name: &str) -> Result<Date, FlowError> {
        let field = self.field(name);
        let text = self.text(name, 10)?;
        text.parse()
            .map_err(|e| err(field, format!("{text:?} is not a date (YYYY-MM-DD): {e}")))
    }

    fn end(&self) -> Result<(), FlowError> {
        match self.items.get(self.at) {
            None => Ok(()),
            Some(e) => Err(err(
                format!("{}/{}", self.path, e.local),
                "not expected here",
            )),
        }
    }
}

/// Parses a flow document.
pub fn parse(xml: &str) -> Result<Flow, FlowError> {
    let root = read_tree(xml).map_err(|e| err("document", e))?;
    if !root.is(Some(FLOW_NS), "FlussoRiversamento") {
        return Err(err(
            "document",
            format!(
                "the root must be {{{FLOW_NS}}}FlussoRiversamento, found {}",
                root.display()
            ),
        ));
    }
    let mut s = Seq::of("FlussoRiversamento", &root);
    let version = s.text("versioneOggetto", 16)?;
    if !version.starts_with("1.") {
        return Err(err(
            "FlussoRiversamento/versioneOggetto",
            format!("version {version} is not one mpay reads (1.x)"),
        ));
    }
    let id = s.text("identificativoFlusso", 35)?;
    if id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(err(
            "FlussoRiversamento/identificativoFlusso",
            format!("{id:?} has spaces, slashes or control characters"),
        ));
    }
    let time = s.text("dataOraFlusso", 40)?;
    let civil = time.trim_end_matches('Z');
    let civil = civil.split(['+']).next().unwrap_or(civil);
    civil.parse::<DateTime>().map_err(|e| {
        err(
            "FlussoRiversamento/dataOraFlusso",
            format!("{time:?} is not a date and time: {e}"),
        )
    })?;
    let settlement = s.text("identificativoUnivocoRegolamento", 35)?;
    let settlement_date = s.date("dataRegolamento")?;
    let sender_elem = s.req("istitutoMittente")?;
    let mut sender_seq = Seq::of("FlussoRiversamento/istitutoMittente", sender_elem);
    let (sender_kind, sender) = identifier(&mut sender_seq, "identificativoUnivocoMittente")?;
    let sender_name = sender_seq.opt_text("denominazioneMittente")?;
    sender_seq.end()?;
    let bic = s.opt_text("codiceBicBancaDiRiversamento")?;
    let receiver_elem = s.req("istitutoRicevente")?;
    let mut receiver_seq = Seq::of("FlussoRiversamento/istitutoRicevente", receiver_elem);
    let (_, receiver) = identifier(&mut receiver_seq, "identificativoUnivocoRicevente")?;
    let receiver_name = receiver_seq.opt_text("denominazioneRicevente")?;
    receiver_seq.end()?;
    let count_text = s.text("numeroTotalePagamenti", 15)?;
    let declared_rows = count_text.parse::<u64>().map_err(|_| {
        err(
            "FlussoRiversamento/numeroTotalePagamenti",
            format!("{count_text:?} is not a number of payments"),
        )
    })?;
    let total_text = s.text("importoTotalePagamenti", 20)?;
    let declared_total = Cents::parse_xsd(&total_text).map_err(|e| {
        err(
            "FlussoRiversamento/importoTotalePagamenti",
            format!("{total_text:?}: {e}"),
        )
    })?;
    let mut rows = Vec::new();
    let mut bad_rows = Vec::new();
    let mut n = 0;
    while let Some(row) = s.opt("datiSingoliPagamenti")? {
        n += 1;
        match parse_row(n, row) {
            Ok(r) => rows.push(r),
            Err(e) => bad_rows.push(BadRow {
                row: n,
                field: e.field,
                reason: e.reason,
            }),
        }
    }
    if n == 0 {
        return Err(err(
            "FlussoRiversamento/datiSingoliPagamenti",
            "a flow has at least one payment",
        ));
    }
    s.end()?;
    Ok(Flow {
        id,
        time,
        settlement,
        settlement_date,
        sender_kind,
        sender,
        sender_name,
        bic,
        receiver,
        receiver_name,
        declared_rows,
        declared_total,
        rows,
        bad_rows,
    })
}

/// `tipoIdentificativoUnivoco` + `codiceIdentificativoUnivoco`.
fn identifier(parent: &mut Seq<'_>, name: &str) -> Result<(String, String), FlowError> {
    let path = parent.field(name);
    let e = parent.req(name)?;
    let mut s = Seq::of(path, e);
    let kind = s.text("tipoIdentificativoUnivoco", 1)?;
    let code = s.text("codiceIdentificativoUnivoco", 35)?;
    s.end()?;
    Ok((kind, code))
}

fn parse_row(n: usize, row: &Elem) -> Result<FlowRow, FlowError> {
    let mut s = Seq::of(format!("datiSingoliPagamenti[{n}]"), row);
    let iuv = s.text("identificativoUnivocoVersamento", 35)?;
    let iur = s.text("identificativoUnivocoRiscossione", 35)?;
    let transfer = match s.opt_text("indiceDatiSingoloPagamento")? {
        None => 1,
        Some(t) => t
            .parse::<u8>()
            .ok()
            .filter(|i| (1..=5).contains(i))
            .ok_or_else(|| {
                err(
                    s.field("indiceDatiSingoloPagamento"),
                    format!("{t:?} is not a transfer index 1..5"),
                )
            })?,
    };
    let amount_field = s.field("singoloImportoPagato");
    let amount_text = s.text("singoloImportoPagato", 20)?;
    // Revocations are written negative by some PSPs although the XSD forbids it.
    let unsigned = amount_text.strip_prefix('-').unwrap_or(&amount_text);
    let amount = Cents::parse_xsd(unsigned)
        .map_err(|e| err(amount_field, format!("{amount_text:?}: {e}")))?;
    let code_field = s.field("codiceEsitoSingoloPagamento");
    let code_text = s.text("codiceEsitoSingoloPagamento", 2)?;
    let outcome = code_text
        .parse::<u8>()
        .ok()
        .and_then(RowOutcome::from_code)
        .ok_or_else(|| {
            err(
                code_field,
                format!("{code_text:?} is not an outcome code (0, 3, 4, 8, 9)"),
            )
        })?;
    let date = s.date("dataEsitoSingoloPagamento")?;
    s.end()?;
    Ok(FlowRow {
        iuv,
        iur,
        transfer,
        amount,
        outcome,
        date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pagoPA's examples, beside the schemas (`MPAY_XSD_DIR`, or `../shared/pagopa` beside
    /// the checkout, as the end-to-end tests find them).
    fn example(name: &str) -> String {
        let xsd = std::env::var_os("MPAY_XSD_DIR").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pagopa/xsd"),
            std::path::PathBuf::from,
        );
        let dir = xsd.join("../examples").join(name);
        std::fs::read_to_string(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    }

    #[test]
    fn the_official_examples_parse() {
        let flow = parse(&example("11_FlussoRiversamento_decoded_from_10.xml")).expect("parses");
        assert_eq!(flow.id, "2022-02-01SELBIT2B-S003039139");
        assert_eq!(flow.time, "2022-02-01T00:30:45");
        assert_eq!(flow.receiver, "01199250158");
        assert_eq!(
            (flow.sender_kind.as_str(), flow.sender.as_str()),
            ("B", "SELBIT2B")
        );
        assert_eq!(flow.rows.len(), 1);
        let row = &flow.rows[0];
        assert_eq!(row.iuv, "721088239961215");
        assert_eq!(row.iur, "4d5e155eaa924fbdbf28b21b2c6edc83");
        assert_eq!((row.transfer, row.amount), (1, Cents(3205)));
        assert_eq!(row.outcome, RowOutcome::Executed);
        assert!(flow.totals_agree());
        let flow = parse(&example("12_FlussoRiversamento_sanp_example.xml")).expect("parses");
        assert_eq!(flow.declared_total, Cents(123_456));
    }

    #[test]
    fn a_bad_row_is_set_aside_and_a_bad_header_refused() {
        let good = example("11_FlussoRiversamento_decoded_from_10.xml");
        let bad_row = good.replace(
            "<singoloImportoPagato>32.05</singoloImportoPagato>",
            "<singoloImportoPagato>32,05</singoloImportoPagato>",
        );
        let flow = parse(&bad_row).expect("the flow is still read");
        assert!(flow.rows.is_empty());
        assert_eq!(flow.bad_rows.len(), 1);
        assert_eq!(
            flow.bad_rows[0].field,
            "datiSingoliPagamenti[1]/singoloImportoPagato"
        );
        assert!(!flow.totals_agree());
        let e = parse(&good.replace("<dataRegolamento>2022-02-01", "<dataRegolamento>yesterday"))
            .expect_err("bad header");
        assert_eq!(e.field, "FlussoRiversamento/dataRegolamento");
        let e = parse("not xml at all").expect_err("not XML");
        assert_eq!(e.field, "document");
        let e = parse(&good.replace(FLOW_NS, "urn:other")).expect_err("namespace");
        assert_eq!(e.field, "document");
        let e = parse(&good.replace("<numeroTotalePagamenti>", "<x>1</x><numeroTotalePagamenti>"))
            .expect_err("unexpected element");
        assert_eq!(e.field, "FlussoRiversamento/numeroTotalePagamenti");
    }
}
