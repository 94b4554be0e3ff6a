//! Catch-up: per connected peer, reading its log page by page from the cursor saved for
//! it (`SyncRequest` / `SyncPage`, the alerts lacked asked for with `WantPage` or
//! `Want`), waiting until every wanted alert of a page is committed or refused before
//! saving the cursor past it, and the periodic re-read and stall checks that repair
//! what pushes missed.
//!
//! Pages are pipelined: the next page is asked for as soon as one arrives, while the
//! alerts of up to [`PIPELINE`] pages are still being fetched and committed, so a node
//! that missed much is limited by the disk and the link, not by round trips. One
//! request is outstanding at a time (the peer answers in order), and the cursor only
//! ever moves past pages whose alerts are all durable here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tocsin_proto::limits::MAX_IDS_PER_FRAME;
use tocsin_proto::{AlertId, Frame, PublicKey};

use super::known::Known;
use super::{send, Action, Timer, RESYNC_INTERVAL_MS, SYNC_TIMEOUT_MS};

/// Pages of a peer's log read and not yet settled (their alerts still being fetched or
/// committed) before the next is asked for. Bounds what one catch-up holds in memory:
/// at most this many pages of [`MAX_IDS_PER_FRAME`] ids.
pub const PIPELINE: usize = 4;

/// Bytes of alert frames a wanted id lets the peer send without charging its byte
/// budget: what we asked for is bounded by what we asked, not by the flood limits. A
/// typical alert is well under this; a larger one is charged for the excess.
pub const SOLICITED_BYTES_PER_ID: u64 = 4096;

/// One page of the peer's log that arrived.
#[derive(Debug)]
struct Page {
    /// Where it ends: the cursor, once it and every page before it are settled.
    next: u64,
    /// The last page of the log.
    done: bool,
    /// Its ids not yet committed or refused here.
    waiting: HashSet<AlertId>,
    /// One of its alerts could not be stored here (a failing disk): the cursor must not
    /// pass this page; the session reads it again after [`SYNC_TIMEOUT_MS`].
    failed: bool,
}

/// The last page of our log listed to a peer (the serving side).
#[derive(Debug)]
struct Listed {
    after: u64,
    next: u64,
    ids: Vec<AlertId>,
    set: HashSet<AlertId>,
    repeat: bool,
}

#[derive(Debug, Default)]
struct Session {
    /// The peer's log epoch, from its Hello.
    epoch: u64,
    /// The highest sequence number of the peer's log seen (its Hello, its pages).
    head: u64,
    /// The cursor: every page up to here is settled.
    after: u64,
    /// Pages that arrived and are not yet settled, in log order.
    pages: VecDeque<Page>,
    /// The cursor a page was asked from, while it has not arrived.
    requested: Option<u64>,
    /// Set once the peer's log has been read to its head.
    complete: bool,
    /// When a page was last asked for or arrived (for the stall check).
    requested_at: u64,
    /// Bytes the peer may still send for alerts we wanted, uncharged.
    credit: u64,
}

impl Session {
    fn waits_for(&self, id: &AlertId) -> bool {
        self.pages.iter().any(|p| p.waiting.contains(id))
    }

    /// Stops waiting for `id`; true if some page waited for it.
    fn settle(&mut self, id: &AlertId, failed: bool) -> bool {
        for p in self.pages.iter_mut() {
            if p.waiting.remove(id) {
                p.failed |= failed;
                return true;
            }
        }
        false
    }
}

/// Catch-up sessions (one per connected peer that sent Hello) and saved cursors.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Ordered, so that the engine's output is deterministic for the same inputs.
    sessions: BTreeMap<PublicKey, Session>,
    /// (epoch, seq) read up to, per peer, kept across connections.
    cursors: HashMap<PublicKey, (u64, u64)>,
    /// The serving side: the last page of our log listed to each connected peer, as
    /// so that its `WantPage` (or `Want`) is answered with exactly what the page listed.
    /// A requester sends a page's `WantPage` before its next `SyncRequest`, on the same
    /// ordered stream, so the last page is the one it answers.
    listed: HashMap<PublicKey, Listed>,
    /// Cursors are not saved (see [`Self::hold_cursors`]).
    hold: bool,
}

impl CatchUp {
    /// A saved cursor, at start-up.
    pub fn load_cursor(&mut self, peer: PublicKey, epoch: u64, seq: u64) {
        self.cursors.insert(peer, (epoch, seq));
    }

