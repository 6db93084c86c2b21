//! `POST /api/publish` and `POST /api/broadcast`: an event, to one topic or several, optionally
//! retained as each topic's state.
//!
//! Owns the publish body's shape and the answer. A body is read the lean way first
//! ([`FastBody`]: topics borrowed, the event parsed straight into its map, no `Value` tree
//! of the whole body, no copy of the event); anything that way does not accept is read
//! again as a `Value` and checked field by field, so every refusal keeps its one message
//! whichever way the body came. It must never answer a body the two ways would judge
//! differently.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::ApiError;
use super::error::{ApiBody, parse_json};
use crate::domain::{Event, StreamPosition, Topic};
use crate::state::AppState;

/// Most topics one publish call may name.
pub(super) const MAX_TOPICS_PER_CALL: usize = 1000;

/// A publish as the handlers run it: whom, what, and how to answer.
#[derive(Debug, PartialEq)]
struct Publish {
    topics: Vec<Topic>,
    /// The body named one `topic` (the answer then repeats its result at the top level).
    single: bool,
    event: Event,
    retain: bool,
}

/// A field that may be missing but, when present, must be a `T` (`null` included is not),
/// so the lean read refuses what the `Value` read would refuse.
struct Present<T>(Option<T>);

impl<T> Default for Present<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| Self(Some(value)))
    }
}

/// The body as it almost always comes. Duplicate fields, wrong types and `null`s fail
/// this read and go to the `Value` read, which words the refusal.
#[derive(Deserialize)]
struct FastBody<'a> {
    #[serde(borrow, default)]
    topic: Present<Cow<'a, str>>,
    #[serde(borrow, default)]
    topics: Present<Vec<Cow<'a, str>>>,
    event: Map<String, Value>,
    #[serde(default)]
    retain: Option<bool>,
}

/// The lean read of a publish body, or `None` for anything it does not accept whole.
fn fast_publish(bytes: &[u8]) -> Option<Publish> {
    let body: FastBody<'_> = serde_json::from_slice(bytes).ok()?;
    let (topics, single) = match (body.topic.0, body.topics.0) {
        (Some(topic), None) => (vec![Topic::parse(&topic).ok()?], true),
        (None, Some(list)) if !list.is_empty() && list.len() <= MAX_TOPICS_PER_CALL => {
            (list.iter().map(|t| Topic::parse(t)).collect::<Result<_, _>>().ok()?, false)
        }
        _ => return None,
    };
    let event = Event::from_value(Value::Object(body.event)).ok()?;
    Some(Publish { topics, single, event, retain: body.retain.unwrap_or(false) })
}

/// The `Value` read of a publish body, with a message for the first thing wrong.
fn checked_publish(bytes: &[u8]) -> Result<Publish, ApiError> {
    let body: Value = parse_json(bytes)?;
    let body = body.as_object().ok_or_else(|| ApiError::Validation("body must be a JSON object".into()))?;
    let (topics, single) = topics_from(body)?;
    let retain = retain_from(body)?;
    let event = event_from(body)?;
    Ok(Publish { topics, single, event, retain })
}

pub(super) fn event_from(body: &Map<String, Value>) -> Result<Event, ApiError> {
    let event = body.get("event").ok_or_else(|| ApiError::Validation("missing field `event`".into()))?;
    Event::from_value(event.clone()).map_err(|e| ApiError::Validation(e.to_string()))
}

pub(super) fn topics_from(body: &Map<String, Value>) -> Result<(Vec<Topic>, bool), ApiError> {
    let parse = |v: &Value| -> Result<Topic, ApiError> {
        let s = v.as_str().ok_or_else(|| ApiError::Validation("topics must be strings".into()))?;
        Topic::parse(s).map_err(|e| ApiError::Validation(format!("invalid topic {s:?}: {e}")))
    };
    match (body.get("topic"), body.get("topics")) {
        (Some(t), None) => Ok((vec![parse(t)?], true)),
        (None, Some(Value::Array(list))) if !list.is_empty() && list.len() <= MAX_TOPICS_PER_CALL => {
            Ok((list.iter().map(parse).collect::<Result<_, _>>()?, false))
        }
        (None, Some(Value::Array(_))) => {
            Err(ApiError::Validation(format!("`topics` must list 1 to {MAX_TOPICS_PER_CALL} topics")))
        }
        (None, Some(_)) => Err(ApiError::Validation("`topics` must be an array of strings".into())),
        (Some(_), Some(_)) => Err(ApiError::Validation("give either `topic` or `topics`, not both".into())),
        (None, None) => Err(ApiError::Validation("missing field `topic` (or `topics`)".into())),
    }
}

pub(super) fn retain_from(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("retain") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(retain)) => Ok(*retain),
        Some(_) => Err(ApiError::Validation("`retain` must be a boolean".into())),
    }
}

/// One topic's place in the answer.
#[derive(Serialize)]
struct Placed<'a> {
    epoch: &'a str,
    offset: u64,
    topic: &'a str,
}

impl<'a> Placed<'a> {
    fn new(topic: &'a Topic, position: &'a StreamPosition) -> Self {
        Self { epoch: position.epoch.as_str(), offset: position.offset, topic: topic.as_str() }
    }
}

/// The answer to a `topics` publish: `{"results":[…]}`.
#[derive(Serialize)]
struct Results<'a> {
    results: Vec<Placed<'a>>,
}

/// The answer to a `topic` publish: its one result, also at the top level (fields in the
/// order the `Value` answer had them).
#[derive(Serialize)]
struct SingleResult<'a> {
    epoch: &'a str,
    offset: u64,
    results: [&'a Placed<'a>; 1],
    topic: &'a str,
}

