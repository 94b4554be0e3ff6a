//! The network actor's inbox: [`Command`]s, and the cloneable [`NetHandle`] that sends
//! them and awaits the answers.

use serde::Serialize;
use tocsin_proto::api::{RevocationView, TrustChanged, TrustEntry};
use tocsin_proto::{AlertBody, PublicKey, TrustLevel};
use tokio::sync::{mpsc, oneshot};

use super::trust::{ChangedBy, TrustChange, TrustError};
use crate::engine::PeerReport;
use crate::store::{Insert, StoreError};

/// Capacity of the command channel into the network actor.
pub const COMMAND_CHANNEL: usize = 1024;

/// Commands to the network actor.
#[derive(Debug)]
pub enum Command {
    /// Sign, store and gossip an alert issued here; answered once it is durable.
    Issue {
        body: Box<AlertBody>,
        reply: oneshot::Sender<Result<Issued, IssueError>>,
    },
    /// Hold, apply and flood a revocation given by the operator: answered with the
    /// revocation as held, and whether it was new.
    Revoke {
        proof: Box<tocsin_proto::identity::RevocationProof>,
        reply: oneshot::Sender<Result<(RevocationView, bool), String>>,
    },
    /// Sign an acknowledgement of an alert received here, keep it and send it to the
    /// alert's origin.
    Ack {
        out: super::ReceiptOut,
        reply: oneshot::Sender<Result<tocsin_proto::identity::Receipt, String>>,
    },
    /// Sign a sighting by this node and send it on (its body's `observer` is set here).
    Sighting {
        body: Box<tocsin_proto::identity::Sighting>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The revocations held.
    Revocations {
        reply: oneshot::Sender<Vec<RevocationView>>,
    },
    /// Change the trust table (committed with its audit record, then applied).
    Trust {
        change: TrustChange,
        by: ChangedBy,
        reply: oneshot::Sender<Result<TrustChanged, TrustError>>,
    },
    /// The trust table, ordered by name.
    TrustList {
        reply: oneshot::Sender<Vec<TrustEntry>>,
    },
    /// Connected and known peers with their counters.
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// Listen addresses and connection counts.
    Status { reply: oneshot::Sender<NetStatus> },
    /// Test control: drop and refuse these peers until healed.
    Partition {
        peers: Vec<PublicKey>,
        reply: oneshot::Sender<()>,
    },
    /// Test control: undo every partition.
    Heal { reply: oneshot::Sender<()> },
}

/// A locally issued alert, once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    /// Its id.
    pub id: tocsin_proto::AlertId,
    /// Whether it was new or already stored.
    pub insert: Insert,
}

/// Why an alert was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The body does not make a valid alert.
    #[error(transparent)]
    Invalid(#[from] tocsin_proto::Error),
    /// The commit failed; the alert was not gossiped further.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A peer row for `tocsin peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub key: PublicKey,
    pub peer_id: String,
    pub name: String,
    pub level: Option<TrustLevel>,
    /// The org key of the certificate it presented, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<PublicKey>,
    /// The agency its certificate names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    pub addrs: Vec<String>,
    /// Unix ms of the last frame or connection event.
    pub last_seen: Option<u64>,
    /// Frame bytes queued for this peer since start.
    pub bytes_out: u64,
    /// Frames queued for this peer and not yet written now.
    pub queue_depth: usize,
    #[serde(flatten)]
    pub report: PeerReport,
}

/// Network status for `tocsin status`.
#[derive(Debug, Clone, Serialize)]
pub struct NetStatus {
    pub listen: Vec<String>,
    pub connected: usize,
    pub known_alerts: usize,
    /// Incoming connections refused since start (unknown, blocked, banned, partitioned).
    pub connections_refused: u64,
    /// Gossip streams that failed while their connection stayed up, since start.
    pub stream_failures: u64,
    /// Connections to peers established since start (first connection per peer).
    pub peer_connects: u64,
}

/// A cloneable handle to the network actor.
#[derive(Clone, Debug)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
}

impl NetHandle {
    /// A handle and the receiving end for the actor.
    pub fn channel() -> (NetHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_CHANNEL);
        (NetHandle { tx }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Signs `body` with the node key, stores it and gossips it. Answers once the
    /// alert is durable.
    pub async fn issue(&self, body: AlertBody) -> Result<Issued, IssueError> {
        self.ask(|reply| Command::Issue {
            body: Box::new(body),
            reply,
        })
        .await
        .unwrap_or(Err(IssueError::ShuttingDown))
    }

    /// Changes the trust table; answers with the old and new level once committed.
    pub async fn trust(
        &self,
        change: TrustChange,
        by: ChangedBy,
    ) -> Result<TrustChanged, TrustError> {
        self.ask(|reply| Command::Trust { change, by, reply })
            .await
            .unwrap_or(Err(TrustError::ShuttingDown))
    }

    /// Holds, applies and floods a revocation; None when the actor is gone.
    pub async fn revoke(
        &self,
        proof: tocsin_proto::identity::RevocationProof,
    ) -> Option<Result<(RevocationView, bool), String>> {
        self.ask(|reply| Command::Revoke {
            proof: Box::new(proof),
            reply,
        })
        .await
    }

    /// Acknowledges an alert received here: the signed receipt goes to its origin.
    pub async fn ack(
        &self,
        out: super::ReceiptOut,
    ) -> Option<Result<tocsin_proto::identity::Receipt, String>> {
        self.ask(|reply| Command::Ack { out, reply }).await
    }

    /// Signs and sends a sighting by this node.
    pub async fn sighting(
        &self,
        body: tocsin_proto::identity::Sighting,
    ) -> Option<Result<(), String>> {
        self.ask(|reply| Command::Sighting {
            body: Box::new(body),
            reply,
        })
        .await
    }

    /// The revocations held.
    pub async fn revocations(&self) -> Option<Vec<RevocationView>> {
        self.ask(|reply| Command::Revocations { reply }).await
    }

    /// The trust table.
    pub async fn trust_list(&self) -> Option<Vec<TrustEntry>> {
        self.ask(|reply| Command::TrustList { reply }).await
    }

    /// Peers and their counters.
    pub async fn peers(&self) -> Option<Vec<PeerInfo>> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Network status.
    pub async fn status(&self) -> Option<NetStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Test control: drop and refuse these peers.
    pub async fn partition(&self, peers: Vec<PublicKey>) -> Option<()> {
        self.ask(|reply| Command::Partition { peers, reply }).await
    }

    /// Test control: undo partitions.
    pub async fn heal(&self) -> Option<()> {
        self.ask(|reply| Command::Heal { reply }).await
    }
}
