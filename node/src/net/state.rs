//! The state writer: the network actor's store work, off the actor's event loop.
//!
//! redb calls block (a durable commit waits for fsync), so the actor never makes them
//! itself. It sends jobs to one thread that runs them in the order they were sent, and
//! answers come back into the actor's inbound queue as [`Inbound`] messages. One thread
//! keeps per-peer cursor saves in order and trust commits in the order the actor
//! planned them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tocsin_proto::PublicKey;
use tokio::sync::mpsc;
use tracing::warn;

use super::trust::TrustReply;
use super::Inbound;
use crate::store::{Store, TrustCommit};

/// Log entries read per store call when the actor resyncs its log.
pub const RESYNC_PAGE: usize = 4096;

/// Work for the state writer.
pub enum StateJob {
    /// Commit a trust change with its audit record; the result goes back to the actor.
    Trust {
        commit: Box<TrustCommit>,
        reply: TrustReply,
    },
    /// Save a peer's catch-up cursor.
    Cursor {
        peer: PublicKey,
        epoch: u64,
        seq: u64,
    },
    /// Re-read the log after `after` (where the engine's copy may have a hole, after
    /// missed notifications) and send it back in pages, then say that this generation
    /// of re-read is complete, or failed.
    ResyncLog { gen: u64, after: u64 },
    /// Keep a revocation (forever).
    Revocation(Box<tocsin_proto::identity::RevocationProof>),
    /// Keep a sighting (`true`: of an observer not known here, capped per alert; the
    /// alert's origin when the sighting is this node's own, to be sent again).
    Sighting(
        Box<tocsin_proto::identity::Signed<tocsin_proto::identity::Sighting>>,
        bool,
        Option<PublicKey>,
    ),
    /// Forget a revocation.
    DropRevocation(PublicKey),
    /// Keep the certificate a node presented (which agency certified it).
    Agency(PublicKey, Vec<u8>),
    /// Keep a receipt for one of our alerts, with its receiver's org.
    ReceiptIn(
        Box<tocsin_proto::identity::Signed<tocsin_proto::identity::Receipt>>,
        Option<PublicKey>,
    ),
}

/// The handle the actor keeps; dropping it stops the thread after the queued jobs.
pub struct StateWriter {
    tx: Option<std_mpsc::Sender<StateJob>>,
    thread: Option<JoinHandle<()>>,
    /// Sightings queued and not yet written ([`MAX_QUEUED_SIGHTINGS`]).
    sightings: Arc<AtomicUsize>,
}

/// Sightings that may wait for the state writer; beyond, new ones are not stored (they
/// are advisory counts, and the observer's next one replaces them), so that many peers'
/// sightings cannot grow the queue without end or hold up a trust change behind them.
pub const MAX_QUEUED_SIGHTINGS: usize = 4096;

