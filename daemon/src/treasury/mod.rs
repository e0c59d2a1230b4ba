//! Treasury statements: what the authority's bank says reached its accounts.
//!
//! - `camt`: the ISO 20022 bank-to-customer statement, camt.053 (version 001.02, the one Italian
//!   banks send, and the later ones, which keep the same elements).

pub mod camt;
