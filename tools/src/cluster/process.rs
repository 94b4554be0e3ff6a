//! The `tocsind` processes: starting, signalling, reaping, and who owns them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Cluster;

fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); check /proc for its state. A zombie leader whose
    // other threads are still exiting keeps the process's files open (the database's
    // lock, so that a new start would fail): it counts as alive until they are gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie
                || std::fs::read_dir(format!("/proc/{pid}/task"))
                    .is_ok_and(|threads| threads.count() > 1)
        }
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

impl Cluster {
    /// Whether node `i`'s process is running.
    pub fn is_up(&mut self, i: usize) -> bool {
        if let Some(child) = self.children.get_mut(&i) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.children.remove(&i);
                return false;
            }
        }
        self.nodes.get(i).and_then(|n| n.pid).is_some_and(pid_alive)
    }

    /// Starts node `i` (no-op if it is running). Its output goes to `tocsind.log`.
    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.is_up(i) {
            return Ok(());
        }
        if !self.node(i)?.peers_written {
            super::config::write_peers(&self.nodes, i, &self.links)?;
            self.nodes[i].peers_written = true;
            self.save()?;
        }
        let node = self.node(i)?.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let mut cmd = Command::new(&self.tocsind);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,libp2p_swarm=warn,libp2p_tcp=warn");
        }
        // Own process group: a Ctrl-C in the shell that ran `up` does not kill the nodes.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.tocsind.display()))?;
        self.nodes[i].pid = Some(child.id());
        self.children.insert(i, child);
        self.save()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let pid = self.node(i)?.pid;
        if let Some(pid) = pid {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            if !self.reap(i, pid, Duration::from_secs(5)) {
                anyhow::bail!(
                    "node {} (pid {pid}) has not exited 5 s after SIGKILL; its database stays locked until it has",
                    i + 1
                );
            }
        }
        self.nodes[i].pid = None;
        self.save()
    }

    /// SIGTERMs node `i` and waits for it to exit (SIGKILL after `timeout`).
    pub fn stop(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let pid = self.node(i)?.pid;
        if let Some(pid) = pid {
            signal(pid, nix::sys::signal::Signal::SIGTERM);
            if !self.reap(i, pid, timeout) {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                if !self.reap(i, pid, Duration::from_secs(5)) {
                    anyhow::bail!(
                        "node {} (pid {pid}) has not exited 5 s after SIGKILL; its database stays locked until it has",
                        i + 1
                    );
                }
            }
        }
        self.nodes[i].pid = None;
        self.save()
    }

    /// Waits for the process to exit; true if it did.
    fn reap(&mut self, i: usize, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let gone = match self.children.get_mut(&i) {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => !pid_alive(pid),
            };
            if gone {
                self.children.remove(&i);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL after `timeout`).
    pub fn stop_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.nodes[i].pid {
                signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        // Every node is stopped, even if one of them would not exit: the first such
        // failure is returned.
        let mut first = Ok(());
        for i in 0..self.nodes.len() {
            if let Err(e) = self.stop(i, timeout) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Leaves the processes this value started running after it is dropped (for
    /// `tocsin-cluster up`, whose nodes outlive the command).
    pub fn detach(&mut self) {
        self.children.clear();
    }
}

impl Drop for Cluster {
    /// Processes this value started itself (tests) are killed with it; nodes started
    /// by an earlier `tocsin-cluster` command are left running.
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
