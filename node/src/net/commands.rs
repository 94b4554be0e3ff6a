//! The actor's answers to [`Command`]s: issuing local alerts, trust changes, and the
//! read-only views (`peers`, `status`).
//!
//! Issuing: the body is signed and verified off the loop ([`Inbound::Signed`]), handed
//! to the engine as [`Event::Local`], and stored; the reply waits for the durable
//! commit. A failed commit is [`Event::StoreFailed`], so the engine forgets the alert.
//!
//! Trust: changes are queued in the [`TrustTable`] and run one at a time: planned
//! against the table, committed with their audit record by the state writer, and
//! applied (table, engine, allow-list) when [`Inbound::TrustCommitted`] comes back.

use tracing::{info, warn};

use super::*;

impl NetActor {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Issue { body, reply } => self.issue(body, reply),
            Command::Trust { change, by, reply } => {
                self.trust.enqueue(change, by, reply);
                self.next_trust_change();
            }
            Command::Revoke { proof, reply } => {
                let _ = reply.send(self.on_revocation(*proof, None));
            }
            Command::Ack { out, reply } => {
                let (store, key, inbound) = (
                    self.store.clone(),
                    self.key.clone(),
                    self.inbound_tx.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(super::send_receipt(&store, &key, out, &inbound));
                });
            }
            Command::Sighting { mut body, reply } => {
                body.observer = self.engine.me();
                match tocsin_proto::identity::Signed::sign(*body, &self.key) {
                    Ok(signed) => {
                        self.feed(Event::LocalSighting {
                            sighting: Box::new(signed),
                        });
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Revocations { reply } => {
                let mut rows: Vec<RevocationView> =
                    self.revocations.values().map(revocation_view).collect();
                rows.sort_by_key(|r| r.node);
                let _ = reply.send(rows);
            }
            Command::TrustList { reply } => {
                let _ = reply.send(self.trust.list());
            }
            Command::Peers { reply } => {
                let rows = self
                    .engine
                    .peer_reports()
                    .into_iter()
                    .filter(|report| !self.trust.get(&report.key).is_some_and(|e| e.org))
                    .map(|report| {
                        let cert = self.certs.get(&report.key);
                        // A node known by its certificate shows its org's entry.
                        let entry = self
                            .trust
                            .get(&report.key)
                            .or_else(|| cert.and_then(|c| self.trust.get(&c.org)));
                        let pid = peer_id_of_checked(&report.key);
                        PeerInfo {
                            key: report.key,
                            peer_id: crate::keys::peer_id_string(&report.key),
                            name: entry.map(|e| e.name.clone()).unwrap_or_default(),
                            level: self.effective_level(&report.key, crate::now_ms()),
                            org: cert.map(|c| c.org),
                            agency: cert.map(|c| c.agency.clone()),
                            addrs: entry
                                .filter(|e| !e.org)
                                .map(|e| e.addrs.clone())
                                .unwrap_or_default(),
                            last_seen: self.last_seen.get(&report.key).copied(),
                            bytes_out: pid
                                .and_then(|p| self.bytes_out.get(&p).copied())
                                .unwrap_or(0),
                            queue_depth: pid
                                .map_or(0, |p| self.swarm.behaviour().gossip.queue_depth(&p)),
                            report,
                        }
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Command::Status { reply } => {
                let _ = reply.send(NetStatus {
                    listen: self.swarm.listeners().map(ToString::to_string).collect(),
                    connected: self.swarm.connected_peers().count(),
                    known_alerts: self.engine.known_count(),
                    connections_refused: self.metrics.connections_refused.get(),
                    stream_failures: self.metrics.stream_failures.get(),
                    peer_connects: self.metrics.peer_connects.get(),
                });
            }
            Command::Partition { peers, reply } => {
                for key in peers {
                    self.partitioned.insert(key);
                    self.apply_trust(key);
                }
                let _ = reply.send(());
            }
            Command::Heal { reply } => {
                let keys: Vec<PublicKey> = self.partitioned.drain().collect();
                for key in keys {
                    self.apply_trust(key);
                }
                let _ = reply.send(());
            }
        }
    }

    /// A local alert came back signed: gossip it and store it; reply after the commit.
    /// Signs `body` with the node key and issues it; `reply` gets the durable commit.
    fn issue(
        &mut self,
        body: Box<tocsin_proto::AlertBody>,
        reply: oneshot::Sender<Result<Issued, IssueError>>,
    ) {
        // A store that refuses writes would fail the commit after the alert had gone
        // out to peers: refuse before anything leaves this node.
        if let Some(reason) = self.store.degraded() {
            let _ = reply.send(Err(IssueError::Store(crate::store::StoreError::Degraded(
                reason,
            ))));
            return;
        }
        let key = self.key.clone();
        let inbound = self.inbound_tx.clone();
        tokio::task::spawn_blocking(move || {
            let alert = SignedAlert::sign(*body, &key)
                .and_then(SignedAlert::verify)
                .map(Box::new);
            let _ = inbound.blocking_send(Inbound::Signed { alert, reply });
        });
    }

    /// Issues the cancel of one of our own updates that a peer gave back after its
    /// alert was cancelled or updated again here (see `returned`), and logs the outcome.
    pub(super) fn withdraw_returned(&mut self, cancel: Box<tocsin_proto::AlertBody>) {
        let Some(update) = cancel.replaces else {
            return;
        };
        // Two checks of one update may race (its return, and a commit of ours for the
        // same alert): one cancel is enough.
        if !self.withdrawn.insert(update) {
            return;
        }
        if self.withdrawn.len() > MAX_WITHDRAWN {
            self.withdrawn.clear();
            self.withdrawn.insert(update);
        }
        let (reply, answer) = oneshot::channel();
        self.issue(cancel, reply);
        tokio::spawn(async move {
            match answer.await {
                Ok(Ok(issued)) => {
                    // Its own commit re-checks the updates of it that came back too
                    // (a lost chain of several updates): see `on_signed`.
                    info!(update = %update.fmt_short(), cancel = %issued.id.fmt_short(), "one of this node's updates came back from a peer after its alert had been cancelled or updated again here (it was lost to a crash before its commit); it is cancelled");
                }
                Ok(Err(e)) => {
                    warn!(update = %update.fmt_short(), error = %e, "one of this node's updates came back from a peer after its alert had been cancelled or updated again here, and its cancel could not be issued; cancel it with `tocsin cancel`");
                }
                Err(_) => {}
            }
        });
    }

    pub(super) fn on_signed(
        &mut self,
        alert: Result<Box<VerifiedAlert>, tocsin_proto::Error>,
        reply: oneshot::Sender<Result<Issued, IssueError>>,
    ) {
        let alert = match alert {
            Ok(a) => *a,
            Err(e) => {
                let _ = reply.send(Err(IssueError::Invalid(e)));
                return;
            }
        };
        let id = alert.id();
        let signed = alert.clone();
        // Gossip starts while the commit is in flight, so the fsync is not on the path
        // to peers; the reply still waits for the commit ("issued" means durable).
        self.feed(Event::Local { alert });
        let store = self.store.clone();
        let inbound = self.inbound_tx.clone();
        let receipt = Receipt {
            received_at: crate::now_ms(),
            from: None,
            hops: 0,
        };
        tokio::spawn(async move {
            let kind = signed.body().kind;
            let replaces = signed.body().replaces;
            match store.insert(signed, receipt).await {
                Ok(insert) => {
                    match insert {
                        crate::store::Insert::Inserted { seq } => {
                            info!(id = %id.fmt_short(), seq, ?kind, "alert issued");
                        }
                        // Already stored (no commit notice comes): it is durable.
                        crate::store::Insert::Duplicate { .. } => {
                            let _ = inbound.send(Inbound::AlreadyStored(id)).await;
                        }
                    }
                    let _ = reply.send(Ok(Issued { id, insert }));
                    // An update of ours that came back for the same alert, checked
                    // while it was still the current version, is a branch now.
                    if let Some(target) = replaces {
                        let others = store
                            .read(move |s| super::returned::returned_updates_of(s, &target))
                            .await
                            .unwrap_or_default();
                        for other in others.into_iter().filter(|o| *o != id) {
                            super::returned::check(&store, &inbound, other).await;
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, alert = %id.fmt_short(), "commit of a local alert failed; not gossiped further");
                    let _ = inbound.send(Inbound::StoreFailed(id)).await;
                    let _ = reply.send(Err(IssueError::Store(e)));
                }
            }
        });
    }

    /// Starts the next queued trust change, unless one is in flight.
    fn next_trust_change(&mut self) {
        while let Some((change, by, reply)) = self.trust.next_change() {
            let commit = match self.trust.plan(&change, &by, crate::now_ms()) {
                Ok(c) => c,
                Err(e) => {
                    self.trust.finished();
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            let job = StateJob::Trust {
                commit: Box::new(commit),
                reply,
            };
            if let Err(job) = self.state.send(job) {
                self.trust.finished();
                if let StateJob::Trust { reply, .. } = job {
                    let _ = reply.send(Err(TrustError::Store(
                        "the state writer has stopped".into(),
                    )));
                }
            }
            return;
        }
    }

    /// A trust change was committed (or not): apply it everywhere, answer, go on.
    pub(super) fn on_trust_committed(
        &mut self,
        commit: TrustCommit,
        result: Result<(), String>,
        reply: TrustReply,
    ) {
        self.trust.finished();
        match result {
            Ok(()) => {
                self.trust.apply(&commit);
                let (key, old, new) = (commit.key, commit.audit.old, commit.audit.new);
                info!(peer = %key.fmt_short(), old = ?old.map(|l| l.as_str()), new = ?new.map(|l| l.as_str()), who = %commit.audit.who, "trust changed");
                // An org key is not a peer (its nodes get its level); a node key without
                // an entry may still have its org's.
                let level = self.effective_level(&key, crate::now_ms());
                self.feed(Event::Trust { key, level });
                self.apply_trust(key);
                let _ = reply.send(Ok(TrustChanged { key, old, new }));
            }
            Err(e) => {
                warn!(error = %e, peer = %commit.key.fmt_short(), "trust change not stored; table unchanged");
                let _ = reply.send(Err(TrustError::Store(e)));
            }
        }
        self.next_trust_change();
    }
}
