//! Reads of stored alerts that one peer asked for (`want`, `want_page`, offers): a few
//! in flight per peer, the next ones queued in order, a flood beyond the queue
//! dropped. Tiny frames can ask for whole pages of alerts; this keeps what the node
//! holds in memory for one peer bounded without losing what an honest peer asked for.

use std::collections::VecDeque;

use tocsin_proto::AlertId;

/// Store reads of alerts one peer asked for in flight at once: each is at most a page.
/// A catch-up keeps `engine::catchup::PIPELINE` pages in flight.
pub const MAX_LOADS_PER_PEER: usize = 4;
/// Ids of stored alerts one peer asked for that wait for a read (about 2 MB of ids).
pub const MAX_WAITING_LOAD_IDS: usize = 65_536;

/// One request: the alerts and the hop count each is sent at.
pub type Request = Vec<(AlertId, u8)>;

/// What to do with a new request.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// Read it now.
    Start(Request),
    /// Queued behind the reads in flight.
    Queued,
    /// Too much is queued already: dropped.
    Dropped,
}

/// One peer's reads ([`Ask`]).
#[derive(Debug, Default)]
pub struct Loads {
    in_flight: usize,
    waiting: VecDeque<Request>,
    waiting_ids: usize,
    /// Counts the peer's trust narrowings while it has reads: a read started before
    /// the last one is not sent (see [`Loads::narrow`]).
    gen: u64,
}

impl Loads {
    /// A new request from the peer.
    pub fn ask(&mut self, alerts: Request) -> Ask {
        if self.in_flight < MAX_LOADS_PER_PEER {
            self.in_flight += 1;
            Ask::Start(alerts)
        } else if self.waiting_ids + alerts.len() <= MAX_WAITING_LOAD_IDS {
            self.waiting_ids += alerts.len();
            self.waiting.push_back(alerts);
            Ask::Queued
        } else {
            Ask::Dropped
        }
    }

    /// A read ended: the next queued request, to read now.
    pub fn done(&mut self) -> Option<Request> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let next = self.waiting.pop_front()?;
        self.waiting_ids = self.waiting_ids.saturating_sub(next.len());
        self.in_flight += 1;
        Some(next)
    }

    /// The peer disconnected: what waits is dropped (reads in flight end unsent).
    pub fn clear_waiting(&mut self) {
        self.waiting.clear();
        self.waiting_ids = 0;
    }

    /// The peer's trust narrowed (a demotion, a removal, a block): what it asked for
    /// was allowed when it asked, not necessarily now. What waits is dropped, and the
    /// reads in flight, started under the old level, are not sent ([`Loads::gen`]).
    pub fn narrow(&mut self) {
        self.clear_waiting();
        self.gen = self.gen.wrapping_add(1);
    }

    /// The number of narrowings so far: a read is sent only if it is unchanged since
    /// the read started.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// Nothing in flight or queued.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tag: u8, n: usize) -> Request {
        vec![(AlertId([tag; 32]), 1); n]
    }

    #[test]
    fn reads_beyond_the_limit_wait_in_order_and_a_flood_is_dropped() {
        let mut l = Loads::default();
        for k in 0..MAX_LOADS_PER_PEER as u8 {
            assert_eq!(l.ask(req(k, 512)), Ask::Start(req(k, 512)));
        }
        // The next ones wait, in order, nothing lost.
        assert_eq!(l.ask(req(10, 512)), Ask::Queued);
        assert_eq!(l.ask(req(11, 512)), Ask::Queued);
        assert_eq!(l.done(), Some(req(10, 512)));
        assert_eq!(l.done(), Some(req(11, 512)));
        assert_eq!(l.done(), None);
        // One read ended with nothing waiting: the next request starts at once.
        assert_eq!(l.ask(req(12, 1)), Ask::Start(req(12, 1)));
        // Beyond what may wait, a request is dropped; room comes back as reads end.
        let mut queued = 0;
        while l.ask(req(20, 1024)) == Ask::Queued {
            queued += 1;
        }
        assert_eq!(queued * 1024, MAX_WAITING_LOAD_IDS);
        assert_eq!(l.ask(req(21, 1)), Ask::Dropped);
        assert_eq!(l.done(), Some(req(20, 1024)));
        assert_eq!(l.ask(req(22, 1024)), Ask::Queued);
        // A disconnect drops what waits; the reads in flight end, then it is idle.
        l.clear_waiting();
        for _ in 0..MAX_LOADS_PER_PEER {
            assert!(!l.is_idle());
            assert_eq!(l.done(), None, "nothing waits after a disconnect");
        }
        assert!(l.is_idle());
    }

    #[test]
    fn a_narrowing_drops_what_waits_and_marks_the_reads_in_flight_stale() {
        let mut l = Loads::default();
        for k in 0..MAX_LOADS_PER_PEER as u8 {
            assert_eq!(l.ask(req(k, 8)), Ask::Start(req(k, 8)));
        }
        assert_eq!(l.ask(req(9, 8)), Ask::Queued);
        let started = l.gen();
        l.narrow();
        assert_ne!(l.gen(), started, "reads started before are stale");
        for _ in 0..MAX_LOADS_PER_PEER {
            assert_eq!(l.done(), None, "what waited was dropped");
        }
        assert!(l.is_idle());
        // Asked after the narrowing: read and sent under the new level.
        let now = l.gen();
        assert_eq!(l.ask(req(10, 8)), Ask::Start(req(10, 8)));
        assert_eq!(l.gen(), now);
    }
}
