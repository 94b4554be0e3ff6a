//! Why an inbound frame or alert was not accepted: one closed set of reasons, each with
//! the penalty it costs the peer that sent it.
//!
//! Benign reasons ([`Reason::penalty`] is 0) happen between honest nodes with different
//! configurations or clocks, or under load; they are counted, never penalised. The
//! others mean the sender broke the protocol, and cost points: past the node's
//! `penalty_threshold` the peer is disconnected and refused for a while.

use serde::{Deserialize, Serialize};

/// Penalty points for a frame or envelope that does not decode, or breaks a limit.
pub const PENALTY_MALFORMED: u32 = 10;
/// Penalty points for a signature that does not verify.
pub const PENALTY_BAD_SIGNATURE: u32 = 20;
/// Penalty points for a policy violation: an alert outside its TLP scope, or a hop
/// count no honest node sends.
pub const PENALTY_POLICY: u32 = 20;
/// Penalty points for an update or cancel its signer sent of another origin's alert.
pub const PENALTY_NOT_ORIGIN: u32 = 20;
/// Penalty points per control frame beyond the peer's work budget, and per id a peer
/// announced, was asked for and did not send. Small: an honest peer under load can
/// cost a few; a flood of them reaches the threshold within seconds.
pub const PENALTY_FLOOD: u32 = 1;

/// Why an inbound frame or alert was dropped. Every verdict the engine reaches on
/// input that it does not accept is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// A frame from a peer that is not (or no longer) connected: a race with a
    /// disconnect. Dropped without work.
    NotConnected,
    /// Over the peer's byte or alert budget. Catch-up delivers what was dropped.
    RateLimited,
    /// A full copy of an alert we already hold (drives pruning of the broadcast tree).
    Duplicate,
    /// The sending peer is not in the trust table, or is blocked: a race with a trust
    /// change (the connection is being closed anyway).
    UnknownPeer,
    /// The alert's origin is blocked here; the sender may trust it.
    BlockedOrigin,
    /// A peer we hold at `public` relayed an alert it did not originate: it may hold us
    /// at `member`, a difference of configuration.
    RelayNotAllowed,
    /// The alert has expired: clocks differ and catch-up can be late.
    Expired,
    /// The alert is dated further ahead of this node's clock than `max_clock_skew_secs`:
    /// a wrong clock at its origin (or here). Relays could not have known.
    FutureDated,
    /// A relayed update or cancel of an alert of another origin: the relay could not
    /// have known.
    ForeignReplacement,
    /// A length prefix over `MAX_FRAME_BYTES`: refused before the frame was read.
    OversizedFrame,
    /// A frame that does not decode.
    MalformedFrame,
    /// An `alert` frame whose envelope does not decode or breaks a limit.
    MalformedAlert,
    /// The alert's TLP does not allow it to reach us this way (relayed AMBER or RED, RED
    /// to a non-recipient).
    ScopeViolation,
    /// The hop count is zero, beyond `MAX_HOPS`, or lower than the sender can know.
    HopLimit,
    /// The signature does not verify.
    BadSignature,
    /// An update or cancel its signer sent directly, of an alert of another origin.
    NotOrigin,
    /// A control frame (announce, want, sync request, …) beyond the peer's work budget
    /// (`peer_work_per_sec`): dropped unanswered.
    OverBudget,
    /// The peer announced an id, was asked for it, and did not send it within the graft
    /// timeout: made-up announces fill the table of missing ids.
    Undelivered,
    /// The alert's origin node key was revoked by its agency before the alert was
    /// issued. Relays could not have known.
    RevokedOrigin,
    /// A `revoke` frame whose revocation or certificate does not verify, or whose two
    /// objects do not name the same org and node.
    BadRevocation,
    /// A `receipt` frame that does not verify, is not signed by its sender, or is not
    /// addressed to this node.
    BadReceipt,
    /// A `sighting` frame that does not verify, is not signed by its sender, or names no
    /// alert.
    BadSighting,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 22] = [
        Reason::NotConnected,
        Reason::RateLimited,
        Reason::Duplicate,
        Reason::UnknownPeer,
        Reason::BlockedOrigin,
        Reason::RelayNotAllowed,
        Reason::Expired,
        Reason::FutureDated,
        Reason::ForeignReplacement,
        Reason::OversizedFrame,
        Reason::MalformedFrame,
        Reason::MalformedAlert,
        Reason::ScopeViolation,
        Reason::HopLimit,
        Reason::BadSignature,
        Reason::NotOrigin,
        Reason::OverBudget,
        Reason::Undelivered,
        Reason::RevokedOrigin,
        Reason::BadRevocation,
        Reason::BadReceipt,
        Reason::BadSighting,
    ];

    /// Penalty points this costs the sender; 0 for benign reasons.
    pub fn penalty(self) -> u32 {
        match self {
            Reason::NotConnected
            | Reason::RateLimited
            | Reason::Duplicate
            | Reason::UnknownPeer
            | Reason::BlockedOrigin
            | Reason::RelayNotAllowed
            | Reason::Expired
            | Reason::FutureDated
            | Reason::ForeignReplacement
            | Reason::RevokedOrigin => 0,
            Reason::OversizedFrame | Reason::MalformedFrame | Reason::MalformedAlert => {
                PENALTY_MALFORMED
            }
            Reason::ScopeViolation | Reason::HopLimit => PENALTY_POLICY,
            Reason::BadSignature
            | Reason::BadRevocation
            | Reason::BadReceipt
            | Reason::BadSighting => PENALTY_BAD_SIGNATURE,
            Reason::NotOrigin => PENALTY_NOT_ORIGIN,
            Reason::OverBudget | Reason::Undelivered => PENALTY_FLOOD,
        }
    }

    /// Whether the sender broke the protocol (and is penalised).
    pub fn penalised(self) -> bool {
        self.penalty() > 0
    }

    /// The snake_case name used in metrics, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotConnected => "not_connected",
            Reason::RateLimited => "rate_limited",
            Reason::Duplicate => "duplicate",
            Reason::UnknownPeer => "unknown_peer",
            Reason::BlockedOrigin => "blocked_origin",
            Reason::RelayNotAllowed => "relay_not_allowed",
            Reason::Expired => "expired",
            Reason::FutureDated => "future_dated",
            Reason::ForeignReplacement => "foreign_replacement",
            Reason::OversizedFrame => "oversized_frame",
            Reason::MalformedFrame => "malformed_frame",
            Reason::MalformedAlert => "malformed_alert",
            Reason::ScopeViolation => "scope_violation",
            Reason::HopLimit => "hop_limit",
            Reason::BadSignature => "bad_signature",
            Reason::NotOrigin => "not_origin",
            Reason::OverBudget => "over_budget",
            Reason::Undelivered => "undelivered",
            Reason::RevokedOrigin => "revoked_origin",
            Reason::BadRevocation => "bad_revocation",
            Reason::BadReceipt => "bad_receipt",
            Reason::BadSighting => "bad_sighting",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_serde() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn only_protocol_breaches_cost_points() {
        let penalised: Vec<Reason> = Reason::ALL.into_iter().filter(|r| r.penalised()).collect();
        assert_eq!(
            penalised,
            vec![
                Reason::OversizedFrame,
                Reason::MalformedFrame,
                Reason::MalformedAlert,
                Reason::ScopeViolation,
                Reason::HopLimit,
                Reason::BadSignature,
                Reason::NotOrigin,
                Reason::OverBudget,
                Reason::Undelivered,
                Reason::BadRevocation,
                Reason::BadReceipt,
                Reason::BadSighting,
            ]
        );
    }
}
