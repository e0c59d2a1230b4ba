//! Structured logs with tracing: human-readable text or one JSON object per line, to stderr
//! (journald and container runtimes collect it from there).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// A log writer that never fails: a log line that cannot be written (stderr on a full disk, a
/// closed pipe) is dropped, never a panic or an error in the code that logged it.
struct Quiet<W>(W);

impl<W: std::io::Write> std::io::Write for Quiet<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Installs the global subscriber writing to `file` (appended, no colours) instead of stderr:
/// for `mpayd demo --console`, whose terminal belongs to the console.
pub fn init_to_file(log: &LogConfig, file: &std::path::Path) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(out))
        .try_init()
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(log: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    // Colours only for a person at a terminal: never in files, pipes or journald, nor with
    // NO_COLOR set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| Quiet(std::io::stderr()));
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
}
