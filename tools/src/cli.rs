//! The `tocsin` command line: clap definitions, value parsers and the local checks made
//! before the daemon is contacted.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use tocsin_proto::{AlertId, Indicator, PublicKey, Severity, Tlp, TrustLevel};

/// The exit codes, shown at the end of `tocsin --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  bad input, or tocsind refused the request (4xx); the message names the field
  2  tocsind cannot be reached (not running, wrong --socket or --api)
  3  tocsind failed (5xx) or sent an answer this client cannot read

Data goes to stdout, diagnostics to stderr. With --json, lists and streams are JSON
Lines (one object per line).";

/// Default data directory of `tocsind`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/tocsin";

/// The control socket's file name inside the data directory.
pub const SOCKET_FILE: &str = "tocsind.sock";

/// Operate a Tocsin node: issue, update and cancel alerts; search and watch what
/// arrived. Speaks only to tocsind's HTTP/JSON control API.
#[derive(Debug, Parser)]
#[command(name = "tocsin", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Options that work before or after the subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand. They are listed under their own heading, after
/// a subcommand's own options, in every `--help`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The daemon's control socket [default: <DATA_DIR>/tocsind.sock]
    #[arg(long, global = true, env = "TOCSIN_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The node's data directory: where the default socket and the node key are
    #[arg(
        long,
        global = true,
        env = "TOCSIN_DATA_DIR",
        value_name = "DIR",
        default_value = DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,

    /// Use the API over TCP instead of the socket, e.g. http://127.0.0.1:7300
    #[arg(long, global = true, env = "TOCSIN_API", value_name = "URL")]
    pub api: Option<String>,

    /// Bearer token for --api (the daemon's api.token)
    #[arg(
        long,
        global = true,
        env = "TOCSIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Print JSON instead of tables (JSON Lines for lists and streams)
    #[arg(long, global = true)]
    pub json: bool,

    /// Print more diagnostics on stderr (each request made)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Print nothing on stderr but errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl GlobalArgs {
    /// The socket to use: `--socket`, else `<data dir>/tocsind.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SOCKET_FILE))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Issue a new alert, signed by this node, and gossip it
    Issue(IssueArgs),
    /// Supersede one of this node's alerts with a new version
    ///
    /// Options not given are copied from the alert being updated. The TLP label and the
    /// recipients always stay those of the original: issue a new alert to change them.
    Update(UpdateArgs),
    /// Retract one of this node's alerts (a cancel is final)
    Cancel(CancelArgs),
    /// Search stored alerts, newest first
    List(ListArgs),
    /// Show one alert in full, with its provenance and signature check
    Show(ShowArgs),
    /// Acknowledge an AMBER or RED alert received here: a signed receipt goes to its
    /// origin, which sees who acknowledged it and when
    Ack {
        /// The alert (full 64-hex id)
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: AlertId,
        /// Who acknowledges it (a name or role; default: your Unix user)
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Report that this agency saw an alert (its ID) or one of its indicators
    /// (TYPE:VALUE: the newest alert holding it): a signed sighting goes to the alert's
    /// origin and, for CLEAR and GREEN, to the alert's audience, passed on node to node
    Sighting {
        /// The alert's full 64-hex id, or an indicator as TYPE:VALUE
        #[arg(value_name = "ID|INDICATOR")]
        what: String,
        /// How many times it was seen
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Where or how, for the origin's analysts
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Who reported seeing an alert: each observer's newest sighting, and the total
    Sightings {
        /// The alert (full 64-hex id)
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: AlertId,
    },
    /// For an AMBER or RED alert issued here: each recipient's receipt (delivered,
    /// acknowledged, or nothing yet) and whether its acknowledgement deadline passed
    Receipts {
        /// The alert (full 64-hex id)
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: AlertId,
    },
    /// Write stored alerts as one STIX 2.1 bundle (the list filters choose which; every
    /// page is read), or one alert as a CAP 1.2 message
    ///
    /// STIX: each alert is a `report` with its indicators, marked with its TLP 2.0
    /// marking; updates are new versions of the report and cancelled alerts are revoked.
    /// Ids are derived from the alert ids, so the same alerts export as the same bundle.
    /// CAP (`--format cap1.2 ID`): one `alert` message, its scope from the TLP label.
    /// docs/interop.md gives both mappings.
    Export(ExportArgs),
    /// Issue alerts from the indicators of a STIX 2.1 bundle, one per report (and one
    /// per indicator no report refers to)
    ///
    /// Objects without a TLP marking need --tlp, or the bundle is refused. Importing the
    /// same bundle again issues nothing new: each alert is tagged with the STIX id it
    /// came from, and alerts this node already holds are skipped.
    Import(ImportArgs),
    /// Follow alerts as they are stored, one line each, until interrupted
    Watch(WatchArgs),
    /// Show the node's identity, version, uptime and store counts
    Status,
    /// Manage which peers are trusted and how much; changes apply at once, survive
    /// restarts and are audited
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Give the node a revocation of a node key (from `tocsin org revoke`) so that it
    /// applies it and sends it to every peer; list the revocations it holds
    #[command(subcommand)]
    Revocation(RevocationCommand),
    /// List peers: connected or not, level, address, last seen, alerts in and out,
    /// rejections by reason, penalty state
    Peers,
    /// The node key
    #[command(subcommand)]
    Key(KeyCommand),
    /// The agency's offline org key, and the node certificates and revocations it signs
    /// (files only: no daemon is needed, and the org key never goes on a node)
    ///
    /// Nodes do not yet present certificates to their peers: today these commands
    /// make and check the signed objects of the agency key ceremony (docs/operations.md).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Print a shell completion script
    ///
    /// bash: `tocsin completions bash > /etc/bash_completion.d/tocsin`;
    /// zsh: `tocsin completions zsh > "${fpath[1]}/_tocsin"`;
    /// fish: `tocsin completions fish > ~/.config/fish/completions/tocsin.fish`.
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tocsin man | man -l -`, or install it with
    /// `tocsin man > /usr/local/share/man/man1/tocsin.1`
    Man,
}

/// `tocsin org …`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create a new org key (a file of mode 0600; never overwrites one) and print its
    /// public key, which partners put in their trust tables
    Init {
        /// Where to write the org key
        #[arg(long, value_name = "FILE", default_value = "org.key")]
        key: PathBuf,
    },
    /// Certify a node key for this agency: writes a certificate file for that node
    Certify {
        /// The node's public key (64 hex, from `tocsin key show` on the node)
        #[arg(value_name = "NODE_KEY", value_parser = parse_key)]
        node: PublicKey,
        /// The org key file
        #[arg(long, value_name = "FILE", default_value = "org.key")]
        key: PathBuf,
        /// The agency's name, as partners will see it
        #[arg(long)]
        agency: String,
        /// How long it is valid (at most two years), e.g. 90d
        #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = humantime::parse_duration)]
        valid: Duration,
        /// Valid from (default: now): unix ms or an RFC 3339 UTC time
        #[arg(long, value_name = "WHEN", value_parser = parse_when)]
        not_before: Option<u64>,
        /// The certificate's serial number (default: its start time in unix ms)
        #[arg(long)]
        serial: Option<u64>,
        /// Where to write the certificate (a new file)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Revoke a node key: writes a signed revocation file
    Revoke {
        /// The node's public key (64 hex)
        #[arg(value_name = "NODE_KEY", value_parser = parse_key)]
        node: PublicKey,
        /// The org key file
        #[arg(long, value_name = "FILE", default_value = "org.key")]
        key: PathBuf,
        /// Why (required; partners' operators read it)
        #[arg(long)]
        reason: String,
        /// Revoked from (default: now): what the node signed before stays valid
        #[arg(long, value_name = "WHEN", value_parser = parse_when)]
        at: Option<u64>,
        /// Where to write the revocation (a new file)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the org key's public key (--key), or check and print a certificate or a
    /// revocation file
    Show {
        /// The org key file
        #[arg(long, value_name = "FILE", conflicts_with = "file")]
        key: Option<PathBuf>,
        /// A certificate or revocation file
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// `tocsin revocation …`
#[derive(Debug, Subcommand)]
pub enum RevocationCommand {
    /// Apply a revocation file and send it to every peer: the node is refused by every
    /// node that gets it, and its alerts issued from the revocation time on are rejected
    Add {
        /// The revocation file (`tocsin org revoke … --out FILE`)
        #[arg(value_name = "FILE")]
        revocation: PathBuf,
        /// The revoked node's certificate file (`tocsin org certify`), which proves the
        /// same org certified it
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// List the revocations this node holds
    List,
}

/// `tocsin trust …`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// List the trust table
    List,
    /// Trust a new peer key
    Add {
        /// The peer's public key (64 hex characters, from `tocsin key show` on its host)
        #[arg(value_parser = parse_key)]
        key: PublicKey,
        /// blocked, public, member or partner
        #[arg(long, value_parser = parse_level)]
        level: TrustLevel,
        /// Multiaddr to dial it at, e.g. /ip4/192.0.2.7/tcp/7400 (repeatable)
        #[arg(long = "addr", value_name = "MULTIADDR")]
        addrs: Vec<String>,
        /// A name for tables and logs
        #[arg(long, default_value = "")]
        name: String,
        /// The key is an agency's org key (`tocsin org show` on its side): every node
        /// with a valid certificate from it gets the level, and the addresses are dialled
        /// whatever node answers there
        #[arg(long)]
        org: bool,
        /// Why, for the audit log
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change a peer's level, name or addresses (a demotion cuts what it receives at once)
    Set {
        /// The peer's key as in `tocsin trust list` (a node key or an org key)
        #[arg(value_parser = parse_key)]
        key: PublicKey,
        /// The new level: blocked, public, member or partner
        #[arg(long, value_parser = parse_level)]
        level: Option<TrustLevel>,
        /// Replace the addresses (repeatable)
        #[arg(long = "addr", value_name = "MULTIADDR")]
        addrs: Vec<String>,
        /// A new name for tables and logs
        #[arg(long)]
        name: Option<String>,
        /// Why, for the audit log
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a peer from the trust table (it can no longer connect)
    Remove {
        /// The peer's key as in `tocsin trust list` (a node key or an org key)
        #[arg(value_parser = parse_key)]
        key: PublicKey,
        /// Why, for the audit log
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show the audit log of trust changes: when, whose entry, old -> new level, who
    /// made the change and why
    Audit,
}

fn parse_level(s: &str) -> Result<TrustLevel, String> {
    s.parse::<TrustLevel>().map_err(|e| e.to_string())
}

/// `tocsin key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the node's public key and libp2p peer id, read from --data-dir (the
    /// daemon need not run)
    Show,
}

/// The content options of issue and update.
#[derive(Debug, Clone, Default, Args)]
pub struct ContentArgs {
    /// Free text of the alert
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    pub text: Option<String>,

    /// Read the free text from a file ("-" for stdin)
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,

    /// An indicator, TYPE:VALUE (types: ipv4, ipv6, cidr, domain, url, email, sha256,
    /// sha1, md5, cve, other); repeat for more
    #[arg(long = "indicator", value_name = "TYPE:VALUE", value_parser = parse_indicator)]
    pub indicators: Vec<Indicator>,

    /// A tag (one word); repeat for more
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// A reference (URL or document id); repeat for more
    #[arg(long = "reference", value_name = "REF")]
    pub references: Vec<String>,

    /// When it expires: a duration from now (24h, 7days) or an RFC 3339 UTC time
    #[arg(long, value_name = "WHEN", value_parser = parse_expires)]
    pub expires: Option<Expires>,
}

/// `tocsin issue`
#[derive(Debug, Clone, Args)]
pub struct IssueArgs {
    /// Severity: critical, high, medium, low or info
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub severity: Severity,

    /// TLP 2.0 label: CLEAR, GREEN, AMBER, AMBER+STRICT or RED (RED needs --recipient)
    #[arg(long, value_name = "LABEL", value_parser = parse_tlp)]
    pub tlp: Tlp,

    /// One-line summary
    #[arg(long, value_name = "TITLE")]
    pub title: String,

    /// A recipient node's public key (64 hex); repeat for more; required for RED
    #[arg(long = "recipient", value_name = "KEY", value_parser = parse_key)]
    pub recipients: Vec<PublicKey>,

    /// RED only: every recipient should acknowledge it (`tocsin ack`) within this long,
    /// e.g. 15m; if one has not, this node warns, counts it in tocsin_ack_overdue_total
    /// and sends an ack_overdue event on the stream
    #[arg(long, value_name = "DURATION")]
    pub ack_within: Option<String>,

    /// Text, indicators, tags, references, expiry.
    #[command(flatten)]
    pub content: ContentArgs,
}

/// `tocsin update`
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// The alert to supersede (full 64-hex id)
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: AlertId,

    /// New severity: critical, high, medium, low or info
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub severity: Option<Severity>,

    /// New one-line summary
    #[arg(long, value_name = "TITLE")]
    pub title: Option<String>,

    /// New text, indicators, tags, references or expiry; a list option given replaces
    /// the whole list
    #[command(flatten)]
    pub content: ContentArgs,
}

