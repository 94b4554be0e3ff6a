//! Running `tocsin` subcommands: local checks, API calls, output.

use std::io::{Read, Write};

use anyhow::Context;
use serde_json::{json, Map, Value};
use tocsin_proto::limits::{Limit, MAX_TEXT_BYTES};
use tocsin_proto::{AlertBody, Kind, PublicKey, Tlp, FORMAT_VERSION};

use crate::cli::{
    CancelArgs, Cli, Command, ContentArgs, Expires, Filters, GlobalArgs, IssueArgs, KeyCommand,
    ListArgs, ShowArgs, UpdateArgs, WatchArgs,
};
use crate::client::{
    Client, ClientError, Endpoint, ListQuery, EXIT_DAEMON, EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE,
};
use crate::format::{self, AlertView};
// Re-exported: callers of [`run`] (the `tocsin` binary, the in-process CLI tests) build
// the output they pass to it from here.
pub use crate::output::{BrokenPipe, Output};

/// Bad input found before contacting the daemon, naming the option at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message} (option {option})")]
pub struct InputError {
    /// The command-line option, e.g. `--recipient`.
    pub option: &'static str,
    /// What is wrong, as the daemon would say it.
    pub message: String,
}

/// The client for the endpoint the global options name.
pub fn client(global: &GlobalArgs) -> Result<Client, ClientError> {
    let endpoint = match &global.api {
        Some(url) => Endpoint::tcp(url, global.token.clone())?,
        None => Endpoint::Unix(global.socket_path()),
    };
    Ok(Client::new(endpoint).verbose(global.verbose > 0))
}

/// Runs a parsed command line, writing data to `out`.
pub async fn run<W: Write>(cli: Cli, out: &mut Output<W>) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Key(KeyCommand::Show) => key_show(g, out),
        Command::Org(cmd) => crate::org::run(g.json, cmd, out),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "tocsin",
                &mut script,
            );
            out.write(&String::from_utf8_lossy(&script))
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            out.write(&String::from_utf8_lossy(&page))
        }
        Command::Issue(args) => issue(g, args, out).await,
        Command::Update(args) => update(g, args, out).await,
        Command::Cancel(args) => cancel(g, args, out).await,
        Command::List(args) => list(g, args, out).await,
        Command::Show(args) => show(g, args, out).await,
        Command::Ack { id, by } => crate::federation::ack(&client(g)?, g.json, &id, by, out).await,
        Command::Sighting { what, count, note } => {
            crate::federation::sighting(&client(g)?, g.json, &what, count, note, out).await
        }
        Command::Sightings { id } => {
            crate::federation::sightings(&client(g)?, g.json, &id, out).await
        }
        Command::Receipts { id } => {
            crate::federation::receipts(&client(g)?, g.json, &id, out).await
        }
        Command::Export(args) => {
            check_filters(&args.filters)?;
            crate::interop::export(&client(g)?, g, &args, out).await
        }
        Command::Import(args) => crate::interop::import(&client(g)?, g, &args, out).await,
        Command::Watch(args) => watch(g, args, out).await,
        Command::Trust(cmd) => crate::federation::trust(&client(g)?, g.json, cmd, out).await,
        Command::Peers => crate::federation::peers(&client(g)?, g.json, out).await,
        Command::Revocation(cmd) => {
            crate::federation::revocation(&client(g)?, g.json, cmd, out).await
        }
        Command::Status => {
            let status = client(g)?.status().await?;
            if g.json {
                out.line(&status.to_string())
            } else {
                let mut status = status;
                let webhooks = status
                    .as_object_mut()
                    .and_then(|o| o.remove("webhooks"))
                    .unwrap_or(Value::Null);
                out.write(&format::key_values(&status, &format::STATUS_KEYS))?;
                out.write(&format::webhook_lines(&webhooks))
            }
        }
    }
}

