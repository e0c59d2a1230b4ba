//! mpayd: the pagoPA station daemon. The binary's `main.rs` is the command line; this library is
//! everything else, so the tests and benchmarks drive the same code.

pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fdr;
pub mod http_client;
pub mod journal;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod node;
pub mod pagopa;
pub mod progress;
pub mod rpc;
pub mod service;
pub mod simulator;
pub mod station;
pub mod station_http;
pub mod telemetry;
pub mod treasury;

/// The store is its own crate, the only one that depends on a storage engine.
pub use mpay_store as store;

use std::sync::Arc;

/// What every adapter shares: the configuration, the store, the clock and the live counters.
pub struct App {
    pub config: Arc<config::Config>,
    pub store: Arc<store::Store>,
    pub metrics: metrics::Metrics,
    pub clock: clock::Clock,
    /// The station's traffic second by second, for the console.
    pub live: live::LiveStats,
}
