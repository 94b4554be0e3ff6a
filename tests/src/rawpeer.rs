//! A raw libp2p peer for tests: connects to a node with a chosen key and writes
//! arbitrary bytes as gossip frames, so tests can send tampered alerts, bad signatures
//! and malformed frames the way a misbehaving agency would.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tocsin_proto::wire::{with_len_prefix, GOSSIP_PROTOCOL};
use tocsin_proto::SigningKey;
use tokio::sync::oneshot;

/// A connected raw peer. Dropping it closes the connection.
///
/// Like a real node it writes every frame on one long-lived gossip stream. (The node
/// accepts inbound streams through libp2p-stream, which drops a stream that arrives
/// while the previous one is still being handed over; opening a stream per send would
/// race with that under load.)
pub struct RawPeer {
    control: libp2p_stream::Control,
    target: PeerId,
    stream: Option<libp2p::Stream>,
    _stop: oneshot::Sender<()>,
}

/// The outcome of a connection attempt.
pub enum Connect {
    /// Connected, with a gossip stream open.
    Open(Box<RawPeer>),
    /// The node refused or closed the connection before a stream could be opened.
    Refused(String),
}

/// Connects to `addr` as `key` and opens a gossip stream.
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
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let control = swarm.behaviour().new_control();
    // Accept the node's own gossip stream and read it to the end (discarding), as a real
    // peer would; a dropped stream makes the node reconnect.
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(StreamProtocol::new(GOSSIP_PROTOCOL))
        .unwrap();
    swarm.dial(addr.with_p2p(target).unwrap()).unwrap();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (conn_tx, conn_rx) = oneshot::channel::<Result<(), String>>();
    tokio::spawn(async move {
        let mut conn_tx = Some(conn_tx);
        loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                Some((_, mut s)) = incoming.next() => {
                    tokio::spawn(async move {
                        let mut sink = vec![0u8; 64 * 1024];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                }
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Ok(())); }
                    }
                    SwarmEvent::ConnectionClosed { cause, .. } => {
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Err(format!("closed: {cause:?}"))); }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = conn_tx.take() { let _ = tx.send(Err(error.to_string())); }
                    }
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
        control,
        target,
        stream: None,
        _stop: stop_tx,
    };
    // The node may close the connection right after the handshake (unknown key).
    match tokio::time::timeout(Duration::from_secs(5), peer.open()).await {
        Ok(Ok(s)) => {
            peer.stream = Some(s);
            Connect::Open(Box::new(peer))
        }
        Ok(Err(e)) => Connect::Refused(e),
        Err(_) => Connect::Refused("stream open timed out".into()),
    }
}

impl RawPeer {
    async fn open(&mut self) -> Result<libp2p::Stream, String> {
        self.control
            .open_stream(self.target, StreamProtocol::new(GOSSIP_PROTOCOL))
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes each item as one length-prefixed frame on the peer's gossip stream
    /// (opening one if the last write failed), and flushes.
    pub async fn send_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), String> {
        let mut s = match self.stream.take() {
            Some(s) => s,
            None => self.open().await?,
        };
        for f in frames {
            s.write_all(&with_len_prefix(f))
                .await
                .map_err(|e| e.to_string())?;
        }
        s.flush().await.map_err(|e| e.to_string())?;
        self.stream = Some(s);
        Ok(())
    }
}
