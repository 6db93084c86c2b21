//! The request body an `http` sink POSTs: an AWS API Gateway WebSocket Lambda-proxy
//! `MESSAGE` event, so a handler written for API Gateway runs unchanged behind Signalbox.
//!
//! This file owns the event's shape and nothing else: it never touches the network, and it
//! never re-encodes the client's frame (`body` carries the frame text exactly as received).

use serde::Serialize;

use crate::apigw::event::{API_ID, request_time};
use crate::sinks::RoutedMessage;

/// The whole event. Field order follows API Gateway's own events, so a captured Signalbox
/// event diffs cleanly against one from AWS.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    request_context: RequestContext<'a>,
    body: &'a str,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    route_key: &'a str,
    event_type: &'static str,
    message_id: &'a str,
    extended_request_id: &'a str,
    request_time: String,
    message_direction: &'static str,
    stage: &'a str,
    connected_at: i64,
    request_time_epoch: i64,
    identity: Identity<'a>,
    request_id: &'a str,
    domain_name: &'a str,
    connection_id: &'a str,
    api_id: &'static str,
    authorizer: Authorizer<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    source_ip: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authorizer<'a> {
    principal_id: &'a str,
}

/// Encodes `message` as the event's JSON bytes, once per message.
///
/// `messageId` and `extendedRequestId` both carry the message id (a handler that
/// de-duplicates on either sees the same value on a redelivery); `requestId` is the client's
/// `requestId` when it gave one, else the message id, since API Gateway always sets it.
pub(super) fn encode(message: &RoutedMessage, stage: &str, domain_name: &str) -> serde_json::Result<Vec<u8>> {
    let message_id = message.message_id.as_str();
    let event = Event {
        request_context: RequestContext {
            route_key: &message.action,
            event_type: "MESSAGE",
            message_id,
            extended_request_id: message_id,
            request_time: request_time(message.received_at_ms),
            message_direction: "IN",
            stage,
            connected_at: message.connected_at_ms,
            request_time_epoch: message.received_at_ms,
            identity: Identity { source_ip: &message.source_ip },
            request_id: message.request_id.as_deref().unwrap_or(message_id),
            domain_name,
            connection_id: &message.connection_id,
            api_id: API_ID,
            authorizer: Authorizer { principal_id: &message.user_id },
        },
        body: &message.body,
        is_base64_encoded: false,
    };
    serde_json::to_vec(&event)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sinks::MessageId;

    fn message() -> RoutedMessage {
        let mut m: RoutedMessage = serde_json::from_value(json!({
            "messageId": "msg_1_2",
            "sink": "pipeline",
            "action": "sendMessage",
            "connectionId": "conn_1_a",
            "userId": "user-7",
            "requestId": "r1",
            "receivedAtMs": 1_795_341_600_123_i64,
            "connectedAtMs": 1_795_341_590_000_i64,
            "sourceIp": "203.0.113.9",
            "body": "",
        }))
        .unwrap();
        m.body = "{\"action\":\"sendMessage\",  \"text\":\"h\u{e9}\\\"llo\"}".into();
        m
    }

    fn decode(m: &RoutedMessage) -> Value {
        serde_json::from_slice(&encode(m, "prod", "ws.example.com").unwrap()).unwrap()
    }

    #[test]
    fn every_request_context_field_is_set() {
        let event = decode(&message());
        let context = &event["requestContext"];
        assert_eq!(context["routeKey"], "sendMessage");
        assert_eq!(context["eventType"], "MESSAGE");
        assert_eq!(context["messageId"], "msg_1_2");
        assert_eq!(context["extendedRequestId"], "msg_1_2");
        assert_eq!(context["requestTime"], "22/Nov/2026:10:00:00 +0000");
        assert_eq!(context["messageDirection"], "IN");
        assert_eq!(context["stage"], "prod");
        assert_eq!(context["connectedAt"], 1_795_341_590_000_i64);
        assert_eq!(context["requestTimeEpoch"], 1_795_341_600_123_i64);
        assert_eq!(context["identity"], json!({"sourceIp": "203.0.113.9"}));
        assert_eq!(context["requestId"], "r1");
        assert_eq!(context["domainName"], "ws.example.com");
        assert_eq!(context["connectionId"], "conn_1_a");
        assert_eq!(context["apiId"], "signalbox");
        assert_eq!(context["authorizer"], json!({"principalId": "user-7"}));
        assert_eq!(context.as_object().unwrap().len(), 15, "no field more than API Gateway's: {context}");
    }

    #[test]
    fn the_body_is_the_frame_text_exactly_as_a_json_string() {
        let m = message();
        let event = decode(&m);
        assert_eq!(event["body"].as_str().unwrap(), m.body, "spacing and escapes kept");
        assert_eq!(event["isBase64Encoded"], false);
        assert_eq!(event.as_object().unwrap().len(), 3);
    }

    #[test]
    fn without_a_client_request_id_the_request_id_is_the_message_id() {
        let mut m = message();
        m.request_id = None;
        m.message_id = serde_json::from_value::<MessageId>(json!("msg_9_f")).unwrap();
        assert_eq!(decode(&m)["requestContext"]["requestId"], "msg_9_f");
    }

    #[test]
    fn request_time_is_utc_in_api_gateway_format() {
        assert_eq!(request_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(request_time(1_795_341_600_999), "22/Nov/2026:10:00:00 +0000");
        assert_eq!(request_time(1_772_334_245_000), "01/Mar/2026:03:04:05 +0000");
    }
}
