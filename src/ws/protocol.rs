//! The native JSON protocol: parsing client frames and building server frames (SPEC §3).
//!
//! Parsing turns untrusted text into a [`ClientRequest`] of valid domain values, or a
//! [`FrameError`] carrying the code and the `requestId` to echo. It never panics on any
//! input (a property test and a fuzz target hold it to that) and does no I/O.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::domain::{BUILT_IN_ACTIONS, ErrorCode, Event, Filter, Topic};

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    /// The `requestId` to echo in the reply.
    pub request_id: Option<String>,
    /// What to do.
    pub action: ClientAction,
}

/// `since` on subscribe: resume after this offset of this epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// Last offset the client has.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// `filters` on subscribe: compiled once, compared by the JSON they came from.
#[derive(Debug, Clone)]
pub struct SubscriptionFilter {
    /// The compiled filter, shared with the topic registry.
    pub filter: Arc<Filter>,
    source: Value,
}

impl PartialEq for SubscriptionFilter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The actions a client can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAction {
    /// `subscribe`.
    Subscribe {
        /// The topic (from `topic` or an alias).
        topic: Topic,
        /// Resume point.
        since: Option<Since>,
        /// Only events that pass.
        filter: Option<SubscriptionFilter>,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// The topic.
        topic: Topic,
    },
    /// `publish` (where the namespace allows clients to).
    Publish {
        /// The topic.
        topic: Topic,
        /// The event.
        event: Event,
        /// Also store it as the topic's retained state.
        retain: bool,
    },
    /// `presence`: who is subscribed to the topic.
    Presence {
        /// The topic.
        topic: Topic,
    },
    /// `request_status`.
    RequestStatus {
        /// The topic.
        topic: Topic,
    },
    /// `ping`.
    Ping,
    /// `subscriptions`.
    Subscriptions,
    /// `refresh`.
    Refresh {
        /// The new token.
        token: String,
    },
    /// Any other action: looked up in the routes.
    Routed {
        /// The action name.
        action: String,
        /// The client's whole message.
        message: Map<String, Value>,
    },
}

/// A message that cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The `requestId`, if one could be read.
    pub request_id: Option<String>,
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

/// Parses one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientRequest, FrameError> {
    parse_client_frame_with(text, &std::collections::BTreeMap::new())
}

/// Parses one client text frame, reading an action named in `aliases` (`[actions]`) as the
/// built-in action it stands for.
pub fn parse_client_frame_with(
    text: &str,
    aliases: &std::collections::BTreeMap<String, String>,
) -> Result<ClientRequest, FrameError> {
    let fail =
        |request_id: Option<String>, message: String| FrameError { request_id, code: ErrorCode::Validation, message };
    let value: Value = serde_json::from_str(text).map_err(|e| fail(None, describe_json_error(&e)))?;
    let Value::Object(message) = value else {
        return Err(fail(None, "a message must be a JSON object".into()));
    };
    let request_id = match message.get("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(fail(None, "`requestId` must be a string".into())),
    };
    let action = match message.get("action") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        Some(_) => return Err(fail(request_id, "`action` must be a non-empty string".into())),
        None => return Err(fail(request_id, "missing field `action`".into())),
    };
    let action = aliases.get(&action).cloned().unwrap_or(action);
    if !BUILT_IN_ACTIONS.contains(&action.as_str()) {
        // Routed: the whole message goes along as is (moved, not copied).
        return Ok(ClientRequest { request_id, action: ClientAction::Routed { action, message } });
    }
    let params = Params(&message);
    let action = match action.as_str() {
        "subscribe" => params.subscribe(),
        "unsubscribe" => params.topic().map(|topic| ClientAction::Unsubscribe { topic }),
        "publish" => params.publish(),
        "request_status" => params.topic().map(|topic| ClientAction::RequestStatus { topic }),
        "presence" => params.topic().map(|topic| ClientAction::Presence { topic }),
        "ping" => Ok(ClientAction::Ping),
        "subscriptions" => Ok(ClientAction::Subscriptions),
        "refresh" => params.string("token").map(|token| ClientAction::Refresh { token }),
        other => Err(format!("built-in action {other:?} has no parser")),
    }
    .map_err(|m| fail(request_id.clone(), m))?;
    Ok(ClientRequest { request_id, action })
}

