//! mpay calling pagoPA's FdR REST service for organisations (PROTOCOL.md §10), the interface
//! that replaces nodeForPa's SOAP flow download: `GET /organizations/{ec}/fdrs` lists the
//! published flows (paged, `publishedGt`), then each new revision is read with its payments
//! (paged). A flow is kept as the JSON that came and as the same `Flow` an XML document gives;
//! its `time` is the revision's publication time, so a later revision supersedes an earlier one
//! as a later `dataOraFlusso` does. Amounts are read from the JSON's text, never through a float.

use std::sync::Arc;

use jiff::civil::Date;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::Actor;
use mpay_common::money::Cents;
use mpay_common::reconcile::{BadRow, Flow, FlowRow, RowOutcome};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::App;
use crate::node::{Fetched, Node, NodeError, clip};
use crate::pagopa::flow::FlowError;
use crate::service::flows::{self, Received};

/// Rows asked per page (the service's maximum).
const PAGE: u32 = 1000;
/// How far back the list looks for new flows and revisions.
const RECHECK_DAYS: i64 = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    tot_page: u32,
}

#[derive(Deserialize)]
struct Page<T> {
    metadata: Metadata,
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

/// A flow as the list gives it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    fdr: String,
    psp_id: String,
    revision: u64,
    published: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sender {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    id: String,
    #[serde(default)]
    psp_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Receiver {
    organization_id: String,
    #[serde(default)]
    organization_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Single {
    fdr: String,
    regulation: String,
    regulation_date: String,
    #[serde(default)]
    bic_code_pouring_bank: Option<String>,
    sender: Sender,
    receiver: Receiver,
    tot_payments: u64,
    sum_payments: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payment {
    index: u64,
    iuv: String,
    iur: String,
    #[serde(default)]
    id_transfer: Option<u8>,
    pay: Box<RawValue>,
    pay_status: String,
    pay_date: String,
}

fn cents(raw: &RawValue) -> Option<Cents> {
    Cents::parse_api(raw.get().trim_matches('"')).ok()
}

/// The date part of an ISO date or date-time.
fn day(text: &str) -> Option<Date> {
    text.get(..10)?.parse().ok()
}

fn outcome(status: &str) -> Option<RowOutcome> {
    Some(match status {
        "EXECUTED" => RowOutcome::Executed,
        "REVOKED" => RowOutcome::Revoked,
        "STAND_IN" => RowOutcome::StandIn,
        "STAND_IN_NO_RPT" => RowOutcome::StandInNoReceipt,
        "NO_RPT" => RowOutcome::NoReceipt,
        _ => return None,
    })
}

/// A payment of the flow as a row, or why not.
fn row(p: &Payment) -> Result<FlowRow, BadRow> {
    let n = usize::try_from(p.index).unwrap_or(usize::MAX);
    let bad = |field: &str, reason: String| BadRow {
        row: n,
        field: format!("payments[index={n}].{field}"),
        reason,
    };
    let amount = cents(&p.pay).ok_or_else(|| bad("pay", format!("{} is not an amount", p.pay)))?;
    let outcome = outcome(&p.pay_status).ok_or_else(|| {
        bad(
            "payStatus",
            format!(
                "{:?}: EXECUTED, REVOKED, STAND_IN, STAND_IN_NO_RPT or NO_RPT",
                p.pay_status
            ),
        )
    })?;
    let date = day(&p.pay_date)
        .ok_or_else(|| bad("payDate", format!("{:?} is not a date", p.pay_date)))?;
    let transfer = p.id_transfer.unwrap_or(1);
    if !(1..=5).contains(&transfer) {
        return Err(bad("idTransfer", format!("{transfer}: 1 to 5")));
    }
    Ok(FlowRow {
        iuv: p.iuv.clone(),
        iur: p.iur.clone(),
        transfer,
        amount: Cents(amount.get().abs()),
        outcome,
        date,
    })
}

/// The flow a revision and its payments make.
fn flow(single: &Single, published: &str, payments: &[Payment]) -> Result<Flow, FlowError> {
    let err = |field: &str, reason: String| FlowError {
        field: field.into(),
        reason,
    };
    let settlement_date = day(&single.regulation_date).ok_or_else(|| {
        err(
            "regulationDate",
            format!("{:?} is not a date", single.regulation_date),
        )
    })?;
    let declared_total = cents(&single.sum_payments).ok_or_else(|| {
        err(
            "sumPayments",
            format!("{} is not an amount", single.sum_payments),
        )
    })?;
    let (mut rows, mut bad_rows) = (Vec::new(), Vec::new());
    for p in payments {
        match row(p) {
            Ok(r) => rows.push(r),
            Err(b) => bad_rows.push(b),
        }
    }
    Ok(Flow {
        id: single.fdr.clone(),
        time: published.to_owned(),
        settlement: single.regulation.clone(),
        settlement_date,
        sender_kind: match single.sender.kind.as_deref() {
            Some("ABI_CODE") => "A",
            Some("BIC_CODE") => "B",
            _ => "G",
        }
        .into(),
        sender: single.sender.id.clone(),
        sender_name: single.sender.psp_name.clone(),
        bic: single.bic_code_pouring_bank.clone(),
        receiver: single.receiver.organization_id.clone(),
        receiver_name: single.receiver.organization_name.clone(),
        declared_rows: single.tot_payments,
        declared_total,
        rows,
        bad_rows,
    })
}

impl Node {
    /// One GET (retried as `send` does); the body's text.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<String, NodeError> {
        // The query's values are ours (numbers, RFC 3339 instants): nothing to escape.
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut url = format!("{}{path}", self.config.url.trim_end_matches('/'));
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let (status, text) = self.send(|| self.client.get(&url)).await?;
        if status.is_success() {
            return Ok(text);
        }
        // FdR's ErrorResponse names its code (FDR-xxxx).
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["appErrorCode"].as_str().map(str::to_owned));
        Err(match code {
            Some(code) => NodeError::Fault {
                code,
                description: format!("HTTP {status}: {}", clip(&text)),
            },
            None => NodeError::Transport(format!("HTTP {status}: {}", clip(&text))),
        })
    }

    /// Every page of a paged resource: the items, and each page's text.
    async fn pages<T: for<'a> Deserialize<'a>>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Vec<T>, Vec<String>), NodeError> {
        let (mut items, mut texts) = (Vec::new(), Vec::new());
        let mut page = 1;
        loop {
            let mut q = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("size", PAGE.to_string()));
            let text = self.get(path, &q).await?;
            let parsed: Page<T> = serde_json::from_str(&text)
                .map_err(|e| NodeError::Answer(format!("{path} page {page}: {e}")))?;
            items.extend(parsed.data);
            texts.push(text);
            if page >= parsed.metadata.tot_page {
                return Ok((items, texts));
            }
            page += 1;
        }
    }
}