/// `tocsin cancel`
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The alert to retract (full 64-hex id)
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: AlertId,

    /// Why it is retracted (becomes the cancel's text)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// The filters of `tocsin list` and `tocsin export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct Filters {
    /// Issued at or after: a duration ago (2h), an RFC 3339 UTC time, or unix ms
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<u64>,

    /// Issued before: a duration ago (2h), an RFC 3339 UTC time, or unix ms
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<u64>,

    /// Issued by this node key (64 hex), or by any node of the agency whose org key it is
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub origin: Option<PublicKey>,

    /// At least this severe: critical, high, medium, low or info
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub min_severity: Option<Severity>,

    /// Exactly this TLP label
    #[arg(long, value_name = "LABEL", value_parser = parse_tlp)]
    pub tlp: Option<Tlp>,

    /// Has this tag (case-insensitive)
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Has an indicator with exactly this value (any type)
    #[arg(long, value_name = "VALUE")]
    pub indicator: Option<String>,

    /// Title or text contains this (case-insensitive)
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,

    /// In this state now
    #[arg(long, value_name = "STATE", value_parser = ["active", "superseded", "cancelled", "expired"])]
    pub state: Option<String>,
}

/// `tocsin list`
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,

    /// Alerts per page (1 to 1000; the daemon's default is 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: Option<u64>,

    /// Continue after a previous page (the cursor printed with it)
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub cursor: Option<String>,

    /// Fetch every page, not only the first
    #[arg(long)]
    pub all: bool,
}

