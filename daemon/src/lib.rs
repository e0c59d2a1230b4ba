//! mpayd: the pagoPA station daemon. The binary's `main.rs` is the command line; this library is
//! everything else, so the tests and benchmarks drive the same code.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod http_client;
pub mod store;
pub mod telemetry;

use std::sync::Arc;

/// What every adapter shares: the configuration and the store.
pub struct App {
    pub config: Arc<config::Config>,
    pub store: Arc<store::Store>,
}
