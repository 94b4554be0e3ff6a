//! Creating each node's data directory (`tocsind init`) and writing its `config.toml`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{CreateOptions, Link, NodeInfo};

/// Runs `tocsind init` for node `i` (0-based) in `dir`. The node listens on loopback
/// port 0: the kernel picks its port when it first starts, and [`set_listen_port`]
/// then pins it for restarts. A port picked here and handed over later could be taken
/// by another process in between.
pub(super) fn init_node(tocsind: &Path, dir: &Path, i: usize) -> Result<NodeInfo> {
    let name = format!("n{}", i + 1);
    let data_dir = dir.join(&name);
    let out = Command::new(tocsind)
        .arg("init")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg("/ip4/127.0.0.1/tcp/0")
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
        port: 0,
        pid: None,
        peers_written: false,
    })
}

/// Writes the cluster's options into node `i`'s `config.toml`.
pub(super) fn write_options(node: &NodeInfo, opts: &CreateOptions) -> Result<()> {
    let path = node.data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&path)?;
    if opts.test_control {
        text = set_option(&text, "test_control", "true")?;
    }
    for (k, v) in &opts.net {
        text = set_option(&text, k, v)?;
    }
    std::fs::write(&path, text)?;
    Ok(())
}

/// Appends node `i`'s `[[peers]]` (the links it is an end of) to its `config.toml`.
/// Of each link, the higher-numbered node dials: nodes first start in order, so the
/// port of every node it dials is known by then.
pub(super) fn write_peers(nodes: &[NodeInfo], i: usize, links: &[Link]) -> Result<()> {
    let path = nodes[i].data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&path)?;
    for l in links {
        let (other, level) = if l.a == i {
            (l.b, l.ab)
        } else if l.b == i {
            (l.a, l.ba)
        } else {
            continue;
        };
        let o = &nodes[other];
        let addrs = if other < i {
            if o.port == 0 {
                bail!(
                    "node {} dials node {}, which has never started; start the cluster with `tocsin-cluster up`",
                    i + 1,
                    other + 1
                );
            }
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

/// Pins the port node picked at its first start, so that it listens there again after
/// a restart and its peers find it.
pub(super) fn set_listen_port(node: &NodeInfo) -> Result<()> {
    let path = node.data_dir.join("config.toml");
    let text = std::fs::read_to_string(&path)?;
    let text = set_option(&text, "listen", &format!("[\"{}\"]", node.addr()))?;
    std::fs::write(&path, text)?;
    Ok(())
}

/// The TCP port of the first `/ip4/…/tcp/PORT` address in a node's `listen` list.
pub(super) fn tcp_port(listen: &[String]) -> Option<u16> {
    listen.iter().find_map(|a| {
        let rest = a.strip_prefix("/ip4/")?;
        let (_, port) = rest.split_once("/tcp/")?;
        port.split('/').next()?.parse().ok().filter(|p| *p != 0)
    })
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

    #[test]
    fn tcp_port_reads_the_bound_port() {
        let listen = vec![
            "/ip4/127.0.0.1/udp/9/quic-v1".to_string(),
            "/ip4/127.0.0.1/tcp/41234".to_string(),
        ];
        assert_eq!(tcp_port(&listen), Some(41234));
        assert_eq!(tcp_port(&["/ip4/127.0.0.1/tcp/0".to_string()]), None);
        assert_eq!(tcp_port(&[]), None);
    }
}
