//! The terminal UI: `app` (state and keys), `view` (drawing), `worker` (the connection). The
//! drawing loop never waits on the daemon: keys become requests for the worker, answers come
//! back on a channel, and the screen is redrawn only when something changed (or once a second
//! for the clock), so an idle console costs nearly nothing.

pub mod app;
pub mod records;
pub mod view;
mod worker;
pub mod worklist;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use app::App;
use view::Theme;

/// Runs the console until the operator quits.
pub fn run(runtime: tokio::runtime::Handle, target: crate::client::Target) -> anyhow::Result<()> {
    let (request_tx, request_rx) = tokio::sync::mpsc::unbounded_channel();
    let (reply_tx, replies) = mpsc::channel();
    runtime.spawn(worker::run(target, request_rx, reply_tx));
    // Signals end the console like `q` does, so that the terminal is always given back.
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let signalled = Arc::clone(&signalled);
        runtime.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = int.recv() => {}
            }
            signalled.store(true, Ordering::Relaxed);
        });
    }
    let mut app = App::new(crate::format::today());
    let theme = Theme::from_env();
    // Restores the terminal on panic too (ratatui's hook).
    let mut terminal = ratatui::try_init()?;
    // Keys come from a thread of their own: reading a terminal that has gone away can keep
    // crossterm's read busy for good, and the loop must still see signals and failed draws (the
    // process exits with that thread still in it).
    let (keys, input) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if keys.send(event).is_err() {
                return;
            }
        }
    });
    let mut dirty = true;
    let mut drawn = Instant::now();
    let result = loop {
        while let Ok(reply) = replies.try_recv() {
            for request in app.apply(reply) {
                let _ = request_tx.send(request);
            }
            dirty = true;
        }
        if dirty || drawn.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = terminal.draw(|f| view::draw(f, &app, theme)) {
                break Err(e.into());
            }
            dirty = false;
            drawn = Instant::now();
        }
        match input.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                app.message = None;
                for request in app.key(key) {
                    let _ = request_tx.send(request);
                }
                dirty = true;
            }
            Ok(Event::Resize(_, _)) => dirty = true,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the terminal is gone"));
            }
        }
        if app.quit || signalled.load(Ordering::Relaxed) {
            break Ok(());
        }
    };
    ratatui::restore();
    result
}
