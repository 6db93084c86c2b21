//! Subscription filters: the `filters` of a `subscribe` (SPEC §5), compiled once and then
//! evaluated against every event the topic delivers to that subscription.
//!
//! This module owns the filter language, its validation and its evaluation. It must never
//! do I/O, depend on tokio or touch a connection: [`Filter::parse`] runs once per subscribe
//! and does all the work (path splitting, operand checks); [`Filter::matches`] runs once
//! per event and subscriber on the fan-out path, so it never allocates and never panics.
//!
//! # The language
//!
//! `filters` is a JSON object; each key is a condition on one field, and an event passes
//! when **every** condition holds. `{}` matches every event. At most 32 conditions.
//!
//! ```json
//! {"category": "electronics", "discount": {"gte": 20}, "data.stage": {"in": ["build", "test"]}}
//! ```
//!
//! - **Keys** are field paths: a top-level field name, or a dotted path into nested objects
//!   (`"data.stage"` is `event["data"]["stage"]`). A path has no empty segment (`""`, `".a"`,
//!   `"a..b"` and `"a."` are rejected) and is at most 256 bytes. A field whose own name
//!   contains a dot cannot be addressed.
//! - **A scalar value** (string, number, boolean or null) means equality: `{"status": "done"}`.
//!   An array is rejected (use `{"in": [...]}`).
//! - **An object value** holds operators, all of which must hold:
//!   `eq` (any scalar), `gt`, `gte`, `lt`, `lte` (a number or a string) and `in` (a
//!   non-empty array of at most 256 scalars; the field must equal one of them). An empty
//!   object, an unknown operator or an operand of the wrong type is rejected.
//!
//! Evaluation:
//!
//! - Numbers compare by value, exactly: `20` equals `20.0`, integers beyond 2^53 (any `i64`
//!   or `u64`) compare exactly with each other and with floats.
//! - Strings compare byte-wise (lexicographic order of their UTF-8 bytes), so `"B" < "a"`.
//! - `null` equals only `null`, a boolean only the same boolean.
//! - A field that is missing (or whose path crosses a non-object) never matches, nor does a
//!   field of another type than the operand (`"20"` is not `20`; an array or object field
//!   matches nothing). Neither is an error: the event is simply not delivered.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Most conditions (keys) one filter may hold.
const MAX_CONDITIONS: usize = 32;
/// Longest field path, in bytes.
const MAX_PATH_LEN: usize = 256;
/// Most values one `in` list may hold.
const MAX_IN_VALUES: usize = 256;

/// The operators, as listed in error messages.
const OPERATORS: &str = "eq, gt, gte, lt, lte or in";
/// Longest user-supplied name (an overlong path, an unknown operator) quoted back in an error.
const MAX_QUOTED: usize = 64;

/// Why a `filters` value does not compile. Each message names the field (and operator) at
/// fault, says what is wrong and what is allowed; clients see it as a `VALIDATION_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `filters` is not a JSON object.
    #[error("filters must be a JSON object of field conditions such as {{\"status\": \"done\"}}, found {found}")]
    NotAnObject {
        /// What was found instead (`"an array"`, `"a string"`, …).
        found: &'static str,
    },
    /// More than 32 keys.
    #[error("filters has {count} conditions; at most {MAX_CONDITIONS} are allowed")]
    TooManyConditions {
        /// How many keys were given.
        count: usize,
    },
    /// A key that is empty or has an empty segment (`".a"`, `"a..b"`, `"a."`).
    #[error(
        "filter on {field:?}: the field path has an empty segment; use a field name or a dotted path such as \"data.stage\""
    )]
    EmptySegment {
        /// The key.
        field: String,
    },
    /// A key longer than 256 bytes.
    #[error("filter on {field:?}: the field path is {len} bytes long; at most {MAX_PATH_LEN} are allowed")]
    PathTooLong {
        /// The start of the key.
        field: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An array given as an equality operand.
    #[error(
        "filter on {field:?}: an array cannot be matched by equality; use a string, number, boolean or null, or {{\"in\": [...]}} to match any of several values"
    )]
    ArrayEquality {
        /// The key.
        field: String,
    },
    /// An operator object with no operator.
    #[error("filter on {field:?}: the operator object is empty; use {OPERATORS}")]
    NoOperators {
        /// The key.
        field: String,
    },
    /// A key in an operator object that is not an operator.
    #[error("filter on {field:?}: unknown operator {operator:?}; use {OPERATORS}")]
    UnknownOperator {
        /// The key.
        field: String,
        /// The start of the unknown operator.
        operator: String,
    },
    /// An operand of the wrong JSON type for its operator.
    #[error("filter on {field:?}: operator {operator:?} needs {expected}, found {found}")]
    BadOperand {
        /// The key.
        field: String,
        /// The operator.
        operator: &'static str,
        /// What the operator accepts.
        expected: &'static str,
        /// What was found instead.
        found: &'static str,
    },
    /// An `in` list that is empty or holds more than 256 values.
    #[error("filter on {field:?}: operator \"in\" needs between 1 and {MAX_IN_VALUES} values, found {len}")]
    InLength {
        /// The key.
        field: String,
        /// How many values the list held.
        len: usize,
    },
    /// An `in` list holding an array or an object.
    #[error(
        "filter on {field:?}: operator \"in\" lists {found} at index {index}; list only strings, numbers, booleans or null"
    )]
    InValue {
        /// The key.
        field: String,
        /// Position of the offending value in the list.
        index: usize,
        /// What was found there.
        found: &'static str,
    },
}