impl StateWriter {
    /// Starts the thread.
    pub fn start(store: Store, inbound: mpsc::Sender<Inbound>) -> std::io::Result<StateWriter> {
        let (tx, rx) = std_mpsc::channel::<StateJob>();
        let sightings = Arc::new(AtomicUsize::new(0));
        let queued = sightings.clone();
        let thread = std::thread::Builder::new()
            .name("tocsin-state".into())
            .spawn(move || {
                for job in rx {
                    let sighting = matches!(job, StateJob::Sighting(..));
                    run(&store, &inbound, job);
                    if sighting {
                        queued.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            })?;
        Ok(StateWriter {
            tx: Some(tx),
            thread: Some(thread),
            sightings,
        })
    }

    /// Queues a job. Returns it back if the thread is gone.
    pub fn send(&self, job: StateJob) -> Result<(), StateJob> {
        let sighting = matches!(job, StateJob::Sighting(..));
        if sighting {
            self.sightings.fetch_add(1, Ordering::Relaxed);
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if sent.is_err() && sighting {
            self.sightings.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Whether a sighting may be queued now ([`MAX_QUEUED_SIGHTINGS`]).
    pub fn takes_sightings(&self) -> bool {
        self.sightings.load(Ordering::Relaxed) < MAX_QUEUED_SIGHTINGS
    }

    /// Stops accepting jobs and waits (off the async threads) until the queued ones ran.
    pub async fn finish(mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(store: &Store, inbound: &mpsc::Sender<Inbound>, job: StateJob) {
    match job {
        StateJob::Trust { commit, reply } => {
            let result = store
                .commit_trust(&commit)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = inbound.blocking_send(Inbound::TrustCommitted {
                commit,
                result,
                reply,
            });
        }
        StateJob::Cursor { peer, epoch, seq } => {
            if let Err(e) = store.set_cursor(&peer, epoch, seq) {
                warn!(error = %e, peer = %peer.fmt_short(), "cannot save catch-up cursor");
            }
        }
        StateJob::Revocation(proof) => {
            if let Err(e) = store.put_revocation(&proof) {
                warn!(error = %e, node = %proof.revocation().node.fmt_short(), "cannot store a revocation; it is applied until restart, and peers send it again");
            }
        }
        StateJob::Sighting(sighting, unknown, ours_to) => {
            if let Err(e) = store.put_sighting(&sighting, unknown, ours_to.as_ref()) {
                warn!(error = %e, "cannot store a sighting");
            }
        }
        StateJob::DropRevocation(node) => {
            if let Err(e) = store.drop_revocation(&node) {
                warn!(error = %e, node = %node.fmt_short(), "cannot drop a revocation from the store");
            }
        }
        StateJob::Agency(node, cert) => {
            if let Err(e) = store.put_agency(&node, &cert) {
                warn!(error = %e, node = %node.fmt_short(), "cannot store a peer's certificate; its agency is known until restart");
            }
        }
        StateJob::ReceiptIn(receipt, org) => {
            if let Err(e) = store.put_receipt_in(&receipt, org) {
                warn!(error = %e, alert = %receipt.body().alert.fmt_short(), "cannot store a receipt; the receiver sends it again when it reconnects");
            }
        }
        StateJob::ResyncLog { gen, mut after } => {
            loop {
                match store.log_after(after, RESYNC_PAGE) {
                    Ok(page) if page.is_empty() => {
                        // Until this arrives the engine's catch-up pages stop before
                        // the hole.
                        let _ = inbound.blocking_send(Inbound::LogResynced(gen));
                        break;
                    }
                    Ok(page) => {
                        after = page.last().map_or(after, |(s, _)| *s);
                        if inbound.blocking_send(Inbound::LogPage(page)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read the log after a lag; catch-up pages for peers stop before the entries that may be missing until it is read (tried again in 5 s)");
                        let _ = inbound.blocking_send(Inbound::LogResyncFailed(gen));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tocsin_proto::identity::{Sighting, Signed, IDENTITY_VERSION};
    use tocsin_proto::{AlertId, SigningKey};

    use super::*;

    /// While the state writer is held up (here, by an actor that does not read its
    /// answers), sightings queue up to the bound and no further; once it moves on,
    /// it takes them again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sightings_beyond_the_queue_bound_are_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _join) = Store::open(&dir.path().join("state.redb")).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(Inbound::LogResynced(0)).await.unwrap();
        let writer = StateWriter::start(store, tx).unwrap();
        // Its answer waits for room in the full channel: the thread is held up.
        writer
            .send(StateJob::ResyncLog { gen: 1, after: 0 })
            .map_err(|_| "the writer is gone")
            .unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let body = Sighting {
            v: IDENTITY_VERSION,
            alert: Some(AlertId([1; 32])),
            indicator: None,
            observer: crate::keys::public_key(&key),
            count: 1,
            first_seen: 1,
            last_seen: 1,
            note: String::new(),
        };
        let signed = Signed::sign(body, &key).unwrap();
        let mut queued = 0;
        while writer.takes_sightings() {
            assert!(writer
                .send(StateJob::Sighting(Box::new(signed.clone()), false, None))
                .is_ok());
            queued += 1;
            assert!(queued <= MAX_QUEUED_SIGHTINGS, "no bound");
        }
        assert_eq!(queued, MAX_QUEUED_SIGHTINGS);
        // The actor reads again: the queue drains.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !writer.takes_sightings() || writer.sightings.load(Ordering::Relaxed) > 0 {
            let _ = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue never drained"
            );
        }
        writer.finish().await;
    }
}
