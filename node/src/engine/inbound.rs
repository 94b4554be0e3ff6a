//! Frames from peers: decoding, the validation order for alerts (cheapest first), and
//! the answers to announces, wants and catch-up requests. Each step hands its state
//! changes to the part that owns them.

use std::sync::Arc;

use tocsin_proto::limits::{MAX_HOPS, MAX_IDS_PER_FRAME};
use tocsin_proto::policy::{self, Scope, TrustLevel};
use tocsin_proto::{AlertId, Frame, PublicKey, Reason, SignedAlert};

use super::{
    Action, Engine, KnownAlert, MAX_SIGHTINGS_SEEN, MAX_UNKNOWN_OBSERVERS_PER_ALERT,
    SYNC_PAGE_READS, SYNC_PAGE_SCAN, TREE_OPTIMISE_HOPS, WORK_HELLO, WORK_RECEIPT, WORK_REVOKE,
    WORK_STORE_READ,
};

/// An alert on its way through the checks: its signature not yet checked, or checked
/// off the engine's thread ([`Action::Verify`]), with whether another copy was accepted
/// while it was out.
enum Candidate {
    Signed(SignedAlert),
    Verified(tocsin_proto::VerifiedAlert, bool),
}

impl Candidate {
    fn signed(&self) -> &SignedAlert {
        match self {
            Candidate::Signed(alert) => alert,
            Candidate::Verified(alert, _) => alert,
        }
    }
}

impl Engine {
    pub(super) fn on_frame(&mut self, peer: PublicKey, bytes: &[u8], now: u64) {
        if !self.trees.is_connected(&peer) {
            // Not (or no longer) an accepted connection: drop without work.
            self.verdict(peer, Reason::NotConnected, now);
            return;
        }
        // What we asked for in catch-up is paid for by the credit it gave the peer, not
        // by its byte budget (which bounds what it sends unasked).
        if self.catchup.take_credit(&peer, bytes.len()) {
            self.scoring.stats_mut(peer).bytes_in += bytes.len() as u64;
        } else if !self.scoring.take_bytes(peer, bytes.len(), now) {
            self.pause_reading(peer, bytes.len(), now);
            return;
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(_) => {
                self.verdict(peer, Reason::MalformedFrame, now);
                return;
            }
        };
        if let Frame::Alert { hops, envelope } = frame {
            return self.on_alert(peer, hops, envelope, now);
        }
        // Control frames: each costs work (scans, timers, store reads) out of the
        // peer's work budget; beyond it they are dropped unanswered and penalised.
        if !self.scoring.has_work(peer, now) {
            self.verdict(peer, Reason::OverBudget, now);
            return;
        }
        let reads = self.known.misses();
        let cost = match frame {
            Frame::Hello { epoch, head } => {
                let agencies = &self.agency_of;
                let org = agencies.get(&peer);
                let same_agency = |k: &PublicKey| org.is_some() && agencies.get(k) == org;
                self.catchup
                    .on_hello(peer, (epoch, head), same_agency, now, &mut self.actions);
                WORK_HELLO
            }
            Frame::Alert { .. } => 0, // handled above
            // The network actor reads a connection's identity; a repeat changes nothing.
            Frame::Identity { .. } => 1,
            // An exact repeat of a signed frame that verified before changes nothing:
            // dropped without checking its signature again.
            Frame::Receipt { receipt } => self.check_once(&[&receipt], WORK_RECEIPT, |e, _| {
                e.on_receipt(peer, &receipt, now)
            }),
            Frame::Sighting { sighting } => self.check_once(&[&sighting], WORK_RECEIPT, |e, _| {
                e.on_sighting_frame(peer, &sighting, now)
            }),
            Frame::Revoke { revocation, cert } => {
                self.check_once(&[&revocation, &cert], WORK_REVOKE, |e, digest| {
                    e.on_revoke_frame(peer, &revocation, &cert, digest, now)
                })
            }
            Frame::Announce { ids, hops } => {
                let n = ids.len() as u64;
                self.on_announce(peer, ids, hops, now);
                1 + n
            }
            Frame::Want { ids, graft } => {
                let n = ids.len() as u64;
                1 + 2 * n + self.on_want(peer, ids, graft, now)
            }
            Frame::Prune { origin } => {
                self.trees.on_prune(&peer, origin);
                1
            }
            Frame::Graft { origin } => {
                self.trees.on_graft(&peer, origin);
                1
            }
            Frame::SyncRequest { epoch, after } => {
                1 + self.on_sync_request(peer, epoch, after, now)
            }
            Frame::WantPage {
                epoch,
                after,
                next,
                except,
            } => self.on_want_page(peer, epoch, (after, next), except, now),
            Frame::SyncPage {
                epoch,
                ids,
                next,
                done,
                answers,
            } => {
                let n = ids.len() as u64;
                self.catchup.on_page(
                    peer,
                    (epoch, answers),
                    ids,
                    next,
                    done,
                    &self.known,
                    now,
                    &mut self.actions,
                );
                1 + n
            }
        };
        let reads = self.known.misses().saturating_sub(reads);
        // Each frame's own handling (reading, decoding, dispatch) is `WORK_FRAME`; the
        // costs above count it as 1.
        let cost = cost
            .saturating_add(reads.saturating_mul(WORK_STORE_READ))
            .saturating_add(super::WORK_FRAME - 1);
        self.scoring.charge_work(peer, cost);
    }

