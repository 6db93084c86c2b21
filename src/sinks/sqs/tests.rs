//! Pure tests: attributes, group ids, batch cutting, region from URL, classification.

use super::MessageGroup;
use super::classify::{Answer, EntryFailure, classify, delivered_prefix};
use super::request::{
    MAX_BATCH_BYTES, attributes, batch_ranges, group_id, is_valid_attribute_value, payload_size, region_from_queue_url,
    valid_group_id,
};
use crate::sinks::{MessageId, RoutedMessage, SinkError};

fn message() -> RoutedMessage {
    RoutedMessage {
        message_id: serde_json::from_str("\"msg_1_2\"").unwrap(),
        sink: "dev-agents".into(),
        action: "forward".into(),
        connection_id: "conn_1_a".into(),
        user_id: "user-7".into(),
        request_id: Some("r1".into()),
        received_at_ms: 1_763_800_000_123,
        connected_at_ms: 1_763_800_000_000,
        source_ip: "127.0.0.1".into(),
        body: r#"{"action":"forward","n":1}"#.into(),
    }
}

// ---- attributes ----

#[test]
fn attributes_carry_action_user_connection_request_and_message_ids() {
    let m = message();
    assert_eq!(
        attributes(&m),
        vec![
            ("action", "forward"),
            ("userId", "user-7"),
            ("connectionId", "conn_1_a"),
            ("requestId", "r1"),
            ("messageId", "msg_1_2"),
        ]
    );
}

#[test]
fn a_missing_request_id_is_left_out() {
    let mut m = message();
    m.request_id = None;
    let names: Vec<&str> = attributes(&m).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["action", "userId", "connectionId", "messageId"]);
}

#[test]
fn values_sqs_would_refuse_are_left_out_instead_of_refusing_the_message() {
    let mut m = message();
    m.request_id = Some(String::new());
    m.user_id = "bell\u{7}".into();
    let names: Vec<&str> = attributes(&m).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["action", "connectionId", "messageId"]);
}

#[test]
fn attribute_values_follow_sqs_character_rules() {
    assert!(is_valid_attribute_value("plain"));
    assert!(is_valid_attribute_value("tab\tnewline\ncr\r"));
    assert!(is_valid_attribute_value("ünïcödé ✓ 😀"));
    assert!(!is_valid_attribute_value(""));
    assert!(!is_valid_attribute_value("nul\0"));
    assert!(!is_valid_attribute_value("\u{1f}"));
    assert!(!is_valid_attribute_value("\u{FFFE}"));
    assert!(!is_valid_attribute_value("\u{FFFF}"));
}

#[test]
fn payload_size_counts_body_and_attribute_names_types_and_values() {
    assert_eq!(payload_size("12345", &[]), 5);
    assert_eq!(payload_size("12345", &[("ab", "xyz")]), 5 + 2 + "String".len() + 3);
}

// ---- FIFO group ids ----

#[test]
fn group_id_follows_the_configured_choice_and_defaults_to_the_connection() {
    let m = message();
    assert_eq!(group_id(MessageGroup::default(), &m), "conn_1_a");
    assert_eq!(group_id(MessageGroup::ConnectionId, &m), "conn_1_a");
    assert_eq!(group_id(MessageGroup::UserId, &m), "user-7");
    assert_eq!(group_id(MessageGroup::Action, &m), "forward");
}

#[test]
fn valid_group_ids_are_used_as_they_are() {
    let punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    assert_eq!(valid_group_id(punctuation), punctuation);
    let longest = "a".repeat(128);
    assert_eq!(valid_group_id(&longest), longest.as_str());
}

