//! A Socket.IO connection's client packets, turned into the native requests the shared
//! [`Session`] handles: one request path, one ACL, one rate limit for both protocols.
//!
//! `emit(name, data, ack)` becomes the native message `{…data, "action": name}`; the reply
//! the session queues for it becomes the ack (see `hub::outbound::SocketIoWire`). This
//! module owns that mapping and the handling of Engine.IO control packets on an open
//! connection. It must never write to a socket or encode an event.

use serde_json::{Map, Value};

use crate::codec::socketio::{EnginePacket, SocketPacket, connect_error, parse_engine, parse_socket};
use crate::domain::ErrorCode;
use crate::hub::{CloseReason, Wire};
use crate::ws::session::Session;

/// Handles one Engine.IO text packet from an open Socket.IO connection.
pub async fn on_engine_text(session: &mut Session, text: &str) {
    match parse_engine(text) {
        // Heard already (any frame counts); a client never needs an answer to these here.
        Ok(EnginePacket::Pong { .. }) => {
            if let Wire::SocketIo(wire) = session.conn().wire() {
                wire.pong_received();
            }
        }
        Ok(EnginePacket::Ping { .. } | EnginePacket::Noop | EnginePacket::Upgrade) => {}
        Ok(EnginePacket::Close) => session.conn().close(CloseReason::ClientGone),
        Ok(EnginePacket::Message(packet)) => on_socket_packet(session, packet).await,
        Err(e) => session.refuse_input(ErrorCode::Validation, &e.to_string()),
    }
}

async fn on_socket_packet(session: &mut Session, text: &str) {
    let conn = session.conn().clone();
    let Wire::SocketIo(wire) = conn.wire() else { return };
    match parse_socket(text) {
        Ok(SocketPacket::Event { nsp, ack, name, args }) => {
            if nsp != &*wire.nsp {
                let message = format!("not connected to namespace {nsp}; this connection is in {}", wire.nsp);
                return session.refuse_input(ErrorCode::Validation, &message);
            }
            let mut fields = match args.into_iter().next() {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(fields)) => fields,
                Some(_) => {
                    wire.expect_ack(ack);
                    session.refuse_input(ErrorCode::Validation, "the emit's data must be an object");
                    wire.expect_ack(None);
                    return;
                }
            };
            fields.insert("action".into(), Value::String(name));
            let request = Value::Object(fields).to_string();
            wire.expect_ack(ack);
            session.on_text(&request).await;
            wire.expect_ack(None);
        }
        Ok(SocketPacket::Disconnect { nsp }) if nsp == &*wire.nsp => {
            // socket.disconnect(): the client is done; its session is not kept.
            wire.mark_left();
            conn.close(CloseReason::ClientGone);
        }
        // The server never asks for acks; a late or stray one is ignored, as is leaving a
        // namespace the connection is not in.
        Ok(SocketPacket::Ack { .. } | SocketPacket::Disconnect { .. }) => {}
        Ok(SocketPacket::Connect { nsp, .. }) => {
            // One namespace per connection: the other namespace's socket is told why.
            let message = format!(
                "this connection is in namespace {}; connect to {nsp} with its own Manager (forceNew: true)",
                wire.nsp
            );
            let data = serde_json::json!({"code": ErrorCode::Validation.as_str(), "message": message});
            conn.send_encoded(connect_error(nsp, &message, &data).into());
        }
        Err(e) => session.refuse_input(ErrorCode::Validation, &e.to_string()),
    }
}
