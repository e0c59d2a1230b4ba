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
    commits_since_start: Gauge,
    flushes: Gauge,
    disk_bytes: Gauge,
    healthy: Gauge,
    rss: Gauge,
    journal_body_bytes: Gauge,
    engine_cache_limit: Gauge,
    engine_cache: Gauge,
    engine_write_buffers: Gauge,
    position_cache: Gauge,
    position_cache_limit: Gauge,
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
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let positions = gauge(&mut registry, "positions", "Debt positions in the store");
        let commits = gauge(
            &mut registry,
            "store_commits",
            "The store's last commit number (it counts across restarts)",
        );
        let commits_since_start = gauge(
            &mut registry,
            "store_commits_since_start",
            "Durable commits since start; commits_since_start/flushes is the group-commit factor",
        );
        let flushes = gauge(&mut registry, "store_flushes", "fsyncs since start");
        let disk_bytes = gauge(
            &mut registry,
            "store_disk_bytes",
            "Size of the store on disk",
        );
        let healthy = gauge(
            &mut registry,
            "store_healthy",
            "1 while no flush has failed",
        );
        let rss = gauge(
            &mut registry,
            "resident_memory_bytes",
            "Resident memory of mpayd",
        );
        let journal_body_bytes = gauge(
            &mut registry,
            "journal_body_bytes",
            "Bytes of message bodies kept in the traffic journal",
        );
        let engine_cache_limit = gauge(
            &mut registry,
            "store_engine_cache_limit_bytes",
            "The storage engine's cache as configured ([store] cache_mib)",
        );
        let engine_cache = gauge(
            &mut registry,
            "store_engine_cache_bytes",
            "What the storage engine's block cache holds (fjall; sled does not tell)",
        );
        let engine_write_buffers = gauge(
            &mut registry,
            "store_engine_write_buffer_bytes",
            "The storage engine's write buffers (fjall's memtables)",
        );
        let position_cache = gauge(
            &mut registry,
            "store_position_cache_entries",
            "Decoded positions in the daemon's cache",
        );
        let position_cache_limit = gauge(
            &mut registry,
            "store_position_cache_limit_entries",
            "The most decoded positions cached ([store] position_cache)",
        );
        let station_requests = Family::<Labels, Counter>::default();
        registry.register(
            "station_requests",
            "Exchanges with the node by operation, outcome and fault code",
            station_requests.clone(),
        );
        let station_latency = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "station_latency_seconds",
            "Time to answer the node, by operation",
            station_latency.clone(),
        );
        Metrics {
            registry,
            positions,
            commits,
            commits_since_start,
            flushes,
            disk_bytes,
            healthy,
            rss,
            journal_body_bytes,
            engine_cache_limit,
            engine_cache,
            engine_write_buffers,
            position_cache,
            position_cache_limit,
            station_requests,
            station_latency,
        }
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
        self.commits_since_start
            .set(as_i64(stats.commits_since_start));
        self.flushes.set(as_i64(stats.flushes));
        self.disk_bytes.set(as_i64(stats.disk_bytes));
        self.engine_cache_limit
            .set(as_i64(stats.engine_cache_limit_bytes));
        self.engine_cache
            .set(as_i64(stats.engine_cache_bytes.unwrap_or(0)));
        self.engine_write_buffers
            .set(as_i64(stats.engine_write_buffer_bytes.unwrap_or(0)));
        self.position_cache
            .set(as_i64(stats.position_cache_entries));
        self.position_cache_limit
            .set(as_i64(stats.position_cache_limit));
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
pub fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