#[test]
fn invalid_group_ids_become_valid_stable_and_distinct() {
    for value in ["", "with space", "josé@example.com", &"x".repeat(129), "tab\t"] {
        let id = valid_group_id(value);
        assert!(!id.is_empty() && id.len() <= 128, "{id:?}");
        assert!(id.chars().all(|c| c.is_ascii_graphic()), "{id:?}");
        assert_eq!(valid_group_id(value), id, "stable");
    }
    // FNV-1a 64 of "with space", computed independently: pinned because ids must not change.
    assert_eq!(valid_group_id("with space"), "with_space~2fa3977cadeceaa7");
    // Same readable prefix, different values: different groups.
    assert_ne!(valid_group_id("a b"), valid_group_id("a\tb"));
    assert_ne!(valid_group_id(&"x".repeat(129)), valid_group_id(&"x".repeat(130)));
}

// ---- batches ----

#[test]
fn batches_hold_at_most_ten_entries_in_order() {
    assert_eq!(batch_ranges(&[]), Vec::<std::ops::Range<usize>>::new());
    assert_eq!(batch_ranges(&[1; 3]), vec![0..3]);
    assert_eq!(batch_ranges(&[1; 10]), vec![0..10]);
    assert_eq!(batch_ranges(&[1; 25]), vec![0..10, 10..20, 20..25]);
}

#[test]
fn batches_stay_within_the_byte_limit_and_a_huge_message_goes_alone() {
    let third = MAX_BATCH_BYTES / 3;
    assert_eq!(batch_ranges(&[third, third, third, third]), vec![0..3, 3..4]);
    assert_eq!(batch_ranges(&[10, MAX_BATCH_BYTES + 1, 10]), vec![0..1, 1..2, 2..3]);
    assert_eq!(batch_ranges(&[MAX_BATCH_BYTES, 1]), vec![0..1, 1..2]);
}

// ---- region ----

#[test]
fn the_region_comes_from_aws_queue_urls_only() {
    let cases = [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", Some("eu-west-1")),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/123456789012/q.fifo", Some("us-gov-west-1")),
        ("https://ap-south-1.queue.amazonaws.com/123456789012/q", Some("ap-south-1")),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", Some("cn-north-1")),
        ("https://vpce-0abc-xyz.sqs.us-east-2.vpce.amazonaws.com/123456789012/q", Some("us-east-2")),
        ("http://127.0.0.1:4566/000000000000/q", None),
        ("http://localhost:9324/queue/q", None),
        ("https://sqs.amazonaws.com/123/q", None),
        ("not a url", None),
    ];
    for (url, region) in cases {
        assert_eq!(region_from_queue_url(url).as_deref(), region, "{url}");
    }
}

// ---- classification ----

fn answered(status: u16, code: &str) -> SinkError {
    classify(Answer::Answered { status, code: Some(code) }, "detail")
}

#[test]
fn no_answer_and_timeouts_are_unavailable() {
    assert!(matches!(classify(Answer::NotReached, "connection refused"), SinkError::Unavailable(_)));
    assert!(matches!(classify(Answer::TimedOut, "5s"), SinkError::Unavailable(_)));
}

#[test]
fn throttling_and_server_errors_are_unavailable() {
    for (status, code) in [
        (400, "RequestThrottled"),
        (400, "ThrottlingException"),
        (400, "AWS.SimpleQueueService.RequestThrottled"),
        (403, "OverLimit"),
        (503, "ServiceUnavailable"),
        (500, "InternalError"),
        (500, "InternalFailure"),
        (502, "BadGateway"),
        (429, "SomethingNew"),
    ] {
        assert!(matches!(answered(status, code), SinkError::Unavailable(_)), "{status} {code}");
    }
    let proxy_504 = classify(Answer::Answered { status: 504, code: None }, "gateway timeout");
    assert!(matches!(proxy_504, SinkError::Unavailable(_)));
}

