//! The text wire formats: Engine.IO 4 packets and the Socket.IO 5 packets they carry.
//!
//! Engine.IO: one type digit, then data — `0` open, `1` close, `2` ping, `3` pong,
//! `4` message, `5` upgrade, `6` noop. Long-polling bodies join packets with `\x1e`.
//! Socket.IO (inside `4`): `<type>[<attachments>-][/<nsp>,][<ack id>][<JSON>]`, types `0`
//! CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR, `5`/`6` binary.
//!
//! The parsers take the Socket.IO packet (the data of an Engine.IO `4`); the encoders
//! return whole Engine.IO messages (`42/ws,[…]`), ready to write.
//!
//! This module owns parsing what clients send and encoding what the server sends, including
//! the translation of a native server frame (a JSON object with `type`) into its Socket.IO
//! packet: an emit named after `type`, or the ack of the request it answers. It is pure: no
//! I/O, no connection state. Binary attachments are refused here, so nothing downstream
//! ever sees a placeholder.

use serde_json::Value;

/// The separator of packets in a long-polling body.
pub const RECORD_SEPARATOR: char = '\x1e';

/// The longest ack id accepted (Socket.IO's are small counters).
const MAX_ACK_ID: u64 = u32::MAX as u64;

/// An Engine.IO packet from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum EnginePacket<'a> {
    /// `1`: the client closes the session.
    Close,
    /// `2` (with `probe` during an upgrade).
    Ping {
        /// `2probe`.
        probe: bool,
    },
    /// `3` (with `probe` during an upgrade).
    Pong {
        /// `3probe`.
        probe: bool,
    },
    /// `4…`: a Socket.IO packet.
    Message(&'a str),
    /// `5`: the client switches to this transport.
    Upgrade,
    /// `6`.
    Noop,
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet is empty.
    #[error("empty packet")]
    Empty,
    /// An Engine.IO type the client may not send, or not a digit.
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(String),
    /// A Socket.IO type that is not a digit 0–6, or one a client may not send.
    #[error("unknown Socket.IO packet type {0:?}")]
    SocketType(String),
    /// Binary attachments (types 5 and 6, or base64 `b` packets).
    #[error("binary attachments are not supported; send JSON")]
    Binary,
    /// A namespace without its `,`, or an ack id out of range.
    #[error("malformed packet header: {0}")]
    Header(&'static str),
    /// The payload is not JSON of the right shape.
    #[error("malformed packet data: {0}")]
    Data(String),
}

/// Parses one Engine.IO packet.
pub fn parse_engine(text: &str) -> Result<EnginePacket<'_>, PacketError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(PacketError::Empty)?;
    let rest = chars.as_str();
    match (kind, rest) {
        ('1', _) => Ok(EnginePacket::Close),
        ('2', "") => Ok(EnginePacket::Ping { probe: false }),
        ('2', "probe") => Ok(EnginePacket::Ping { probe: true }),
        ('3', "") => Ok(EnginePacket::Pong { probe: false }),
        ('3', "probe") => Ok(EnginePacket::Pong { probe: true }),
        ('4', data) => Ok(EnginePacket::Message(data)),
        ('5', _) => Ok(EnginePacket::Upgrade),
        ('6', _) => Ok(EnginePacket::Noop),
        ('b', _) => Err(PacketError::Binary),
        _ => Err(PacketError::EngineType(text.chars().take(8).collect())),
    }
}

/// A Socket.IO packet from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketPacket<'a> {
    /// Joins `nsp`, with the handshake's `auth` object.
    Connect {
        /// The namespace (`/` by default).
        nsp: &'a str,
        /// `auth` as the client gave it (`{token: …}`), if any.
        auth: Option<Value>,
    },
    /// Leaves `nsp`.
    Disconnect {
        /// The namespace.
        nsp: &'a str,
    },
    /// `emit(name, …args[, ack])`.
    Event {
        /// The namespace.
        nsp: &'a str,
        /// Set when the client waits for an ack.
        ack: Option<u64>,
        /// The event name.
        name: String,
        /// The arguments after the name.
        args: Vec<Value>,
    },
    /// The client's answer to a server emit that asked for one (the server never does).
    Ack {
        /// The namespace.
        nsp: &'a str,
    },
}

