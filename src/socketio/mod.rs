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
pub mod session;

pub use endpoint::socketio_handler;
pub use polling::PollingSessions;
