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

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn flow(entity: &str, rows: usize) -> String {
    let mut xml = String::with_capacity(rows * 420 + 1024);
    xml.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <FlussoRiversamento xmlns=\"http://www.digitpa.gov.it/schemas/2011/Pagamenti/\">\
         <versioneOggetto>1.0</versioneOggetto>\
         <identificativoFlusso>2026-11-29BCITITMM-BENCH</identificativoFlusso>\
         <dataOraFlusso>2026-11-29T10:00:00</dataOraFlusso>\
         <identificativoUnivocoRegolamento>SCT-BENCH</identificativoUnivocoRegolamento>\
         <dataRegolamento>2026-11-29</dataRegolamento><istitutoMittente>\
         <identificativoUnivocoMittente><tipoIdentificativoUnivoco>B</tipoIdentificativoUnivoco>\
         <codiceIdentificativoUnivoco>BCITITMM</codiceIdentificativoUnivoco>\
         </identificativoUnivocoMittente></istitutoMittente><istitutoRicevente>\
         <identificativoUnivocoRicevente><tipoIdentificativoUnivoco>G</tipoIdentificativoUnivoco>\
         <codiceIdentificativoUnivoco>{entity}</codiceIdentificativoUnivoco>\
         </identificativoUnivocoRicevente></istitutoRicevente>\
         <numeroTotalePagamenti>{rows}</numeroTotalePagamenti>\
         <importoTotalePagamenti>{}.00</importoTotalePagamenti>",
        rows * 10
    ));
    for i in 0..rows {
        xml.push_str(&format!(
            "<datiSingoliPagamenti><identificativoUnivocoVersamento>0199{i:013}\
             </identificativoUnivocoVersamento><identificativoUnivocoRiscossione>r{i:031}\
             </identificativoUnivocoRiscossione><indiceDatiSingoloPagamento>1\
             </indiceDatiSingoloPagamento><singoloImportoPagato>10.00</singoloImportoPagato>\
             <codiceEsitoSingoloPagamento>0</codiceEsitoSingoloPagamento>\
             <dataEsitoSingoloPagamento>2026-11-28</dataEsitoSingoloPagamento>\
             </datiSingoliPagamenti>"
        ));
    }
    xml.push_str("</FlussoRiversamento>");
    xml
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