/// How deep arrays and objects may nest in any JSON the gateway parses: client frames and
/// `/api` request bodies alike. It is serde_json's recursion limit (128), which refuses the
/// 128th level: 127 levels parse, 128 do not.
pub const MAX_JSON_DEPTH: usize = 127;

/// The message for JSON that did not parse, the same for client frames and API bodies:
/// nesting past [`MAX_JSON_DEPTH`] is named as such (serde_json calls it a syntax error at
/// some column), anything else is `malformed JSON: ` and serde_json's description.
pub fn describe_json_error(error: &serde_json::Error) -> String {
    // serde_json has no public kind for this error; its text is the only way to tell it
    // apart (a unit test pins it, so a serde_json that words it differently fails it).
    if error.is_syntax() && error.to_string().starts_with("recursion limit exceeded") {
        format!(
            "JSON nesting is deeper than {MAX_JSON_DEPTH} levels (at line {}, column {})",
            error.line(),
            error.column()
        )
    } else {
        format!("malformed JSON: {error}")
    }
}

/// Reads only the `requestId` of a message that will not be acted on (rate-limited or
/// over the size limit), so the error reply still echoes it: a top-level string
/// `requestId` of a message that is a JSON object. Skips everything else without
/// building values, so its cost is one scan of a message the server has already read
/// (at most twice `limits.max_message_size`).
pub fn peek_request_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyRequestId {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
    }
    serde_json::from_str::<OnlyRequestId>(text).ok()?.request_id
}

