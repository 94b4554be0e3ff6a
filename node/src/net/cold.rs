//! The engine's view of the stored alerts ([`ColdAlerts`]): read from the store when
//! asked for, so that the daemon holds in memory only the alerts gossiped lately.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tocsin_proto::{AlertId, PublicKey};
use tracing::warn;

use crate::engine::{ColdAlerts, KnownAlert};
use crate::store::{Store, StoreError};

/// The store, as the engine's [`ColdAlerts`]. A read that fails (a damaged record, a
/// store that cannot be read) answers as if the alert were not held, whether it is
/// cancelled with `None` (taken as yes: nothing is sent on that may be cancelled), the
/// log with `None`, and the head with the last head read. It is logged as a warning
/// (each kind of read at most once a minute); the store reports its own state (status,
/// readiness, metrics) and the start-up check quarantines damaged records. A read that
/// fails inside redb ([`StoreError::Damaged`]: the file's structure is damaged) is
/// also handed to the network actor, which stops the daemon with exit 1 as at open.
pub struct StoredAlerts {
    store: Store,
    /// This node's key: an alert issued here under a former key is held as if received
    /// from its origin ([`KnownAlert::held_by`]).
    me: PublicKey,
    /// When a failed read of each kind was last logged.
    warned: RefCell<HashMap<&'static str, Instant>>,
    /// The highest head read.
    head: Cell<u64>,
    /// Reads that failed, counted up.
    failed: Cell<u64>,
    /// The first [`StoreError::Damaged`] met, for the network actor.
    damaged: Arc<Mutex<Option<StoreError>>>,
}

/// Failed reads of one kind are logged at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl StoredAlerts {
    /// The engine of node `me` reading `store`.
    pub fn new(store: Store, me: PublicKey) -> Self {
        StoredAlerts {
            store,
            me,
            warned: RefCell::new(HashMap::new()),
            head: Cell::new(0),
            failed: Cell::new(0),
            damaged: Arc::new(Mutex::new(None)),
        }
    }

    /// Where a read that failed inside redb is left, for the network actor to take.
    pub fn damaged(&self) -> Arc<Mutex<Option<StoreError>>> {
        Arc::clone(&self.damaged)
    }

    /// The value of a read, or `failed` when it failed.
    fn or<T>(&self, what: &'static str, read: Result<T, StoreError>, failed: T) -> T {
        read.unwrap_or_else(|e| {
            // A record that does not decode is damaged for good, not a failed read: it
            // is not held (the check at the next start quarantines it), and a catch-up
            // page goes on past it instead of stopping there until then.
            if !matches!(e, StoreError::Corrupt { .. }) {
                self.failed.set(self.failed.get().saturating_add(1));
            }
            let mut warned = self.warned.borrow_mut();
            if warned.get(what).is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                warned.insert(what, Instant::now());
                warn!(error = %e, "reading {what} from the store failed (logged once a minute)");
            }
            if matches!(e, StoreError::Damaged { .. }) {
                if let Ok(mut d) = self.damaged.lock() {
                    d.get_or_insert(e);
                }
            }
            failed
        })
    }
}

impl ColdAlerts for StoredAlerts {
    fn contains(&self, id: &AlertId) -> bool {
        self.or("an alert", self.store.contains(id), false)
    }

    fn get(&self, id: &AlertId) -> Option<KnownAlert> {
        let (alert, receipt) = self.or("an alert", self.store.meta(id), None)?;
        let stored = KnownAlert {
            alert,
            hops: receipt.hops,
            from: receipt.from,
        };
        Some(stored.held_by(&self.me).0)
    }

    fn is_cancelled(&self, id: &AlertId, origin: &PublicKey) -> Option<bool> {
        self.or(
            "cancels",
            self.store.cancelled_by(id, origin).map(Some),
            None,
        )
    }

    fn log_after(&self, after: u64, limit: usize) -> Option<Vec<(u64, Option<AlertId>)>> {
        self.or("the log", self.store.log_rows(after, limit).map(Some), None)
    }

    fn head(&self) -> u64 {
        let head = self
            .or("the log head", self.store.head(), 0)
            .max(self.head.get());
        self.head.set(head);
        head
    }

