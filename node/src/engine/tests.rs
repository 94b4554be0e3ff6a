//! Engine unit tests: two to four engines wired by hand, one event at a time.
//!
//! Tests marked `#[ignore = "engine bug: …"]` show a defect of the engine as it is;
//! they pass once the bug is fixed.

use std::collections::BTreeMap;

use tocsin_proto::{
    AlertBody, AlertId, Frame, Kind, PublicKey, Severity, SignedAlert, SigningKey, Tlp,
    FORMAT_VERSION,
};

use super::*;

/// Virtual start time of every test, ms.
/// Alerts in these tests are issued from [`ISSUED`] on; the engine's clock starts a
/// little later, as a real node's would.
pub(crate) const ISSUED: u64 = 1_767_225_600_000;
const T0: u64 = ISSUED + 1_000_000;

pub(crate) fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub(crate) fn pk(k: &SigningKey) -> PublicKey {
    PublicKey(k.verifying_key().to_bytes())
}

pub(crate) fn body(origin: &SigningKey, n: u64, tlp: Tlp, recipients: Vec<PublicKey>) -> AlertBody {
    AlertBody {
        v: FORMAT_VERSION,
        origin: pk(origin),
        issued_at: ISSUED + n,
        expires_at: None,
        kind: Kind::New,
        replaces: None,
        severity: Severity::High,
        tlp,
        recipients,
        title: format!("Test alert {n}"),
        text: "Block the listed infrastructure.".into(),
        indicators: vec![],
        tags: vec![],
        references: vec![],
    }
}

/// `a` issued here (before its commit).
pub(crate) fn local(a: &SignedAlert) -> Event {
    Event::Local {
        alert: a.clone().verify().unwrap(),
    }
}

pub(crate) fn alert(origin: &SigningKey, n: u64, tlp: Tlp) -> SignedAlert {
    SignedAlert::sign(body(origin, n, tlp, vec![]), origin).unwrap()
}

fn red(origin: &SigningKey, n: u64, recipients: Vec<PublicKey>) -> SignedAlert {
    SignedAlert::sign(body(origin, n, Tlp::Red, recipients), origin).unwrap()
}

pub(crate) fn replacing(origin: &SigningKey, n: u64, kind: Kind, target: AlertId) -> SignedAlert {
    let mut b = body(origin, n, Tlp::Clear, vec![]);
    b.kind = kind;
    b.replaces = Some(target);
    SignedAlert::sign(b, origin).unwrap()
}

fn engine_for(me: &SigningKey, cfg: EngineConfig) -> Engine {
    Engine::new(pk(me), 7, cfg)
}

/// Trusts `peer` at `level` and connects it; returns the connect actions.
fn connect(e: &mut Engine, peer: &SigningKey, level: TrustLevel) -> Vec<Action> {
    e.load_trust(pk(peer), level);
    e.handle(Event::PeerConnected(pk(peer)), T0)
}

fn frame_event(from: &SigningKey, frame: &Frame) -> Event {
    Event::Frame {
        peer: pk(from),
        bytes: frame.encode().unwrap(),
    }
}

fn alert_event(from: &SigningKey, hops: u8, a: &SignedAlert) -> Event {
    frame_event(
        from,
        &Frame::Alert {
            hops,
            envelope: a.to_envelope(),
        },
    )
}

fn stored(actions: &[Action]) -> Vec<AlertId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Store { alert, .. } => Some(alert.id()),
            _ => None,
        })
        .collect()
}

fn frames_to<'a>(actions: &'a [Action], peer: &SigningKey) -> Vec<&'a Frame> {
    let p = pk(peer);
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { peer, frame } if *peer == p => Some(frame),
            _ => None,
        })
        .collect()
}

/// Ids of full alerts sent to `peer` (pushed or queued as `SendStored`).
fn alerts_to(actions: &[Action], peer: &SigningKey) -> Vec<AlertId> {
    let p = pk(peer);
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Send {
                peer,
                frame: Frame::Alert { envelope, .. },
            } if *peer == p => out.push(SignedAlert::decode(envelope).unwrap().id()),
            Action::SendStored { peer, alerts } if *peer == p => {
                out.extend(alerts.iter().map(|(id, _)| *id));
            }
            _ => {}
        }
    }
    out
}

/// Fires every timer in `actions` (in time order, and those they set, up to `until`),
/// returning everything the engine did.
fn fire_timers(e: &mut Engine, actions: &[Action], until: u64) -> Vec<Action> {
    let mut timers: BTreeMap<(u64, u64), Timer> = BTreeMap::new();
    let mut n = 0;
    let mut add = |timers: &mut BTreeMap<(u64, u64), Timer>, actions: &[Action]| {
        for a in actions {
            if let Action::SetTimer { at, timer } = a {
                n += 1;
                timers.insert((*at, n), timer.clone());
            }
        }
    };
    add(&mut timers, actions);
    let mut out = Vec::new();
    while let Some(((at, _), timer)) = timers.pop_first() {
        if at > until {
            break;
        }
        let more = e.handle(Event::Timer(timer), at);
        add(&mut timers, &more);
        out.extend(more);
    }
    out
}

fn stats(e: &Engine, peer: &SigningKey) -> PeerStats {
    e.peer_reports()
        .into_iter()
        .find(|r| r.key == pk(peer))
        .map(|r| r.stats)
        .unwrap_or_default()
}

/// The engine did nothing but refuse the input for `reason`.
fn only_verdict(actions: &[Action], reason: Reason) -> bool {
    matches!(actions, [Action::Verdict { reason: r, .. }] if *r == reason)
}

fn rejections(e: &Engine, peer: &SigningKey, reason: &str) -> u64 {
    stats(e, peer).rejections.get(reason).copied().unwrap_or(0)
}

fn disconnect_of(actions: &[Action], peer: &SigningKey) -> Option<Option<u64>> {
    let p = pk(peer);
    actions.iter().find_map(|a| match a {
        Action::Disconnect { peer, until, .. } if *peer == p => Some(*until),
        _ => None,
    })
}

#[test]
fn connecting_says_hello_and_catch_up_starts() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    let out = connect(&mut ea, &b, TrustLevel::Member);
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::Hello { epoch: 7, head: 0 }]
    );
    let out = ea.handle(frame_event(&b, &Frame::Hello { epoch: 9, head: 3 }), T0);
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::SyncRequest { epoch: 9, after: 0 }]
    );
}

#[test]
fn frames_from_unknown_or_unconnected_peers_are_dropped() {
    let (a, b, stranger, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.load_trust(pk(&b), TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);

    // Trusted but not connected.
    let out = ea.handle(alert_event(&b, 2, &x), T0);
    assert!(only_verdict(&out, Reason::NotConnected), "{out:?}");
    assert_eq!(rejections(&ea, &b, "not_connected"), 1);
    // Not in the trust table at all.
    let out = ea.handle(
        alert_event(&stranger, 1, &alert(&stranger, 2, Tlp::Clear)),
        T0,
    );
    assert!(only_verdict(&out, Reason::NotConnected), "{out:?}");
    assert!(!ea.knows(&x.id()));

    // Once connected, the same frame is accepted.
    ea.handle(Event::PeerConnected(pk(&b)), T0);
    let out = ea.handle(alert_event(&b, 2, &x), T0);
    assert_eq!(stored(&out), vec![x.id()]);
    // And a connection from the stranger is refused.
    let out = ea.handle(Event::PeerConnected(pk(&stranger)), T0);
    assert_eq!(disconnect_of(&out, &stranger), Some(None));
}

#[test]
fn malformed_frames_and_envelopes_are_penalised() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);

    let out = ea.handle(
        Event::Frame {
            peer: pk(&b),
            bytes: vec![0xff, 0x00, 0x13, 0x37],
        },
        T0,
    );
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &b, "malformed_frame"), 1);
    assert_eq!(stats(&ea, &b).penalty, PENALTY_MALFORMED);

    // A well-formed frame carrying an envelope that is not an alert.
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::Alert {
                hops: 1,
                envelope: b"not an envelope".to_vec(),
            },
        ),
        T0,
    );
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &b, "malformed_alert"), 1);
    assert_eq!(stats(&ea, &b).penalty, 2 * PENALTY_MALFORMED);
}

/// The envelope of `a` with its signature's last byte flipped: same body, same id.
fn forged_envelope(a: &SignedAlert) -> Vec<u8> {
    let mut env = a.to_envelope();
    if let Some(last) = env.last_mut() {
        *last ^= 0x01;
    }
    assert_eq!(SignedAlert::decode(&env).unwrap().id(), a.id());
    env
}

/// `a` from `from` at `hops`, its signature broken.
fn forged_event(from: &SigningKey, hops: u8, a: &SignedAlert) -> Event {
    frame_event(
        from,
        &Frame::Alert {
            hops,
            envelope: forged_envelope(a),
        },
    )
}

#[test]
fn a_bad_signature_is_penalised_and_does_not_poison_the_id() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&b, 1, Tlp::Clear);

    let out = ea.handle(forged_event(&b, 1, &x), T0);
    assert!(stored(&out).is_empty());
    assert!(alerts_to(&out, &c).is_empty(), "nothing is relayed");
    assert_eq!(rejections(&ea, &b, "bad_signature"), 1);
    assert_eq!(stats(&ea, &b).penalty, PENALTY_BAD_SIGNATURE);
    assert!(!ea.knows(&x.id()));

    // The genuine alert is still accepted.
    let out = ea.handle(alert_event(&c, 2, &x), T0);
    assert_eq!(stored(&out), vec![x.id()]);
}

/// The signature checks an engine handed out ([`Engine::verify_off_thread`]).
fn checks(actions: &[Action]) -> Vec<ToVerify> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verify(job) => Some((**job).clone()),
            _ => None,
        })
        .collect()
}

/// Checks `job` as the runtime's checking threads do and hands it back.
fn checked(e: &mut Engine, job: ToVerify) -> Vec<Action> {
    let c = job.check(&mut VerifyingKeys::default());
    e.handle(Event::Verified(Box::new(c)), T0)
}

#[test]
fn signatures_checked_off_the_thread_are_accepted_once_whatever_order_they_come_back_in() {
    let (a, b, c, d) = (key(1), key(2), key(3), key(4));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.verify_off_thread();
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    connect(&mut ea, &d, TrustLevel::Member);
    let (x, y) = (alert(&b, 1, Tlp::Clear), alert(&c, 2, Tlp::Clear));

    // Nothing is stored or relayed before the check comes back.
    let out = ea.handle(alert_event(&b, 1, &x), T0);
    assert!(stored(&out).is_empty() && alerts_to(&out, &d).is_empty());
    let from_b = checks(&out);
    assert_eq!(from_b.len(), 1);
    // A second copy from another peer meanwhile is checked too (the first may be bad).
    let from_c = checks(&ea.handle(alert_event(&c, 2, &x), T0));
    assert_eq!(from_c.len(), 1);
    let forged = ea.handle(forged_event(&d, 2, &y), T0);
    let forged = checks(&forged);
    assert_eq!(ea.verifying(), 3);

    // The later copy comes back first: stored once, relayed; the other is a duplicate.
    let out = checked(&mut ea, from_c[0].clone());
    assert_eq!(stored(&out), vec![x.id()]);
    assert_eq!(alerts_to(&out, &d), vec![x.id()]);
    let out = checked(&mut ea, from_b[0].clone());
    assert!(stored(&out).is_empty(), "{out:?}");
    assert_eq!(stats(&ea, &b).duplicates, 1);
    assert_eq!(stats(&ea, &b).alerts_in, 0);

    // A bad signature is refused and penalised when its check comes back.
    let out = checked(&mut ea, forged[0].clone());
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &d, "bad_signature"), 1);
    assert_eq!(stats(&ea, &d).penalty, PENALTY_BAD_SIGNATURE);
    assert!(!ea.knows(&y.id()));
    assert_eq!(ea.verifying(), 0);
    // The genuine one is still accepted.
    let out = ea.handle(alert_event(&c, 1, &y), T0);
    let out = checked(&mut ea, checks(&out)[0].clone());
    assert_eq!(stored(&out), vec![y.id()]);
}

#[test]
fn a_page_that_lists_an_alert_out_for_its_check_waits_and_asks_if_that_copy_was_forged() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = catching_up(&a, &b, 2);
    ea.verify_off_thread();
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&key(9), 1, Tlp::Clear);
    ea.load_trust(pk(&key(9)), TrustLevel::Member);
    // A forged copy from c is out for its check when b's page lists x.
    let forged = ea.handle(forged_event(&c, 2, &x), T0);
    let forged = checks(&forged);
    assert_eq!(forged.len(), 1);
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![x.id()], 2, true, None)),
        T0 + 1,
    );
    assert!(
        !frames_to(&out, &b)
            .iter()
            .any(|f| matches!(f, Frame::Want { .. } | Frame::WantPage { .. })),
        "not asked for while a copy is out: {out:?}"
    );
    // The copy was forged: b is asked for x now, and its copy completes the page.
    let out = checked(&mut ea, forged[0].clone());
    let asked: Vec<&Frame> = frames_to(&out, &b)
        .into_iter()
        .filter(|f| matches!(f, Frame::Want { ids, .. } if ids == &vec![x.id()]))
        .collect();
    assert_eq!(asked.len(), 1, "{out:?}");
    let out = ea.handle(alert_event(&b, 2, &x), T0 + 2);
    let out = checked(&mut ea, checks(&out)[0].clone());
    assert_eq!(stored(&out), vec![x.id()]);
    assert_eq!(rejections(&ea, &b, "undelivered"), 0);
}

#[test]
fn a_page_does_not_wait_for_an_alert_held_while_another_copy_is_out() {
    let (a, b, c, d) = (key(1), key(2), key(3), key(4));
    let mut ea = catching_up(&a, &b, 2);
    ea.verify_off_thread();
    connect(&mut ea, &c, TrustLevel::Member);
    connect(&mut ea, &d, TrustLevel::Member);
    let x = alert(&key(9), 1, Tlp::Clear);
    ea.load_trust(pk(&key(9)), TrustLevel::Member);
    let from_c = checks(&ea.handle(alert_event(&c, 2, &x), T0));
    let from_d = checks(&ea.handle(alert_event(&d, 2, &x), T0));
    let out = checked(&mut ea, from_c[0].clone());
    assert_eq!(stored(&out), vec![x.id()]);
    ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 1);
    // d's copy is still out; b's page lists x, which is held and durable: done at once.
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![x.id()], 2, true, None)),
        T0 + 2,
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::SaveCursor { seq: 2, .. })),
        "{out:?}"
    );
    let out = checked(&mut ea, from_d[0].clone());
    assert!(stored(&out).is_empty());
    assert_eq!(stats(&ea, &d).duplicates, 1);
}

#[test]
fn trust_withdrawn_while_a_signature_is_checked_refuses_the_alert() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.verify_off_thread();
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&c, 1, Tlp::Clear);
    let job = checks(&ea.handle(alert_event(&b, 2, &x), T0));
    ea.handle(
        Event::Trust {
            key: pk(&b),
            level: Some(TrustLevel::Blocked),
        },
        T0,
    );
    let out = checked(&mut ea, job[0].clone());
    assert!(stored(&out).is_empty(), "{out:?}");
    assert!(alerts_to(&out, &c).is_empty());
    assert!(!ea.knows(&x.id()));
    assert_eq!(ea.verifying(), 0);
}

