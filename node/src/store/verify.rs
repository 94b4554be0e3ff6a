//! Signature verification off the caller's thread, for verified ingest: alerts are
//! verified in chunks on tokio's blocking threads, as many chunks at once as the machine
//! has cores, so that verification runs beside the store writer (which spends part of
//! each batch waiting for its fsync) instead of in front of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use futures::stream::{self, Stream, StreamExt};
use tocsin_proto::{Error, SignedAlert};
use tokio::sync::mpsc;

/// Alerts per verification job of [`verify_all`] and [`super::Store::insert_verified`].
/// One job is ~64 × 40 µs ≈ 2.5 ms of CPU here: long enough that spawning it costs
/// nothing in comparison, short enough that the writer receives the first verified
/// alerts (and commits them while the next jobs run) almost at once. At most
/// [`super::MAX_BATCH`], so that one verified chunk is one writer request.
pub const VERIFY_CHUNK: usize = 64;

/// Verifies every alert's signature exactly as [`SignedAlert::verify`] does (strict
/// ed25519 over `SIGNING_CONTEXT ‖ body bytes`, by the origin key) and returns each
/// alert with its result, in the input order.
///
/// The work runs on tokio's blocking threads, [`VERIFY_CHUNK`] alerts per job and as
/// many jobs at once as [`std::thread::available_parallelism`], so it uses every core
/// and never blocks the async workers; within a job each origin key is decompressed
/// once (about a fifth of the cost of a verification) instead of once per alert.
/// Outside a tokio runtime, or if a job cannot run, the alerts are verified inline on
/// the calling thread, with the same results.
pub async fn verify_all(alerts: Vec<SignedAlert>) -> Vec<(SignedAlert, Result<(), Error>)> {
    let mut out = Vec::with_capacity(alerts.len());
    let mut chunks = std::pin::pin!(verified_chunks(alerts, |a| a, None));
    while let Some((chunk, results)) = chunks.next().await {
        out.extend(chunk.into_iter().zip(results));
    }
    out
}

/// The items in chunks of [`VERIFY_CHUNK`], each with the verification results of its
/// alerts, in order. `alert` picks the alert out of an item.
///
/// Up to [`parallelism`] blocking workers each take the next unverified chunk until none
/// is left, without waiting for the consumer: waking a thread costs a good fraction of a
/// millisecond on a small VM, so a job per chunk handed out by the consumer would idle
/// the cores between chunks. Results are delivered in input order as they complete. A
/// chunk whose worker could not verify it (no runtime, a worker that did not start or
/// panicked) is verified inline when its turn comes, with the same results.
///
/// With `writer`, all workers but one pause while the store writer applies a batch
/// (see [`WriterBusy`]).
pub(super) fn verified_chunks<T, F>(
    items: Vec<T>,
    alert: F,
    writer: Option<Arc<WriterBusy>>,
) -> impl Stream<Item = (Vec<T>, Vec<Result<(), Error>>)>
where
    T: Send + 'static,
    F: Fn(&T) -> &SignedAlert + Copy + Send + Sync + 'static,
{
    let mut chunks = Vec::with_capacity(items.len().div_ceil(VERIFY_CHUNK));
    let mut items = items.into_iter();
    loop {
        let n = std::env::var("VCHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(VERIFY_CHUNK);
        let chunk: Vec<T> = items.by_ref().take(n).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(Mutex::new(Some(chunk)));
    }
    let total = chunks.len();
    let slots = Arc::new(chunks);
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        for n in 0..parallelism().min(total) {
            let (slots, next, tx) = (Arc::clone(&slots), Arc::clone(&next), tx.clone());
            // The first worker never yields to the writer.
            let writer = if n == 0 { None } else { writer.clone() };
            // The handle is not needed: results come back through `tx`.
            drop(runtime.spawn_blocking(move || worker(&slots, &next, &tx, alert, writer)));
        }
    }
    drop(tx);
    let state = Delivery {
        slots,
        rx,
        done: BTreeMap::new(),
        next_out: 0,
        total,
    };
    stream::unfold(state, move |mut st| async move {
        let i = st.next_out;
        if i >= st.total {
            return None;
        }
        let results = loop {
            if let Some(r) = st.done.remove(&i) {
                break Some(r);
            }
            match st.rx.recv().await {
                Some((j, r)) => {
                    st.done.insert(j, r);
                }
                // Every worker has exited: whatever is left is verified here.
                None => break None,
            }
        };
        let chunk = take(&st.slots, i);
        let results = match results {
            Some(r) if r.len() == chunk.len() => r,
            _ => check_all(chunk.iter().map(alert)),
        };
        st.next_out += 1;
        Some(((chunk, results), st))
    })
}

