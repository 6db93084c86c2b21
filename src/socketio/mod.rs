//! The Socket.IO v4 endpoint (`/socket.io/`, SPEC §9.2): Engine.IO 4 over HTTP
//! long-polling and WebSocket, Socket.IO 5 namespaces, emits and acks, served by the same
//! hub, ACL, limits and connection directory as native clients.
//!
//! Owns the endpoint's HTTP side (`endpoint`: handshake, CONNECT and auth; `polling`:
//! long-polling sessions and their upgrade) and the mapping of client packets onto native
//! requests (`session`). The packet formats are in `codec::socketio`, and the encoding of
//! server frames into packets — once per frame, shared by every Socket.IO subscriber — in
//! `hub::outbound`. A WebSocket, whether first or upgraded, runs on the native connection
//! task. This module must never encode an event per subscriber, nor name a broker or sink.

mod endpoint;
pub mod polling;
pub mod recovery;
pub mod session;

use std::sync::{Arc, OnceLock};

pub use endpoint::socketio_handler;
pub use polling::PollingSessions;
use recovery::{MemoryStore, SessionStore};

/// This node's Socket.IO state: polling sessions, and where recoverable sessions are saved.
#[derive(Default)]
pub struct SocketIoState {
    /// Long-polling sessions.
    pub polling: PollingSessions,
    store: OnceLock<Arc<dyn SessionStore>>,
}

impl SocketIoState {
    /// Saves recoverable sessions in `store` (Redis, with a Redis broker); set once, by
    /// the composition root, before serving.
    pub fn use_store(&self, store: Arc<dyn SessionStore>) {
        let _ = self.store.set(store);
    }

    /// The session store (this process's memory unless another was set).
    pub fn sessions(&self) -> Arc<dyn SessionStore> {
        self.store.get_or_init(|| Arc::new(MemoryStore::default())).clone()
    }
}
