//! The few Socket.IO v5 / Engine.IO v4 packets the load generator sends and recognises,
//! over the WebSocket transport only (one packet per text frame, no polling, no binary).
//!
//! Recognising a frame is a look at its first bytes and, for an event, at its name: the
//! event's body is handed back as a slice for the [`FrameScanner`](super::scan::FrameScanner),
//! so nothing is parsed or allocated per message.

/// The handshake path and query: Engine.IO v4, straight to WebSocket.
pub const HANDSHAKE_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// Socket.IO CONNECT to the default namespace.
pub const CONNECT: &str = "40";
/// Engine.IO PONG, the answer to the server's PING (Engine.IO v4: the server pings).
pub const PONG: &str = "3";
/// The event name a peer answers `subscribe` with (when it does not use the ack).
pub const SUBSCRIBED: &[u8] = b"subscribed";
/// Ack id the load generator puts on its `subscribe` emit.
const SUBSCRIBE_ACK_ID: u8 = 0;

/// What one text frame is, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO OPEN (`0{"sid":…}`): the handshake answer.
    Open,
    /// Engine.IO CLOSE (`1`) or Socket.IO DISCONNECT (`41`).
    Close,
    /// Engine.IO PING (`2`): must be answered with [`PONG`].
    Ping,
    /// Socket.IO CONNECT answer (`40{"sid":…}`) on the default namespace.
    Connected,
    /// Socket.IO CONNECT_ERROR (`44{…}`), e.g. a refused token.
    ConnectError,
    /// Socket.IO EVENT on the default namespace (`42["name",…]`).
    Event {
        /// The event name (without quotes, escapes left as they are).
        name: &'a [u8],
        /// Everything after the name: the arguments, still encoded.
        args: &'a [u8],
    },
    /// Socket.IO ACK (`43<id>[…]`) on the default namespace.
    Ack {
        /// The ack id.
        id: u64,
        /// The acknowledgement's arguments, still encoded.
        args: &'a [u8],
    },
    /// Anything else (NOOP, other namespaces, binary packets, malformed frames).
    Other,
}

/// Classifies one text frame.
pub fn classify(frame: &[u8]) -> Packet<'_> {
    match frame {
        [b'0', b'{', ..] => Packet::Open,
        [b'1'] | [b'4', b'1', ..] => Packet::Close,
        [b'2'] => Packet::Ping,
        [b'4', b'0'] | [b'4', b'0', b'{', ..] => Packet::Connected,
        [b'4', b'4', ..] => Packet::ConnectError,
        [b'4', b'2', rest @ ..] => event(rest),
        [b'4', b'3', rest @ ..] => ack(rest),
        _ => Packet::Other,
    }
}

/// `42` already stripped: an optional ack id (the server asks for an ack), then
/// `["name"` and the arguments.
fn event(rest: &[u8]) -> Packet<'_> {
    let (_, rest) = split_digits(rest);
    let Some(rest) = rest.strip_prefix(b"[\"") else { return Packet::Other };
    let Some(end) = rest.iter().position(|&b| b == b'"') else { return Packet::Other };
    Packet::Event { name: &rest[..end], args: &rest[end + 1..] }
}

/// `43` already stripped: the ack id, then `[` and the arguments.
fn ack(rest: &[u8]) -> Packet<'_> {
    let (digits, rest) = split_digits(rest);
    let Some(id) = parse_u64(digits) else { return Packet::Other };
    match rest.first() {
        Some(b'[') => Packet::Ack { id, args: rest },
        _ => Packet::Other,
    }
}