fn key_show<W: Write>(g: &GlobalArgs, out: &mut Output<W>) -> anyhow::Result<()> {
    let path = g.data_dir.join(tocsin_proto::keyfile::KEY_FILE);
    let key = tocsin_proto::keyfile::load_key(&path)
        .with_context(|| format!("cannot read the node key in {}", g.data_dir.display()))?;
    let public = tocsin_proto::keyfile::public_key(&key);
    let peer_id = peer_id_string(&public);
    if g.json {
        out.json_line(&json!({"public_key": public.to_string(), "peer_id": peer_id}))
    } else {
        out.write(&format!("public_key: {public}\npeer_id: {peer_id}\n"))
    }
}

/// The CLI option that sets an API field.
fn option_of(field: Option<&str>) -> &'static str {
    match field {
        Some("severity") => "--severity",
        Some("tlp") => "--tlp",
        Some("title") => "--title",
        Some("text") => "--text",
        Some("recipients") => "--recipient",
        Some("indicators") => "--indicator",
        Some("tags") => "--tag",
        Some("references") => "--reference",
        Some("expires_at" | "expires_in") => "--expires",
        Some("reason") => "--reason",
        _ => "…",
    }
}

fn input_error(err: &tocsin_proto::Error) -> InputError {
    let e = tocsin_proto::api::field_error(err);
    InputError {
        option: option_of(e.field),
        message: e.message,
    }
}

/// The free text: `--text`, or `--body-file` (`-` = stdin).
fn read_text(content: &ContentArgs) -> anyhow::Result<Option<String>> {
    if let Some(text) = &content.text {
        return Ok(Some(text.clone()));
    }
    let Some(path) = &content.body_file else {
        return Ok(None);
    };
    // Read at most one byte past the limit: enough to report it, never a whole disk.
    let cap = u64::try_from(MAX_TEXT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(cap)
            .read_to_end(&mut bytes)
            .context("cannot read the body from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(cap).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read --body-file {}", path.display()))?;
    }
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(InputError {
            option: "--body-file",
            message: format!(
                "the body is more than {MAX_TEXT_BYTES} bytes, exceeds the limit {}",
                Limit::TextBytes
            ),
        }
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|_| InputError {
        option: "--body-file",
        message: "the body is not UTF-8 text".into(),
    })?;
    Ok(Some(text))
}

/// Adds the content fields that were given to an API request body.
fn content_fields(req: &mut Map<String, Value>, c: &ContentArgs, text: Option<String>) {
    if let Some(text) = text {
        req.insert("text".into(), json!(text));
    }
    if !c.indicators.is_empty() {
        let specs: Vec<String> = c
            .indicators
            .iter()
            .map(|i| format!("{}:{}", i.kind.as_str(), i.value))
            .collect();
        req.insert("indicators".into(), json!(specs));
    }
    if !c.tags.is_empty() {
        req.insert("tags".into(), json!(c.tags));
    }
    if !c.references.is_empty() {
        req.insert("references".into(), json!(c.references));
    }
    match &c.expires {
        Some(Expires::In(text, _)) => {
            req.insert("expires_in".into(), json!(text));
        }
        Some(Expires::At(ms)) => {
            req.insert("expires_at".into(), json!(ms));
        }
        None => {}
    }
}

