//! Live counters for `/metrics` (OpenMetrics text) and the console.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::store::Store;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    positions: Gauge,
    commits: Gauge,
    flushes: Gauge,
    disk_bytes: Gauge,
    healthy: Gauge,
    rss: Gauge,
    journal_body_bytes: Gauge,
    /// Exchanges with the node by operation, outcome and fault code.
    pub station_requests: Family<Labels, Counter>,
    /// Time to answer the node, by operation, in seconds.
    pub station_latency: Family<Labels, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3 s: the node's SLA is 2 s, our aim two orders of magnitude under it.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mpay");
        registry.register(
            "build",
            "mpayd build information",
            Info::new(vec![("version", mpay_common::VERSION)]),
        );
        let m = Metrics {
            positions: Gauge::default(),
            commits: Gauge::default(),
            flushes: Gauge::default(),
            disk_bytes: Gauge::default(),
            healthy: Gauge::default(),
            rss: Gauge::default(),
            journal_body_bytes: Gauge::default(),
            station_requests: Family::default(),
            station_latency: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "positions",
            "Debt positions in the store",
            m.positions.clone(),
        );
        registry.register(
            "store_commits",
            "Durable commits since start",
            m.commits.clone(),
        );
        registry.register(
            "store_flushes",
            "fsyncs since start; commits/flushes is the group-commit factor",
            m.flushes.clone(),
        );
        registry.register(
            "store_disk_bytes",
            "Size of the store on disk",
            m.disk_bytes.clone(),
        );
        registry.register(
            "store_healthy",
            "1 while no flush has failed",
            m.healthy.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of mpayd",
            m.rss.clone(),
        );
        registry.register(
            "journal_body_bytes",
            "Bytes of message bodies kept in the traffic journal",
            m.journal_body_bytes.clone(),
        );
        registry.register(
            "station_requests",
            "Exchanges with the node by operation, outcome and fault code",
            m.station_requests.clone(),
        );
        registry.register(
            "station_latency_seconds",
            "Time to answer the node, by operation",
            m.station_latency.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn observe(&self, exchange: &crate::journal::Exchange) {
        let labels = vec![
            ("operation".to_string(), exchange.operation.clone()),
            ("outcome".to_string(), exchange.outcome().to_string()),
            (
                "fault".to_string(),
                exchange.fault_code.clone().unwrap_or_default(),
            ),
        ];
        self.station_requests.get_or_create(&labels).inc();
        self.station_latency
            .get_or_create(&vec![("operation".to_string(), exchange.operation.clone())])
            .observe(exchange.latency_us as f64 / 1e6);
    }

    /// Refreshes the gauges and renders everything.
    pub fn render(&self, store: &Store) -> Result<String, std::fmt::Error> {
        let stats = store.stats();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.positions.set(as_i64(stats.positions));
        self.commits.set(as_i64(stats.commits));
        self.flushes.set(as_i64(stats.flushes));
        self.disk_bytes.set(as_i64(stats.disk_bytes));
        self.healthy.set(i64::from(store.healthy().is_ok()));
        self.journal_body_bytes
            .set(as_i64(store.journal_body_bytes()));
        if let Some(rss) = rss_bytes() {
            self.rss.set(rss);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
