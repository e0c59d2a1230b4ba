//! What happens after the payments, played for the demo: PSPs report the receipts in
//! FlussoRiversamento flows and the treasury credits them (camt.053), with the anomalies a
//! revenue office meets — a row missing (sent later in a revision), a row for an IUV nobody
//! issued, a code 9 row for a notice without a receipt, a flow whose declared total is wrong,
//! a credit that comes a round late, a credit naming an unknown flow and one that is no pagoPA
//! remittance — so that the worklist fills within a minute of starting `mpayd demo`.
//!
//! The documents go through the same services as an upload (`service::flows`,
//! `service::treasury`), with the actor `system` and sources that say where they came from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use mpay_common::ids::Nav;
use mpay_common::ledger::Actor;

use super::node::{Catalogue, Published};
use crate::App;
use crate::config::EntityConfig;
use crate::store::Disposition;

/// One row of a flow: IUV, receipt id (IUR), transfer index, cents, outcome code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub iuv: String,
    pub iur: String,
    pub transfer: u8,
    pub cents: i64,
    pub code: u8,
    pub date: Date,
}

fn euros(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A FlussoRiversamento document; `declared` replaces the rows' total when given (to play a
/// PSP that got it wrong).
pub fn flow_document(
    id: &str,
    time: &str,
    settled: Date,
    psp: &str,
    entity: &str,
    rows: &[Row],
    declared: Option<i64>,
) -> String {
    let total: i64 = rows
        .iter()
        .map(|r| if r.code == 3 { -r.cents } else { r.cents })
        .sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <FlussoRiversamento xmlns=\"http://www.digitpa.gov.it/schemas/2011/Pagamenti/\">\
         <versioneOggetto>1.0</versioneOggetto><identificativoFlusso>{id}</identificativoFlusso>\
         <dataOraFlusso>{time}</dataOraFlusso>\
         <identificativoUnivocoRegolamento>SCT-{id}</identificativoUnivocoRegolamento>\
         <dataRegolamento>{settled}</dataRegolamento><istitutoMittente>\
         <identificativoUnivocoMittente><tipoIdentificativoUnivoco>B</tipoIdentificativoUnivoco>\
         <codiceIdentificativoUnivoco>{psp}</codiceIdentificativoUnivoco>\
         </identificativoUnivocoMittente><denominazioneMittente>Banca Demo</denominazioneMittente>\
         </istitutoMittente><istitutoRicevente><identificativoUnivocoRicevente>\
         <tipoIdentificativoUnivoco>G</tipoIdentificativoUnivoco>\
         <codiceIdentificativoUnivoco>{entity}</codiceIdentificativoUnivoco>\
         </identificativoUnivocoRicevente></istitutoRicevente>\
         <numeroTotalePagamenti>{}</numeroTotalePagamenti>\
         <importoTotalePagamenti>{}</importoTotalePagamenti>",
        rows.len(),
        euros(declared.unwrap_or(total))
    );
    for r in rows {
        xml.push_str(&format!(
            "<datiSingoliPagamenti><identificativoUnivocoVersamento>{}\
             </identificativoUnivocoVersamento><identificativoUnivocoRiscossione>{}\
             </identificativoUnivocoRiscossione><indiceDatiSingoloPagamento>{}\
             </indiceDatiSingoloPagamento><singoloImportoPagato>{}</singoloImportoPagato>\
             <codiceEsitoSingoloPagamento>{}</codiceEsitoSingoloPagamento>\
             <dataEsitoSingoloPagamento>{}</dataEsitoSingoloPagamento></datiSingoliPagamenti>",
            r.iuv,
            r.iur,
            r.transfer,
            euros(r.cents),
            r.code,
            r.date
        ));
    }
    xml.push_str("</FlussoRiversamento>");
    xml
}

/// One credit on the treasury account: cents, the bank's reference, the remittance text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    pub cents: i64,
    pub reference: String,
    pub remittance: String,
}

/// A camt.053.001.02 statement of `iban` booked on `day`.
pub fn statement_document(message_id: &str, iban: &str, day: Date, credits: &[Credit]) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt>\
         <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>{day}T07:00:00</CreDtTm></GrpHdr>\
         <Stmt><Id>{message_id}</Id><Acct><Id><IBAN>{iban}</IBAN></Id></Acct>"
    );
    for c in credits {
        xml.push_str(&format!(
            "<Ntry><Amt Ccy=\"EUR\">{}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>\
             <BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt>\
             <AcctSvcrRef>{}</AcctSvcrRef><NtryDtls><TxDtls><RmtInf>\
             <Ustrd>{}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>",
            euros(c.cents),
            c.reference,
            c.remittance
        ));
    }
    xml.push_str("</Stmt></BkToCstmrStmt></Document>");
    xml
}

