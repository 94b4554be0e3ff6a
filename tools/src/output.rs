//! Writing the CLI's data to stdout: flushing per line, JSON Lines, and noticing a
//! closed pipe ([`BrokenPipe`]).

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

/// Stdout went away (`tocsin watch | head -1`): not an error, the command stops quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct BrokenPipe;

/// Writes data to stdout, turning a closed pipe into [`BrokenPipe`].
pub struct Output<W: Write> {
    out: W,
    detect_closed_stdout: bool,
    /// Set to `true` by the stdout watcher thread, once started.
    closed: Option<tokio::sync::watch::Receiver<bool>>,
}

impl<W: Write> Output<W> {
    /// Output to `out`.
    pub fn new(out: W) -> Self {
        Output {
            out,
            detect_closed_stdout: false,
            closed: None,
        }
    }

    /// Also notice, while idle, that the process's stdout lost its reader (see
    /// [`Output::closed`]). For `out` = stdout.
    pub fn detect_closed_stdout(mut self) -> Self {
        self.detect_closed_stdout = true;
        self
    }

    /// Resolves when stdout (fd 1) is a pipe or socket whose reader has gone, so that
    /// `tocsin watch | head -1` ends as soon as `head` does, not at the next alert.
    /// Never resolves when not enabled, or for a terminal or a regular file.
    pub async fn closed(&mut self) {
        if self.detect_closed_stdout && self.closed.is_none() {
            self.closed = Some(watch_stdout());
        }
        if let Some(rx) = &mut self.closed {
            if rx.wait_for(|closed| *closed).await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }

    /// Writes `text` and flushes (so that a stream's lines appear as they arrive).
    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let result = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
            other => other.context("cannot write to stdout"),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.write(&format!("{text}\n"))
    }

    /// Writes one compact JSON value on its own line (JSON Lines).
    pub fn json_line(&mut self, v: &Value) -> anyhow::Result<()> {
        self.line(&v.to_string())
    }
}

/// Starts a thread that waits (in `poll(2)`, with no events requested) for stdout to
/// report an error or hang-up, which a pipe does once its reader is closed. The thread
/// is detached: it ends with the process.
fn watch_stdout() -> tokio::sync::watch::Receiver<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            loop {
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                    Ok(_) => {
                        let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
                        if fds[0].revents().is_some_and(|r| r.intersects(gone)) {
                            let _ = tx.send(true);
                        }
                        return;
                    }
                }
            }
        });
    // Without the thread, a closed stdout is noticed at the next write instead.
    drop(spawned);
    rx
}