fn split_digits(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    bytes.split_at(n)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |v, d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The `subscribe` emit for `bench:{topic}`, asking for an ack: peers that answer with a
/// `subscribed` event and peers that answer through the ack (SPEC §9.2) both work.
pub fn subscribe(topic: usize) -> String {
    format!(r#"42{SUBSCRIBE_ACK_ID}["subscribe",{{"topic":"bench:{topic}"}}]"#)
}

/// Whether `packet` answers the `subscribe` emit: a `subscribed` event or its ack.
pub fn is_subscribe_reply(packet: &Packet<'_>) -> bool {
    match packet {
        Packet::Event { name, .. } => *name == SUBSCRIBED,
        Packet::Ack { id, .. } => *id == u64::from(SUBSCRIBE_ACK_ID),
        _ => false,
    }
}

/// The encoded arguments of a frame that may carry a delivered event: any event but the
/// `subscribed` answer (whose `offset` is the start, not a delivery). Acks never do.
pub fn delivery<'a>(packet: &Packet<'a>) -> Option<&'a [u8]> {
    match *packet {
        Packet::Event { name, args } if name != SUBSCRIBED => Some(args),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{FrameScanner, Scanned};

    #[test]
    fn classifies_engine_io_packets() {
        let open = br#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(classify(open), Packet::Open);
        assert_eq!(classify(b"2"), Packet::Ping);
        assert_eq!(classify(b"1"), Packet::Close);
        assert_eq!(classify(b"6"), Packet::Other);
        assert_eq!(classify(b"2probe"), Packet::Other);
        assert_eq!(classify(b""), Packet::Other);
        assert_eq!(classify(b"0"), Packet::Other);
    }

    #[test]
    fn classifies_socket_io_packets() {
        assert_eq!(classify(b"40"), Packet::Connected);
        assert_eq!(classify(br#"40{"sid":"x"}"#), Packet::Connected);
        assert_eq!(classify(br#"40/admin,{"sid":"x"}"#), Packet::Other);
        assert_eq!(classify(br#"44{"message":"Unauthorized"}"#), Packet::ConnectError);
        assert_eq!(classify(b"41"), Packet::Close);
        assert_eq!(classify(br#"430[{"offset":3}]"#), Packet::Ack { id: 0, args: br#"[{"offset":3}]"# });
        assert_eq!(classify(br#"4312[]"#), Packet::Ack { id: 12, args: b"[]" });
        assert_eq!(classify(br#"43["x"]"#), Packet::Other);
        assert_eq!(classify(br#"4399999999999999999999[]"#), Packet::Other);
        assert_eq!(classify(br#"42/admin,["event",{}]"#), Packet::Other);
        assert_eq!(classify(br#"42["event""#), Packet::Event { name: b"event", args: b"" });
        assert_eq!(classify(br#"42["unterminated"#), Packet::Other);
        assert_eq!(classify(br#"42{}"#), Packet::Other);
    }

    #[test]
    fn finds_event_names_and_arguments() {
        let frame = br#"42["event",{"topic":"bench:1","offset":7,"timestamp":"t","type":"bench","sent":99}]"#;
        let Packet::Event { name, args } = classify(frame) else { panic!("not an event") };
        assert_eq!(name, b"event");
        assert_eq!(args, br#",{"topic":"bench:1","offset":7,"timestamp":"t","type":"bench","sent":99}]"#);
        // With an ack id requested by the server.
        assert_eq!(classify(br#"425["bench",{}]"#), Packet::Event { name: b"bench", args: b",{}]" });
    }

    #[test]
    fn subscribe_emit_and_its_replies() {
        assert_eq!(subscribe(3), r#"420["subscribe",{"topic":"bench:3"}]"#);
        let emitted = classify(br#"42["subscribed",{"topic":"bench:3","offset":5}]"#);
        let acked = classify(br#"430[{"status":"success","topic":"bench:3","offset":5,"recovered":false}]"#);
        assert!(is_subscribe_reply(&emitted));
        assert!(is_subscribe_reply(&acked));
        assert!(!is_subscribe_reply(&classify(br#"431[{"offset":5}]"#)));
        assert!(!is_subscribe_reply(&classify(br#"42["event",{"offset":5}]"#)));
        assert!(!is_subscribe_reply(&Packet::Ping));
        let scanner = FrameScanner::default();
        for reply in [emitted, acked] {
            let args = match reply {
                Packet::Event { args, .. } | Packet::Ack { args, .. } => args,
                _ => panic!("not a reply"),
            };
            assert_eq!(scanner.scan(args).map(|s| s.offset), Some(5));
        }
    }

    #[test]
    fn deliveries_are_events_other_than_the_subscribe_answer() {
        let scanner = FrameScanner::default();
        let frame =
            br#"42["event",{"topic":"bench:0","offset":42,"timestamp":"t","type":"bench","sent":123,"pad":"xx"}]"#;
        let args = delivery(&classify(frame));
        assert_eq!(args.and_then(|a| scanner.scan(a)), Some(Scanned { offset: 42, sent_ns: Some(123) }));
        // Signalbox's planned endpoint names the event after its type (SPEC §9.2).
        assert!(delivery(&classify(br#"42["bench",{"offset":1}]"#)).is_some());
        assert_eq!(delivery(&classify(br#"42["subscribed",{"offset":1}]"#)), None);
        assert_eq!(delivery(&classify(br#"430[{"offset":1}]"#)), None);
        assert_eq!(delivery(&classify(b"2")), None);
        // An event without an offset is not counted.
        let welcome = delivery(&classify(br#"42["connection_established",{"data":{}}]"#));
        assert_eq!(welcome.and_then(|a| scanner.scan(a)), None);
    }
}
