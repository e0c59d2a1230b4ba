//! `mpayd`: the command line of the daemon.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mpayd::config::{Config, LogConfig};
use mpayd::daemon::{Daemon, termination};
use mpayd::{demo, store, telemetry};

// sled allocates on every write; glibc's allocator spent a third of the bulk-load time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mpayd",
    version,
    about = "mpay daemon: pagoPA station for many authorities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Once serving, write the listeners' addresses there as JSON (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Create the store if there is none (the first start of a new installation). Without
        /// it, a missing store stops the daemon instead of starting an empty one.
        #[arg(long)]
        init: bool,
    },
    /// Create the store of a new installation and exit (a store that exists is left as it is).
    Init {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 if valid, 1 with the reason if not.
    CheckConfig { config: PathBuf },
    /// Run the daemon on a built-in demo configuration and generated data.
    Demo {
        /// Folder for the demo's store (created; reused on the next run).
        #[arg(long)]
        data_dir: PathBuf,
        /// How many positions to generate on first run.
        #[arg(long, default_value_t = 5_000)]
        positions: u64,
        /// Seed of the generated data.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9480")]
        admin: SocketAddr,
        /// Station listener address (where the node, or the simulator, calls).
        #[arg(long, default_value = "127.0.0.1:9481")]
        station: SocketAddr,
        /// Authorities' REST API listener address.
        #[arg(long, default_value = "127.0.0.1:9483")]
        api: SocketAddr,
        /// Background payments per second played by the built-in node simulator (0: none).
        #[arg(long, default_value_t = 1.0)]
        traffic: f64,
        /// Every this many seconds, the demo's PSPs report the new receipts in flows and the
        /// treasury credits them, anomalies included (0: never; only with --traffic).
        #[arg(long, default_value_t = 30)]
        settle_every: u64,
        /// The interface the daemon fetches the demo's flows through from the simulated node:
        /// soap (nodeForPa) or fdr (the FdR REST service).
        #[arg(long, value_enum, default_value = "soap")]
        node_interface: NodeChoice,
        /// Once serving, write the listeners' addresses there as JSON (for scripts; lets the
        /// daemon pick free ports with port 0).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Open the operators' console (`mpay`, beside this binary) in this terminal; the demo
        /// stops when it is closed. The daemon's log then goes to DATA_DIR/mpayd.log.
        #[arg(long)]
        console: bool,
    },
    /// Read an API key from stdin and print its SHA-256, for `[[entities.api_keys]] sha256`.
    HashKey,
    /// Take a consistent backup from the running daemon (through its admin listener).
    Backup {
        #[arg(long, short)]
        config: PathBuf,
        /// The backup file to write (not overwritten if it exists).
        output: PathBuf,
    },
    /// Restore a backup into the configured data folder; the daemon must be stopped. The backup
    /// is verified before anything is replaced; the current store is kept aside. With
    /// `--engine`, the store is rebuilt on that engine: the way to move a store between engines.
    Restore {
        #[arg(long, short)]
        config: PathBuf,
        /// sled or fjall; the configuration's `[store] engine` if not given.
        #[arg(long)]
        engine: Option<store::Engine>,
        backup: PathBuf,
    },
    /// Verify a backup file without restoring it; prints its SHA-256.
    VerifyBackup {
        backup: PathBuf,
        /// The SHA-256 that `mpayd backup` printed, kept apart from the file: a file rewritten
        /// since (even with a matching digest inside) is refused.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Run a day's reconciliation now, through the running daemon (its admin listener): fetch
    /// the new flows from the node, reconcile, and write every entity's daily report into
    /// DATA_DIR/outbox/<entity>/<date>.csv and .json. Prints the run's record.
    #[command(alias = "report")]
    Reconcile {
        #[arg(long, short)]
        config: PathBuf,
        /// The day, YYYY-MM-DD (Europe/Rome).
        #[arg(long)]
        date: jiff::civil::Date,
    },
    /// Play pagoPA's node against a station: payments, faults, load; prints a report.
    Simulate(mpayd::simulator::Options),
    /// Serve a fixed SOAP answer and nothing else: the baseline for load figures.
    BareStation {
        #[arg(long, default_value = "127.0.0.1:9482")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpayd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for blocking work (store calls, file IO), per core. tokio's default, 512, is reached
/// under a steady 64-connection load: short blocking calls keep starting threads while others are
/// about to go idle, and every thread keeps its own allocator heap, so the daemon's memory grew
/// with the thread count (350 threads, 1.4 GiB after 200k verifies on 2 cores). The store
/// serialises writes and shares fsyncs among its waiting committers, so a few threads serve as
/// well: on 2 cores, 16 threads answered more verifies and receipts a second than 64 or 512.
/// `MPAY_BLOCKING_THREADS` overrides it.
const BLOCKING_THREADS_PER_CORE: usize = 8;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let blocking = std::env::var("MPAY_BLOCKING_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            BLOCKING_THREADS_PER_CORE * cores
        });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .thread_name("mpayd")
        .build()
        .context("cannot start the runtime")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { config } => {
            let config = Config::load(&config)?;
            let dir = config.store_dir();
            let existed = store::Engine::found_in(&dir);
            let engine = config.store.engine;
            let daemon = Daemon::open_with(config, mpayd::daemon::Create::Yes)?;
            daemon.app.store.close()?;
            match existed {
                Some(e) => println!("{}: a {e} store exists; nothing to do", dir.display()),
                None => println!("{}: a new, empty store ({engine})", dir.display()),
            }
            Ok(())
        }
        Command::Run {
            config,
            ready_file,
            init,
        } => {
            let config = Config::load(&config)?;
            telemetry::init(&config.log).map_err(anyhow::Error::msg)?;
            let create = if init {
                mpayd::daemon::Create::Yes
            } else {
                mpayd::daemon::Create::No
            };
            let daemon = Daemon::open_with(config, create)?;
            runtime()?.block_on(daemon.serve(termination(), |ready| {
                if let Some(path) = &ready_file {
                    mpayd::daemon::write_ready_file(path, ready);
                }
            }))
        }
        Command::CheckConfig { config } => {
            let parsed = Config::load(&config)?;
            println!(
                "{}: valid ({} stations, {} entities)",
                config.display(),
                parsed.stations.len(),
                parsed.entities.len()
            );
            Ok(())
        }
        Command::Demo {
            data_dir,
            positions,
            seed,
            admin,
            station,
            api,
            traffic,
            settle_every,
            node_interface,
            ready_file,
            console,
        } => demo_run(
            &data_dir,
            positions,
            seed,
            [admin, station, api],
            (traffic, settle_every, node_interface),
            ready_file.as_deref(),
            console,
        ),
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .context("cannot read the key from stdin")?;
            // `echo KEY |` and an interactive Enter both end the line; the key is what precedes.
            let key = key.trim_end_matches(['\r', '\n']);
            if key.is_empty() {
                anyhow::bail!("no key on stdin");
            }
            // A header's value loses its surrounding blanks on the way: such a key could never
            // be presented as it was hashed.
            if key.trim() != key {
                anyhow::bail!(
                    "the key begins or ends with blanks, which HTTP headers drop: choose one without"
                );
            }
            if key.chars().count() < 16 {
                anyhow::bail!(
                    "a key of fewer than 16 characters is too easy to guess: choose a longer one"
                );
            }
            println!("{}", mpayd::config::hex(&mpayd::config::key_digest(key)));
            Ok(())
        }
        Command::Backup { config, output } => {
            let config = Config::load(&config)?;
            backup(&config, &output)
        }
        Command::Restore {
            config: file,
            engine,
            backup,
        } => {
            let config = Config::load(&file)?;
            let engine = engine.unwrap_or(config.store.engine);
            let mut progress = mpayd::progress::Progress::new("restore", "records", None);
            let (summary, kept) =
                store::restore(&backup, &config.store_dir(), engine, &mut |records| {
                    progress.update(records)
                })?;
            progress.finish(summary.records);
            println!(
                "restored {} positions (commit {}) from {} into {} ({engine})",
                summary.positions,
                summary.commit,
                backup.display(),
                config.store_dir().display()
            );
            if let Some(kept) = kept {
                println!("the previous store is kept in {}", kept.display());
            }
            if engine != config.store.engine {
                println!(
                    "set `engine = \"{engine}\"` under [store] in {} before starting mpayd",
                    file.display()
                );
            }
            Ok(())
        }
        Command::Simulate(options) => {
            telemetry::init(&LogConfig {
                level: "warn".into(),
                ..LogConfig::default()
            })
            .map_err(anyhow::Error::msg)?;
            runtime()?.block_on(mpayd::simulator::run(options))
        }
        Command::BareStation { listen } => {
            runtime()?.block_on(mpayd::simulator::bare_station(listen))
        }
        Command::Reconcile { config, date } => {
            let config = Config::load(&config)?;
            let mut connection =
                mpayd::http_client::Connection::new(&format!("http://{}", config.admin.listen))?;
            let request = hyper::Request::post(format!("/reports/{date}"));
            let (status, body) =
                runtime()?.block_on(connection.send(request, Default::default()))?;
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() {
                anyhow::bail!("the daemon refused: HTTP {status}: {text}");
            }
            println!("{text}");
            Ok(())
        }
        Command::VerifyBackup { backup, sha256 } => {
            let summary = store::verify(&backup)?;
            let found = summary.file_sha256.as_deref().unwrap_or_default();
            if let Some(recorded) = sha256
                && !recorded.trim().eq_ignore_ascii_case(found)
            {
                anyhow::bail!(
                    "{}: its SHA-256 is {found}, not the {} recorded when it was taken: the \
                     file has been changed",
                    backup.display(),
                    recorded.trim()
                );
            }
            println!(
                "{}: valid, {} positions, {} records, commit {}, taken {} by mpay {}",
                backup.display(),
                summary.positions,
                summary.records,
                summary.commit,
                summary.created_at,
                summary.mpay_version
            );
            println!("sha256 {found}");
            Ok(())
        }
    }
}

