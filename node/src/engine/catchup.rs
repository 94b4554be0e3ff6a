//! Catch-up: per connected peer, reading its log page by page from the cursor saved for
//! it (`SyncRequest` / `SyncPage`), waiting until every wanted alert of a page is
//! committed or refused before saving the cursor past it, and the periodic re-read
//! and stall checks that repair what pushes missed.

use std::collections::{BTreeMap, HashMap, HashSet};

use tocsin_proto::limits::MAX_IDS_PER_FRAME;
use tocsin_proto::{AlertId, Frame, PublicKey};

use super::known::Known;
use super::{send, Action, Timer, RESYNC_INTERVAL_MS, SYNC_TIMEOUT_MS};

#[derive(Debug, Default)]
struct Session {
    /// The peer's log epoch, from its Hello.
    epoch: u64,
    /// The cursor the current page was requested from.
    after: u64,
    /// Where the current page ends, once it has arrived.
    page_next: Option<u64>,
    page_done: bool,
    /// Wanted ids of the current page not yet committed or refused.
    waiting: HashSet<AlertId>,
    /// Set once the peer's log has been read to its head.
    complete: bool,
    /// When the current page was requested (for the stall check).
    requested_at: u64,
}

/// Catch-up sessions (one per connected peer that sent Hello) and saved cursors.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Ordered, so that the engine's output is deterministic for the same inputs.
    sessions: BTreeMap<PublicKey, Session>,
    /// (epoch, seq) read up to, per peer, kept across connections.
    cursors: HashMap<PublicKey, (u64, u64)>,
}

impl CatchUp {
    /// A saved cursor, at start-up.
    pub fn load_cursor(&mut self, peer: PublicKey, epoch: u64, seq: u64) {
        self.cursors.insert(peer, (epoch, seq));
    }

    /// The peer disconnected (or reconnected): its session ends; its cursor stays.
    pub fn end(&mut self, peer: &PublicKey) {
        self.sessions.remove(peer);
    }

    /// Whether a session with the peer is reading its log.
    pub fn is_catching_up(&self, peer: &PublicKey) -> bool {
        self.sessions.get(peer).is_some_and(|s| !s.complete)
    }

    /// Whether a catch-up page from `peer` waits for alerts (we asked it for some).
    pub fn is_waiting_from(&self, peer: &PublicKey) -> bool {
        self.sessions
            .get(peer)
            .is_some_and(|s| !s.waiting.is_empty())
    }

    /// Whether the current catch-up page from `peer` waits for `id` (we asked for it).
    pub fn is_waiting_for(&self, peer: &PublicKey, id: &AlertId) -> bool {
        self.sessions
            .get(peer)
            .is_some_and(|s| s.waiting.contains(id))
    }

    /// `Hello { epoch, head }` from a connected peer: starts reading its log.
    pub fn on_hello(
        &mut self,
        peer: PublicKey,
        epoch: u64,
        head: u64,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        // Same epoch and not past the peer's head: resume. A cursor past the head means
        // the peer's database was restored from an older backup: its sequence numbers
        // will be reused, so start over (wanting only what is missing is cheap).
        let after = match self.cursors.get(&peer) {
            Some((e, seq)) if *e == epoch && *seq <= head => *seq,
            _ => 0,
        };
        self.sessions.insert(
            peer,
            Session {
                epoch,
                after,
                requested_at: now,
                ..Session::default()
            },
        );
        self.request_page(peer, epoch, after, now, out);
    }