    /// Saves no cursor until [`Self::release_cursors`]: while the stored alerts are
    /// being checked, one taken as held may yet turn out damaged (and be quarantined),
    /// and a cursor saved past it would never read it again.
    pub fn hold_cursors(&mut self) {
        self.hold = true;
    }

    /// The stored alerts were checked. If some were quarantined (`refetch`), every
    /// cursor is forgotten and every session reads its peer's log again from the start
    /// (wanting only what is missing); otherwise the cursors the sessions reached
    /// meanwhile are saved.
    pub fn release_cursors(&mut self, refetch: bool, now: u64, out: &mut Vec<Action>) {
        self.hold = false;
        let peers: Vec<PublicKey> = self.sessions.keys().copied().collect();
        if refetch {
            self.cursors.clear();
            for peer in peers {
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.after = 0;
                }
                self.restart(peer, now, out);
            }
            return;
        }
        for peer in peers {
            let Some(s) = self.sessions.get(&peer) else {
                continue;
            };
            let (epoch, seq) = (s.epoch, s.after);
            if self.cursors.get(&peer) != Some(&(epoch, seq)) {
                self.cursors.insert(peer, (epoch, seq));
                out.push(Action::SaveCursor { peer, epoch, seq });
            }
        }
    }

    /// We now take more from `peer` than when we read its log (we promoted it, or
    /// unblocked an origin it may have relayed): what its log listed and we refused
    /// then may come in now. Its cursor goes back to the start (saved so, so that a
    /// restart reads it again too), and a connected session reads the log again from
    /// the start, wanting only what is missing here.
    ///
    /// A cursor at the start is saved even while cursors are held: no alert can be
    /// passed by it. A session already reading from the start with nothing read yet is
    /// left alone (an org unblocked re-derives each of its nodes: one re-read, not one
    /// per node).
    pub fn reread(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        if let Some((epoch, seq)) = self.cursors.get(&peer).copied() {
            if seq > 0 {
                self.cursors.insert(peer, (epoch, 0));
                out.push(Action::SaveCursor {
                    peer,
                    epoch,
                    seq: 0,
                });
            }
        }
        if let Some(s) = self.sessions.get_mut(&peer) {
            if s.after == 0 && s.requested == Some(0) && s.pages.is_empty() {
                return;
            }
            s.after = 0;
            self.restart(peer, now, out);
        }
    }

    /// Every peer with a saved cursor or a session, for [`Self::reread`].
    pub fn peers(&self) -> Vec<PublicKey> {
        let mut peers: Vec<PublicKey> = self
            .cursors
            .keys()
            .chain(self.sessions.keys())
            .copied()
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// The peer disconnected (or reconnected): its session ends; its cursor stays.
    pub fn end(&mut self, peer: &PublicKey) {
        self.sessions.remove(peer);
        self.listed.remove(peer);
    }

    /// The serving side: we listed `ids`, our log after `after` up to `next`, to `peer`;
    /// `repeat`: the page showed it entries it was shown before (its alerts are then sent
    /// at the repeat rate too).
    pub fn note_listed(
        &mut self,
        peer: PublicKey,
        (after, next): (u64, u64),
        ids: &[AlertId],
        repeat: bool,
    ) {
        self.listed.insert(
            peer,
            Listed {
                after,
                next,
                ids: ids.to_vec(),
                set: ids.iter().copied().collect(),
                repeat,
            },
        );
    }

    /// The ids of the page after `after` up to `next` that we listed to `peer` last, if
    /// that is the page (taken: a page is asked for once).
    pub fn take_listed(
        &mut self,
        peer: &PublicKey,
        (after, next): (u64, u64),
    ) -> Option<(Vec<AlertId>, bool)> {
        match self.listed.get(peer) {
            Some(l) if l.after == after && l.next == next => {
                self.listed.remove(peer).map(|l| (l.ids, l.repeat))
            }
            _ => None,
        }
    }

    /// Whether `ids` are all of the page we listed to `peer` last (a catch-up's `want`
    /// for what it lacks of that page): then the page is taken, as by
    /// [`Self::take_listed`], and whether it was a repeat is returned.
    pub fn take_listed_with(&mut self, peer: &PublicKey, ids: &[AlertId]) -> Option<bool> {
        let l = self.listed.get(peer)?;
        if ids.len() > l.set.len() || !ids.iter().all(|id| l.set.contains(id)) {
            return None;
        }
        self.listed.remove(peer).map(|l| l.repeat)
    }

    /// Whether a session with the peer is reading its log.
    pub fn is_catching_up(&self, peer: &PublicKey) -> bool {
        self.sessions.get(peer).is_some_and(|s| !s.complete)
    }

    /// How many entries of `peer`'s log (as far as we know its head) are past our
    /// cursor: 0 when caught up or not connected.
    pub fn lag(&self, peer: &PublicKey) -> u64 {
        self.sessions
            .get(peer)
            .map_or(0, |s| s.head.saturating_sub(s.after))
    }

    /// Whether a catch-up page from `peer` waits for alerts (we asked it for some).
    pub fn is_waiting_from(&self, peer: &PublicKey) -> bool {
        self.sessions
            .get(peer)
            .is_some_and(|s| s.pages.iter().any(|p| !p.waiting.is_empty()))
    }

    /// Whether a catch-up page from `peer` waits for `id` (we asked for it).
    pub fn is_waiting_for(&self, peer: &PublicKey, id: &AlertId) -> bool {
        self.sessions.get(peer).is_some_and(|s| s.waits_for(id))
    }

    /// Takes `bytes` of a frame from `peer` out of what we asked it for; false when
    /// what is left of that credit does not cover them (the peer's byte budget pays).
    pub fn take_credit(&mut self, peer: &PublicKey, bytes: usize) -> bool {
        match self.sessions.get_mut(peer) {
            Some(s) if s.credit >= bytes as u64 => {
                s.credit -= bytes as u64;
                true
            }
            _ => false,
        }
    }

    /// `Hello { epoch, head }` from a connected peer: starts reading its log.
    /// `same_agency` says whether another key belongs to the peer's agency (a cursor of
    /// the peer's former key may be taken over only then).
    pub fn on_hello(
        &mut self,
        peer: PublicKey,
        (epoch, head): (u64, u64),
        same_agency: impl Fn(&PublicKey) -> bool,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        // Same epoch and not past the peer's head: resume. A cursor past the head means
        // the peer's database was restored from an older backup: its sequence numbers
        // will be reused, so start over (wanting only what is missing is cheap).
        let after = match self.cursors.get(&peer) {
            Some((e, seq)) if *e == epoch && *seq <= head => *seq,
            _ => match self.cursor_of_same_log(&peer, epoch, head, same_agency) {
                Some((from, seq)) => {
                    self.cursors.insert(peer, (epoch, seq));
                    out.push(Action::CursorAdopted { peer, from, seq });
                    if !self.hold {
                        out.push(Action::SaveCursor { peer, epoch, seq });
                    }
                    seq
                }
                None => 0,
            },
        };
        self.sessions.insert(
            peer,
            Session {
                epoch,
                head,
                after,
                requested_at: now,
                ..Session::default()
            },
        );
        self.request_page(peer, after, now, out);
    }

    /// The furthest cursor saved for another key on the log `epoch` (not past `head`),
    /// with that key: a node that was re-keyed keeps its database, so its log (and its
    /// epoch, random per database) is the one read under its former key, and catch-up
    /// resumes there instead of reading the whole log again. Only a key of the peer's
    /// own agency (`same_agency`) that is not reading with us now counts: a database
    /// copied to a second, running node keeps the epoch while its log diverges, and a
    /// peer of another agency that claims our partner's epoch learns nothing of how far
    /// we read it.
    fn cursor_of_same_log(
        &self,
        peer: &PublicKey,
        epoch: u64,
        head: u64,
        same_agency: impl Fn(&PublicKey) -> bool,
    ) -> Option<(PublicKey, u64)> {
        self.cursors
            .iter()
            .filter(|(k, (e, seq))| {
                *k != peer
                    && *e == epoch
                    && *seq <= head
                    && *seq > 0
                    && !self.sessions.contains_key(*k)
                    && same_agency(k)
            })
            .map(|(k, (_, seq))| (*seq, *k))
            .max()
            .map(|(seq, k)| (k, seq))
    }

    /// Asks `peer` for the page of its log after `after`, and arms the stall check.
    fn request_page(&mut self, peer: PublicKey, after: u64, now: u64, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        s.requested = Some(after);
        s.requested_at = now;
        send(
            out,
            peer,
            Frame::SyncRequest {
                epoch: s.epoch,
                after,
            },
        );
        out.push(Action::SetTimer {
            at: now + SYNC_TIMEOUT_MS,
            timer: Timer::Sync(peer),
        });
    }

    /// A `SyncPage` from the peer: wants the ids we lack, and waits for those and for
    /// ids held but not yet committed (the cursor must not pass an alert that is not
    /// durable here). Asks for the next page at once while the pipeline has room.
    #[allow(clippy::too_many_arguments)] // one page's fields, plus where to put actions
    pub fn on_page(
        &mut self,
        peer: PublicKey,
        (epoch, answers): (u64, Option<u64>),
        ids: Vec<AlertId>,
        next: u64,
        done: bool,
        known: &Known,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        // Unsolicited, or the late answer to a request from before a restart.
        if s.epoch != epoch
            || s.requested.is_none()
            || (answers.is_some() && answers != s.requested)
        {
            return;
        }
        // An alert whose signature is being checked has arrived: not asked for again.
        let (wanted, held): (Vec<AlertId>, Vec<AlertId>) = ids
            .into_iter()
            .partition(|id| !known.is_checking(id) && !known.contains(id));
        // Wait for what we lack, and for what we hold but is not durable yet (or not
        // checked yet).
        let waiting: HashSet<AlertId> = wanted
            .iter()
            .chain(held.iter().filter(|id| {
                known.is_uncommitted(id) || (known.is_checking(id) && !known.contains(id))
            }))
            .copied()
            .collect();
        // The early return above makes this the request's `after`.
        let after = s.requested.unwrap_or_default();
        s.requested = None;
        s.requested_at = now;
        s.head = s.head.max(next);
        s.credit = s
            .credit
            .saturating_add(wanted.len() as u64 * SOLICITED_BYTES_PER_ID);
        s.pages.push_back(Page {
            next,
            done,
            waiting,
            failed: false,
        });
        // Progress: the stall check counts from here.
        out.push(Action::SetTimer {
            at: now + SYNC_TIMEOUT_MS,
            timer: Timer::Sync(peer),
        });
        if !wanted.is_empty() && held.len() < wanted.len() {
            // We lack most of the page: name what we hold instead of what we lack, so
            // that the ids we lack do not travel a second time.
            send(
                out,
                peer,
                Frame::WantPage {
                    epoch,
                    after,
                    next,
                    except: held,
                },
            );
        } else {
            for chunk in wanted.chunks(MAX_IDS_PER_FRAME) {
                send(
                    out,
                    peer,
                    Frame::Want {
                        ids: chunk.to_vec(),
                        graft: false,
                    },
                );
            }
        }
        self.advance(peer, now, out);
    }

    /// Saves the cursor past the settled pages at the front, and keeps the pipeline
    /// full: asks for the next page when none is outstanding and there is room.
    fn advance(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let mut moved = false;
        let mut stopped = false;
        while s.pages.front().is_some_and(|p| p.waiting.is_empty()) {
            if s.pages.front().is_some_and(|p| p.failed) {
                // An alert of this page was not stored: keep the cursor before it, stop
                // reading, and let the stall check read it again later.
                s.pages.clear();
                s.requested = None;
                s.credit = 0;
                stopped = true;
                break;
            }
            let Some(page) = s.pages.pop_front() else {
                break;
            };
            s.after = page.next;
            moved = true;
            if page.done {
                s.complete = true;
            }
        }
        if s.pages.is_empty() && s.requested.is_none() {
            // Nothing asked for is pending: what was not used of the credit lapses.
            s.credit = 0;
        }
        let epoch = s.epoch;
        if moved && !self.hold {
            let seq = s.after;
            self.cursors.insert(peer, (epoch, seq));
            out.push(Action::SaveCursor { peer, epoch, seq });
        }
        let Some(s) = self.sessions.get(&peer) else {
            return;
        };
        if s.complete {
            if moved {
                out.push(Action::SetTimer {
                    at: now + RESYNC_INTERVAL_MS,
                    timer: Timer::Resync(peer),
                });
            }
            return;
        }
        let (last_next, last_done) = s
            .pages
            .back()
            .map_or((s.after, false), |p| (p.next, p.done));
        if stopped {
            // The stall check reads the page again.
            return;
        }
        if s.requested.is_none() && !last_done && s.pages.len() < PIPELINE {
            self.request_page(peer, last_next, now, out);
        }
    }

    /// An id some page waited for was committed or refused (`failed`: the store could
    /// not write it, so the page must be read again).
    pub fn settle(&mut self, id: &AlertId, failed: bool, now: u64, out: &mut Vec<Action>) {
        let peers: Vec<PublicKey> = self
            .sessions
            .iter_mut()
            .filter_map(|(k, s)| s.settle(id, failed).then_some(*k))
            .collect();
        for peer in peers {
            self.advance(peer, now, out);
        }
    }

    /// `peer`'s copy of `id` was refused: its pages stop waiting for it.
    pub fn refused(&mut self, peer: PublicKey, id: &AlertId, now: u64, out: &mut Vec<Action>) {
        let settled = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.settle(id, false));
        if settled {
            self.advance(peer, now, out);
        }
    }

    /// A copy of `id` that was out for its signature check was refused, and no other
    /// copy is held or out: every session whose pages wait for `id` (the pages that listed
    /// it while it was out did not ask for it) asks its peer for it now.
    pub fn ask_again(&mut self, id: &AlertId, out: &mut Vec<Action>) {
        for (peer, s) in &mut self.sessions {
            if s.waits_for(id) {
                s.credit = s.credit.saturating_add(SOLICITED_BYTES_PER_ID);
                send(
                    out,
                    *peer,
                    Frame::Want {
                        ids: vec![*id],
                        graft: false,
                    },
                );
            }
        }
    }

    /// Asks `peer` again from the saved cursor.
    fn restart(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        s.complete = false;
        s.pages.clear();
        s.credit = 0;
        let after = s.after;
        self.request_page(peer, after, now, out);
    }

    /// The ids the first unsettled page of `peer`'s log waits for.
    pub fn front_waiting(&self, peer: &PublicKey) -> Vec<AlertId> {
        let front = self.sessions.get(peer).and_then(|s| s.pages.front());
        let mut ids: Vec<AlertId> =
            front.map_or_else(Vec::new, |p| p.waiting.iter().copied().collect());
        ids.sort();
        ids
    }

    /// Whether the catch-up with `peer` made no progress (no page asked for or arrived)
    /// for the timeout.
    pub fn has_stalled(&self, peer: &PublicKey, now: u64) -> bool {
        self.sessions
            .get(peer)
            .is_some_and(|s| !s.complete && now >= s.requested_at + SYNC_TIMEOUT_MS)
    }

    /// The stall check: only a catch-up that made no progress (no page asked for or
    /// arrived) for the timeout has stalled (lost frame, refused alert, failed store);
    /// timers armed before later progress are stale. Returns whether the peer listed
    /// alerts that it then did not send (`ours`: ids it is not asked for, but waited
    /// for as they are not yet committed here).
    pub fn on_stall_timer(
        &mut self,
        peer: PublicKey,
        now: u64,
        out: &mut Vec<Action>,
        ours: impl Fn(&AlertId) -> bool,
    ) -> bool {
        if !self.has_stalled(&peer, now) {
            return false;
        }
        let Some(s) = self.sessions.get(&peer) else {
            return false;
        };
        // The peer listed alerts, was asked for them, and did not send them.
        let undelivered = s
            .pages
            .front()
            .is_some_and(|p| !p.failed && p.waiting.iter().any(|id| !ours(id)));
        self.restart(peer, now, out);
        undelivered
    }

    /// The periodic re-read: starts another round if the last one completed.
    pub fn on_resync_timer(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        if self.sessions.get(&peer).is_some_and(|s| s.complete) {
            self.restart(peer, now, out);
        }
    }

    /// This part's invariants; `connected` says whether a peer is connected.
    pub fn check_invariants(&self, connected: impl Fn(&PublicKey) -> bool) -> Result<(), String> {
        if let Some(peer) = self.listed.keys().find(|p| !connected(p)) {
            return Err(format!("page listed to {} not connected", peer.fmt_short()));
        }
        for (peer, s) in &self.sessions {
            let p = peer.fmt_short();
            if !connected(peer) {
                return Err(format!("catch-up session with {p} not connected"));
            }
            if s.pages.len() > PIPELINE {
                return Err(format!("{p}: {} pages in flight", s.pages.len()));
            }
            if s.complete && (s.requested.is_some() || !s.pages.is_empty()) {
                return Err(format!("{p}: complete with pages in flight"));
            }
            if s.pages.front().is_some_and(|f| f.waiting.is_empty()) {
                return Err(format!("{p}: a settled page was not passed"));
            }
            let mut last = s.after;
            for page in &s.pages {
                if page.next < last {
                    return Err(format!("{p}: pages out of order"));
                }
                last = page.next;
            }
        }
        Ok(())
    }
}