#[test]
fn past_the_limit_the_engine_checks_signatures_itself() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.verify_off_thread();
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let mut jobs = Vec::new();
    for n in 0..MAX_VERIFYING_PER_PEER as u64 {
        let out = ea.handle(alert_event(&b, 1, &alert(&b, n, Tlp::Clear)), T0);
        assert!(stored(&out).is_empty());
        jobs.extend(checks(&out));
    }
    // One peer has its share out: its next alert is checked here, another peer's not.
    let over = alert(&b, 5_000, Tlp::Clear);
    let out = ea.handle(alert_event(&b, 1, &over), T0);
    assert!(checks(&out).is_empty());
    assert_eq!(stored(&out), vec![over.id()], "checked and stored at once");
    for n in 0..(MAX_VERIFYING - MAX_VERIFYING_PER_PEER) as u64 {
        let out = ea.handle(alert_event(&c, 1, &alert(&c, n, Tlp::Clear)), T0);
        assert!(stored(&out).is_empty());
        jobs.extend(checks(&out));
    }
    assert_eq!((jobs.len(), ea.verifying()), (MAX_VERIFYING, MAX_VERIFYING));
    let over = alert(&c, MAX_VERIFYING as u64, Tlp::Clear);
    let out = ea.handle(alert_event(&c, 1, &over), T0);
    assert!(checks(&out).is_empty());
    assert_eq!(stored(&out), vec![over.id()], "checked and stored at once");
    // One back makes room for the next.
    let back = jobs.pop().unwrap();
    let out = checked(&mut ea, back);
    assert_eq!(stored(&out).len(), 1);
    let next = alert(&c, MAX_VERIFYING as u64 + 1, Tlp::Clear);
    let out = ea.handle(alert_event(&c, 1, &next), T0);
    assert_eq!(checks(&out).len(), 1);
    assert!(stored(&out).is_empty());
}

#[test]
fn enough_bad_frames_disconnect_and_ban_until_the_ban_expires() {
    let (a, b) = (key(1), key(2));
    let cfg = EngineConfig {
        penalty_threshold: 100,
        ban_secs: 60,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    connect(&mut ea, &b, TrustLevel::Member);
    let garbage = Event::Frame {
        peer: pk(&b),
        bytes: vec![0xff; 8],
    };
    let per_frame = PENALTY_MALFORMED;
    let frames_to_ban = 100_u32.div_ceil(per_frame);
    let mut banned_at = None;
    for i in 1..=frames_to_ban {
        let out = ea.handle(
            Event::Frame {
                peer: pk(&b),
                bytes: vec![0xff; 8],
            },
            T0,
        );
        if let Some(until) = disconnect_of(&out, &b) {
            banned_at = Some((i, until));
        }
    }
    assert_eq!(banned_at, Some((frames_to_ban, Some(T0 + 60_000))));
    assert!(!ea.may_connect(&pk(&b), T0));
    assert!(!ea.may_connect(&pk(&b), T0 + 59_999));
    assert!(ea.may_connect(&pk(&b), T0 + 60_000));

    // While banned, frames are dropped and a reconnection is refused.
    let out = ea.handle(garbage, T0 + 1);
    assert!(only_verdict(&out, Reason::NotConnected), "{out:?}");
    let out = ea.handle(Event::PeerConnected(pk(&b)), T0 + 1_000);
    assert_eq!(disconnect_of(&out, &b), Some(None));
    // After the ban it may connect again.
    let out = ea.handle(Event::PeerConnected(pk(&b)), T0 + 60_000);
    assert_eq!(disconnect_of(&out, &b), None);
}

#[test]
fn a_flooding_peer_is_throttled_and_others_are_not() {
    let (a, b, c) = (key(1), key(2), key(3));
    let cfg = EngineConfig {
        peer_alerts_per_sec: 1,
        peer_alert_burst: 5,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);

    let mut accepted = 0;
    for n in 0..8 {
        let out = ea.handle(alert_event(&b, 1, &alert(&b, n, Tlp::Clear)), T0);
        accepted += stored(&out).len();
    }
    assert_eq!(accepted, 5);
    assert_eq!(stats(&ea, &b).rate_limited, 3);
    assert_eq!(stats(&ea, &b).penalty, 0, "throttling is not a penalty");

    // Another peer at the same instant is not slowed down.
    let y = alert(&c, 100, Tlp::Clear);
    let out = ea.handle(alert_event(&c, 1, &y), T0);
    assert_eq!(stored(&out), vec![y.id()]);
    assert_eq!(stats(&ea, &c).rate_limited, 0);

    // The flooding peer gets a token back after a second.
    let z = alert(&b, 200, Tlp::Clear);
    let out = ea.handle(alert_event(&b, 1, &z), T0 + 1_000);
    assert_eq!(stored(&out), vec![z.id()]);
}

#[test]
fn one_relayed_origin_cannot_use_up_the_relay_s_whole_alert_budget() {
    let (a, x, r, o) = (key(1), key(2), key(7), key(9));
    let cfg = EngineConfig {
        peer_alerts_per_sec: 1,
        peer_alert_burst: 100,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    connect(&mut ea, &x, TrustLevel::Member);
    // x relays a flood of valid alerts from origin r: r gets its share, half the burst.
    let mut flood = 0;
    for n in 0..200 {
        flood += stored(&ea.handle(alert_event(&x, 2, &alert(&r, n, Tlp::Clear)), T0)).len();
    }
    assert_eq!(flood, 50);
    assert_eq!(stats(&ea, &x).rate_limited, 150);
    // Another origin that x relays at the same instant still gets through: the flood
    // did not spend the part of x's budget that is not r's.
    let honest: Vec<SignedAlert> = (0..10).map(|n| alert(&o, n, Tlp::Clear)).collect();
    for h in &honest {
        assert_eq!(stored(&ea.handle(alert_event(&x, 2, h), T0)), vec![h.id()]);
    }
    // x's own alerts may use the whole bucket (what is left of it: 100 - 50 - 10).
    let mut own = 0;
    for n in 0..60 {
        own += stored(&ea.handle(alert_event(&x, 1, &alert(&x, n, Tlp::Clear)), T0)).len();
    }
    assert_eq!(own, 40);
}

#[test]
fn alerts_past_the_limit_are_dropped_before_they_are_decoded() {
    let (a, b) = (key(1), key(2));
    let cfg = EngineConfig {
        peer_alerts_per_sec: 1,
        peer_alert_burst: 3,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    connect(&mut ea, &b, TrustLevel::Member);
    for n in 0..3 {
        assert_eq!(
            stored(&ea.handle(alert_event(&b, 1, &alert(&b, n, Tlp::Clear)), T0)).len(),
            1
        );
    }
    // The bucket is empty: an undecodable alert frame is not even looked at (it would
    // otherwise be a malformed alert, penalised).
    let garbage = Frame::Alert {
        hops: 1,
        envelope: vec![0xff; 64],
    };
    let out = ea.handle(frame_event(&b, &garbage), T0);
    // ...and the node stops reading b until its next alert is due (back-pressure),
    // asked once per pause.
    assert!(
        matches!(out.as_slice(), [Action::PauseReading { peer, until }] if *peer == pk(&b) && *until == T0 + 1_000),
        "{out:?}"
    );
    let out = ea.handle(frame_event(&b, &garbage), T0 + 10);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(stats(&ea, &b).rate_limited, 2);
    assert_eq!(rejections(&ea, &b, "malformed_alert"), 0);
    // A second later a token is back, and the same frame is decoded and refused.
    ea.handle(frame_event(&b, &garbage), T0 + 1_000);
    assert_eq!(rejections(&ea, &b, "malformed_alert"), 1);
}

#[test]
fn a_duplicate_on_an_eager_link_prunes_it() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);

    let out = ea.handle(alert_event(&b, 2, &x), T0);
    assert_eq!(stored(&out), vec![x.id()]);
    // Relayed eagerly to c (links start eager), never back to b.
    assert_eq!(alerts_to(&out, &c), vec![x.id()]);
    assert!(alerts_to(&out, &b).is_empty());

    let out = ea.handle(alert_event(&c, 2, &x), T0 + 5);
    assert!(stored(&out).is_empty());
    // No origin of its own on the link yet: the link's default tree is pruned.
    assert_eq!(frames_to(&out, &c), vec![&Frame::Prune { origin: None }]);
    assert_eq!(stats(&ea, &c).duplicates, 1);

    // The pruned link now gets announces instead of bodies.
    let y = alert(&o, 2, Tlp::Clear);
    let out = ea.handle(alert_event(&b, 2, &y), T0 + 10);
    assert!(alerts_to(&out, &c).is_empty());
    let out = fire_timers(&mut ea, &out, T0 + 100);
    assert_eq!(
        frames_to(&out, &c),
        vec![&Frame::Announce {
            ids: vec![y.id()],
            hops: vec![3]
        }]
    );
}

#[test]
fn an_announced_alert_that_does_not_arrive_is_grafted() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::Announce {
                ids: vec![x.id()],
                hops: vec![2],
            },
        ),
        T0,
    );
    let out = fire_timers(&mut ea, &out, T0 + EngineConfig::default().graft_timeout_ms);
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::Want {
            ids: vec![x.id()],
            graft: true
        }]
    );
}

#[test]
fn a_cancel_that_arrives_first_keeps_the_original_from_spreading() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    let cancel = replacing(&o, 2, Kind::Cancel, x.id());

    let out = ea.handle(alert_event(&b, 2, &cancel), T0);
    assert_eq!(stored(&out), vec![cancel.id()]);
    assert_eq!(alerts_to(&out, &c), vec![cancel.id()], "the cancel spreads");

    let out = ea.handle(alert_event(&b, 2, &x), T0 + 10);
    assert_eq!(stored(&out), vec![x.id()], "the original is kept");
    assert!(alerts_to(&out, &c).is_empty(), "but not pushed");
    let later = fire_timers(&mut ea, &out, T0 + 10_000);
    for f in frames_to(&later, &c) {
        if let Frame::Announce { ids, .. } = f {
            assert!(!ids.contains(&x.id()), "nor announced");
        }
    }
    // Nor offered by catch-up or on request.
    ea.handle(
        Event::Committed(vec![(1, cancel.id()), (2, x.id())]),
        T0 + 20,
    );
    let out = ea.handle(
        frame_event(&c, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0 + 30,
    );
    let page = frames_to(&out, &c);
    assert!(
        matches!(page.as_slice(), [Frame::SyncPage { ids, .. }] if ids == &vec![cancel.id()]),
        "{page:?}"
    );
    let out = ea.handle(
        frame_event(
            &c,
            &Frame::Want {
                ids: vec![x.id()],
                graft: false,
            },
        ),
        T0 + 40,
    );
    assert!(alerts_to(&out, &c).is_empty());
}

#[test]
fn only_the_origin_may_update_or_cancel() {
    let (a, b, o, mallory) = (key(1), key(2), key(9), key(66));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    ea.handle(alert_event(&b, 2, &x), T0);

    for (n, kind) in [(2, Kind::Update), (3, Kind::Cancel)] {
        let forged = replacing(&mallory, n, kind, x.id());
        let out = ea.handle(alert_event(&b, 2, &forged), T0 + n);
        assert!(stored(&out).is_empty(), "{kind:?} from another origin");
    }
    assert_eq!(rejections(&ea, &b, "foreign_replacement"), 2);
    assert_eq!(
        rejections(&ea, &b, "not_origin"),
        0,
        "a relay could not have known"
    );
    assert_eq!(stats(&ea, &b).penalty, 0, "relays are not penalised for it");

    // The origin's own update is accepted.
    let update = replacing(&o, 4, Kind::Update, x.id());
    let out = ea.handle(alert_event(&b, 2, &update), T0 + 10);
    assert_eq!(stored(&out), vec![update.id()]);
}

#[test]
fn withdrawing_trust_disconnects_and_a_demotion_narrows_what_is_sent() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);

    let out = ea.handle(
        Event::Trust {
            key: pk(&b),
            level: None,
        },
        T0,
    );
    assert_eq!(disconnect_of(&out, &b), Some(None));
    assert!(!ea.may_connect(&pk(&b), T0));
    let out = ea.handle(alert_event(&b, 1, &alert(&b, 1, Tlp::Clear)), T0);
    assert!(stored(&out).is_empty());

    // Member → public keeps the connection but no longer gets GREEN.
    let out = ea.handle(
        Event::Trust {
            key: pk(&c),
            level: Some(TrustLevel::Public),
        },
        T0,
    );
    assert_eq!(disconnect_of(&out, &c), None);
    let green = alert(&a, 2, Tlp::Green);
    let out = issue(&mut ea, green, 1, T0);
    let out = [out.clone(), fire_timers(&mut ea, &out, T0 + 1_000)].concat();
    assert!(frames_to(&out, &c).is_empty(), "{out:?}");

    // Blocking cuts it.
    let out = ea.handle(
        Event::Trust {
            key: pk(&c),
            level: Some(TrustLevel::Blocked),
        },
        T0,
    );
    assert_eq!(disconnect_of(&out, &c), Some(None));
}

#[test]
fn a_promotion_offers_at_once_what_the_new_level_allows_and_a_demotion_nothing() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    ea.load_trust(pk(&c), TrustLevel::Member);
    let amber = alert(&a, 1, Tlp::Amber);
    let red_b = red(&a, 2, vec![pk(&b)]);
    let red_c = red(&a, 3, vec![pk(&c)]);
    let green = alert(&a, 4, Tlp::Green);
    let mut expired = body(&a, 5, Tlp::Amber, vec![]);
    expired.expires_at = Some(T0 + 5);
    let expired = SignedAlert::sign(expired, &a).unwrap();
    for (n, x) in [&amber, &red_b, &red_c, &green, &expired]
        .into_iter()
        .enumerate()
    {
        issue(&mut ea, x.clone(), n as u64 + 1, T0);
    }
    // A relayed AMBER alert of another origin is never offered on (AMBER is not relayed).
    connect(&mut ea, &o, TrustLevel::Partner);
    let foreign = alert(&o, 1, Tlp::Amber);
    assert_eq!(
        stored(&ea.handle(alert_event(&o, 1, &foreign), T0)),
        vec![foreign.id()]
    );

    // b, a member, is promoted to partner: it is offered the AMBER alert and the RED one
    // naming it, at once, not the expired one, nor what it could already see.
    let out = ea.handle(
        Event::Trust {
            key: pk(&b),
            level: Some(TrustLevel::Partner),
        },
        T0 + 10,
    );
    let mut got = alerts_to(&out, &b);
    got.sort();
    let mut want = vec![amber.id(), red_b.id()];
    want.sort();
    assert_eq!(got, want);
    // A demotion offers nothing.
    let out = ea.handle(
        Event::Trust {
            key: pk(&b),
            level: Some(TrustLevel::Public),
        },
        T0 + 20,
    );
    assert!(alerts_to(&out, &b).is_empty(), "{out:?}");

    // c is promoted while not connected: it is offered the same when it connects.
    let out = ea.handle(
        Event::Trust {
            key: pk(&c),
            level: Some(TrustLevel::Partner),
        },
        T0 + 30,
    );
    assert!(out.is_empty(), "{out:?}");
    let out = ea.handle(Event::PeerConnected(pk(&c)), T0 + 40);
    let mut got = alerts_to(&out, &c);
    got.sort();
    let mut want = vec![amber.id(), red_c.id()];
    want.sort();
    assert_eq!(got, want);
    // ...once: a reconnection offers nothing again.
    ea.handle(Event::PeerDisconnected(pk(&c)), T0 + 50);
    let out = ea.handle(Event::PeerConnected(pk(&c)), T0 + 60);
    assert!(alerts_to(&out, &c).is_empty(), "{out:?}");
}

