//! The application's clock. Every rule that depends on the time (a notice due today, an expired
//! fine, a receipt's day, a job's start) asks the clock held by `App`, so that tests can run the
//! daemon's logic at a chosen date instead of today's. Days are Rome's (`mpay_common::calendar`).

use std::sync::{Arc, Mutex};

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
pub use mpay_common::calendar::{rome, rome_date};

#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    /// A clock that moves only when told: for tests and simulations.
    Manual(Mutex<Timestamp>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock stopped at `at`, moved by `set` and `advance`.
    pub fn manual(at: Timestamp) -> Clock {
        Clock(Arc::new(Source::Manual(Mutex::new(at))))
    }

    pub fn now(&self) -> Timestamp {
        match &*self.0 {
            Source::System => Timestamp::now(),
            Source::Manual(at) => *at.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Today in Rome.
    pub fn today(&self) -> Date {
        rome_date(self.now())
    }

    /// Moves a manual clock to `at`; a system clock ignores it.
    pub fn set(&self, at: Timestamp) {
        if let Source::Manual(t) = &*self.0 {
            *t.lock().unwrap_or_else(|p| p.into_inner()) = at;
        }
    }

    /// Moves a manual clock forward (or back) by `by`.
    pub fn advance(&self, by: SignedDuration) {
        if let Source::Manual(t) = &*self.0 {
            let mut at = t.lock().unwrap_or_else(|p| p.into_inner());
            *at = at.checked_add(by).unwrap_or(*at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_rome_s_day() {
        // 00:30 in Rome on 1 March is still 28 February in UTC.
        let at: Timestamp = "2026-02-28T23:30:00Z".parse().expect("instant");
        let clock = Clock::manual(at);
        assert_eq!(clock.today(), jiff::civil::date(2026, 3, 1));
        // Summer time: 00:30 in Rome is 22:30 UTC the day before.
        clock.set("2026-07-14T22:30:00Z".parse().expect("instant"));
        assert_eq!(clock.today(), jiff::civil::date(2026, 7, 15));
        clock.advance(SignedDuration::from_hours(-1));
        assert_eq!(clock.today(), jiff::civil::date(2026, 7, 14));
    }
}