/// Parses one Socket.IO packet (the data of an Engine.IO `4` packet).
pub fn parse_socket(text: &str) -> Result<SocketPacket<'_>, PacketError> {
    let kind = text.as_bytes().first().ok_or(PacketError::Empty)?;
    match kind {
        b'5' | b'6' => return Err(PacketError::Binary),
        b'0'..=b'4' => {}
        _ => return Err(PacketError::SocketType(text.chars().take(8).collect())),
    }
    // The first byte is an ASCII digit, so 1 is a character boundary.
    let mut rest = &text[1..];
    // An attachment count belongs to binary packets only.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if rest.as_bytes().get(digits) == Some(&b'-') && digits > 0 {
        return Err(PacketError::Binary);
    }
    let nsp = if rest.starts_with('/') {
        match rest.find(',') {
            Some(end) => {
                let nsp = &rest[..end];
                rest = &rest[end + 1..];
                nsp
            }
            // `/ws` alone (nothing after it) is allowed, as the reference parser does.
            None if !rest.contains(['[', '{']) => std::mem::take(&mut rest),
            None => return Err(PacketError::Header("a namespace must end with `,`")),
        }
    } else {
        "/"
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id: u64 = rest[..digits].parse().map_err(|_| PacketError::Header("ack id out of range"))?;
        if id > MAX_ACK_ID {
            return Err(PacketError::Header("ack id out of range"));
        }
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let data = || -> Result<Option<Value>, PacketError> {
        if rest.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(rest).map(Some).map_err(|e| PacketError::Data(e.to_string()))
    };
    match kind {
        b'0' => match data()? {
            None => Ok(SocketPacket::Connect { nsp, auth: None }),
            Some(auth @ Value::Object(_)) => Ok(SocketPacket::Connect { nsp, auth: Some(auth) }),
            Some(_) => Err(PacketError::Data("CONNECT data must be an object".into())),
        },
        b'1' => Ok(SocketPacket::Disconnect { nsp }),
        b'2' => {
            let Some(Value::Array(mut args)) = data()? else {
                return Err(PacketError::Data("EVENT data must be an array [name, …args]".into()));
            };
            if args.is_empty() {
                return Err(PacketError::Data("EVENT data must start with the event name".into()));
            }
            let Value::String(name) = args.remove(0) else {
                return Err(PacketError::Data("the event name must be a string".into()));
            };
            Ok(SocketPacket::Event { nsp, ack, name, args })
        }
        b'3' => Ok(SocketPacket::Ack { nsp }),
        _ => Err(PacketError::SocketType("4 (CONNECT_ERROR is sent by servers only)".into())),
    }
}

/// `"/ws,"`, or nothing for the main namespace: what follows the type in a packet.
fn nsp_prefix(out: &mut String, nsp: &str) {
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
}

/// The Engine.IO open packet.
pub fn open(sid: &str, upgrades: &[&str], ping_interval_ms: u64, ping_timeout_ms: u64, max_payload: usize) -> String {
    let body = serde_json::json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    format!("0{body}")
}

/// The server's CONNECT answer (`40/ws,{"sid":…}`), with `pid` when the session can be
/// recovered.
pub fn connect_ok(nsp: &str, sid: &str, pid: Option<&str>) -> String {
    let mut out = String::from("40");
    nsp_prefix(&mut out, nsp);
    let body = match pid {
        Some(pid) => serde_json::json!({"sid": sid, "pid": pid}),
        None => serde_json::json!({"sid": sid}),
    };
    out.push_str(&body.to_string());
    out
}

/// CONNECT_ERROR: the client's `connect_error` with `err.message` and `err.data`.
pub fn connect_error(nsp: &str, message: &str, data: &Value) -> String {
    let mut out = String::from("44");
    nsp_prefix(&mut out, nsp);
    out.push_str(&serde_json::json!({"message": message, "data": data}).to_string());
    out
}

/// DISCONNECT from the server (`io server disconnect`: the client does not reconnect).
pub fn disconnect(nsp: &str) -> String {
    let mut out = String::from("41");
    nsp_prefix(&mut out, nsp);
    out
}

/// EVENT: `42/ws,["name",<arg>(,"<offset>")]`. `arg` must be JSON text (it is copied, not
/// re-encoded).
pub fn event(nsp: &str, name: &str, arg: &str, offset: Option<&str>) -> String {
    let mut out = String::with_capacity(8 + nsp.len() + name.len() + arg.len() + offset.map_or(0, |o| o.len() + 3));
    out.push_str("42");
    nsp_prefix(&mut out, nsp);
    out.push('[');
    push_json_string(&mut out, name);
    out.push(',');
    out.push_str(arg);
    if let Some(offset) = offset {
        out.push(',');
        push_json_string(&mut out, offset);
    }
    out.push(']');
    out
}

