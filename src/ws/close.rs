//! Why a connection ends, in one place: close reasons → WebSocket close codes, and
//! tungstenite's read errors → close reasons.
//!
//! Owns the mapping only. It must never touch a socket or a connection: `connection`
//! decides when to close and sends the frame.

use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::hub::CloseReason;

/// The close code and reason text sent for `reason`, or `None` when no close frame is
/// sent (the peer is gone or stopped answering).
pub fn close_code(reason: CloseReason) -> Option<(u16, &'static str)> {
    match reason {
        CloseReason::Shutdown => Some((1001, "server shutting down")),
        CloseReason::PolicyViolation => Some((1008, "rate limit abuse")),
        CloseReason::MessageTooBig => Some((1009, "message too big")),
        CloseReason::ProtocolError => Some((1002, "protocol error")),
        CloseReason::InvalidPayload => Some((1007, "invalid UTF-8")),
        CloseReason::TokenExpired => Some((4001, "token expired")),
        CloseReason::SlowConsumer => Some((4008, "slow consumer")),
        CloseReason::ClosedByBackend => Some((1000, "closed by backend")),
        CloseReason::Resync => Some((1012, "resynchronise: reconnect and resume")),
        CloseReason::HeartbeatTimeout | CloseReason::ClientGone => None,
    }
}

/// Whether `reason` means the client broke the WebSocket protocol (the closes counted in
/// `signalbox_ws_protocol_errors_total`).
pub fn is_protocol_violation(reason: CloseReason) -> bool {
    matches!(reason, CloseReason::ProtocolError | CloseReason::InvalidPayload | CloseReason::MessageTooBig)
}

/// The close reason for an error from tungstenite's read side (RFC 6455 §7.4.1): `1002`
/// for a broken framing rule, `1007` for invalid UTF-8, `1009` for a message or frame over
/// the limit. Anything else (I/O errors, the peer vanishing) means the client is gone.
pub fn read_error_reason(error: &Error) -> CloseReason {
    match error {
        Error::Capacity(_) => CloseReason::MessageTooBig,
        // Text payloads and close reasons; tungstenite checks fragments as they arrive.
        Error::Utf8(_) => CloseReason::InvalidPayload,
        Error::Protocol(
            ProtocolError::NonZeroReservedBits
            | ProtocolError::UnmaskedFrameFromClient
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooBig
            | ProtocolError::UnknownControlFrameType(_)
            | ProtocolError::UnknownDataFrameType(_)
            | ProtocolError::UnexpectedContinueFrame
            | ProtocolError::ExpectedFragment(_)
            | ProtocolError::InvalidOpcode(_)
            | ProtocolError::InvalidCloseSequence,
        ) => CloseReason::ProtocolError,
        // I/O errors, the peer dropping TCP without a close frame
        // (`ResetWithoutClosingHandshake`), and errors a frame read never returns: nothing
        // to answer.
        _ => CloseReason::ClientGone,
    }
}

/// The close reason for a close frame read from the client.
///
/// A client close frame with a code that must not be sent (RFC 6455 §7.4.1: below 1000,
/// 1004-1006, 1015, unassigned 1xxx, 5000 and up) is a protocol error. tungstenite has
/// already queued its `1002` reply by then and hands the frame over rewritten to
/// `1002 "Protocol violation"`; that rewrite is the only sign left, so it is what is
/// matched (a client that itself closes with exactly this code and text is counted the
/// same way, which is as it should be: its connection ended on a protocol error).
pub fn peer_close_reason(frame: Option<&CloseFrame>) -> CloseReason {
    match frame {
        Some(f) if f.code == CloseCode::Protocol && f.reason.as_str() == TUNGSTENITE_PROTOCOL_VIOLATION => {
            CloseReason::ProtocolError
        }
        _ => CloseReason::ClientGone,
    }
}