/// A compiled subscription filter: every condition must hold for an event to pass.
///
/// Owns plain data only (no interior mutability), so it is `Send + Sync` and can be shared
/// by the fan-out path without locking.
#[derive(Debug)]
pub struct Filter {
    conditions: Box<[Condition]>,
}

/// The tests on one field path, all of which must hold.
#[derive(Debug)]
struct Condition {
    /// The path, split once at parse time so matching never splits or allocates.
    path: Box<[Box<str>]>,
    tests: Box<[Test]>,
}

#[derive(Debug)]
enum Test {
    Eq(Scalar),
    /// The operand is a number or a string (checked at parse time).
    Cmp(Bound, Scalar),
    In(Box<[Scalar]>),
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A filter operand, kept in the form comparisons need.
#[derive(Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
}

/// A JSON number. Integers widen to `i128`, which holds every `i64` and `u64` exactly.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Filter {
    /// Compiles the JSON value of a subscribe's `filters` (see the module doc for the
    /// language). Every check happens here, so [`Filter::matches`] cannot fail.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let Value::Object(fields) = value else {
            return Err(FilterError::NotAnObject { found: kind(value) });
        };
        if fields.len() > MAX_CONDITIONS {
            return Err(FilterError::TooManyConditions { count: fields.len() });
        }
        let conditions = fields.iter().map(|(key, value)| Condition::parse(key, value)).collect::<Result<_, _>>()?;
        Ok(Filter { conditions })
    }

    /// Whether an event (the publisher's JSON object) passes every condition. Never
    /// allocates, never panics.
    pub fn matches(&self, event: &Map<String, Value>) -> bool {
        self.conditions.iter().all(|condition| condition.holds(event))
    }
}

impl Condition {
    fn parse(key: &str, value: &Value) -> Result<Condition, FilterError> {
        if key.len() > MAX_PATH_LEN {
            return Err(FilterError::PathTooLong { field: quoted(key), len: key.len() });
        }
        if key.split('.').any(str::is_empty) {
            return Err(FilterError::EmptySegment { field: key.to_owned() });
        }
        let path = key.split('.').map(Box::from).collect();
        let tests: Box<[Test]> = match value {
            Value::Object(operators) if operators.is_empty() => {
                return Err(FilterError::NoOperators { field: key.to_owned() });
            }
            Value::Object(operators) => operators
                .iter()
                .map(|(operator, operand)| Test::parse(key, operator, operand))
                .collect::<Result<_, _>>()?,
            // Only arrays are neither an operator object nor a scalar.
            other => match Scalar::of(other) {
                Some(scalar) => Box::new([Test::Eq(scalar)]),
                None => return Err(FilterError::ArrayEquality { field: key.to_owned() }),
            },
        };
        Ok(Condition { path, tests })
    }

    fn holds(&self, event: &Map<String, Value>) -> bool {
        self.resolve(event).is_some_and(|value| self.tests.iter().all(|test| test.holds(value)))
    }

    /// The value at the path, or `None` if a segment is missing or crosses a non-object.
    fn resolve<'e>(&self, event: &'e Map<String, Value>) -> Option<&'e Value> {
        let (first, rest) = self.path.split_first()?;
        let mut value = event.get(&**first)?;
        for segment in rest {
            value = value.as_object()?.get(&**segment)?;
        }
        Some(value)
    }
}

