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
    /// A remote daemon's console listener, HOST:PORT, over TLS with a client certificate
    /// (`--cert`, `--key`, and `--ca` for the daemon's certificate).
    #[arg(long, global = true, requires_all = ["cert", "key", "ca"])]
    connect: Option<String>,
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Machine output: the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() {
    let args = Cli::parse();
    let target = match (args.connect, args.cert, args.key, args.ca) {
        (Some(address), Some(cert), Some(key), Some(ca)) => client::Target::Tls(client::Remote {
            address,
            cert,
            key,
            ca,
        }),
        _ => client::Target::Unix(client::socket_path(args.socket, args.data_dir)),
    };
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
        None => match tui::run(runtime.handle().clone(), target) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mpay: {e:#}");
                1
            }
        },
        Some(command) => match runtime.block_on(cli::run(target, args.json, command)) {
            Ok(()) => 0,
            Err(f) => {
                eprintln!("mpay: {}", f.message());
                f.exit_code()
            }
        },
    };
    std::process::exit(code);
}