#[test]
fn red_goes_only_to_named_partners() {
    let (a, b, c, d) = (key(1), key(2), key(3), key(4));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Partner); // named
    connect(&mut ea, &c, TrustLevel::Partner); // not named
    connect(&mut ea, &d, TrustLevel::Member); // named, but only a member
    let x = red(&a, 1, vec![pk(&b), pk(&d)]);
    let out = issue(&mut ea, x.clone(), 1, T0);
    let out = [out.clone(), fire_timers(&mut ea, &out, T0 + 10_000)].concat();
    assert_eq!(alerts_to(&out, &b), vec![x.id()]);
    assert!(frames_to(&out, &c).is_empty(), "{out:?}");
    assert!(frames_to(&out, &d).is_empty(), "{out:?}");

    // Catch-up does not offer it to them either.
    for peer in [&c, &d] {
        let out = ea.handle(
            frame_event(peer, &Frame::SyncRequest { epoch: 7, after: 0 }),
            T0 + 20_000,
        );
        assert!(
            matches!(frames_to(&out, peer).as_slice(), [Frame::SyncPage { ids, .. }] if ids.is_empty())
        );
    }
}

#[test]
fn relayed_amber_is_a_scope_violation() {
    let (a, b, o) = (key(1), key(2), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Partner);
    connect(&mut ea, &o, TrustLevel::Partner);
    let x = alert(&o, 1, Tlp::Amber);

    let out = ea.handle(alert_event(&b, 2, &x), T0);
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &b, "scope_violation"), 1);
    assert_eq!(stats(&ea, &b).penalty, PENALTY_POLICY);

    // Straight from its origin it is accepted, and not relayed.
    let out = ea.handle(alert_event(&o, 1, &x), T0);
    assert_eq!(stored(&out), vec![x.id()]);
    let out = [out.clone(), fire_timers(&mut ea, &out, T0 + 1_000)].concat();
    assert!(frames_to(&out, &b).is_empty(), "{out:?}");
}

#[test]
fn a_blocked_origin_is_dropped_even_when_relayed() {
    let (a, b, bad) = (key(1), key(2), key(66));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    ea.load_trust(pk(&bad), TrustLevel::Blocked);
    let out = ea.handle(alert_event(&b, 2, &alert(&bad, 1, Tlp::Clear)), T0);
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &b, "blocked_origin"), 1);
    assert_eq!(stats(&ea, &b).penalty, 0, "the relay did nothing wrong");
}

#[test]
fn relaying_clear_to_a_public_peer_does_not_get_the_relay_banned() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Public);
    // b may trust a as member and relay CLEAR alerts of other origins to it: a refuses
    // them (a public peer's relays are not accepted) without holding it against b.
    for n in 0..10 {
        let out = ea.handle(
            alert_event(&b, 2, &alert(&key(50 + n), n.into(), Tlp::Clear)),
            T0,
        );
        assert!(stored(&out).is_empty());
        assert_eq!(
            disconnect_of(&out, &b),
            None,
            "banned after {} relays",
            n + 1
        );
    }
    assert_eq!(rejections(&ea, &b, "relay_not_allowed"), 10);
    assert_eq!(stats(&ea, &b).penalty, 0);
    // Its own alerts are accepted.
    let own = alert(&b, 99, Tlp::Clear);
    let out = ea.handle(alert_event(&b, 1, &own), T0);
    assert_eq!(stored(&out), vec![own.id()]);
}

// ---------------------------------------------------------------------------------
// Engine bugs. Each test states the behaviour the design asks for.
// ---------------------------------------------------------------------------------

/// The (peer, frame) sequence of the actions, for comparing runs.
fn trace(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send { peer, frame } => format!("{} {}", peer.fmt_short(), frame.name()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn equal_inputs_give_equal_outputs() {
    let peers: Vec<SigningKey> = (10..18).map(key).collect();
    let me = key(1);
    let run = || {
        let mut e = engine_for(&me, EngineConfig::default());
        for p in &peers {
            connect(&mut e, p, TrustLevel::Member);
        }
        issue(&mut e, alert(&me, 1, Tlp::Clear), 1, T0)
    };
    assert_eq!(trace(&run()), trace(&run()));
}

#[test]
fn a_refused_copy_does_not_forget_the_other_announcers() {
    let (a, liar, honest, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &liar, TrustLevel::Member);
    connect(&mut ea, &honest, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    let announce = Frame::Announce {
        ids: vec![x.id()],
        hops: vec![2],
    };
    let mut timers = ea.handle(frame_event(&liar, &announce), T0);
    timers.extend(ea.handle(frame_event(&honest, &announce), T0 + 1));
    let graft = EngineConfig::default().graft_timeout_ms;
    let out = fire_timers(&mut ea, &timers, T0 + graft);
    assert_eq!(
        frames_to(&out, &liar).len(),
        1,
        "first graft goes to the first announcer"
    );

    // The liar answers with a forged copy.
    let refused = ea.handle(forged_event(&liar, 2, &x), T0 + graft + 10);
    assert_eq!(rejections(&ea, &liar, "bad_signature"), 1);
    let out = fire_timers(&mut ea, &[out, refused].concat(), T0 + 3 * graft);
    assert_eq!(
        frames_to(&out, &honest),
        vec![&Frame::Want {
            ids: vec![x.id()],
            graft: true
        }]
    );
}

#[test]
fn a_shorter_path_moves_only_that_origins_tree() {
    let (a, parent, closer, d) = (key(1), key(2), key(3), key(4));
    let (o, other) = (key(9), key(10));
    let mut ea = engine_for(&a, EngineConfig::default());
    for p in [&parent, &closer, &d] {
        connect(&mut ea, p, TrustLevel::Member);
    }
    // `closer` has pruned our default tree: it gets announces.
    ea.handle(frame_event(&closer, &Frame::Prune { origin: None }), T0);
    let x = alert(&o, 1, Tlp::Clear);
    let out = ea.handle(alert_event(&parent, 4, &x), T0 + 1);
    assert_eq!(alerts_to(&out, &d), vec![x.id()]);
    assert!(alerts_to(&out, &closer).is_empty());

    // `closer` offers o's alert 2 hops closer: graft it and prune `parent`, for o only.
    let out = ea.handle(
        frame_event(
            &closer,
            &Frame::Announce {
                ids: vec![x.id()],
                hops: vec![2],
            },
        ),
        T0 + 30,
    );
    assert_eq!(
        frames_to(&out, &closer),
        vec![&Frame::Graft { origin: pk(&o) }]
    );
    assert_eq!(
        frames_to(&out, &parent),
        vec![&Frame::Prune {
            origin: Some(pk(&o))
        }]
    );

    // o's next alert, arriving over `d`: pushed to `closer`, only announced to `parent`.
    let y = alert(&o, 2, Tlp::Clear);
    let out = ea.handle(alert_event(&d, 2, &y), T0 + 40);
    assert_eq!(alerts_to(&out, &closer), vec![y.id()]);
    assert!(alerts_to(&out, &parent).is_empty());
    // Another origin still follows the default: pushed to `parent`, not to `closer`.
    let z = alert(&other, 1, Tlp::Clear);
    let out = ea.handle(alert_event(&d, 2, &z), T0 + 50);
    assert_eq!(alerts_to(&out, &parent), vec![z.id()]);
    assert!(alerts_to(&out, &closer).is_empty());
    let report = ea
        .peer_reports()
        .into_iter()
        .find(|r| r.key == pk(&closer))
        .unwrap();
    assert!(!report.eager);
    assert_eq!(report.origin_trees, 1);

    // A duplicate of o's alert on its own tree link prunes o's tree, not the default.
    let out = ea.handle(alert_event(&closer, 3, &y), T0 + 60);
    assert_eq!(
        frames_to(&out, &closer),
        vec![&Frame::Prune {
            origin: Some(pk(&o))
        }]
    );
}

#[test]
fn origin_trees_are_bounded_per_link() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    for i in 0..(MAX_ORIGIN_TREES + 50) {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64).to_be_bytes());
        ea.handle(
            frame_event(
                &b,
                &Frame::Graft {
                    origin: PublicKey(k),
                },
            ),
            T0 + 1,
        );
    }
    let report = ea
        .peer_reports()
        .into_iter()
        .find(|r| r.key == pk(&b))
        .unwrap();
    assert_eq!(report.origin_trees, MAX_ORIGIN_TREES);
}

#[test]
fn a_shorter_copy_lowers_the_hop_count() {
    let (a, far, near, d, o) = (key(1), key(2), key(3), key(4), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &far, TrustLevel::Member);
    connect(&mut ea, &near, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    ea.handle(alert_event(&far, MAX_HOPS, &x), T0);
    ea.handle(alert_event(&near, 2, &x), T0 + 5);
    ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 6);

    connect(&mut ea, &d, TrustLevel::Member);
    let out = ea.handle(
        frame_event(&d, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0 + 10,
    );
    assert!(
        matches!(frames_to(&out, &d).as_slice(), [Frame::SyncPage { ids, .. }] if ids == &vec![x.id()]),
        "{out:?}"
    );
}

#[test]
fn a_duplicate_that_lies_about_its_hop_count_is_refused_and_lowers_nothing() {
    let (a, relay, liar, d, o) = (key(1), key(2), key(3), key(4), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &relay, TrustLevel::Member);
    connect(&mut ea, &liar, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    ea.handle(alert_event(&relay, MAX_HOPS, &x), T0);
    ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 1);
    // 0 and over the limit are never valid; 1 only from the origin itself.
    for hops in [0, 1, MAX_HOPS + 1] {
        let out = ea.handle(alert_event(&liar, hops, &x), T0 + 5);
        assert!(
            only_verdict(&out, Reason::HopLimit),
            "hops {hops}: refused, nothing re-offered: {out:?}"
        );
    }
    assert_eq!(rejections(&ea, &liar, "hop_limit"), 3);
    assert_eq!(stats(&ea, &liar).penalty, 3 * PENALTY_POLICY);
    assert_eq!(stats(&ea, &liar).duplicates, 0);
    // Still held at MAX_HOPS: a new peer's catch-up does not get it.
    connect(&mut ea, &d, TrustLevel::Member);
    let out = ea.handle(
        frame_event(&d, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0 + 10,
    );
    assert!(
        matches!(frames_to(&out, &d).as_slice(), [Frame::SyncPage { ids, .. }] if ids.is_empty()),
        "{out:?}"
    );
}

/// Two engines wired together: frames arrive after [`LINK_MS`], stores commit after
/// 1 ms, timers fire; `lose` decides which frames are lost.
const LINK_MS: u64 = 10;

/// Events still queued when a run stops (timers set for later), carried into the next
/// run so that a test can continue where the previous phase left off.
type Queue = BTreeMap<(u64, u64), (usize, Event)>;

fn run_pair(
    engines: &mut [Engine; 2],
    keys: [&SigningKey; 2],
    queue: &mut Queue,
    first: Vec<(usize, Action)>,
    until: u64,
    mut lose: impl FnMut(usize, &Frame) -> bool,
) -> Vec<(usize, Action)> {
    let mut n = queue.keys().map(|(_, n)| *n).max().unwrap_or(0);
    let mut seqs = [100u64, 100u64];
    let mut log = Vec::new();
    let mut pending: Vec<(usize, Action)> = first;
    let mut now = T0;
    loop {
        for (node, action) in pending.drain(..) {
            n += 1;
            match &action {
                Action::Send { frame, .. } if !lose(node, frame) => {
                    let ev = frame_event(keys[node], frame);
                    queue.insert((now + LINK_MS, n), (1 - node, ev));
                }
                Action::Store { alert, .. } => {
                    seqs[node] += 1;
                    let ev = Event::Committed(vec![(seqs[node], alert.id())]);
                    queue.insert((now + 1, n), (node, ev));
                }
                Action::SetTimer { at, timer } => {
                    queue.insert((*at, n), (node, Event::Timer(timer.clone())));
                }
                _ => {}
            }
            log.push((node, action));
        }
        let Some(((at, k), (node, ev))) = queue.pop_first() else {
            break;
        };
        if at > until {
            queue.insert((at, k), (node, ev));
            break;
        }
        now = at;
        pending = engines[node]
            .handle(ev, now)
            .into_iter()
            .map(|a| (node, a))
            .collect();
    }
    log
}

#[test]
fn a_lost_amber_push_is_repaired_while_connected() {
    let (a, b) = (key(1), key(2));
    let mut engines = [
        engine_for(&a, EngineConfig::default()),
        engine_for(&b, EngineConfig::default()),
    ];
    let mut first: Vec<(usize, Action)> = connect(&mut engines[0], &b, TrustLevel::Partner)
        .into_iter()
        .map(|x| (0, x))
        .collect();
    first.extend(
        connect(&mut engines[1], &a, TrustLevel::Partner)
            .into_iter()
            .map(|x| (1, x)),
    );
    // Without loss, b gets a's AMBER alerts (the harness works).
    let y = alert(&a, 0, Tlp::Amber);
    first.extend(
        issue(&mut engines[0], y.clone(), 1, T0)
            .into_iter()
            .map(|x| (0, x)),
    );
    let mut queue = Queue::new();
    let log = run_pair(
        &mut engines,
        [&a, &b],
        &mut queue,
        first,
        T0 + 60_000,
        |_, _| false,
    );
    assert!(log.iter().any(|(node, a)| {
        *node == 1 && matches!(a, Action::Store { alert, .. } if alert.id() == y.id())
    }));

    let x = alert(&a, 1, Tlp::Amber);
    let out = issue(&mut engines[0], x.clone(), 2, T0 + 60_000);
    let mut lost = false;
    let log = run_pair(
        &mut engines,
        [&a, &b],
        &mut queue,
        out.into_iter().map(|x| (0, x)).collect(),
        T0 + 60_000 + 600_000,
        |node, frame| {
            let drop = node == 0 && matches!(frame, Frame::Alert { .. }) && !lost;
            lost |= drop;
            drop
        },
    );
    assert!(lost);
    let stored_at_b = log.iter().any(|(node, a)| {
        *node == 1 && matches!(a, Action::Store { alert, .. } if alert.id() == x.id())
    });
    assert!(stored_at_b, "b never got the AMBER alert within 10 minutes");
}

#[test]
fn the_cursor_waits_for_alerts_that_are_not_committed_yet() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    // x arrives from b and is handed to the store...
    ea.handle(alert_event(&b, 2, &x), T0);
    // ...while c's catch-up page lists it.
    ea.handle(frame_event(&c, &Frame::Hello { epoch: 3, head: 1 }), T0);
    let page = Frame::SyncPage {
        epoch: 3,
        ids: vec![x.id()],
        next: 1,
        done: true,
        answers: None,
    };
    let out = ea.handle(frame_event(&c, &page), T0 + 1);
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "cursor saved before x was committed"
    );
    let out = ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 2);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::SaveCursor { seq: 1, .. })));
}

