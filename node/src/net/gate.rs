//! Connection gating, as a libp2p behaviour: which peers may hold a connection.
//!
//! A peer is either **allowed** (its node key is trusted at a level that may connect,
//! or it presented a valid certificate from a trusted org key, and it is neither banned
//! nor partitioned) or not. Connections from peers that are not allowed are refused
//! right after the Noise handshake, before any protocol stream, except while the node
//! **admits**: when its trust table holds an org key, an unknown peer's connection is
//! held (at most [`crate::identity::MAX_PENDING_PEERS`] peers at once) so that it can
//! present its certificate in its first frame. The network actor then allows the peer
//! or refuses it ([`Behaviour::refuse`]); it also refuses a held peer that stays silent
//! past [`crate::identity::ADMIT_TIMEOUT_MS`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Why a connection was refused at the handshake.
#[derive(Debug, thiserror::Error)]
#[error("peer is not trusted (unknown, blocked, banned or partitioned)")]
pub struct NotAllowed;

/// One held peer.
#[derive(Debug)]
struct Hold {
    /// The hold's number, increasing: the lowest is the oldest.
    number: u64,
    /// Its open connections.
    conns: HashSet<ConnectionId>,
    /// We dialled it (an org entry's address): held beyond the cap, never evicted.
    dialled: bool,
}

/// The gate. See the module docs.
#[derive(Debug)]
pub struct Behaviour {
    allowed: HashSet<PeerId>,
    /// Peers held while they present a certificate.
    pending: HashMap<PeerId, Hold>,
    next_hold: u64,
    /// Whether unknown peers are held rather than refused.
    admitting: bool,
    max_pending: usize,
    close: VecDeque<PeerId>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A gate that allows nobody yet, holding at most `max_pending` unknown peers when
    /// it admits.
    pub fn new(max_pending: usize) -> Behaviour {
        Behaviour {
            allowed: HashSet::new(),
            pending: HashMap::new(),
            next_hold: 0,
            admitting: false,
            max_pending,
            close: VecDeque::new(),
            waker: None,
        }
    }

    /// Allows `peer` (a held peer is admitted).
    pub fn allow_peer(&mut self, peer: PeerId) {
        self.allowed.insert(peer);
        self.pending.remove(&peer);
    }

    /// No longer allows `peer`, and closes its connections.
    pub fn disallow_peer(&mut self, peer: PeerId) {
        let was = self.allowed.remove(&peer);
        if was || self.pending.remove(&peer).is_some() {
            self.close_all(peer);
        }
    }

    /// Refuses a held peer: closes its connections.
    pub fn refuse(&mut self, peer: PeerId) {
        if self.pending.remove(&peer).is_some() {
            self.close_all(peer);
        }
    }