impl Test {
    fn parse(field: &str, operator: &str, operand: &Value) -> Result<Test, FilterError> {
        let bad_operand = |operator: &'static str, expected: &'static str| FilterError::BadOperand {
            field: field.to_owned(),
            operator,
            expected,
            found: kind(operand),
        };
        let (bound, name) = match operator {
            "eq" => {
                return Scalar::of(operand).map(Test::Eq).ok_or_else(|| {
                    bad_operand("eq", "a string, number, boolean or null (use \"in\" to match any of several values)")
                });
            }
            "in" => return parse_in(field, operand).map(Test::In),
            "gt" => (Bound::Gt, "gt"),
            "gte" => (Bound::Gte, "gte"),
            "lt" => (Bound::Lt, "lt"),
            "lte" => (Bound::Lte, "lte"),
            _ => return Err(FilterError::UnknownOperator { field: field.to_owned(), operator: quoted(operator) }),
        };
        let operand = match operand {
            Value::Number(n) => Scalar::Num(Num::of(n)),
            Value::String(s) => Scalar::Str(s.as_str().into()),
            _ => return Err(bad_operand(name, "a number or a string")),
        };
        Ok(Test::Cmp(bound, operand))
    }

    fn holds(&self, value: &Value) -> bool {
        match self {
            Test::Eq(scalar) => scalar.equals(value),
            Test::Cmp(bound, operand) => scalar_order(value, operand).is_some_and(|order| match bound {
                Bound::Gt => order == Ordering::Greater,
                Bound::Gte => order != Ordering::Less,
                Bound::Lt => order == Ordering::Less,
                Bound::Lte => order != Ordering::Greater,
            }),
            Test::In(scalars) => scalars.iter().any(|scalar| scalar.equals(value)),
        }
    }
}

fn parse_in(field: &str, operand: &Value) -> Result<Box<[Scalar]>, FilterError> {
    let Value::Array(values) = operand else {
        return Err(FilterError::BadOperand {
            field: field.to_owned(),
            operator: "in",
            expected: "a non-empty array of strings, numbers, booleans or null",
            found: kind(operand),
        });
    };
    if values.is_empty() || values.len() > MAX_IN_VALUES {
        return Err(FilterError::InLength { field: field.to_owned(), len: values.len() });
    }
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            Scalar::of(value).ok_or_else(|| FilterError::InValue { field: field.to_owned(), index, found: kind(value) })
        })
        .collect()
}

impl Scalar {
    /// The scalar a JSON value holds; `None` for arrays and objects.
    fn of(value: &Value) -> Option<Scalar> {
        match value {
            Value::Null => Some(Scalar::Null),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => Some(Scalar::Num(Num::of(n))),
            Value::String(s) => Some(Scalar::Str(s.as_str().into())),
            Value::Array(_) | Value::Object(_) => None,
        }
    }

    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Scalar::Null, Value::Null) => true,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Num(_) | Scalar::Str(_), _) => scalar_order(value, self) == Some(Ordering::Equal),
            _ => false,
        }
    }
}

/// How an event's value orders against a number or string operand; `None` on a type
/// mismatch (which then fails every test).
fn scalar_order(value: &Value, operand: &Scalar) -> Option<Ordering> {
    match (value, operand) {
        (Value::Number(n), Scalar::Num(operand)) => Num::of(n).compare(*operand),
        // `str`'s order is byte-wise, which is what the filter language promises.
        (Value::String(s), Scalar::Str(operand)) => Some(s.as_bytes().cmp(operand.as_bytes())),
        _ => None,
    }
}

impl Num {
    fn of(n: &Number) -> Num {
        if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else {
            // Without serde_json's `arbitrary_precision` every number is one of the three;
            // NaN stands for "not comparable" should that ever change.
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Exact numeric order; `None` only for NaN.
    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => int_float_order(a, b),
            (Num::Float(a), Num::Int(b)) => int_float_order(b, a).map(Ordering::reverse),
        }
    }
}

/// Orders an integer against a float exactly. Converting the integer to `f64` would round
/// above 2^53 (so 2^53 + 1 would equal 2^53 as a float); instead the float's integer part,
/// which is exact in `i128` within its range, is compared first, then its fraction.
fn int_float_order(int: i128, float: f64) -> Option<Ordering> {
    // 2^127: every float at or beyond it (infinities included) lies outside `i128`.
    const I128_LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if float.is_nan() {
        return None;
    }
    if float >= I128_LIMIT {
        return Some(Ordering::Less);
    }
    if float < -I128_LIMIT {
        return Some(Ordering::Greater);
    }
    let whole = float.trunc();
    // In range and integral, so the cast is exact; on a tie the fraction decides.
    let fraction = whole.partial_cmp(&float)?;
    Some(int.cmp(&(whole as i128)).then(fraction))
}

