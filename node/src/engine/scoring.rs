//! Peers' trust levels and scores: the trust table the engine decides by, the counters
//! kept per peer across reconnections, the per-peer rate limits, and the penalty score
//! that bans a peer sending invalid data.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tocsin_proto::policy::TrustLevel;
use tocsin_proto::{PublicKey, Reason};

use super::{EngineConfig, PENALTY_DECAY_PER_SEC};

/// Counters per peer, kept across reconnections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Alerts accepted from this peer.
    pub alerts_in: u64,
    /// Full alerts sent to this peer.
    pub alerts_out: u64,
    /// Frame bytes received from this peer.
    pub bytes_in: u64,
    /// Duplicate full alerts received (benign; drives pruning).
    pub duplicates: u64,
    /// Frames or alerts dropped by the rate limits.
    pub rate_limited: u64,
    /// Rejections by reason.
    pub rejections: BTreeMap<&'static str, u64>,
    /// Current penalty score (decays over time).
    pub penalty: u32,
    /// Refused until this time (ms), after crossing the penalty threshold.
    pub banned_until: Option<u64>,
    #[serde(skip)]
    penalty_at: u64,
    #[serde(skip)]
    alert_bucket: Bucket,
    /// Sightings (see [`Scoring::take_sighting`]), apart from alerts.
    #[serde(skip)]
    sighting_bucket: Bucket,
    /// Shares of the sighting bucket per observer this peer relays.
    #[serde(skip)]
    sighting_relayed: HashMap<PublicKey, (Bucket, u64)>,
    #[serde(skip)]
    byte_bucket: Bucket,
    #[serde(skip)]
    work_bucket: Bucket,
    /// Until when reading from this peer is paused (ms), once asked.
    #[serde(skip)]
    read_paused_until: u64,
    /// The highest entry of our log shown to this peer in a catch-up page (`sync_page`,
    /// `want_page`), kept across reconnections: a page below it is a repeat, paid at
    /// the repeat rates ([`super::WORK_REPEAT_ENTRY`], [`super::WORK_REPEAT_ALERT`]).
    #[serde(skip)]
    pub(super) shown_upto: u64,
    /// When a frame or alert of this peer was last dropped by a rate limit (ms).
    #[serde(skip)]
    limited_at: u64,
    /// Shares of the alert bucket per origin this peer relays (not its own alerts),
    /// with when each was last used; at most [`MAX_RELAYED_ORIGINS`].
    #[serde(skip)]
    relayed: HashMap<PublicKey, (Bucket, u64)>,
}

/// Origins whose relayed alerts are tracked per peer, for their share of its alert
/// bucket. The least recently used is forgotten beyond this (it starts afresh).
pub const MAX_RELAYED_ORIGINS: usize = 256;

/// The share of a peer's alert rate and burst that alerts of any one origin it relays
/// may use. The rest stays for the other origins it relays: a flood of valid alerts
/// from one origin, relayed at that origin's full rate, cannot crowd out another's.
/// A peer's own alerts may use the whole bucket.
pub const RELAYED_ORIGIN_SHARE: f64 = 0.5;

/// Takes one token from `bucket` for an item of `origin` from `peer`: the peer's own
/// items may use the whole bucket, another origin's at most [`RELAYED_ORIGIN_SHARE`] of
/// it (tracked in `shares`, at most [`MAX_RELAYED_ORIGINS`], least recently used first
/// out).
fn take_shared(
    (bucket, shares): (&mut Bucket, &mut HashMap<PublicKey, (Bucket, u64)>),
    (peer, origin): (PublicKey, PublicKey),
    (rate, burst): (f64, f64),
    now: u64,
) -> bool {
    bucket.refill(now, rate, burst);
    let mut ok = bucket.tokens >= 1.0;
    if ok && origin != peer {
        let (r, b) = (rate * RELAYED_ORIGIN_SHARE, burst * RELAYED_ORIGIN_SHARE);
        let (share, last) = shares.entry(origin).or_default();
        *last = now;
        ok = share.take(now, r, b, 1.0);
        if shares.len() > MAX_RELAYED_ORIGINS {
            if let Some(oldest) = shares
                .iter()
                .filter(|(o, _)| **o != origin)
                .min_by_key(|(_, (_, last))| *last)
                .map(|(o, _)| *o)
            {
                shares.remove(&oldest);
            }
        }
    }
    if ok {
        bucket.tokens -= 1.0;
    }
    ok
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    tokens: f64,
    at: u64,
    primed: bool,
}