/// ACK: `43/ws,<id>[<arg>]`. `arg` must be JSON text.
pub fn ack(nsp: &str, id: u64, arg: &str) -> String {
    let mut out = String::with_capacity(12 + nsp.len() + arg.len());
    out.push_str("43");
    nsp_prefix(&mut out, nsp);
    out.push_str(&id.to_string());
    out.push('[');
    out.push_str(arg);
    out.push(']');
    out
}

/// Native replies that answer a request: with an ack pending they become its ack.
const REPLY_TYPES: [&str; 10] = [
    "subscribed",
    "unsubscribed",
    "error",
    "accepted",
    "published",
    "status",
    "presence",
    "refreshed",
    "pong",
    "subscriptions",
];

#[derive(serde::Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The `type` of a native frame (`message` for a frame without one, e.g. a backend's
/// `send` of a bare JSON value).
pub fn frame_type(native: &str) -> String {
    match serde_json::from_str::<TypeOnly<'_>>(native) {
        Ok(TypeOnly { kind: Some(kind) }) => kind.into_owned(),
        _ => "message".to_owned(),
    }
}

/// A native frame as the Socket.IO emit of its `type` with the frame as the argument, plus
/// `offset` (the recovery position) as a last argument when given. Called once per publish
/// per namespace: the result is shared by every Socket.IO subscriber.
pub fn event_from_native(native: &str, nsp: &str, offset: Option<&str>) -> String {
    event(nsp, &frame_type(native), native, offset)
}

/// A backend's raw text for one connection (API Gateway's `post_to_connection`) as an emit:
/// a JSON object is the argument of the emit named after its `type` (else `message`), as a
/// native frame would be; any other JSON value, or text that is not JSON, is the argument
/// of `message` as it is or as a JSON string, so the packet is always valid.
pub fn event_from_raw(text: &str, nsp: &str) -> String {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => event(nsp, &frame_type(text), text, None),
        Err(_) => {
            let mut quoted = String::with_capacity(text.len() + 2);
            push_json_string(&mut quoted, text);
            event(nsp, "message", &quoted, None)
        }
    }
}

/// A reply to one connection: the ack of its pending request (`ack`), whose argument is
/// the reply's object with `status` (`success`, or `error`), or, without an ack, the emit
/// named after its `type` with the native frame (with `requestId`) as the argument.
pub fn reply(nsp: &str, ack_id: Option<u64>, reply: &crate::codec::reply::Reply, request_id: Option<&str>) -> String {
    match ack_id {
        Some(id) => reply_ack(nsp, id, reply.object()),
        None => event(nsp, reply.kind(), &reply.native(request_id), None),
    }
}

/// The ack of a request: the reply's object (with `type`, without `requestId`) plus
/// `status`, `error` for an error and `success` otherwise.
fn reply_ack(nsp: &str, id: u64, mut object: serde_json::Map<String, Value>) -> String {
    object.remove("requestId");
    let status = if object.get("type").and_then(Value::as_str) == Some("error") { "error" } else { "success" };
    object.insert("status".into(), Value::from(status));
    ack(nsp, id, &Value::Object(object).to_string())
}

/// A native reply that reached the connection as text (from the sinks, possibly through
/// another node): the ack of its pending request when it answers one
/// (`ack` is `Some` and its type is a reply's), else an emit. The ack's argument is the
/// native object with `status` (`success`, or `error` for an error) and without
/// `requestId`. Returns the packet and whether the ack was used.
pub fn reply_from_native(native: &str, nsp: &str, ack_id: Option<u64>) -> (String, bool) {
    let Some(id) = ack_id else { return (event_from_native(native, nsp, None), false) };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(native) else {
        return (event_from_native(native, nsp, None), false);
    };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or_default();
    if !REPLY_TYPES.contains(&kind) {
        return (event_from_native(native, nsp, None), false);
    }
    (reply_ack(nsp, id, object), true)
}

/// The offset argument Socket.IO recovery appends to an event: `<offset>@<topic>`. The
/// same for every subscriber (so the packet is still encoded once), and enough for the
/// server to find the event in a session's log when the client reports it back.
pub fn recovery_offset(topic: &str, offset: u64) -> String {
    format!("{offset}@{topic}")
}

