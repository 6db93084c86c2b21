//! Socket.IO connection state recovery (`[socketio] recovery`, SPEC §9.2).
//!
//! When a recoverable connection ends without the client leaving (a lost network, a
//! node going away), its session — user, namespace, and per topic the epoch and the
//! offset the client surely has, plus the events written after its last answered ping
//! (`hub::outbound::RecoveryLog`) — is saved under a private id (`pid`) for the recovery
//! window: in this process with the memory broker, in Redis with a Redis broker, so the
//! client may come back on any node. A CONNECT carrying that `pid` and its last offset
//! takes the session (once), works out each topic's position exactly, and resubscribes
//! every topic after it; if every topic's history still covers the gap the client gets
//! its old `pid` back (`socket.recovered === true`) and each missed event once.
//!
//! This module owns the session record, its stores and that computation. It must never
//! keep a session beyond the window, nor restore one to another user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::broker::redis::RedisConn;
use crate::broker::{ReadFrom, ReadRequest};
use crate::codec::socketio::parse_recovery_offset;
use crate::domain::{ConnectionId, Epoch, LogId, Topic};
use crate::hub::{CloseReason, ConnectionHandle, SubscribeOptions, Wire};
use crate::state::AppState;

/// How long a save or a take may take before recovery gives up on it.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A saved session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The connection (socket) id, given back on recovery.
    pub connection_id: String,
    /// The user it belonged to.
    pub user: String,
    /// Its namespace.
    pub nsp: String,
    /// Per topic: epoch and the offset surely received.
    pub topics: Vec<(String, String, u64)>,
    /// Events written after the last answered ping, oldest first: `(topic, offset)`.
    pub tail: Vec<(String, u64)>,
}

impl SavedSession {
    /// Each topic's position, given the last offset the client reported: everything up
    /// to that event in write order arrived, nothing after it. `None` when the report
    /// matches nothing this session wrote (then the positions cannot be known).
    pub fn positions(&self, reported: Option<&str>) -> Option<Vec<(String, String, u64)>> {
        let mut topics = self.topics.clone();
        let Some(reported) = reported else {
            // The client received no event (each carries its offset): nothing written
            // arrived, so the subscriptions' own positions are exact.
            return Some(topics);
        };
        let (topic, offset) = parse_recovery_offset(reported)?;
        let mut advance = |t: &str, o: u64| {
            if let Some(entry) = topics.iter_mut().find(|(name, _, _)| name == t) {
                entry.2 = entry.2.max(o);
            }
        };
        match self.tail.iter().position(|(t, o)| t == topic && *o == offset) {
            Some(at) => {
                for (t, o) in &self.tail[..=at] {
                    advance(t, *o);
                }
                Some(topics)
            }
            // Received before the last answered ping: nothing in the tail arrived.
            None if self.topics.iter().any(|(t, _, o)| t == topic && *o >= offset) => Some(topics),
            None => None,
        }
    }
}

/// Where saved sessions live.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Saves `session` under `pid` for `ttl`.
    async fn save(&self, pid: &str, session: &SavedSession, ttl: Duration) -> Result<(), String>;
    /// Takes (reads and deletes) the session `pid`, if it is still there.
    async fn take(&self, pid: &str) -> Result<Option<SavedSession>, String>;
    /// Notes that the connection of `pid` is closing and its session will be saved
    /// (for at most `ttl`), so a client back already waits for it instead of starting over.
    async fn mark_closing(&self, pid: &str, ttl: Duration) -> Result<(), String>;
    /// Whether `pid` was marked closing and its session is not saved yet.
    async fn is_closing(&self, pid: &str) -> Result<bool, String>;
}

/// Sessions in this process (the memory broker: one node).
#[derive(Default)]
pub struct MemoryStore {
    sessions: DashMap<String, (Instant, SavedSession)>,
    closing: DashMap<String, Instant>,
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn save(&self, pid: &str, session: &SavedSession, ttl: Duration) -> Result<(), String> {
        let now = Instant::now();
        // Expired sessions go when others are saved: no timer, and at most one window's
        // worth of disconnects is ever held.
        self.sessions.retain(|_, (expires, _)| *expires > now);
        self.sessions.insert(pid.to_owned(), (now + ttl, session.clone()));
        self.closing.remove(pid);
        Ok(())
    }

