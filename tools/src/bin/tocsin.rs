//! `tocsin`: the Tocsin operator CLI. See `tocsin --help`, and `docs/api.md` for the
//! API it speaks.

use std::process::ExitCode;

use clap::Parser;
use tocsin_tools::cli::Cli;
use tocsin_tools::client::{EXIT_INPUT, EXIT_OK};
use tocsin_tools::commands::{report, run, Output};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 1 (bad input), not clap's 2, which means "unreachable".
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_INPUT } else { EXIT_OK });
        }
    };
    let global = cli.global.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime\n  caused by: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let stdout = std::io::stdout();
    let mut out = Output::new(stdout.lock()).detect_closed_stdout();
    match runtime.block_on(run(cli, &mut out)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => ExitCode::from(report(&err, &global, &mut std::io::stderr())),
    }
}