/// What the demo's PSPs and treasury still owe from earlier rounds.
#[derive(Default)]
struct Pending {
    /// The simulated node the flows are published on (then fetched by the daemon's client);
    /// without one they are handed to the daemon's services directly.
    node: Option<Arc<Catalogue>>,
    /// Revisions published per flow.
    revisions: HashMap<String, u64>,
    round: u32,
    /// Receipts reported already.
    reported: HashSet<String>,
    /// A flow sent with a row missing: (entity index, id, rows with the missing one).
    revision: Option<(usize, String, Vec<Row>)>,
    /// A credit held back a round: (entity index, credit).
    late: Vec<(usize, Credit)>,
}

/// Every `every`, reports the receipts stored since the last round (on the simulated node
/// `node`, from which the daemon fetches them, or straight to the daemon) and credits them.
pub async fn run(app: Arc<App>, every: Duration, node: Option<Arc<Catalogue>>) {
    let mut pending = Pending {
        node,
        ..Pending::default()
    };
    // Receipts reported before a restart are in the ledger: not reported again.
    loop {
        tokio::time::sleep(every).await;
        let work = Arc::clone(&app);
        let moved = tokio::task::spawn_blocking(move || {
            let result = round(&work, &mut pending);
            (result, pending)
        })
        .await;
        let statements = match moved {
            Ok((result, back)) => {
                pending = back;
                result.unwrap_or_else(|e| {
                    tracing::warn!("demo settlement: {e}");
                    Vec::new()
                })
            }
            Err(e) => {
                tracing::warn!("demo settlement stopped: {e}");
                return;
            }
        };
        // The daemon fetches the new flows as it does from the real node.
        if pending.node.is_some() {
            crate::node::fetch_all(&app).await;
        }
        let work = Arc::clone(&app);
        let _ = tokio::task::spawn_blocking(move || {
            for (e, xml) in statements {
                let entity = &work.config.entities[e];
                if let Err(err) =
                    crate::service::treasury::receive(&work, entity, &Actor::System, xml.as_bytes())
                {
                    tracing::warn!("demo statement for {}: {}", entity.fiscal_code, err.message);
                }
            }
        })
        .await;
    }
}

/// Hands a flow (or a revision of one) over: published on the simulated node, or received.
#[allow(clippy::too_many_arguments)]
fn deliver(
    app: &App,
    pending: &mut Pending,
    entity: &EntityConfig,
    id: &str,
    time: &str,
    day: Date,
    rows: Vec<Row>,
    declared: Option<i64>,
) {
    match &pending.node {
        Some(node) => {
            let revision = pending.revisions.entry(id.to_owned()).or_default();
            *revision += 1;
            node.publish(Published {
                entity: entity.fiscal_code.to_string(),
                id: id.to_owned(),
                time: time.to_owned(),
                revision: *revision,
                published: app.clock.now().to_string(),
                psp: "DEMOPSP1".into(),
                settled: day,
                rows,
                declared,
            });
        }
        None => {
            let xml = flow_document(
                id,
                time,
                day,
                "DEMOPSP1",
                entity.fiscal_code.as_str(),
                &rows,
                declared,
            );
            if let Err(e) =
                crate::service::flows::receive(app, entity, &Actor::System, xml.as_bytes(), None)
            {
                tracing::warn!("demo flow {id}: {}", e.message);
            }
        }
    }
}

/// The rows a receipt's payment reports: one per transfer it paid.
fn rows_of(app: &App, entity: &EntityConfig, receipt_id: &str, nav: &str, day: Date) -> Vec<Row> {
    let Ok(nav) = nav.parse::<Nav>() else {
        return Vec::new();
    };
    let Ok(Some((_, p))) = app.store.by_nav(&entity.fiscal_code, &nav) else {
        return Vec::new();
    };
    let Some(inst) = p.instalment(&nav) else {
        return Vec::new();
    };
    if !inst.reports.is_empty() {
        return Vec::new();
    }
    let Some(payment) = inst
        .payments
        .iter()
        .find(|pay| pay.receipt_id() == Some(receipt_id))
    else {
        return Vec::new();
    };
    inst.terms
        .transfers
        .iter()
        .zip(&payment.transfers)
        .filter(|(_, c)| c.get() > 0)
        .map(|(t, c)| Row {
            iuv: nav.iuv().to_string(),
            iur: receipt_id.to_owned(),
            transfer: t.id,
            cents: c.get(),
            code: 0,
            date: day,
        })
        .collect()
}