/// Parameters looked up at the top level first, then inside `data`.
struct Params<'a>(&'a Map<String, Value>);

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        let found = self.0.get(name).filter(|v| !v.is_null());
        found.or_else(|| self.0.get("data")?.as_object()?.get(name).filter(|v| !v.is_null()))
    }

    fn string(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{name}` must be a string")),
            None => Err(format!("missing field `{name}`")),
        }
    }

    /// `topic`, or one of the aliases `room`, `project_id`, `job_id`, `agent_id`.
    fn topic(&self) -> Result<Topic, String> {
        resolve_topic(|name| self.get(name))
    }

    fn subscribe(&self) -> Result<ClientAction, String> {
        let topic = self.topic()?;
        let since = match self.get("since") {
            None => None,
            Some(v) => Some(parse_since(v)?),
        };
        let filter = match self.get("filters") {
            None => None,
            Some(source) => {
                let filter = Filter::parse(source).map_err(|e| format!("invalid `filters`: {e}"))?;
                Some(SubscriptionFilter { filter: Arc::new(filter), source: source.clone() })
            }
        };
        Ok(ClientAction::Subscribe { topic, since, filter })
    }

    fn publish(&self) -> Result<ClientAction, String> {
        let topic = self.topic()?;
        let event = self.get("event").ok_or("missing field `event`")?;
        let event = Event::from_value(event.clone()).map_err(|e| e.to_string())?;
        let retain = match self.get("retain") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`retain` must be a boolean".into()),
        };
        Ok(ClientAction::Publish { topic, event, retain })
    }
}

/// Resolves `topic` or an alias through `get`; shared with the query-string form of
/// subscribing at connect.
pub fn resolve_topic<'v>(get: impl Fn(&str) -> Option<&'v Value>) -> Result<Topic, String> {
    let as_id = |name: &str, v: &Value| match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(format!("`{name}` must be a non-empty string")),
    };
    let bad_topic = |e: crate::domain::TopicError| format!("invalid topic: {e}");
    for name in ["topic", "room"] {
        if let Some(v) = get(name) {
            let Value::String(s) = v else {
                return Err(format!("`{name}` must be a string"));
            };
            return Topic::parse(s).map_err(bad_topic);
        }
    }
    for (name, namespace) in [("project_id", "project"), ("job_id", "job"), ("agent_id", "agent")] {
        if let Some(v) = get(name) {
            return Topic::with_namespace(namespace, &as_id(name, v)?).map_err(bad_topic);
        }
    }
    Err("missing field `topic` (or `room`, `project_id`, `job_id`, `agent_id`)".into())
}

fn parse_since(v: &Value) -> Result<Since, String> {
    let bad = || "`since` must be {\"offset\": <non-negative integer>, \"epoch\": <string>}".to_owned();
    let obj = v.as_object().ok_or_else(bad)?;
    let offset = obj.get("offset").and_then(Value::as_u64).ok_or_else(bad)?;
    let epoch = match obj.get("epoch") {
        Some(Value::String(e)) => e.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(bad()),
    };
    Ok(Since { offset, epoch })
}

/// Server → client frames in the native encoding ([`Reply::native`]), for the callers
/// that build one frame directly (tests, and paths that carry text across nodes).
pub mod frames {
    use super::*;
    use crate::codec::reply::Reply;
    use crate::domain::{Presence, StreamPosition};

    /// `connected`, the first frame on every connection.
    pub fn connected(connection_id: &str, user_id: &str) -> String {
        Reply::Connected { connection_id: connection_id.into(), user_id: user_id.into() }.native(None)
    }

    /// `subscribed`.
    pub fn subscribed(topic: &Topic, position: &StreamPosition, recovered: bool, request_id: Option<&str>) -> String {
        Reply::Subscribed { topic: topic.clone(), position: position.clone(), recovered }.native(request_id)
    }

    /// `unsubscribed`.
    pub fn unsubscribed(topic: &Topic, request_id: Option<&str>) -> String {
        Reply::Unsubscribed { topic: topic.clone() }.native(request_id)
    }

    /// `published`.
    pub fn published(topic: &Topic, offset: u64, request_id: Option<&str>) -> String {
        Reply::Published { topic: topic.clone(), offset }.native(request_id)
    }

    /// `accepted`: a routed message is durably held (SPEC §7).
    pub fn accepted(message_id: &str, request_id: Option<&str>) -> String {
        Reply::Accepted { message_id: message_id.into() }.native(request_id)
    }

    /// `status`: the topic's retained state (a delivered event, or null) and position.
    pub fn status(topic: &Topic, state: Value, position: &StreamPosition, request_id: Option<&str>) -> String {
        Reply::Status { topic: topic.clone(), state, position: position.clone() }.native(request_id)
    }

    /// `presence`: the distinct users and the number of connections subscribed to `topic`.
    pub fn presence(topic: &Topic, presence: &Presence, request_id: Option<&str>) -> String {
        Reply::Presence { topic: topic.clone(), presence: presence.clone() }.native(request_id)
    }

    /// `pong`.
    pub fn pong(request_id: Option<&str>) -> String {
        Reply::Pong.native(request_id)
    }

    /// `subscriptions`.
    pub fn subscriptions(topics: &[Topic], request_id: Option<&str>) -> String {
        Reply::Subscriptions { topics: topics.to_vec() }.native(request_id)
    }

    /// `refreshed`.
    pub fn refreshed(expires_at: &str, request_id: Option<&str>) -> String {
        Reply::Refreshed { expires_at: expires_at.into() }.native(request_id)
    }

    /// `error`.
    pub fn error(code: ErrorCode, message: &str, request_id: Option<&str>) -> String {
        Reply::Error { code, message: message.into() }.native(request_id)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use serde_json::json;

    #[test]
    fn aliases_behave_as_their_built_in_action() {
        let aliases = [("subscribeToDeals".to_owned(), "subscribe".to_owned())].into_iter().collect();
        let request = parse_client_frame_with(
            r#"{"action":"subscribeToDeals","data":{"topic":"deals:7"},"requestId":"r"}"#,
            &aliases,
        )
        .unwrap();
        assert!(matches!(&request.action, ClientAction::Subscribe { topic, .. } if topic.as_str() == "deals:7"));
        assert_eq!(request.request_id.as_deref(), Some("r"));
        let unaliased = parse_client_frame(r#"{"action":"subscribeToDeals","data":{"topic":"deals:7"}}"#).unwrap();
        assert!(matches!(unaliased.action, ClientAction::Routed { .. }), "without the alias it is routed");
    }

    fn action(text: &str) -> ClientAction {
        parse_client_frame(text).unwrap().action
    }

    fn err(text: &str) -> FrameError {
        parse_client_frame(text).unwrap_err()
    }

    #[test]
    fn built_in_actions_are_never_routed() {
        for name in BUILT_IN_ACTIONS {
            let text = format!(r#"{{"action":"{name}","topic":"project:1","token":"t","event":{{"type":"x"}}}}"#);
            if let Ok(request) = parse_client_frame(&text) {
                assert!(!matches!(request.action, ClientAction::Routed { .. }), "{name} was routed");
            }
        }
    }

    #[test]
    fn topic_and_aliases_at_top_level_or_in_data() {
        let project = Topic::parse("project:p1").unwrap();
        for text in [
            r#"{"action":"subscribe","topic":"project:p1"}"#,
            r#"{"action":"subscribe","data":{"topic":"project:p1"}}"#,
            r#"{"action":"subscribe","room":"project:p1"}"#,
            r#"{"action":"subscribe","project_id":"p1"}"#,
            r#"{"action":"subscribe","data":{"project_id":"p1"}}"#,
        ] {
            assert_eq!(
                action(text),
                ClientAction::Subscribe { topic: project.clone(), since: None, filter: None },
                "{text}"
            );
        }
        assert_eq!(
            action(r#"{"action":"unsubscribe","job_id":7}"#),
            ClientAction::Unsubscribe { topic: Topic::parse("job:7").unwrap() }
        );
        assert_eq!(
            action(r#"{"action":"request_status","agent_id":"a"}"#),
            ClientAction::RequestStatus { topic: Topic::parse("agent:a").unwrap() }
        );
    }

    #[test]
    fn request_id_is_kept_even_on_errors() {
        let e = err(r#"{"action":"subscribe","requestId":"r1"}"#);
        assert_eq!((e.request_id.as_deref(), e.code), (Some("r1"), ErrorCode::Validation));
        let r = parse_client_frame(r#"{"action":"ping","requestId":"r2"}"#).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("r2"));
    }

    #[test]
    fn bad_input_is_a_validation_error() {
        for text in [
            "",
            "{",
            "[]",
            "42",
            r#"{"action":1}"#,
            r#"{"nope":1}"#,
            r#"{"action":"subscribe","topic":5}"#,
            r#"{"action":"subscribe","topic":"bad topic"}"#,
            r#"{"action":"subscribe","topic":"a","since":{"offset":-1,"epoch":"e"}}"#,
            r#"{"action":"subscribe","topic":"a","since":"x"}"#,
            r#"{"action":"subscribe","topic":"a","since":{"offset":1.5,"epoch":"e"}}"#,
            r#"{"action":"subscribe","topic":"a","since":{"offset":"3","epoch":"e"}}"#,
            r#"{"action":"subscribe","topic":"a","since":{"offset":18446744073709551616,"epoch":"e"}}"#,
            r#"{"action":"subscribe","topic":"a","since":{"offset":1,"epoch":7}}"#,
            r#"{"action":"subscribe","topic":"a","filters":[1]}"#,
            r#"{"action":"subscribe","topic":"a","filters":{"n":{"gtt":1}}}"#,
            r#"{"action":"publish","topic":"a","event":{"type":"t"},"retain":"yes"}"#,
            r#"{"action":"publish","topic":"a","event":{"no":"type"}}"#,
            r#"{"action":"publish","topic":"a"}"#,
            r#"{"action":"refresh"}"#,
            r#"{"action":"ping","requestId":5}"#,
        ] {
            assert_eq!(err(text).code, ErrorCode::Validation, "{text}");
        }
    }

    #[test]
    fn unknown_actions_are_routed_with_the_whole_message() {
        let ClientAction::Routed { action, message } = action(r#"{"action":"forward","type":"dev","x":1}"#) else {
            panic!("not routed");
        };
        assert_eq!(action, "forward");
        assert_eq!(message["x"], 1);
    }

    fn nested(depth: usize) -> String {
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        format!(r#"{{"action":"x","requestId":"r","data":{}}}"#, if depth == 1 { "1".into() } else { inner })
    }

    #[test]
    fn json_nesting_limit_is_127_levels_with_a_clear_message() {
        // The object is level 1 and `data`'s arrays the levels below it.
        assert!(parse_client_frame(&nested(MAX_JSON_DEPTH)).is_ok());
        for depth in [MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 2, 10_000] {
            let e = err(&nested(depth));
            assert_eq!(e.code, ErrorCode::Validation);
            assert!(e.message.starts_with("JSON nesting is deeper than 127 levels"), "{depth}: {}", e.message);
        }
        assert!(err("{").message.starts_with("malformed JSON: "), "other syntax errors keep their text");
    }

    #[test]
    fn request_id_can_be_peeked_without_acting() {
        assert_eq!(peek_request_id(r#"{"action":"x","requestId":"r","data":{"a":[1,2]}}"#).as_deref(), Some("r"));
        assert_eq!(peek_request_id(r#"{"requestId":5}"#), None);
        assert_eq!(peek_request_id("not json"), None);
    }

    #[test]
    fn since_is_parsed() {
        assert_eq!(
            action(r#"{"action":"subscribe","topic":"a","since":{"offset":3,"epoch":"e1"}}"#),
            ClientAction::Subscribe {
                topic: Topic::parse("a").unwrap(),
                since: Some(Since { offset: 3, epoch: "e1".into() }),
                filter: None,
            }
        );
    }

    #[test]
    fn filters_and_retain_are_parsed() {
        let ClientAction::Subscribe { filter: Some(filter), .. } =
            action(r#"{"action":"subscribe","topic":"a","data":{"filters":{"n":{"gte":2}}}}"#)
        else {
            panic!("no filter");
        };
        let event = |n: i64| json!({"n": n}).as_object().cloned().unwrap();
        assert!(filter.filter.matches(&event(2)));
        assert!(!filter.filter.matches(&event(1)));
        let e = err(r#"{"action":"subscribe","topic":"a","filters":{"n":{"gtt":1}},"requestId":"r"}"#);
        assert!(e.message.contains("gtt"), "{}", e.message);
        assert_eq!(e.request_id.as_deref(), Some("r"));
        let ClientAction::Publish { retain, .. } =
            action(r#"{"action":"publish","topic":"a","event":{"type":"t"},"retain":true}"#)
        else {
            panic!("not a publish");
        };
        assert!(retain);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-z_:*. ]{0,12}".prop_map(Value::from),
            prop_oneof![Just("subscribe"), Just("unsubscribe"), Just("publish"), Just("ping"), Just("refresh")]
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("action".to_owned()),
                        Just("topic".to_owned()),
                        Just("data".to_owned()),
                        Just("requestId".to_owned()),
                        Just("event".to_owned()),
                        Just("since".to_owned()),
                        Just("project_id".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,200}") {
            let _ = parse_client_frame(&text);
        }

        #[test]
        fn never_panics_on_arbitrary_json(value in json_value()) {
            let _ = parse_client_frame(&value.to_string());
        }

        #[test]
        fn accepted_subscribes_carry_valid_topics(topic in "[a-zA-Z0-9_:.@/=-]{1,300}", rid in "[a-z0-9]{0,8}") {
            let text = json!({"action": "subscribe", "topic": topic, "requestId": rid}).to_string();
            match parse_client_frame(&text) {
                Ok(req) => {
                    prop_assert_eq!(req.request_id.as_deref(), Some(rid.as_str()));
                    let ClientAction::Subscribe { topic: parsed, .. } = req.action else { panic!("wrong action") };
                    prop_assert_eq!(parsed.as_str(), topic.as_str());
                }
                Err(e) => {
                    prop_assert_eq!(e.code, ErrorCode::Validation);
                    prop_assert!(Topic::parse(&topic).is_err());
                }
            }
        }
    }
}
