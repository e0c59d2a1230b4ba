//! Reconciliation load generator: a reporting flow of N rows parsed, stored and classified,
//! then read back. Prints timings and RSS.
//!
//!     cargo bench -p mpayd --bench reconcile -- --rows 100000
//!
//! The flow's rows name IUVs no position has (each is looked up and classed unknown), so the
//! figures are the reader's, the store's and the classification's, without ledger appends.

use std::time::Instant;

use mpay_common::ledger::Actor;
use mpayd::daemon::{Create, Daemon};
use mpayd::service::flows;
use mpayd::simulator::settlement::{Row, flow_document};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    mpayd::metrics::rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

fn flow(entity: &str, rows: usize) -> String {
    let day = jiff::civil::date(2026, 11, 28);
    let rows: Vec<Row> = (0..rows)
        .map(|i| Row {
            iuv: format!("0199{i:013}"),
            iur: format!("r{i:031}"),
            transfer: 1,
            cents: 10_00,
            code: 0,
            date: day,
        })
        .collect();
    let time = "2026-11-29T10:00:00";
    flow_document(
        "2026-11-29BCITITMM-BENCH",
        time,
        day,
        "BCITITMM",
        entity,
        &rows,
        None,
    )
}

fn main() -> anyhow::Result<()> {
    let mut rows = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rows" {
            rows = args.next().and_then(|v| v.parse().ok()).unwrap_or(rows);
        }
    }
    let dir = tempfile::tempdir()?;
    let any = "127.0.0.1:0".parse()?;
    let config = mpayd::demo::config(dir.path(), any, any);
    let entity = config.entities[0].clone();
    let daemon = Daemon::open_with(config, Create::Yes)?;
    let app = &daemon.app;
    let xml = flow(entity.fiscal_code.as_str(), rows);
    println!(
        "flow of {rows} rows: {:.1} MiB",
        xml.len() as f64 / 1048576.0
    );

    let started = Instant::now();
    let parsed = mpayd::pagopa::flow::parse(&xml).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "parse: {:>8.0} ms ({} rows), RSS {:.0} MiB",
        started.elapsed().as_secs_f64() * 1000.0,
        parsed.rows.len(),
        rss_mib()
    );
    drop(parsed);

    let started = Instant::now();
    let received = flows::receive(app, &entity, &Actor::System, xml.as_bytes(), None)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!(
        "receive (parse, look up every IUV, store, classify): {:>8.0} ms, RSS {:.0} MiB",
        started.elapsed().as_secs_f64() * 1000.0,
        rss_mib()
    );
    drop(received);

    let started = Instant::now();
    let revisions = flows::get(app, &entity.fiscal_code, "2026-11-29BCITITMM-BENCH")
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!(
        "read back and reclassify: {:>8.0} ms ({} rows)",
        started.elapsed().as_secs_f64() * 1000.0,
        revisions.iter().map(|r| r.rows.len()).sum::<usize>()
    );

    app.store.close()?;
    Ok(())
}