/// Engine `a` with `b` connected as a member, catching up on b's log (epoch 3).
fn catching_up(a: &SigningKey, b: &SigningKey, head: u64) -> Engine {
    let mut ea = engine_for(a, EngineConfig::default());
    connect(&mut ea, b, TrustLevel::Member);
    ea.handle(frame_event(b, &Frame::Hello { epoch: 3, head }), T0);
    ea
}

/// A catch-up page of a log at epoch 3.
fn sync_page(ids: Vec<AlertId>, next: u64, done: bool, answers: Option<u64>) -> Frame {
    Frame::SyncPage {
        epoch: 3,
        ids,
        next,
        done,
        answers,
    }
}

fn sync_requests(out: &[Action], to: &SigningKey) -> Vec<u64> {
    frames_to(out, to)
        .into_iter()
        .filter_map(|f| match f {
            Frame::SyncRequest { after, .. } => Some(*after),
            _ => None,
        })
        .collect()
}

#[test]
fn catch_up_asks_for_the_next_pages_before_the_alerts_arrive_and_moves_the_cursor_in_order() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 6);
    let missed: Vec<SignedAlert> = (0..6).map(|n| alert(&b, n, Tlp::Clear)).collect();
    let page = |k: usize| sync_page(vec![missed[k].id()], k as u64 + 1, k == 5, None);
    let requests = |out: &[Action]| sync_requests(out, &b);
    // Each page that arrives asks for the next at once, up to PIPELINE unsettled pages.
    let mut asked = Vec::new();
    for k in 0..catchup::PIPELINE {
        asked.extend(requests(&ea.handle(frame_event(&b, &page(k)), T0 + 1)));
    }
    assert_eq!(asked, vec![1, 2, 3], "the fourth unsettled page waits");
    // An unsolicited page (none asked for) is ignored.
    let out = ea.handle(frame_event(&b, &page(4)), T0 + 1);
    assert!(frames_to(&out, &b).is_empty(), "{out:?}");
    // The second page's alert is committed first: the cursor cannot pass the first.
    let out = ea.handle(alert_event(&b, 1, &missed[1]), T0 + 2);
    let out = [
        out,
        ea.handle(Event::Committed(vec![(1, missed[1].id())]), T0 + 2),
    ]
    .concat();
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "{out:?}"
    );
    // The first page settles: the cursor moves past both, and the pipeline refills.
    ea.handle(alert_event(&b, 1, &missed[0]), T0 + 3);
    let out = ea.handle(Event::Committed(vec![(2, missed[0].id())]), T0 + 3);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::SaveCursor { seq: 2, .. })));
    assert_eq!(requests(&out), vec![4]);
}

#[test]
fn a_node_that_lost_its_alerts_gets_them_back_on_request_and_only_then() {
    let (a, b) = (key(1), key(2));
    // b holds an AMBER alert of a (a's partner): it lists it to a in a catch-up page
    // and sends it when a wants it, though AMBER is never relayed to anyone else.
    let mut eb = engine_for(&b, EngineConfig::default());
    connect(&mut eb, &a, TrustLevel::Partner);
    let amber = alert(&a, 1, Tlp::Amber);
    assert_eq!(
        stored(&eb.handle(alert_event(&a, 1, &amber), T0)),
        vec![amber.id()]
    );
    eb.handle(Event::Committed(vec![(1, amber.id())]), T0);
    let out = eb.handle(
        frame_event(&a, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0,
    );
    let listed = frames_to(&out, &a)
        .into_iter()
        .any(|f| matches!(f, Frame::SyncPage { ids, .. } if ids.contains(&amber.id())));
    assert!(listed, "{out:?}");
    let out = eb.handle(
        frame_event(
            &a,
            &Frame::Want {
                ids: vec![amber.id()],
                graft: false,
            },
        ),
        T0,
    );
    assert_eq!(alerts_to(&out, &a), vec![amber.id()]);

    // a, with an empty store, asks b's log and takes its own alert back: stored, not
    // offered on, not penalised.
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Partner);
    ea.handle(frame_event(&b, &Frame::Hello { epoch: 3, head: 1 }), T0);
    let page = Frame::SyncPage {
        epoch: 3,
        ids: vec![amber.id()],
        next: 1,
        done: true,
        answers: None,
    };
    let out = ea.handle(frame_event(&b, &page), T0);
    let want_page = Frame::WantPage {
        epoch: 3,
        after: 0,
        next: 1,
        except: vec![],
    };
    assert_eq!(frames_to(&out, &b), vec![&want_page]);
    // b answers a's `want_page` of its log (epoch 7) with the alert too.
    let out = eb.handle(
        frame_event(
            &a,
            &Frame::WantPage {
                epoch: 7,
                after: 0,
                next: 1,
                except: vec![],
            },
        ),
        T0,
    );
    assert_eq!(alerts_to(&out, &a), vec![amber.id()]);
    let out = ea.handle(alert_event(&b, 2, &amber), T0 + 1);
    assert_eq!(stored(&out), vec![amber.id()]);
    assert!(alerts_to(&out, &b).is_empty(), "not offered on: {out:?}");
    assert_eq!(stats(&ea, &b).penalty, 0);

    // The same alert sent back unasked is what a relay must never do with AMBER.
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Partner);
    let out = ea.handle(alert_event(&b, 2, &amber), T0);
    assert!(stored(&out).is_empty());
    assert_eq!(rejections(&ea, &b, "scope_violation"), 1);
}

#[test]
fn a_page_lacked_mostly_is_asked_for_by_range_so_its_ids_travel_once() {
    let (a, b, c) = (key(1), key(2), key(3));
    // b's log: five CLEAR alerts, an AMBER one in the middle (seq 3).
    let mut eb = engine_for(&b, EngineConfig::default());
    connect(&mut eb, &a, TrustLevel::Member);
    let log: Vec<SignedAlert> = (0..6)
        .map(|n| alert(&b, n, if n == 2 { Tlp::Amber } else { Tlp::Clear }))
        .collect();
    for (seq, x) in log.iter().enumerate() {
        issue(&mut eb, x.clone(), seq as u64 + 1, T0);
    }
    let clear: Vec<AlertId> = log
        .iter()
        .filter(|x| x.body().tlp == Tlp::Clear)
        .map(|x| x.id())
        .collect();

    // a already holds the first CLEAR alert (from c): it lacks 4 of the page's 5, so
    // it names the one it holds instead of the four it lacks.
    let mut ea = catching_up(&a, &b, 6);
    connect(&mut ea, &c, TrustLevel::Member);
    ea.handle(alert_event(&c, 2, &log[0]), T0);
    let out = ea.handle(
        frame_event(&b, &sync_page(clear.clone(), 6, true, Some(0))),
        T0 + 1,
    );
    let asked = Frame::WantPage {
        epoch: 3,
        after: 0,
        next: 6,
        except: vec![clear[0]],
    };
    assert!(frames_to(&out, &b).contains(&&asked), "{out:?}");
    assert!(
        !frames_to(&out, &b)
            .iter()
            .any(|f| matches!(f, Frame::Want { .. })),
        "the lacked ids are not listed again: {out:?}"
    );

    // b sends the page's alerts but the one held, in log order, never the AMBER one
    // (a is a member), and the answer ends at the page's end.
    let want_page = |after, next, except: Vec<AlertId>| Frame::WantPage {
        epoch: 7,
        after,
        next,
        except,
    };
    let out = eb.handle(
        frame_event(&a, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0,
    );
    let listed: Vec<AlertId> = frames_to(&out, &a)
        .iter()
        .find_map(|f| match f {
            Frame::SyncPage { ids, next: 6, .. } => Some(ids.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(listed, clear);
    let out = eb.handle(frame_event(&a, &want_page(0, 6, vec![clear[0]])), T0);
    assert_eq!(alerts_to(&out, &a), clear[1..].to_vec());
    // Asked again (that page is no longer the last listed), the log is read again for
    // it, with the same answer.
    let out = eb.handle(frame_event(&a, &want_page(0, 6, vec![clear[0]])), T0);
    assert_eq!(alerts_to(&out, &a), clear[1..].to_vec());
    let out = eb.handle(frame_event(&a, &want_page(1, 4, vec![])), T0);
    assert_eq!(alerts_to(&out, &a), vec![clear[1], clear[2]]);
    // A page of another epoch of b's log lists nothing b can find again.
    let out = eb.handle(
        frame_event(
            &a,
            &Frame::WantPage {
                epoch: 8,
                after: 0,
                next: 6,
                except: vec![],
            },
        ),
        T0,
    );
    assert!(alerts_to(&out, &a).is_empty(), "{out:?}");

    // The alerts come back as asked for: stored, not charged to b's flood limit.
    let mut got = Vec::new();
    for x in log.iter().filter(|x| x.body().tlp == Tlp::Clear).skip(1) {
        got.extend(stored(&ea.handle(alert_event(&b, 1, x), T0 + 2)));
    }
    assert_eq!(got, clear[1..].to_vec());
    assert_eq!(stats(&ea, &b).rate_limited, 0);

    // Holding most of a page (three of five), a lists what it lacks.
    let mut ea = catching_up(&a, &b, 6);
    connect(&mut ea, &c, TrustLevel::Member);
    for x in &clear[..3] {
        let x = log.iter().find(|l| l.id() == *x).unwrap();
        ea.handle(alert_event(&c, 2, x), T0);
    }
    let out = ea.handle(
        frame_event(&b, &sync_page(clear.clone(), 6, true, Some(0))),
        T0 + 1,
    );
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::Want {
            ids: vec![clear[3], clear[4]],
            graft: false
        }]
    );
}

#[test]
fn catch_up_pages_stop_before_a_hole_in_the_log_until_it_is_read_again() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let x: Vec<SignedAlert> = (0..4).map(|n| alert(&a, n, Tlp::Clear)).collect();
    let page = |out: &[Action]| {
        frames_to(out, &b)
            .into_iter()
            .find_map(|f| match f {
                Frame::SyncPage {
                    ids, next, done, ..
                } => Some((ids.clone(), *next, *done)),
                _ => None,
            })
            .unwrap()
    };
    // Seqs 1 and 2 are noticed; the notice of 3 is lost (the runtime lagged behind
    // the store), then 4 is noticed.
    for (n, alert) in x.iter().enumerate() {
        let out = ea.handle(local(alert), T0);
        assert!(!out.is_empty());
        if n == 2 {
            ea.handle(Event::LogGap { gen: 1 }, T0);
        } else {
            ea.handle(Event::Committed(vec![(n as u64 + 1, alert.id())]), T0);
        }
    }
    // A page read now stops before the hole: b's cursor cannot pass seq 3.
    let ask = |after| frame_event(&b, &Frame::SyncRequest { epoch: 7, after });
    let out = ea.handle(ask(0), T0 + 1);
    assert_eq!(page(&out), (vec![x[0].id(), x[1].id()], 2, true));
    // So does a want_page of a range across it.
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::WantPage {
                epoch: 7,
                after: 2,
                next: 4,
                except: vec![],
            },
        ),
        T0 + 1,
    );
    assert!(alerts_to(&out, &b).is_empty(), "{out:?}");
    // The store's log read again fills the hole: the next round reads on.
    ea.handle(Event::Committed(vec![(3, x[2].id())]), T0 + 2);
    let out = ea.handle(ask(2), T0 + 2);
    assert_eq!(
        page(&out),
        (vec![], 2, true),
        "still waiting for the re-read"
    );
    // Another lag meanwhile: only its own re-read, the latest, ends the wait.
    ea.handle(Event::LogGap { gen: 2 }, T0 + 2);
    ea.handle(Event::LogResynced { gen: 1 }, T0 + 3);
    let out = ea.handle(ask(2), T0 + 3);
    assert_eq!(page(&out), (vec![], 2, true), "re-read 2 is pending");
    ea.handle(Event::LogResynced { gen: 2 }, T0 + 3);
    let out = ea.handle(ask(2), T0 + 3);
    assert_eq!(page(&out), (vec![x[2].id(), x[3].id()], 4, true));
}

#[test]
fn our_own_alert_listed_back_while_its_commit_is_in_flight_holds_the_cursor() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 1);
    let x = alert(&a, 1, Tlp::Amber);
    ea.handle(local(&x), T0);
    // b lists x back (a's own alert) before a's store has committed it: the page waits.
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![x.id()], 1, true, Some(0))),
        T0 + 1,
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "{out:?}"
    );
    // The commit fails: the cursor stays before the page, which is read again.
    let out = ea.handle(Event::StoreFailed(vec![x.id()]), T0 + 2);
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "{out:?}"
    );

    // An insert that finds the alert already stored settles the page, and adds no log
    // entry of its own (the head stays where the commit notices put it).
    let mut ea = catching_up(&a, &b, 1);
    let y = alert(&a, 2, Tlp::Amber);
    ea.handle(local(&y), T0);
    ea.handle(
        frame_event(&b, &sync_page(vec![y.id()], 1, true, Some(0))),
        T0 + 1,
    );
    let out = ea.handle(Event::AlreadyStored(y.id()), T0 + 2);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::SaveCursor { seq: 1, .. })),
        "{out:?}"
    );
    let head = |e: &mut Engine| {
        let out = e.handle(
            frame_event(&b, &Frame::SyncRequest { epoch: 7, after: 0 }),
            T0 + 3,
        );
        frames_to(&out, &b).iter().find_map(|f| match f {
            Frame::SyncPage { next, .. } => Some(*next),
            _ => None,
        })
    };
    assert_eq!(head(&mut ea), Some(0), "no log entry from a duplicate");
}

#[test]
fn catch_up_lag_is_the_peers_head_past_our_cursor_until_its_alerts_are_stored() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 2);
    let lag = |e: &Engine| {
        e.peer_reports()
            .into_iter()
            .find(|r| r.key == pk(&b))
            .map(|r| r.catch_up_lag)
    };
    assert_eq!(lag(&ea), Some(2));
    let x = alert(&b, 1, Tlp::Clear);
    ea.handle(
        frame_event(&b, &sync_page(vec![x.id()], 2, true, Some(0))),
        T0 + 1,
    );
    assert_eq!(lag(&ea), Some(2), "listed, not stored yet");
    ea.handle(alert_event(&b, 1, &x), T0 + 2);
    ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 2);
    assert_eq!(lag(&ea), Some(0));
}

#[test]
fn a_late_page_answering_an_older_request_is_not_taken_for_the_current_one() {
    let (a, b) = (key(1), key(2));
    // We ask from 0; a page that says it answers a request from 40 is someone else's.
    let mut ea = catching_up(&a, &b, 90);
    let x = alert(&b, 1, Tlp::Clear);
    let late = sync_page(vec![x.id()], 90, true, Some(40));
    let out = ea.handle(frame_event(&b, &late), T0 + 1);
    assert!(frames_to(&out, &b).is_empty(), "{out:?}");
    // The page that answers our request is taken.
    let page = sync_page(vec![x.id()], 90, true, Some(0));
    let out = ea.handle(frame_event(&b, &page), T0 + 2);
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::WantPage {
            epoch: 3,
            after: 0,
            next: 90,
            except: vec![],
        }]
    );
}

