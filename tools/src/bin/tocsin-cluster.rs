//! `tocsin-cluster`: start, drive, break and measure a federation of real `tocsind`
//! processes on this machine. The commands live in [`tocsin_tools::cluster_cli`].

use std::process::ExitCode;

use clap::Parser;
use tocsin_tools::cluster_cli::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
