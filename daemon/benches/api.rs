//! REST API load generator: an authority's system writing positions one call at a time over
//! keep-alive connections. Prints throughput, latency percentiles and the answers' statuses.
//!
//!     cargo bench -p mpayd --bench api -- --target http://127.0.0.1:9483 \
//!         --entity 00123456782 --key demo-castelverde-key --connections 32 --count 20000
//!
//! Scenarios (`--scenario`):
//! - `create` (default): PUT a new position (one instalment, two transfers) per call;
//! - `lifecycle`: per position, PUT it, reduce its instalment, then register an offline payment
//!   of the rest: three durable writes that each read the position back first.
//!
//! Every write is answered only once it is on disk, so this measures durable writes.
//! `daemon/benches/api.sh` starts a demo daemon and runs both scenarios.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mpayd::http_client::percentile_ms;
use serde_json::{Value, json};

struct Args {
    target: String,
    entity: String,
    key: String,
    connections: u64,
    count: u64,
    scenario: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        target: "http://127.0.0.1:9483".into(),
        entity: "00123456782".into(),
        key: "demo-castelverde-key".into(),
        connections: 32,
        count: 20_000,
        scenario: "create".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => a.target = value()?,
            "--entity" => a.entity = value()?,
            "--key" => a.key = value()?,
            "--connections" => a.connections = value()?.replace('_', "").parse()?,
            "--count" => a.count = value()?.replace('_', "").parse()?,
            "--scenario" => a.scenario = value()?,
            "--bench" => {}
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(
        matches!(a.scenario.as_str(), "create" | "lifecycle"),
        "--scenario is create or lifecycle"
    );
    Ok(a)
}

/// A keep-alive connection with the entity's key.
struct Connection {
    http: mpayd::http_client::Connection,
    key: String,
}

impl Connection {
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key));
        let (status, bytes) = self
            .http
            .send(request, Bytes::from(serde_json::to_vec(body)?))
            .await?;
        Ok((
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Latencies in microseconds and answers by status, per operation.
#[derive(Default)]
struct Report {
    micros: BTreeMap<&'static str, Vec<u32>>,
    statuses: BTreeMap<(&'static str, u16), u64>,
    errors: u64,
}

impl Report {
    fn record(&mut self, op: &'static str, took: Duration, status: u16) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.micros.entry(op).or_default().push(us);
        *self.statuses.entry((op, status)).or_default() += 1;
    }

    fn merge(&mut self, other: Report) {
        for (op, v) in other.micros {
            self.micros.entry(op).or_default().extend(v);
        }
        for (k, n) in other.statuses {
            *self.statuses.entry(k).or_default() += n;
        }
        self.errors += other.errors;
    }
}

fn position(run: u64, n: u64) -> Value {
    json!({
        "kind": "CANONE",
        "debtor": {"code": "RSSMRA80A01H501U", "name": format!("Debtor {run}-{n}")},
        "description": format!("Load test position {n}"),
        "options": [{"kind": "Single", "instalments": [{
            "amount": "120.00",
            "due": "2030-12-31",
            "description": "Canone unico",
            "transfers": [
                {"amount": "100.00", "remittance": "CANONE", "category": "9/0101101IM/"},
                {"beneficiary": "80001234568", "amount": "20.00", "remittance": "QUOTA",
                 "category": "9/0101102IM/"}
            ]
        }]}]
    })
}

async fn worker(args: Arc<Args>, run: u64, next: Arc<AtomicU64>, mut conn: Connection) -> Report {
    let mut report = Report::default();
    let base = format!("/api/v1/entities/{}/positions", args.entity);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= args.count {
            return report;
        }
        let path = format!("{base}/LOAD-{run}-{n}");
        let start = Instant::now();
        let created = conn
            .call(hyper::Method::PUT, &path, &position(run, n))
            .await;
        let (status, body) = match created {
            Ok(answer) => answer,
            Err(_) => {
                report.errors += 1;
                continue;
            }
        };
        report.record("create", start.elapsed(), status);
        if args.scenario != "lifecycle" || status != 201 {
            continue;
        }
        let Some(nav) = body["options"][0]["instalments"][0]["nav"].as_str() else {
            report.errors += 1;
            continue;
        };
        let steps = [
            (
                "reduce",
                format!("{path}/instalments/{nav}/reduction"),
                json!({"new_amount": "90.00", "act": format!("DET-{n}"), "reason": "sgravio"}),
            ),
            (
                "offline",
                format!("{path}/instalments/{nav}/offline-payments"),
                json!({"channel": "BankTransfer", "date": "2026-11-20", "amount": "90.00",
                       "reference": format!("CRO-{n}")}),
            ),
        ];
        for (op, path, body) in steps {
            let start = Instant::now();
            match conn.call(hyper::Method::POST, &path, &body).await {
                Ok((status, _)) => report.record(op, start.elapsed(), status),
                Err(_) => report.errors += 1,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(args()?);
    // Distinct iupds on every run, so that each run creates new positions.
    let run = jiff::Timestamp::now().as_second().unsigned_abs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = runtime.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let conn = Connection {
                http: mpayd::http_client::Connection::new(&args.target).context("--target")?,
                key: args.key.clone(),
            };
            tasks.push(tokio::spawn(worker(
                Arc::clone(&args),
                run,
                Arc::clone(&next),
                conn,
            )));
        }
        let mut report = Report::default();
        for t in tasks {
            report.merge(t.await?);
        }
        anyhow::Ok(report)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let writes: usize = report.micros.values().map(Vec::len).sum();
    println!(
        "api {}: {} connections, {writes} writes in {secs:.1}s: {:.0} writes/s, {} transport errors",
        args.scenario,
        args.connections,
        writes as f64 / secs,
        report.errors
    );
    for (op, micros) in &report.micros {
        let mut sorted = micros.clone();
        sorted.sort_unstable();
        println!(
            "  {op:8} n={:7} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
            sorted.len(),
            percentile_ms(&sorted, 0.5),
            percentile_ms(&sorted, 0.9),
            percentile_ms(&sorted, 0.99),
            percentile_ms(&sorted, 1.0),
        );
    }
    for ((op, status), n) in &report.statuses {
        println!("  {op:8} HTTP {status}: {n}");
    }
    Ok(())
}
