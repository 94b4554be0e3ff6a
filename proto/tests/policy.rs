//! The trust/TLP policy, tested exhaustively over every combination of peer level ×
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TLP × origin (us, the peer, a third party known at each level, unknown) × direct or
//! relayed × recipient or not × hop count. The expectations are written from
//! DESIGN.md's tables, as sets, independently of the implementation's control flow.

mod common;

use common::*;
use tocsin_proto::limits::MAX_HOPS;
use tocsin_proto::policy::{
    check_inbound, check_returned, may_return, may_send, Scope, TrustLevel,
};
use tocsin_proto::verdict::Reason as Rejection;
use tocsin_proto::{PublicKey, Tlp};

use TrustLevel::*;

const LEVELS: [Option<TrustLevel>; 5] = [
    None,
    Some(Blocked),
    Some(Public),
    Some(Member),
    Some(Partner),
];

/// DESIGN.md "we send it": which levels may receive each TLP from its origin.
fn origin_sends_to(tlp: Tlp) -> &'static [TrustLevel] {
    match tlp {
        Tlp::Clear => &[Public, Member, Partner],
        Tlp::Green => &[Member, Partner],
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => &[Partner],
    }
}

/// TLP scope for relays: only CLEAR (to anyone) and GREEN (community) travel on.
fn relay_sends_to(tlp: Tlp) -> &'static [TrustLevel] {
    match tlp {
        Tlp::Clear => &[Public, Member, Partner],
        Tlp::Green => &[Member, Partner],
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => &[],
    }
}

#[derive(Clone, Copy, Debug)]
enum Origin {
    Me,
    ThePeer,
    Third(Option<TrustLevel>),
}

fn origins() -> Vec<Origin> {
    let mut v = vec![Origin::Me, Origin::ThePeer];
    v.extend(LEVELS.iter().map(|l| Origin::Third(*l)));
    v
}

