//! The daemon's lifecycle: open the store, bind the listeners, tell systemd we are ready, serve
//! until asked to stop, finish in-flight requests, then flush and close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::App;
use crate::config::Config;
use crate::listener::Limits;
use crate::store::{Store, StoreOptions};

/// Connections the admin listener holds at once (health checks, metrics scrapes, backups).
const ADMIN_CONNECTIONS: usize = 64;

/// An opened daemon, not yet serving.
pub struct Daemon {
    pub app: Arc<App>,
}

/// Where a serving daemon can be reached.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ready {
    pub admin: SocketAddr,
    pub station: SocketAddr,
    /// The authorities' REST API.
    pub api: SocketAddr,
    /// The operators' console socket.
    pub console: std::path::PathBuf,
    /// The remote consoles' TLS listener, when configured.
    pub remote_console: Option<SocketAddr>,
}

/// Whether opening may create a new, empty store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    Yes,
    No,
}

impl Daemon {
    /// Opens the store (creating the data folder). Blocking: call it before the runtime serves,
    /// or from `spawn_blocking`.
    pub fn open(config: Config) -> anyhow::Result<Daemon> {
        Daemon::open_with(config, Create::Yes)
    }

    /// Opens the store; with `Create::No` a missing store is an error, not a new empty one: an
    /// unmounted or emptied data folder must not turn into a station that calls every real
    /// notice unknown.
    pub fn open_with(config: Config, create: Create) -> anyhow::Result<Daemon> {
        let dir = config.store_dir();
        if create == Create::No && crate::store::Engine::found_in(&dir).is_none() {
            anyhow::bail!(
                "there is no store in {}: for a new installation create it with \
                 `mpayd init --config FILE` (or start once with `mpayd run --init`); if a store \
                 should be there, check that the data folder is mounted and restore a backup if \
                 it is lost",
                dir.display()
            );
        }
        crate::store::fsync::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let options = StoreOptions {
            engine: config.store.engine,
            cache_bytes: config.store.cache_mib << 20,
            write_buffer_bytes: config.store.write_buffer_mib << 20,
            position_cache: config.store.position_cache,
        };
        let store = Store::open(&dir, &options)?;
        tracing::info!(
            store = %dir.display(),
            engine = %config.store.engine,
            positions = store.stats().positions,
            "store opened"
        );
        Ok(Daemon {
            app: Arc::new(App {
                config: Arc::new(config),
                store: Arc::new(store),
                metrics: crate::metrics::Metrics::new(),
                clock: crate::clock::Clock::system(),
                live: crate::live::LiveStats::default(),
            }),
        })
    }

