//! pagoPA wire formats: the SOAP codec for the paForNode operations mpay serves as a station.

pub mod flow;
pub mod soap;