#[test]
fn a_page_whose_alert_never_comes_is_read_again_and_the_lister_is_counted() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 1);
    let x = alert(&b, 1, Tlp::Clear);
    let page = sync_page(vec![x.id()], 1, true, Some(0));
    let out = ea.handle(frame_event(&b, &page), T0 + 100);
    // x never comes: the stall check armed by the page's arrival reads it again.
    let out = fire_timers(&mut ea, &out, T0 + 100 + SYNC_TIMEOUT_MS);
    assert_eq!(sync_requests(&out, &b), vec![0], "{out:?}");
    assert_eq!(rejections(&ea, &b, "undelivered"), 1);
}

#[test]
fn an_alert_the_store_could_not_write_keeps_the_cursor_before_its_page() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 1);
    let x = alert(&b, 1, Tlp::Clear);
    let page = sync_page(vec![x.id()], 1, true, Some(0));
    let mut out = ea.handle(frame_event(&b, &page), T0);
    out.extend(ea.handle(alert_event(&b, 1, &x), T0 + 1));
    // The disk is full: the commit fails.
    out.extend(ea.handle(Event::StoreFailed(vec![x.id()]), T0 + 2));
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "{out:?}"
    );
    assert!(
        sync_requests(&out, &b).is_empty(),
        "no request while failing: {out:?}"
    );
    // Later the page is read again from the same cursor, and the lister is not blamed.
    let out = fire_timers(&mut ea, &out, T0 + SYNC_TIMEOUT_MS + 10);
    assert_eq!(sync_requests(&out, &b), vec![0], "{out:?}");
    assert_eq!(rejections(&ea, &b, "undelivered"), 0);
}

#[test]
fn an_alert_asked_for_with_a_graft_is_taken_even_past_the_senders_limit() {
    let (a, b, o) = (key(1), key(2), key(9));
    let cfg = EngineConfig {
        peer_alerts_per_sec: 1,
        peer_alert_burst: 1,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg.clone());
    connect(&mut ea, &b, TrustLevel::Member);
    // b uses up its alert budget...
    ea.handle(alert_event(&b, 1, &alert(&b, 1, Tlp::Clear)), T0);
    // ...then announces y; we ask b for it with a graft.
    let y = alert(&o, 1, Tlp::Clear);
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::Announce {
                ids: vec![y.id()],
                hops: vec![2],
            },
        ),
        T0,
    );
    let out = fire_timers(&mut ea, &out, T0 + cfg.graft_timeout_ms);
    assert!(frames_to(&out, &b)
        .iter()
        .any(|f| matches!(f, Frame::Want { graft: true, .. })));
    // y arrives while b is past its limit: asked for, so decoded and stored.
    let out = ea.handle(alert_event(&b, 2, &y), T0 + cfg.graft_timeout_ms + 1);
    assert_eq!(stored(&out), vec![y.id()]);
    assert_eq!(stats(&ea, &b).penalty, 0);
}

#[test]
fn a_relayed_forged_cancel_does_not_get_the_relay_banned() {
    let (a, b, o, mallory) = (key(1), key(2), key(9), key(66));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    ea.handle(alert_event(&b, 2, &x), T0);
    for n in 0..10 {
        let forged = replacing(&mallory, 10 + n, Kind::Cancel, x.id());
        let out = ea.handle(alert_event(&b, 2, &forged), T0 + n);
        assert!(stored(&out).is_empty());
        assert_eq!(
            disconnect_of(&out, &b),
            None,
            "banned after {} relays",
            n + 1
        );
    }
}

/// Issues `alert` on `e` as the daemon does: [`Event::Local`], then its commit at `seq`.
fn issue(e: &mut Engine, alert: SignedAlert, seq: u64, now: u64) -> Vec<Action> {
    let id = alert.id();
    let mut out = e.handle(local(&alert), now);
    out.extend(e.handle(Event::Committed(vec![(seq, id)]), now));
    out
}

#[test]
fn an_oversized_frame_is_its_own_verdict_and_costs_its_penalty() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let out = ea.handle(Event::OversizedFrame { peer: pk(&b) }, T0);
    assert!(only_verdict(&out, Reason::OversizedFrame), "{out:?}");
    assert_eq!(rejections(&ea, &b, "oversized_frame"), 1);
    assert_eq!(rejections(&ea, &b, "malformed_frame"), 0);
    assert!(Reason::OversizedFrame.penalised());
    assert_eq!(
        stats(&ea, &b).penalty,
        Reason::OversizedFrame.penalty(),
        "penalised once, by the reason's own points"
    );
}

#[test]
fn an_alert_dated_beyond_the_clock_skew_is_refused_and_costs_nothing() {
    let (a, b, o) = (key(1), key(2), key(9));
    let cfg = EngineConfig {
        max_clock_skew_secs: 600,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    connect(&mut ea, &b, TrustLevel::Member);
    let dated = |n: u64, issued_at: u64| {
        let mut body = body(&o, n, Tlp::Clear, vec![]);
        body.issued_at = issued_at;
        SignedAlert::sign(body, &o).unwrap()
    };
    // Eleven minutes ahead (or in 2100): refused, named, not stored, no penalty.
    for (n, issued_at) in [(1, T0 + 660_000), (2, 4_102_444_800_000)] {
        let x = dated(n, issued_at);
        let out = ea.handle(alert_event(&b, 2, &x), T0);
        assert!(only_verdict(&out, Reason::FutureDated), "{out:?}");
        assert!(!ea.knows(&x.id()));
    }
    assert_eq!(rejections(&ea, &b, "future_dated"), 2);
    assert_eq!(stats(&ea, &b).penalty, 0);
    // Nine minutes ahead is within the skew.
    let ok = dated(3, T0 + 540_000);
    let out = ea.handle(alert_event(&b, 2, &ok), T0);
    assert_eq!(stored(&out), vec![ok.id()]);
}

/// An engine with default limits holding 600 alerts of its own, `b` and `c` connected
/// as members.
fn holding_600_with_two_members(b: &SigningKey, c: &SigningKey) -> (Engine, EngineConfig) {
    let a = key(1);
    let cfg = EngineConfig::default();
    let mut ea = engine_for(&a, cfg.clone());
    for n in 0..600 {
        issue(&mut ea, alert(&a, n, Tlp::Clear), n + 1, T0);
    }
    connect(&mut ea, b, TrustLevel::Member);
    connect(&mut ea, c, TrustLevel::Member);
    (ea, cfg)
}

#[test]
fn a_sync_request_flood_is_answered_within_the_work_budget_then_banned() {
    let (b, c) = (key(2), key(3));
    let (mut ea, cfg) = holding_600_with_two_members(&b, &c);
    let pages = |out: &[Action], to: &SigningKey| {
        frames_to(out, to)
            .into_iter()
            .filter(|f| matches!(f, Frame::SyncPage { .. }))
            .count() as u64
    };
    let request = Frame::SyncRequest { epoch: 7, after: 0 };
    let (mut answered, mut banned) = (0, None);
    for _ in 0..5_000 {
        let out = ea.handle(frame_event(&b, &request), T0);
        answered += pages(&out, &b);
        if let Some(until) = disconnect_of(&out, &b) {
            banned = until;
            break;
        }
    }
    // Each request scans a full page (512 entries). The first shows them for the first
    // time (1 unit each); every later one shows them again (`WORK_REPEAT_ENTRY` each):
    // the burst pays for about 25.
    let first = WORK_FRAME + SYNC_PAGE_SCAN as u64;
    let again = WORK_FRAME + WORK_REPEAT_ENTRY * SYNC_PAGE_SCAN as u64;
    let most = 1 + (cfg.peer_work_burst - first) / again + 1;
    assert!(answered <= most, "{answered} pages answered, budget {most}");
    assert!(answered >= most - 2, "only {answered} pages answered");
    assert!(most < 30);
    assert!(
        banned.is_some(),
        "a peer flooding past its budget is banned"
    );
    assert!(rejections(&ea, &b, "over_budget") >= 100);
    // Another peer at the same instant is answered at once.
    let out = ea.handle(frame_event(&c, &request), T0);
    assert_eq!(pages(&out, &c), 1);
    assert_eq!(stats(&ea, &c).rate_limited, 0);
}

/// Reads `ea`'s log as a catch-up does, from `after` on: a `sync_request`, then a
/// `want_page` for each page listed. Returns the alerts sent, and whether every request
/// was answered.
fn read_log(ea: &mut Engine, peer: &SigningKey, mut after: u64) -> (usize, bool) {
    let mut sent = 0;
    loop {
        let out = ea.handle(
            frame_event(peer, &Frame::SyncRequest { epoch: 7, after }),
            T0,
        );
        let Some((next, done)) = frames_to(&out, peer).into_iter().find_map(|f| match f {
            Frame::SyncPage { next, done, .. } => Some((*next, *done)),
            _ => None,
        }) else {
            return (sent, false);
        };
        let ask = Frame::WantPage {
            epoch: 7,
            after,
            next,
            except: vec![],
        };
        let out = ea.handle(frame_event(peer, &ask), T0);
        if rejections(ea, peer, "over_budget") > 0 {
            return (sent, false);
        }
        sent += alerts_to(&out, peer).len();
        if done {
            return (sent, true);
        }
        after = next;
    }
}

#[test]
fn reading_our_log_again_costs_the_repeat_rate_even_after_a_reconnection() {
    let (a, b, c) = (key(1), key(2), key(3));
    // A burst that pays for reading 600 alerts once, and a refill of nearly nothing.
    let cfg = EngineConfig {
        peer_work_burst: 4_000,
        peer_work_per_sec: 1,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    for n in 0..600 {
        issue(&mut ea, alert(&a, n, Tlp::Clear), n + 1, T0);
    }
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    // Forwards, once: every page answered within the budget.
    assert_eq!(read_log(&mut ea, &b, 0), (600, true));
    // Newer entries are new to it: a page of them costs the first-reading rate.
    for n in 600..610 {
        issue(&mut ea, alert(&a, n, Tlp::Clear), n + 1, T0);
    }
    assert_eq!(read_log(&mut ea, &b, 600), (10, true));
    // Reconnected, from the start again: the pages repeat what it was shown, and the
    // first already costs more than is left.
    ea.handle(Event::PeerDisconnected(pk(&b)), T0);
    ea.handle(Event::PeerConnected(pk(&b)), T0);
    assert_eq!(read_log(&mut ea, &b, 0), (0, false));
    assert_eq!(rejections(&ea, &b, "over_budget"), 1);
    // Another peer reads it all at the first-reading rate.
    assert_eq!(read_log(&mut ea, &c, 0), (610, true));
}

#[test]
fn a_page_listed_again_sends_its_alerts_at_the_repeat_rate() {
    let (a, b) = (key(1), key(2));
    // Pays for reading 600 alerts once (about 1,800 units) and one page again (8,193),
    // with about 300 to spare; refills 10,000 a second.
    let cfg = EngineConfig {
        peer_work_burst: 10_300,
        peer_work_per_sec: 10_000,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    for n in 0..600 {
        issue(&mut ea, alert(&a, n, Tlp::Clear), n + 1, T0);
    }
    connect(&mut ea, &b, TrustLevel::Member);
    assert_eq!(read_log(&mut ea, &b, 0), (600, true));
    let sync = Frame::SyncRequest { epoch: 7, after: 0 };
    let out = ea.handle(frame_event(&b, &sync), T0);
    let Some(next) = frames_to(&out, &b).into_iter().find_map(|f| match f {
        Frame::SyncPage { next, .. } => Some(*next),
        _ => None,
    }) else {
        panic!("the page listed again is answered: {out:?}");
    };
    // Its want_page is the page listed last, but it was listed again: 32 units an alert
    // (16,384), not 2 (1,024). A second later the budget is still spent.
    let ask = Frame::WantPage {
        epoch: 7,
        after: 0,
        next,
        except: vec![],
    };
    let out = ea.handle(frame_event(&b, &ask), T0);
    assert_eq!(alerts_to(&out, &b).len(), 512);
    let out = ea.handle(frame_event(&b, &sync), T0 + 1_000);
    assert!(frames_to(&out, &b).is_empty(), "{out:?}");
    assert_eq!(rejections(&ea, &b, "over_budget"), 1);
}

#[test]
fn a_want_of_the_page_listed_last_costs_less_than_other_wants() {
    let (a, b) = (key(1), key(2));
    let cfg = EngineConfig {
        peer_work_burst: 2_700,
        peer_work_per_sec: 1,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg);
    let ids: Vec<AlertId> = (0..200)
        .map(|n| {
            let x = alert(&a, n, Tlp::Clear);
            issue(&mut ea, x.clone(), n + 1, T0);
            x.id()
        })
        .collect();
    connect(&mut ea, &b, TrustLevel::Member);
    let out = ea.handle(
        frame_event(&b, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0,
    );
    assert_eq!(frames_to(&out, &b).len(), 1);
    // The page's ids: 16 + 2 per id asked for (216 + 416 units with the page's scan).
    let want = Frame::Want {
        ids: ids.clone(),
        graft: false,
    };
    let out = ea.handle(frame_event(&b, &want), T0);
    assert_eq!(alerts_to(&out, &b).len(), 200);
    // At most `SEND_FROM_MEMORY` are framed here; the rest are read off the engine's
    // thread.
    let direct = out
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    frame: Frame::Alert { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(direct as u64, SEND_FROM_MEMORY);
    // The same ids again are not of a page listed: each alert sent costs
    // `WORK_REPEAT_ALERT` more, 6,816 units a want. Of the 2,068 left, that answers one
    // more (a frame is answered while the budget is not spent) where wants at the page's
    // rate would answer six; had the first one cost as much, none.
    let mut answered = 0;
    for _ in 0..10 {
        let out = ea.handle(frame_event(&b, &want), T0);
        if alerts_to(&out, &b).is_empty() {
            break;
        }
        answered += 1;
    }
    assert_eq!(answered, 1);
    assert_eq!(rejections(&ea, &b, "over_budget"), 1);
}

#[test]
fn a_want_page_flood_is_answered_within_the_work_budget_then_banned() {
    let (b, c) = (key(2), key(3));
    let (mut ea, cfg) = holding_600_with_two_members(&b, &c);
    // A 23-byte frame asks for a whole page (512 alerts), again and again, never for
    // the page listed last: the first costs the scan plus 2 per alert; every later one
    // shows the page again, at `WORK_REPEAT_ENTRY` per entry and `WORK_REPEAT_ALERT`
    // per alert.
    let ask = Frame::WantPage {
        epoch: 7,
        after: 0,
        next: 600,
        except: vec![],
    };
    let (mut sent, mut banned) = (0u64, None);
    for _ in 0..5_000 {
        let out = ea.handle(frame_event(&b, &ask), T0);
        sent += alerts_to(&out, &b).len() as u64;
        if let Some(until) = disconnect_of(&out, &b) {
            banned = until;
            break;
        }
    }
    let page = SYNC_PAGE_SCAN as u64;
    let first = WORK_FRAME + 3 * page;
    let again = WORK_FRAME + (WORK_REPEAT_ENTRY + WORK_REPEAT_ALERT) * page;
    let most = (1 + (cfg.peer_work_burst - first) / again + 1) * page;
    assert!(most <= 10 * page);
    assert!(sent <= most, "{sent} alerts sent, budget {most}");
    assert!(sent >= most - 2 * SYNC_PAGE_SCAN as u64, "only {sent} sent");
    assert!(
        banned.is_some(),
        "a peer flooding past its budget is banned"
    );
    assert!(rejections(&ea, &b, "over_budget") >= 100);
    // Another peer at the same instant is answered at once.
    let out = ea.handle(frame_event(&c, &ask), T0);
    assert_eq!(alerts_to(&out, &c).len(), SYNC_PAGE_SCAN);
}

#[test]
fn a_flood_of_empty_frames_pays_for_each_frame() {
    let (a, b) = (key(1), key(2));
    let cfg = EngineConfig::default();
    let mut ea = engine_for(&a, cfg.clone());
    connect(&mut ea, &b, TrustLevel::Member);
    let empty = Frame::Want {
        ids: vec![],
        graft: false,
    };
    let mut sent = 0u64;
    while rejections(&ea, &b, "over_budget") == 0 && sent < 1_000_000 {
        ea.handle(frame_event(&b, &empty), T0);
        sent += 1;
    }
    // The burst pays for `WORK_FRAME` units a frame: the first dropped is the next.
    let paid = cfg.peer_work_burst.div_ceil(WORK_FRAME);
    assert_eq!(sent, paid + 1, "{sent} frames until the first was dropped");
}

#[test]
fn an_announce_flood_cannot_crowd_out_other_peers_announces() {
    let (a, b, c, o) = (key(1), key(2), key(3), key(9));
    let cfg = EngineConfig::default();
    let mut ea = engine_for(&a, cfg.clone());
    connect(&mut ea, &b, TrustLevel::Member);
    connect(&mut ea, &c, TrustLevel::Member);
    // 110 frames of made-up ids: more than the whole table of missing ids.
    let mut timers = Vec::new();
    for f in 0..110u32 {
        let ids: Vec<AlertId> = (0..MAX_IDS_PER_FRAME as u32)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&f.to_be_bytes());
                b[4..8].copy_from_slice(&i.to_be_bytes());
                AlertId(b)
            })
            .collect();
        let hops = vec![1; ids.len()];
        timers.extend(ea.handle(frame_event(&b, &Frame::Announce { ids, hops }), T0));
    }
    let graft_timers = |out: &[Action]| {
        out.iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::SetTimer {
                        timer: Timer::Graft(_),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(graft_timers(&timers), MAX_MISSING_PER_PEER);
    // An honest announce is still heard and asked for.
    let x = alert(&o, 1, Tlp::Clear);
    let out = ea.handle(
        frame_event(
            &c,
            &Frame::Announce {
                ids: vec![x.id()],
                hops: vec![2],
            },
        ),
        T0 + 1,
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::SetTimer { timer: Timer::Graft(id), .. } if *id == x.id())));
    let out = fire_timers(&mut ea, &out, T0 + 1 + cfg.graft_timeout_ms);
    assert_eq!(
        frames_to(&out, &c),
        vec![&Frame::Want {
            ids: vec![x.id()],
            graft: true
        }]
    );
    // b is asked for what it announced, sends none of it, and is banned for it.
    let mut banned = None;
    let mut pending: BTreeMap<(u64, usize), Timer> = BTreeMap::new();
    for (n, a) in timers.iter().enumerate() {
        if let Action::SetTimer { at, timer } = a {
            pending.insert((*at, n), timer.clone());
        }
    }
    let mut n = timers.len();
    while let Some(((at, _), timer)) = pending.pop_first() {
        let out = ea.handle(Event::Timer(timer), at);
        if let Some(until) = disconnect_of(&out, &b) {
            banned = until;
            break;
        }
        for a in out {
            if let Action::SetTimer { at, timer } = a {
                n += 1;
                pending.insert((at, n), timer);
            }
        }
    }
    assert!(
        banned.is_some(),
        "an announcer whose ids never arrive is banned"
    );
    assert!(rejections(&ea, &b, "undelivered") >= 100);
    assert_eq!(stats(&ea, &c).banned_until, None);
}

#[test]
fn the_wants_for_one_announce_travel_in_one_frame() {
    let (a, b, o) = (key(1), key(2), key(9));
    let cfg = EngineConfig::default();
    let mut ea = engine_for(&a, cfg.clone());
    connect(&mut ea, &b, TrustLevel::Member);
    let missed: Vec<SignedAlert> = (0..50).map(|n| alert(&o, n, Tlp::Clear)).collect();
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::Announce {
                ids: missed.iter().map(|x| x.id()).collect(),
                hops: vec![2; missed.len()],
            },
        ),
        T0,
    );
    let out = fire_timers(&mut ea, &out, T0 + cfg.graft_timeout_ms);
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::Want {
            ids: missed.iter().map(|x| x.id()).collect(),
            graft: true
        }]
    );
}