/// The consumer's side of [`verified_chunks`].
struct Delivery<T> {
    slots: Arc<Vec<Mutex<Option<Vec<T>>>>>,
    rx: mpsc::UnboundedReceiver<(usize, Vec<Result<(), Error>>)>,
    /// Results that arrived before their turn.
    done: BTreeMap<usize, Vec<Result<(), Error>>>,
    next_out: usize,
    total: usize,
}

/// One verification worker: verifies chunks in place until none is left or the consumer
/// is gone. A chunk stays in its slot, so a panic here loses nothing (the slot's mutex
/// is poisoned, which [`take`] ignores, and the chunk is verified inline).
fn worker<T, F>(
    slots: &[Mutex<Option<Vec<T>>>],
    next: &AtomicUsize,
    tx: &mpsc::UnboundedSender<(usize, Vec<Result<(), Error>>)>,
    alert: F,
    writer: Option<Arc<WriterBusy>>,
) where
    F: Fn(&T) -> &SignedAlert + Copy,
{
    while !tx.is_closed() {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = slots.get(i) else {
            return;
        };
        let results = {
            let chunk = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let mut keys = HashMap::new();
            chunk
                .iter()
                .flatten()
                .map(|item| {
                    if let Some(w) = &writer {
                        w.wait_until_idle();
                    }
                    check(alert(item), &mut keys)
                })
                .collect()
        };
        if std::env::var_os("WTRACE").is_some() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() % 1_000_000)
                .unwrap_or(0);
            eprintln!("{now} verified chunk {i}");
        }
        if tx.send((i, results)).is_err() {
            return;
        }
    }
}

/// Takes chunk `i` out of its slot (empty if it was already taken).
fn take<T>(slots: &[Mutex<Option<Vec<T>>>], i: usize) -> Vec<T> {
    slots
        .get(i)
        .and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take())
        .unwrap_or_default()
}

