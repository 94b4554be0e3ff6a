//! One of this node's own updates that a peer gave back, after this node had moved its
//! alert on without it.
//!
//! An update leaves for peers before its commit here. If the node is killed in between,
//! the caller never got a `201`, and the update is gone from this node's store; but a
//! peer holds it and gives it back later (catch-up returns an origin's own alerts to
//! it). Meanwhile the operator may have updated the alert again or cancelled it. The
//! update that comes back then is a branch nobody here chose: left alone it stays
//! active on every node, beside the cancel or the newer version.
//!
//! So once such an update is stored, and its target was cancelled here or is
//! superseded by a different version, this node cancels the returned update too, with
//! a signed cancel of its own that reaches every node holding it. An update that comes
//! back while its target is still current (a lost disk, say) is kept as it is. Each
//! update or cancel of ours that commits checks the returned updates of the alert it
//! replaces again (one kept while current is a branch once a newer version commits),
//! and the start-up check of the store looks at the recent returned updates again, so
//! a node stopped between storing one and cancelling it does so at its next start.

use tocsin_proto::{AlertBody, AlertId, Kind};
use tokio::sync::mpsc;
use tracing::warn;

use super::Inbound;
use crate::store::{AlertState, Store, StoreError};

/// Checks one of our own updates that a peer gave back (just stored, or found at
/// start-up), and hands the actor its cancel if it is a branch.
pub(super) async fn check(store: &Store, inbound: &mpsc::Sender<Inbound>, id: AlertId) {
    match store.read(move |s| withdrawal(s, &id)).await {
        Ok(Some(cancel)) => {
            let _ = inbound.send(Inbound::Withdraw(Box::new(cancel))).await;
        }
        Ok(None) => {}
        Err(e) => {
            warn!(error = %e, alert = %id.fmt_short(), "one of this node's updates came back from a peer, and reading its alert's state failed; it is checked again at the next start");
        }
    }
}

/// The cancel this node should issue for its own update `id`, just stored after a peer
/// gave it back: `Some` when the update is not cancelled yet and its target was
/// cancelled or superseded by another version here.
pub(super) fn withdrawal(store: &Store, id: &AlertId) -> Result<Option<AlertBody>, StoreError> {
    let Some(update) = store.get(id)? else {
        return Ok(None);
    };
    let body = update.alert.body();
    // Current, or superseded by a later update that came back with it (a lost chain:
    // each is withdrawn in turn); not one cancelled or expired already.
    if body.kind != Kind::Update
        || !matches!(update.state, AlertState::Active | AlertState::Superseded)
    {
        return Ok(None);
    }
    let Some(target_id) = body.replaces else {
        return Ok(None);
    };
    let Some(target) = store.get(&target_id)? else {
        return Ok(None);
    };
    let why = match (target.state, target.replaced_by) {
        (AlertState::Cancelled, _) => format!(
            "withdrawn by its origin: this update of {target_id} came back from a peer after {target_id} was cancelled at its origin"
        ),
        (AlertState::Superseded, Some(next)) if next != *id => format!(
            "withdrawn by its origin: this update of {target_id} came back from a peer after its origin had updated {target_id} by {next}"
        ),
        _ => return Ok(None),
    };
    Ok(Some(body.cancel(*id, why, crate::now_ms())))
}

