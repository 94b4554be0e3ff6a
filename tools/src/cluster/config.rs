//! Creating each node's data directory (`tocsind init`) and writing its `config.toml`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{CreateOptions, Link, NodeInfo};

/// Runs `tocsind init` for node `i` (0-based) in `dir`, listening on a free loopback port.
pub(super) fn init_node(tocsind: &Path, dir: &Path, i: usize) -> Result<NodeInfo> {
    let name = format!("n{}", i + 1);
    let data_dir = dir.join(&name);
    let port = free_port()?;
    let out = Command::new(tocsind)
        .arg("init")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg(format!("/ip4/127.0.0.1/tcp/{port}"))
        .arg("--json")
        .output()
        .with_context(|| format!("cannot run {}", tocsind.display()))?;
    if !out.status.success() {
        bail!(
            "tocsind init for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("tocsind init --json output")?;
    let key = v["public_key"].as_str().unwrap_or_default().to_string();
    let peer_id = v["peer_id"].as_str().unwrap_or_default().to_string();
    Ok(NodeInfo {
        socket: data_dir.join("tocsind.sock"),
        name,
        key,
        peer_id,
        data_dir,
        port,
        pid: None,
    })
}

/// Writes node `i`'s options and its `[[peers]]` (the links it is an end of) into its
/// `config.toml`.
pub(super) fn write_config(
    nodes: &[NodeInfo],
    i: usize,
    links: &[Link],
    opts: &CreateOptions,
) -> Result<()> {
    let node = &nodes[i];
    let path = node.data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&path)?;
    if opts.test_control {
        text = set_option(&text, "test_control", "true")?;
    }
    for (k, v) in &opts.net {
        text = set_option(&text, k, v)?;
    }
    for l in links {
        let (other, level) = if l.a == i {
            (l.b, l.ab)
        } else if l.b == i {
            (l.a, l.ba)
        } else {
            continue;
        };
        let o = &nodes[other];
        // Only the lower-numbered side dials; the other accepts. Both trust.
        let addrs = if i < other {
            format!("[\"{}\"]", o.addr())
        } else {
            "[]".into()
        };
        text.push_str(&format!(
            "\n[[peers]]\nkey = \"{}\"\nlevel = \"{}\"\nname = \"{}\"\naddrs = {addrs}\n",
            o.key, level, o.name
        ));
    }
    std::fs::write(&path, text)?;
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot pick a free port")?;
    Ok(l.local_addr()?.port())
}

/// Replaces the `name = …` line of the `[net]` section (or any top-level option) in a
/// config written by `tocsind init`.
fn set_option(text: &str, name: &str, value: &str) -> Result<String> {
    let prefix = format!("{name} = ");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with(&prefix) {
                found = true;
                format!("{name} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("config option {name} not found in the generated config");
    }
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_option_replaces_one_line() {
        let t = "a = 1\ntest_control = false\nb = 2\n";
        assert_eq!(
            set_option(t, "test_control", "true").unwrap(),
            "a = 1\ntest_control = true\nb = 2\n"
        );
        assert!(set_option(t, "nope", "1").is_err());
    }
}
