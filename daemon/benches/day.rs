//! A reconciliation day, scaled: N positions each paid once via pagoPA, their receipts reported
//! in flows of 1,000 rows and credited by one camt.053 per entity, then every entity's daily
//! report written. Prints each phase's time and the process's RSS.
//!
//!     cargo bench -p mpayd --bench day -- --receipts 100000
//!
//! The flows go through `service::flows::receive` one after the other, as the node fetch hands
//! them over (the HTTP of the fetch itself is left out); the payments are set up first through
//! the store, eight writers at a time, and not timed with the day.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use mpay_common::ledger::{Actor, Change, Event, PaidTransfer};
use mpayd::daemon::{Create, Daemon};
use mpayd::service::{flows, report, treasury};
use mpayd::simulator::settlement::{Credit, Row, flow_document, statement_document};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    mpayd::metrics::rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

fn phase(name: &str, started: Instant) {
    println!(
        "{name:<44} {:>8.0} ms   RSS {:>5.0} MiB",
        started.elapsed().as_secs_f64() * 1000.0,
        rss_mib()
    );
}

fn main() -> anyhow::Result<()> {
    let mut receipts: u64 = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--receipts" {
            receipts = args.next().and_then(|v| v.parse().ok()).unwrap_or(receipts);
        }
    }
    let dir = tempfile::tempdir()?;
    let any = "127.0.0.1:0".parse()?;
    let config = mpayd::demo::config(dir.path(), any, any);
    let daemon = Daemon::open_with(config.clone(), Create::Yes)?;
    let app = Arc::clone(&daemon.app);

    // Positions, then one payment each (not timed with the day).
    let started = Instant::now();
    mpayd::demo::generate(&app.store, &config, receipts, 2026, &mut |_| {})?;
    phase("set-up: positions generated", started);
    let started = Instant::now();
    let mut todo = Vec::new();
    let mut from = 0;
    loop {
        let chunk = app.store.positions(from, 4096)?;
        let Some((last, _)) = chunk.last() else { break };
        from = last + 1;
        for (id, p) in chunk {
            if p.cancelled || p.has_payments() {
                continue;
            }
            let Some(inst) = p.instalments().find(|i| i.withdrawn.is_none()) else {
                continue;
            };
            todo.push((id, p.entity.clone(), inst.terms.clone()));
        }
    }
    let today = app.clock.today();
    let paid_at = Timestamp::now();
    let per = todo.len().div_ceil(8);
    std::thread::scope(|s| {
        for part in todo.chunks(per.max(1)) {
            let app = &app;
            s.spawn(move || {
                for (id, _, terms) in part {
                    let change = Change::PaidViaPagoPa {
                        nav: terms.nav.clone(),
                        receipt_id: format!("R-{}", terms.nav),
                        amount: terms.amount,
                        psp: "BCITITMM".into(),
                        paid_at,
                        transfers: terms
                            .transfers
                            .iter()
                            .map(|t| PaidTransfer {
                                id: t.id,
                                amount: t.amount,
                                beneficiary: t.beneficiary.to_string(),
                                account: None,
                            })
                            .collect(),
                        flags: Vec::new(),
                    };
                    let _ = app
                        .store
                        .append(*id, Event::new(paid_at, Actor::Node, change));
                }
            });
        }
    });
    phase(&format!("set-up: {} payments", todo.len()), started);

    // The day: flows of 1,000 rows per entity, received one after the other.
    let mut rows_of: std::collections::BTreeMap<String, Vec<Row>> = Default::default();
    for (_, entity, terms) in &todo {
        let rows = rows_of.entry(entity.to_string()).or_default();
        for t in &terms.transfers {
            rows.push(Row {
                iuv: terms.nav.iuv().to_string(),
                iur: format!("R-{}", terms.nav),
                transfer: t.id,
                cents: t.amount.get(),
                code: 0,
                date: today,
            });
        }
    }
    let mut documents = Vec::new();
    for (entity, rows) in &rows_of {
        for (n, chunk) in rows.chunks(1000).enumerate() {
            let id = format!("{today}BCITITMM-{n:05}");
            let xml = flow_document(
                &id,
                "2026-11-30T06:00:00",
                today,
                "BCITITMM",
                entity,
                chunk,
                None,
            );
            let total: i64 = chunk.iter().map(|r| r.cents).sum();
            documents.push((entity.clone(), id, xml, total));
        }
    }
    let total_rows: usize = rows_of.values().map(Vec::len).sum();
    println!(
        "the day: {} receipts, {total_rows} rows in {} flows",
        todo.len(),
        documents.len()
    );
    let day = Instant::now();
    let started = Instant::now();
    for (entity, _, xml, _) in &documents {
        let Some(e) = app
            .config
            .entities
            .iter()
            .find(|e| e.fiscal_code.as_str() == entity)
        else {
            continue;
        };
        flows::receive(&app, e, &Actor::Node, xml.as_bytes(), None)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    phase("flows received, stored, facts appended", started);

    let started = Instant::now();
    for e in &app.config.entities {
        let credits: Vec<Credit> = documents
            .iter()
            .filter(|(entity, ..)| entity == e.fiscal_code.as_str())
            .map(|(_, id, _, total)| Credit {
                cents: *total,
                reference: format!("SOP-{id}"),
                remittance: format!("/PUR/LGPE-RIVERSAMENTO/URI/{id}"),
            })
            .collect();
        if credits.is_empty() {
            continue;
        }
        let Some(iban) = e.bank_accounts.first() else {
            continue;
        };
        let xml = statement_document(
            &format!("STMT-{}", e.fiscal_code),
            iban.as_ref(),
            today,
            &credits,
        );
        treasury::receive(&app, e, &Actor::System, xml.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    phase("camt.053 credited every flow", started);

    let started = Instant::now();
    let entities: Vec<_> = app
        .config
        .entities
        .iter()
        .map(|e| e.fiscal_code.clone())
        .collect();
    let written =
        report::write_day(&app, &entities, today).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let report_rows: u64 = written.iter().map(|w| w.rows).sum();
    phase(
        &format!("daily reports written ({report_rows} rows)"),
        started,
    );
    phase("the day, end to end", day);

    let started = Instant::now();
    let (cf, id, _, _) = &documents[documents.len() / 2];
    let cf: mpay_common::ids::EntityFiscalCode = cf.parse()?;
    let revisions = flows::get(&app, &cf, id).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    phase(
        &format!(
            "one 1,000-row flow reclassified ({} rows)",
            revisions[0].rows.len()
        ),
        started,
    );
    app.store.close()?;
    Ok(())
}
