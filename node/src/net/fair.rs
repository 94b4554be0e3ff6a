//! A bounded queue of frames for one peer, served fairly across lanes.
//!
//! Frames to a peer are queued in lanes: one per alert origin, and one for control
//! frames (announces, wants, catch-up). The writer takes one frame from each lane in
//! turn (round robin), so a flood of valid alerts from one origin, which this node
//! accepted within that origin's rate limit and must relay, never sits in front of
//! another origin's alert: an honest alert waits for at most one frame per busy lane.
//! Within a lane the order is kept (an update after the alert it updates).
//!
//! The queue holds at most `cap` frames. When it is full, the longest lane pays: the
//! newest frame of the longest lane is dropped (and counted) to make room, so a flood
//! cannot push the other lanes' frames out. Catch-up repairs what was dropped.

use std::collections::{HashMap, VecDeque};

/// The lane of control frames (everything but alert bodies).
pub const CONTROL_LANE: u64 = u64::MAX;

/// The lane of an alert of this origin.
pub fn origin_lane(origin: &tocsin_proto::PublicKey) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&origin.0[..8]);
    // Never the control lane.
    u64::from_be_bytes(b).min(CONTROL_LANE - 1)
}

/// See the module docs.
#[derive(Debug)]
pub struct FairQueue {
    /// Frames per lane, oldest first, each with its sequence number.
    lanes: HashMap<u64, VecDeque<(u64, Vec<u8>)>>,
    /// Lanes with frames, in the order they are served.
    ring: VecDeque<u64>,
    len: usize,
    cap: usize,
    next_seq: u64,
}

impl FairQueue {
    /// An empty queue holding at most `cap` frames (at least one).
    pub fn new(cap: usize) -> FairQueue {
        FairQueue {
            lanes: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
            cap: cap.max(1),
            next_seq: 0,
        }
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence number the next frame will get: a flush asked for now waits until
    /// every frame numbered below it has been taken.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The lowest sequence number still queued (`None`: empty).
    pub fn oldest(&self) -> Option<u64> {
        self.lanes
            .values()
            .filter_map(|l| l.front().map(|(seq, _)| *seq))
            .min()
    }

    /// Queues `frame` in `lane`. Returns false when a frame was dropped to keep the
    /// queue within its cap: the newest of the longest lane, which may be this one.
    pub fn push(&mut self, lane: u64, frame: Vec<u8>) -> bool {
        let mut kept = true;
        if self.len >= self.cap {
            let mine = self.lanes.get(&lane).map_or(0, VecDeque::len);
            let longest = self
                .lanes
                .iter()
                .map(|(l, q)| (q.len(), *l))
                .max()
                .filter(|(n, _)| *n > mine);
            match longest {
                Some((_, victim)) => {
                    if let Some(q) = self.lanes.get_mut(&victim) {
                        q.pop_back();
                        self.len -= 1;
                        if q.is_empty() {
                            self.lanes.remove(&victim);
                            self.ring.retain(|l| *l != victim);
                        }
                    }
                    kept = false;
                }
                // This lane is the longest: the new frame is the one dropped.
                None => return false,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let q = self.lanes.entry(lane).or_default();
        if q.is_empty() {
            self.ring.push_back(lane);
        }
        q.push_back((seq, frame));
        self.len += 1;
        kept
    }

    /// The next frame: the oldest of the lane whose turn it is.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        while let Some(lane) = self.ring.pop_front() {
            let Some(q) = self.lanes.get_mut(&lane) else {
                continue;
            };
            let Some((_, frame)) = q.pop_front() else {
                self.lanes.remove(&lane);
                continue;
            };
            self.len -= 1;
            if q.is_empty() {
                self.lanes.remove(&lane);
            } else {
                self.ring.push_back(lane);
            }
            return Some(frame);
        }
        None
    }

    /// Drops every frame but those of `keep`'s lane (the alerts queued for a peer whose
    /// trust narrowed: what they were sent under no longer holds). Returns how many
    /// were dropped.
    pub fn keep_only(&mut self, keep: u64) -> usize {
        let before = self.len;
        self.lanes.retain(|lane, _| *lane == keep);
        self.ring.retain(|lane| *lane == keep);
        self.len = self.lanes.values().map(VecDeque::len).sum();
        before - self.len
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.lanes.clear();
        self.ring.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_only_drops_every_other_lane_and_serves_the_rest_in_order() {
        let mut q = FairQueue::new(100);
        for n in 0..3u8 {
            assert!(q.push(1, vec![n]));
            assert!(q.push(CONTROL_LANE, vec![10 + n]));
            assert!(q.push(2, vec![20 + n]));
        }
        assert_eq!(q.keep_only(CONTROL_LANE), 6);
        assert_eq!(q.len(), 3);
        let served: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(served, vec![vec![10], vec![11], vec![12]]);
        assert!(q.is_empty());
    }

    fn frame(lane: u64, n: u32) -> Vec<u8> {
        let mut v = lane.to_be_bytes().to_vec();
        v.extend_from_slice(&n.to_be_bytes());
        v
    }

    fn lane_of(f: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&f[..8]);
        u64::from_be_bytes(b)
    }

    #[test]
    fn a_frame_behind_a_flood_of_another_lane_goes_out_next() {
        let mut q = FairQueue::new(4096);
        for n in 0..1000 {
            assert!(q.push(1, frame(1, n)));
        }
        q.push(2, frame(2, 0));
        q.push(CONTROL_LANE, frame(CONTROL_LANE, 0));
        let first: Vec<u64> = (0..3).map(|_| lane_of(&q.pop().unwrap())).collect();
        assert_eq!(first, vec![1, 2, CONTROL_LANE]);
        // The flood's own order is kept.
        let mut last = 0;
        while let Some(f) = q.pop() {
            let n = u32::from_be_bytes(f[8..12].try_into().unwrap());
            assert!(n > last);
            last = n;
        }
        assert_eq!(last, 999);
        assert!(q.is_empty());
    }

    #[test]
    fn when_full_the_longest_lane_loses_its_newest_frame() {
        let mut q = FairQueue::new(10);
        for n in 0..10 {
            assert!(q.push(1, frame(1, n)));
        }
        // Full: the flood lane's own frame is refused...
        assert!(!q.push(1, frame(1, 10)));
        // ...and another lane's frame takes the place of the flood's newest.
        assert!(!q.push(2, frame(2, 0)));
        assert_eq!(q.len(), 10);
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop()).collect();
        assert!(out.contains(&frame(2, 0)));
        assert!(!out.contains(&frame(1, 9)) && !out.contains(&frame(1, 10)));
        assert!(out.contains(&frame(1, 8)));
    }

    #[test]
    fn oldest_tracks_what_is_still_queued_across_lanes() {
        let mut q = FairQueue::new(100);
        assert_eq!(q.oldest(), None);
        q.push(1, frame(1, 0)); // seq 0
        q.push(1, frame(1, 1)); // seq 1
        q.push(2, frame(2, 0)); // seq 2
        assert_eq!(q.next_seq(), 3);
        q.pop(); // lane 1, seq 0
        assert_eq!(q.oldest(), Some(1));
        q.pop(); // lane 2, seq 2
        assert_eq!(q.oldest(), Some(1));
        q.pop();
        assert_eq!(q.oldest(), None);
    }
}