    fn len(&self) -> usize {
        let n = self.or("the alert count", self.store.alert_count(), 0);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    fn failed_reads(&self) -> u64 {
        self.failed.get()
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;
    use tocsin_proto::{AlertBody, Frame, Kind, SignedAlert, SigningKey, Tlp};

    use super::*;
    use crate::engine::tests::{body, key, pk, ISSUED};
    use crate::engine::{Action, Engine, EngineConfig, Event, Timer, OFFER_PAGE, SYNC_PAGE_READS};
    use crate::store::Receipt;
    use tocsin_proto::policy::TrustLevel;
    use tocsin_proto::VerifiedAlert;

    /// The engines' clock: a little after the alerts were issued.
    const NOW: u64 = ISSUED + 1_000_000;

    fn signed(
        origin: &SigningKey,
        n: u64,
        tlp: Tlp,
        edit: impl FnOnce(&mut AlertBody),
    ) -> SignedAlert {
        let mut b = body(origin, n, tlp, vec![]);
        edit(&mut b);
        SignedAlert::sign(b, origin).unwrap()
    }

    fn cancel_of(origin: &SigningKey, n: u64, target: AlertId) -> SignedAlert {
        signed(origin, n, Tlp::Clear, |b| {
            b.kind = Kind::Cancel;
            b.replaces = Some(target);
        })
    }

    fn frame(from: &SigningKey, f: Frame) -> Event {
        Event::Frame {
            peer: pk(from),
            bytes: f.encode().unwrap(),
        }
    }

    /// The actions as comparable strings, in a fixed order.
    fn sorted(actions: Vec<Action>) -> Vec<String> {
        let mut out: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
        out.sort();
        out
    }

    /// An engine that reads its stored alerts from the store does exactly what one that
    /// loaded them all at start-up does, event for event: catch-up pages (TLP, origin,
    /// sender, cancels and expiry filtered), `want_page` and `want` answers, duplicates
    /// (a shorter copy lowers the hop count it holds), announces, a promotion that
    /// offers the older alerts, a cancel of a stored alert, and an alert whose cancel
    /// was stored before it arrived.
    #[tokio::test]
    async fn an_engine_reading_the_store_acts_as_one_that_loaded_it() {
        let dir = TempDir::new().unwrap();
        let (store, _writer) = Store::open(&dir.path().join("t.redb")).unwrap();
        let (me, b, c, d, o, mallory, former) =
            (key(1), key(2), key(3), key(4), key(9), key(66), key(77));
        let expiring = |b: &mut AlertBody| b.expires_at = Some(NOW - 1);
        let mine = [
            signed(&me, 1, Tlp::Clear, |_| {}),
            signed(&me, 2, Tlp::Amber, |_| {}),
            signed(&me, 3, Tlp::Red, |x| x.recipients = vec![pk(&c)]),
            signed(&me, 4, Tlp::Green, expiring),
        ];
        let via_b = [
            signed(&o, 1, Tlp::Clear, |_| {}),
            signed(&o, 2, Tlp::Green, |_| {}),
            signed(&o, 3, Tlp::Clear, |_| {}),
            signed(&o, 4, Tlp::Clear, |_| {}),
        ];
        let cancelled = via_b[2].id();
        let later_cancelled = via_b[3].id();
        let stranger = signed(&o, 5, Tlp::Clear, |_| {});
        // Filler first in the log: what a promotion offers is on its second page.
        let filler: Vec<SignedAlert> = (100..100 + OFFER_PAGE as u64)
            .map(|n| signed(&o, n, Tlp::Clear, |_| {}))
            .collect();
        let mut items: Vec<(SignedAlert, Receipt)> = filler
            .iter()
            .map(|a| {
                let receipt = Receipt {
                    received_at: NOW,
                    from: Some(pk(&d)),
                    hops: 2,
                };
                (a.clone(), receipt)
            })
            .collect();
        for a in &mine {
            items.push((
                a.clone(),
                Receipt {
                    received_at: NOW,
                    from: None,
                    hops: 0,
                },
            ));
        }
        for a in via_b.iter().chain([
            &cancel_of(&o, 10, cancelled),
            // A foreign cancel cancels nothing; an early one cancels its target when it
            // arrives.
            &cancel_of(&mallory, 11, via_b[0].id()),
            &cancel_of(&o, 12, stranger.id()),
        ]) {
            items.push((
                a.clone(),
                Receipt {
                    received_at: NOW,
                    from: Some(pk(&b)),
                    hops: 3,
                },
            ));
        }
        let re_keyed = signed(&former, 1, Tlp::Clear, |_| {});
        items.push((
            re_keyed.clone(),
            Receipt {
                received_at: NOW,
                from: None,
                hops: 0,
            },
        ));
        let verified = items
            .into_iter()
            .map(|(a, r)| (a.verify().unwrap(), r))
            .collect();
        store.insert_many(verified).await.unwrap();

        // One engine loads every alert, as start-up did; the other reads the store.
        let epoch = store.epoch();
        let mut loaded = Engine::new(pk(&me), epoch, EngineConfig::default());
        for m in store.all_meta().unwrap() {
            loaded.load_alert(
                m.seq,
                KnownAlert {
                    alert: m.alert,
                    hops: m.receipt.hops,
                    from: m.receipt.from,
                },
            );
        }
        let mut cold = Engine::new(pk(&me), epoch, EngineConfig::default());
        cold.set_cold(Box::new(StoredAlerts::new(store.clone(), pk(&me))));
        // Two alerts in memory at most: nearly every one is read from the store, and
        // those read or changed are soon dropped again.
        cold.set_hot_cap(2);
        assert_eq!(cold.known_count(), loaded.known_count());
        assert_eq!(cold.known_count(), 12 + OFFER_PAGE);

        // Catch-up pages are asked for past the filler: a page read from the store is
        // shorter than one read from memory (`SYNC_PAGE_READS`).
        let head = filler.len() as u64;
        let filler: std::collections::HashSet<AlertId> =
            filler.iter().map(SignedAlert::id).collect();
        let all: Vec<AlertId> = store
            .log_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| !filler.contains(id))
            .collect();
        let make_events = || {
            let mut events = Vec::new();
            for (p, level) in [
                (&b, TrustLevel::Member),
                (&c, TrustLevel::Partner),
                (&d, TrustLevel::Public),
            ] {
                events.push(Event::Trust {
                    key: pk(p),
                    level: Some(level),
                });
                events.push(Event::PeerConnected(pk(p)));
                events.push(frame(p, Frame::SyncRequest { epoch, after: head }));
                events.push(frame(
                    p,
                    Frame::Want {
                        ids: all.clone(),
                        graft: false,
                    },
                ));
            }
            events.push(frame(
                &d,
                Frame::SyncRequest {
                    epoch,
                    after: head + 3,
                },
            ));
            events.push(frame(
                &c,
                Frame::WantPage {
                    epoch,
                    after: head,
                    next: head + 100,
                    except: vec![all[0]],
                },
            ));
            // Duplicates: a shorter copy lowers the hop count held, an equal one does not.
            events.push(frame(
                &c,
                Frame::Alert {
                    hops: 2,
                    envelope: via_b[0].to_envelope(),
                },
            ));
            events.push(frame(
                &c,
                Frame::Alert {
                    hops: 3,
                    envelope: via_b[1].to_envelope(),
                },
            ));
            events.push(frame(
                &d,
                Frame::Want {
                    ids: vec![via_b[0].id(), via_b[1].id()],
                    graft: false,
                },
            ));
            events.push(frame(
                &c,
                Frame::Announce {
                    ids: all.clone(),
                    hops: vec![1; all.len()],
                },
            ));
            // b is promoted: it is offered the older AMBER alert.
            events.push(Event::Trust {
                key: pk(&b),
                level: Some(TrustLevel::Partner),
            });
            // o cancels a stored alert: no one is sent it any more.
            events.push(frame(
                &c,
                Frame::Alert {
                    hops: 2,
                    envelope: cancel_of(&o, 13, later_cancelled).to_envelope(),
                },
            ));
            events.push(frame(
                &b,
                Frame::Want {
                    ids: vec![later_cancelled],
                    graft: false,
                },
            ));
            // The alert whose cancel was stored first arrives: stored, not sent on.
            events.push(frame(
                &c,
                Frame::Alert {
                    hops: 2,
                    envelope: stranger.to_envelope(),
                },
            ));
            events.push(frame(
                &b,
                Frame::Want {
                    ids: vec![stranger.id()],
                    graft: false,
                },
            ));
            events.push(frame(&d, Frame::SyncRequest { epoch, after: head }));
            events
        };

        let mut sent_on = Vec::new();
        let mut events: std::collections::VecDeque<(Event, Event)> =
            make_events().into_iter().zip(make_events()).collect();
        let mut i = 0;
        // Whether our AMBER alert was offered to b (promoted) by a later page.
        let mut amber_offered_from = None;
        while let Some((event, copy)) = events.pop_front() {
            i += 1;
            let now = NOW + 10 * i as u64;
            let later_page = matches!(event, Event::Timer(Timer::Offer(..)));
            let want = loaded.handle(copy, now);
            let got = cold.handle(event, now);
            // A promotion's next page of offers comes next.
            for a in &got {
                if let Action::SendStored { peer, alerts } = a {
                    if *peer == pk(&b) && alerts.iter().any(|(id, _)| *id == mine[1].id()) {
                        amber_offered_from = Some(later_page);
                    }
                }
                if let Action::SetTimer {
                    timer: t @ Timer::Offer(..),
                    ..
                } = a
                {
                    events.push_front((Event::Timer(t.clone()), Event::Timer(t.clone())));
                }
            }
            // What either is told to store is stored, and both hear of the commit.
            let to_store: Vec<(VerifiedAlert, Receipt)> = got
                .iter()
                .filter_map(|a| match a {
                    Action::Store { alert, from, hops } => Some((
                        (**alert).clone(),
                        Receipt {
                            received_at: now,
                            from: Some(*from),
                            hops: *hops,
                        },
                    )),
                    _ => None,
                })
                .collect();
            let (want, got) = (sorted(want), sorted(got));
            assert_eq!(got, want, "event {i}");
            sent_on.extend(got);
            for (alert, receipt) in to_store {
                let id = alert.id();
                let seq = store.insert(alert, receipt).await.unwrap().seq();
                let committed = || Event::Committed(vec![(seq, id)]);
                let want = sorted(loaded.handle(committed(), now + 1));
                let got = sorted(cold.handle(committed(), now + 1));
                assert_eq!(got, want, "commit after event {i}");
            }
        }
        assert_eq!(cold.known_count(), loaded.known_count());
        assert!(
            amber_offered_from == Some(true),
            "offered by the promotion's second page: {amber_offered_from:?}"
        );
        // The comparison covers what it should: pages, answers and offers were sent.
        let text = sent_on.join("\n");
        for what in ["SyncPage", "SendStored", "Store"] {
            assert!(text.contains(what), "no {what} in {text}");
        }
    }

    /// Reads of the store that memory does not answer are charged to the peer whose
    /// frame caused them: a budget that pays for reading the whole log from memory does
    /// not pay for reading it from the store. A page read from the store stops after
    /// `SYNC_PAGE_READS` reads (the next page goes on from there).
    #[tokio::test]
    async fn store_reads_are_charged_to_the_peer_that_caused_them() {
        let dir = TempDir::new().unwrap();
        let (store, _writer) = Store::open(&dir.path().join("t.redb")).unwrap();
        let (me, b, o) = (key(1), key(2), key(9));
        let receipt = Receipt {
            received_at: NOW,
            from: Some(pk(&o)),
            hops: 1,
        };
        let n = SYNC_PAGE_READS * 2;
        let items = (1..=n)
            .map(|i| (signed(&o, i, Tlp::Clear, |_| {}).verify().unwrap(), receipt))
            .collect();
        store.insert_many(items).await.unwrap();
        let epoch = store.epoch();
        let cfg = EngineConfig {
            peer_work_per_sec: 1,
            peer_work_burst: 2 * n,
            ..EngineConfig::default()
        };
        let mut loaded = Engine::new(pk(&me), epoch, cfg.clone());
        for m in store.all_meta().unwrap() {
            let known = KnownAlert {
                alert: m.alert,
                hops: m.receipt.hops,
                from: m.receipt.from,
            };
            loaded.load_alert(m.seq, known);
        }
        let mut cold = Engine::new(pk(&me), epoch, cfg);
        cold.set_cold(Box::new(StoredAlerts::new(store.clone(), pk(&me))));
        // The log read page by page, until its end or the peer is over its budget:
        // where each page ended.
        let walk = |e: &mut Engine| {
            e.load_trust(pk(&b), TrustLevel::Member);
            e.handle(Event::PeerConnected(pk(&b)), NOW);
            let mut ends: Vec<u64> = Vec::new();
            while ends.last() != Some(&n) {
                let after = ends.last().copied().unwrap_or(0);
                let out = e.handle(frame(&b, Frame::SyncRequest { epoch, after }), NOW);
                match out.iter().find_map(|a| match a {
                    Action::Send {
                        frame: Frame::SyncPage { next, .. },
                        ..
                    } => Some(*next),
                    _ => None,
                }) {
                    Some(next) => ends.push(next),
                    None => break,
                }
            }
            ends
        };
        assert_eq!(walk(&mut loaded).last(), Some(&n), "the whole log");
        // Each entry: its alert and its cancels read, two reads.
        let pages: Vec<u64> = (1..=3).map(|p| p * SYNC_PAGE_READS / 2).collect();
        assert_eq!(walk(&mut cold), pages, "over budget before the end");
    }
}
