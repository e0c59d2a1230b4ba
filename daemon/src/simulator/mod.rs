//! The node simulator (`mpayd simulate`): plays pagoPA's node against a station. It learns payable
//! notices from the daemon's admin listener, then runs verify → getPayment (sometimes twice, as
//! the node does on token expiry) → receipt sequences, with a chosen share of unknown notices,
//! wrong station ids, malformed messages, double payments and late receipts. It is also the load
//! generator: it prints throughput and latency percentiles per operation.

pub mod node;
pub mod requests;
pub mod settlement;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::http_client::percentile_ms;
use requests::{Answer, Caller, ReceiptSpec, ReceiptTransfer};

/// What each iteration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// verify → getPayment (→ getPayment) → receipt, one notice per iteration.
    Pay,
    /// Only paVerifyPaymentNotice, over the known notices again and again.
    Verify,
    /// Only paGetPayment(V2), over the known notices again and again.
    GetPayment,
    /// Only receipts, one notice per receipt.
    SendRt,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The station's URL, e.g. http://127.0.0.1:9481/pagopa/paForNode.
    #[arg(long)]
    pub target: String,
    /// The daemon's admin listener, where payable notices are listed.
    #[arg(long, default_value = "http://127.0.0.1:9480")]
    pub admin: String,
    /// idBrokerPA to send.
    #[arg(long, default_value = "01111111116")]
    pub broker: String,
    #[arg(long, value_enum, default_value = "pay")]
    pub scenario: Scenario,
    /// Iterations in all.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Iterations per second at most (0: as fast as the station answers).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Percent of iterations that ask for a notice that does not exist.
    #[arg(long, default_value_t = 0)]
    pub unknown_pct: u8,
    /// Percent of iterations that name a station that is not the intermediary's.
    #[arg(long, default_value_t = 0)]
    pub wrong_station_pct: u8,
    /// Percent of iterations that send a malformed message.
    #[arg(long, default_value_t = 0)]
    pub malformed_pct: u8,
    /// Percent of payments paid twice (a second receipt with another receiptId).
    #[arg(long, default_value_t = 0)]
    pub double_pct: u8,
    /// Percent of receipts delivered late (up to 2 s after the payment).
    #[arg(long, default_value_t = 0)]
    pub late_pct: u8,
    /// Percent of payments whose receipt is delivered twice (the node's retry).
    #[arg(long, default_value_t = 5)]
    pub replay_pct: u8,
    /// Percent of activations the node repeats.
    #[arg(long, default_value_t = 10)]
    pub repeat_get_pct: u8,
    /// How many distinct notices the verify and get-payment scenarios cycle through.
    #[arg(long, default_value_t = 10_000)]
    pub notices: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print nothing (the demo's background traffic).
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(Clone, Debug, Deserialize)]
struct Notice {
    entity: String,
    station: String,
    #[serde(default = "two")]
    version: u8,
    nav: String,
    iuv: String,
    amount: String,
}

fn two() -> u8 {
    2
}

#[derive(Deserialize)]
struct NoticePage {
    notices: Vec<Notice>,
    next: Option<u64>,
}

/// Outcomes and latencies per operation.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    micros: Vec<u32>,
}

#[derive(Default)]
struct Report {
    ops: BTreeMap<&'static str, Tally>,
    transport_errors: u64,
    /// Receipts the station acknowledged with OK: (entity, receiptId, nav).
    acknowledged: Vec<(String, String, String)>,
}

impl Report {
    fn record(&mut self, op: &'static str, took: Duration, answer: Option<&Answer>) {
        let tally = self.ops.entry(op).or_default();
        let key = match answer {
            None => "unreadable".to_string(),
            Some(a) => match &a.fault_code {
                Some(code) => code.clone(),
                None => a.outcome.clone(),
            },
        };
        *tally.outcomes.entry(key).or_default() += 1;
        tally
            .micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    fn merge(&mut self, other: Report) {
        for (op, t) in other.ops {
            let mine = self.ops.entry(op).or_default();
            for (k, v) in t.outcomes {
                *mine.outcomes.entry(k).or_default() += v;
            }
            mine.micros.extend(t.micros);
        }
        self.transport_errors += other.transport_errors;
        self.acknowledged.extend(other.acknowledged);
    }
}

/// One keep-alive HTTP/1.1 connection to the station, posting SOAP requests to its path.
struct Connection {
    http: crate::http_client::Connection,
    path: String,
}

impl Connection {
    fn new(target: &str) -> anyhow::Result<Connection> {
        let uri: hyper::Uri = target.parse().context("--target")?;
        Ok(Connection {
            http: crate::http_client::Connection::new(target).context("--target")?,
            path: uri.path().to_string(),
        })
    }

