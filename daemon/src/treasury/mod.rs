//! Treasury statements: what the authority's bank says reached its accounts.
//!
//! - `camt`: the ISO 20022 bank-to-customer statement, camt.053 (version 001.02, the one Italian
//!   banks send, and the later ones, which keep the same elements).

//! - `csv`: the treasurer's giornale di cassa, through the entity's column mapping.

pub mod camt;
pub mod csv;
