//! The binaries' `--help` documents what users rely on. (Being integration tests, these
//! also make `cargo test --workspace` build the `tocsin` and `tocsin-cluster` binaries
//! that the multi-process tests in `tests/` run.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tocsin_help_documents_exit_codes_and_commands() {
    let h = help(env!("CARGO_BIN_EXE_tocsin"), &[]);
    for word in [
        "issue", "update", "cancel", "list", "show", "watch", "status", "trust", "peers", "key",
        "org",
    ] {
        assert!(h.contains(word), "tocsin --help lists {word}:\n{h}");
    }
    assert!(
        h.to_lowercase().contains("exit"),
        "exit codes documented:\n{h}"
    );
    for code in ["0", "1", "2"] {
        assert!(h.contains(code), "exit code {code} documented:\n{h}");
    }
    let trust = help(env!("CARGO_BIN_EXE_tocsin"), &["trust"]);
    for word in ["list", "add", "set", "remove", "audit"] {
        assert!(
            trust.contains(word),
            "tocsin trust --help lists {word}:\n{trust}"
        );
    }
}

#[test]
fn tocsin_cluster_help_lists_every_command() {
    let h = help(env!("CARGO_BIN_EXE_tocsin-cluster"), &[]);
    for word in [
        "up",
        "status",
        "issue",
        "kill",
        "stop",
        "start",
        "partition",
        "heal",
        "logs",
        "down",
        "demo",
        "bench",
    ] {
        assert!(h.contains(word), "tocsin-cluster --help lists {word}:\n{h}");
    }
    assert!(
        !h.contains("gossipsub-node"),
        "the internal baseline node stays hidden"
    );
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let bin = env!("CARGO_BIN_EXE_tocsin");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "tocsin completions {shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["issue", "export", "import", "trust", "min-severity"] {
            assert!(script.contains(word), "{shell} completion knows {word}");
        }
    }
    let out = Command::new(bin)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown shell is bad input");
    let out = Command::new(bin).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH tocsin"),
        "{page}"
    );
    for word in ["issue", "export", "watch", "Exit codes"] {
        assert!(page.contains(word), "the man page documents {word}");
    }
}
