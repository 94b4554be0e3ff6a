//! Signature checks off the actor's thread.
//!
//! A strict ed25519 check is most of the CPU an alert costs the network actor (about
//! 45 µs of its 80 on this project's test machine). The engine hands each alert that
//! passed its other checks out with [`Action::Verify`](crate::engine::Action::Verify);
//! one thread per core checks them, a few at a time, and the results come back into
//! the actor's inbound queue ([`Inbound::Verified`]), where the engine checks the rest
//! again and accepts them. So the actor goes on with other peers' frames meanwhile, and
//! a catch-up uses both cores.
//!
//! The engine bounds what is out at once (`engine::MAX_VERIFYING`); past it, it checks
//! signatures itself. Nothing is stored or relayed before its check.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use tocsin_proto::{PublicKey, VerifyingKeys};
use tokio::sync::mpsc;
use tracing::warn;

use super::Inbound;
use crate::engine::{Checked, ToVerify};

/// Checking threads at most (one per core up to this).
const MAX_THREADS: usize = 4;
/// Alerts a thread takes at once; their results come back together.
const CHUNK: usize = 16;

/// The checks waiting, per peer, taken in turn (round robin), so that one peer's
/// backlog never sits in front of another peer's alerts.
#[derive(Default)]
struct Queue {
    waiting: HashMap<PublicKey, VecDeque<ToVerify>>,
    /// Peers with checks waiting, in the order they are served.
    turn: VecDeque<PublicKey>,
    /// The actor is gone: the threads stop.
    closed: bool,
}

impl Queue {
    fn push(&mut self, job: ToVerify) {
        let peer = job.peer;
        let q = self.waiting.entry(peer).or_default();
        if q.is_empty() {
            self.turn.push_back(peer);
        }
        q.push_back(job);
    }

    /// Up to `max` checks, one per peer in turn.
    fn take(&mut self, max: usize) -> Vec<ToVerify> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(peer) = self.turn.pop_front() else {
                break;
            };
            let Some(q) = self.waiting.get_mut(&peer) else {
                continue;
            };
            if let Some(job) = q.pop_front() {
                out.push(job);
            }
            if q.is_empty() {
                self.waiting.remove(&peer);
            } else {
                self.turn.push_back(peer);
            }
        }
        out
    }
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// The actor's handle on the checking threads. They stop when it is dropped, or when
/// the actor's inbound queue is closed.
pub struct Verifier {
    shared: Shared,
}

impl Verifier {
    /// Starts one thread per core (at most [`MAX_THREADS`]). None if no thread could be
    /// started: the engine then checks signatures itself.
    pub fn start(inbound: &mpsc::Sender<Inbound>) -> Option<Verifier> {
        let shared: Shared = Arc::default();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let mut started = 0;
        for i in 0..threads {
            let (shared, inbound) = (shared.clone(), inbound.clone());
            match std::thread::Builder::new()
                .name(format!("tocsin-verify-{i}"))
                .spawn(move || work(&shared, &inbound))
            {
                Ok(_) => started += 1,
                Err(e) => warn!(error = %e, "cannot start a signature checking thread"),
            }
        }
        (started > 0).then_some(Verifier { shared })
    }