fn backup(config: &Config, output: &Path) -> anyhow::Result<()> {
    if output.exists() {
        anyhow::bail!("{} exists: choose a new file name", output.display());
    }
    // Beside the target, named after all of it, created afresh (never through a planted link,
    // never shared by two backups) and readable by the owner only: it holds every debtor.
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = output.with_file_name(format!(".{name}.partial"));
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?
    };
    let url = format!("http://{}/backup", config.admin.listen);
    let mut progress = mpayd::progress::Progress::new("backup", "MiB", None);
    let mut received = 0u64;
    let fetched = runtime()?.block_on(mpayd::http_client::get_to(&url, |chunk| {
        received += chunk.len() as u64;
        progress.update(received >> 20);
        file.write_all(chunk)
    }));
    progress.finish(received >> 20);
    let finished = fetched.and_then(|()| {
        file.sync_all()?;
        Ok(store::verify(&partial)?)
    });
    match finished {
        Ok(summary) => {
            // A link, not a rename: a file that appeared at the target meanwhile is kept.
            let linked = std::fs::hard_link(&partial, output);
            let _ = std::fs::remove_file(&partial);
            linked.with_context(|| format!("cannot create {}", output.display()))?;
            // The new name survives a power cut once its folder is synced.
            let folder = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            store::fsync::sync_dir(folder)
                .with_context(|| format!("cannot sync {}", folder.display()))?;
            println!(
                "{}: {} positions, {} records, consistent as of commit {}",
                output.display(),
                summary.positions,
                summary.records,
                summary.commit
            );
            // Kept apart from the file (`verify-backup --sha256`), it shows the file unchanged.
            println!(
                "sha256 {}",
                summary.file_sha256.as_deref().unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.context("backup failed; no file was written"))
        }
    }
}

