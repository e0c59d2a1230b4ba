//! `mpay`: the operators' console. Without a command it opens the terminal UI; with one it
//! answers on standard output (see `cli.rs` for the exit codes).

use std::path::PathBuf;

use clap::Parser;
use mpay_console::{cli, client, tui};

#[derive(Parser)]
#[command(name = "mpay", version = mpay_common::VERSION, about = "mpay operator console")]
struct Cli {
    /// The daemon's console socket (default: `MPAY_SOCKET`, else DATA_DIR/console.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The daemon's data folder, where its socket is by default (/var/lib/mpay).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Machine output: the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() {
    let args = Cli::parse();
    let socket = client::socket_path(args.socket, args.data_dir);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mpay: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match args.command {
        None => match tui::run(runtime.handle().clone(), socket) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mpay: {e:#}");
                1
            }
        },
        Some(command) => match runtime.block_on(cli::run(socket, args.json, command)) {
            Ok(()) => 0,
            Err(f) => {
                eprintln!("mpay: {}", f.message());
                f.exit_code()
            }
        },
    };
    std::process::exit(code);
}
