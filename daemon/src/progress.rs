//! How far a long command has got (demo data, a restore, a backup), for the person waiting: on
//! a terminal one line that rewrites itself, otherwise (a log, a pipe) a line every ten seconds.
//! Written to standard error, so that a command's output stays what scripts read.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: Option<u64>,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
}

impl Progress {
    /// `what` is counted in `unit`s, out of `total` when it is known.
    pub fn new(what: &'static str, unit: &'static str, total: Option<u64>) -> Progress {
        Progress {
            what,
            unit,
            total,
            started: Instant::now(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// `done` so far: shown if it is time to.
    pub fn update(&mut self, done: u64) {
        let every = if self.terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(10)
        };
        let first = if self.terminal { Duration::ZERO } else { every };
        let due = match self.last {
            Some(last) => last.elapsed() >= every,
            None => self.started.elapsed() >= first,
        };
        if due {
            self.last = Some(Instant::now());
            self.show(done, false);
        }
    }

    /// The last figure, on its own line; nothing if the work was too quick to have shown any.
    pub fn finish(&mut self, done: u64) {
        if self.last.is_some() {
            self.show(done, true);
        }
    }

    fn show(&self, done: u64, end: bool) {
        let line = self.line(done);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}{}", if end { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn line(&self, done: u64) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        let mut line = format!("{}: {done}", self.what);
        if let Some(total) = self.total.filter(|t| *t > 0) {
            let left = total.saturating_sub(done) as f64 / rate.max(0.001);
            line += &format!(
                " of {total} {} ({:.0} %), {}/s, about {} left",
                self.unit,
                done as f64 * 100.0 / total as f64,
                rate.round(),
                duration(left)
            );
        } else {
            line += &format!(" {}, {}/s", self.unit, rate.round());
        }
        line
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_how_far_and_how_long_is_left() {
        let mut p = Progress::new("demo data", "positions", Some(1000));
        p.started = Instant::now() - Duration::from_secs(10);
        let line = p.line(250);
        assert!(
            line.starts_with("demo data: 250 of 1000 positions (25 %), 25/s"),
            "{line}"
        );
        assert!(line.ends_with("about 30 s left"), "{line}");
        let mut open = Progress::new("restore", "records", None);
        open.started = Instant::now() - Duration::from_secs(2);
        assert_eq!(open.line(4000), "restore: 4000 records, 2000/s");
        assert_eq!(duration(3725.0), "1 h 2 min");
    }
}