/// `tocsin export`
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The output format: stix2.1 (alerts chosen by the filters) or cap1.2 (one alert,
    /// by ID)
    #[arg(long, value_parser = ["stix2.1", "cap1.2"])]
    pub format: String,

    /// The alert to export (cap1.2 only; full 64-hex id)
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: Option<AlertId>,

    /// Write to this file instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub filters: Filters,
}

/// `tocsin import`
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The input format
    #[arg(long, value_parser = ["stix2.1"])]
    pub format: String,

    /// The bundle: a file, or - for stdin
    #[arg(value_name = "FILE")]
    pub file: String,

    /// TLP label for objects that carry no TLP marking (without it, such a bundle is
    /// refused)
    #[arg(long, value_name = "LABEL", value_parser = parse_tlp)]
    pub tlp: Option<Tlp>,

    /// Severity of the alerts issued [default: the Tocsin extension's, else medium]
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub severity: Option<Severity>,

    /// Recipient node key for TLP:RED alerts (repeatable; RED needs at least one)
    #[arg(long = "recipient", value_name = "KEY", value_parser = parse_key)]
    pub recipients: Vec<PublicKey>,

    /// Print what would be issued; issue nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Refuse a bundle that would issue more alerts than this (nothing is issued); a
    /// feed of many indicators is better checked with --dry-run first
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_alerts: usize,
}

