//! The `/tocsin/gossip/4` protocol as a libp2p [`NetworkBehaviour`] with its own
//! [`ConnectionHandler`].
//!
//! Per connection the handler opens one long-lived outbound stream, on which it writes
//! every frame queued for the peer, and reads frames from the peer's inbound stream.
//! Frames are length-prefixed ([`tocsin_proto::wire`]); a length over `MAX_FRAME_BYTES`
//! is refused before the frame is read, and the stream is dropped.
//!
//! Back-pressure: the handler reads a frame only when the swarm polls it, so a node
//! that falls behind slows its peers' streams, not itself. Each connection's outbound
//! queue is bounded ([`Config::queue`]); frames beyond it are dropped and reported
//! ([`Event::Dropped`]), never waited for, so one slow peer never holds up the others.
//! The queue is served fairly across lanes (one per alert origin, one for control
//! frames: [`super::fair`]), so a flood from one origin never delays another's alerts.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use asynchronous_codec::{BytesMut, Decoder, Encoder, Framed};
use futures::{FutureExt, Sink, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tocsin_proto::limits::MAX_FRAME_BYTES;
use tocsin_proto::wire::{frame_len, GOSSIP_PROTOCOL};

use super::fair::{FairQueue, CONTROL_LANE};

/// Settings of the gossip behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Frames queued per connection before new ones are dropped.
    pub queue: usize,
}

/// What the gossip behaviour reports to the swarm's owner.
#[derive(Debug)]
pub enum Event {
    /// One frame read from the peer (its CBOR, without the length prefix).
    Frame { peer: PeerId, bytes: Vec<u8> },
    /// The peer sent a length prefix over `MAX_FRAME_BYTES`; the frame was not read and
    /// the stream was dropped.
    Oversized { peer: PeerId },
    /// This node's outbound stream to the peer could not be opened, failed, or was
    /// closed by the peer. The connection is useless for gossip until rebuilt.
    StreamFailed { peer: PeerId, error: String },
    /// `count` frames for the peer were dropped because its queue was full.
    Dropped { peer: PeerId, count: u64 },
    /// Every frame queued before [`Behaviour::flush`] returned `token` has been written
    /// and flushed.
    Flushed { peer: PeerId, token: u64 },
}

/// The gossip behaviour: routes frames to one connection per peer.
pub struct Behaviour {
    config: Config,
    /// Open connections per peer, oldest first; frames go to the oldest.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    events: VecDeque<ToSwarm<Event, In>>,
    next_token: u64,
    /// Frames queued in each connection's handler, as the handler last set it.
    depths: HashMap<ConnectionId, Arc<AtomicUsize>>,
}

/// Sending failed because no connection to the peer is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not connected")]
pub struct NotConnected;

impl Behaviour {
    pub fn new(config: Config) -> Behaviour {
        Behaviour {
            config,
            connections: HashMap::new(),
            events: VecDeque::new(),
            next_token: 0,
            depths: HashMap::new(),
        }
    }

    /// Frames queued for the peer and not yet written (all its connections).
    pub fn queue_depth(&self, peer: &PeerId) -> usize {
        self.connections
            .get(peer)
            .into_iter()
            .flatten()
            .filter_map(|c| self.depths.get(c))
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }

    fn handler(&mut self, connection: ConnectionId) -> Handler {
        let depth = Arc::new(AtomicUsize::new(0));
        self.depths.insert(connection, depth.clone());
        Handler::new(self.config, depth)
    }

    /// Queues one encoded control frame for the peer.
    pub fn send(&mut self, peer: &PeerId, frame: Vec<u8>) -> Result<(), NotConnected> {
        self.send_in_lane(peer, CONTROL_LANE, frame)
    }

    /// Queues one encoded frame for the peer in `lane` (an alert's origin lane,
    /// [`super::fair::origin_lane`]): lanes are served in turn.
    pub fn send_in_lane(
        &mut self,
        peer: &PeerId,
        lane: u64,
        frame: Vec<u8>,
    ) -> Result<(), NotConnected> {
        self.notify(peer, In::Frame { lane, frame })
    }

    /// Stops reading the peer's frames for `pause` (its connections' inbound streams
    /// are not polled, so what it sends waits in its own buffers and TCP window).
    pub fn pause_reading(&mut self, peer: &PeerId, pause: std::time::Duration) {
        self.notify_all(peer, || In::PauseReading(pause));
    }

    /// Drops the alert frames queued for the peer and not yet written (its trust
    /// narrowed: they were queued under its old level). Control frames stay.
    pub fn drop_alerts(&mut self, peer: &PeerId) {
        self.notify_all(peer, || In::DropAlerts);
    }