/// Checks, without the daemon, everything about an alert that does not depend on the
/// node: limits, TLP:RED recipients, tags, the expiry.
fn check_locally(
    kind: Kind,
    severity: tocsin_proto::Severity,
    tlp: Tlp,
    recipients: Vec<PublicKey>,
    title: String,
    text: Option<String>,
    c: &ContentArgs,
) -> Result<(), InputError> {
    let now = format::now_ms();
    let body = AlertBody {
        v: FORMAT_VERSION,
        // Placeholders for what the daemon fills in.
        origin: PublicKey([0; 32]),
        issued_at: now,
        expires_at: c.expires.as_ref().map(|e| match e {
            Expires::In(_, d) => {
                now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Expires::At(ms) => *ms,
        }),
        kind,
        replaces: (kind != Kind::New).then_some(tocsin_proto::AlertId([0; 32])),
        severity,
        tlp,
        recipients,
        title,
        text: text.unwrap_or_default(),
        indicators: c.indicators.clone(),
        tags: c.tags.clone(),
        references: c.references.clone(),
    };
    body.validate().map_err(|e| input_error(&e))
}

fn print_issued<W: Write>(
    g: &GlobalArgs,
    issued: &crate::client::Issued,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    if issued.duplicate && !g.quiet {
        eprintln!("tocsin: an identical alert was already stored");
    }
    if g.json {
        out.json_line(&json!({"id": issued.id, "seq": issued.seq}))
    } else {
        out.line(&issued.id)
    }
}

async fn issue<W: Write>(g: &GlobalArgs, a: IssueArgs, out: &mut Output<W>) -> anyhow::Result<()> {
    let text = read_text(&a.content)?;
    check_locally(
        Kind::New,
        a.severity,
        a.tlp,
        a.recipients.clone(),
        a.title.clone(),
        text.clone(),
        &a.content,
    )?;
    let mut req = Map::new();
    req.insert("severity".into(), json!(a.severity.as_str()));
    req.insert("tlp".into(), json!(a.tlp.as_str()));
    req.insert("title".into(), json!(a.title));
    if !a.recipients.is_empty() {
        let keys: Vec<String> = a.recipients.iter().map(ToString::to_string).collect();
        req.insert("recipients".into(), json!(keys));
    }
    if let Some(d) = &a.ack_within {
        req.insert("ack_within".into(), json!(d));
    }
    content_fields(&mut req, &a.content, text);
    let issued = client(g)?.issue(&Value::Object(req)).await?;
    print_issued(g, &issued, out)
}

async fn update<W: Write>(
    g: &GlobalArgs,
    a: UpdateArgs,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let text = read_text(&a.content)?;
    // The fields not given come from the original, which only the daemon has; check
    // the given ones with placeholders for the rest.
    check_locally(
        Kind::Update,
        a.severity.unwrap_or(tocsin_proto::Severity::Info),
        Tlp::Clear,
        Vec::new(),
        a.title.clone().unwrap_or_else(|| "-".into()),
        text.clone(),
        &a.content,
    )?;
    let mut req = Map::new();
    if let Some(s) = a.severity {
        req.insert("severity".into(), json!(s.as_str()));
    }
    if let Some(t) = &a.title {
        req.insert("title".into(), json!(t));
    }
    content_fields(&mut req, &a.content, text);
    let issued = client(g)?
        .update(&a.id.to_string(), &Value::Object(req))
        .await?;
    print_issued(g, &issued, out)
}

async fn cancel<W: Write>(
    g: &GlobalArgs,
    a: CancelArgs,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    if a.reason.trim().is_empty() {
        return Err(InputError {
            option: "--reason",
            message: "reason must not be empty".into(),
        }
        .into());
    }
    if Limit::TextBytes.check(a.reason.len()).is_err() {
        let e = tocsin_proto::api::limit_error(Limit::TextBytes, a.reason.len(), Some("reason"));
        return Err(InputError {
            option: "--reason",
            message: e.message,
        }
        .into());
    }
    let issued = client(g)?.cancel(&a.id.to_string(), &a.reason).await?;
    print_issued(g, &issued, out)
}

/// The API query for `tocsin list`'s options.
pub fn list_query(a: &ListArgs) -> ListQuery {
    ListQuery {
        limit: a.limit.and_then(|n| usize::try_from(n).ok()),
        cursor: a.cursor.clone(),
        ..filter_query(&a.filters)
    }
}

/// The API query for the list filters (`tocsin list`, `tocsin export`).
pub fn filter_query(f: &Filters) -> ListQuery {
    ListQuery {
        since: f.since,
        until: f.until,
        origin: f.origin.map(|k| k.to_string()),
        min_severity: f.min_severity.map(|s| s.as_str().to_string()),
        tlp: f.tlp.map(|t| t.as_str().to_string()),
        tag: f.tag.clone(),
        indicator: f.indicator.clone(),
        text: f.text.clone(),
        state: f.state.clone(),
        limit: None,
        cursor: None,
    }
}

/// `--since` after `--until` is refused before the daemon is asked.
pub fn check_filters(f: &Filters) -> Result<(), InputError> {
    match (f.since, f.until) {
        (Some(since), Some(until)) if since > until => Err(InputError {
            option: "--since",
            message: "--since is later than --until".into(),
        }),
        _ => Ok(()),
    }
}

/// A table row (or JSON line) for one alert view.
fn alert_line<W: Write>(g: &GlobalArgs, v: &Value, out: &mut Output<W>) -> anyhow::Result<()> {
    if g.json {
        return out.json_line(v);
    }
    let view = AlertView::from_json(v)
        .map_err(|e| ClientError::Response(format!("an alert view is malformed: {e}")))?;
    out.line(&format::table_row(&view))
}

async fn list<W: Write>(g: &GlobalArgs, a: ListArgs, out: &mut Output<W>) -> anyhow::Result<()> {
    check_filters(&a.filters)?;
    let client = client(g)?;
    let mut query = list_query(&a);
    let mut printed_header = false;
    let mut count = 0usize;
    loop {
        let page = client.list(&query).await?;
        if !g.json && !printed_header {
            out.line(&format::table_header())?;
            printed_header = true;
        }
        for v in &page.alerts {
            alert_line(g, v, out)?;
        }
        count += page.alerts.len();
        match page.next {
            Some(next) if a.all => query.cursor = Some(next),
            Some(next) => {
                if !g.quiet {
                    eprintln!("tocsin: more alerts: add --all, or continue with --cursor {next}");
                }
                break;
            }
            None => break,
        }
    }
    if g.verbose > 0 {
        eprintln!("tocsin: {count} alerts");
    }
    Ok(())
}

async fn show<W: Write>(g: &GlobalArgs, a: ShowArgs, out: &mut Output<W>) -> anyhow::Result<()> {
    let client = client(g)?;
    let id = a.id.to_string();
    let views = if a.history {
        client.history(&id).await?
    } else {
        vec![client.alert(&id).await?]
    };
    for (i, v) in views.iter().enumerate() {
        if g.json {
            out.json_line(v)?;
            continue;
        }
        let view = AlertView::from_json(v)
            .map_err(|e| ClientError::Response(format!("the alert view is malformed: {e}")))?;
        if i > 0 {
            out.line("")?;
        }
        out.write(&format::show(&view))?;
    }
    Ok(())
}

/// Longest wait between reconnection attempts of `tocsin watch`.
const WATCH_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Why one event stream of `tocsin watch` ended.
enum StreamEnd {
    /// The daemon closed it, or the connection failed: resume.
    Lost(anyhow::Error),
    /// The daemon dropped a subscriber that fell behind, saying where to resume.
    Resume(u64, String),
}

/// `tocsin watch`: follows the event stream; when it ends (daemon restart, network
/// failure, a stream dropped for falling behind) reconnects with backoff and resumes
/// after the last alert shown, so nothing stored meanwhile is missed.
async fn watch<W: Write>(g: &GlobalArgs, a: WatchArgs, out: &mut Output<W>) -> anyhow::Result<()> {
    let client = client(g)?;
    // Where to resume: the last sequence number shown, or the log's head when watching
    // only new alerts (so alerts stored while reconnecting are not missed).
    let status = client.status().await?;
    let epoch = status["epoch"].as_u64();
    let mut last = a.from.or_else(|| status["head"].as_u64());
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        let end = match client.watch(last).await {
            Ok(stream) => {
                if g.verbose > 0 {
                    eprintln!("tocsin: watching {}", client.endpoint());
                }
                backoff = std::time::Duration::from_millis(250);
                follow(g, stream, &mut last, out).await?
            }
            Err(e) if e.exit_code() == EXIT_UNREACHABLE || e.exit_code() == EXIT_DAEMON => {
                StreamEnd::Lost(e.into())
            }
            Err(e) => return Err(e.into()),
        };
        let why = match end {
            StreamEnd::Lost(e) => e,
            StreamEnd::Resume(seq, message) => {
                last = Some(seq);
                anyhow::anyhow!(message)
            }
        };
        if a.no_reconnect {
            return Err(why);
        }
        if !g.quiet {
            let from = last.map_or_else(|| "the start".to_string(), |s| format!("seq {s}"));
            eprintln!(
                "tocsin: the event stream ended ({why:#}); resuming after {from} in {backoff:?}"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = out.closed() => return Err(BrokenPipe.into()),
        }
        backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        // A node whose database was replaced numbers its log afresh: replay it all.
        if let Ok(now) = client.status().await {
            if epoch.is_some() && now["epoch"].as_u64() != epoch {
                if !g.quiet {
                    eprintln!("tocsin: the node's log was replaced (new epoch); replaying it from the start");
                }
                last = Some(0);
            }
        }
    }
}

/// Prints one stream's alerts until it ends, recording the last sequence number shown.
async fn follow<W: Write>(
    g: &GlobalArgs,
    mut stream: crate::client::EventStream,
    last: &mut Option<u64>,
    out: &mut Output<W>,
) -> anyhow::Result<StreamEnd> {
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = out.closed() => return Err(BrokenPipe.into()),
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Ok(StreamEnd::Lost(anyhow::anyhow!(
                    "tocsind closed the event stream"
                )))
            }
            Err(e) => return Ok(StreamEnd::Lost(e.into())),
        };
        match event.event.as_str() {
            "alert" => {
                let v: Value = serde_json::from_str(&event.data).map_err(|e| {
                    ClientError::Response(format!("an alert event is not JSON: {e}"))
                })?;
                alert_line(g, &v, out)?;
                if let Some(seq) = v["seq"].as_u64() {
                    *last = Some(seq);
                }
            }
            "ack_overdue" => {
                let v: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                if g.json {
                    let mut line = v.clone();
                    if let Some(o) = line.as_object_mut() {
                        o.insert("event".into(), "ack_overdue".into());
                    }
                    out.json_line(&line)?;
                } else {
                    out.line(&format!(
                        "ACK OVERDUE  {}  {} named recipient(s) have not acknowledged by {}",
                        crate::format::sanitize(v["alert"].as_str().unwrap_or("?"), false),
                        v["missing"].as_array().map_or(0, Vec::len),
                        crate::format::format_time(v["deadline"].as_u64().unwrap_or(0))
                    ))?;
                }
            }
            "error" => {
                let body: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                let message = body["error"]
                    .as_str()
                    .map_or_else(|| event.data.clone(), String::from);
                return match body["resume_from"].as_u64() {
                    Some(seq) => Ok(StreamEnd::Resume(seq, message)),
                    None => Err(ClientError::Api {
                        status: 500,
                        error: message,
                        field: None,
                    }
                    .into()),
                };
            }
            _ => {}
        }
    }
}