    /// Whether unknown peers are held for a certificate (the trust table holds an org
    /// key) or refused at the handshake.
    pub fn set_admitting(&mut self, admitting: bool) {
        self.admitting = admitting;
    }

    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        self.allowed.contains(peer)
    }

    /// Whether `peer` is held while it presents a certificate.
    pub fn is_pending(&self, peer: &PeerId) -> bool {
        self.pending.contains_key(peer)
    }

    /// The number of `peer`'s current hold, if it is held: a new hold (after a refusal)
    /// gets a new number, so that a timer set for an earlier one cannot cut it short.
    pub fn hold_of(&self, peer: &PeerId) -> Option<u64> {
        self.pending.get(peer).map(|h| h.number)
    }

    /// Peers held now.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn close_all(&mut self, peer: PeerId) {
        self.close.push_back(peer);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether a new connection `conn` of `peer` may stand. `dialled`: we dialled it (an
    /// org entry's address), so it is held whatever the cap, which only bounds what
    /// others open to us. A held peer gets one connection it opened.
    fn check(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        dialled: bool,
    ) -> Result<(), ConnectionDenied> {
        if self.allowed.contains(&peer) {
            return Ok(());
        }
        if let Some(hold) = self.pending.get_mut(&peer) {
            if dialled {
                hold.conns.insert(conn);
                return Ok(());
            }
            return Err(ConnectionDenied::new(NotAllowed));
        }
        if !self.admitting {
            return Err(ConnectionDenied::new(NotAllowed));
        }
        if !dialled {
            // Full: the oldest hold others opened makes room. Hosts that open
            // connections and never present a certificate then cannot keep a node that
            // presents one in its first frame out: they would have to open the whole
            // cap's worth within the few milliseconds that frame takes.
            let inbound = self.pending.values().filter(|h| !h.dialled).count();
            if inbound >= self.max_pending {
                let oldest = self
                    .pending
                    .iter()
                    .filter(|(_, h)| !h.dialled)
                    .min_by_key(|(_, h)| h.number)
                    .map(|(p, _)| *p);
                let Some(oldest) = oldest else {
                    return Err(ConnectionDenied::new(NotAllowed));
                };
                self.pending.remove(&oldest);
                self.close_all(oldest);
            }
        }
        self.next_hold += 1;
        self.pending.insert(
            peer,
            Hold {
                number: self.next_hold,
                conns: HashSet::from([conn]),
                dialled,
            },
        );
        Ok(())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(conn, peer, false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(conn, peer, true)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id,
            connection_id,
            ..
        }) = event
        {
            if let Some(hold) = self.pending.get_mut(&peer_id) {
                hold.conns.remove(&connection_id);
                if hold.conns.is_empty() {
                    self.pending.remove(&peer_id);
                }
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some(peer) = self.close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_peers_are_held_only_while_admitting_and_within_the_cap() {
        let mut gate = Behaviour::new(2);
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let conn = ConnectionId::new_unchecked;
        assert!(
            gate.check(conn(1), a, false).is_err(),
            "refused when not admitting"
        );
        assert!(gate.check(conn(1), a, true).is_err(), "dialled or not");
        gate.allow_peer(d);
        assert!(
            gate.check(conn(2), d, false).is_ok(),
            "allowed peers always pass"
        );
        gate.set_admitting(true);
        assert!(gate.check(conn(3), a, false).is_ok());
        assert!(gate.check(conn(4), b, false).is_ok());
        let hold_a = gate.hold_of(&a).unwrap();
        assert!(
            gate.check(conn(5), a, false).is_err(),
            "a held peer gets one connection"
        );
        assert!(
            gate.check(conn(6), c, true).is_ok(),
            "a dial of ours is held beyond it"
        );
        gate.refuse(c);
        assert!(gate.is_pending(&a) && !gate.is_allowed(&a));
        gate.allow_peer(a);
        assert!(gate.is_allowed(&a) && !gate.is_pending(&a));
        gate.refuse(b);
        assert!(!gate.is_pending(&b));
        assert_eq!(gate.close.pop_front(), Some(c));
        assert_eq!(gate.close.pop_front(), Some(b));
        assert!(
            gate.check(conn(7), c, false).is_ok(),
            "a slot is free again"
        );
        assert_ne!(gate.hold_of(&c), None);
        gate.disallow_peer(a);
        assert_eq!(gate.close.pop_front(), Some(a));
        assert!(!gate.is_allowed(&a));
        gate.disallow_peer(c);
        assert!(
            gate.check(conn(8), a, false).is_ok(),
            "held again, as a new hold"
        );
        assert_ne!(gate.hold_of(&a), Some(hold_a));
    }

    /// Silent hosts cannot fill the holds and keep out a node that presents its
    /// certificate: past the cap, the oldest hold others opened is closed for the new
    /// one; our own dials are neither counted nor evicted.
    #[test]
    fn past_the_cap_the_oldest_inbound_hold_makes_room() {
        let mut gate = Behaviour::new(2);
        gate.set_admitting(true);
        let conn = ConnectionId::new_unchecked;
        let (ours, a, b, c) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        assert!(gate.check(conn(1), ours, true).is_ok());
        assert!(gate.check(conn(2), a, false).is_ok());
        assert!(gate.check(conn(3), b, false).is_ok());
        assert!(gate.check(conn(4), c, false).is_ok(), "held, not refused");
        assert!(!gate.is_pending(&a), "the oldest inbound hold made room");
        assert_eq!(gate.close.pop_front(), Some(a));
        assert!(gate.is_pending(&ours) && gate.is_pending(&b) && gate.is_pending(&c));
        assert_eq!(gate.pending_count(), 3);
    }
}