    /// Tells every connection's handler of the peer `event()`.
    fn notify_all(&mut self, peer: &PeerId, event: impl Fn() -> In) {
        for connection in self.connections.get(peer).into_iter().flatten() {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: *peer,
                handler: NotifyHandler::One(*connection),
                event: event(),
            });
        }
    }

    /// Asks to be told ([`Event::Flushed`] with the returned token) once every frame
    /// queued so far for the peer is written and flushed.
    pub fn flush(&mut self, peer: &PeerId) -> Result<u64, NotConnected> {
        let token = self.next_token;
        self.next_token += 1;
        self.notify(peer, In::Flush(token))?;
        Ok(token)
    }

    fn notify(&mut self, peer: &PeerId, event: In) -> Result<(), NotConnected> {
        let connection = *self
            .connections
            .get(peer)
            .and_then(|c| c.first())
            .ok_or(NotConnected)?;
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: *peer,
            handler: NotifyHandler::One(connection),
            event,
        });
        Ok(())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection_id))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection_id))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                self.connections
                    .entry(c.peer_id)
                    .or_default()
                    .push(c.connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                self.depths.remove(&connection_id);
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|c| *c != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            Out::Frame(bytes) => Event::Frame { peer, bytes },
            Out::Oversized => Event::Oversized { peer },
            Out::StreamFailed(error) => Event::StreamFailed { peer, error },
            Out::Dropped(count) => Event::Dropped { peer, count },
            Out::Flushed(token) => Event::Flushed { peer, token },
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

/// From the behaviour to one connection's handler.
#[derive(Debug)]
pub enum In {
    Frame {
        lane: u64,
        frame: Vec<u8>,
    },
    Flush(u64),
    /// Do not read the peer's stream for this long.
    PauseReading(std::time::Duration),
    /// Drop the alert frames queued and not yet written (every lane but the control
    /// lane): the peer's trust narrowed.
    DropAlerts,
}

/// From one connection's handler to the behaviour.
#[derive(Debug)]
pub enum Out {
    Frame(Vec<u8>),
    Oversized,
    StreamFailed(String),
    Dropped(u64),
    Flushed(u64),
}

/// The state of this node's outbound stream on one connection.
enum Outbound {
    /// Not asked for yet: asked for at the first poll.
    Idle,
    /// Being negotiated.
    Opening,
    Open(Box<Framed<Stream, Codec>>),
    /// Failed and reported; the owner closes the connection.
    Failed,
}

/// One connection's gossip streams.
pub struct Handler {
    outbound: Outbound,
    /// The peer's stream to this node. A newer one replaces it.
    inbound: Option<Box<Framed<Stream, Codec>>>,
    /// While set, the inbound stream is not read (the peer is past its limits).
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    queue: FairQueue,
    /// Flush tokens, each with the sequence number of the first frame queued after it:
    /// it is due once every frame numbered below has been written.
    flushes: VecDeque<(u64, u64)>,
    /// Flush tokens written out and waiting for the stream's flush.
    flushing: Vec<u64>,
    dropped: u64,
    events: VecDeque<Out>,
    /// `queue.len()`, shared with the behaviour for `tocsin_peer_queue_depth`.
    depth: Arc<AtomicUsize>,
}

impl Handler {
    fn new(config: Config, depth: Arc<AtomicUsize>) -> Handler {
        Handler {
            outbound: Outbound::Idle,
            inbound: None,
            paused: None,
            queue: FairQueue::new(config.queue),
            flushes: VecDeque::new(),
            flushing: Vec::new(),
            dropped: 0,
            events: VecDeque::new(),
            depth,
        }
    }

    fn publish_depth(&self) {
        self.depth.store(self.queue.len(), Ordering::Relaxed);
    }

    fn fail(&mut self, error: String) {
        self.outbound = Outbound::Failed;
        self.queue.clear();
        self.publish_depth();
        self.flushes.clear();
        self.flushing.clear();
        self.events.push_back(Out::StreamFailed(error));
    }

    /// Writes queued frames and flushes; notices the peer dropping the stream.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) {
        let Outbound::Open(stream) = &mut self.outbound else {
            return;
        };
        // The peer never writes on this stream: anything on its read side means it
        // dropped the stream (a close or a reset). Noticing at once, rather than at
        // the next write, gets the link rebuilt without waiting for traffic.
        let error = match stream.poll_next_unpin(cx) {
            Poll::Pending => None,
            Poll::Ready(None) => Some("gossip stream closed by the peer".to_string()),
            Poll::Ready(Some(Ok(_))) => Some("unexpected data on the gossip stream".to_string()),
            Poll::Ready(Some(Err(e))) => Some(format!("gossip stream reset by the peer: {e}")),
        };
        if let Some(error) = error {
            return self.fail(error);
        }
        loop {
            match Pin::new(&mut **stream).poll_ready(cx) {
                Poll::Pending => return,
                Poll::Ready(Err(e)) => {
                    return self.fail(format!("gossip stream write failed: {e}"))
                }
                Poll::Ready(Ok(())) => {}
            }
            // Flushes whose frames have all been written.
            if !self.flushes.is_empty() {
                let oldest = self.queue.oldest().unwrap_or(u64::MAX);
                while self.flushes.front().is_some_and(|(seq, _)| *seq <= oldest) {
                    if let Some((_, token)) = self.flushes.pop_front() {
                        self.flushing.push(token);
                    }
                }
            }
            match self.queue.pop() {
                Some(frame) => {
                    self.depth.store(self.queue.len(), Ordering::Relaxed);
                    if let Err(e) = Pin::new(&mut **stream).start_send(frame.as_slice()) {
                        return self.fail(format!("gossip stream write failed: {e}"));
                    }
                }
                None => break,
            }
        }
        match Pin::new(&mut **stream).poll_flush(cx) {
            Poll::Pending => {}
            Poll::Ready(Err(e)) => self.fail(format!("gossip stream flush failed: {e}")),
            Poll::Ready(Ok(())) => {
                let done = std::mem::take(&mut self.flushing);
                self.events.extend(done.into_iter().map(Out::Flushed));
            }
        }
    }

    /// Reads at most one frame from the peer's stream, unless reading is paused.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Option<Out> {
        if let Some(pause) = self.paused.as_mut() {
            if pause.poll_unpin(cx).is_pending() {
                return None;
            }
            self.paused = None;
        }
        let stream = self.inbound.as_mut()?;
        match stream.poll_next_unpin(cx) {
            Poll::Pending => None,
            Poll::Ready(Some(Ok(bytes))) => Some(Out::Frame(bytes)),
            Poll::Ready(Some(Err(CodecError::Oversized))) => {
                self.inbound = None;
                Some(Out::Oversized)
            }
            // Closed or reset: the peer notices on its side and rebuilds the link.
            Poll::Ready(None) | Poll::Ready(Some(Err(CodecError::Io(_)))) => {
                self.inbound = None;
                None
            }
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = In;
    type ToBehaviour = Out;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(StreamProtocol::new(GOSSIP_PROTOCOL)), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Links between trusted agencies are meant to stay up; ping notices dead ones.
        true
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if matches!(self.outbound, Outbound::Idle) {
            self.outbound = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(StreamProtocol::new(GOSSIP_PROTOCOL)),
                    (),
                ),
            });
        }
        self.poll_outbound(cx);
        if self.dropped > 0 {
            let count = std::mem::take(&mut self.dropped);
            self.events.push_back(Out::Dropped(count));
        }
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if let Some(event) = self.poll_inbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: In) {
        match (&self.outbound, event) {
            // A failed link takes no more frames; the connection is being closed.
            (Outbound::Failed, _) => {}
            (_, In::Frame { lane, frame }) => {
                if !self.queue.push(lane, frame) {
                    self.dropped += 1;
                }
                self.publish_depth();
            }
            (_, In::Flush(token)) => self.flushes.push_back((self.queue.next_seq(), token)),
            (_, In::PauseReading(pause)) => {
                self.paused = Some(Box::pin(tokio::time::sleep(pause)));
            }
            (_, In::DropAlerts) => {
                self.queue.keep_only(CONTROL_LANE);
                self.publish_depth();
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                self.inbound = Some(Box::new(Framed::new(stream, Codec)));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.outbound = Outbound::Open(Box::new(Framed::new(stream, Codec)));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let error = match error {
                    StreamUpgradeError::Timeout => "timed out".to_string(),
                    StreamUpgradeError::NegotiationFailed => {
                        format!("the peer does not speak {GOSSIP_PROTOCOL}")
                    }
                    StreamUpgradeError::Io(e) => e.to_string(),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.fail(format!("cannot open gossip stream: {error}"));
            }
            _ => {}
        }
    }
}

/// Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
pub struct Codec;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame length over MAX_FRAME_BYTES ({MAX_FRAME_BYTES})")]
    Oversized,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Decoder for Codec {
    type Item = Vec<u8>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<u8>>, CodecError> {
        let Some(prefix) = src.get(..4) else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(prefix);
        // Checked before a byte of the frame is buffered.
        let len = frame_len(len).map_err(|_| CodecError::Oversized)?;
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(4 + len);
        Ok(Some(frame.split_off(4).to_vec()))
    }
}

impl Encoder for Codec {
    type Item<'a> = &'a [u8];
    type Error = CodecError;

    fn encode(&mut self, frame: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        // The true length, even over the limit: the receiver is the one that refuses.
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        dst.reserve(4 + frame.len());
        dst.extend_from_slice(&len.to_be_bytes());
        dst.extend_from_slice(frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_waits_for_a_whole_frame() {
        let mut buf = BytesMut::new();
        Codec.encode(b"hello", &mut buf).unwrap();
        Codec.encode(b"", &mut buf).unwrap();
        let mut partial = buf.split_to(6);
        assert_eq!(Codec.decode(&mut partial).unwrap(), None, "half a frame");
        partial.unsplit(buf);
        assert_eq!(Codec.decode(&mut partial).unwrap(), Some(b"hello".to_vec()));
        assert_eq!(Codec.decode(&mut partial).unwrap(), Some(Vec::new()));
        assert_eq!(Codec.decode(&mut partial).unwrap(), None);
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_frame_is_read() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes());
        assert!(matches!(Codec.decode(&mut buf), Err(CodecError::Oversized)));
        assert!(buf.capacity() < MAX_FRAME_BYTES, "nothing reserved for it");
    }
}
