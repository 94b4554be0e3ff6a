//! TCP payload bytes over the nodes' loopback connections, from `ss -ti`.

use std::collections::HashSet;
use std::process::Stdio;

use super::plan::Plan;
use super::QUERY_TIMEOUT;

/// Prints the TCP-level bytes next to the libp2p ones (stderr).
pub(super) fn report_tcp(
    system: &str,
    plan: &Plan,
    before: Option<u64>,
    after: Option<u64>,
    libp2p: f64,
) {
    if let (Some(b), Some(a)) = (before, after) {
        let tcp = a.saturating_sub(b) as f64;
        eprintln!(
            "bench: {system}: TCP payload bytes (Noise + Yamux included) {tcp} = {:.0}/alert/node, {:.2}x the libp2p count",
            tcp / (plan.alerts() * plan.nodes) as f64,
            if libp2p > 0.0 { tcp / libp2p } else { f64::NAN }
        );
    }
}

/// Bytes acknowledged on every established loopback TCP connection to or from one of
/// `ports` (both ends counted, so the sum is the traffic in both directions), from
/// `ss -tinH`; None if `ss` is not available.
pub(super) async fn tcp_bytes(ports: &HashSet<u16>) -> Option<u64> {
    let out = tokio::time::timeout(
        QUERY_TIMEOUT,
        tokio::process::Command::new("ss")
            .args(["-tinH", "state", "established"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(sum_ss(&String::from_utf8_lossy(&out.stdout), ports))
}

/// Parses `ss -tinH state established`: socket lines (`recv-q send-q local peer`)
/// each followed by an indented info line with `bytes_acked:N`.
fn sum_ss(text: &str, ports: &HashSet<u16>) -> u64 {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
    };
    let mut total = 0;
    let mut ours = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let addrs: Vec<&str> = line
                .split_whitespace()
                .filter(|w| w.contains(':'))
                .collect();
            ours = addrs.len() >= 2
                && addrs[addrs.len() - 2..]
                    .iter()
                    .all(|a| a.starts_with("127.0.0.1:"))
                && addrs[addrs.len() - 2..]
                    .iter()
                    .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)));
        } else if ours {
            for w in line.split_whitespace() {
                if let Some(n) = w.strip_prefix("bytes_acked:") {
                    total += n.parse::<u64>().unwrap_or_default();
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_output_is_summed_for_our_ports() {
        let text = "0 0 127.0.0.1:7400 127.0.0.1:50000\n\
             \t cubic bytes_sent:120 bytes_acked:100 bytes_received:50\n\
             0 0 127.0.0.1:50000 127.0.0.1:7400\n\
             \t cubic bytes_acked:40 bytes_received:100\n\
             0 0 127.0.0.1:22 127.0.0.1:50001\n\
             \t cubic bytes_acked:999\n";
        let ports: HashSet<u16> = [7400].into();
        assert_eq!(sum_ss(text, &ports), 140);
    }
}
