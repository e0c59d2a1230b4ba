//! `mpay`, the operators' console: a terminal UI (`tui`) and a command line (`cli`) over the
//! daemon's RPC (`client`). It knows mpayd only through the contract in
//! `mpay_common::console`; it never opens the store.

pub mod cli;
pub mod client;
pub mod format;
pub mod tui;