    /// Asks `peer` for the page of its log after `after`, and arms the stall check.
    fn request_page(
        &mut self,
        peer: PublicKey,
        epoch: u64,
        after: u64,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.requested_at = now;
        }
        send(out, peer, Frame::SyncRequest { epoch, after });
        out.push(Action::SetTimer {
            at: now + SYNC_TIMEOUT_MS,
            timer: Timer::Sync(peer),
        });
    }

    /// A `SyncPage` from the peer: wants the ids we lack, and waits for those and for
    /// ids held but not yet committed (the cursor must not pass an alert that is not
    /// durable here).
    #[allow(clippy::too_many_arguments)] // one page's fields, plus where to put actions
    pub fn on_page(
        &mut self,
        peer: PublicKey,
        epoch: u64,
        ids: Vec<AlertId>,
        next: u64,
        done: bool,
        known: &Known,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let wanted: Vec<AlertId> = ids
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        let waiting: HashSet<AlertId> = ids
            .into_iter()
            .filter(|id| !known.contains(id) || known.is_uncommitted(id))
            .collect();
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        if s.epoch != epoch || s.page_next.is_some() {
            return; // stale or unsolicited page
        }
        s.page_next = Some(next);
        s.page_done = done;
        s.waiting = waiting;
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
        self.advance(peer, now, out);
    }

    /// If the current page is complete, saves the cursor and asks for the next page.
    fn advance(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let Some(next) = s.page_next else { return };
        if !s.waiting.is_empty() {
            return;
        }
        let epoch = s.epoch;
        let done = s.page_done;
        s.after = next;
        s.page_next = None;
        s.complete = done;
        self.cursors.insert(peer, (epoch, next));
        out.push(Action::SaveCursor {
            peer,
            epoch,
            seq: next,
        });
        if done {
            out.push(Action::SetTimer {
                at: now + RESYNC_INTERVAL_MS,
                timer: Timer::Resync(peer),
            });
        } else {
            self.request_page(peer, epoch, next, now, out);
        }
    }

    /// An id some page waited for was committed or refused.
    pub fn settle(&mut self, id: &AlertId, now: u64, out: &mut Vec<Action>) {
        let peers: Vec<PublicKey> = self
            .sessions
            .iter_mut()
            .filter_map(|(k, s)| s.waiting.remove(id).then_some(*k))
            .collect();
        for peer in peers {
            self.advance(peer, now, out);
        }
    }

    /// `peer`'s copy of `id` was refused: its page stops waiting for it.
    pub fn refused(&mut self, peer: PublicKey, id: &AlertId, now: u64, out: &mut Vec<Action>) {
        let settled = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.waiting.remove(id));
        if settled {
            self.advance(peer, now, out);
        }
    }

    /// Asks `peer` again from the saved cursor.
    fn restart(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        s.complete = false;
        s.page_next = None;
        s.waiting.clear();
        let (epoch, after) = (s.epoch, s.after);
        self.request_page(peer, epoch, after, now, out);
    }

    /// The stall check: only a page still in progress and older than the timeout has
    /// stalled (lost frame, refused alert); timers of earlier pages are stale.
    pub fn on_stall_timer(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        let stalled = self
            .sessions
            .get(&peer)
            .is_some_and(|s| !s.complete && now >= s.requested_at + SYNC_TIMEOUT_MS);
        if stalled {
            self.restart(peer, now, out);
        }
    }

    /// The periodic re-read: starts another round if the last one completed.
    pub fn on_resync_timer(&mut self, peer: PublicKey, now: u64, out: &mut Vec<Action>) {
        if self.sessions.get(&peer).is_some_and(|s| s.complete) {
            self.restart(peer, now, out);
        }
    }

    /// This part's invariants; `connected` says whether a peer is connected.
    pub fn check_invariants(&self, connected: impl Fn(&PublicKey) -> bool) -> Result<(), String> {
        for (peer, s) in &self.sessions {
            if !connected(peer) {
                return Err(format!(
                    "catch-up session with {} not connected",
                    peer.fmt_short()
                ));
            }
            if s.page_next.is_none() && !s.waiting.is_empty() {
                return Err(format!(
                    "{} waits for {} ids with no page in progress",
                    peer.fmt_short(),
                    s.waiting.len()
                ));
            }
        }
        Ok(())
    }
}