/// `tocsin show`
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The alert (full 64-hex id; `tocsin list` shows the first 12)
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: AlertId,

    /// Show every version of the alert (its update and cancel chain) instead
    #[arg(long)]
    pub history: bool,
}

/// `tocsin watch`
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// First replay the alerts stored after this sequence number (default: only new ones)
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,

    /// Exit when the stream ends or the daemon cannot be reached, instead of
    /// reconnecting and resuming after the last alert shown
    #[arg(long)]
    pub no_reconnect: bool,
}

/// An expiry as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expires {
    /// A duration after issue, as written (sent as `expires_in`).
    In(String, Duration),
    /// An absolute time, unix ms (sent as `expires_at`).
    At(u64),
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse().map_err(|e: tocsin_proto::Error| e.to_string())
}

fn parse_tlp(s: &str) -> Result<Tlp, String> {
    s.parse().map_err(|e: tocsin_proto::Error| e.to_string())
}

fn parse_indicator(s: &str) -> Result<Indicator, String> {
    Indicator::parse(s).map_err(|e| e.to_string())
}

fn parse_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s).map_err(|_| "not a node key: expected 64 hex characters".to_string())
}

fn parse_id(s: &str) -> Result<AlertId, String> {
    AlertId::from_hex(s).map_err(|_| {
        "not an alert id: expected the full 64 hex characters (`tocsin list --json` prints them)"
            .to_string()
    })
}