    /// Serves until `shutdown` completes, then drains and closes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_ready: impl FnOnce(&Ready),
    ) -> anyhow::Result<()> {
        let config = Arc::clone(&self.app.config);
        let admin = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("admin.listen: cannot bind {}", config.admin.listen))?;
        let station = tokio::net::TcpListener::bind(config.station.listen)
            .await
            .with_context(|| format!("station.listen: cannot bind {}", config.station.listen))?;
        let api = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("api.listen: cannot bind {}", config.api.listen))?;
        let console_socket = config.console_socket();
        let console = crate::rpc::bind(&console_socket, config.console.group.as_deref())?;
        let remote_console = match (config.console.listen, &config.console.tls) {
            (Some(listen), Some(tls)) => Some((
                tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("console.listen: cannot bind {listen}"))?,
                crate::station_http::tls_acceptor_for("console.tls", tls)?,
            )),
            _ => None,
        };
        // Fail before READY if the TLS material is unusable.
        if let Some(tls) = &config.station.tls {
            crate::station_http::tls_acceptor(tls)?;
        }
        let ready = Ready {
            admin: admin.local_addr()?,
            station: station.local_addr()?,
            api: api.local_addr()?,
            console: console_socket.clone(),
            remote_console: match &remote_console {
                Some((l, _)) => Some(l.local_addr()?),
                None => None,
            },
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let (journal, journal_writer) = crate::journal::Journal::start(
            Arc::clone(&self.app.store),
            std::time::Duration::from_secs(u64::from(config.journal.body_retention_days) * 86_400),
            config.journal.body_retention_mib << 20,
        );
        // The background tasks, started here and stopped by the same signal as the listeners.
        let (api_router, api_state) = crate::api::router(Arc::clone(&self.app));
        let inbox_watcher = crate::api::bulk::watch(api_state, stop.clone());
        let daily_run = crate::service::runs::schedule(Arc::clone(&self.app), stop.clone());
        let console_task = tokio::spawn(crate::rpc::serve(
            Arc::clone(&self.app),
            console,
            stop.clone(),
        ));
        let remote_console_task = remote_console.map(|(listener, acceptor)| {
            tokio::spawn(crate::rpc::serve_tls(
                Arc::clone(&self.app),
                listener,
                acceptor,
                stop.clone(),
            ))
        });
        let station_task = tokio::spawn(crate::station_http::serve(
            Arc::clone(&self.app),
            station,
            journal,
            stop.clone(),
        ));
        let api_limits = Limits::plain(
            "api",
            config.api.max_connections,
            Duration::from_secs(config.api.header_timeout_secs),
        );
        let api_task = tokio::spawn(crate::listener::serve(
            api,
            api_router,
            api_limits,
            stop.clone(),
        ));
        tracing::info!(
            admin = %ready.admin,
            api = %ready.api,
            station = %ready.station,
            path = %config.station.path,
            "mpayd {} serving",
            mpay_common::VERSION
        );
        on_ready(&ready);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        feed_watchdog(Arc::clone(&self.app));

        let router = crate::admin::router(Arc::clone(&self.app));
        // Loopback or a management network: a few connections, the usual timeouts.
        let admin_limits = Limits::plain("admin", ADMIN_CONNECTIONS, Duration::from_secs(10));
        crate::listener::serve(admin, router, admin_limits, stop.clone())
            .await
            .context("admin listener failed")?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        station_task.await.context("station listener task")??;
        // The station's handles to the journal are gone with it: the writer drains and ends
        // (bounded, in case a connection outlived the drain).
        match tokio::time::timeout(std::time::Duration::from_secs(10), journal_writer).await {
            Ok(done) => done.context("journal writer task")?,
            Err(_) => tracing::warn!("journal writer still busy after 10 s; closing anyway"),
        }
        api_task
            .await
            .context("api listener task")?
            .context("api listener failed")?;
        inbox_watcher.await.context("inbox watcher task")?;
        daily_run.await.context("daily run task")?;
        console_task.await.context("console listener task")?;
        if let Some(task) = remote_console_task {
            task.await.context("remote console listener task")?;
        }
        let _ = std::fs::remove_file(&console_socket);

        tracing::info!("stopping: closing the store");
        let store = Arc::clone(&self.app.store);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .context("store close task")??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Feeds systemd's watchdog (`WatchdogSec=` in the unit) for as long as the daemon can serve: its
/// runtime runs a task within the bound, and the store has neither failed a flush nor hung in
/// one. A daemon that hangs (a disk that never answers, a runtime whose workers are all blocked)
/// stops feeding it, and systemd restarts it. Its own thread, so that it cannot hang with them.
fn feed_watchdog(app: Arc<App>) {
    let Some(bound) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = bound / 3;
    let runtime = tokio::runtime::Handle::current();
    let fed = std::thread::Builder::new()
        .name("mpay-watchdog".into())
        .spawn(move || {
            let mut starving = false;
            loop {
                std::thread::sleep(every);
                let (answer, answered) = std::sync::mpsc::channel();
                runtime.spawn(async move {
                    let _ = answer.send(());
                });
                let runtime_ok = answered.recv_timeout(every).is_ok();
                let store = match (app.store.healthy(), app.store.flush_running_for()) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(t)) if t > every => Err(format!("a flush has run for {t:?}")),
                    (Ok(()), _) => Ok(()),
                };
                match (runtime_ok, store) {
                    (true, Ok(())) => {
                        starving = false;
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    (runtime_ok, store) if !starving => {
                        starving = true;
                        tracing::error!(
                            runtime_answers = runtime_ok,
                            store = store.err().as_deref().unwrap_or("ok"),
                            "not feeding systemd's watchdog: the daemon is stuck and will be \
                             restarted"
                        );
                    }
                    _ => {}
                }
            }
        });
    if let Err(e) = fed {
        tracing::error!("cannot start the watchdog thread: {e}");
    }
}

/// Writes where the daemon listens as JSON, atomically: for scripts and tests that let the
/// daemon pick free ports (`127.0.0.1:0`).
pub fn write_ready_file(path: &std::path::Path, ready: &Ready) {
    let partial = path.with_extension("partial");
    let written = serde_json::to_vec_pretty(ready)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&partial, json))
        .and_then(|()| std::fs::rename(&partial, path));
    if let Err(e) = written {
        tracing::error!("cannot write the ready file {}: {e}", path.display());
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
