//! `tocsin org`: the agency's offline org key, and the certificates and revocations it
//! signs. Everything here works on files, never with a daemon: the org key is meant to
//! live on an offline machine (or removable media), and only the certificate file moves
//! to a node. The objects are `tocsin_proto::identity`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::json;
use tocsin_proto::identity::{NodeCert, Revocation, Signed, IDENTITY_VERSION};
use tocsin_proto::keyfile::{load_key, public_key, write_new_key};
use tocsin_proto::SigningKey;

use crate::cli::OrgCommand;
use crate::format::{format_time, now_ms, sanitize};
use crate::output::Output;

/// Writes a new file (never over an existing one), synced.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn load_org(path: &Path) -> anyhow::Result<SigningKey> {
    load_key(path).with_context(|| format!("cannot use the org key {}", path.display()))
}

/// Runs `tocsin org …`.
pub fn run<W: Write>(json_out: bool, cmd: OrgCommand, out: &mut Output<W>) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Init { key } => {
            let secret = SigningKey::generate(&mut rand::rngs::OsRng);
            write_new_key(&key, &secret)
                .with_context(|| format!("cannot create the org key {}", key.display()))?;
            let public = public_key(&secret);
            if json_out {
                out.json_line(&json!({"org_key": public.to_string(), "file": key}))
            } else {
                out.write(&format!(
                    "org key: {public}\nwritten to {} (mode 0600): keep it offline; give partners the org key above\n",
                    key.display()
                ))
            }
        }
        OrgCommand::Certify {
            node,
            key,
            agency,
            valid,
            not_before,
            serial,
            out: file,
        } => {
            let org = load_org(&key)?;
            let from = not_before.unwrap_or_else(now_ms);
            let ms = u64::try_from(valid.as_millis()).unwrap_or(u64::MAX);
            let body = NodeCert {
                v: IDENTITY_VERSION,
                org: public_key(&org),
                node,
                agency,
                not_before: from,
                not_after: from.saturating_add(ms),
                serial: serial.unwrap_or(from),
            };
            let cert = Signed::sign(body, &org).context("cannot certify")?;
            write_new(&file, &cert.to_bytes())?;
            show_cert(json_out, &cert, out)?;
            if !json_out {
                out.write(&format!("written to {}\n", file.display()))?;
            }
            Ok(())
        }
        OrgCommand::Revoke {
            node,
            key,
            reason,
            at,
            out: file,
        } => {
            let org = load_org(&key)?;
            let body = Revocation {
                v: IDENTITY_VERSION,
                org: public_key(&org),
                node,
                revoked_at: at.unwrap_or_else(now_ms),
                reason,
            };
            let rev = Signed::sign(body, &org).context("cannot revoke")?;
            write_new(&file, &rev.to_bytes())?;
            show_revocation(json_out, &rev, out)?;
            if !json_out {
                out.write(&format!("written to {}\n", file.display()))?;
            }
            Ok(())
        }
        OrgCommand::Show { key, file } => match (key, file) {
            (Some(key), None) => {
                let public = public_key(&load_org(&key)?);
                if json_out {
                    out.json_line(&json!({"org_key": public.to_string()}))
                } else {
                    out.write(&format!("org key: {public}\n"))
                }
            }
            (None, Some(file)) => {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                if let Ok(cert) = Signed::<NodeCert>::decode(&bytes) {
                    cert.verify().with_context(|| {
                        format!(
                            "{}: the certificate's signature is not valid",
                            file.display()
                        )
                    })?;
                    return show_cert(json_out, &cert, out);
                }
                match Signed::<Revocation>::decode(&bytes) {
                    Ok(rev) => {
                        rev.verify().with_context(|| {
                            format!(
                                "{}: the revocation's signature is not valid",
                                file.display()
                            )
                        })?;
                        show_revocation(json_out, &rev, out)
                    }
                    Err(e) => bail!(
                        "{} is neither a node certificate nor a revocation: {e}",
                        file.display()
                    ),
                }
            }
            _ => bail!("give --key ORG_KEY_FILE, or a certificate or revocation FILE"),
        },
    }
}

fn show_cert<W: Write>(
    json_out: bool,
    cert: &Signed<NodeCert>,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let c = cert.body();
    let now = now_ms();
    let state = if now < c.not_before {
        "not yet valid"
    } else if cert.is_valid_at(now) {
        "valid"
    } else {
        "expired"
    };
    if json_out {
        return out.json_line(&json!({
            "kind": "node_certificate", "org": c.org.to_string(), "node": c.node.to_string(),
            "agency": c.agency, "not_before": c.not_before, "not_after": c.not_after,
            "serial": c.serial, "signature": "valid", "state": state,
        }));
    }
    out.write(&format!(
        "node certificate (signature valid, {state})\n  agency: {}\n  org: {}\n  node: {}\n  valid: {} to {}\n  serial: {}\n",
        sanitize(&c.agency, false),
        c.org,
        c.node,
        format_time(c.not_before),
        format_time(c.not_after),
        c.serial
    ))
}

fn show_revocation<W: Write>(
    json_out: bool,
    rev: &Signed<Revocation>,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let r = rev.body();
    if json_out {
        return out.json_line(&json!({
            "kind": "revocation", "org": r.org.to_string(), "node": r.node.to_string(),
            "revoked_at": r.revoked_at, "reason": r.reason, "signature": "valid",
        }));
    }
    out.write(&format!(
        "revocation (signature valid)\n  org: {}\n  node: {}\n  from: {}\n  reason: {}\n",
        r.org,
        r.node,
        format_time(r.revoked_at),
        sanitize(&r.reason, false)
    ))
}
