//! The station's traffic second by second, for the console's dashboard: counts by operation and
//! outcome, faults, and latency percentiles over the last `SECONDS` seconds. In memory only
//! (the journal keeps every exchange for good); bounded: a fixed ring of seconds, and a bounded
//! sample of latencies per second.

use std::sync::Mutex;

use jiff::Timestamp;
use mpay_common::console::TrafficSecond;

/// Seconds kept.
pub const SECONDS: usize = 120;
/// Latencies kept per second for the percentiles (the first ones of that second).
const SAMPLES: usize = 4096;

#[derive(Default)]
struct Second {
    second: i64,
    counts: Vec<(String, String, u64)>,
    faults: u64,
    latencies: Vec<u32>,
}

#[derive(Default)]
struct Ring {
    seconds: Vec<Second>,
    receipts: u64,
    double_payments: u64,
}

pub struct LiveStats {
    started_at: Timestamp,
    ring: Mutex<Ring>,
}

impl Default for LiveStats {
    fn default() -> Self {
        LiveStats::new(Timestamp::now())
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl LiveStats {
    pub fn new(started_at: Timestamp) -> LiveStats {
        LiveStats {
            started_at,
            ring: Mutex::new(Ring::default()),
        }
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Counts one exchange that ended at `at`.
    pub fn record(&self, at: Timestamp, exchange: &crate::journal::Exchange) {
        let second = at.as_second();
        let outcome = exchange.outcome();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if outcome == "OK" && exchange.operation.starts_with("paSendRT") {
            ring.receipts += 1;
        }
        if ring.seconds.len() < SECONDS {
            ring.seconds.resize_with(SECONDS, Second::default);
        }
        let slot = &mut ring.seconds[second.rem_euclid(SECONDS as i64) as usize];
        if slot.second != second {
            *slot = Second {
                second,
                ..Second::default()
            };
        }
        match slot
            .counts
            .iter_mut()
            .find(|(op, out, _)| *op == exchange.operation && out == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => slot
                .counts
                .push((exchange.operation.clone(), outcome.to_string(), 1)),
        }
        if exchange.fault_code.is_some() {
            slot.faults += 1;
        }
        if slot.latencies.len() < SAMPLES {
            slot.latencies
                .push(u32::try_from(exchange.latency_us).unwrap_or(u32::MAX));
        }
    }

    /// The last `SECONDS` seconds up to `now`, oldest first; seconds without traffic included.
    pub fn seconds(&self, now: Timestamp) -> Vec<TrafficSecond> {
        let now = now.as_second();
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (now - SECONDS as i64 + 1..=now)
            .map(|second| {
                let found = ring
                    .seconds
                    .get(second.rem_euclid(SECONDS as i64) as usize)
                    .filter(|s| s.second == second);
                match found {
                    None => TrafficSecond {
                        second,
                        ..TrafficSecond::default()
                    },
                    Some(s) => {
                        let mut sorted = s.latencies.clone();
                        sorted.sort_unstable();
                        TrafficSecond {
                            second,
                            counts: s.counts.clone(),
                            faults: s.faults,
                            p50_us: percentile(&sorted, 0.50),
                            p99_us: percentile(&sorted, 0.99),
                        }
                    }
                }
            })
            .collect()
    }

    /// Receipts answered OK since the daemon started.
    pub fn receipts(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).receipts
    }

    /// A new receipt was stored; `double` if it paid a notice already paid or no longer due.
    pub fn receipt_stored(&self, double: bool) {
        if double {
            self.ring
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .double_payments += 1;
        }
    }

    /// Double payments received since the daemon started.
    pub fn double_payments(&self) -> u64 {
        self.ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .double_payments
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Exchange;

    #[test]
    fn seconds_count_and_rank_latencies() {
        let live = LiveStats::new(Timestamp::UNIX_EPOCH);
        let at = |s: i64| Timestamp::from_second(s).expect("instant");
        for latency in 1..=100 {
            let e = Exchange {
                operation: "paVerifyPaymentNotice".into(),
                latency_us: latency,
                ..Exchange::default()
            };
            live.record(at(1_000), &e);
        }
        let receipt = Exchange {
            operation: "paSendRTV2".into(),
            ..Exchange::default()
        };
        live.record(at(1_001), &receipt);
        let seconds = live.seconds(at(1_001));
        assert_eq!(seconds.len(), SECONDS);
        let s1000 = &seconds[SECONDS - 2];
        assert_eq!(s1000.second, 1_000);
        assert_eq!(
            s1000.counts,
            vec![("paVerifyPaymentNotice".into(), "OK".into(), 100)]
        );
        assert_eq!((s1000.p50_us, s1000.p99_us), (50, 99));
        assert_eq!(live.receipts(), 1);
        // A second that came round the ring again replaces the old one.
        live.record(at(1_000 + SECONDS as i64), &receipt);
        assert_eq!(live.receipts(), 2);
        let later = live.seconds(at(1_000 + SECONDS as i64));
        assert!(later.iter().all(|s| s.second != 1_000));
    }
}
