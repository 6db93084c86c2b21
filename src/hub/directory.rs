//! The connection directory: list, look up, message and close a connection by its id.
//!
//! This is the one way code outside the hub reaches a connection it does not hold itself
//! (the HTTP API, the sinks' replies, `/@connections`, other protocols' nodes). The trait
//! is async so that a cluster implementation can answer for connections held by other
//! nodes; [`LocalDirectory`] answers for this node from the [`ConnectionRegistry`] and
//! never waits. Neither must ever await a client: sending is a push into the connection's
//! bounded queue, exactly as fan-out does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{CloseReason, ConnectionHandle, ConnectionRegistry, RawFrame};
use crate::codec::FrameText;
use crate::domain::{ConnectionId, Topic, UserId};

/// Why the directory could not act on a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// No open connection has this id (never existed, closed, or already closing).
    #[error("no open connection {0}")]
    NotFound(ConnectionId),
    /// The directory cannot answer now (e.g. the cluster's store is unreachable).
    #[error("connection directory unavailable: {0}")]
    Unavailable(String),
    /// The connection cannot take what was asked (a binary frame for a Socket.IO client).
    #[error("{0}")]
    Unsupported(String),
}

/// What the directory tells about one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection id.
    pub id: ConnectionId,
    /// The authenticated user.
    pub user: UserId,
    /// The topics it holds, sorted.
    pub topics: Vec<Topic>,
    /// When it connected.
    pub connected_at: SystemTime,
    /// The client's address.
    pub remote: SocketAddr,
    /// `native` or `socketio`.
    pub protocol: String,
    /// The upgrade request's `User-Agent` (empty without one).
    pub user_agent: String,
    /// When the client last sent anything (wall clock).
    pub last_active_at: SystemTime,
    /// The cluster node that holds it, when another node's directory entry told it
    /// (`None` for this node's own connections).
    pub node: Option<String>,
}

impl ConnectionInfo {
    fn of(conn: &ConnectionHandle) -> Self {
        Self {
            id: conn.id.clone(),
            user: conn.user.clone(),
            topics: conn.topics(),
            connected_at: conn.connected_at,
            remote: conn.remote,
            protocol: conn.wire().protocol().to_owned(),
            user_agent: conn.user_agent().to_owned(),
            last_active_at: conn.last_active_at(),
            node: None,
        }
    }
}

/// Which connections [`ConnectionDirectory::list`] returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFilter {
    /// Only this user's connections.
    pub user: Option<String>,
    /// Only connections holding this topic.
    pub topic: Option<Topic>,
}