    async fn take(&self, pid: &str) -> Result<Option<SavedSession>, String> {
        Ok(self.sessions.remove(pid).and_then(|(_, (expires, s))| (expires > Instant::now()).then_some(s)))
    }

    async fn mark_closing(&self, pid: &str, ttl: Duration) -> Result<(), String> {
        let now = Instant::now();
        self.closing.retain(|_, expires| *expires > now);
        self.closing.insert(pid.to_owned(), now + ttl);
        Ok(())
    }

    async fn is_closing(&self, pid: &str) -> Result<bool, String> {
        Ok(self.closing.get(pid).is_some_and(|expires| *expires > Instant::now()))
    }
}

/// Sessions in Redis (`sbr:<pid>`, with the window as TTL), so any node can recover them.
pub struct RedisStore {
    conn: RedisConn,
}

impl RedisStore {
    /// A store on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    fn key(pid: &str) -> String {
        format!("sbr:{pid}")
    }

    fn closing_key(pid: &str) -> String {
        format!("sbr:{pid}:closing")
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn save(&self, pid: &str, session: &SavedSession, ttl: Duration) -> Result<(), String> {
        let json = serde_json::to_string(session).map_err(|e| e.to_string())?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(Self::key(pid))
            .arg(json)
            .arg("PX")
            .arg(millis)
            .ignore()
            .cmd("DEL")
            .arg(Self::closing_key(pid))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    async fn take(&self, pid: &str) -> Result<Option<SavedSession>, String> {
        let mut conn = self.conn.clone();
        // GETDEL: a session is recovered once, even if two nodes race for it.
        let json: Option<String> =
            redis::cmd("GETDEL").arg(Self::key(pid)).query_async(&mut conn).await.map_err(|e| e.to_string())?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| e.to_string())).transpose()
    }

    async fn mark_closing(&self, pid: &str, ttl: Duration) -> Result<(), String> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(Self::closing_key(pid))
            .arg(1)
            .arg("PX")
            .arg(millis)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    async fn is_closing(&self, pid: &str) -> Result<bool, String> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS").arg(Self::closing_key(pid)).query_async(&mut conn).await.map_err(|e| e.to_string())
    }
}

/// The private session id of a new recoverable connection `id`: 128 random bits (the
/// secret), then the connection id, so a CONNECT that comes back before the old connection
/// was seen to end can end it (see [`take`]).
pub fn new_pid(id: &ConnectionId) -> String {
    format!("{:016x}{:016x}.{}", rand::random::<u64>(), rand::random::<u64>(), id.as_str())
}

/// How long a CONNECT waits for the session of a connection it just ended to be saved.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// The pid of `conn` (which is closing) when its session is to be saved: recovery on, and
/// the connection lost rather than ended on purpose.
fn recoverable(state: &AppState, conn: &ConnectionHandle) -> Option<String> {
    let Wire::SocketIo(wire) = conn.wire() else { return None };
    let pid = wire.pid.clone()?;
    let lost = matches!(
        conn.close_reason(),
        CloseReason::ClientGone | CloseReason::HeartbeatTimeout | CloseReason::Shutdown | CloseReason::SlowConsumer
    );
    (lost && !state.config.socketio.recovery.is_zero() && !wire.left()).then_some(pid)
}

/// Called as a recoverable connection starts closing, before its last frames and close
/// handshake (which may take up to `close_timeout`): a client already back elsewhere
/// waits for the session instead of starting over.
pub async fn closing(state: &AppState, conn: &ConnectionHandle) {
    let Some(pid) = recoverable(state, conn) else { return };
    let ttl = state.config.websocket.close_timeout + Duration::from_secs(5);
    let store = state.socketio.sessions();
    if let Ok(Err(e)) = tokio::time::timeout(STORE_TIMEOUT, store.mark_closing(&pid, ttl)).await {
        tracing::debug!(connectionId = %conn.id, error = %e, "could not mark the socket.io session as closing");
    }
}

