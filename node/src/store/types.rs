//! The store's public types: errors, receipts, insert outcomes, stored alerts and their
//! summaries, trust commits, and queries with their pages.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tocsin_proto::{AlertId, AlertSummary, PublicKey, Severity, SignedAlert, Tlp};

use super::{AlertState, AuditRecord, TrustEntry};

/// Errors of the store. Messages name what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the store database {}: {error}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb reported (for example that another process has it open).
        error: Box<redb::DatabaseError>,
    },
    /// The file was written by a newer build with a layout this one cannot read.
    #[error(
        "the store's schema version is {found}, newer than schema version {supported} that this build supports; run a newer tocsind"
    )]
    SchemaTooNew {
        /// The schema version in the file.
        found: u64,
        /// [`super::SCHEMA_VERSION`].
        supported: u32,
    },
    /// The database file is damaged beyond what redb reports as an error.
    #[error(
        "the store database {} is damaged ({detail}); restore it from a backup, or move it aside to start empty and let peers send back what they may (docs/operations.md, \"A damaged database\"); `tocsind check` tells more",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// A read or write of the database failed (I/O error, full disk, …).
    #[error("store database error: {0}")]
    Db(Box<redb::Error>),
    /// Something stored cannot be decoded or breaks an invariant.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// What was being read, for example `alert 3fa2…`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode {what} for storage: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// [`Store::open`] was called outside a tokio runtime.
    #[error(
        "Store::open must be called inside a tokio runtime (the writer task is spawned on it)"
    )]
    NoRuntime,
    /// The writer has stopped ([`Store::shutdown`] was called); nothing was written.
    #[error("the store writer has shut down; the write was not performed")]
    Closed,
    /// The batch holding this write failed to commit; nothing of it was stored.
    #[error("the store write batch was not committed: {0}")]
    WriteFailed(String),
    /// A [`Query`] is invalid; the message names the field.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// An earlier write failed with an I/O error (a full disk): writes are refused until
    /// the database is reopened, which is retried while there is not enough free space.
    #[error("the store is degraded and refuses writes: {0}")]
    Degraded(String),
    /// The database is being reopened after an I/O error; retry in a moment.
    #[error("the store is being reopened after a write error; retry in a moment ({0})")]
    Reopening(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// What the node learned when it received an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// When it was received (or issued here), unix milliseconds.
    pub received_at: u64,
    /// The peer it came from; `None` when it was issued on this node.
    pub from: Option<PublicKey>,
    /// Relay hops it had travelled when it arrived; 0 when issued here.
    pub hops: u8,
}

/// The result of storing one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Newly stored with this local sequence number.
    Inserted {
        /// The new alert's seq.
        seq: u64,
    },
    /// Already stored (nothing changed); its existing seq.
    Duplicate {
        /// The stored alert's seq.
        seq: u64,
    },
}

impl Insert {
    /// The alert's seq, new or existing.
    pub fn seq(self) -> u64 {
        match self {
            Insert::Inserted { seq } | Insert::Duplicate { seq } => seq,
        }
    }
}

/// A stored alert with what the node knows about it.
#[derive(Debug, Clone)]
pub struct StoredAlert {
    /// Local sequence number.
    pub seq: u64,
    /// The alert, decoded from the stored envelope.
    pub alert: SignedAlert,
    /// How it arrived.
    pub receipt: Receipt,
    /// Its state now.
    pub state: AlertState,
    /// The update or cancel that replaced it, if any.
    pub replaced_by: Option<AlertId>,
}

/// A newly committed alert, as announced by [`Store::subscribe`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stored {
    /// Its local sequence number.
    pub seq: u64,
    /// Its id.
    pub id: AlertId,
}

/// A stored alert's summary, where it is in the log, and how it arrived (see
/// [`crate::store::Store::all_meta`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertMeta {
    /// Local sequence number.
    pub seq: u64,
    /// The alert's summary.
    pub alert: AlertSummary,
    /// How it arrived.
    pub receipt: Receipt,
}

/// What [`super::Store::scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Stored alerts that decode.
    pub alerts: usize,
    /// Of those, how many were issued here under another node key (a re-keyed node).
    pub former_key: usize,
    /// This node's own updates that came back from a peer in the last 7 days (the
    /// newest 1,024, with when each was received): checked again at start-up in case
    /// the node stopped before cancelling one that is a branch.
    pub returned_updates: Vec<(u64, AlertId)>,
}

/// Store totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Alerts stored.
    pub alerts: u64,
    /// Of those, how many are [`AlertState::Active`] now.
    pub active: u64,
    /// Highest seq ([`Store::head`]).
    pub head: u64,
    /// Damaged records moved aside at start-up (see [`super::Store::scan`]).
    pub quarantined: u64,
}

/// One trust change as [`Store::commit_trust`] writes it: the new entry (`None`: removed)
/// and its audit record, committed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustCommit {
    /// Whose entry changes.
    pub key: PublicKey,
    /// The entry after the change; `None` removes it.
    pub entry: Option<TrustEntry>,
    /// The audit record of the change.
    pub audit: AuditRecord,
}

/// A search over stored alerts. Every filter that is set must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Issued at or after this time, unix ms (inclusive).
    pub since: Option<u64>,
    /// Issued before this time, unix ms (exclusive).
    pub until: Option<u64>,
    /// Issued by this origin.
    pub origin: Option<PublicKey>,
    /// Issued by any of these origins (an agency's nodes), when not empty; with
    /// `origin`, both must hold.
    pub origins: Vec<PublicKey>,
    /// At least this severe.
    pub min_severity: Option<Severity>,
    /// Exactly this TLP label.
    pub tlp: Option<Tlp>,
    /// Has this tag (case-insensitive).
    pub tag: Option<String>,
    /// Has an indicator with exactly this value, of any type.
    pub indicator: Option<String>,
    /// Case-insensitive substring of the title or the text.
    pub text: Option<String>,
    /// In this state now.
    pub state: Option<AlertState>,
    /// Page size: default [`super::DEFAULT_QUERY_LIMIT`], at most [`super::MAX_QUERY_LIMIT`], not 0.
    pub limit: Option<usize>,
    /// Where to continue: [`QueryPage::next`] of the previous page.
    pub cursor: Option<String>,
}

/// One page of query results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    /// Newest first: by issued_at, then id, descending.
    pub alerts: Vec<StoredAlert>,
    /// Cursor for the next page; `None` when this is the last one.
    pub next: Option<String>,
}