    async fn post(&mut self, action: &str, body: String) -> anyhow::Result<String> {
        let request = hyper::Request::post(&self.path)
            .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action}\""));
        let (_, bytes) = self.http.send(request, Bytes::from(body)).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

async fn fetch_notices(admin: &str, wanted: usize) -> anyhow::Result<Vec<Notice>> {
    let mut out = Vec::new();
    let mut from = 0u64;
    while out.len() < wanted {
        let url = format!(
            "{}/notices?from={from}&limit=5000",
            admin.trim_end_matches('/')
        );
        let mut body = Vec::new();
        crate::http_client::get_to(&url, |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await
        .with_context(|| format!("cannot list notices at {url}"))?;
        let page: NoticePage = serde_json::from_slice(&body).context("notice list")?;
        out.extend(page.notices);
        match page.next {
            Some(next) if next > from => from = next,
            _ => break,
        }
    }
    Ok(out)
}

/// A notice number with a valid check digit that no entity of the demo uses (segregation 99).
fn unknown_nav(rng: &mut fastrand::Rng) -> String {
    let base = format!("399{:013}", rng.u64(..10_000_000_000_000));
    let n: u64 = base.parse().unwrap_or(0);
    format!("{base}{:02}", n % 93)
}

struct Shared {
    options: Options,
    notices: Vec<Notice>,
    next: AtomicU64,
    started: Instant,
}

/// Runs the simulation and prints its report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let wanted = match options.scenario {
        Scenario::Pay | Scenario::SendRt => usize::try_from(options.count).unwrap_or(usize::MAX),
        Scenario::Verify | Scenario::GetPayment => {
            usize::try_from(options.notices).unwrap_or(usize::MAX)
        }
    };
    let notices = fetch_notices(&options.admin, wanted).await?;
    if notices.is_empty() {
        anyhow::bail!("no payable notice at {}", options.admin);
    }
    let count = match options.scenario {
        Scenario::Pay | Scenario::SendRt => options.count.min(notices.len() as u64),
        _ => options.count,
    };
    if count < options.count {
        eprintln!(
            "only {} payable notices: running {count} iterations",
            notices.len()
        );
    }
    let shared = Arc::new(Shared {
        options: options.clone(),
        notices,
        next: AtomicU64::new(0),
        started: Instant::now(),
    });
    let report = Arc::new(Mutex::new(Report::default()));
    let late = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..options.concurrency.max(1) {
        let shared = Arc::clone(&shared);
        let report = Arc::clone(&report);
        let late = Arc::clone(&late);
        workers.spawn(async move {
            let mut rng =
                fastrand::Rng::with_seed(shared.options.seed.wrapping_mul(1000) + w as u64);
            let mut conn = Connection::new(&shared.options.target)?;
            let mut mine = Report::default();
            loop {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                if shared.options.rate > 0.0 {
                    let due = Duration::from_secs_f64(i as f64 / shared.options.rate);
                    let elapsed = shared.started.elapsed();
                    if due > elapsed {
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
                iteration(&shared, i, &mut conn, &mut rng, &mut mine, &late).await;
            }
            report.lock().await.merge(mine);
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let mut late = Arc::try_unwrap(late)
        .map_err(|_| anyhow::anyhow!("late receipts still referenced"))?
        .into_inner();
    while let Some(done) = late.join_next().await {
        report.lock().await.merge(done?);
    }
    let elapsed = shared.started.elapsed();
    let report = Arc::try_unwrap(report)
        .map_err(|_| anyhow::anyhow!("report still referenced"))?
        .into_inner();
    if !options.quiet {
        print_report(&options, &report, elapsed);
    }
    Ok(())
}

async fn call(
    conn: &mut Connection,
    report: &mut Report,
    op: &'static str,
    body: String,
) -> Option<Answer> {
    let t = Instant::now();
    match conn.post(op, body).await {
        Ok(text) => {
            let answer = requests::read_answer(&text);
            report.record(op, t.elapsed(), answer.as_ref());
            answer
        }
        Err(e) => {
            tracing::debug!("{op}: {e}");
            report.transport_errors += 1;
            None
        }
    }
}

fn receipt_id(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

async fn iteration(
    shared: &Shared,
    i: u64,
    conn: &mut Connection,
    rng: &mut fastrand::Rng,
    report: &mut Report,
    late: &Mutex<tokio::task::JoinSet<Report>>,
) {
    let o = &shared.options;
    let notice = &shared.notices[(i as usize) % shared.notices.len()];
    let caller = Caller {
        id_pa: notice.entity.clone(),
        broker: o.broker.clone(),
        station: notice.station.clone(),
    };
    let v2 = notice.version == 2;
    let roll = rng.u8(..100);
    if roll < o.malformed_pct {
        let body = requests::verify(&caller, &notice.entity, &notice.nav).replace("</idPA>", "");
        call(conn, report, "paVerifyPaymentNotice", body).await;
        return;
    }
    if roll < o.malformed_pct.saturating_add(o.wrong_station_pct) {
        let wrong = Caller {
            station: format!("{}_99", o.broker),
            ..caller
        };
        let body = requests::verify(&wrong, &notice.entity, &notice.nav);
        call(conn, report, "paVerifyPaymentNotice", body).await;
        return;
    }
    if roll
        < o.malformed_pct
            .saturating_add(o.wrong_station_pct)
            .saturating_add(o.unknown_pct)
    {
        let body = requests::verify(&caller, &notice.entity, &unknown_nav(rng));
        call(conn, report, "paVerifyPaymentNotice", body).await;
        return;
    }
    let get_op = if v2 { "paGetPaymentV2" } else { "paGetPayment" };
    match o.scenario {
        Scenario::Verify => {
            let body = requests::verify(&caller, &notice.entity, &notice.nav);
            call(conn, report, "paVerifyPaymentNotice", body).await;
        }
        Scenario::GetPayment => {
            let body = requests::get_payment(&caller, v2, &notice.entity, &notice.nav, None);
            call(conn, report, get_op, body).await;
        }
        Scenario::SendRt => {
            let spec = ReceiptSpec {
                receipt_id: receipt_id(rng),
                nav: notice.nav.clone(),
                notice_entity: notice.entity.clone(),
                iuv: notice.iuv.clone(),
                amount: notice.amount.clone(),
                transfers: vec![ReceiptTransfer {
                    id: "1".into(),
                    amount: notice.amount.clone(),
                    fiscal_code_pa: notice.entity.clone(),
                    iban: Some("IT60X0542811101000000123456".into()),
                    remittance: "Pagamento avviso".into(),
                    category: String::new(),
                }],
                psp: "SIMPSP00001".into(),
                stand_in: false,
            };
            send_receipt(conn, report, &caller, v2, &spec).await;
        }
        Scenario::Pay => {
            let verify = requests::verify(&caller, &notice.entity, &notice.nav);
            let Some(answer) = call(conn, report, "paVerifyPaymentNotice", verify).await else {
                return;
            };
            if answer.fault_code.is_some() {
                return;
            }
            let get = requests::get_payment(
                &caller,
                v2,
                &notice.entity,
                &notice.nav,
                answer.amount.as_deref(),
            );
            let mut data = call(conn, report, get_op, get.clone()).await;
            if rng.u8(..100) < o.repeat_get_pct {
                data = call(conn, report, get_op, get).await;
            }
            let Some(data) = data.filter(|d| d.fault_code.is_none()) else {
                return;
            };
            let spec = ReceiptSpec {
                receipt_id: receipt_id(rng),
                nav: notice.nav.clone(),
                notice_entity: notice.entity.clone(),
                iuv: data.iuv.clone().unwrap_or_else(|| notice.iuv.clone()),
                amount: data.amount.clone().unwrap_or_else(|| notice.amount.clone()),
                transfers: data.transfers.clone(),
                psp: "SIMPSP00001".into(),
                stand_in: false,
            };
            let double = rng.u8(..100) < o.double_pct;
            let replay = rng.u8(..100) < o.replay_pct;
            if rng.u8(..100) < o.late_pct {
                let delay = Duration::from_millis(rng.u64(200..2000));
                let target = o.target.clone();
                let caller = caller.clone();
                late.lock().await.spawn(async move {
                    let mut report = Report::default();
                    tokio::time::sleep(delay).await;
                    if let Ok(mut conn) = Connection::new(&target) {
                        send_receipt(&mut conn, &mut report, &caller, v2, &spec).await;
                    }
                    report
                });
                return;
            }
            send_receipt(conn, report, &caller, v2, &spec).await;
            if replay {
                send_receipt(conn, report, &caller, v2, &spec).await;
            }
            if double {
                let second = ReceiptSpec {
                    receipt_id: receipt_id(rng),
                    psp: "SIMPSP00002".into(),
                    ..spec
                };
                send_receipt(conn, report, &caller, v2, &second).await;
            }
        }
    }
}

async fn send_receipt(
    conn: &mut Connection,
    report: &mut Report,
    caller: &Caller,
    v2: bool,
    spec: &ReceiptSpec,
) {
    let op = if v2 { "paSendRTV2" } else { "paSendRT" };
    let answer = call(conn, report, op, requests::send_rt(caller, v2, spec)).await;
    if answer.is_some_and(|a| a.outcome == "OK") {
        report.acknowledged.push((
            caller.id_pa.clone(),
            spec.receipt_id.clone(),
            spec.nav.clone(),
        ));
    }
}

fn print_report(options: &Options, report: &Report, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let total: usize = report.ops.values().map(|t| t.micros.len()).sum();
    if options.json {
        let ops: serde_json::Map<String, serde_json::Value> = report
            .ops
            .iter()
            .map(|(op, t)| {
                let mut sorted = t.micros.clone();
                sorted.sort_unstable();
                (
                    op.to_string(),
                    serde_json::json!({
                        "requests": sorted.len(),
                        "outcomes": t.outcomes,
                        "per_second": sorted.len() as f64 / secs,
                        "p50_ms": percentile_ms(&sorted, 0.5),
                        "p99_ms": percentile_ms(&sorted, 0.99),
                        "p999_ms": percentile_ms(&sorted, 0.999),
                        "max_ms": percentile_ms(&sorted, 1.0),
                    }),
                )
            })
            .collect();
        let acknowledged: Vec<_> = report
            .acknowledged
            .iter()
            .map(|(e, r, n)| serde_json::json!({"entity": e, "receipt_id": r, "nav": n}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "seconds": secs,
                "requests": total,
                "per_second": total as f64 / secs,
                "transport_errors": report.transport_errors,
                "operations": ops,
                "acknowledged_receipts": acknowledged,
            })
        );
        return;
    }
    println!(
        "{:<24} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}  outcomes",
        "operation", "requests", "req/s", "p50 ms", "p99 ms", "p99.9", "max ms"
    );
    for (op, t) in &report.ops {
        let mut sorted = t.micros.clone();
        sorted.sort_unstable();
        let outcomes: Vec<String> = t.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<24} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}",
            op,
            sorted.len(),
            sorted.len() as f64 / secs,
            percentile_ms(&sorted, 0.5),
            percentile_ms(&sorted, 0.99),
            percentile_ms(&sorted, 0.999),
            percentile_ms(&sorted, 1.0),
            outcomes.join(" ")
        );
    }
    println!(
        "{total} requests in {secs:.2} s: {:.0} req/s, {} connections, {} transport errors, {} receipts acknowledged",
        total as f64 / secs,
        options.concurrency,
        report.transport_errors,
        report.acknowledged.len()
    );
}

/// `mpayd bare-station`: an HTTP server that answers every POST with one fixed, valid
/// paVerifyPaymentNoticeRes and does nothing else. The baseline the station's figures are
/// compared with.
pub async fn bare_station(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use crate::pagopa::soap::{PaymentOptionInfo, VerifyOk, verify_response};
    let body = verify_response(&Ok(VerifyOk {
        payment: PaymentOptionInfo {
            amount: mpay_common::money::Cents(12_345),
            due_date: None,
            detail_description: Some("Avviso".into()),
            all_ccp: false,
        },
        description: "Avviso di pagamento".into(),
        fiscal_code_pa: "00123456782".into(),
        company_name: "Comune di Castelverde".into(),
        office_name: None,
    }));
    let body = Bytes::from(body);
    let app = axum::Router::new().fallback(axum::routing::post(move |_: Bytes| {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                body,
            )
        }
    }));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind {listen}"))?;
    println!("bare station on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::daemon::termination())
        .await?;
    Ok(())
}
