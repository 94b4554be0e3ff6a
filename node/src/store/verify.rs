//! Signature verification for verified ingest: alerts are verified in chunks by one
//! blocking worker per core, beside the store writer, instead of one at a time in front
//! of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ed25519_dalek::{Signature, VerifyingKey};
use futures::stream::{self, Stream, StreamExt};
use tocsin_proto::{Error, SignedAlert};
use tokio::sync::mpsc;

/// Alerts per verification chunk of [`verify_all`] and [`super::Store::insert_verified`]:
/// about 3 ms of CPU here (≈ 45 µs per signature), so the first verified alerts reach
/// the writer almost at once and handing chunks around costs nothing in comparison.
pub const VERIFY_CHUNK: usize = 64;

/// Verifies every alert's signature exactly as [`SignedAlert::verify`] does (strict
/// ed25519 over `SIGNING_CONTEXT ‖ body bytes` by the origin key, never batch
/// verification) and returns each alert with its result, in input order.
///
/// The work runs on tokio's blocking threads, one worker per core
/// ([`std::thread::available_parallelism`]), each taking the next [`VERIFY_CHUNK`]
/// alerts until none are left, so it uses every core and never blocks the async
/// workers. Within a chunk each origin key is decompressed once instead of once per
/// alert (about a tenth of a verification). Outside a tokio runtime, or if a worker
/// cannot run, the alerts are verified on the calling thread, with the same results.
///
/// Concurrent calls each start their own workers; the daemon should funnel alerts to
/// be verified through one caller rather than call this per connection.
pub async fn verify_all(alerts: Vec<SignedAlert>) -> Vec<(SignedAlert, Result<(), Error>)> {
    let mut out = Vec::with_capacity(alerts.len());
    let mut chunks = std::pin::pin!(verified_chunks(alerts, |a| a));
    while let Some((chunk, results)) = chunks.next().await {
        out.extend(chunk.into_iter().zip(results));
    }
    out
}

/// The items in chunks of [`VERIFY_CHUNK`], each with the verification results of its
/// alerts, in input order. `alert` picks the alert out of an item.
///
/// One blocking worker per core takes the next unverified chunk until none is left,
/// without waiting for the consumer: waking a thread costs a good fraction of a
/// millisecond on a small VM, so a job per chunk handed out by the consumer would leave
/// the cores idle between chunks. A chunk that no worker verified (no runtime, a worker
/// that did not start or panicked) is verified inline when its turn comes.
pub(super) fn verified_chunks<T, F>(
    items: Vec<T>,
    alert: F,
) -> impl Stream<Item = (Vec<T>, Vec<Result<(), Error>>)>
where
    T: Send + 'static,
    F: Fn(&T) -> &SignedAlert + Copy + Send + Sync + 'static,
{
    let mut chunks = Vec::with_capacity(items.len().div_ceil(VERIFY_CHUNK));
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(VERIFY_CHUNK).collect();
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
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..workers.min(total) {
            let (slots, next, tx) = (Arc::clone(&slots), Arc::clone(&next), tx.clone());
            // The handle is not needed: results come back through `tx`.
            drop(runtime.spawn_blocking(move || worker(&slots, &next, &tx, alert)));
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
                // Every worker has exited: what is left is verified here.
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
/// is gone. A chunk stays in its slot while it is verified, so a panic here loses
/// nothing (the slot's mutex is poisoned, which [`take`] ignores, and the consumer
/// verifies the chunk itself).
fn worker<T, F>(
    slots: &[Mutex<Option<Vec<T>>>],
    next: &AtomicUsize,
    tx: &mpsc::UnboundedSender<(usize, Vec<Result<(), Error>>)>,
    alert: F,
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
            check_all(chunk.iter().flatten().map(alert))
        };
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
        let bad = alerts
            .iter()
            .filter(|a| a.check_signature().is_err())
            .count();
        assert!(bad > 0, "the fixture must contain bad signatures");
        let expected: Vec<_> = alerts
            .iter()
            .map(|a| (a.id(), a.check_signature().map_err(|e| e.to_string())))
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
    fn verify_all_works_outside_a_runtime() -> Result<(), Error> {
        let a = alert(1, 1)?;
        let bad = tampered(&a, 1).ok_or_else(|| Error::Decode("tamper".into()))?;
        let got = futures::executor::block_on(verify_all(vec![a.clone(), bad]));
        assert_eq!(got.len(), 2);
        assert!(got[0].1.is_ok() && got[0].0.id() == a.id());
        assert!(got[1].1.is_err());
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
            .map(|x| x.check_signature().map_err(|e| e.to_string()))
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