/// The updates of `id` by its origin that came from a peer (returned to this node).
pub(super) fn returned_updates_of(store: &Store, id: &AlertId) -> Result<Vec<AlertId>, StoreError> {
    let chain = store.history(id)?;
    let Some(origin) = chain
        .iter()
        .find(|a| a.alert.id() == *id)
        .map(|a| a.alert.body().origin)
    else {
        return Ok(Vec::new());
    };
    Ok(chain
        .iter()
        .filter(|a| {
            let b = a.alert.body();
            b.kind == Kind::Update
                && b.replaces == Some(*id)
                && b.origin == origin
                && a.receipt.from.is_some()
        })
        .map(|a| a.alert.id())
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tempfile::TempDir;
    use tocsin_proto::{SignedAlert, SigningKey, Tlp};

    use super::*;
    use crate::engine::tests::body;
    use crate::store::Receipt;

    const T0: u64 = 1_700_000_000_000;

    fn new(key: &SigningKey) -> AlertBody {
        let mut b = body(key, 0, Tlp::Green, vec![]);
        b.issued_at = T0;
        b
    }

    fn update(of: &SignedAlert, at: u64, title: &str) -> AlertBody {
        let mut b = of.body().clone();
        b.kind = Kind::Update;
        b.replaces = Some(of.id());
        b.issued_at = at;
        b.title = title.into();
        b
    }

    async fn store(s: &Store, key: &SigningKey, body: AlertBody) -> SignedAlert {
        store_from(s, key, body, None).await
    }

    /// Stored as received from `from` (`None`: issued here).
    async fn store_from(
        s: &Store,
        key: &SigningKey,
        body: AlertBody,
        from: Option<tocsin_proto::PublicKey>,
    ) -> SignedAlert {
        let a = SignedAlert::sign(body, key).unwrap();
        let receipt = Receipt {
            received_at: T0,
            from,
            hops: 0,
        };
        s.insert(a.clone().verify().unwrap(), receipt)
            .await
            .unwrap();
        a
    }

    async fn given_back(s: &Store, a: &SignedAlert) -> Vec<AlertId> {
        let id = a.id();
        s.read(move |s| returned_updates_of(s, &id)).await.unwrap()
    }

    async fn withdrawn(s: &Store, a: &SignedAlert) -> Option<AlertBody> {
        let id = a.id();
        s.read(move |s| withdrawal(s, &id)).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_returned_update_is_withdrawn_only_once_its_alert_moved_on_without_it() {
        let dir = TempDir::new().unwrap();
        let (s, _writer) = Store::open(&dir.path().join("t.redb")).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let original = store(&s, &key, new(&key)).await;
        // The current version of its alert: kept.
        let lost = store(&s, &key, update(&original, T0 + 10, "lost")).await;
        assert_eq!(withdrawn(&s, &lost).await, None);
        // A later version of the same alert wins: the returned one is a branch.
        let again = store(&s, &key, update(&original, T0 + 20, "again")).await;
        let cancel = withdrawn(&s, &lost).await.unwrap();
        assert_eq!(
            (cancel.kind, cancel.replaces),
            (Kind::Cancel, Some(lost.id()))
        );
        assert!(
            cancel.text.contains(&again.id().to_string()),
            "{}",
            cancel.text
        );
        assert_eq!(withdrawn(&s, &again).await, None, "the current version");
        // The alert cancelled: a branch too, and the reason says so.
        store(
            &s,
            &key,
            original
                .body()
                .cancel(original.id(), "done".into(), T0 + 30),
        )
        .await;
        let cancel = withdrawn(&s, &lost).await.unwrap();
        assert!(cancel.text.contains("was cancelled"), "{}", cancel.text);
        // Once cancelled itself, or for a new alert, nothing more.
        store(
            &s,
            &key,
            lost.body().cancel(lost.id(), "done".into(), T0 + 40),
        )
        .await;
        assert_eq!(withdrawn(&s, &lost).await, None);
        assert_eq!(withdrawn(&s, &original).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_chain_of_two_updates_is_withdrawn_step_by_step() {
        let dir = TempDir::new().unwrap();
        let (s, _writer) = Store::open(&dir.path().join("t.redb")).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let peer = Some(tocsin_proto::PublicKey([9; 32]));
        let original = store(&s, &key, new(&key)).await;
        let again = store(&s, &key, update(&original, T0 + 30, "again")).await;
        let lost1 = store_from(&s, &key, update(&original, T0 + 10, "lost 1"), peer).await;
        let lost2 = store_from(&s, &key, update(&lost1, T0 + 20, "lost 2"), peer).await;
        // lost2 is lost1's current version: not a branch of lost1 while lost1 stands.
        assert_eq!(withdrawn(&s, &lost2).await, None);
        assert_eq!(given_back(&s, &lost1).await, vec![lost2.id()]);
        // Once lost1 is withdrawn (it is a branch beside `again`), lost2 is one too.
        let c = withdrawn(&s, &lost1).await.unwrap();
        assert!(c.text.contains(&again.id().to_string()), "{}", c.text);
        store(&s, &key, c).await;
        let c2 = withdrawn(&s, &lost2).await.unwrap();
        assert_eq!(c2.replaces, Some(lost2.id()));
        // Updates issued here are not listed as given back.
        assert_eq!(given_back(&s, &original).await, vec![lost1.id()]);
    }
}