/// The exit code for an error: 0 for a closed stdout, else per [`ClientError::exit_code`]
/// when the daemon was involved, else 1 (bad input).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<BrokenPipe>() {
            return EXIT_OK;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return c.exit_code();
        }
    }
    EXIT_INPUT
}

/// Writes `error: …`, `  caused by: …` lines and, when the daemon cannot be reached, a
/// hint on how to start it. Writes nothing for a closed stdout. Returns the exit code.
pub fn report(err: &anyhow::Error, global: &GlobalArgs, stderr: &mut impl Write) -> u8 {
    let code = exit_code(err);
    if err.chain().any(|c| c.is::<BrokenPipe>()) {
        return code;
    }
    let mut previous = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        if i == 0 {
            let _ = writeln!(stderr, "error: {text}");
        } else if !previous.contains(&text) {
            // Errors that print their source inline would otherwise say it twice.
            let _ = writeln!(stderr, "  caused by: {text}");
        }
        previous = text;
    }
    if code == EXIT_UNREACHABLE {
        let _ = writeln!(
            stderr,
            "  hint: is it running? start it with: tocsind run --data-dir {}",
            global.data_dir.display()
        );
    }
    debug_assert!(code <= EXIT_DAEMON);
    code
}

/// The libp2p `PeerId` of a node key ("invalid key" if the bytes are not a curve
/// point), as `tocsind` derives it from the same key.
pub fn peer_id_string(key: &tocsin_proto::PublicKey) -> String {
    libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0)
        .map(|pk| {
            libp2p::PeerId::from_public_key(&libp2p::identity::PublicKey::from(pk)).to_string()
        })
        .unwrap_or_else(|_| "invalid key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tocsin").chain(args.iter().copied())).unwrap()
    }

    fn run_blocking(c: Cli) -> (anyhow::Result<()>, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf);
        let r = rt.block_on(run(c, &mut out));
        (r, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn red_without_recipients_fails_locally_naming_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let c = cli(&[
            "issue",
            "--severity",
            "high",
            "--tlp",
            "RED",
            "--title",
            "t",
            "--socket",
            sock.to_str().unwrap(),
        ]);
        let (r, out) = run_blocking(c);
        let err = r.unwrap_err();
        assert_eq!(exit_code(&err), EXIT_INPUT);
        let msg = err.to_string();
        assert!(msg.contains("recipient"), "{msg}");
        assert!(msg.contains("--recipient"), "{msg}");
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_text_fails_locally_naming_the_limit() {
        let big = "x".repeat(MAX_TEXT_BYTES + 1);
        let c = cli(&[
            "issue",
            "--severity",
            "high",
            "--tlp",
            "GREEN",
            "--title",
            "t",
            "--text",
            &big,
            "--socket",
            "/nonexistent/s.sock",
        ]);
        let err = run_blocking(c).0.unwrap_err();
        assert_eq!(exit_code(&err), EXIT_INPUT);
        assert!(err.to_string().contains("MAX_TEXT_BYTES = 32768"), "{err}");
        assert!(err.to_string().contains("--text"), "{err}");
    }

    #[test]
    fn unreachable_daemon_is_exit_2_with_hint() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tocsind.sock");
        let c = cli(&["status", "--data-dir", dir.path().to_str().unwrap()]);
        let g = c.global.clone();
        let err = run_blocking(c).0.unwrap_err();
        let mut stderr = Vec::new();
        let code = report(&err, &g, &mut stderr);
        let stderr = String::from_utf8(stderr).unwrap();
        assert_eq!(code, EXIT_UNREACHABLE);
        assert!(
            stderr.starts_with(&format!(
                "error: cannot reach tocsind at {}\n  caused by: ",
                sock.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains(&format!(
            "  hint: is it running? start it with: tocsind run --data-dir {}",
            dir.path().display()
        )));
    }

    #[test]
    fn broken_pipe_is_quiet_success() {
        let err: anyhow::Error = BrokenPipe.into();
        let g = cli(&["status"]).global;
        let mut stderr = Vec::new();
        assert_eq!(report(&err, &g, &mut stderr), EXIT_OK);
        assert!(stderr.is_empty());
    }

    #[test]
    fn list_options_become_the_api_query() {
        let Command::List(a) = cli(&[
            "list",
            "--tlp",
            "amber+strict",
            "--min-severity",
            "High",
            "--state",
            "active",
            "--limit",
            "5",
            "--since",
            "1000",
        ])
        .command
        else {
            panic!("not list")
        };
        let q = list_query(&a);
        assert_eq!(
            q.to_query_string(),
            "?since=1000&min_severity=high&tlp=AMBER%2BSTRICT&state=active&limit=5"
        );
    }

    #[test]
    fn peer_id_is_the_one_libp2p_derives_from_the_same_secret() {
        let mut secret = [5u8; 32];
        let key = tocsin_proto::SigningKey::from_bytes(&secret);
        let public = tocsin_proto::keyfile::public_key(&key);
        let kp = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
        assert_eq!(
            peer_id_string(&public),
            kp.public().to_peer_id().to_string()
        );
    }
}