#[test]
fn alerts_asked_for_are_not_charged_to_the_flood_limit() {
    let (a, b) = (key(1), key(2));
    let cfg = EngineConfig {
        peer_alerts_per_sec: 1,
        peer_alert_burst: 5,
        ..EngineConfig::default()
    };
    let mut ea = engine_for(&a, cfg.clone());
    connect(&mut ea, &b, TrustLevel::Member);
    let missed: Vec<SignedAlert> = (0..50).map(|n| alert(&b, n, Tlp::Clear)).collect();
    ea.handle(frame_event(&b, &Frame::Hello { epoch: 3, head: 50 }), T0);
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::SyncPage {
                epoch: 3,
                ids: missed.iter().map(|x| x.id()).collect(),
                next: 50,
                done: true,
                answers: None,
            },
        ),
        T0,
    );
    assert_eq!(
        frames_to(&out, &b),
        vec![&Frame::WantPage {
            epoch: 3,
            after: 0,
            next: 50,
            except: vec![],
        }]
    );
    // The whole page arrives at once, ten times the burst: all of it is taken.
    let mut taken = 0;
    for x in &missed {
        taken += stored(&ea.handle(alert_event(&b, 1, x), T0)).len();
    }
    assert_eq!(taken, 50);
    assert_eq!(stats(&ea, &b).rate_limited, 0);

    // An alert asked for with a graft is not charged either...
    let y = alert(&b, 100, Tlp::Clear);
    let out = ea.handle(
        frame_event(
            &b,
            &Frame::Announce {
                ids: vec![y.id()],
                hops: vec![1],
            },
        ),
        T0,
    );
    fire_timers(&mut ea, &out, T0 + cfg.graft_timeout_ms);
    // ...while unsolicited alerts still are: the burst of 5, then throttled.
    let mut unsolicited = 0;
    for n in 200..208 {
        unsolicited += stored(&ea.handle(alert_event(&b, 1, &alert(&b, n, Tlp::Clear)), T0)).len();
    }
    assert_eq!(unsolicited, 5);
    assert_eq!(stats(&ea, &b).rate_limited, 3);
    let out = ea.handle(alert_event(&b, 1, &y), T0 + cfg.graft_timeout_ms);
    assert_eq!(stored(&out), vec![y.id()]);
}

/// A revocation and the certificate it takes back, both signed by `org`, for `node`
/// from `at`.
fn revocation_of(org: &SigningKey, node: &SigningKey, at: u64) -> (Vec<u8>, Vec<u8>) {
    use tocsin_proto::identity::{NodeCert, Revocation, Signed, IDENTITY_VERSION};
    let cert = NodeCert {
        v: IDENTITY_VERSION,
        org: pk(org),
        node: pk(node),
        agency: "CERT-A".into(),
        not_before: ISSUED,
        not_after: ISSUED + 86_400_000,
        serial: 1,
    };
    let rev = Revocation {
        v: IDENTITY_VERSION,
        org: pk(org),
        node: pk(node),
        revoked_at: at,
        reason: "lost".into(),
    };
    (
        Signed::sign(rev, org).unwrap().to_bytes(),
        Signed::sign(cert, org).unwrap().to_bytes(),
    )
}

#[test]
fn a_revoked_origin_s_alerts_from_the_revocation_on_are_refused_and_no_longer_shared() {
    let (me, relay, origin, other) = (key(1), key(2), key(3), key(4));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &relay, TrustLevel::Member);
    connect(&mut e, &other, TrustLevel::Member);
    // Revoked from R, a little after T0 (offsets below are from ISSUED).
    let r_off = T0 - ISSUED + 20;
    // Held before the revocation arrived: one from before its time, one from after.
    let before = alert(&origin, 10, Tlp::Clear);
    let after = alert(&origin, r_off + 10, Tlp::Clear);
    for a in [&before, &after] {
        let out = e.handle(alert_event(&relay, 2, a), T0);
        assert_eq!(stored(&out), vec![a.id()]);
        e.handle(Event::Committed(vec![(e.known_count() as u64, a.id())]), T0);
    }
    e.handle(
        Event::Revoked {
            node: pk(&origin),
            at: ISSUED + r_off,
        },
        T0,
    );
    // A later one is refused, unpenalised (the relay could not have known).
    let late = alert(&origin, r_off + 40, Tlp::Clear);
    let out = e.handle(alert_event(&relay, 2, &late), T0);
    assert!(stored(&out).is_empty());
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Verdict {
            reason: Reason::RevokedOrigin,
            ..
        }
    )));
    // An earlier one still arrives while the revocation time has not come.
    let early = alert(&origin, 15, Tlp::Clear);
    let out = e.handle(alert_event(&relay, 2, &early), T0);
    assert_eq!(stored(&out), vec![early.id()]);
    // Once it has, nothing of that key comes in, whatever its date: a stolen key dates
    // its alerts, and its cancels of the key's own earlier alerts, before the revocation.
    let backdated = alert(&origin, 16, Tlp::Clear);
    let cancel = replacing(&origin, 17, Kind::Cancel, before.id());
    for a in [&backdated, &cancel] {
        let out = e.handle(alert_event(&relay, 2, a), ISSUED + r_off);
        assert!(stored(&out).is_empty(), "a backdated alert came in");
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Verdict {
                reason: Reason::RevokedOrigin,
                ..
            }
        )));
    }
    // A peer reading our log gets the alerts from before the revocation, never the one
    // from after it, even though it is held.
    let out = e.handle(
        frame_event(&other, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0,
    );
    let page: Vec<AlertId> = frames_to(&out, &other)
        .into_iter()
        .flat_map(|f| match f {
            Frame::SyncPage { ids, .. } => ids.clone(),
            _ => vec![],
        })
        .collect();
    assert!(page.contains(&before.id()), "{page:?}");
    assert!(!page.contains(&after.id()), "{page:?}");
    // An earlier revocation time wins over a later one, whatever the order.
    e.handle(
        Event::Revoked {
            node: pk(&origin),
            at: ISSUED + r_off + 50,
        },
        T0,
    );
    let out = e.handle(
        alert_event(&relay, 2, &alert(&origin, r_off + 45, Tlp::Clear)),
        T0,
    );
    assert!(
        stored(&out).is_empty(),
        "the earlier revocation time still holds"
    );
}

#[test]
fn a_revoke_frame_is_verified_before_the_runtime_sees_it() {
    let (me, peer, org, node, other_org) = (key(1), key(2), key(3), key(4), key(5));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &peer, TrustLevel::Member);
    let (rev, cert) = revocation_of(&org, &node, ISSUED);
    let frame = |revocation: &[u8], cert: &[u8]| Frame::Revoke {
        revocation: serde_bytes::ByteBuf::from(revocation.to_vec()),
        cert: serde_bytes::ByteBuf::from(cert.to_vec()),
    };
    let out = e.handle(frame_event(&peer, &frame(&rev, &cert)), T0);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Revocation { proof, .. } if proof.revocation().node == pk(&node)
    )));
    // Another org's certificate proves nothing; a flipped bit breaks a signature.
    let (_, foreign_cert) = revocation_of(&other_org, &node, ISSUED);
    let mut flipped = rev.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for (r, c) in [(&rev, &foreign_cert), (&flipped, &cert)] {
        let out = e.handle(frame_event(&peer, &frame(r, c)), T0);
        assert!(!out.iter().any(|a| matches!(a, Action::Revocation { .. })));
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Verdict {
                reason: Reason::BadRevocation,
                ..
            }
        )));
    }
}

/// A receipt signed by `receiver` for `alert` of `origin`.
fn receipt_frame(receiver: &SigningKey, origin: &SigningKey, alert: AlertId) -> Frame {
    use tocsin_proto::identity::{Receipt, Signed, IDENTITY_VERSION};
    let body = Receipt {
        v: IDENTITY_VERSION,
        alert,
        origin: pk(origin),
        receiver: pk(receiver),
        received_at: ISSUED,
        acked_at: None,
        acked_by: None,
    };
    Frame::Receipt {
        receipt: serde_bytes::ByteBuf::from(Signed::sign(body, receiver).unwrap().to_bytes()),
    }
}

#[test]
fn receipts_are_taken_only_from_their_signer_for_our_amber_and_red_alerts() {
    let (me, peer, other) = (key(1), key(2), key(3));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &peer, TrustLevel::Partner);
    let amber = alert(&me, 1, Tlp::Amber);
    let clear = alert(&me, 2, Tlp::Clear);
    let theirs = alert(&other, 3, Tlp::Amber);
    issue(&mut e, amber.clone(), 1, T0);
    issue(&mut e, clear.clone(), 2, T0);
    let kept = |out: &[Action]| {
        out.iter()
            .any(|a| matches!(a, Action::Receipt { peer: p, .. } if *p == pk(&peer)))
    };
    let out = e.handle(
        frame_event(&peer, &receipt_frame(&peer, &me, amber.id())),
        T0,
    );
    assert!(kept(&out), "{out:?}");
    // For a CLEAR alert, or one we do not hold: ignored, not penalised.
    for id in [clear.id(), theirs.id()] {
        let out = e.handle(frame_event(&peer, &receipt_frame(&peer, &me, id)), T0);
        assert!(!kept(&out) && out.is_empty(), "{out:?}");
    }
    // From a peer that may not hold it (a member, for AMBER): ignored.
    let member = key(4);
    connect(&mut e, &member, TrustLevel::Member);
    let out = e.handle(
        frame_event(&member, &receipt_frame(&member, &me, amber.id())),
        T0,
    );
    assert!(out.is_empty(), "{out:?}");
    // Relayed (signed by another node), or addressed to another origin: penalised.
    let relayed = receipt_frame(&other, &me, amber.id());
    let misaddressed = receipt_frame(&peer, &other, amber.id());
    for f in [relayed, misaddressed] {
        let out = e.handle(frame_event(&peer, &f), T0);
        assert!(!kept(&out));
        assert!(only_verdict(&out, Reason::BadReceipt), "{out:?}");
    }
    // One that would be ignored is ignored before its signature is checked: a broken
    // signature on a receipt of a CLEAR alert costs no check and no penalty.
    let Frame::Receipt { receipt } = receipt_frame(&peer, &me, clear.id()) else {
        unreachable!()
    };
    let broken = Frame::Receipt {
        receipt: flipped(&receipt),
    };
    let out = e.handle(frame_event(&peer, &broken), T0);
    assert!(out.is_empty(), "{out:?}");
    // The member's receipt was ignored, not remembered: promoted to partner, the same
    // bytes are kept when they come again.
    e.handle(
        Event::Trust {
            key: pk(&member),
            level: Some(TrustLevel::Partner),
        },
        T0,
    );
    let out = e.handle(
        frame_event(&member, &receipt_frame(&member, &me, amber.id())),
        T0,
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Receipt { peer: p, .. } if *p == pk(&member))),
        "{out:?}"
    );
}

