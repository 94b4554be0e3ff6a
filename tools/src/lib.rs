//! # tocsin-tools
//!
//! The operator CLI `tocsin` and the pieces other tools (`tocsin-cluster`) reuse: a
//! client for tocsind's HTTP/JSON control API over its Unix socket or TCP, a
//! server-sent-events parser, and the human-readable formatting of alerts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tocsin_tools::client::{Client, Endpoint, ListQuery};
//! let client = Client::new(Endpoint::Unix("/var/lib/tocsin/tocsind.sock".into()));
//! let issued = client
//!     .issue(&serde_json::json!({"severity": "high", "tlp": "GREEN", "title": "Phishing wave"}))
//!     .await?;
//! let page = client.list(&ListQuery { tag: Some("phishing".into()), ..Default::default() }).await?;
//! println!("{} issued; {} tagged phishing", issued.id, page.alerts.len());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: the API client, its errors and the CLI exit codes.
//! - [`sse`]: an incremental `text/event-stream` parser.
//! - [`format`]: tables, the full view of an alert, times.
//! - [`cli`]: the `tocsin` command line (clap derive) and its value parsers.
//! - [`commands`]: running the subcommands; error reporting and exit codes.
//! - [`output`]: writing to stdout, noticing a closed pipe.
//! - [`federation`]: `tocsin trust …` and `tocsin peers`.
//! - [`cluster`]: local federations of real `tocsind` processes (tests, testers).
//! - [`cluster_cli`]: the `tocsin-cluster` command line.
//! - [`bench`]: `tocsin-cluster bench`; [`baseline`]: its plain-gossipsub node.

pub mod baseline;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod cluster_cli;
pub mod commands;
pub mod federation;
pub mod format;
pub mod interop;
pub mod org;
pub mod output;
pub mod sse;