    /// Queues a check. Returns it back if the queue cannot be used (a thread panicked
    /// holding it).
    pub fn send(&self, job: Box<ToVerify>) -> Result<(), Box<ToVerify>> {
        let (lock, ready) = &*self.shared;
        match lock.lock() {
            Ok(mut q) => {
                q.push(*job);
                ready.notify_one();
                Ok(())
            }
            Err(_) => Err(job),
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let (lock, ready) = &*self.shared;
        if let Ok(mut q) = lock.lock() {
            q.closed = true;
        }
        ready.notify_all();
    }
}

/// One checking thread: takes up to [`CHUNK`] waiting checks (peers in turn), checks
/// them, sends the results back; ends when the actor is gone.
fn work(shared: &Shared, inbound: &mpsc::Sender<Inbound>) {
    let (lock, ready) = &**shared;
    let mut keys = VerifyingKeys::default();
    loop {
        let jobs = {
            let Ok(mut q) = lock.lock() else {
                return;
            };
            loop {
                if q.closed {
                    return;
                }
                let jobs = q.take(CHUNK);
                if !jobs.is_empty() {
                    break jobs;
                }
                q = match ready.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        let checked: Vec<Checked> = jobs
            .into_iter()
            .map(|j| guarded(j, &mut keys, ToVerify::check))
            .collect();
        if inbound.blocking_send(Inbound::Verified(checked)).is_err() {
            return;
        }
    }
}

/// Runs `check` on `job`; if it panics, the alert comes back refused (as a bad
/// signature: an honest alert does not make the check panic) and the key cache is
/// started afresh. Without this, a panic would end the thread and the checks it held
/// would never come back: the engine would count them as out for ever, and catch-up
/// pages that listed them would wait for them.
fn guarded(
    mut job: ToVerify,
    keys: &mut VerifyingKeys,
    check: impl FnOnce(ToVerify, &mut VerifyingKeys) -> Checked,
) -> Checked {
    let (peer, hops, solicited, id) = (job.peer, job.hops, job.solicited, job.alert.id());
    // Kept out of the closure (the check does not need it), so that a refusal carries
    // it back too: the engine counts the bytes out by the envelope that comes back.
    let envelope = std::mem::take(&mut job.envelope);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(job, keys))) {
        Ok(mut checked) => {
            checked.envelope = envelope;
            checked
        }
        Err(_) => {
            warn!(alert = %id.fmt_short(), peer = %peer.fmt_short(), "a signature check panicked; the alert is refused");
            *keys = VerifyingKeys::default();
            Checked {
                peer,
                hops,
                solicited,
                alert: Err(id),
                envelope,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{alert, key, pk};
    use tocsin_proto::Tlp;

    fn job(peer: u8, n: u64) -> Box<ToVerify> {
        let a = alert(&key(peer), n, Tlp::Clear);
        Box::new(ToVerify {
            peer: pk(&key(peer)),
            hops: 1,
            solicited: false,
            envelope: a.to_envelope(),
            alert: Box::new(a),
        })
    }

    #[test]
    fn a_peer_s_backlog_does_not_sit_in_front_of_another_peer_s_alert() {
        let mut q = Queue::default();
        for n in 0..100 {
            q.push(*job(1, n));
        }
        q.push(*job(2, 0));
        let first = q.take(2);
        let peers: Vec<PublicKey> = first.iter().map(|j| j.peer).collect();
        assert_eq!(peers, vec![pk(&key(1)), pk(&key(2))]);
        assert_eq!(q.take(1000).len(), 99);
        assert!(q.take(1).is_empty() && q.waiting.is_empty() && q.turn.is_empty());
    }

    #[tokio::test]
    async fn every_check_comes_back_with_its_verdict() {
        let (tx, mut rx) = mpsc::channel(16);
        let verifier = Verifier::start(&tx).unwrap();
        let mut forged = job(3, 7);
        if let Some(last) = forged.envelope.last_mut() {
            *last ^= 1;
        }
        forged.alert = Box::new(tocsin_proto::SignedAlert::decode(&forged.envelope).unwrap());
        let bad = forged.alert.id();
        verifier.send(forged).unwrap();
        for n in 0..40 {
            verifier.send(job(1 + (n % 2) as u8, n)).unwrap();
        }
        let (mut good, mut refused) = (0, Vec::new());
        while good + refused.len() < 41 {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let Inbound::Verified(checked) = msg else {
                panic!("not a check");
            };
            for c in checked {
                match c.alert {
                    Ok(_) => good += 1,
                    Err(id) => refused.push(id),
                }
            }
        }
        assert_eq!((good, refused), (40, vec![bad]));
        drop(verifier);
    }

    #[test]
    fn a_check_that_panics_comes_back_refused() {
        let mut keys = VerifyingKeys::default();
        let j = job(4, 1);
        let id = j.alert.id();
        let len = j.envelope.len();
        let checked = guarded(*j, &mut keys, |_, _| panic!("injected"));
        assert_eq!(checked.alert.err(), Some(id));
        // The engine subtracts this from the bytes it counts out for checks.
        assert_eq!(checked.envelope.len(), len);
        assert_eq!((checked.peer, checked.hops), (pk(&key(4)), 1));
        // The thread goes on checking.
        let j = job(4, 2);
        let envelope = j.envelope.clone();
        let ok = guarded(*j, &mut keys, ToVerify::check);
        assert!(ok.alert.is_ok());
        assert_eq!(ok.envelope, envelope);
    }
}
