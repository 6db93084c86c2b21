//! Relaying other nodes' `join`/`leave` frames to this node's subscribers, and the
//! presence reconcile after a lost pub/sub connection.
//!
//! Pub/sub is at most once: a frame published while this node was not subscribed (Redis
//! came back and another node wrote a `leave`, or swept an expired entry, before this node
//! subscribed again) never reaches it. So once subscribed again the node reads the members
//! of each watched topic whose subscribers here hear joins and leaves, and announces the
//! difference from what it had announced ([`Announced`], one per watched topic). Every
//! relayed frame goes through the same record, so each change is announced once whichever
//! way it came first.
//!
//! It must never announce this node's own connections (the hub does), and never send a
//! topic's frame outside that topic's record lock (a reconcile and a relay keep their
//! order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use super::StoreError;
use super::announced::Announced;
use super::broker::{Shared, Watched};
use super::keys::TopicKeys;
use super::presence::{Entry, now_ms};
use crate::codec::{FrameText, PresenceChange, presence_change};
use crate::domain::Topic;

/// [`super::presence::MEMBERS`], its hash computed once.
static MEMBERS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(super::presence::MEMBERS));

/// Topics reconciled at once after a reconnect (each is one read).
const RECONCILE_CONCURRENCY: usize = 32;

/// A relayed `join`/`leave` frame, as [`presence_change`] writes it.
#[derive(serde::Deserialize)]
struct ChangeFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "userId")]
    user: String,
    #[serde(rename = "connectionId")]
    connection: String,
}

impl ChangeFrame {
    fn kind(&self) -> Option<PresenceChange> {
        match self.kind.as_str() {
            "join" => Some(PresenceChange::Join),
            "leave" => Some(PresenceChange::Leave),
            _ => None,
        }
    }
}

/// Relays another node's `join`/`leave` frame to this node's subscribers of `topic`,
/// unless a reconcile announced that change already.
pub(super) fn relay(shared: &Shared, topic: &Topic, frame: &str) {
    let text = FrameText::from(frame.to_owned());
    let watched = shared.topics.get(topic).map(|w| w.value().clone());
    let change = serde_json::from_str::<ChangeFrame>(frame).ok().and_then(|f| Some((f.kind()?, f)));
    let (Some(watched), Some((kind, change))) = (watched, change) else {
        shared.fanout.broadcast(topic, &text);
        return;
    };
    // This node's own connection (its entry swept while the node was paused, and
    // rewritten at its next refresh): the hub announces its joins and leaves, so it is
    // never in the record and its frames pass as they always did.
    if shared.presence.is_local(topic, &change.connection) {
        shared.fanout.broadcast(topic, &text);
        return;
    }
    let mut announced = watched.announced.lock();
    if announced.relay(kind, &change.connection, &change.user) {
        shared.fanout.broadcast(topic, &text);
    }
}

/// Reconciles every watched topic (see [`reconcile`]), once this node subscribed again
/// after losing its pub/sub connection. False when a read failed (Redis is down again):
/// the caller tries again later.
pub(super) async fn reconcile_all(shared: &Shared) -> bool {
    use futures_util::StreamExt;
    let topics: Vec<(Topic, Arc<Watched>)> =
        shared.topics.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
    let failed = AtomicBool::new(false);
    futures_util::stream::iter(topics)
        .for_each_concurrent(RECONCILE_CONCURRENCY, |(topic, watched)| {
            let failed = &failed;
            async move {
                if let Err(e) = reconcile(shared, &topic, &watched).await {
                    tracing::debug!(topic = %topic, error = %e, "reconciling presence failed; retrying");
                    failed.store(true, Ordering::Relaxed);
                }
            }
        })
        .await;
    !failed.load(Ordering::Relaxed)
}

/// Reads `topic`'s members (this node is subscribed to its channel: every later change
/// reaches it) and announces to this node's subscribers the `join`s and `leave`s of
/// other nodes' members they missed while it was not.
async fn reconcile(shared: &Shared, topic: &Topic, watched: &Watched) -> Result<(), StoreError> {
    if !shared.presence.announces(topic) {
        // Nobody here hears joins and leaves: what was announced no longer matters,
        // and whoever subscribes next starts from nothing announced.
        *watched.announced.lock() = Announced::default();
        return Ok(());
    }
    watched.announced.lock().begin_reconcile();
    let keys = TopicKeys::new(topic);
    let mut conn = shared.store.conn();
    let mut read = MEMBERS_SCRIPT.key(&keys.presence);
    read.key(&keys.presence_expiry).arg(now_ms());
    let flat: Vec<String> = match read.invoke_async(&mut conn).await {
        Ok(flat) => flat,
        Err(e) => {
            watched.announced.lock().abandon_reconcile();
            return Err(e.into());
        }
    };
    let mut present = HashMap::new();
    let mut flat = flat.into_iter();
    while let (Some(connection), Some(entry)) = (flat.next(), flat.next()) {
        let Ok(entry) = serde_json::from_str::<Entry>(&entry) else { continue };
        // This node's own members are the hub's to announce; silent ones never are.
        if entry.n != shared.node_id && !entry.l.is_empty() {
            present.insert(connection, entry.u);
        }
    }
    let mut announced = watched.announced.lock();
    if watched.removed.load(Ordering::Acquire) {
        // Unwatched meanwhile: whoever subscribes now was told nothing of this record.
        return Ok(());
    }
    for change in announced.finish_reconcile(present) {
        let frame = presence_change(change.kind, topic, &change.user, &change.connection);
        shared.fanout.broadcast(topic, &frame);
    }
    Ok(())
}