/// The JSON type of a value, as error messages name it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A user-supplied name as quoted in an error: cut to [`MAX_QUOTED`] bytes (on a character
/// boundary) with `…`, so a huge key cannot make a huge error frame.
fn quoted(name: &str) -> String {
    if name.len() <= MAX_QUOTED {
        return name.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn filter(value: Value) -> Filter {
        Filter::parse(&value).unwrap()
    }

    fn event(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn passes(filter_value: Value, event_value: Value) -> bool {
        filter(filter_value).matches(&event(event_value))
    }

    fn error(value: Value) -> String {
        Filter::parse(&value).unwrap_err().to_string()
    }

    #[test]
    fn filter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(passes(json!({}), json!({})));
        assert!(passes(json!({}), json!({"type": "x", "a": [1, {"b": null}]})));
    }

    #[test]
    fn equality_of_each_scalar_type() {
        assert!(passes(json!({"s": "done"}), json!({"s": "done"})));
        assert!(!passes(json!({"s": "done"}), json!({"s": "Done"})));
        assert!(passes(json!({"b": true}), json!({"b": true})));
        assert!(!passes(json!({"b": true}), json!({"b": false})));
        assert!(passes(json!({"n": null}), json!({"n": null})));
        assert!(!passes(json!({"n": null}), json!({"n": 0})));
        assert!(passes(json!({"i": -7}), json!({"i": -7})));
        assert!(!passes(json!({"i": -7}), json!({"i": 7})));
        assert!(passes(json!({"f": 0.5}), json!({"f": 0.5})));
        assert!(!passes(json!({"f": 0.5}), json!({"f": 0.25})));
        // `eq` is the same as a bare scalar.
        assert!(passes(json!({"s": {"eq": "done"}}), json!({"s": "done"})));
        assert!(passes(json!({"n": {"eq": null}}), json!({"n": null})));
        assert!(!passes(json!({"b": {"eq": false}}), json!({"b": true})));
    }

    #[test]
    fn integers_equal_floats_of_the_same_value() {
        assert!(passes(json!({"d": 20}), json!({"d": 20.0})));
        assert!(passes(json!({"d": 20.0}), json!({"d": 20})));
        assert!(passes(json!({"d": -3}), json!({"d": -3.0})));
        assert!(passes(json!({"d": 0}), json!({"d": -0.0})));
        assert!(!passes(json!({"d": 20}), json!({"d": 20.5})));
        assert!(passes(json!({"d": {"gte": 20}}), json!({"d": 20.0})));
        assert!(!passes(json!({"d": {"gt": 20}}), json!({"d": 20.0})));
        assert!(passes(json!({"d": {"gt": 20}}), json!({"d": 20.000001})));
        assert!(passes(json!({"d": {"lt": -2}}), json!({"d": -2.5})));
        assert!(passes(json!({"d": {"gt": 2.5}}), json!({"d": 3})));
        assert!(!passes(json!({"d": {"gt": 2.5}}), json!({"d": 2})));
    }

    #[test]
    fn big_integers_compare_exactly() {
        let two_53 = 1_u64 << 53;
        assert!(!passes(json!({"n": two_53 + 1}), json!({"n": two_53})));
        assert!(passes(json!({"n": {"gt": two_53}}), json!({"n": two_53 + 1})));
        // As an f64, 2^53 + 1 would round to 2^53.
        assert!(!passes(json!({"n": two_53 + 1}), json!({"n": two_53 as f64})));
        assert!(passes(json!({"n": {"gt": two_53 as f64}}), json!({"n": two_53 + 1})));
        assert!(passes(json!({"n": u64::MAX}), json!({"n": u64::MAX})));
        assert!(passes(json!({"n": {"gt": i64::MAX}}), json!({"n": u64::MAX})));
        assert!(passes(json!({"n": {"lt": 0}}), json!({"n": i64::MIN})));
        assert!(passes(json!({"n": {"lt": u64::MAX}}), json!({"n": i64::MIN})));
        assert!(!passes(json!({"n": u64::MAX}), json!({"n": u64::MAX - 1})));
        // u64::MAX as f64 is 2^64, one above u64::MAX.
        assert!(passes(json!({"n": {"lt": u64::MAX as f64}}), json!({"n": u64::MAX})));
        assert!(passes(json!({"n": {"gt": -1e300}}), json!({"n": i64::MIN})));
        assert!(passes(json!({"n": {"lt": 1e300}}), json!({"n": u64::MAX})));
        assert!(passes(json!({"n": {"lt": f64::MAX}}), json!({"n": f64::MAX / 2.0})));
    }

    #[test]
    fn every_operator_on_numbers() {
        let ev = |v: i64| json!({"discount": v});
        for (op, hits) in [
            ("gt", [false, false, true]),
            ("gte", [false, true, true]),
            ("lt", [true, false, false]),
            ("lte", [true, true, false]),
        ] {
            for (v, hit) in [19, 20, 21].into_iter().zip(hits) {
                assert_eq!(passes(json!({"discount": {op: 20}}), ev(v)), hit, "{v} {op} 20");
            }
        }
        assert!(passes(json!({"d": {"gte": 10, "lt": 20}}), json!({"d": 15})));
        assert!(!passes(json!({"d": {"gte": 10, "lt": 20}}), json!({"d": 20})));
        assert!(!passes(json!({"d": {"gte": 10, "lt": 20}}), json!({"d": 9.99})));
    }

    #[test]
    fn every_operator_on_strings_is_bytewise() {
        for (op, hits) in [
            ("gt", [false, false, true]),
            ("gte", [false, true, true]),
            ("lt", [true, false, false]),
            ("lte", [true, true, false]),
        ] {
            for (v, hit) in ["2024-01-14", "2024-01-15", "2024-01-16"].into_iter().zip(hits) {
                assert_eq!(passes(json!({"day": {op: "2024-01-15"}}), json!({"day": v})), hit, "{v} {op}");
            }
        }
        // Byte order: uppercase before lowercase, a prefix before its extensions, "é" after "z".
        assert!(passes(json!({"s": {"lt": "a"}}), json!({"s": "B"})));
        assert!(passes(json!({"s": {"lt": "ab"}}), json!({"s": "a"})));
        assert!(passes(json!({"s": {"gt": "z"}}), json!({"s": "é"})));
        assert!(passes(json!({"s": {"gte": ""}}), json!({"s": ""})));
    }

    #[test]
    fn in_matches_any_listed_value() {
        let f = filter(json!({"stage": {"in": ["build", "test", 3, null, true]}}));
        for hit in [json!("build"), json!("test"), json!(3), json!(3.0), json!(null), json!(true)] {
            assert!(f.matches(&event(json!({"stage": hit}))), "{hit}");
        }
        for miss in [json!("deploy"), json!("3"), json!(false), json!(4), json!(["build"]), json!({"in": "build"})] {
            assert!(!f.matches(&event(json!({"stage": miss}))), "{miss}");
        }
        assert!(!f.matches(&event(json!({"other": "build"}))));
    }

    #[test]
    fn nested_paths_walk_objects() {
        let f = filter(json!({"data.stage": "build", "data.meta.attempt": {"gte": 2}}));
        assert!(f.matches(&event(json!({"data": {"stage": "build", "meta": {"attempt": 3}}}))));
        assert!(!f.matches(&event(json!({"data": {"stage": "build", "meta": {"attempt": 1}}}))));
        assert!(!f.matches(&event(json!({"data": {"stage": "build"}}))));
        assert!(!f.matches(&event(json!({"data": {"stage": "build", "meta": [{"attempt": 3}]}}))));
        assert!(!f.matches(&event(json!({"data": "build"}))));
        // A dotted key is always a path, never a field whose name holds a dot.
        assert!(!f.matches(&event(json!({"data.stage": "build", "data.meta.attempt": 3}))));
        // Several paths may share a prefix; each is its own condition.
        assert!(passes(json!({"data.x": 1, "data.y": {"lt": 5}}), json!({"data": {"x": 1, "y": 2}})));
    }

    #[test]
    fn missing_fields_never_match() {
        for f in [
            json!({"a": null}),
            json!({"a": {"eq": null}}),
            json!({"a": {"lt": 1}}),
            json!({"a": {"gte": ""}}),
            json!({"a": {"in": [null, 0, ""]}}),
            json!({"a.b": null}),
        ] {
            assert!(!passes(f.clone(), json!({"b": null, "A": null})), "{f}");
        }
    }

    #[test]
    fn type_mismatches_never_match() {
        assert!(!passes(json!({"d": 20}), json!({"d": "20"})));
        assert!(!passes(json!({"d": "20"}), json!({"d": 20})));
        assert!(!passes(json!({"d": {"gte": 20}}), json!({"d": "30"})));
        assert!(!passes(json!({"d": {"lt": "b"}}), json!({"d": 1})));
        assert!(!passes(json!({"d": true}), json!({"d": 1})));
        assert!(!passes(json!({"d": 0}), json!({"d": false})));
        assert!(!passes(json!({"d": null}), json!({"d": false})));
        assert!(!passes(json!({"d": {"gte": 0}}), json!({"d": null})));
        assert!(!passes(json!({"d": {"gte": 0}}), json!({"d": [1]})));
        assert!(!passes(json!({"d": {"gte": 0}}), json!({"d": {"x": 1}})));
        assert!(!passes(json!({"d": 1}), json!({"d": [1]})));
    }

    #[test]
    fn all_conditions_must_hold() {
        let f = filter(json!({"category": "electronics", "discount": {"gte": 20}}));
        assert!(f.matches(&event(json!({"type": "sale", "category": "electronics", "discount": 25}))));
        assert!(!f.matches(&event(json!({"type": "sale", "category": "electronics", "discount": 5}))));
        assert!(!f.matches(&event(json!({"type": "sale", "category": "toys", "discount": 25}))));
        assert!(!f.matches(&event(json!({"type": "sale", "discount": 25}))));
    }

    #[test]
    fn limits_are_inclusive() {
        let fields: Map<String, Value> = (0..MAX_CONDITIONS).map(|i| (format!("f{i}"), json!(i))).collect();
        let f = Filter::parse(&Value::Object(fields.clone())).unwrap();
        assert!(f.matches(&fields));
        let path = "a.".repeat(127) + "bc";
        assert_eq!(path.len(), MAX_PATH_LEN);
        assert!(Filter::parse(&json!({path: 1})).is_ok());
        let list: Vec<_> = (0..MAX_IN_VALUES).collect();
        assert!(passes(json!({"x": {"in": list}}), json!({"x": 255})));
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        let expected = "filters must be a JSON object of field conditions such as {\"status\": \"done\"}, found";
        assert_eq!(error(json!([])), format!("{expected} an array"));
        assert_eq!(error(json!("a")), format!("{expected} a string"));
        assert_eq!(error(json!(null)), format!("{expected} null"));
        assert_eq!(error(json!(1)), format!("{expected} a number"));
        assert_eq!(error(json!(true)), format!("{expected} a boolean"));
    }

    #[test]
    fn rejects_too_many_conditions() {
        let fields: Map<String, Value> = (0..=MAX_CONDITIONS).map(|i| (format!("f{i}"), json!(i))).collect();
        assert_eq!(
            Filter::parse(&Value::Object(fields)).unwrap_err(),
            FilterError::TooManyConditions { count: MAX_CONDITIONS + 1 }
        );
        assert_eq!(
            error(Value::Object((0..40).map(|i| (format!("f{i}"), json!(i))).collect())),
            "filters has 40 conditions; at most 32 are allowed"
        );
    }

    #[test]
    fn rejects_empty_path_segments() {
        for key in ["", ".", ".a", "a.", "a..b", "data..stage"] {
            assert_eq!(Filter::parse(&json!({key: 1})).unwrap_err(), FilterError::EmptySegment { field: key.into() });
        }
        assert_eq!(
            error(json!({"a..b": 1})),
            "filter on \"a..b\": the field path has an empty segment; use a field name or a dotted path such as \"data.stage\""
        );
    }

    #[test]
    fn rejects_overlong_paths_quoting_only_their_start() {
        let key = "é".repeat(200);
        let err = Filter::parse(&json!({key.clone(): 1})).unwrap_err();
        let FilterError::PathTooLong { field, len } = &err else { panic!("{err:?}") };
        assert_eq!(*len, 400);
        assert_eq!(field, &format!("{}…", "é".repeat(32)));
        assert_eq!(
            err.to_string(),
            format!("filter on \"{}…\": the field path is 400 bytes long; at most 256 are allowed", "é".repeat(32))
        );
        assert!(Filter::parse(&json!({"a".repeat(257): 1})).is_err());
    }

    #[test]
    fn rejects_arrays_as_equality_operands() {
        assert_eq!(
            error(json!({"tags": ["a", "b"]})),
            "filter on \"tags\": an array cannot be matched by equality; use a string, number, boolean or null, or {\"in\": [...]} to match any of several values"
        );
        assert_eq!(
            error(json!({"tags": {"eq": ["a"]}})),
            "filter on \"tags\": operator \"eq\" needs a string, number, boolean or null (use \"in\" to match any of several values), found an array"
        );
        assert_eq!(
            error(json!({"tags": {"eq": {"a": 1}}})),
            "filter on \"tags\": operator \"eq\" needs a string, number, boolean or null (use \"in\" to match any of several values), found an object"
        );
    }

    #[test]
    fn rejects_empty_and_unknown_operators() {
        assert_eq!(
            error(json!({"discount": {}})),
            "filter on \"discount\": the operator object is empty; use eq, gt, gte, lt, lte or in"
        );
        assert_eq!(
            error(json!({"discount": {"gtt": 20}})),
            "filter on \"discount\": unknown operator \"gtt\"; use eq, gt, gte, lt, lte or in"
        );
        // A nested object is not an equality operand: its keys are read as operators.
        assert_eq!(
            error(json!({"data": {"stage": "x"}})),
            "filter on \"data\": unknown operator \"stage\"; use eq, gt, gte, lt, lte or in"
        );
        assert!(matches!(
            Filter::parse(&json!({"d": {"GTE": 1}})),
            Err(FilterError::UnknownOperator { operator, .. }) if operator == "GTE"
        ));
        let long = "x".repeat(1000);
        let Err(FilterError::UnknownOperator { operator, .. }) = Filter::parse(&json!({"d": {long: 1}})) else {
            panic!("expected an unknown operator")
        };
        assert_eq!(operator, format!("{}…", "x".repeat(64)));
    }

    #[test]
    fn rejects_wrong_comparison_operands() {
        for op in ["gt", "gte", "lt", "lte"] {
            for (operand, found) in
                [(json!(true), "a boolean"), (json!(null), "null"), (json!([1]), "an array"), (json!({}), "an object")]
            {
                assert_eq!(
                    error(json!({"discount": {op: operand}})),
                    format!("filter on \"discount\": operator \"{op}\" needs a number or a string, found {found}")
                );
            }
        }
        // One bad operator spoils an otherwise valid operator object.
        assert!(Filter::parse(&json!({"d": {"gte": 1, "lt": false}})).is_err());
    }

    #[test]
    fn rejects_bad_in_lists() {
        assert_eq!(
            error(json!({"stage": {"in": "build"}})),
            "filter on \"stage\": operator \"in\" needs a non-empty array of strings, numbers, booleans or null, found a string"
        );
        assert_eq!(
            error(json!({"stage": {"in": []}})),
            "filter on \"stage\": operator \"in\" needs between 1 and 256 values, found 0"
        );
        let list: Vec<_> = (0..=MAX_IN_VALUES).collect();
        assert_eq!(
            error(json!({"stage": {"in": list}})),
            "filter on \"stage\": operator \"in\" needs between 1 and 256 values, found 257"
        );
        assert_eq!(
            error(json!({"stage": {"in": ["a", ["b"]]}})),
            "filter on \"stage\": operator \"in\" lists an array at index 1; list only strings, numbers, booleans or null"
        );
        assert_eq!(
            Filter::parse(&json!({"stage": {"in": [{"a": 1}]}})).unwrap_err(),
            FilterError::InValue { field: "stage".into(), index: 0, found: "an object" }
        );
    }

    #[test]
    fn errors_quote_field_names_safely() {
        assert_eq!(error(json!({"a\"b": []})).split(':').next(), Some("filter on \"a\\\"b\""));
    }

    // ---- properties ----

    /// Any JSON value: scalars (big integers and floats included) nested in arrays and
    /// objects, with keys biased towards operator names and dotted paths so that `parse`
    /// gets past its first checks.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-c.é]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop_oneof![Just("eq"), Just("gt"), Just("gte"), Just("lt"), Just("lte"), Just("in")]
                .prop_map(String::from),
            "[a-c]{1,2}(\\.[a-c]{1,2}){0,2}",
            "[a-c.]{0,4}",
        ]
    }

    /// A filter that compiles: fields over a small alphabet (so events hit them), scalar or
    /// operator-object conditions.
    fn valid_filter() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        let ordered = prop_oneof![
            (-3i64..3).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        let operators = (
            prop::option::of(scalar.clone()),
            prop::collection::vec((prop_oneof![Just("gt"), Just("gte"), Just("lt"), Just("lte")], ordered), 0..3),
            prop::option::of(prop::collection::vec(scalar.clone(), 1..5)),
        )
            .prop_filter_map("at least one operator", |(eq, cmps, list)| {
                let mut ops = Map::new();
                if let Some(eq) = eq {
                    ops.insert("eq".into(), eq);
                }
                for (op, operand) in cmps {
                    ops.insert(op.into(), operand);
                }
                if let Some(list) = list {
                    ops.insert("in".into(), Value::Array(list));
                }
                (!ops.is_empty()).then_some(Value::Object(ops))
            });
        let condition = prop_oneof![scalar, operators];
        prop::collection::btree_map("[a-c]{1,2}(\\.[a-c]{1,2}){0,2}", condition, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// An event over the same small alphabet of field names.
    fn event_map() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-c]{1,2}", json_value(), 0..8).prop_map(|m| m.into_iter().collect())
    }

    /// Integers across the whole `i64` and `u64` range, with small ones common so that
    /// ties happen.
    fn integer() -> impl Strategy<Value = i128> {
        prop_oneof![(-3i128..3), any::<i64>().prop_map(i128::from), any::<u64>().prop_map(i128::from)]
    }

    /// An integer and a float, often the integer's nearest float (a tie, or off by the
    /// rounding above 2^53) or half a unit away from it.
    fn integer_and_float() -> impl Strategy<Value = (i128, f64)> {
        integer().prop_flat_map(|x| {
            let near = x as f64;
            (Just(x), prop_oneof![-1e20f64..1e20, Just(near), Just(near + 0.5), Just(near - 0.5)])
        })
    }

    fn int_json(i: i128) -> Value {
        u64::try_from(i).map(Value::from).unwrap_or_else(|_| Value::from(i64::try_from(i).unwrap()))
    }

    fn holds(op: &str, order: Ordering) -> bool {
        match op {
            "gt" => order.is_gt(),
            "gte" => order.is_ge(),
            "lt" => order.is_lt(),
            "lte" => order.is_le(),
            _ => unreachable!(),
        }
    }

    fn comparison() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("gt"), Just("gte"), Just("lt"), Just("lte")]
    }

    proptest! {
        #[test]
        fn parse_never_panics(value in json_value()) {
            let _ = Filter::parse(&value);
        }

        #[test]
        fn parse_of_any_object_never_panics(fields in prop::collection::btree_map(key(), json_value(), 0..40)) {
            let _ = Filter::parse(&Value::Object(fields.into_iter().collect()));
        }

        #[test]
        fn matches_never_panics(filter in json_value(), valid in valid_filter(), event in event_map()) {
            if let Ok(filter) = Filter::parse(&filter) {
                let _ = filter.matches(&event);
            }
            let valid = Filter::parse(&valid).unwrap();
            let _ = valid.matches(&event);
        }

        #[test]
        fn integer_comparisons_are_exact(x in integer(), y in integer(), op in comparison()) {
            let f = filter(json!({"f": {op: int_json(x)}}));
            prop_assert_eq!(f.matches(&event(json!({"f": int_json(y)}))), holds(op, y.cmp(&x)));
            let eq = filter(json!({"f": int_json(x)}));
            prop_assert_eq!(eq.matches(&event(json!({"f": int_json(y)}))), x == y);
        }

        #[test]
        fn integer_float_comparisons_are_exact((x, y) in integer_and_float(), op in comparison()) {
            // y >= x for an integer x exactly when floor(y) >= x; floor(y) fits in i128 here.
            let floor = y.floor() as i128;
            let order = if floor < x { Ordering::Less } else if floor > x || y > y.floor() { Ordering::Greater } else { Ordering::Equal };
            let f = filter(json!({"f": {op: int_json(x)}}));
            prop_assert_eq!(f.matches(&event(json!({"f": y}))), holds(op, order));
            let f = filter(json!({"f": {op: y}}));
            prop_assert_eq!(f.matches(&event(json!({"f": int_json(x)}))), holds(op, order.reverse()));
            prop_assert_eq!(passes(json!({"f": y}), json!({"f": int_json(x)})), order.is_eq());
        }

        #[test]
        fn float_comparisons_follow_f64(x in any::<f64>(), y in any::<f64>(), op in comparison()) {
            prop_assume!(x.is_finite() && y.is_finite());
            let f = filter(json!({"f": {op: x}}));
            prop_assert_eq!(f.matches(&event(json!({"f": y}))), holds(op, y.partial_cmp(&x).unwrap()));
        }

        #[test]
        fn string_comparisons_are_bytewise(x in "[a-cA-Cé]{0,3}", y in "[a-cA-Cé]{0,3}", op in comparison()) {
            let f = filter(json!({"f": {op: x.clone()}}));
            prop_assert_eq!(f.matches(&event(json!({"f": y.clone()}))), holds(op, y.as_bytes().cmp(x.as_bytes())));
            prop_assert_eq!(passes(json!({"f": x.clone()}), json!({"f": y.clone()})), x == y);
        }

        #[test]
        fn in_matches_iff_some_value_equals(list in prop::collection::vec(integer(), 1..8), y in integer()) {
            let values: Vec<Value> = list.iter().copied().map(int_json).collect();
            let f = filter(json!({"f": {"in": values}}));
            prop_assert_eq!(f.matches(&event(json!({"f": int_json(y)}))), list.contains(&y));
        }

        #[test]
        fn missing_fields_never_match_any_condition(valid in valid_filter(), event in event_map()) {
            let f = Filter::parse(&valid).unwrap();
            let mut conditions = valid.as_object().unwrap().keys();
            if let Some(key) = conditions.next() {
                let top = key.split('.').next().unwrap();
                let mut event = event;
                event.remove(top);
                prop_assert!(!f.matches(&event));
            }
        }
    }
}