/// The reason text tungstenite puts in its reply to a close frame with a forbidden code.
const TUNGSTENITE_PROTOCOL_VIOLATION: &str = "Protocol violation";

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, Read, Write};

    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketContext};

    use super::*;

    /// Input from a byte string; output kept for inspection.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.read(buf)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A client frame: FIN + `opcode`, masked with a zero key (so the payload is as given).
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first, 0x80 | u8::try_from(payload.len()).unwrap(), 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    /// What a server-side tungstenite context makes of `bytes`.
    fn read(bytes: Vec<u8>) -> (Result<Message, Error>, WebSocketContext, Duplex) {
        let mut io = Duplex { input: Cursor::new(bytes), output: Vec::new() };
        let mut ws = WebSocketContext::new(Role::Server, None);
        let result = ws.read(&mut io);
        (result, ws, io)
    }

    fn reason_of(bytes: Vec<u8>) -> CloseReason {
        match read(bytes).0 {
            Err(e) => read_error_reason(&e),
            Ok(Message::Close(frame)) => peer_close_reason(frame.as_ref()),
            Ok(other) => panic!("expected an error or a close, got {other:?}"),
        }
    }

    #[test]
    fn framing_errors_are_protocol_errors() {
        let cases: &[(&str, Vec<u8>)] = &[
            ("unmasked", vec![0x81, 0x01, b'a']),
            ("rsv1", masked(0xC1, b"a")),
            ("rsv2", masked(0xA1, b"a")),
            ("rsv3", masked(0x91, b"a")),
            ("reserved data opcode", masked(0x83, b"")),
            ("reserved control opcode", masked(0x8B, b"")),
            ("fragmented ping", masked(0x09, b"")),
            ("orphan continuation", masked(0x80, b"a")),
            ("text inside a fragmented text", [masked(0x01, b"a"), masked(0x81, b"b")].concat()),
            ("one-byte close payload", masked(0x88, &[0x03])),
        ];
        for (name, bytes) in cases {
            assert_eq!(reason_of(bytes.clone()), CloseReason::ProtocolError, "{name}");
        }
        let mut big_ping = vec![0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0];
        big_ping.extend_from_slice(&[0; 126]);
        assert_eq!(reason_of(big_ping), CloseReason::ProtocolError, "ping over 125 bytes");
    }

    #[test]
    fn invalid_utf8_is_invalid_payload() {
        assert_eq!(reason_of(masked(0x81, &[0xFF])), CloseReason::InvalidPayload);
        // Caught in the first fragment, before the message is complete.
        assert_eq!(reason_of(masked(0x01, &[b'a', 0xC0, 0x80])), CloseReason::InvalidPayload);
        assert_eq!(reason_of(masked(0x88, &[0x03, 0xE8, 0xFF])), CloseReason::InvalidPayload);
    }

    #[test]
    fn forbidden_close_codes_are_protocol_errors_and_already_answered_with_1002() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let (result, mut ws, mut io) = read(masked(0x88, &code.to_be_bytes()));
            let Ok(Message::Close(frame)) = result else { panic!("{code}: {result:?}") };
            assert_eq!(peer_close_reason(frame.as_ref()), CloseReason::ProtocolError, "{code}");
            // The reply tungstenite queued goes out on the next flush: 1002.
            let _ = ws.flush(&mut io);
            assert_eq!(&io.output[..4], &[0x88, 20, 0x03, 0xEA], "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 3000, 4999] {
            let frame = masked(0x88, &code.to_be_bytes());
            assert_eq!(reason_of(frame), CloseReason::ClientGone, "{code}");
        }
        assert_eq!(reason_of(masked(0x88, b"")), CloseReason::ClientGone, "no code");
    }

    #[test]
    fn after_a_read_error_the_close_frame_can_still_be_sent() {
        let (result, mut ws, mut io) = read(vec![0x81, 0x01, b'a']);
        assert!(result.is_err());
        let frame = CloseFrame { code: 1002.into(), reason: "protocol error".into() };
        ws.close(&mut io, Some(frame)).unwrap();
        assert_eq!(&io.output[..4], &[0x88, 16, 0x03, 0xEA]);
        assert_eq!(&io.output[4..], b"protocol error");
    }

    #[test]
    fn only_real_protocol_breaches_are_counted() {
        assert!(is_protocol_violation(CloseReason::ProtocolError));
        assert!(is_protocol_violation(CloseReason::InvalidPayload));
        assert!(is_protocol_violation(CloseReason::MessageTooBig));
        assert!(!is_protocol_violation(CloseReason::ClientGone));
        assert!(!is_protocol_violation(CloseReason::SlowConsumer));
        let io = Error::Io(io::ErrorKind::ConnectionReset.into());
        assert_eq!(read_error_reason(&io), CloseReason::ClientGone);
        let reset = Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(read_error_reason(&reset), CloseReason::ClientGone);
    }
}
