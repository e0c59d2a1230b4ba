//! The authorities' calendar: Europe/Rome civil time, from the time-zone data built into every
//! mpay binary (jiff's bundled tzdb), so that a host without zoneinfo never puts Italy in UTC,
//! where the hour after midnight would still be yesterday.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// The authorities' time zone.
pub fn rome() -> TimeZone {
    // Bundled with the binary, so the lookup cannot miss; UTC only if the build lost it.
    TimeZone::get("Europe/Rome").unwrap_or(TimeZone::UTC)
}

/// The Rome civil date and time of an instant.
pub fn rome_datetime(at: Timestamp) -> jiff::civil::DateTime {
    at.to_zoned_datetime(rome()).datetime()
}

/// The Rome calendar day of an instant.
pub fn rome_date(at: Timestamp) -> Date {
    at.to_zoned_datetime(rome()).date()
}