/// Fetches the entity's revisions the store does not hold, through FdR REST. A flow that fails
/// is recorded in `errors` and does not stop the others.
pub async fn fetch(app: &Arc<App>, node: &Node, entity: &EntityFiscalCode) -> Fetched {
    let mut out = Fetched::default();
    let since = app
        .clock
        .now()
        .checked_sub(jiff::SignedDuration::from_hours(24 * RECHECK_DAYS))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let base = format!("/organizations/{entity}/fdrs");
    let listed: Vec<Listed> = match node
        .pages(&base, &[("publishedGt", since.to_string())])
        .await
    {
        Ok((l, _)) => l,
        Err(e) => {
            out.errors.push(format!("{entity}: list: {e}"));
            return out;
        }
    };
    out.listed = listed.len();
    for l in listed {
        let held = app
            .store
            .flow_revisions(entity, &l.fdr)
            .map(|revisions| revisions.iter().any(|r| r.time == l.published))
            .unwrap_or(false);
        if held {
            continue;
        }
        let path = format!(
            "{base}/{}/revisions/{}/psps/{}",
            l.fdr, l.revision, l.psp_id
        );
        let single = match node.get(&path, &[]).await {
            Ok(t) => t,
            Err(e) => {
                out.errors.push(format!(
                    "{entity}: flow {} revision {}: {e}",
                    l.fdr, l.revision
                ));
                continue;
            }
        };
        let payments = node
            .pages::<Payment>(&format!("{path}/payments"), &[])
            .await;
        let (payments, pages) = match payments {
            Ok(p) => p,
            Err(e) => {
                out.errors
                    .push(format!("{entity}: flow {} payments: {e}", l.fdr));
                continue;
            }
        };
        let parsed = serde_json::from_str::<Single>(&single)
            .map_err(|e| FlowError {
                field: "flow".into(),
                reason: e.to_string(),
            })
            .and_then(|s| flow(&s, &l.published, &payments));
        // What came, as it came: the flow and its payments' pages.
        let raw = format!("{{\"flow\":{single},\"payments\":[{}]}}", pages.join(","));
        let (work, cf) = (Arc::clone(app), entity.clone());
        let (id, published) = (l.fdr.clone(), l.published.clone());
        let received = tokio::task::spawn_blocking(move || {
            let Some(config) = work.config.entity(&cf) else {
                return Err(format!("entity {cf} is not configured"));
            };
            let listed = Some((id.as_str(), published.as_str()));
            flows::receive_parsed(&work, config, &Actor::Node, parsed, raw.as_bytes(), listed)
                .map_err(|e| e.message)
        })
        .await;
        match received {
            Ok(Ok(Received::New(_))) => out.new += 1,
            Ok(Ok(Received::Held(_))) => {}
            Ok(Err(e)) => out.errors.push(format!("{entity}: flow {}: {e}", l.fdr)),
            Err(e) => out.errors.push(format!("{entity}: flow {}: {e}", l.fdr)),
        }
    }
    out
}
