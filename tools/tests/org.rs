//! `tocsin org` with the real binary, on files: an org key is made once and kept
//! private, a node key is certified and revoked, the files check as signed by it, and
//! damaged files, foreign keys and out-of-range requests are refused with a message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `tocsin ARGS` in `dir`; (stdout, stderr, exit code).
fn tocsin(dir: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_tocsin"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (out, err, code) = tocsin(dir, &all);
    assert_eq!(code, 0, "tocsin {args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn an_org_key_certifies_and_revokes_a_node_and_its_files_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org = json(d, &["org", "init"])["org_key"]
        .as_str()
        .unwrap()
        .to_string();
    let mode = std::fs::metadata(d.join("org.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never over an existing key.
    let (_, err, code) = tocsin(d, &["org", "init"]);
    assert_ne!(code, 0);
    assert!(err.contains("org.key"), "{err}");
    assert_eq!(
        json(d, &["org", "show", "--key", "org.key"])["org_key"],
        org.as_str()
    );

    // A node key to certify (any valid key: a second "org" key here).
    let node = json(d, &["org", "init", "--key", "node.key"])["org_key"]
        .as_str()
        .unwrap()
        .to_string();
    let c = json(
        d,
        &[
            "org",
            "certify",
            &node,
            "--agency",
            "CERT-Example",
            "--valid",
            "90d",
            "--out",
            "node.cert",
        ],
    );
    assert_eq!(c["org"], org.as_str());
    assert_eq!(c["node"], node.as_str());
    assert_eq!(c["state"], "valid");
    let days = (c["not_after"].as_u64().unwrap() - c["not_before"].as_u64().unwrap()) / 86_400_000;
    assert_eq!(days, 90);
    let shown = json(d, &["org", "show", "node.cert"]);
    assert_eq!(shown["agency"], "CERT-Example");
    assert_eq!(shown["signature"], "valid");
    let (text, _, code) = tocsin(d, &["org", "show", "node.cert"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("agency: CERT-Example") && text.contains("signature valid"),
        "{text}"
    );

    // A certificate from the past has expired.
    json(
        d,
        &[
            "org",
            "certify",
            &node,
            "--agency",
            "CERT-Example",
            "--valid",
            "1d",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--out",
            "old.cert",
        ],
    );
    assert_eq!(json(d, &["org", "show", "old.cert"])["state"], "expired");

    // A damaged certificate is refused.
    let mut bytes = std::fs::read(d.join("node.cert")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("bad.cert"), &bytes).unwrap();
    let (_, err, code) = tocsin(d, &["org", "show", "bad.cert"]);
    assert_ne!(code, 0);
    assert!(err.contains("signature"), "{err}");
    std::fs::write(d.join("junk.cert"), b"not a certificate").unwrap();
    let (_, err, code) = tocsin(d, &["org", "show", "junk.cert"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("neither a node certificate nor a revocation"),
        "{err}"
    );

    // Out-of-range requests name what is wrong.
    let (_, err, code) = tocsin(
        d,
        &[
            "org",
            "certify",
            &node,
            "--agency",
            "X",
            "--valid",
            "800d",
            "--out",
            "long.cert",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("not_after") && err.contains("two years"),
        "{err}"
    );
    let (_, err, code) = tocsin(
        d,
        &[
            "org",
            "certify",
            &org,
            "--agency",
            "X",
            "--out",
            "self.cert",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("org key itself"), "{err}");
    let (_, err, code) = tocsin(
        d,
        &[
            "org",
            "certify",
            &"ff".repeat(32),
            "--agency",
            "X",
            "--out",
            "ff.cert",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a valid ed25519 public key"), "{err}");
    assert!(!d.join("long.cert").exists() && !d.join("ff.cert").exists());
    // A world-readable org key is refused.
    std::fs::set_permissions(d.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err, code) = tocsin(
        d,
        &[
            "org", "certify", &org, "--key", "node.key", "--agency", "X", "--out", "x.cert",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("node.key"), "{err}");

    // Revocation.
    let r = json(
        d,
        &[
            "org",
            "revoke",
            &node,
            "--reason",
            "laptop stolen",
            "--out",
            "node.revocation",
        ],
    );
    assert_eq!(r["kind"], "revocation");
    let shown = json(d, &["org", "show", "node.revocation"]);
    assert_eq!(shown["node"], node.as_str());
    assert_eq!(shown["reason"], "laptop stolen");
    let (_, err, code) = tocsin(d, &["org", "revoke", &node, "--reason", "", "--out", "r2"]);
    assert_ne!(code, 0);
    assert!(err.contains("reason"), "{err}");
}