impl Bucket {
    fn refill(&mut self, now: u64, rate: f64, burst: f64) {
        if !self.primed {
            self.tokens = burst;
            self.at = now;
            self.primed = true;
        }
        let elapsed = now.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    fn take(&mut self, now: u64, rate: f64, burst: f64, n: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The settings this part uses (from [`EngineConfig`]).
#[derive(Debug, Clone)]
struct Limits {
    alerts_per_sec: f64,
    alert_burst: f64,
    bytes_per_sec: f64,
    byte_burst: f64,
    work_per_sec: f64,
    work_burst: f64,
    penalty_threshold: u32,
    ban_ms: u64,
}

/// Trust levels, counters, rate limits and penalties.
#[derive(Debug)]
pub struct Scoring {
    trust: HashMap<PublicKey, TrustLevel>,
    stats: HashMap<PublicKey, PeerStats>,
    limits: Limits,
}

impl Scoring {
    pub fn new(cfg: &EngineConfig) -> Scoring {
        Scoring {
            trust: HashMap::new(),
            stats: HashMap::new(),
            limits: Limits {
                alerts_per_sec: f64::from(cfg.peer_alerts_per_sec),
                alert_burst: f64::from(cfg.peer_alert_burst),
                bytes_per_sec: cfg.peer_bytes_per_sec as f64,
                byte_burst: cfg.peer_byte_burst as f64,
                work_per_sec: cfg.peer_work_per_sec as f64,
                work_burst: cfg.peer_work_burst as f64,
                penalty_threshold: cfg.penalty_threshold,
                ban_ms: cfg.ban_secs.saturating_mul(1000),
            },
        }
    }

    /// The trust level of a key.
    pub fn level(&self, key: &PublicKey) -> Option<TrustLevel> {
        self.trust.get(key).copied()
    }

    /// Sets (or, with `None`, removes) a key's trust level.
    pub fn set_level(&mut self, key: PublicKey, level: Option<TrustLevel>) {
        match level {
            Some(l) => self.trust.insert(key, l),
            None => self.trust.remove(&key),
        };
    }

    /// Whether a peer may connect now (trusted, not banned).
    pub fn is_banned(&self, key: &PublicKey, now: u64) -> bool {
        self.stats
            .get(key)
            .and_then(|s| s.banned_until)
            .is_some_and(|u| u > now)
    }

    pub fn may_connect(&self, key: &PublicKey, now: u64) -> bool {
        TrustLevel::may_connect(self.level(key))
            && self
                .stats
                .get(key)
                .and_then(|s| s.banned_until)
                .is_none_or(|u| u <= now)
    }

    pub fn stats(&self, peer: &PublicKey) -> Option<&PeerStats> {
        self.stats.get(peer)
    }

    pub fn stats_mut(&mut self, peer: PublicKey) -> &mut PeerStats {
        self.stats.entry(peer).or_default()
    }

    /// Every key that is trusted or has counters, sorted.
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self
            .trust
            .keys()
            .chain(self.stats.keys())
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Counts a frame's bytes; false (counted as rate-limited) when the peer's byte
    /// bucket is empty.
    pub fn take_bytes(&mut self, peer: PublicKey, n: usize, now: u64) -> bool {
        let (rate, burst) = (self.limits.bytes_per_sec, self.limits.byte_burst);
        let s = self.stats_mut(peer);
        s.bytes_in += n as u64;
        let ok = s.byte_bucket.take(now, rate, burst, n as f64);
        if !ok {
            s.rate_limited += 1;
            s.limited_at = now;
        }
        ok
    }

    /// Whether the peer has work budget left for a control frame; false (counted as
    /// rate-limited) when its work bucket is spent. The frame's cost is charged after
    /// it is handled ([`Scoring::charge_work`]), when it is known.
    pub fn has_work(&mut self, peer: PublicKey, now: u64) -> bool {
        let (rate, burst) = (self.limits.work_per_sec, self.limits.work_burst);
        let s = self.stats_mut(peer);
        s.work_bucket.refill(now, rate, burst);
        let ok = s.work_bucket.tokens > 0.0;
        if !ok {
            s.rate_limited += 1;
            s.limited_at = now;
        }
        ok
    }

    /// Charges a handled control frame's cost to the peer's work bucket (it may go into
    /// debt: the next frames wait until it is repaid).
    pub fn charge_work(&mut self, peer: PublicKey, cost: u64) {
        self.stats_mut(peer).work_bucket.tokens -= cost as f64;
    }

    /// When reading from a peer over its limits may resume: once its byte bucket holds
    /// `bytes` again, or (with `bytes` 0) its alert bucket one alert. `None` when a pause
    /// asked for earlier still runs (ask once per pause).
    pub fn read_pause(&mut self, peer: PublicKey, bytes: usize, now: u64) -> Option<u64> {
        let l = self.limits.clone();
        let s = self.stats_mut(peer);
        if s.read_paused_until > now {
            return None;
        }
        let wait_secs = if bytes > 0 {
            (bytes as f64 - s.byte_bucket.tokens).max(0.0) / l.bytes_per_sec
        } else {
            (1.0 - s.alert_bucket.tokens).max(0.0) / l.alerts_per_sec
        };
        // At least a millisecond, at most a second: a pause is cheap to renew.
        let until = now + ((wait_secs * 1000.0).ceil() as u64).clamp(1, 1000);
        s.read_paused_until = until;
        Some(until)
    }

    /// Counts a frame of the peer dropped by a rate limit.
    pub fn limited(&mut self, peer: PublicKey, now: u64) {
        let s = self.stats_mut(peer);
        s.rate_limited += 1;
        s.limited_at = now;
    }

    /// Whether a rate limit dropped something of the peer's at or after `since`, or
    /// reading it was paused then: what it was asked for may have been dropped here, so
    /// its not arriving is not the peer's fault.
    pub fn limited_since(&self, peer: &PublicKey, since: u64) -> bool {
        self.stats
            .get(peer)
            .is_some_and(|s| s.limited_at >= since || s.read_paused_until >= since)
    }

    /// Whether the peer's alert bucket is empty now (its next unsolicited alert would
    /// be refused whatever its origin).
    pub fn alerts_exhausted(&mut self, peer: PublicKey, now: u64) -> bool {
        let (rate, burst) = (self.limits.alerts_per_sec, self.limits.alert_burst);
        let s = self.stats_mut(peer);
        s.alert_bucket.refill(now, rate, burst);
        s.alert_bucket.tokens < 1.0
    }

    /// Takes one alert of `origin` from the peer's alert bucket; false (counted as
    /// rate-limited) when the bucket is empty, or when the peer relays `origin` and that
    /// origin has used its share ([`RELAYED_ORIGIN_SHARE`]) of the bucket.
    pub fn take_alert(&mut self, peer: PublicKey, origin: PublicKey, now: u64) -> bool {
        let (rate, burst) = (self.limits.alerts_per_sec, self.limits.alert_burst);
        let s = self.stats_mut(peer);
        let ok = take_shared(
            (&mut s.alert_bucket, &mut s.relayed),
            (peer, origin),
            (rate, burst),
            now,
        );
        if !ok {
            s.rate_limited += 1;
            s.limited_at = now;
        }
        ok
    }

    /// Takes one sighting of `observer` from the peer's sighting bucket, apart from its
    /// alerts, at a tenth of its alert rate and burst (each is a durable write here and
    /// is passed on); another observer's sighting it relays may use at most
    /// [`RELAYED_ORIGIN_SHARE`] of it, so one observer's flood leaves room for the
    /// others. False (counted as rate-limited) when spent.
    pub fn take_sighting(&mut self, peer: PublicKey, observer: PublicKey, now: u64) -> bool {
        let (rate, burst) = (
            self.limits.alerts_per_sec / 10.0,
            self.limits.alert_burst / 10.0,
        );
        let s = self.stats_mut(peer);
        let ok = take_shared(
            (&mut s.sighting_bucket, &mut s.sighting_relayed),
            (peer, observer),
            (rate, burst),
            now,
        );
        if !ok {
            s.rate_limited += 1;
            s.limited_at = now;
        }
        ok
    }

    /// Counts a refusal and adds its penalty. Returns the end of the ban when this
    /// refusal takes the peer past the threshold.
    pub fn judge(&mut self, peer: PublicKey, reason: Reason, now: u64) -> Option<u64> {
        let (threshold, ban_ms) = (self.limits.penalty_threshold, self.limits.ban_ms);
        let s = self.stats_mut(peer);
        *s.rejections.entry(reason.as_str()).or_default() += 1;
        if !reason.penalised() {
            return None;
        }
        let decay = (now.saturating_sub(s.penalty_at) / 1000) as u32 * PENALTY_DECAY_PER_SEC;
        s.penalty = s
            .penalty
            .saturating_sub(decay)
            .saturating_add(reason.penalty());
        s.penalty_at = now;
        if s.penalty < threshold {
            return None;
        }
        let until = now + ban_ms;
        s.banned_until = Some(until);
        s.penalty = 0;
        Some(until)
    }

    /// This part's invariants: a penalty is always below the threshold (reaching it
    /// bans and resets).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (k, s) in &self.stats {
            if s.penalty >= self.limits.penalty_threshold {
                return Err(format!(
                    "peer {} holds penalty {} at or over the threshold",
                    k.fmt_short(),
                    s.penalty
                ));
            }
        }
        Ok(())
    }
}