    /// A receipt for one of our alerts: it must verify, be signed by its sender (a
    /// receipt is never relayed) and be addressed to us, or the sender is penalised. One
    /// for an alert we do not hold as an AMBER or RED alert of ours is ignored.
    /// The digest [`Engine::checked_frames`] keeps for a signed frame's parts.
    fn frame_digest(parts: &[&[u8]]) -> AlertId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        AlertId(h.finalize().into())
    }

    /// Handles a signed frame (its `parts`) with `handle`, given the frame's digest,
    /// unless the same bytes were handled before (among the latest remembered): then it
    /// is dropped unchecked. `handle` returns whether to remember it: only a frame that
    /// verified and was acted on, so that one ignored for now (its alert not held yet,
    /// a revocation not kept) is judged again when it comes again. Returns the work it
    /// cost: `cost`, or 1 for a repeat.
    fn check_once(
        &mut self,
        parts: &[&[u8]],
        cost: u64,
        handle: impl FnOnce(&mut Self, AlertId) -> bool,
    ) -> u64 {
        let digest = Self::frame_digest(parts);
        if self.checked_frames.get(&digest).is_some() {
            return 1;
        }
        if handle(self, digest) {
            self.checked_frames.entry(digest);
        }
        cost
    }

    /// The runtime kept the revocation of a `revoke` frame ([`Action::Revocation`]): an
    /// exact repeat of it is now dropped unchecked.
    pub fn revocation_kept(&mut self, digest: AlertId) {
        self.checked_frames.entry(digest);
    }

    /// A `sighting` frame. It is charged to the sender's sighting budget (a relayed
    /// observer's to that observer's share of it) before its signature is checked: a
    /// flood of distinct signed sightings buys at most the budget's worth of checks,
    /// not the work budget's. Returns whether it verified and its alert is held here (a
    /// sighting that came before its alert is judged again if it comes again).
    fn on_sighting_frame(&mut self, peer: PublicKey, bytes: &[u8], now: u64) -> bool {
        use tocsin_proto::identity::{Sighting, Signed};
        match Signed::<Sighting>::decode(bytes) {
            Ok(s) if s.body().alert.is_some() => {
                if !self.scoring.take_sighting(peer, s.body().observer, now) {
                    return false;
                }
                if s.verify().is_err() {
                    self.verdict(peer, Reason::BadSighting, now);
                    return false;
                }
                let held = s
                    .body()
                    .alert
                    .is_some_and(|id| self.known.get(&id).is_some());
                self.on_sighting(Some(peer), s, now);
                held
            }
            _ => {
                self.verdict(peer, Reason::BadSighting, now);
                false
            }
        }
    }

    /// A `revoke` frame (`digest`, its [`Self::check_once`] digest): the pair must
    /// verify, or the sender is penalised; the runtime decides whether to keep it, and
    /// tells us when it did ([`Self::revocation_kept`]): one it did not keep (a node it
    /// does not know yet, say) is judged again when it comes again.
    fn on_revoke_frame(
        &mut self,
        peer: PublicKey,
        revocation: &[u8],
        cert: &[u8],
        digest: AlertId,
        now: u64,
    ) -> bool {
        match tocsin_proto::identity::RevocationProof::verify(revocation, cert) {
            Ok(proof) => {
                self.actions.push(Action::Revocation {
                    peer,
                    proof: Box::new(proof),
                    digest,
                });
                false
            }
            Err(_) => {
                self.verdict(peer, Reason::BadRevocation, now);
                false
            }
        }
    }

    /// A `receipt` frame. Its fields are read first: one that is not this peer's, to us,
    /// is penalised, and one for an alert that is not an AMBER or RED alert of ours
    /// that the peer may hold is ignored, both without checking a signature. Returns
    /// whether it verified and was kept.
    fn on_receipt(&mut self, peer: PublicKey, bytes: &[u8], now: u64) -> bool {
        use tocsin_proto::identity::{Receipt, Signed};
        use tocsin_proto::Tlp;
        let receipt = match Signed::<Receipt>::decode(bytes) {
            Ok(r) if r.body().receiver == peer && r.body().origin == self.me => r,
            _ => {
                self.verdict(peer, Reason::BadReceipt, now);
                return false;
            }
        };
        // Ours, AMBER or RED, and one the sender may hold (it was, or is now, in its
        // audience): a receipt from anyone else is ignored.
        let level = self.scoring.level(&peer);
        let ours = self.known.get(&receipt.body().alert).is_some_and(|k| {
            k.alert.origin == self.me
                && matches!(k.alert.tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red)
                && self.may_send(&peer, level, &k.alert, 0)
        });
        if !ours {
            return false;
        }
        if receipt.verify().is_err() {
            self.verdict(peer, Reason::BadReceipt, now);
            return false;
        }
        self.actions.push(Action::Receipt {
            peer,
            receipt: Box::new(receipt),
        });
        true
    }

    /// A sighting of an alert we hold, from this node (`peer` None), from its observer,
    /// or (CLEAR and GREEN only) relayed by a member or partner peer. Kept when it is the
    /// observer's newest of that alert; then it is sent to the alert's origin and, for
    /// CLEAR and GREEN, to every peer that may hold the alert, when it is ours, comes
    /// from its observer, or its observer is known here. One from a peer that may not
    /// hold the alert (AMBER or RED, unless it is a recipient and we are the origin) is
    /// ignored; a relayed one of AMBER or RED is penalised.
    pub(super) fn on_sighting(
        &mut self,
        peer: Option<PublicKey>,
        sighting: tocsin_proto::identity::Signed<tocsin_proto::identity::Sighting>,
        now: u64,
    ) {
        use tocsin_proto::Tlp;
        let s = sighting.body();
        let Some(alert) = s.alert else { return };
        let Some(k) = self.known.get(&alert) else {
            return;
        };
        let open = matches!(k.alert.tlp, Tlp::Clear | Tlp::Green);
        let observer_level = self.scoring.level(&s.observer);
        let known_observer = TrustLevel::may_connect(observer_level);
        let mut unknown_relayed = false;
        if let Some(p) = peer {
            if s.observer != p {
                // Another observer's sighting travels on only with CLEAR and GREEN
                // alerts: of AMBER and RED ones, only the observer sends it, to the
                // origin. Only member and partner peers relay (from a public peer we
                // take only what it originated), a blocked observer's is dropped, and
                // each relayed one is charged to the relay's sighting budget.
                if !open {
                    return self.verdict(p, Reason::BadSighting, now);
                }
                let community = matches!(
                    self.scoring.level(&p),
                    Some(TrustLevel::Member | TrustLevel::Partner)
                );
                if !community || observer_level == Some(TrustLevel::Blocked) {
                    return;
                }
                unknown_relayed = !known_observer;
            }
            // (Its sighting budget was charged when the frame came.) One dated ahead of
            // our clock is dropped, so that a newer one cannot be made up at will.
            if s.last_seen > now.saturating_add(self.max_skew_ms) {
                return;
            }
            let level = self.scoring.level(&p);
            let may_hold = if open {
                TrustLevel::may_connect(level)
            } else {
                k.alert.origin == self.me && self.may_send(&p, level, &k.alert, 0)
            };
            if !may_hold {
                return;
            }
        }
        let key = (alert, s.observer);
        if self
            .sightings
            .get(&key)
            .is_some_and(|held| *held >= s.last_seen)
        {
            return;
        }
        if self.sightings.len() >= MAX_SIGHTINGS_SEEN {
            self.sightings.clear();
            self.unknown_observers.clear();
        }
        if unknown_relayed && !self.sightings.contains_key(&key) {
            // Observers unknown here cost a relay nothing to make up: at most so many of
            // one alert are taken in. Ours, direct ones and known observers' never count.
            let n = self.unknown_observers.entry(alert).or_default();
            if *n >= MAX_UNKNOWN_OBSERVERS_PER_ALERT {
                return;
            }
            *n += 1;
        }
        self.sightings.insert(key, s.last_seen);
        // Ours goes to the origin and, for CLEAR and GREEN, to the alert's audience among
        // our peers; a newer one of CLEAR or GREEN travels on the same way, so that it
        // reaches an origin that is not the observer's peer (each node passes each
        // observer's sighting once: the newest-kept check above ends the flood).
        // Passed on only when it is ours, comes from its observer, or its observer is
        // known here (in the trust table or admitted on its certificate): a made-up
        // observer's sighting stops at the first node that does not know it.
        let from_known = peer.is_none_or(|p| p == s.observer) || known_observer;
        if peer.is_none() || (open && from_known) {
            let origin = k.alert.origin;
            let observer = s.observer;
            let targets: Vec<PublicKey> = self
                .trees
                .links()
                .map(|(p, _)| p)
                .filter(|p| Some(**p) != peer && **p != observer)
                .filter(|p| {
                    **p == origin || (open && self.shareable(&k, p, self.scoring.level(p), now))
                })
                .copied()
                .collect();
            let frame = Frame::Sighting {
                sighting: serde_bytes::ByteBuf::from(sighting.to_bytes()),
            };
            for p in targets {
                self.actions.push(Action::Send {
                    peer: p,
                    frame: frame.clone(),
                });
            }
        }
        let origin = k.alert.origin;
        self.actions.push(Action::Sighting {
            sighting: Box::new(sighting),
            unknown: unknown_relayed,
            ours_to: (peer.is_none() && origin != self.me).then_some(origin),
        });
    }

    /// Whether we asked `peer` for alerts (a catch-up page, a graft) and still wait for
    /// some: then nothing it sends is dropped unread or left unread.
    fn asked_of(&self, peer: &PublicKey) -> bool {
        self.catchup.is_waiting_from(peer) || self.trees.grafts_from(peer)
    }

    /// The peer is past a rate limit: stop reading it until the limit allows its next
    /// frame (`bytes` of it; 0: its next alert). Never while a catch-up page of ours
    /// waits on it: what we asked for is not charged to its limits.
    fn pause_reading(&mut self, peer: PublicKey, bytes: usize, now: u64) {
        if self.asked_of(&peer) {
            return;
        }
        if let Some(until) = self.scoring.read_pause(peer, bytes, now) {
            self.actions.push(Action::PauseReading { peer, until });
        }
    }

    /// Answers with one page of our log; returns the number of log entries scanned.
    fn on_sync_request(&mut self, peer: PublicKey, epoch: u64, after: u64, now: u64) -> u64 {
        // A cursor from another epoch of our log means nothing: start from the beginning.
        let asked = after;
        let after = if epoch == self.epoch { after } else { 0 };
        let level = self.scoring.level(&peer);
        let mut ids = Vec::new();
        let mut next = after;
        let mut scanned = 0;
        let (reads, failed) = (self.known.misses(), self.known.failed_reads());
        // Entries this peer was shown before are shown again at the repeat rate.
        let shown = self.scoring.stats_mut(peer).shown_upto;
        let mut repeats = 0;
        // A log that may have a hole is read up to it (`log_after` stops there), and
        // the page says `done` there: the requester reads on in its next round. Read
        // from the store, a page ends after `SYNC_PAGE_READS` reads; one entry more than
        // a page scans tells whether the page is the last.
        // From the store, a page reads at most as many rows as it may read entries (each
        // costs two reads, its alert and its cancels), and each row read is work.
        let limit = if self.known.is_cold() {
            (SYNC_PAGE_READS as usize / 2).min(SYNC_PAGE_SCAN)
        } else {
            SYNC_PAGE_SCAN
        };
        let rows = self.known.log_after(after, limit + 1);
        let mut done = rows.len() <= limit;
        let rows_read = if self.known.is_cold() { rows.len() } else { 0 };
        for (seq, id) in rows.into_iter().take(limit) {
            if ids.len() == MAX_IDS_PER_FRAME
                || self.known.misses().saturating_sub(reads) >= SYNC_PAGE_READS
            {
                done = false;
                break;
            }
            // An entry of an alert no longer stored there lists nothing.
            let listed = id.filter(|id| self.listable(id, &peer, level, now));
            if self.known.failed_reads() != failed {
                // The page ends before an entry the store could not read.
                done = false;
                break;
            }
            scanned += 1;
            next = seq;
            if seq <= shown {
                repeats += 1;
            }
            if let Some(id) = listed {
                ids.push(id);
            }
        }
        if self.known.failed_reads() != failed && scanned == 0 {
            // Nothing could be read: no answer (the requester asks again when its
            // catch-up stalls), rather than a page that says the log ends here.
            return rows_read as u64;
        }
        let s = self.scoring.stats_mut(peer);
        s.shown_upto = s.shown_upto.max(next);
        self.catchup
            .note_listed(peer, (after, next), &ids, repeats > 0);
        self.send(
            peer,
            Frame::SyncPage {
                epoch: self.epoch,
                ids,
                next,
                done,
                answers: Some(asked),
            },
        );
        scanned.max(rows_read) as u64 + repeats * (super::WORK_REPEAT_ENTRY - 1)
    }

    /// Whether a page of our log for `peer` lists `id`: an alert it may see that did not
    /// come from it, or one of its own that it may have back.
    fn listable(
        &self,
        id: &AlertId,
        peer: &PublicKey,
        level: Option<TrustLevel>,
        now: u64,
    ) -> bool {
        self.known.get(id).is_some_and(|k| {
            (self.shareable(&k, peer, level, now) && k.from != Some(*peer))
                || self.returnable(&k, peer, level, now)
        })
    }

    /// `WantPage`: sends what the page of our log after `after` up to `next` listed for
    /// `peer`, except the ids it holds, filtered again now (trust may have narrowed).
    /// The page is the last one listed to the peer; if it is not (a peer that does not
    /// keep the order), the log is scanned again as for that page, at most
    /// [`SYNC_PAGE_SCAN`] entries. Returns the work it cost: one unit per `except` id
    /// and per entry scanned again, plus, per alert sent, what a `want` of it costs.
    fn on_want_page(
        &mut self,
        peer: PublicKey,
        epoch: u64,
        (after, next): (u64, u64),
        except: Vec<AlertId>,
        now: u64,
    ) -> u64 {
        // A page of another epoch of our log lists nothing we can find again.
        if epoch != self.epoch {
            return 1;
        }
        let level = self.scoring.level(&peer);
        // The page's own scan was paid for by its `sync_request`; a scan again is not,
        // and one of entries this peer was shown before is paid at the repeat rates.
        let shown = self.scoring.stats_mut(peer).shown_upto;
        let repeat = after < shown;
        let (listed, scanned, repeat) = match self.catchup.take_listed(&peer, (after, next)) {
            // The page listed last: its alerts are sent again if its entries were.
            Some((ids, listed_again)) => (ids, 0, listed_again),
            None => {
                // No more rows than the range holds, and every row read is paid for.
                let span = next.saturating_sub(after).min(SYNC_PAGE_SCAN as u64);
                let rows = self.known.log_after(after, span as usize);
                let n = rows.len() as u64;
                if !repeat {
                    if let Some((last, _)) = rows.iter().take_while(|(seq, _)| *seq <= next).last()
                    {
                        let s = self.scoring.stats_mut(peer);
                        s.shown_upto = s.shown_upto.max(*last);
                    }
                }
                let n = if repeat {
                    n * super::WORK_REPEAT_ENTRY
                } else {
                    n
                };
                let ids = rows
                    .into_iter()
                    .take_while(|(seq, _)| *seq <= next)
                    .filter_map(|(_, id)| id)
                    .collect();
                (ids, n, repeat)
            }
        };
        let except: std::collections::HashSet<AlertId> = except.into_iter().collect();
        let looked = scanned + except.len() as u64;
        let ids: Vec<AlertId> = listed
            .into_iter()
            .filter(|id| !except.contains(id) && self.listable(id, &peer, level, now))
            .take(MAX_IDS_PER_FRAME)
            .collect();
        let sent = self.send_alerts(peer, ids, level, now);
        let per_alert = if repeat { super::WORK_REPEAT_ALERT } else { 2 };
        1 + looked + per_alert * sent
    }

    fn on_announce(&mut self, peer: PublicKey, ids: Vec<AlertId>, hops: Vec<u8>, now: u64) {
        for (i, id) in ids.into_iter().enumerate() {
            let Some(k) = self.known.get(&id) else {
                self.trees.announced(peer, id, now, &mut self.actions);
                continue;
            };
            // A much shorter path through the announcer: make it our tree link for
            // what comes next, and prune the link the long copy came over.
            let offered = hops.get(i).copied().unwrap_or(u8::MAX);
            if let Some(parent) = k.from {
                if parent != peer && offered.saturating_add(TREE_OPTIMISE_HOPS) <= k.hops {
                    let origin = k.alert.origin;
                    self.trees.optimise(peer, parent, origin, &mut self.actions);
                }
            }
        }
    }

    /// `Want`: sends the alerts asked for. Returns the work of the alerts sent: none
    /// more for those of the catch-up page we listed to the peer last (the page is
    /// taken), [`super::WORK_REPEAT_ALERT`] each otherwise (or if that page showed the
    /// peer entries it was shown before).
    fn on_want(&mut self, peer: PublicKey, ids: Vec<AlertId>, graft: bool, now: u64) -> u64 {
        let level = self.scoring.level(&peer);
        let of_page = !graft && self.catchup.take_listed_with(&peer, &ids) == Some(false);
        if graft {
            let origins: Vec<PublicKey> = ids
                .iter()
                .filter_map(|id| self.known.get(id).map(|k| k.alert.origin))
                .collect();
            self.trees.on_want_graft(&peer, origins);
        }
        let sent = self.send_alerts(peer, ids, level, now);
        if of_page {
            0
        } else {
            super::WORK_REPEAT_ALERT * sent
        }
    }

    /// Sends `peer` the alerts of `ids` that it may see (or have back), at our hop
    /// count + 1: from the envelope cache, else read from the store. Returns how many.
    fn send_alerts(
        &mut self,
        peer: PublicKey,
        ids: Vec<AlertId>,
        level: Option<TrustLevel>,
        now: u64,
    ) -> u64 {
        let mut sent = 0;
        let mut from_store = Vec::new();
        for id in ids {
            let Some(k) = self.known.get(&id) else {
                continue;
            };
            if !self.shareable(&k, &peer, level, now) && !self.returnable(&k, &peer, level, now) {
                continue;
            }
            let hops = k.hops.saturating_add(1);
            // Past a few, the rest are read and framed off the engine's thread, and
            // queued a part at a time, so that one request never holds it up long.
            match self
                .known
                .envelope(&id)
                // One not committed yet is not in the store to be read there.
                .filter(|_| sent < super::SEND_FROM_MEMORY || self.known.is_uncommitted(&id))
            {
                Some(env) => {
                    let envelope = env.as_ref().clone();
                    sent += 1;
                    self.scoring.stats_mut(peer).alerts_out += 1;
                    self.send(peer, Frame::Alert { hops, envelope });
                }
                None => from_store.push((id, hops)),
            }
        }
        if !from_store.is_empty() {
            sent += from_store.len() as u64;
            self.scoring.stats_mut(peer).alerts_out += from_store.len() as u64;
            self.actions.push(Action::SendStored {
                peer,
                alerts: from_store,
            });
        }
        sent
    }

    fn on_alert(&mut self, peer: PublicKey, hops: u8, envelope: Vec<u8>, now: u64) {
        // A peer past its alert limit, with no catch-up page of ours outstanding, is
        // sending unsolicited alerts beyond its budget: drop them before the decoding,
        // so a flood costs this node no more than reading it.
        if self.scoring.alerts_exhausted(peer, now) && !self.asked_of(&peer) {
            self.scoring.limited(peer, now);
            self.pause_reading(peer, 0, now);
            return;
        }
        // 1. limits and decode (the byte budget bounds this work)
        let alert = match SignedAlert::decode(&envelope) {
            Ok(a) => a,
            Err(_) => {
                self.verdict(peer, Reason::MalformedAlert, now);
                return;
            }
        };
        let id = alert.id();
        // An alert we asked this peer for (a catch-up page, a graft) is bounded by what
        // we asked; only unsolicited alerts are charged to the peer's flood limit, so
        // that catch-up runs at the speed of the disk, not of the limiter.
        let solicited = self.catchup.is_waiting_for(&peer, &id) || self.trees.was_asked(&peer, &id);
        if !solicited && !self.scoring.take_alert(peer, alert.origin(), now) {
            return;
        }
        self.admit(
            peer,
            hops,
            solicited,
            Candidate::Signed(alert),
            envelope,
            now,
        );
    }

    /// An alert handed out with [`Action::Verify`] came back checked. Everything but the
    /// signature is checked again: trust may have changed, and another copy may have
    /// been accepted meanwhile (this one is then a duplicate).
    pub(super) fn on_verified(&mut self, checked: super::Checked, now: u64) {
        self.verifying.0 = self.verifying.0.saturating_sub(1);
        self.verifying.1 = self.verifying.1.saturating_sub(checked.envelope.len());
        if let Some(n) = self.verifying_from.get_mut(&checked.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.verifying_from.remove(&checked.peer);
            }
        }
        let id = match &checked.alert {
            Ok(alert) => alert.id(),
            Err(id) => *id,
        };
        // A copy accepted while this one was out makes it a duplicate, even if that copy
        // has left memory since.
        let accepted = self.known.check_ended(&id);
        match checked.alert {
            Err(id) => self.refuse(checked.peer, id, Reason::BadSignature, now),
            Ok(alert) => self.admit(
                checked.peer,
                checked.hops,
                checked.solicited,
                Candidate::Verified(*alert, accepted),
                checked.envelope,
                now,
            ),
        }
        // Refused (forged, or trust, expiry, revocation changed while it was out), and
        // no other copy held or out: pages that listed it while this copy was out did
        // not ask for it; they do now.
        if !self.known.is_checking(&id) && !self.known.contains(&id) {
            self.catchup.ask_again(&id, &mut self.actions);
        }
    }

    /// Steps 2–8 of an alert's checks, and its acceptance.
    fn admit(
        &mut self,
        peer: PublicKey,
        hops: u8,
        solicited: bool,
        alert: Candidate,
        envelope: Vec<u8>,
        now: u64,
    ) {
        let id = alert.signed().id();
        // 2. duplicate (its hop count is checked too: a lie must not lower ours). One
        // that comes back checked was not held when it arrived; a copy accepted since is
        // marked so, or still in memory (uncommitted, or among the latest committed).
        let held = match &alert {
            Candidate::Signed(_) => self.known.contains(&id),
            Candidate::Verified(_, accepted) => *accepted || self.known.holds_in_memory(&id),
        };
        if held {
            // A page that listed it while this copy was out may wait for it, though the
            // accepted copy is held and committed (settled before that page came).
            if matches!(alert, Candidate::Verified(..)) && !self.known.is_uncommitted(&id) {
                self.catchup.settle(&id, false, now, &mut self.actions);
            }
            if let Err(reason) = policy::check_hops(&peer, &alert.signed().origin(), hops) {
                return self.refuse(peer, id, reason, now);
            }
            self.on_duplicate(peer, id, hops, now);
            return;
        }
        // 3–7. sending peer's level, origin not blocked, TLP scope, hop limit, expiry,
        // clock skew, revocation.
        let returned = match self.check_scope(peer, alert.signed(), hops, solicited, now) {
            Ok(returned) => returned,
            Err(reason) => return self.refuse(peer, id, reason, now),
        };
        // 8. signature: only a strict verification makes the alert storable
        let alert = match alert {
            Candidate::Verified(verified, _) => verified,
            Candidate::Signed(alert) => {
                let from_peer = self.verifying_from.get(&peer).copied().unwrap_or(0);
                if self.verify_off_thread
                    && self.verifying.0 < super::MAX_VERIFYING
                    && self.verifying.1 + envelope.len() <= super::MAX_VERIFYING_BYTES
                    && from_peer < super::MAX_VERIFYING_PER_PEER
                {
                    self.verifying.0 += 1;
                    self.verifying.1 += envelope.len();
                    self.verifying_from.insert(peer, from_peer + 1);
                    self.known.check_started(id);
                    self.actions.push(Action::Verify(Box::new(super::ToVerify {
                        peer,
                        hops,
                        solicited,
                        alert: Box::new(alert),
                        envelope,
                    })));
                    return;
                }
                match alert.verify_cached(&mut self.keys) {
                    Ok(verified) => verified,
                    Err(_) => return self.refuse(peer, id, Reason::BadSignature, now),
                }
            }
        };
        let body = alert.body();
        // Only the origin may update or cancel its alert. A validly signed one naming
        // another origin's alert is refused; only its origin is penalised for it (a
        // relay could not have known).
        if let Some(target) = body.replaces.and_then(|t| self.known.get(&t)) {
            if target.alert.origin != body.origin {
                let reason = if peer == body.origin {
                    Reason::NotOrigin
                } else {
                    Reason::ForeignReplacement
                };
                return self.refuse(peer, id, reason, now);
            }
        }
        self.scoring.stats_mut(peer).alerts_in += 1;
        self.trees.arrived(&id, &peer, body.origin);
        let meta = KnownAlert::of(&alert, hops, Some(peer));
        self.accept(meta, Arc::new(envelope));
        self.known.mark_uncommitted(id);
        self.actions.push(Action::Store {
            alert: Box::new(alert),
            from: peer,
            hops,
        });
        // One of our own alerts given back is stored, not offered again: the peers that
        // may hold it got it when we first issued it.
        if !returned {
            self.relay(id, Some(peer), now);
        }
    }

    /// Steps 3–7 for an alert from `peer`: its level, the origin's, the TLP scope, the
    /// hop limit; one of our own alerts that we asked for (we lost it) comes back
    /// whatever its TLP (`Ok(true)`). A RED alert that names our org names us. Then
    /// expiry, a date too far ahead of our clock, and an origin revoked by then or by
    /// now.
    fn check_scope(
        &self,
        peer: PublicKey,
        alert: &SignedAlert,
        hops: u8,
        solicited: bool,
        now: u64,
    ) -> Result<bool, Reason> {
        let body = alert.body();
        let mut named = Vec::new();
        let recipients: &[PublicKey] = match self.my_org {
            Some(org) if body.tlp == tocsin_proto::Tlp::Red && body.recipients.contains(&org) => {
                named.extend_from_slice(&body.recipients);
                named.push(self.me);
                &named
            }
            _ => &body.recipients,
        };
        let scope = Scope {
            origin: &body.origin,
            tlp: body.tlp,
            recipients,
        };
        let returned = body.origin == self.me && solicited;
        if returned {
            policy::check_returned(&self.me, &peer, self.scoring.level(&peer), scope, hops)?;
        } else {
            policy::check_inbound(
                &self.me,
                &peer,
                self.scoring.level(&peer),
                self.scoring.level(&body.origin),
                scope,
                hops,
            )?;
        }
        // Once the revocation time has passed here, nothing more signed by a revoked
        // key comes in, whatever date it bears: a stolen key can date its alerts (and
        // its updates and cancels of the key's earlier alerts) before the revocation.
        if self.is_revoked(&body.origin, body.issued_at.max(now)) {
            return Err(Reason::RevokedOrigin);
        }
        if body.is_expired(now) {
            return Err(Reason::Expired);
        }
        if body.issued_at > now.saturating_add(self.max_skew_ms) {
            return Err(Reason::FutureDated);
        }
        Ok(returned)
    }

    /// A full copy of an alert we hold arrived from `peer` at `hops`.
    fn on_duplicate(&mut self, peer: PublicKey, id: AlertId, hops: u8, now: u64) {
        let Some(k) = self.known.get(&id) else {
            return;
        };
        // A shorter path: hold the alert at the lower hop count, and offer it again if
        // that brings it back under the hop limit.
        let origin = k.alert.origin;
        let lower = hops < k.hops && k.from.is_some();
        let reoffer = lower && k.hops >= MAX_HOPS && hops < MAX_HOPS;
        if lower {
            self.known.lower_hops(&id, hops);
        }
        if reoffer {
            self.relay(id, Some(peer), now);
        }
        self.scoring.stats_mut(peer).duplicates += 1;
        // Prune the link in the tree that brought the copy: the origin's own, or the
        // default one.
        if let Some(prune) = self.trees.prune_duplicate(&peer, origin, hops) {
            self.send(peer, prune);
        }
    }

    /// `peer`'s copy of `id` was refused for `reason`: the verdict, and stop asking
    /// `peer` for it or waiting for it in `peer`'s catch-up page.
    fn refuse(&mut self, peer: PublicKey, id: AlertId, reason: Reason, now: u64) {
        self.verdict(peer, reason, now);
        self.trees.drop_announcer(&id, &peer);
        self.catchup.refused(peer, &id, now, &mut self.actions);
    }
}
