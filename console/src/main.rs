//! `mpay`: the operator console. It talks to mpayd only through the RPC contract in
//! `mpay-common`; for now it reports its version.

use clap::Parser;

#[derive(Parser)]
#[command(name = "mpay", version = mpay_common::VERSION, about = "mpay operator console")]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!("mpay {}", mpay_common::VERSION);
}