/// A 200 with `body` encoded as JSON.
fn json_answer(body: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

async fn publish_to(state: &AppState, publish: Publish) -> Result<Response, ApiError> {
    let Publish { topics, single, event, retain } = publish;
    let Some((last, others)) = topics.split_last() else {
        return Err(ApiError::Validation("give `topic` or a non-empty `topics`".into()));
    };
    let mut positions = Vec::with_capacity(topics.len());
    for topic in others {
        positions.push(state.hub.publish(topic, event.clone(), retain).await?);
    }
    // The event is moved into its last publish: a single-topic publish never copies it.
    positions.push(state.hub.publish(last, event, retain).await?);
    if single && let (Some(topic), Some(position)) = (topics.first(), positions.first()) {
        let placed = Placed::new(topic, position);
        return json_answer(&SingleResult {
            epoch: placed.epoch,
            offset: placed.offset,
            results: [&placed],
            topic: placed.topic,
        });
    }
    json_answer(&Results { results: topics.iter().zip(&positions).map(|(t, p)| Placed::new(t, p)).collect() })
}

/// Publishes the body of a `POST /api/publish`: one event to one topic (`topic`) or
/// several (`topics`). Both the route and the listener's direct path (`HttpService`) come
/// here.
pub(super) async fn publish_body(state: &AppState, bytes: &[u8]) -> Result<Response, ApiError> {
    // The lean read accepts objects only: serde would also read a struct from an array.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let publish = match object.then(|| fast_publish(bytes)).flatten() {
        Some(publish) => publish,
        None => checked_publish(bytes)?,
    };
    publish_to(state, publish).await
}

/// Publishes one event to one topic (`topic`) or several (`topics`).
pub async fn publish(State(state): State<AppState>, ApiBody(body): ApiBody) -> Result<Response, ApiError> {
    publish_body(&state, &body).await
}

/// Publishes one event to `global`.
pub async fn broadcast(State(state): State<AppState>, ApiBody(body): ApiBody) -> Result<Response, ApiError> {
    let body: Value = parse_json(&body)?;
    let body = body.as_object().ok_or_else(|| ApiError::Validation("body must be a JSON object".into()))?;
    let retain = retain_from(body)?;
    let event = event_from(body)?;
    let global = Topic::parse("global").map_err(|e| ApiError::Validation(e.to_string()))?;
    publish_to(&state, Publish { topics: vec![global], single: true, event, retain }).await
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A field's value, as JSON text: valid, invalid and hostile choices.
    fn topic_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""job:1""#,
            r#""project:a/b""#,
            r#""j\u006fb:esc""#,
            r#""bad topic""#,
            r#""""#,
            "null",
            "5",
            "[]",
            "{}",
        ])
        .prop_map(str::to_owned)
    }

    fn topics_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(topic_value(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            Just("null".to_owned()),
            Just(r#""job:1""#.to_owned()),
        ]
    }

    fn event_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#"{"type":"t"}"#,
            r#"{"type":"t","data":{"n":[1,2,{"x":null}]},"type":"u"}"#,
            r#"{"type":""}"#,
            r#"{"type":5}"#,
            r#"{}"#,
            "null",
            r#""str""#,
            "[1]",
        ])
        .prop_map(str::to_owned)
    }

    fn retain_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["true", "false", "null", r#""yes""#, "1"]).prop_map(str::to_owned)
    }

    /// Publish bodies as text: any subset of the fields in any order, sometimes a field
    /// twice or an unknown one, sometimes not an object at all.
    fn body() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            topic_value().prop_map(|v| format!(r#""topic":{v}"#)),
            topics_value().prop_map(|v| format!(r#""topics":{v}"#)),
            event_value().prop_map(|v| format!(r#""event":{v}"#)),
            retain_value().prop_map(|v| format!(r#""retain":{v}"#)),
            Just(r#""extra":{"a":[1]}"#.to_owned()),
        ];
        prop_oneof![
            8 => prop::collection::vec(field, 0..6).prop_map(|fields| format!("{{{}}}", fields.join(","))),
            1 => Just(r#"["job:1",null,{"type":"t"},false]"#.to_owned()),
            1 => Just(r#" {"topic":"job:1","event":{"type":"t"}} "#.to_owned()),
        ]
    }

    proptest! {
        /// The lean read never accepts what the checked read refuses, never reads it
        /// differently, and takes every body the checked read accepts unless it names a
        /// field twice (which serde's structs refuse and the `Value` read lets the last win).
        #[test]
        fn the_lean_read_agrees_with_the_checked_read(text in body()) {
            let object = text.trim_start().starts_with('{');
            let fast = if object { fast_publish(text.as_bytes()) } else { None };
            let checked = checked_publish(text.as_bytes());
            match (&fast, &checked) {
                (Some(fast), Ok(checked)) => prop_assert_eq!(fast, checked),
                (Some(_), Err(e)) => prop_assert!(false, "lean accepted, checked refused ({e}): {text}"),
                (None, Ok(_)) => {
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let fields = value.as_object().map_or(0, Map::len);
                    let named = ["\"topic\":", "\"topics\":", "\"event\":", "\"retain\":", "\"extra\":"]
                        .iter()
                        .map(|name| text.matches(name).count())
                        .sum::<usize>();
                    prop_assert!(named > fields, "a body the checked read accepts went the slow way: {text}");
                }
                (None, Err(_)) => {}
            }
        }
    }

    #[test]
    fn a_common_body_takes_the_lean_read() {
        let body = br#"{"topic":"job:1","event":{"type":"progress","data":{"pct":5}},"retain":true}"#;
        let publish = fast_publish(body).expect("lean read");
        assert_eq!(publish.topics, vec![Topic::parse("job:1").unwrap()]);
        assert!(publish.single && publish.retain);
        assert_eq!(publish.event.event_type(), "progress");
    }
}