/// How many verification workers run at once: one per core.
fn parallelism() -> usize {
    std::env::var("VWIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether the store writer is applying a batch: inserting into the B-trees, CPU-bound
/// work on the one thread that every stored alert goes through. While it is, all
/// verification workers but one wait, so that the writer has a core to itself; while it
/// commits (mostly waiting for fsync) or waits for work, every worker runs. Without
/// this, two verification workers and the writer share two cores and the writer, the
/// serial stage, runs at about half speed.
#[derive(Debug, Default)]
pub(super) struct WriterBusy {
    applying: Mutex<bool>,
    changed: Condvar,
}

/// Longest a worker waits for the writer in one go: a bound in case the writer stalls
/// while applying (it then verifies one alert and waits again).
const MAX_YIELD: Duration = Duration::from_millis(20);

impl WriterBusy {
    /// Marks the writer as applying until the returned guard is dropped.
    pub(super) fn applying(&self) -> Applying<'_> {
        self.set(true);
        Applying(self)
    }

    fn set(&self, applying: bool) {
        *self.applying.lock().unwrap_or_else(PoisonError::into_inner) = applying;
        if !applying {
            self.changed.notify_all();
        }
    }

    /// Returns once the writer is not applying (or after [`MAX_YIELD`]).
    fn wait_until_idle(&self) {
        let applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        if *applying {
            drop(
                self.changed
                    .wait_timeout_while(applying, MAX_YIELD, |a| *a)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// Clears [`WriterBusy`] when dropped (also when the writer unwinds).
pub(super) struct Applying<'a>(&'a WriterBusy);

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// [`SignedAlert::verify`] of each alert, decompressing each origin key once.
fn check_all<'a>(alerts: impl Iterator<Item = &'a SignedAlert>) -> Vec<Result<(), Error>> {
    let mut keys: HashMap<[u8; 32], VerifyingKey> = HashMap::new();
    alerts.map(|a| check(a, &mut keys)).collect()
}

/// The same checks and errors as [`SignedAlert::verify`], with the decoded origin key
/// taken from `keys` when it is there.
fn check(a: &SignedAlert, keys: &mut HashMap<[u8; 32], VerifyingKey>) -> Result<(), Error> {
    let origin = a.origin();
    let vk = match keys.get(&origin.0) {
        Some(vk) => *vk,
        None => {
            let vk = origin.verifying_key()?;
            keys.insert(origin.0, vk);
            vk
        }
    };
    vk.verify_strict(&a.signed_message(), &Signature::from_bytes(a.signature()))
        .map_err(|e| Error::Signature(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_proto::{AlertBody, Kind, PublicKey, Severity, SigningKey, Tlp, FORMAT_VERSION};

    fn alert(n: u8, i: u64) -> Result<SignedAlert, Error> {
        let key = SigningKey::from_bytes(&[n; 32]);
        let body = AlertBody {
            v: FORMAT_VERSION,
            origin: PublicKey(key.verifying_key().to_bytes()),
            issued_at: 1_700_000_000_000 + i,
            expires_at: None,
            kind: Kind::New,
            replaces: None,
            severity: Severity::ALL[0],
            tlp: Tlp::Green,
            recipients: vec![],
            title: format!("alert {i}"),
            text: String::new(),
            indicators: vec![],
            tags: vec![],
            references: vec![],
        };
        SignedAlert::sign(body, &key)
    }

    /// Re-decodes `a` with one byte of its envelope changed (body or signature).
    fn tampered(a: &SignedAlert, from_end: usize) -> Option<SignedAlert> {
        let mut env = a.to_envelope();
        let len = env.len();
        let byte = env.get_mut(len.checked_sub(from_end)?)?;
        *byte ^= 0x01;
        SignedAlert::decode(&env).ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_all_agrees_with_verify_and_keeps_order() -> Result<(), Error> {
        let mut alerts = Vec::new();
        for i in 0..(3 * VERIFY_CHUNK as u64 + 5) {
            let a = alert((i % 3) as u8 + 1, i)?;
            // Every seventh has a bad signature (its last byte flipped).
            match i % 7 {
                0 => alerts.extend(tampered(&a, 1)),
                _ => alerts.push(a),
            }
        }
        let bad = alerts.iter().filter(|a| a.verify().is_err()).count();
        assert!(bad > 0, "the fixture must contain bad signatures");
        let expected: Vec<_> = alerts
            .iter()
            .map(|a| (a.id(), a.verify().map_err(|e| e.to_string())))
            .collect();
        let got: Vec<_> = verify_all(alerts)
            .await
            .into_iter()
            .map(|(a, r)| (a.id(), r.map_err(|e| e.to_string())))
            .collect();
        assert_eq!(got, expected);
        Ok(())
    }

    #[test]
    fn check_matches_verify_outside_a_runtime_too() -> Result<(), Error> {
        let a = alert(1, 1)?;
        let b = alert(2, 2)?;
        let bad = tampered(&a, 1).ok_or_else(|| Error::Decode("tamper".into()))?;
        let results = check_all([&a, &bad, &b, &a].into_iter());
        let expected: Vec<_> = [&a, &bad, &b, &a]
            .iter()
            .map(|x| x.verify().map_err(|e| e.to_string()))
            .collect();
        let got: Vec<_> = results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert!(got.get(1).is_some_and(Result::is_err));
        Ok(())
    }
}
