//! `tocsind`: the Tocsin node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The Tocsin node daemon: signs, stores and gossips alerts among trusted agencies.
#[derive(Debug, Parser)]
#[command(
    name = "tocsind",
    version,
    after_help = "Exit codes: 0 clean shutdown; 1 bad command line, configuration, key or data \
                  directory; \
                  2 runtime failure.\nLogs: RUST_LOG sets the level (default info); \
                  TOCSIN_LOG_FORMAT=json|text overrides log.format.\nConfig from the \
                  environment: TOCSIN__SECTION__KEY=value overrides a config value, e.g. \
                  TOCSIN__API__TCP=0.0.0.0:7401 (docs/operations.md)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the data directory, the node key (mode 0600) and a commented config.toml.
    /// Prints the node's public key and peer id. Refuses to overwrite an existing key.
    Init {
        /// Data directory to create.
        #[arg(long, env = "TOCSIN_DATA_DIR")]
        data_dir: PathBuf,
        /// Listen multiaddr to write into the config (repeatable; default TCP and QUIC
        /// on port 7400).
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the database of a stopped node: redb's integrity check (it repairs what it
    /// can), then every alert decoded and its signature verified. Exit 0 if sound, 1 if
    /// anything is damaged or the database cannot be read.
    Check {
        /// Data directory (its config.toml is used if present). --config wins over
        /// TOCSIN_DATA_DIR from the environment.
        #[arg(long, env = "TOCSIN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Config file.
        #[arg(long, env = "TOCSIN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// Data directory (its config.toml is used if present). --config wins over
        /// TOCSIN_DATA_DIR from the environment.
        #[arg(long, env = "TOCSIN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Config file.
        #[arg(long, env = "TOCSIN_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Prints `err` and its causes on stderr; a stderr that cannot be written (a full
/// disk) loses the message, and the exit code still says what happened.
fn report(err: &anyhow::Error) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

/// Parses the command line. `--data-dir` and `--config` given together on the command
/// line are refused; `TOCSIN_DATA_DIR` from the environment yields to `--config` (the
/// CLI's own docs tell operators to export it). Usage errors exit 1 (bad input), not
/// clap's 2, which means a runtime failure here.
fn parse() -> Result<Cli, ExitCode> {
    let usage = |e: clap::Error| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 1 } else { 0 })
    };
    let matches = Cli::command().try_get_matches().map_err(usage)?;
    if let Some((_, sub)) = matches.subcommand() {
        let from_cli = |id: &str| {
            sub.try_contains_id(id).unwrap_or(false)
                && sub.value_source(id) == Some(ValueSource::CommandLine)
        };
        if from_cli("config") && from_cli("data_dir") {
            return Err(usage(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "give --data-dir DIR or --config FILE, not both",
            )));
        }
    }
    let mut cli = Cli::from_arg_matches(&matches).map_err(usage)?;
    if let Cmd::Check { data_dir, config } | Cmd::Run { data_dir, config } = &mut cli.command {
        if config.is_some() {
            *data_dir = None;
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Cmd::Init {
            data_dir,
            listen,
            json,
        } => match tocsin_node::daemon::init(&data_dir, &listen) {
            Ok(out) => {
                if json {
                    println!("{}", serde_json::json!(out));
                } else {
                    println!("public key: {}", out.public_key);
                    println!("peer id:    {}", out.peer_id);
                    println!("key file:   {}", out.key_file.display());
                    println!("config:     {}", out.config_file.display());
                    println!("next:       tocsind run --data-dir {}", data_dir.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&e);
                ExitCode::from(1)
            }
        },
        Cmd::Check { data_dir, config } => {
            let checked = tocsin_node::daemon::load_config(config.as_deref(), data_dir.as_deref())
                .and_then(|cfg| tocsin_node::daemon::check(&cfg));
            match checked {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("error: the database is damaged (above)");
                    ExitCode::from(1)
                }
                Err(e) => {
                    report(&e);
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run { data_dir, config } => {
            let cfg = match tocsin_node::daemon::load_config(config.as_deref(), data_dir.as_deref())
            {
                Ok(c) => c,
                Err(e) => {
                    report(&e);
                    return ExitCode::from(1);
                }
            };
            tocsin_node::daemon::init_logging(cfg.log.format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    report(&anyhow::Error::new(e).context("cannot start the tokio runtime"));
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(tocsin_node::daemon::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "tocsind stopped on error");
                    report(&e);
                    let startup = e.downcast_ref::<tocsin_node::daemon::Startup>().is_some()
                        || e.chain().any(|c| {
                            c.is::<tocsin_node::keys::KeyError>()
                                || c.is::<tocsin_node::config::ConfigError>()
                        });
                    ExitCode::from(if startup { 1 } else { 2 })
                }
            }
        }
    }
}
