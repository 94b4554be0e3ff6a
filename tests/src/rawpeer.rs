//! A raw libp2p peer for tests: connects to a node with a chosen key and writes
//! arbitrary bytes as gossip frames, so tests can send tampered alerts, bad signatures,
//! malformed and oversized frames the way a misbehaving agency would.
//!
//! It speaks `/tocsin/gossip/4` through the node's own gossip behaviour
//! ([`tocsin_node::net::gossip`]), so frames travel on one long-lived stream as a real
//! node's do; but nothing checks what it sends.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
use tocsin_node::net::gossip;
use tocsin_proto::SigningKey;
use tokio::sync::{mpsc, oneshot};

/// How long one [`RawPeer::send_frames`] waits for its frames to be flushed.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type SendJob = (Vec<Vec<u8>>, oneshot::Sender<Result<(), String>>);

/// A connected raw peer. Dropping it closes the connection.
pub struct RawPeer {
    jobs: mpsc::Sender<SendJob>,
    _stop: oneshot::Sender<()>,
}

/// The outcome of a connection attempt.
pub enum Connect {
    /// Connected, with the gossip streams open.
    Open(Box<RawPeer>),
    /// The node refused or closed the connection.
    Refused(String),
}

/// Connects to `addr` as `key`.
pub async fn connect(key: &SigningKey, addr: Multiaddr, target: PeerId) -> Connect {
    let mut secret = key.to_bytes();
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| gossip::Behaviour::new(gossip::Config { queue: 1 << 16 }))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.dial(addr.with_p2p(target).unwrap()).unwrap();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (conn_tx, conn_rx) = oneshot::channel::<Result<(), String>>();
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<SendJob>(16);
    tokio::spawn(async move {
        let mut conn_tx = Some(conn_tx);
        // Sends waiting for their flush, by token.
        let mut waiting: Vec<(u64, oneshot::Sender<Result<(), String>>)> = Vec::new();
        let fail_all = |waiting: &mut Vec<(u64, oneshot::Sender<Result<(), String>>)>, e: &str| {
            for (_, tx) in waiting.drain(..) {
                let _ = tx.send(Err(e.to_string()));
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                Some((frames, reply)) = jobs_rx.recv() => {
                    let g = swarm.behaviour_mut();
                    let queued = frames.into_iter().try_for_each(|f| g.send(&target, f));
                    match queued.and_then(|()| g.flush(&target)) {
                        Ok(token) => waiting.push((token, reply)),
                        Err(e) => { let _ = reply.send(Err(e.to_string())); }
                    }
                }
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Ok(())); }
                    }
                    SwarmEvent::ConnectionClosed { cause, .. } => {
                        let e = format!("closed: {cause:?}");
                        fail_all(&mut waiting, &e);
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Err(e)); }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Err(error.to_string())); }
                    }
                    SwarmEvent::Behaviour(gossip::Event::Flushed { token, .. }) => {
                        if let Some(i) = waiting.iter().position(|(t, _)| *t == token) {
                            let _ = waiting.swap_remove(i).1.send(Ok(()));
                        }
                    }
                    SwarmEvent::Behaviour(gossip::Event::StreamFailed { error, .. }) => {
                        fail_all(&mut waiting, &error);
                    }
                    // The node's own frames are read and discarded, as a real peer
                    // would; a dropped stream makes the node reconnect.
                    _ => {}
                },
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(10), conn_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Connect::Refused(e),
        _ => return Connect::Refused("no answer".into()),
    }
    let mut peer = RawPeer {
        jobs: jobs_tx,
        _stop: stop_tx,
    };
    // The node may close the connection right after the handshake (unknown key): an
    // empty send succeeds only once the stream is open and flushed.
    match peer.send_frames(&[]).await {
        Ok(()) => Connect::Open(Box::new(peer)),
        Err(e) => Connect::Refused(e),
    }
}

impl RawPeer {
    /// Writes each item as one length-prefixed frame (its true length, even over the
    /// limit) on the peer's gossip stream, and waits until they are flushed.
    pub async fn send_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((frames.to_vec(), tx))
            .await
            .map_err(|_| "the raw peer's swarm is gone".to_string())?;
        match tokio::time::timeout(SEND_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the raw peer's swarm is gone".into()),
            Err(_) => Err("send timed out".into()),
        }
    }
}