/// The simulated node's interface, on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum NodeChoice {
    Soap,
    Fdr,
}

fn demo_run(
    data_dir: &Path,
    positions: u64,
    seed: u64,
    [admin, station, api]: [SocketAddr; 3],
    // Payments per second, seconds between settlement rounds, the simulated node's interface.
    (traffic, settle_every, node_interface): (f64, u64, NodeChoice),
    ready_file: Option<&Path>,
    console: bool,
) -> anyhow::Result<()> {
    let mut config = demo::config(data_dir, admin, station);
    config.api.listen = api;
    // With payments to settle, a simulated node serves the demo's flows, and the daemon fetches
    // them with its own client.
    let settling = settle_every > 0 && traffic > 0.0;
    let mut simulated_node = if settling {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        config.node = Some(mpayd::config::NodeConfig {
            interface: match node_interface {
                NodeChoice::Soap => mpayd::config::NodeInterface::Soap,
                NodeChoice::Fdr => mpayd::config::NodeInterface::Fdr,
            },
            url: match node_interface {
                NodeChoice::Soap => format!("http://{addr}/nodo"),
                NodeChoice::Fdr => format!("http://{addr}/fdr"),
            },
            station: None,
            password: demo::NODE_PASSWORD.into(),
            subscription_key: Some(demo::NODE_KEY.into()),
            timeout_secs: 10,
        });
        Some((
            listener,
            std::sync::Arc::new(mpayd::simulator::node::Catalogue::default()),
        ))
    } else {
        None
    };
    std::fs::create_dir_all(data_dir)?;
    let console_bin = std::env::current_exe()?.with_file_name("mpay");
    if console {
        if !console_bin.exists() {
            anyhow::bail!(
                "the console {} is not built: run `cargo build --release` (it builds both)",
                console_bin.display()
            );
        }
        let log = data_dir.join("mpayd.log");
        telemetry::init_to_file(&LogConfig::default(), &log).map_err(anyhow::Error::msg)?;
        println!("mpay demo: the daemon logs to {}", log.display());
    } else {
        telemetry::init(&LogConfig::default()).map_err(anyhow::Error::msg)?;
    }
    let config_path = data_dir.join("mpayd.toml");
    std::fs::write(&config_path, config.to_toml())
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let daemon = Daemon::open(config.clone())?;
    let started = std::time::Instant::now();
    let mut progress = mpayd::progress::Progress::new("demo data", "positions", Some(positions));
    let summary = demo::generate(&daemon.app.store, &config, positions, seed, &mut |done| {
        progress.update(done)
    })?;
    progress.finish(summary.positions);
    if summary.positions > 0 {
        tracing::info!(
            positions = summary.positions,
            reduced = summary.reduced,
            paid_offline = summary.paid_offline,
            cancelled = summary.cancelled,
            restored = summary.restored,
            seconds = started.elapsed().as_secs_f64(),
            "demo data generated"
        );
    }
    let store_positions = daemon.app.store.stats().positions;
    let app = std::sync::Arc::clone(&daemon.app);
    // With the console: the demo ends when the operator closes it.
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            () = termination() => {}
            _ = closed, if console => {}
        }
    };
    let mut closed_tx = Some(closed_tx);
    runtime()?.block_on(daemon.serve(shutdown, |ready| {
        // The file names the addresses actually bound, so `mpayd backup --config` finds the
        // admin listener even when the demo was given port 0.
        let mut bound = config.clone();
        // The simulated node lives as long as this demo: the file does not name it.
        bound.node = None;
        bound.admin.listen = ready.admin;
        bound.station.listen = ready.station;
        bound.api.listen = ready.api;
        if let Err(e) = std::fs::write(&config_path, bound.to_toml()) {
            tracing::error!("cannot write {}: {e}", config_path.display());
        }
        if let Some(path) = ready_file {
            mpayd::daemon::write_ready_file(path, ready);
        }
        println!("mpay demo is running ({store_positions} positions)");
        println!("  configuration  {}", config_path.display());
        println!(
            "  broker         {} {}",
            config.broker.id, config.broker.name
        );
        for s in &config.stations {
            println!(
                "  station        {} (primitives v{})",
                s.id, s.primitive_version
            );
        }
        for e in &config.entities {
            println!(
                "  entity         {} {} (station {}, segregation code {:02})",
                e.fiscal_code,
                e.name,
                e.stations.join(","),
                e.iuv.segregation_code.unwrap_or_default()
            );
        }
        println!(
            "  station        http://{}{} (SOAP, as pagoPA's node calls it)",
            ready.station, config.station.path
        );
        println!(
            "  admin          http://{}/healthz  /metrics  /notices",
            ready.admin
        );
        println!(
            "  api            http://{}/api/v1/entities/{{cf}}/positions (REST JSON)",
            ready.api
        );
        for (entity, name, key) in demo::API_KEYS {
            println!("  api key        {entity} {name}: Authorization: Bearer {key}");
        }
        println!(
            "  portal key     {}: Authorization: Bearer {} (GET /api/v1/statements/{{debtor}})",
            demo::PORTAL_KEY.0,
            demo::PORTAL_KEY.1
        );
        if traffic > 0.0 {
            println!("  simulator      {traffic} payments/s against the station");
            tokio::spawn(demo_traffic(
                ready.clone(),
                config.station.path.clone(),
                traffic,
            ));
        }
        if let Some((listener, catalogue)) = simulated_node.take() {
            let url = config
                .node
                .as_ref()
                .map(|n| n.url.clone())
                .unwrap_or_default();
            match mpayd::simulator::node::serve(
                listener,
                std::sync::Arc::clone(&catalogue),
                demo::NODE_PASSWORD.into(),
                demo::NODE_KEY.into(),
            ) {
                Ok(()) => {
                    println!(
                        "  settlement     every {settle_every} s the PSPs publish flows on the \
                         simulated node ({url}) and the treasury credits them, with anomalies"
                    );
                    tokio::spawn(mpayd::simulator::settlement::run(
                        std::sync::Arc::clone(&app),
                        std::time::Duration::from_secs(settle_every),
                        Some(catalogue),
                    ));
                }
                Err(e) => tracing::error!("the simulated node cannot start: {e}"),
            }
        }
        if console {
            println!(
                "  console        {} --socket {}",
                console_bin.display(),
                ready.console.display()
            );
            let socket = ready.console.clone();
            let bin = console_bin.clone();
            let closed_tx = closed_tx.take();
            std::thread::spawn(move || {
                // Give the operator a moment to read the addresses above.
                std::thread::sleep(std::time::Duration::from_secs(2));
                match std::process::Command::new(&bin)
                    .arg("--socket")
                    .arg(&socket)
                    .status()
                {
                    Ok(status) if !status.success() => eprintln!("mpay ended with {status}"),
                    Err(e) => eprintln!("cannot start {}: {e}", bin.display()),
                    Ok(_) => {}
                }
                if let Some(tx) = closed_tx {
                    let _ = tx.send(());
                }
            });
        } else {
            println!(
                "  console        mpay --socket {} (another terminal)",
                ready.console.display()
            );
            println!("stop with Ctrl-C");
        }
    }))
}

/// The demo's background traffic: the node simulator paying notices at a gentle pace, with a
/// few faults and double payments, so that the journal and the metrics have something to show.
async fn demo_traffic(ready: mpayd::daemon::Ready, path: String, rate: f64) {
    loop {
        let options = mpayd::simulator::Options {
            target: format!("http://{}{path}", ready.station),
            admin: format!("http://{}", ready.admin),
            broker: demo::BROKER.into(),
            scenario: mpayd::simulator::Scenario::Pay,
            count: (rate * 60.0).ceil() as u64,
            concurrency: 1,
            rate,
            unknown_pct: 3,
            wrong_station_pct: 1,
            malformed_pct: 1,
            double_pct: 2,
            late_pct: 5,
            replay_pct: 5,
            repeat_get_pct: 10,
            notices: 10_000,
            seed: fastrand::u64(..),
            json: false,
            quiet: true,
        };
        if let Err(e) = mpayd::simulator::run(options).await {
            tracing::warn!("demo traffic: {e:#}");
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    }
}
