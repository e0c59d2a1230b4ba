//! mpay's pure domain: identifiers, money, the position model and its variation ledger.
//!
//! Nothing here does IO or knows about tokio, sled or HTTP: the daemon and the console build on
//! these types, and every interface sees the same rules.

pub mod calendar;
pub mod console;
pub mod ids;
pub mod ledger;
pub mod model;
pub mod money;
pub mod reconcile;
pub mod requests;
pub mod statement;
pub mod worklist;

/// The version every mpay binary reports, for `--version` and the console's handshake.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
