//! Store load generator: bulk load, lookups, durable appends, group commit, reopen.
//! Prints throughput, latency percentiles, RSS and disk size.
//!
//!     cargo bench -p mpayd --bench store -- --positions 1000000 --engine fjall
//!
//! Options: --engine sled|fjall (default sled), --positions N (default 1,000,000), --lookups N (200,000), --committers N (64),
//! --commits N per committer (200), --reads N (lookups after the reopen, for the memory curve,
//! 1,000,000), --cache-mib N (the daemon's default), --dir PATH (default: a temporary folder, removed at the end).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use mpay_common::ledger::{Actor, Change, Event};
use mpayd::demo::{self, Builder, Kind};
use mpayd::store::Engine;
use mpayd::store::{Store, StoreOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    positions: u64,
    lookups: u64,
    committers: u64,
    commits: u64,
    reads: u64,
    cache_mib: u64,
    engine: Engine,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        positions: 1_000_000,
        lookups: 200_000,
        committers: 64,
        commits: 200,
        reads: 1_000_000,
        cache_mib: StoreOptions::default().cache_bytes >> 20,
        engine: Engine::default(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| v.replace('_', "").parse::<u64>().expect("a number");
        match flag.as_str() {
            "--positions" => a.positions = num(value()),
            "--lookups" => a.lookups = num(value()),
            "--committers" => a.committers = num(value()),
            "--commits" => a.commits = num(value()),
            "--reads" => a.reads = num(value()),
            "--cache-mib" => a.cache_mib = num(value()),
            "--dir" => a.dir = Some(PathBuf::from(value())),
            "--engine" => a.engine = value().parse().expect("sled or fjall"),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn rss_mib() -> f64 {
    mpayd::metrics::rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label}: n={} p50={:.1}µs p99={:.1}µs p99.9={:.1}µs max={:.1}µs",
        samples.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(0.999).as_secs_f64() * 1e6,
        at(1.0).as_secs_f64() * 1e6,
    );
}

/// The smallest variation: an operator's note, appended to a position's ledger.
fn adjustment() -> Event {
    Event::new(
        Timestamp::now(),
        Actor::Operator("bench".into()),
        Change::OperatorAdjustment {
            note: "checked".into(),
        },
    )
}

fn main() {
    let args = args();
    let scratch = tempfile::tempdir_in(".").expect("temporary folder");
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("store"));
    let config = demo::config(
        &dir,
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
    );
    let entity = &config.entities[0];
    let province = &config.entities[2];
    let options = StoreOptions {
        engine: args.engine,
        cache_bytes: args.cache_mib << 20,
        ..StoreOptions::default()
    };
    println!(
        "store bench: {} positions in {} on {}, cache {} MiB",
        args.positions,
        dir.display(),
        args.engine,
        options.cache_bytes >> 20
    );

    // 1. Bulk load, one instalment with one transfer per position, in batches of 1,000.
    let store = Store::open(&dir, &options).expect("open");
    let mut builder = Builder::new(entity, province, 1);
    let (mut store_time, started) = (Duration::ZERO, Instant::now());
    let mut loaded = 0u64;
    let mut peak_rss = 0f64;
    while loaded < args.positions {
        let n = (args.positions - loaded).min(1_000);
        let range = store.reserve_sequence(&entity.fiscal_code, n).expect("seq");
        let first = range.start;
        let mut navs = range.map(|s| entity.iuv.notice(s).expect("nav"));
        let events: Vec<Event> = (first..first + n)
            .map(|i| {
                let data = builder
                    .position(i, Kind::Canteen, &mut navs)
                    .expect("position");
                Event::new(Timestamp::now(), Actor::System, Change::Loaded(data))
            })
            .collect();
        let t = Instant::now();
        let results = store.load_many(&entity.fiscal_code, events).expect("load");
        store_time += t.elapsed();
        assert!(results.iter().all(Result::is_ok));
        loaded += n;
        if loaded.is_multiple_of(100_000) {
            peak_rss = peak_rss.max(rss_mib());
            println!(
                "  {loaded:>10} loaded, {:.0}/s, RSS {:.0} MiB",
                loaded as f64 / started.elapsed().as_secs_f64(),
                rss_mib()
            );
        }
    }
    let total = started.elapsed();
    peak_rss = peak_rss.max(rss_mib());
    println!(
        "bulk load: {loaded} positions in {:.1}s: {:.0} positions/s end to end, {:.0}/s in the store; peak RSS {peak_rss:.0} MiB",
        total.as_secs_f64(),
        loaded as f64 / total.as_secs_f64(),
        loaded as f64 / store_time.as_secs_f64(),
    );
    let disk = dir_bytes(&dir);
    println!(
        "disk: {:.1} MiB, {:.0} bytes/position",
        disk as f64 / 1048576.0,
        disk as f64 / loaded as f64
    );

    // 2. Lookups by NAV, uniformly at random.
    let mut rng = fastrand::Rng::with_seed(9);
    let mut samples = Vec::with_capacity(args.lookups as usize);
    let t = Instant::now();
    for _ in 0..args.lookups {
        let nav = entity.iuv.notice(rng.u64(..loaded)).expect("nav");
        let s = Instant::now();
        let found = store.by_nav(&entity.fiscal_code, &nav).expect("read");
        samples.push(s.elapsed());
        assert!(found.is_some());
    }
    println!(
        "lookup by NAV: {:.0}/s single thread",
        args.lookups as f64 / t.elapsed().as_secs_f64()
    );
    percentiles("lookup by NAV", samples);

    // 3. One durable append at a time (event + snapshot + fsync).
    let mut samples = Vec::new();
    for _ in 0..2_000 {
        let id = rng.u64(..loaded);
        let event = adjustment();
        let s = Instant::now();
        store.append(id, event).expect("append");
        samples.push(s.elapsed());
    }
    percentiles("durable append, 1 committer", samples);

    // 4. Group commit: many committers at once.
    let store = Arc::new(store);
    let flushes_before = store.stats().flushes;
    let t = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.committers)
            .map(|c| {
                let store = Arc::clone(&store);
                let commits = args.commits;
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(c);
                    let mut lat = Vec::with_capacity(commits as usize);
                    for _ in 0..commits {
                        let event = adjustment();
                        let s = Instant::now();
                        store.append(rng.u64(..loaded), event).expect("append");
                        lat.push(s.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("committer"))
            .collect()
    });
    let elapsed = t.elapsed();
    let commits = latencies.len() as f64;
    let flushes = store.stats().flushes - flushes_before;
    println!(
        "group commit, {} committers: {:.0} durable commits/s, {:.1} commits per fsync",
        args.committers,
        commits / elapsed.as_secs_f64(),
        commits / flushes.max(1) as f64
    );
    percentiles("group commit latency", latencies);
    println!("RSS after the run: {:.0} MiB", rss_mib());

    // 5. Reopen.
    let store = Arc::into_inner(store).expect("single owner");
    store.close().expect("close");
    drop(store);
    let t = Instant::now();
    let store = Store::open(&dir, &options).expect("reopen");
    let reopen = t.elapsed();
    assert_eq!(store.stats().positions, loaded);
    println!("reopen: {:.2}s", reopen.as_secs_f64());

    // 6. Memory as the store is read: random lookups over every position after the reopen
    // (sled keeps every page it has touched; fjall keeps what its cache holds).
    let start = rss_mib();
    let mut curve = Vec::new();
    let step = (args.reads / 5).max(1);
    // The last fifth is timed: by then the engine's cache holds what it can of the store.
    let mut warm = Vec::with_capacity(step as usize);
    for n in 1..=args.reads {
        let nav = entity.iuv.notice(rng.u64(..loaded)).expect("nav");
        let s = Instant::now();
        store.by_nav(&entity.fiscal_code, &nav).expect("read");
        if n > args.reads - step {
            warm.push(s.elapsed());
        }
        if n % step == 0 {
            curve.push(format!("{:.0}", rss_mib()));
        }
    }
    println!(
        "RSS as the reopened store is read: {start:.0} MiB, then {} MiB after each fifth of {} random lookups",
        curve.join(" / "),
        args.reads
    );
    percentiles("lookup by NAV, last fifth of those", warm);
}
