//! Pure domain types: topics, identities, events, stream positions, subscription filters.
//!
//! This module owns the vocabulary every other layer speaks and the parsing that turns
//! untrusted input into it. It must never depend on tokio, I/O or any transport: values
//! are validated once at the boundary and are trusted everywhere past it.

mod actions;
mod error_code;
mod event;
mod filter;
mod ids;
mod log_id;
mod pattern;
mod position;
mod presence;
mod topic;

pub use actions::BUILT_IN_ACTIONS;
pub use error_code::ErrorCode;
pub use event::{Event, EventError, now_rfc3339, write_now_rfc3339};
pub use filter::{Filter, FilterError};
pub use ids::{ConnectionId, UserId, unique_id, unix_millis};
pub use log_id::{LOG_ID_MAX_BYTES, LogId};
pub use pattern::TopicPattern;
pub use position::{Epoch, StreamPosition};
pub use presence::{Presence, PresenceMember};
pub use topic::{Topic, TopicError};