/// The topic and offset of a recovery offset argument.
pub fn parse_recovery_offset(text: &str) -> Option<(&str, u64)> {
    let (offset, topic) = text.split_once('@')?;
    Some((topic, offset.parse().ok()?))
}

fn push_json_string(out: &mut String, s: &str) {
    // Serializing a `&str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(parse_engine("2"), Ok(EnginePacket::Ping { probe: false }));
        assert_eq!(parse_engine("2probe"), Ok(EnginePacket::Ping { probe: true }));
        assert_eq!(parse_engine("3"), Ok(EnginePacket::Pong { probe: false }));
        assert_eq!(parse_engine("40/ws,"), Ok(EnginePacket::Message("0/ws,")));
        assert_eq!(parse_engine("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(parse_engine("1"), Ok(EnginePacket::Close));
        assert_eq!(parse_engine("bAQID"), Err(PacketError::Binary));
        assert!(matches!(parse_engine("9"), Err(PacketError::EngineType(_))));
        assert!(matches!(parse_engine("2x"), Err(PacketError::EngineType(_))));
        assert_eq!(parse_engine(""), Err(PacketError::Empty));
    }

    #[test]
    fn socket_packets() {
        assert_eq!(
            parse_socket("0/ws,{\"token\":\"t\"}"),
            Ok(SocketPacket::Connect { nsp: "/ws", auth: Some(json!({"token": "t"})) })
        );
        assert_eq!(parse_socket("0"), Ok(SocketPacket::Connect { nsp: "/", auth: None }));
        assert_eq!(parse_socket("0/ws,"), Ok(SocketPacket::Connect { nsp: "/ws", auth: None }));
        assert_eq!(parse_socket("1/ws,"), Ok(SocketPacket::Disconnect { nsp: "/ws" }));
        assert_eq!(
            parse_socket("2/ws,12[\"subscribe\",{\"room\":\"job:1\"}]"),
            Ok(SocketPacket::Event {
                nsp: "/ws",
                ack: Some(12),
                name: "subscribe".into(),
                args: vec![json!({"room": "job:1"})]
            })
        );
        assert_eq!(
            parse_socket("2[\"hello\"]"),
            Ok(SocketPacket::Event { nsp: "/", ack: None, name: "hello".into(), args: vec![] })
        );
        assert_eq!(parse_socket("3/ws,4[]"), Ok(SocketPacket::Ack { nsp: "/ws" }));
        for binary in ["51-/ws,[\"x\",{\"_placeholder\":true,\"num\":0}]", "61-/ws,0[]", "21-[\"x\"]"] {
            assert_eq!(parse_socket(binary), Err(PacketError::Binary), "{binary}");
        }
        for bad in ["2/ws,[oops", "2/ws,{}", "2/ws,[]", "2/ws,[1]", "0/ws,[1]", "9", "x", "4/ws,{}", "2/ws[\"a\"]"] {
            assert!(parse_socket(bad).is_err(), "{bad}");
        }
        assert!(parse_socket("2/ws,99999999999999999999[\"a\"]").is_err(), "ack id overflow");
    }

    #[test]
    fn server_packets() {
        assert_eq!(connect_ok("/ws", "conn_1", None), "40/ws,{\"sid\":\"conn_1\"}");
        assert_eq!(connect_ok("/", "s", Some("p")), "40{\"pid\":\"p\",\"sid\":\"s\"}");
        assert_eq!(event("/ws", "project.updated", "{\"a\":1}", None), "42/ws,[\"project.updated\",{\"a\":1}]");
        assert_eq!(event("/", "x", "{}", Some("job:1 e 3")), "42[\"x\",{},\"job:1 e 3\"]");
        assert_eq!(ack("/ws", 7, "{\"status\":\"success\"}"), "43/ws,7[{\"status\":\"success\"}]");
        assert_eq!(disconnect("/ws"), "41/ws,");
        assert_eq!(disconnect("/"), "41");
        let err = connect_error("/ws", "bad token", &json!({"code": "AUTHENTICATION_ERROR"}));
        assert_eq!(err, "44/ws,{\"data\":{\"code\":\"AUTHENTICATION_ERROR\"},\"message\":\"bad token\"}");
        let open = open("sid1", &["websocket"], 25_000, 20_000, 65_536);
        let body: Value = serde_json::from_str(&open[1..]).unwrap();
        assert_eq!(body["upgrades"], json!(["websocket"]));
        assert_eq!(body["pingInterval"], 25_000);
    }

    #[test]
    fn what_the_server_encodes_the_parser_reads_back() {
        let text = event("/ws", "a\"b", "{\"x\":[1,2]}", None);
        let SocketPacket::Event { nsp, name, args, ack } = parse_socket(&text[1..]).unwrap() else { panic!() };
        assert_eq!((nsp, name.as_str(), ack), ("/ws", "a\"b", None));
        assert_eq!(args, vec![json!({"x": [1, 2]})]);
    }

    #[test]
    fn native_frames_become_emits_and_acks() {
        let delivery = "{\"topic\":\"job:1\",\"offset\":3,\"type\":\"progress\",\"pct\":5}";
        assert_eq!(event_from_native(delivery, "/ws", None), format!("42/ws,[\"progress\",{delivery}]"));
        assert_eq!(event_from_native("[1]", "/", None), "42[\"message\",[1]]");
        let subscribed = "{\"type\":\"subscribed\",\"topic\":\"job:1\",\"offset\":0,\"epoch\":\"e\",\"recovered\":false,\"requestId\":\"r\"}";
        let (packet, used) = reply_from_native(subscribed, "/ws", Some(4));
        assert!(used);
        let arg: Value =
            serde_json::from_str(packet.strip_prefix("43/ws,4[").unwrap().strip_suffix(']').unwrap()).unwrap();
        assert_eq!(
            arg,
            json!({"type": "subscribed", "status": "success", "topic": "job:1", "offset": 0, "epoch": "e", "recovered": false})
        );
        let (packet, used) = reply_from_native("{\"type\":\"error\",\"code\":\"X\",\"message\":\"m\"}", "/", Some(1));
        assert!(used && packet.contains("\"status\":\"error\""), "{packet}");
        let (packet, used) = reply_from_native("{\"type\":\"error\",\"code\":\"X\",\"message\":\"m\"}", "/", None);
        assert!(!used && packet.starts_with("42[\"error\","), "{packet}");
        let (packet, used) = reply_from_native(delivery, "/ws", Some(2));
        assert!(!used && packet.starts_with("42/ws,[\"progress\""), "an event is never an ack: {packet}");
    }

    #[test]
    fn typed_replies_are_acks_or_emits() {
        use crate::codec::reply::Reply;
        use crate::domain::ErrorCode;
        let error = Reply::Error { code: ErrorCode::Authorization, message: "no".into() };
        let packet = reply("/ws", Some(3), &error, Some("r1"));
        let arg: Value =
            serde_json::from_str(packet.strip_prefix("43/ws,3[").unwrap().strip_suffix(']').unwrap()).unwrap();
        assert_eq!(arg, json!({"type": "error", "status": "error", "code": "AUTHORIZATION_ERROR", "message": "no"}));
        let packet = reply("/ws", None, &error, Some("r1"));
        assert!(packet.starts_with("42/ws,[\"error\",{") && packet.contains("\"requestId\":\"r1\""), "{packet}");
        let packet = reply("/", Some(0), &Reply::Pong, None);
        assert_eq!(packet, "430[{\"status\":\"success\",\"type\":\"pong\"}]");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,64}") {
            let _ = parse_engine(&text);
            let _ = parse_socket(&text);
        }

        #[test]
        fn parsers_never_panic_on_near_valid_packets(
            kind in "[0-9]", count in "[0-9]{0,3}-?", nsp in "(/[a-z]{0,4},?)?", id in "[0-9]{0,25}", data in ".{0,24}",
        ) {
            let _ = parse_socket(&format!("{kind}{count}{nsp}{id}{data}"));
        }
    }

    #[test]
    fn raw_text_becomes_a_valid_emit() {
        assert_eq!(
            event_from_raw(r#"{"type":"dealUpdate","id":1}"#, "/ws"),
            r#"42/ws,["dealUpdate",{"type":"dealUpdate","id":1}]"#
        );
        assert_eq!(event_from_raw("[1,2]", "/"), r#"42["message",[1,2]]"#);
        assert_eq!(event_from_raw("hello \"you\"", "/"), r#"42["message","hello \"you\""]"#);
        assert_eq!(event_from_raw("", "/"), r#"42["message",""]"#);
        for text in ["{", "1 2", "\u{0}", "{\"a\":1} trailing"] {
            let packet = event_from_raw(text, "/");
            let args: serde_json::Value = serde_json::from_str(&packet[2..]).unwrap();
            assert_eq!(args[1], serde_json::Value::String(text.into()), "{packet}");
        }
    }
}