fn parse_expires(s: &str) -> Result<Expires, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        if d.is_zero() {
            return Err("must be longer than zero".into());
        }
        return Ok(Expires::In(s.to_string(), d));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(Expires::At(system_ms(t))),
        Err(_) => Err("not a duration (24h) or an RFC 3339 UTC time (2030-01-01T00:00:00Z)".into()),
    }
}

fn system_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn parse_when(s: &str) -> Result<u64, String> {
    parse_time_spec(s, crate::format::now_ms())
}

/// Parses a point in time: unix ms (digits only), a duration ago (`2h`, `3days`) or an
/// RFC 3339 UTC time (`2024-05-01T12:00:00Z`, also with a space and without the `Z`).
pub fn parse_time_spec(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("{s} is too large"));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(ms));
    }
    humantime::parse_rfc3339_weak(s)
        .map(system_ms)
        .map_err(|_| {
            "not a duration ago (2h), an RFC 3339 UTC time (2024-05-01T12:00:00Z) or unix milliseconds"
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tocsin").chain(args.iter().copied()))
    }

    const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_before_or_after_the_subcommand() {
        let a = parse(&["--json", "--socket", "/tmp/s", "status"]).unwrap();
        let b = parse(&["status", "--json", "--socket", "/tmp/s"]).unwrap();
        for cli in [a, b] {
            assert!(cli.global.json);
            assert_eq!(cli.global.socket_path(), PathBuf::from("/tmp/s"));
        }
        let c = parse(&["list", "--data-dir", "/srv/tocsin", "-v"]).unwrap();
        assert_eq!(
            c.global.socket_path(),
            PathBuf::from("/srv/tocsin/tocsind.sock")
        );
        assert_eq!(c.global.verbose, 1);
        assert!(parse(&["-q", "-v", "status"]).is_err());
    }

    #[test]
    fn issue_parses_typed_values() {
        let cli = parse(&[
            "issue",
            "--severity",
            "HIGH",
            "--tlp",
            "amber+strict",
            "--title",
            "t",
            "--indicator",
            "ipv4:192.0.2.1",
            "--indicator",
            "cve:CVE-2024-12345",
            "--tag",
            "x",
            "--recipient",
            KEY,
            "--expires",
            "24h",
        ])
        .unwrap();
        let Command::Issue(a) = cli.command else {
            panic!("not issue")
        };
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.tlp, Tlp::AmberStrict);
        assert_eq!(a.content.indicators.len(), 2);
        assert_eq!(a.recipients.len(), 1);
        assert_eq!(
            a.content.expires,
            Some(Expires::In("24h".into(), Duration::from_secs(86400)))
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        for (args, flag) in [
            (
                vec![
                    "issue",
                    "--severity",
                    "loud",
                    "--tlp",
                    "GREEN",
                    "--title",
                    "t",
                ],
                "--severity",
            ),
            (
                vec![
                    "issue",
                    "--severity",
                    "low",
                    "--tlp",
                    "PINK",
                    "--title",
                    "t",
                ],
                "--tlp",
            ),
            (
                vec![
                    "issue",
                    "--severity",
                    "low",
                    "--tlp",
                    "GREEN",
                    "--title",
                    "t",
                    "--indicator",
                    "ipv4:300.1.1.1",
                ],
                "--indicator",
            ),
            (
                vec![
                    "issue",
                    "--severity",
                    "low",
                    "--tlp",
                    "GREEN",
                    "--title",
                    "t",
                    "--recipient",
                    "abc",
                ],
                "--recipient",
            ),
            (vec!["show", "abc123"], "ID"),
            (vec!["list", "--since", "last tuesday"], "--since"),
            (vec!["list", "--limit", "0"], "--limit"),
        ] {
            let err = parse(&args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        let err = parse(&[
            "issue",
            "--severity",
            "low",
            "--tlp",
            "GREEN",
            "--title",
            "t",
            "--text",
            "a",
            "--body-file",
            "-",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn time_specs() {
        let now = 1_714_564_800_000;
        assert_eq!(parse_time_spec("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time_spec("2h", now), Ok(now - 7_200_000));
        assert_eq!(
            parse_time_spec("2024-05-01T12:00:00Z", now),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_time_spec("2024-05-01 12:00:00", now),
            Ok(1_714_564_800_000)
        );
        assert!(parse_time_spec("soon", now).is_err());
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("2  tocsind cannot be reached"));
    }
}