/// Saves the session of `conn` (which has closed) if it can be recovered.
pub async fn save_on_close(state: &AppState, conn: &ConnectionHandle) {
    let Wire::SocketIo(wire) = conn.wire() else { return };
    let window = state.config.socketio.recovery;
    let Some(pid) = recoverable(state, conn) else { return };
    let pid = pid.as_str();
    let log = wire.snapshot();
    if log.overflowed {
        return;
    }
    let session = SavedSession {
        connection_id: conn.id.as_str().to_owned(),
        user: conn.user.as_str().to_owned(),
        nsp: wire.nsp.to_string(),
        topics: log.confirmed.iter().map(|(t, e, o)| (t.as_str().to_owned(), e.to_string(), *o)).collect(),
        tail: log.tail.iter().map(|(t, o)| (t.as_str().to_owned(), *o)).collect(),
    };
    let store = state.socketio.sessions();
    match tokio::time::timeout(STORE_TIMEOUT, store.save(pid, &session, window)).await {
        Ok(Ok(())) => {
            tracing::debug!(connectionId = %conn.id, userId = %LogId(conn.user.as_str()), topics = session.topics.len(), unconfirmed = session.tail.len(), "socket.io session saved for recovery");
        }
        Ok(Err(e)) => {
            tracing::warn!(connectionId = %conn.id, error = %e, "socket.io session not saved; the client will not recover")
        }
        Err(_) => {
            tracing::warn!(connectionId = %conn.id, "socket.io session not saved in time; the client will not recover")
        }
    }
}

/// A CONNECT that asks to recover `pid`, after authentication: the session's topics with
/// exact positions, if every one can be resumed.
pub struct Recovered {
    /// The session's private id (given back, which tells the client it recovered).
    pub pid: String,
    /// The connection id to reuse.
    pub connection_id: String,
    /// Topic, epoch, offset to resume after.
    pub topics: Vec<(Topic, Epoch, u64)>,
}

/// Takes the session `pid` and checks that it can be recovered for `identity` on `nsp`,
/// with `offset` the client's last one.
pub async fn take(
    state: &AppState,
    identity: &Identity,
    nsp: &str,
    pid: &str,
    offset: Option<&str>,
) -> Option<Recovered> {
    let session = match take_saved(state, pid).await? {
        Some(session) => session,
        None => take_over(state, identity, pid).await?,
    };
    if session.user != identity.user.as_str() || session.nsp != nsp {
        return None;
    }
    let mut topics = Vec::new();
    for (name, epoch, offset) in session.positions(offset)? {
        let topic = Topic::parse(&name).ok()?;
        if !state.policy.may_subscribe(identity, &topic) {
            return None;
        }
        // History must still cover the gap (checked before the CONNECT answer, which has to
        // precede the replayed events).
        let from = ReadFrom::After { offset, epoch: Some(Epoch::new(&epoch)) };
        let read =
            state.hub.read(&topic, ReadRequest { from, limit: 0, partial: false, retained: false }).await.ok()?;
        if !read.recovered {
            return None;
        }
        topics.push((topic, Epoch::new(&epoch), offset));
    }
    Some(Recovered { pid: pid.to_owned(), connection_id: session.connection_id, topics })
}

/// The saved session `pid`; `None` inside when there is none, `None` outside when the
/// store failed.
async fn take_saved(state: &AppState, pid: &str) -> Option<Option<SavedSession>> {
    match tokio::time::timeout(STORE_TIMEOUT, state.socketio.sessions().take(pid)).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "socket.io session store failed; not recovering");
            None
        }
        Err(_) => None,
    }
}