/// A notice of the entity nobody paid, reported with code 9 (paid, no receipt reached us).
fn unpaid_notice(app: &App, entity: &EntityConfig, day: Date) -> Option<Row> {
    let positions = app.store.positions(0, 2_000).ok()?;
    positions.into_iter().find_map(|(_, p)| {
        if p.entity != entity.fiscal_code || p.has_payments() {
            return None;
        }
        let inst = p.instalments().find(|i| i.withdrawn.is_none())?;
        let t = inst.terms.transfers.first()?;
        Some(Row {
            iuv: inst.terms.nav.iuv().to_string(),
            iur: format!("STANDIN-{}", inst.terms.nav),
            transfer: t.id,
            cents: t.amount.get(),
            code: 9,
            date: day,
        })
    })
}

/// One round: the new receipts reported (delivered as flows), and the treasury's statements
/// to receive after them: (entity index, camt.053 document).
fn round(app: &App, pending: &mut Pending) -> Result<Vec<(usize, String)>, String> {
    pending.round += 1;
    let now = app.clock.now();
    let local = mpay_common::calendar::rome_datetime(now);
    let day = local.date();
    let stamp = local.strftime("%H%M%S").to_string();
    let time = local.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    // The new receipts, per entity.
    let mut by_entity: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    for r in app.store.receipts() {
        let r = r.map_err(|e| e.to_string())?;
        if !matches!(
            r.disposition,
            Disposition::Applied | Disposition::DoublePayment | Disposition::ReceiptIdReused
        ) || !pending.reported.insert(r.receipt_id.clone())
        {
            continue;
        }
        let Some(e) = app
            .config
            .entities
            .iter()
            .position(|e| e.fiscal_code == r.entity)
        else {
            continue;
        };
        let rows = rows_of(app, &app.config.entities[e], &r.receipt_id, &r.nav, day);
        by_entity.entry(e).or_default().extend(rows);
    }
    let mut credits: BTreeMap<usize, Vec<Credit>> = BTreeMap::new();
    for (e, c) in pending.late.drain(..) {
        credits.entry(e).or_default().push(c);
    }
    if let Some((e, id, rows)) = pending.revision.take() {
        // The revision: the same flow, later, with the row it missed.
        let entity = &app.config.entities[e];
        deliver(app, pending, entity, &id, &time, day, rows, None);
    }
    for (n, (e, mut rows)) in by_entity.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let entity = &app.config.entities[e];
        let id = format!("{day}DEMOPSP1-{stamp}{e}");
        let mut declared = None;
        let first = pending.round == 1 && n == 0;
        if first {
            // A row missing (it comes in a revision next round), an IUV nobody issued, and a
            // notice paid with no receipt.
            let all = rows.clone();
            let missing = rows.len() > 1;
            if missing {
                rows.pop();
            }
            let unknown = Row {
                iuv: "99000000000000017".into(),
                iur: format!("IUR-UNKNOWN-{stamp}"),
                transfer: 1,
                cents: 12_50,
                code: 0,
                date: day,
            };
            rows.push(unknown.clone());
            let mut revised = all;
            revised.push(unknown);
            if let Some(stand_in) = unpaid_notice(app, entity, day) {
                rows.push(stand_in.clone());
                revised.push(stand_in);
            }
            if missing {
                pending.revision = Some((e, id.clone(), revised));
            }
        } else if pending.round == 2 && n == 0 {
            // A PSP that declares a total its rows do not make.
            declared = Some(rows.iter().map(|r| r.cents).sum::<i64>() + 1_00);
        }
        let total = declared.unwrap_or_else(|| rows.iter().map(|r| r.cents).sum());
        deliver(app, pending, entity, &id, &time, day, rows, declared);
        let credit = Credit {
            cents: total,
            reference: format!("DEMO-{id}"),
            remittance: format!("/PUR/LGPE-RIVERSAMENTO/URI/{id}"),
        };
        if first {
            // This flow's credit comes a round late; meanwhile, a credit for a flow nobody
            // sent and one that is not pagoPA's.
            pending.late.push((e, credit));
            let list = credits.entry(e).or_default();
            list.push(Credit {
                cents: 48_00,
                reference: format!("DEMO-UNKNOWN-{stamp}"),
                remittance: format!("/PUR/LGPE-RIVERSAMENTO/URI/{day}DEMOPSP9-0000"),
            });
            list.push(Credit {
                cents: 15_30,
                reference: format!("DEMO-OTHER-{stamp}"),
                remittance: "RIMBORSO SPESE DI NOTIFICA".into(),
            });
        } else {
            credits.entry(e).or_default().push(credit);
        }
    }
    // The treasury's statements, received once the flows are in.
    let mut statements = Vec::new();
    for (e, list) in credits {
        let entity = &app.config.entities[e];
        let Some(iban) = entity.bank_accounts.first() else {
            continue;
        };
        let id = format!("DEMO-STMT-{stamp}-{e}");
        statements.push((e, statement_document(&id, iban.as_ref(), day, &list)));
    }
    Ok(statements)
}