/// `bytes` with their last bit flipped (a broken signature).
fn flipped(bytes: &[u8]) -> serde_bytes::ByteBuf {
    let mut forged = bytes.to_vec();
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }
    serde_bytes::ByteBuf::from(forged)
}

/// Replaying one valid receipt or revocation must not buy signature checks on the
/// actor, nor a store write each: an exact repeat is dropped unchecked. A copy with a
/// flipped signature byte is not a repeat: it is checked, and penalised.
#[test]
fn an_exact_repeat_of_a_verified_signed_frame_is_dropped_and_a_forged_copy_is_not() {
    let (me, peer, org, node) = (key(1), key(2), key(3), key(4));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &peer, TrustLevel::Partner);
    let amber = alert(&me, 1, Tlp::Amber);
    issue(&mut e, amber.clone(), 1, T0);
    let frame = receipt_frame(&peer, &me, amber.id());
    let out = e.handle(frame_event(&peer, &frame), T0);
    assert!(
        out.iter().any(|a| matches!(a, Action::Receipt { .. })),
        "{out:?}"
    );
    for _ in 0..100 {
        let out = e.handle(frame_event(&peer, &frame), T0);
        assert!(out.is_empty(), "a repeat is taken again: {out:?}");
    }
    let Frame::Receipt { receipt } = &frame else {
        unreachable!()
    };
    let forged = Frame::Receipt {
        receipt: flipped(receipt),
    };
    let out = e.handle(frame_event(&peer, &forged), T0);
    assert!(only_verdict(&out, Reason::BadReceipt), "{out:?}");

    let (rev, cert) = revocation_of(&org, &node, ISSUED);
    let revoke = Frame::Revoke {
        revocation: serde_bytes::ByteBuf::from(rev),
        cert: serde_bytes::ByteBuf::from(cert),
    };
    let digest = |out: &[Action]| {
        out.iter().find_map(|a| match a {
            Action::Revocation { digest, .. } => Some(*digest),
            _ => None,
        })
    };
    // Until the runtime keeps it, a repeat is judged again (it may be kept later, once
    // the node it revokes has shown its certificate)...
    let first = digest(&e.handle(frame_event(&peer, &revoke), T0)).expect("handed over");
    assert_eq!(
        digest(&e.handle(frame_event(&peer, &revoke), T0)),
        Some(first)
    );
    // ...and once kept, it is dropped unchecked.
    e.revocation_kept(first);
    for _ in 0..100 {
        let out = e.handle(frame_event(&peer, &revoke), T0);
        assert!(out.is_empty(), "a repeat is taken again: {out:?}");
    }
}

#[test]
fn a_red_alert_naming_an_org_key_reaches_that_agency_s_certified_nodes_only() {
    let (me, a1, other, org) = (key(1), key(2), key(3), key(9));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &a1, TrustLevel::Partner);
    connect(&mut e, &other, TrustLevel::Partner);
    e.handle(
        Event::PeerOrg {
            node: pk(&a1),
            org: Some(pk(&org)),
        },
        T0,
    );
    let red = red(&me, 1, vec![pk(&org)]);
    let out = issue(&mut e, red.clone(), 1, T0);
    assert_eq!(
        alerts_to(&out, &a1),
        vec![red.id()],
        "the agency's node gets it"
    );
    assert!(
        alerts_to(&out, &other).is_empty(),
        "another partner does not"
    );
    // Its certificate no longer valid: it is no longer named.
    e.handle(
        Event::PeerOrg {
            node: pk(&a1),
            org: None,
        },
        T0,
    );
    let second = self::red(&me, 2, vec![pk(&org)]);
    let out = issue(&mut e, second, 2, T0);
    assert!(alerts_to(&out, &a1).is_empty());

    // On the receiving side: a RED alert naming our org names us.
    let (origin, node) = (key(5), key(6));
    let mut r = engine_for(&node, EngineConfig::default());
    connect(&mut r, &origin, TrustLevel::Partner);
    let to_org = self::red(&origin, 3, vec![pk(&org)]);
    let out = r.handle(alert_event(&origin, 1, &to_org), T0);
    assert!(stored(&out).is_empty(), "not ours without our org");
    r.set_org(Some(pk(&org)));
    let again = self::red(&origin, 4, vec![pk(&org)]);
    let out = r.handle(alert_event(&origin, 1, &again), T0);
    assert_eq!(stored(&out), vec![again.id()]);
}

/// A `sighting` frame of alert `id`, signed by `observer`.
fn sighting_frame(id: AlertId, observer: &SigningKey, count: u32, last_seen: u64) -> Frame {
    use tocsin_proto::identity::{Sighting, Signed, IDENTITY_VERSION};
    let body = Sighting {
        v: IDENTITY_VERSION,
        alert: Some(id),
        indicator: None,
        observer: pk(observer),
        count,
        first_seen: ISSUED,
        last_seen,
        note: String::new(),
    };
    Frame::Sighting {
        sighting: serde_bytes::ByteBuf::from(Signed::sign(body, observer).unwrap().to_bytes()),
    }
}

/// A flood of distinct sightings buys at most the sighting budget's worth of signature
/// checks: beyond it, they are dropped before their signatures are looked at (here,
/// forged ones: only the checked ones are judged).
#[test]
fn sightings_beyond_the_budget_are_dropped_before_their_signature_is_checked() {
    let (me, peer) = (key(1), key(2));
    let cfg = EngineConfig {
        penalty_threshold: u32::MAX,
        ..EngineConfig::default()
    };
    let burst = (cfg.peer_alert_burst / 10) as usize;
    let mut e = engine_for(&me, cfg);
    connect(&mut e, &peer, TrustLevel::Member);
    let clear = alert(&me, 1, Tlp::Clear);
    issue(&mut e, clear.clone(), 1, T0);
    let mut judged = 0;
    for n in 0..burst as u64 + 100 {
        let Frame::Sighting { sighting } = sighting_frame(clear.id(), &peer, 1, ISSUED + n) else {
            unreachable!()
        };
        let frame = Frame::Sighting {
            sighting: flipped(&sighting),
        };
        let out = e.handle(frame_event(&peer, &frame), T0);
        judged += out
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Verdict {
                        reason: Reason::BadSighting,
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(judged, burst, "checked beyond the sighting budget");
}

#[test]
fn a_sighting_is_signed_by_its_observer_and_only_open_alerts_sightings_travel_on() {
    let (me, peer, other) = (key(1), key(2), key(3));
    let mut e = engine_for(&me, EngineConfig::default());
    connect(&mut e, &peer, TrustLevel::Member);
    let clear = alert(&me, 1, Tlp::Clear);
    issue(&mut e, clear.clone(), 1, T0);
    let sighting =
        |observer: &SigningKey, last_seen: u64| sighting_frame(clear.id(), observer, 3, last_seen);
    let kept = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Sighting { .. }));
    let out = e.handle(frame_event(&peer, &sighting(&peer, ISSUED + 5)), T0);
    assert!(kept(&out));
    // The same again, or an older one: nothing to keep.
    let out = e.handle(frame_event(&peer, &sighting(&peer, ISSUED + 5)), T0);
    assert!(out.is_empty(), "{out:?}");
    // Relayed (another observer's) of a CLEAR alert: kept, and passed on to the
    // alert's audience but not back to the relay or the observer.
    let third = key(4);
    connect(&mut e, &other, TrustLevel::Member);
    connect(&mut e, &third, TrustLevel::Member);
    let out = e.handle(frame_event(&peer, &sighting(&other, ISSUED + 9)), T0);
    assert!(kept(&out), "{out:?}");
    let sent_to = |out: &[Action], who: &SigningKey| {
        frames_to(out, who)
            .iter()
            .any(|f| matches!(f, Frame::Sighting { .. }))
    };
    assert!(sent_to(&out, &third), "{out:?}");
    assert!(!sent_to(&out, &peer) && !sent_to(&out, &other), "{out:?}");
    assert_eq!(stats(&e, &peer).penalty, 0);
    // Once only: the same again from another peer goes nowhere.
    let out = e.handle(frame_event(&third, &sighting(&other, ISSUED + 9)), T0);
    assert!(out.is_empty(), "{out:?}");

    // Of an AMBER alert, only the observer may send its sighting: a relayed one is
    // penalised, never kept.
    let amber = alert(&me, 2, Tlp::Amber);
    issue(&mut e, amber.clone(), 2, T0);
    let relayed = sighting_frame(amber.id(), &other, 1, ISSUED + 1);
    let out = e.handle(frame_event(&peer, &relayed), T0);
    assert!(only_verdict(&out, Reason::BadSighting), "{out:?}");
}

/// Relayed sightings of a CLEAR alert: a made-up observer's is kept but not passed on
/// (it stops at the first node that does not know it), a blocked observer's is dropped,
/// at most `MAX_UNKNOWN_OBSERVERS_PER_ALERT` unknown observers of one alert are taken in,
/// and only community peers relay.
#[test]
fn relayed_sightings_of_unknown_or_blocked_observers_go_no_further_and_are_capped() {
    let (me, relay, next, blocked) = (key(1), key(2), key(3), key(4));
    let cfg = EngineConfig {
        peer_alert_burst: 10_000,
        ..EngineConfig::default()
    };
    let mut e = engine_for(&me, cfg);
    connect(&mut e, &relay, TrustLevel::Member);
    connect(&mut e, &next, TrustLevel::Member);
    e.load_trust(pk(&blocked), TrustLevel::Blocked);
    let clear = alert(&me, 1, Tlp::Clear);
    issue(&mut e, clear.clone(), 1, T0);
    let kept = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Sighting { .. }));

    let out = e.handle(
        frame_event(&relay, &sighting_frame(clear.id(), &key(50), 1, ISSUED)),
        T0,
    );
    assert!(kept(&out), "{out:?}");
    assert!(
        frames_to(&out, &next).is_empty(),
        "a made-up observer's went on: {out:?}"
    );
    let out = e.handle(
        frame_event(&relay, &sighting_frame(clear.id(), &blocked, 1, ISSUED)),
        T0,
    );
    assert!(out.is_empty(), "{out:?}");

    let mut taken = 1;
    for n in 0..300u32 {
        let mut seed = [9u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let observer = SigningKey::from_bytes(&seed);
        let out = e.handle(
            frame_event(&relay, &sighting_frame(clear.id(), &observer, 1, ISSUED)),
            T0,
        );
        taken += usize::from(kept(&out));
    }
    assert_eq!(taken, MAX_UNKNOWN_OBSERVERS_PER_ALERT as usize);
    assert_eq!(stats(&e, &relay).penalty, 0);
    // The made-up observers silence nobody: a direct observer's and a known observer's
    // relayed sighting are still taken.
    let out = e.handle(
        frame_event(&next, &sighting_frame(clear.id(), &next, 1, ISSUED)),
        T0,
    );
    assert!(kept(&out), "{out:?}");
    let out = e.handle(
        frame_event(&next, &sighting_frame(clear.id(), &relay, 1, ISSUED)),
        T0,
    );
    assert!(kept(&out), "{out:?}");
    // A public peer relays nobody's sightings.
    let public = key(5);
    connect(&mut e, &public, TrustLevel::Public);
    let out = e.handle(
        frame_event(&public, &sighting_frame(clear.id(), &next, 2, ISSUED + 1)),
        T0,
    );
    assert!(out.is_empty(), "{out:?}");
}

/// A sighting of a CLEAR alert reaches an origin that is not the observer's peer: the
/// node between them passes it on.
#[test]
fn a_sighting_of_a_clear_alert_travels_to_a_distant_origin() {
    let (origin, relay, observer) = (key(1), key(2), key(3));
    let mut e = engine_for(&relay, EngineConfig::default());
    connect(&mut e, &origin, TrustLevel::Member);
    connect(&mut e, &observer, TrustLevel::Member);
    let clear = alert(&origin, 1, Tlp::Clear);
    let out = e.handle(alert_event(&origin, 1, &clear), T0);
    assert_eq!(stored(&out), vec![clear.id()]);
    let frame = sighting_frame(clear.id(), &observer, 2, ISSUED + 1);
    let out = e.handle(frame_event(&observer, &frame), T0);
    assert_eq!(frames_to(&out, &origin), vec![&frame]);
}

/// A re-keyed node keeps its database, so its log keeps its epoch: catch-up with its new
/// key resumes at the cursor saved for its former key, not at the start of its log. A
/// peer's own cursor wins, and another log, or a log behind the cursor, starts over.
#[test]
fn a_re_keyed_peer_s_catch_up_resumes_at_its_former_key_s_cursor() {
    let (a, old, new, org) = (key(1), key(2), key(3), key(20));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.load_cursor(pk(&old), 3, 40);
    ea.load_agency(pk(&old), pk(&org));
    // A key of another agency, or of none, claiming the same log takes nothing over.
    for (stranger, agency) in [(key(7), Some(key(21))), (key(8), None)] {
        if let Some(o) = &agency {
            ea.handle(
                Event::PeerOrg {
                    node: pk(&stranger),
                    org: Some(pk(o)),
                },
                T0,
            );
        }
        connect(&mut ea, &stranger, TrustLevel::Partner);
        let out = ea.handle(
            frame_event(&stranger, &Frame::Hello { epoch: 3, head: 50 }),
            T0,
        );
        assert_eq!(sync_requests(&out, &stranger), vec![0], "{agency:?}");
    }
    ea.handle(
        Event::PeerOrg {
            node: pk(&new),
            org: Some(pk(&org)),
        },
        T0,
    );
    connect(&mut ea, &new, TrustLevel::Partner);
    let out = ea.handle(frame_event(&new, &Frame::Hello { epoch: 3, head: 50 }), T0);
    assert_eq!(sync_requests(&out, &new), vec![40]);
    let adopted = out.iter().any(|x| {
        matches!(x, Action::CursorAdopted { peer, from, seq: 40 }
                 if *peer == pk(&new) && *from == pk(&old))
    });
    assert!(adopted, "{out:?}");
    assert!(out.iter().any(|x| matches!(
        x,
        Action::SaveCursor { peer, epoch: 3, seq: 40 } if *peer == pk(&new)
    )));

    let hello_after = |e: &mut Engine, peer: &SigningKey, epoch: u64, head: u64| {
        connect(e, peer, TrustLevel::Partner);
        let out = e.handle(frame_event(peer, &Frame::Hello { epoch, head }), T0);
        assert!(!out
            .iter()
            .any(|x| matches!(x, Action::CursorAdopted { .. })));
        sync_requests(&out, peer)
    };
    assert_eq!(hello_after(&mut ea, &key(4), 9, 50), vec![0], "another log");
    assert_eq!(
        hello_after(&mut ea, &key(5), 3, 30),
        vec![0],
        "behind the cursor"
    );
    ea.load_cursor(pk(&key(6)), 3, 5);
    assert_eq!(
        hello_after(&mut ea, &key(6), 3, 50),
        vec![5],
        "its own cursor"
    );
}

