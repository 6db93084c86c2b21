//! One connection's request handling: rate limit, parse, authorize, act, reply.
//!
//! Owns the connection's identity (replaced by `refresh`) and token bucket. Replies go
//! through the connection's outbound queue, so they stay ordered with its events.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::SystemTime;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::protocol::{
    ClientAction, ClientRequest, Since, SubscriptionFilter, parse_client_frame_with, peek_request_id,
};
use crate::auth::{AuthError, Identity};
use crate::broker::ReadRequest;
use crate::codec::reply::Reply;
use crate::domain::{Epoch, ErrorCode, Event, LogId, Topic, unix_millis};
use crate::hub::{CloseReason, ConnectionHandle, SubscribeError, SubscribeOptions, Wire};
use crate::sinks::{MessageId, RoutedMessage};
use crate::state::AppState;

/// Request handling state of one connection.
pub struct Session {
    state: AppState,
    conn: Arc<ConnectionHandle>,
    identity: Identity,
    limiter: DefaultDirectRateLimiter,
    rejected_in_a_row: u32,
    abuse_threshold: u32,
}

impl Session {
    /// A session for `conn`, authenticated as `identity`.
    pub fn new(state: AppState, conn: Arc<ConnectionHandle>, identity: Identity) -> Self {
        let limits = &state.config.limits;
        let per_second = NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst));
        let abuse_threshold = limits.rate_burst.saturating_mul(5);
        conn.set_expiry(identity.expires_at);
        Self { state, conn, identity, limiter, rejected_in_a_row: 0, abuse_threshold }
    }

    /// Subscribes to `user:<sub>` and `global` without replies.
    pub async fn subscribe_automatic(&mut self) {
        let user_topic = Topic::with_namespace("user", self.identity.user.as_str());
        if let Err(e) = &user_topic {
            // A `sub` such as `auth0|abc` has characters topics cannot hold (SPEC §1), so this
            // user has no `user:` topic; say so instead of failing the connection.
            tracing::warn!(connectionId = %self.conn.id, userId = %LogId(self.identity.user.as_str()), error = %e, "no user:<sub> topic for this user id");
        }
        for topic in [user_topic.ok(), Topic::parse("global").ok()].into_iter().flatten() {
            if let Err(e) = self.state.hub.subscribe(&self.conn, &topic, SubscribeOptions::default(), None).await {
                tracing::warn!(connectionId = %self.conn.id, userId = %LogId(self.conn.user.as_str()), topic = %topic, error = %e, "automatic subscription failed");
            }
        }
    }

    /// Subscribes to one topic named in the upgrade's query string, exactly as a
    /// `subscribe` message without `requestId` would (reply or error frame included);
    /// `Err` holds why the parameter names no valid topic.
    pub async fn subscribe_at_connect(&mut self, requested: Result<Topic, String>) {
        match requested {
            Ok(topic) => self.subscribe(topic, None, None, None).await,
            Err(message) => self.error(ErrorCode::Validation, &message, None),
        }
    }

    /// Handles one text frame.
    pub async fn on_text(&mut self, text: &str) {
        self.state.metrics.messages_received.increment(1);
        if !self.admit(|| peek_request_id(text)) {
            return;
        }
        let limit = self.state.config.limits.max_message_size;
        if text.len() > limit {
            let message = format!("message is {} bytes; the limit is {limit}", text.len());
            self.error(ErrorCode::PayloadTooLarge, &message, peek_request_id(text).as_deref());
            return;
        }
        match parse_client_frame_with(text, &self.state.config.actions) {
            Ok(request) => self.handle(request, text).await,
            Err(e) => self.error(e.code, &e.message, e.request_id.as_deref()),
        }
    }

    /// Handles one text frame in the connection's wire protocol: native JSON, or an
    /// Engine.IO packet for a Socket.IO connection (`crate::socketio::session`).
    pub async fn on_wire_text(&mut self, text: &str) {
        if matches!(self.conn.wire(), Wire::SocketIo(_)) {
            crate::socketio::session::on_engine_text(self, text).await;
        } else {
            self.on_text(text).await;
        }
    }

    /// The connection this session serves.
    pub fn conn(&self) -> &Arc<ConnectionHandle> {
        &self.conn
    }

    /// A client input refused before it became a request (a malformed Socket.IO packet):
    /// counted and rate-limited like a message, answered with an `error`.
    pub fn refuse_input(&mut self, code: ErrorCode, message: &str) {
        self.state.metrics.messages_received.increment(1);
        if self.admit(|| None) {
            self.error(code, message, None);
        }
    }

    /// Handles one binary frame (not part of the protocol).
    pub fn on_binary(&mut self) {
        self.state.metrics.messages_received.increment(1);
        if self.admit(|| None) {
            self.error(ErrorCode::Validation, "binary frames are not supported; send JSON text frames", None);
        }
    }

    /// Applies the token bucket. Sustained abuse (5 × burst rejections in a row) closes
    /// the connection with 1008.
    fn admit(&mut self, request_id: impl FnOnce() -> Option<String>) -> bool {
        if self.limiter.check().is_ok() {
            self.rejected_in_a_row = 0;
            return true;
        }
        self.rejected_in_a_row += 1;
        if self.rejected_in_a_row >= self.abuse_threshold {
            tracing::warn!(connectionId = %self.conn.id, userId = %LogId(self.conn.user.as_str()), "closing with 1008: sustained rate-limit abuse");
            self.conn.close(CloseReason::PolicyViolation);
        } else {
            self.error(ErrorCode::RateLimitExceeded, "too many messages; slow down", request_id().as_deref());
        }
        false
    }

    /// Acts on a parsed request; `text` is the frame it came from (routed messages carry
    /// it to the sink unchanged).
    async fn handle(&mut self, request: ClientRequest, text: &str) {
        let rid = request.request_id.as_deref();
        match request.action {
            ClientAction::Subscribe { topic, since, filter } => self.subscribe(topic, since, filter, rid).await,
            ClientAction::Unsubscribe { topic } => {
                self.state.hub.unsubscribe(&self.conn, &topic);
                self.reply(Reply::Unsubscribed { topic }, rid);
            }
            ClientAction::Publish { topic, event, retain } => self.publish(topic, event, retain, rid).await,
            ClientAction::RequestStatus { topic } => self.request_status(topic, rid).await,
            ClientAction::Presence { topic } => self.presence(topic, rid).await,
            ClientAction::Ping => self.reply(Reply::Pong, rid),
            ClientAction::Subscriptions => self.reply(Reply::Subscriptions { topics: self.conn.topics() }, rid),
            ClientAction::Refresh { token } => self.refresh(&token, rid),
            ClientAction::Routed { action, message } => self.route(action, &message, text, rid).await,
        }
    }

    async fn subscribe(
        &mut self,
        topic: Topic,
        since: Option<Since>,
        filter: Option<SubscriptionFilter>,
        rid: Option<&str>,
    ) {
        if !self.state.policy.may_subscribe(&self.identity, &topic) {
            return self.error(ErrorCode::Authorization, &format!("not allowed to subscribe to {topic}"), rid);
        }
        let options = SubscribeOptions {
            since: since.map(|s| (s.offset, Epoch::new(&s.epoch))),
            filter: filter.map(|f| f.filter),
        };
        let reply = |conn: &ConnectionHandle, s: &crate::hub::Subscribed| {
            let subscribed =
                Reply::Subscribed { topic: topic.clone(), position: s.position.clone(), recovered: s.recovered };
            conn.send_reply(&subscribed, rid);
        };
        match self.state.hub.subscribe(&self.conn, &topic, options, Some(&reply)).await {
            Ok(_) => {}
            Err(SubscribeError::TooMany(max)) => self.error(
                ErrorCode::Validation,
                &format!("subscription limit reached: at most {max} topics per connection"),
                rid,
            ),
            Err(SubscribeError::Broker(e)) => self.error(ErrorCode::BrokerUnavailable, &e.to_string(), rid),
        }
    }

    async fn request_status(&mut self, topic: Topic, rid: Option<&str>) {
        if !self.state.policy.may_subscribe(&self.identity, &topic) {
            return self.error(ErrorCode::Authorization, &format!("not allowed to read {topic}"), rid);
        }
        let request = ReadRequest { retained: true, ..ReadRequest::default() };
        match self.state.hub.read(&topic, request).await {
            Ok(read) => {
                self.reply(Reply::Status { state: read.retained_json(), position: read.position, topic }, rid);
            }
            Err(e) => self.error(ErrorCode::BrokerUnavailable, &e.to_string(), rid),
        }
    }

    async fn presence(&mut self, topic: Topic, rid: Option<&str>) {
        if !self.state.policy.may_subscribe(&self.identity, &topic) {
            return self.error(ErrorCode::Authorization, &format!("not allowed to see who is in {topic}"), rid);
        }
        match self.state.hub.presence(&topic).await {
            Ok(presence) => self.reply(Reply::Presence { topic, presence }, rid),
            Err(e) => self.error(ErrorCode::BrokerUnavailable, &e.to_string(), rid),
        }
    }

    async fn publish(&mut self, topic: Topic, event: Event, retain: bool, rid: Option<&str>) {
        if !self.state.policy.may_client_publish(&self.identity, &topic) {
            return self.error(ErrorCode::Authorization, &format!("clients may not publish to {topic}"), rid);
        }
        match self.state.hub.publish(&topic, event, retain).await {
            Ok(position) => self.reply(Reply::Published { topic, offset: position.offset }, rid),
            Err(e) => self.error(ErrorCode::BrokerUnavailable, &e.to_string(), rid),
        }
    }

    /// Hands a routed message to its sink. The reply (`accepted`, then any relayed
    /// answer) is sent by the sinks layer once the message is durable; this request
    /// holds the connection's reading until then, so a connection's messages reach a
    /// sink in the order it sent them.
    async fn route(&mut self, action: String, message: &Map<String, Value>, text: &str, rid: Option<&str>) {
        let dispatcher = &self.state.dispatcher;
        let sink = match dispatcher.route(&action, message) {
            Ok(sink) => sink.to_owned(),
            Err(e) => return self.error(ErrorCode::UnknownAction, &e.to_string(), rid),
        };
        let routed = RoutedMessage {
            message_id: MessageId::generate(),
            sink,
            action,
            connection_id: self.conn.id.as_str().to_owned(),
            user_id: self.identity.user.as_str().to_owned(),
            request_id: rid.map(str::to_owned),
            received_at_ms: unix_millis(SystemTime::now()),
            connected_at_ms: unix_millis(self.conn.connected_at),
            source_ip: self.conn.remote.ip().to_string(),
            body: text.to_owned(),
        };
        if let Err(e) = dispatcher.submit(routed).await {
            tracing::warn!(connectionId = %self.conn.id, userId = %LogId(self.conn.user.as_str()), requestId = rid.map(|r| tracing::field::display(LogId(r))), error = %e, "routed message not accepted");
            self.error(ErrorCode::SinkUnavailable, &e.to_string(), rid);
        }
    }

    fn refresh(&mut self, token: &str, rid: Option<&str>) {
        let refreshed = match self.state.authenticator.authenticate(token) {
            Ok(identity) if identity.user == self.identity.user => identity,
            Ok(_) => return self.error(ErrorCode::Authentication, "the new token is for a different user", rid),
            Err(AuthError::Expired) => return self.error(ErrorCode::Authentication, "the new token is expired", rid),
            Err(e) => return self.error(ErrorCode::Authentication, &e.to_string(), rid),
        };
        // Authenticators refuse an `exp` past the year 9999 (RFC 3339 has four-digit years),
        // so this always formats; if one did not, the old token stays rather than the
        // client being told an empty or made-up expiry.
        let Some(expires_at) = refreshed.expires_at.and_then(rfc3339_from_unix) else {
            return self.error(ErrorCode::Authentication, "the new token's `exp` is not a valid time", rid);
        };
        self.identity = refreshed;
        self.conn.set_expiry(self.identity.expires_at);
        self.reply(Reply::Refreshed { expires_at }, rid);
    }

    fn reply(&self, reply: Reply, rid: Option<&str>) {
        self.conn.send_reply(&reply, rid);
    }

    fn error(&self, code: ErrorCode, message: &str, rid: Option<&str>) {
        self.state.metrics.error(code);
        tracing::debug!(connectionId = %self.conn.id, userId = %LogId(self.conn.user.as_str()), requestId = rid.map(|r| tracing::field::display(LogId(r))), code = code.as_str(), message, "client error");
        self.reply(Reply::Error { code, message: message.to_owned() }, rid);
    }
}

/// `unix_seconds` as RFC 3339 UTC (`2024-11-22T00:02:34Z`); `None` outside years 0–9999.
fn rfc3339_from_unix(unix_seconds: u64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp(i64::try_from(unix_seconds).ok()?).ok()?;
    at.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats_up_to_the_end_of_year_9999() {
        assert_eq!(rfc3339_from_unix(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339_from_unix(253_402_300_799).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339_from_unix(253_402_300_800), None, "year 10000");
        assert_eq!(rfc3339_from_unix(u64::MAX), None);
    }
}
