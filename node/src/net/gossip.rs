//! The gossip streams: one task writes each peer's outbound stream, one reads each
//! inbound stream. Frames are length-prefixed ([`tocsin_proto::wire`]); a length over
//! `MAX_FRAME_BYTES` is refused before the frame is read.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tocsin_proto::wire::{frame_len, with_len_prefix, GOSSIP_PROTOCOL};
use tokio::sync::mpsc;
use tracing::debug;

use super::Inbound;

/// Reads length-prefixed frames from one inbound gossip stream into the actor's queue,
/// refusing an oversized length prefix before reading the frame.
pub fn spawn_reader(tx: mpsc::Sender<Inbound>, pid: PeerId, mut stream: libp2p::Stream) {
    tokio::spawn(async move {
        loop {
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let len = match frame_len(prefix) {
                Ok(len) => len,
                Err(_) => {
                    // Oversized: refuse before reading it, and drop the stream.
                    let _ = tx.send(Inbound::Oversized { peer: pid }).await;
                    return;
                }
            };
            let mut bytes = vec![0u8; len];
            if stream.read_exact(&mut bytes).await.is_err() {
                return;
            }
            if tx.send(Inbound::Frame { peer: pid, bytes }).await.is_err() {
                return;
            }
        }
    });
}

/// Writes one peer's queued frames, length-prefixed, on one outbound gossip stream.
/// When the stream fails, tells the actor ([`Inbound::WriterFailed`]).
pub fn spawn_writer(
    mut control: libp2p_stream::Control,
    pid: PeerId,
    mut rx: mpsc::Receiver<Vec<u8>>,
    failed: mpsc::Sender<Inbound>,
) {
    tokio::spawn(async move {
        let result: Result<(), String> = async {
            let stream = control
                .open_stream(pid, StreamProtocol::new(GOSSIP_PROTOCOL))
                .await
                .map_err(|e| format!("cannot open gossip stream: {e}"))?;
            // The peer never writes on this stream, so anything on its read side
            // means the peer dropped it: a reset (libp2p-stream drops an inbound
            // stream that arrives while another is being handed over) or a close.
            // Noticing it at once, rather than at the next write, gets the link
            // rebuilt (and the missed Hello re-sent) without waiting for traffic.
            let (mut reader, mut writer) = stream.split();
            let mut probe = [0u8; 1];
            loop {
                let frame = tokio::select! {
                    frame = rx.recv() => frame,
                    read = reader.read(&mut probe) => {
                        return Err(match read {
                            Ok(0) => "gossip stream closed by the peer".to_string(),
                            Ok(_) => "unexpected data on the gossip stream".to_string(),
                            Err(e) => format!("gossip stream reset by the peer: {e}"),
                        });
                    }
                };
                let Some(frame) = frame else { break };
                let bytes = with_len_prefix(&frame);
                writer
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("gossip stream write failed: {e}"))?;
                // Flush when the queue is drained, so bursts go out in few packets.
                if rx.is_empty() {
                    writer
                        .flush()
                        .await
                        .map_err(|e| format!("gossip stream flush failed: {e}"))?;
                }
            }
            let _ = writer.close().await;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            debug!(peer = %pid, error = %e, "gossip writer ended");
            // A connection without a working stream is useless: rebuild it.
            let _ = failed.send(Inbound::WriterFailed { peer: pid }).await;
        }
    });
}