/// Alerts issued here under a former node key are held as if received from their
/// origin: CLEAR is relayed at hop 2, which a receiver finds honest (hop 1 would be a
/// lie: only an origin sends at hop 1), and AMBER is not shared at all, since only
/// its origin may send it.
#[test]
fn alerts_issued_under_a_former_key_are_relayed_at_an_honest_hop_count() {
    let (old, new, p) = (key(1), key(2), key(3));
    let clear = alert(&old, 1, Tlp::Clear);
    let amber = alert(&old, 2, Tlp::Amber);
    let mut en = engine_for(&new, EngineConfig::default());
    for (seq, a) in [(1, &clear), (2, &amber)] {
        assert!(en.load_alert(seq, KnownAlert::of(a, 0, None)));
    }
    let mine = alert(&new, 3, Tlp::Clear);
    assert!(!en.load_alert(3, KnownAlert::of(&mine, 0, None)));
    connect(&mut en, &p, TrustLevel::Partner);
    let out = en.handle(
        frame_event(&p, &Frame::SyncRequest { epoch: 7, after: 0 }),
        T0,
    );
    let listed: Vec<AlertId> = frames_to(&out, &p)
        .into_iter()
        .filter_map(|f| match f {
            Frame::SyncPage { ids, .. } => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(listed.contains(&clear.id()), "{out:?}");
    assert!(
        !listed.contains(&amber.id()),
        "AMBER of a former key: {out:?}"
    );
    let want = Frame::Want {
        ids: vec![clear.id(), amber.id()],
        graft: false,
    };
    let out = en.handle(frame_event(&p, &want), T0);
    let sent: Vec<(AlertId, u8)> = out
        .iter()
        .flat_map(|x| match x {
            Action::SendStored { peer, alerts } if *peer == pk(&p) => alerts.clone(),
            Action::Send {
                peer,
                frame: Frame::Alert { hops, envelope },
            } if *peer == pk(&p) => vec![(SignedAlert::decode(envelope).unwrap().id(), *hops)],
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(sent, vec![(clear.id(), 2)]);

    // The receiver takes it from the new key as a relay, with no penalty.
    let mut ep = engine_for(&p, EngineConfig::default());
    connect(&mut ep, &new, TrustLevel::Partner);
    let out = ep.handle(alert_event(&new, 2, &clear), T0);
    assert_eq!(stored(&out), vec![clear.id()]);
    assert_eq!(stats(&ep, &new).penalty, 0);
}

/// One observer's flood of ever newer sightings through a relay uses at most its share
/// of the relay's sighting budget: another observer's still gets through. A sighting
/// dated ahead of the clock is dropped.
#[test]
fn one_observer_s_sighting_flood_leaves_room_for_the_others() {
    let (me, relay, x, y) = (key(1), key(2), key(3), key(4));
    let mut e = engine_for(&me, EngineConfig::default());
    for k in [&relay, &x, &y] {
        connect(&mut e, k, TrustLevel::Member);
    }
    let clear = alert(&me, 1, Tlp::Clear);
    issue(&mut e, clear.clone(), 1, T0);
    let kept = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Sighting { .. }));
    let mut taken = 0;
    for n in 0..400 {
        let out = e.handle(
            frame_event(&relay, &sighting_frame(clear.id(), &x, 1, ISSUED + n)),
            T0,
        );
        taken += usize::from(kept(&out));
    }
    assert!(taken < 400 / 2, "one observer took {taken}");
    assert!(stats(&e, &relay).rate_limited > 0);
    let out = e.handle(
        frame_event(&relay, &sighting_frame(clear.id(), &y, 1, ISSUED)),
        T0,
    );
    assert!(kept(&out), "{out:?}");
    let ahead = T0 + 3_600_000;
    let out = e.handle(
        frame_event(&y, &sighting_frame(clear.id(), &y, 1, ahead)),
        T0,
    );
    assert!(!kept(&out), "{out:?}");
}

/// A promotion over more alerts than one page offers them all, a page per event (the
/// work of one event stays bounded however many are stored): the first page at once,
/// the rest from timers. A disconnection cuts the walk short, and the next connection
/// offers everything again, from the start.
#[test]
fn a_promotion_over_many_alerts_offers_them_all_a_page_at_a_time() {
    let (a, b) = (key(1), key(2));
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let n = OFFER_PAGE as u64 * 2 + 10;
    let mut want: Vec<AlertId> = Vec::new();
    for i in 1..=n {
        let x = alert(&a, i, Tlp::Amber);
        want.push(x.id());
        issue(&mut ea, x, i, T0);
    }
    want.sort();
    let promote = |ea: &mut Engine, level, at| {
        ea.handle(
            Event::Trust {
                key: pk(&b),
                level: Some(level),
            },
            at,
        )
    };
    let out = promote(&mut ea, TrustLevel::Partner, T0 + 10);
    assert_eq!(alerts_to(&out, &b).len(), OFFER_PAGE, "one page at once");
    let more = fire_timers(&mut ea, &out, T0 + 10);
    let mut got = [alerts_to(&out, &b), alerts_to(&more, &b)].concat();
    got.sort();
    assert_eq!(got, want, "each once, all of them");
    // Demoted and promoted again; cut short by a disconnection after the first page.
    promote(&mut ea, TrustLevel::Member, T0 + 20);
    let out = promote(&mut ea, TrustLevel::Partner, T0 + 30);
    assert_eq!(alerts_to(&out, &b).len(), OFFER_PAGE);
    ea.handle(Event::PeerDisconnected(pk(&b)), T0 + 31);
    let late = fire_timers(&mut ea, &out, T0 + 31);
    assert!(
        alerts_to(&late, &b).is_empty(),
        "not to a peer gone: {late:?}"
    );
    let out = ea.handle(Event::PeerConnected(pk(&b)), T0 + 40);
    let more = fire_timers(&mut ea, &out, T0 + 40);
    let mut got = [alerts_to(&out, &b), alerts_to(&more, &b)].concat();
    got.sort();
    assert_eq!(got, want);
    // Demoted, and promoted again while the demotion's walk (which offers nothing) is
    // under way: offered everything again.
    let out = promote(&mut ea, TrustLevel::Member, T0 + 50);
    assert!(alerts_to(&out, &b).is_empty(), "{out:?}");
    let again = promote(&mut ea, TrustLevel::Partner, T0 + 51);
    assert_eq!(alerts_to(&again, &b).len(), OFFER_PAGE);
    // A demotion during a walk ends it.
    promote(&mut ea, TrustLevel::Member, T0 + 52);
    let more = fire_timers(&mut ea, &[out, again].concat(), T0 + 52);
    assert!(alerts_to(&more, &b).is_empty(), "{more:?}");
    // A walk started over: the timer the old walk left behind does nothing, and the new
    // walk offers each alert once.
    let old = promote(&mut ea, TrustLevel::Partner, T0 + 60);
    assert_eq!(alerts_to(&old, &b).len(), OFFER_PAGE);
    promote(&mut ea, TrustLevel::Member, T0 + 61);
    let out = promote(&mut ea, TrustLevel::Partner, T0 + 62);
    for a in &old {
        if let Action::SetTimer { timer, .. } = a {
            let stale = ea.handle(Event::Timer(timer.clone()), T0 + 63);
            assert!(alerts_to(&stale, &b).is_empty(), "{stale:?}");
        }
    }
    let more = fire_timers(&mut ea, &out, T0 + 64);
    let mut got = [alerts_to(&out, &b), alerts_to(&more, &b)].concat();
    got.sort();
    assert_eq!(got, want);
}

/// While the stored alerts are being checked (start-up), catch-up moves on but saves
/// no cursor; when the check ends, the cursors reached are saved, or, if it
/// quarantined damaged alerts, every peer's log is read again from the start.
#[test]
fn cursors_wait_for_the_check_of_the_stored_alerts() {
    let (a, b) = (key(1), key(2));
    for refetch in [false, true] {
        let mut ea = engine_for(&a, EngineConfig::default());
        ea.hold_cursors();
        connect(&mut ea, &b, TrustLevel::Member);
        ea.handle(frame_event(&b, &Frame::Hello { epoch: 3, head: 2 }), T0);
        let x = alert(&b, 1, Tlp::Clear);
        ea.handle(
            frame_event(&b, &sync_page(vec![x.id()], 2, true, None)),
            T0 + 1,
        );
        ea.handle(alert_event(&b, 1, &x), T0 + 2);
        let out = ea.handle(Event::Committed(vec![(1, x.id())]), T0 + 3);
        assert!(
            !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
            "{out:?}"
        );
        let out = ea.handle(Event::StoredChecked { refetch }, T0 + 4);
        let saved: Vec<u64> = out
            .iter()
            .filter_map(|a| match a {
                Action::SaveCursor { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        if refetch {
            assert!(saved.is_empty(), "{out:?}");
            assert_eq!(
                sync_requests(&out, &b),
                vec![0],
                "read again from the start"
            );
        } else {
            assert_eq!(saved, vec![2]);
            assert!(sync_requests(&out, &b).is_empty(), "{out:?}");
        }
        // From then on, cursors are saved as they move.
        let y = alert(&b, 2, Tlp::Clear);
        let after = if refetch { 0 } else { 2 };
        if !refetch {
            // The next periodic round.
            let out = ea.handle(Event::Timer(Timer::Resync(pk(&b))), T0 + 5);
            assert_eq!(sync_requests(&out, &b), vec![2]);
        }
        ea.handle(
            frame_event(&b, &sync_page(vec![y.id()], 3, true, Some(after))),
            T0 + 5,
        );
        ea.handle(alert_event(&b, 1, &y), T0 + 6);
        let out = ea.handle(Event::Committed(vec![(2, y.id())]), T0 + 7);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::SaveCursor { seq: 3, .. })),
            "{out:?}"
        );
    }
}

/// A page that waits only for alerts held here whose commit has not been noticed (our
/// store is slow, or its notice was missed) stalls, and is read again, without blaming
/// the peer that listed them; one that waits for an alert the peer never sent does.
#[test]
fn a_page_waiting_only_for_our_own_commits_does_not_blame_the_peer() {
    let (a, b) = (key(1), key(2));
    let mut ea = catching_up(&a, &b, 2);
    let x = alert(&a, 1, Tlp::Clear);
    ea.handle(local(&x), T0);
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![x.id()], 1, false, Some(0))),
        T0 + 1,
    );
    let out = fire_timers(&mut ea, &out, T0 + SYNC_TIMEOUT_MS + 1);
    assert_eq!(sync_requests(&out, &b), vec![0], "read again");
    assert!(
        !out.iter().any(|a| matches!(a, Action::Verdict { .. })),
        "{out:?}"
    );
    // b lists an alert it then does not send: that is its fault.
    let y = alert(&b, 1, Tlp::Clear);
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![x.id(), y.id()], 1, false, Some(0))),
        T0 + SYNC_TIMEOUT_MS + 2,
    );
    let out = fire_timers(&mut ea, &out, T0 + 2 * SYNC_TIMEOUT_MS + 3);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Verdict {
                reason: Reason::Undelivered,
                ..
            }
        )),
        "{out:?}"
    );
}

/// A peer that announced or listed an alert cancelled meanwhile does not send it (a
/// cancelled alert is not shared), and sends the cancel: it is not blamed for the
/// alert it then did not deliver, in gossip or in catch-up. (Between honest nodes
/// issuing and cancelling quickly, such blame reached near the ban threshold.)
#[test]
fn an_alert_cancelled_after_it_was_announced_or_listed_does_not_blame_the_peer() {
    let (a, b, o) = (key(1), key(2), key(9));
    let undelivered = |out: &[Action]| {
        out.iter().any(|a| {
            matches!(
                a,
                Action::Verdict {
                    reason: Reason::Undelivered,
                    ..
                }
            )
        })
    };
    // Gossip: b announces x, then sends x's cancel instead of x.
    let mut ea = engine_for(&a, EngineConfig::default());
    connect(&mut ea, &b, TrustLevel::Member);
    let x = alert(&o, 1, Tlp::Clear);
    let cancel = replacing(&o, 2, Kind::Cancel, x.id());
    let announce = Frame::Announce {
        ids: vec![x.id()],
        hops: vec![2],
    };
    let out = ea.handle(frame_event(&b, &announce), T0);
    let timeout = EngineConfig::default().graft_timeout_ms;
    let mut out = fire_timers(&mut ea, &out, T0 + timeout);
    out.extend(ea.handle(alert_event(&b, 2, &cancel), T0 + timeout + 1));
    let out = fire_timers(&mut ea, &out, T0 + 10 * timeout);
    assert!(!undelivered(&out), "{out:?}");
    // Without the cancel, the same silence is b's fault.
    let y = alert(&o, 3, Tlp::Clear);
    let announce = Frame::Announce {
        ids: vec![y.id()],
        hops: vec![2],
    };
    let out = ea.handle(frame_event(&b, &announce), T0 + 20 * timeout);
    let out = fire_timers(&mut ea, &out, T0 + 30 * timeout);
    assert!(undelivered(&out), "{out:?}");

    // Catch-up: b lists z, then sends z's cancel instead of z.
    let mut ea = catching_up(&a, &b, 2);
    let z = alert(&o, 4, Tlp::Clear);
    let z_cancel = replacing(&o, 5, Kind::Cancel, z.id());
    let mut out = ea.handle(
        frame_event(&b, &sync_page(vec![z.id()], 1, false, Some(0))),
        T0 + 1,
    );
    out.extend(ea.handle(alert_event(&b, 2, &z_cancel), T0 + 2));
    out.extend(ea.handle(Event::Committed(vec![(1, z_cancel.id())]), T0 + 3));
    let out = fire_timers(&mut ea, &out, T0 + SYNC_TIMEOUT_MS + 3);
    assert!(!undelivered(&out), "{out:?}");
}

/// A promotion makes catch-up read the promoted peer's log again from the start (what
/// it refused under the old level may come in now), saving the cursor at the start;
/// a second promotion while that read has not begun asks nothing more, and a level
/// first learnt (a certified node after a restart) re-reads nothing.
#[test]
fn a_promotion_reads_the_peer_s_log_again_once() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut ea = engine_for(&a, EngineConfig::default());
    ea.load_cursor(pk(&b), 3, 5);
    connect(&mut ea, &b, TrustLevel::Public);
    let out = ea.handle(frame_event(&b, &Frame::Hello { epoch: 3, head: 9 }), T0);
    assert_eq!(sync_requests(&out, &b), vec![5], "resumes at the cursor");
    let out = ea.handle(
        frame_event(&b, &sync_page(vec![], 9, true, Some(5))),
        T0 + 1,
    );
    assert!(sync_requests(&out, &b).is_empty(), "{out:?}");
    let promote = |level| Event::Trust {
        key: pk(&b),
        level: Some(level),
    };
    let out = ea.handle(promote(TrustLevel::Member), T0 + 2);
    assert_eq!(sync_requests(&out, &b), vec![0], "{out:?}");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::SaveCursor { seq: 0, .. })),
        "{out:?}"
    );
    let out = ea.handle(promote(TrustLevel::Partner), T0 + 3);
    assert!(sync_requests(&out, &b).is_empty(), "asked twice: {out:?}");
    // A level first learnt is no promotion.
    ea.load_cursor(pk(&c), 4, 7);
    let out = ea.handle(
        Event::Trust {
            key: pk(&c),
            level: Some(TrustLevel::Partner),
        },
        T0 + 4,
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::SaveCursor { .. })),
        "{out:?}"
    );
}