#[test]
fn may_send_matches_design_for_every_combination() {
    let me = pk(&key_n(1));
    let peer = pk(&key_n(2));
    let third = pk(&key_n(3));
    let mut checked = 0;
    for level in LEVELS {
        for tlp in Tlp::ALL {
            for origin in origins() {
                for recipient in [false, true] {
                    for hops in [0u8, 1, MAX_HOPS - 1, MAX_HOPS] {
                        let origin_key: PublicKey = match origin {
                            Origin::Me => me,
                            Origin::ThePeer => peer,
                            Origin::Third(_) => third,
                        };
                        if matches!(origin, Origin::Me) != (hops == 0) {
                            continue; // we hold our own alerts at hop 0, others' at ≥ 1
                        }
                        let recipients = if recipient { vec![peer] } else { vec![third] };
                        let scope = Scope {
                            origin: &origin_key,
                            tlp,
                            recipients: &recipients,
                        };
                        let got = may_send(&me, &peer, level, scope, hops);
                        let want = match (level, origin) {
                            (None | Some(Blocked), _) => false,
                            (_, Origin::ThePeer) => false, // never back to the origin
                            (Some(l), Origin::Me) => {
                                origin_sends_to(tlp).contains(&l) && (tlp != Tlp::Red || recipient)
                            }
                            (Some(l), Origin::Third(_)) => {
                                hops < MAX_HOPS && relay_sends_to(tlp).contains(&l)
                            }
                        };
                        assert_eq!(
                            got, want,
                            "may_send level={level:?} tlp={tlp:?} origin={origin:?} recipient={recipient} hops={hops}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} combinations checked");
}

#[test]
fn check_inbound_matches_design_for_every_combination() {
    let me = pk(&key_n(1));
    let sender = pk(&key_n(2));
    let third = pk(&key_n(3));
    let mut checked = 0;
    for sender_level in LEVELS {
        for tlp in Tlp::ALL {
            for origin in [
                Origin::ThePeer,
                Origin::Third(None),
                Origin::Third(Some(Blocked)),
                Origin::Third(Some(Public)),
                Origin::Third(Some(Member)),
                Origin::Third(Some(Partner)),
            ] {
                for recipient in [false, true] {
                    for hops in [0u8, 1, 2, MAX_HOPS, MAX_HOPS + 1] {
                        let (origin_key, origin_level) = match origin {
                            Origin::ThePeer => (sender, sender_level),
                            Origin::Third(l) => (third, l),
                            Origin::Me => unreachable!(),
                        };
                        let recipients = if recipient { vec![me] } else { vec![third] };
                        let scope = Scope {
                            origin: &origin_key,
                            tlp,
                            recipients: &recipients,
                        };
                        let got =
                            check_inbound(&me, &sender, sender_level, origin_level, scope, hops);
                        let direct = matches!(origin, Origin::ThePeer);
                        let want: Result<(), Rejection> =
                            if matches!(sender_level, None | Some(Blocked)) {
                                Err(Rejection::UnknownPeer)
                            } else if origin_level == Some(Blocked) {
                                Err(Rejection::BlockedOrigin)
                            } else if hops == 0 || hops > MAX_HOPS || (hops == 1) != direct {
                                // 1 hop exactly when the sender is the origin: a relay
                                // adds one to the count it holds (at least 1).
                                Err(Rejection::HopLimit)
                            } else if direct {
                                // "we accept from it: alerts it originated" at every level;
                                // RED only reaches named recipients.
                                if tlp == Tlp::Red && !recipient {
                                    Err(Rejection::ScopeViolation)
                                } else {
                                    Ok(())
                                }
                            } else if sender_level == Some(Public) {
                                Err(Rejection::RelayNotAllowed)
                            } else if [Tlp::Clear, Tlp::Green].contains(&tlp) {
                                Ok(())
                            } else {
                                Err(Rejection::ScopeViolation)
                            };
                        assert_eq!(
                            got, want,
                            "check_inbound sender_level={sender_level:?} tlp={tlp:?} origin={origin:?} recipient={recipient} hops={hops}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} combinations checked");
}

/// End to end over a chain: whatever is accepted and relayed, AMBER and RED never get
/// past the first hop, and GREEN never reaches a public peer.
#[test]
fn only_the_origin_is_given_its_own_alert_back_and_only_while_it_may_connect() {
    let me = pk(&key_n(1));
    let peer = pk(&key_n(2));
    let third = pk(&key_n(3));
    for tlp in Tlp::ALL {
        for level in LEVELS {
            for origin in [peer, me, third] {
                let recipients = vec![peer];
                let scope = Scope {
                    origin: &origin,
                    tlp,
                    recipients: &recipients,
                };
                let want = origin == peer && matches!(level, Some(Public | Member | Partner));
                assert_eq!(
                    may_return(&peer, level, scope),
                    want,
                    "{tlp:?} {level:?} origin is peer: {}",
                    origin == peer
                );
            }
        }
    }
    // Receiving one of our own alerts back: from a relay (hops >= 2) whatever its TLP,
    // never one of another origin, never with a lying hop count, never from a peer that
    // may not connect.
    for tlp in Tlp::ALL {
        let mine = Scope {
            origin: &me,
            tlp,
            recipients: &[],
        };
        let theirs = Scope {
            origin: &third,
            tlp,
            recipients: &[],
        };
        assert_eq!(check_returned(&me, &peer, Some(Public), mine, 2), Ok(()));
        assert_eq!(
            check_returned(&me, &peer, Some(Partner), mine, MAX_HOPS),
            Ok(())
        );
        assert_eq!(
            check_returned(&me, &peer, Some(Member), mine, 1),
            Err(Rejection::HopLimit)
        );
        assert_eq!(
            check_returned(&me, &peer, Some(Member), theirs, 2),
            Err(Rejection::ScopeViolation)
        );
        for level in [None, Some(Blocked)] {
            assert_eq!(
                check_returned(&me, &peer, level, mine, 2),
                Err(Rejection::UnknownPeer)
            );
        }
    }
}

#[test]
fn scope_never_widens_along_a_chain() {
    let keys: Vec<PublicKey> = (1..=4).map(|n| pk(&key_n(n))).collect();
    for tlp in Tlp::ALL {
        for levels in itertools_product() {
            // keys[0] originates; keys[i] trusts keys[i+1] at levels[i] (symmetric).
            let recipients = vec![keys[1], keys[2], keys[3]];
            let scope = Scope {
                origin: &keys[0],
                tlp,
                recipients: &recipients,
            };
            let mut holder = 0usize;
            let mut hops = 0u8;
            while holder + 1 < keys.len() {
                let next = holder + 1;
                let level = Some(levels[holder]);
                if !may_send(&keys[holder], &keys[next], level, scope, hops) {
                    break;
                }
                if check_inbound(&keys[next], &keys[holder], level, None, scope, hops + 1).is_err()
                {
                    break;
                }
                holder = next;
                hops += 1;
                if tlp == Tlp::Green {
                    assert_ne!(levels[holder - 1], Public, "GREEN reached a public peer");
                }
            }
            if matches!(tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red) {
                assert!(
                    holder <= 1,
                    "{tlp:?} travelled {holder} hops with {levels:?}"
                );
            }
        }
    }
}

fn itertools_product() -> Vec<[TrustLevel; 3]> {
    let mut out = Vec::new();
    for a in TrustLevel::ALL {
        for b in TrustLevel::ALL {
            for c in TrustLevel::ALL {
                out.push([a, b, c]);
            }
        }
    }
    out
}

#[test]
fn penalties_are_graded() {
    assert!(!Rejection::BlockedOrigin.penalised());
    assert!(!Rejection::UnknownPeer.penalised());
    assert!(Rejection::ScopeViolation.penalised());
    assert!(
        !Rejection::RelayNotAllowed.penalised(),
        "a trust mismatch, not invalid data"
    );
    assert!(Rejection::HopLimit.penalised());
}