/// The client came back before its old connection was seen to end: a long-polling
/// session whose client stopped polling, or a TCP connection that died silently, lives on
/// until its heartbeat times out. The old connection (named in the pid, on any node) is
/// ended as gone, which saves its session, and the session is then taken. Only a
/// connection of the same user is ended; the pid's secret is checked by the take itself.
async fn take_over(state: &AppState, identity: &Identity, pid: &str) -> Option<SavedSession> {
    let (_, old) = pid.split_once('.')?;
    let old = ConnectionId::from_external(old);
    match state.directory.get(&old).await {
        Ok(info) if info.user == identity.user => {
            state.directory.close(&old, CloseReason::ClientGone).await.ok()?;
        }
        Ok(_) => return None,
        // Already closing: its session is on its way if it is being saved, else it is
        // long gone (a pid from before the window) and the client starts over at once.
        Err(_) => {
            let store = state.socketio.sessions();
            if !tokio::time::timeout(STORE_TIMEOUT, store.is_closing(pid)).await.ok()?.ok()? {
                return None;
            }
        }
    }
    let deadline = Instant::now() + TAKEOVER_WAIT;
    loop {
        if let Some(session) = take_saved(state, pid).await? {
            return Some(session);
        }
        if Instant::now() >= deadline {
            tracing::info!(connectionId = %old, "the replaced connection's session was not saved in time; not recovering");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resubscribes a recovered connection: each topic from its position, replaying what the
/// client missed. `false` if a topic could not be resumed after all (history evicted
/// between the check and now); that topic then starts from now.
pub async fn resubscribe(state: &AppState, conn: &Arc<ConnectionHandle>, recovered: &Recovered) -> bool {
    let mut all = true;
    for (topic, epoch, offset) in &recovered.topics {
        let options = SubscribeOptions { since: Some((*offset, epoch.clone())), filter: None };
        match state.hub.subscribe(conn, topic, options, None).await {
            Ok(subscribed) => all &= subscribed.recovered,
            Err(e) => {
                all = false;
                tracing::warn!(connectionId = %conn.id, topic = %topic, error = %e, "recovered subscription failed");
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SavedSession {
        SavedSession {
            connection_id: "conn_1_a".into(),
            user: "u1".into(),
            nsp: "/ws".into(),
            topics: vec![("job:1".into(), "e1".into(), 3), ("job:2".into(), "e2".into(), 10)],
            tail: vec![("job:1".into(), 4), ("job:2".into(), 11), ("job:1".into(), 5), ("job:2".into(), 12)],
        }
    }

    #[test]
    fn positions_follow_write_order_up_to_the_reported_event() {
        let s = session();
        let at = |reported| s.positions(Some(reported)).unwrap();
        assert_eq!(at("11@job:2"), vec![("job:1".into(), "e1".into(), 4), ("job:2".into(), "e2".into(), 11)]);
        assert_eq!(at("5@job:1"), vec![("job:1".into(), "e1".into(), 5), ("job:2".into(), "e2".into(), 11)]);
        assert_eq!(at("12@job:2"), vec![("job:1".into(), "e1".into(), 5), ("job:2".into(), "e2".into(), 12)]);
        // Reported an event confirmed before the tail: nothing in the tail arrived.
        assert_eq!(at("2@job:1"), s.topics);
        assert_eq!(s.positions(Some("99@job:1")), None, "an offset this session never wrote");
        assert_eq!(s.positions(Some("garbage")), None);
        assert_eq!(s.positions(None), Some(s.topics.clone()), "no event arrived: the subscriptions' positions");
    }

    #[tokio::test]
    async fn the_memory_store_gives_a_session_once_and_forgets_it_after_the_window() {
        let store = MemoryStore::default();
        store.save("p1", &session(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.take("p1").await.unwrap(), Some(session()));
        assert_eq!(store.take("p1").await.unwrap(), None, "taken once");
        store.save("p2", &session(), Duration::ZERO).await.unwrap();
        assert_eq!(store.take("p2").await.unwrap(), None, "expired");
        store.mark_closing("p3", Duration::from_secs(60)).await.unwrap();
        assert!(store.is_closing("p3").await.unwrap(), "a client back early waits for it");
        store.save("p3", &session(), Duration::from_secs(60)).await.unwrap();
        assert!(!store.is_closing("p3").await.unwrap(), "saved: no longer pending");
        assert!(!store.is_closing("never").await.unwrap());
    }
}