#[test]
fn queue_level_errors_are_unavailable_not_rejected() {
    for (status, code) in [
        (400, "QueueDoesNotExist"),
        (400, "AWS.SimpleQueueService.NonExistentQueue"),
        (400, "com.amazonaws.sqs#QueueDoesNotExist"),
        (403, "AccessDenied"),
        (400, "AccessDeniedException"),
        (403, "InvalidClientTokenId"),
        (403, "SignatureDoesNotMatch"),
        (400, "UnrecognizedClientException"),
        (400, "ExpiredToken"),
        (400, "KmsAccessDenied"),
        (400, "KMS.DisabledException"),
        (400, "KmsThrottled"),
    ] {
        assert!(matches!(answered(status, code), SinkError::Unavailable(_)), "{status} {code}");
    }
}

#[test]
fn message_level_4xx_errors_are_rejected() {
    for code in [
        "InvalidParameterValue",
        "InvalidMessageContents",
        "InvalidAttributeValue",
        "MissingParameter",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "SomeFutureValidationError",
    ] {
        assert!(matches!(answered(400, code), SinkError::Rejected(_)), "{code}");
    }
}

#[test]
fn answers_that_are_not_sqs_errors_are_failed() {
    for status in [200, 302, 403, 404] {
        let error = classify(Answer::Answered { status, code: None }, "html page");
        assert!(matches!(error, SinkError::Failed(_)), "{status}");
    }
    assert!(matches!(classify(Answer::Other, "?"), SinkError::Failed(_)));
}

#[test]
fn the_classified_error_keeps_status_code_and_detail() {
    let SinkError::Rejected(text) = answered(400, "InvalidParameterValue") else { panic!() };
    assert_eq!(text, "SQS answered 400 InvalidParameterValue: detail");
    let SinkError::Unavailable(text) = answered(400, "AWS.SimpleQueueService.NonExistentQueue") else { panic!() };
    assert_eq!(text, "SQS answered 400 AWS.SimpleQueueService.NonExistentQueue: detail", "the code as SQS sent it");
}

// ---- batch results ----

fn failure<'a>(id: &'a str, sender_fault: bool, code: &'a str) -> EntryFailure<'a> {
    EntryFailure { id, sender_fault, code, message: Some("why") }
}

#[test]
fn a_fully_successful_batch_delivers_everything() {
    assert_eq!(delivered_prefix(3, &["2", "0", "1"], &[]), (3, None));
}

#[test]
fn a_partial_failure_delivers_the_prefix_before_the_first_failed_entry() {
    let (delivered, error) = delivered_prefix(4, &["0", "1", "3"], &[failure("2", true, "InvalidParameterValue")]);
    assert_eq!(delivered, 2);
    assert!(matches!(error, Some(SinkError::Rejected(_))));

    let (delivered, error) = delivered_prefix(3, &["1", "2"], &[failure("0", false, "InternalError")]);
    assert_eq!(delivered, 0);
    assert!(matches!(error, Some(SinkError::Unavailable(_))));

    let (_, error) = delivered_prefix(2, &["0"], &[failure("1", true, "KmsDisabled")]);
    assert!(matches!(error, Some(SinkError::Unavailable(_))), "queue-level, also per entry");
}

#[test]
fn an_entry_without_any_result_is_failed() {
    let (delivered, error) = delivered_prefix(3, &["0", "2"], &[]);
    assert_eq!(delivered, 1);
    assert!(matches!(error, Some(SinkError::Failed(_))));
}

#[test]
fn message_ids_are_usable_as_deduplication_ids() {
    // SQS takes 1–128 characters of ASCII letters, digits and punctuation.
    let id = MessageId::generate();
    assert!(id.as_str().len() <= 128 && id.as_str().chars().all(|c| c.is_ascii_graphic()));
}

// ---- error text ----

#[derive(Debug)]
struct Layer(&'static str, Option<Box<Layer>>);

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|layer| layer as _)
    }
}

#[test]
fn errors_are_described_on_one_line_with_their_causes_once() {
    let error = Layer(
        "dispatch failure",
        Some(Box::new(Layer("io error", Some(Box::new(Layer("io error", Some(Box::new(Layer("refused", None))))))))),
    );
    assert_eq!(super::sink::describe(&error), "dispatch failure: io error: refused");
}
