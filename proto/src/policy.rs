//! The trust and TLP rules as pure functions.
//!
//! | level | connection | we send it | we accept from it |
//! |---|---|---|---|
//! | `blocked` | refused | nothing | nothing; alerts it *originated* are dropped even when relayed |
//! | `public` | allowed | CLEAR | alerts it originated |
//! | `member` | allowed | CLEAR, GREEN | its own, and relays from origins that are not blocked |
//! | `partner` | allowed | all TLPs (RED only when a recipient) | as `member` |
//!
//! TLP scope: CLEAR travels to any depth within [`MAX_HOPS`]; GREEN only among
//! `member`/`partner` links; AMBER and AMBER+STRICT go from the origin to its partners
//! and are never relayed; RED goes from the origin only to named recipients that are
//! its direct partners, and is never relayed.
//!
//! Unknown peers (no entry) are treated as refused: they cannot connect, so nothing is
//! sent to them or accepted from them.
//!
//! These functions take node keys. The engine maps agencies onto them: a RED alert that
//! names an org key is checked as if it named each node of that org it knows.

use serde::{Deserialize, Serialize};

use crate::alert::Tlp;
use crate::ids::PublicKey;
use crate::limits::MAX_HOPS;
use crate::verdict::Reason;

/// How much a peer is trusted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    Blocked,
    Public,
    Member,
    Partner,
}

impl TrustLevel {
    /// All levels, least trusted first.
    pub const ALL: [TrustLevel; 4] = [
        TrustLevel::Blocked,
        TrustLevel::Public,
        TrustLevel::Member,
        TrustLevel::Partner,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Blocked => "blocked",
            TrustLevel::Public => "public",
            TrustLevel::Member => "member",
            TrustLevel::Partner => "partner",
        }
    }

    /// Whether a connection with a peer at this level is allowed at all.
    pub fn may_connect(level: Option<TrustLevel>) -> bool {
        matches!(
            level,
            Some(TrustLevel::Public | TrustLevel::Member | TrustLevel::Partner)
        )
    }
}

impl std::fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TrustLevel {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        TrustLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::Error::invalid(
                    "level",
                    format!("{s:?} is not one of blocked, public, member, partner"),
                )
            })
    }
}

/// The parts of an alert that decide where it may go.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub origin: &'a PublicKey,
    pub tlp: Tlp,
    pub recipients: &'a [PublicKey],
}

/// May we accept `scope` from `sender` (at `sender_level`), having travelled `hops`
/// hops, when the origin's level here is `origin_level` and we are `me`?
pub fn check_inbound(
    me: &PublicKey,
    sender: &PublicKey,
    sender_level: Option<TrustLevel>,
    origin_level: Option<TrustLevel>,
    scope: Scope<'_>,
    hops: u8,
) -> Result<(), Reason> {
    if !TrustLevel::may_connect(sender_level) {
        return Err(Reason::UnknownPeer);
    }
    if origin_level == Some(TrustLevel::Blocked) {
        return Err(Reason::BlockedOrigin);
    }
    check_hops(sender, scope.origin, hops)?;
    let direct = sender == scope.origin;
    if direct {
        // The origin decides whom it sends to; only RED is bound to named recipients.
        if scope.tlp == Tlp::Red && !scope.recipients.contains(me) {
            return Err(Reason::ScopeViolation);
        }
        return Ok(());
    }
    if sender_level == Some(TrustLevel::Public) {
        return Err(Reason::RelayNotAllowed);
    }
    match scope.tlp {
        Tlp::Clear | Tlp::Green => Ok(()),
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => Err(Reason::ScopeViolation),
    }
}

/// May a peer at `peer_level` be given back an alert that it originated? Always, on
/// its request (a catch-up page, a want), whatever the TLP, as long as it may connect:
/// it wrote the alert, so nothing widens its audience, and a node that lost its disk,
/// or was killed between gossip and commit, gets its own alerts back this way. Never
/// pushed unasked.
pub fn may_return(peer: &PublicKey, peer_level: Option<TrustLevel>, scope: Scope<'_>) -> bool {
    TrustLevel::may_connect(peer_level) && peer == scope.origin
}

/// Checks an alert of ours (`scope.origin` is `me`) that `sender` gives back because we
/// asked for it: the sender may connect and its hop count is honest. The TLP scope
/// does not apply ([`may_return`]).
pub fn check_returned(
    me: &PublicKey,
    sender: &PublicKey,
    sender_level: Option<TrustLevel>,
    scope: Scope<'_>,
    hops: u8,
) -> Result<(), Reason> {
    if !TrustLevel::may_connect(sender_level) {
        return Err(Reason::UnknownPeer);
    }
    if scope.origin != me {
        return Err(Reason::ScopeViolation);
    }
    check_hops(sender, scope.origin, hops)
}

/// Is `hops` a hop count `sender` could honestly give an alert of `origin`? It is in
/// `1..=MAX_HOPS`, and it is 1 exactly when the sender is the origin (every relay adds
/// one to the count it holds, which is at least 1). Checked on every alert frame,
/// duplicates included, so that a peer cannot lower the count a node holds.
pub fn check_hops(sender: &PublicKey, origin: &PublicKey, hops: u8) -> Result<(), Reason> {
    if hops == 0 || hops > MAX_HOPS || (hops == 1) != (sender == origin) {
        return Err(Reason::HopLimit);
    }
    Ok(())
}

/// May we send `scope` to `peer` (at `peer_level`), when we hold it at `hops` hops from
/// its origin (0 when we are the origin)?
///
/// The caller also never sends an alert back to the peer it came from, and never sends
/// an expired alert.
pub fn may_send(
    me: &PublicKey,
    peer: &PublicKey,
    peer_level: Option<TrustLevel>,
    scope: Scope<'_>,
    hops: u8,
) -> bool {
    if !TrustLevel::may_connect(peer_level) || peer == scope.origin {
        return false;
    }
    let community = matches!(peer_level, Some(TrustLevel::Member | TrustLevel::Partner));
    let partner = peer_level == Some(TrustLevel::Partner);
    if scope.origin == me {
        return match scope.tlp {
            Tlp::Clear => true,
            Tlp::Green => community,
            Tlp::Amber | Tlp::AmberStrict => partner,
            Tlp::Red => partner && scope.recipients.contains(peer),
        };
    }
    if hops >= MAX_HOPS {
        return false;
    }
    match scope.tlp {
        Tlp::Clear => true,
        Tlp::Green => community,
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => false,
    }
}