/// Open connections by id, wherever they are held.
#[async_trait]
pub trait ConnectionDirectory: Send + Sync + 'static {
    /// Open connections (not those already closing) that match `filter`, oldest first.
    async fn list(&self, filter: &ConnectionFilter) -> Result<Vec<ConnectionInfo>, DirectoryError>;

    /// One open connection.
    async fn get(&self, id: &ConnectionId) -> Result<ConnectionInfo, DirectoryError>;

    /// Queues `frame` to an open connection. `Ok(false)`: the connection could not take it
    /// (its queue was full, so it is now being closed with 4008).
    async fn send(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError>;

    /// Like [`Self::send`], for callers that cannot await (the outbox's writer thread):
    /// it never blocks. Frames sent this way to one connection keep their order.
    fn send_now(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError>;

    /// Queues a backend's raw frame to an open connection, as it is (see
    /// [`ConnectionHandle::send_raw`]). `Ok(false)`: its queue was full (now closing, 4008).
    async fn send_raw(&self, id: &ConnectionId, frame: RawFrame) -> Result<bool, DirectoryError>;

    /// Starts closing an open connection for `reason`.
    async fn close(&self, id: &ConnectionId, reason: CloseReason) -> Result<(), DirectoryError>;
}

/// [`ConnectionDirectory`] over this node's [`ConnectionRegistry`]; answers at once.
pub struct LocalDirectory {
    connections: Arc<ConnectionRegistry>,
}

impl LocalDirectory {
    /// The directory of the connections in `connections`.
    pub fn new(connections: Arc<ConnectionRegistry>) -> Self {
        Self { connections }
    }

    /// An open connection's handle; a closing one counts as gone, as in the list.
    fn open(&self, id: &ConnectionId) -> Result<Arc<ConnectionHandle>, DirectoryError> {
        self.connections.get(id).filter(|c| !c.is_closing()).ok_or_else(|| DirectoryError::NotFound(id.clone()))
    }
}

#[async_trait]
impl ConnectionDirectory for LocalDirectory {
    async fn list(&self, filter: &ConnectionFilter) -> Result<Vec<ConnectionInfo>, DirectoryError> {
        let list = self.connections.list(filter.user.as_deref(), filter.topic.as_ref());
        Ok(list.iter().map(|c| ConnectionInfo::of(c)).collect())
    }

    async fn get(&self, id: &ConnectionId) -> Result<ConnectionInfo, DirectoryError> {
        self.open(id).map(|c| ConnectionInfo::of(&c))
    }

    async fn send(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError> {
        self.send_now(id, frame)
    }

    fn send_now(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError> {
        Ok(self.open(id)?.send(frame))
    }

    async fn send_raw(&self, id: &ConnectionId, frame: RawFrame) -> Result<bool, DirectoryError> {
        self.open(id)?.send_raw(frame).map_err(|e| DirectoryError::Unsupported(e.to_string()))
    }

    async fn close(&self, id: &ConnectionId, reason: CloseReason) -> Result<(), DirectoryError> {
        self.open(id)?.close(reason);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::QueueLimits;
    use crate::metrics::Metrics;

    fn registry_with(users: &[&str], frames: usize) -> (LocalDirectory, Vec<Arc<ConnectionHandle>>) {
        let registry = Arc::new(ConnectionRegistry::new(100, 100));
        let handles: Vec<_> = users
            .iter()
            .map(|u| {
                let remote = SocketAddr::from(([127, 0, 0, 1], 1));
                let limits = QueueLimits { frames, bytes: 1 << 20 };
                let conn = Arc::new(ConnectionHandle::new(
                    ConnectionId::generate(),
                    UserId::new(u),
                    remote,
                    limits,
                    Metrics::new(),
                ));
                registry.insert(conn.clone());
                conn
            })
            .collect();
        (LocalDirectory::new(registry), handles)
    }

    #[tokio::test]
    async fn lists_filters_and_finds_open_connections() {
        let (directory, conns) = registry_with(&["a", "b"], 8);
        let all = directory.list(&ConnectionFilter::default()).await.unwrap();
        assert_eq!(all.len(), 2);
        let only_b = directory.list(&ConnectionFilter { user: Some("b".into()), topic: None }).await.unwrap();
        assert_eq!(only_b.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![conns[1].id.clone()]);
        assert_eq!(directory.get(&conns[0].id).await.unwrap().user, UserId::new("a"));
    }

    #[tokio::test]
    async fn unknown_and_closing_connections_are_not_found() {
        let (directory, conns) = registry_with(&["a"], 8);
        let unknown = ConnectionId::generate();
        assert_eq!(directory.send(&unknown, "{}".into()).await, Err(DirectoryError::NotFound(unknown.clone())));
        assert_eq!(
            directory.close(&unknown, CloseReason::ClosedByBackend).await,
            Err(DirectoryError::NotFound(unknown))
        );

        assert_eq!(directory.send(&conns[0].id, "{}".into()).await, Ok(true));
        assert_eq!(directory.close(&conns[0].id, CloseReason::ClosedByBackend).await, Ok(()));
        assert_eq!(conns[0].close_reason(), CloseReason::ClosedByBackend);
        // Closing counts as gone, for every operation, as in the list.
        assert!(directory.list(&ConnectionFilter::default()).await.unwrap().is_empty());
        assert!(matches!(directory.get(&conns[0].id).await, Err(DirectoryError::NotFound(_))));
        assert!(matches!(directory.send_now(&conns[0].id, "{}".into()), Err(DirectoryError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_full_queue_answers_not_delivered() {
        let (directory, conns) = registry_with(&["a"], 1);
        assert_eq!(directory.send_now(&conns[0].id, "{}".into()), Ok(true));
        assert_eq!(directory.send(&conns[0].id, "{}".into()).await, Ok(false));
        assert_eq!(conns[0].close_reason(), CloseReason::SlowConsumer);
    }
}
