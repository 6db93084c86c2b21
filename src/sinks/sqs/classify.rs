//! Which [`SinkError`] an SQS failure is (the table in the module docs), as pure functions
//! of what the SDK saw, so every rule is unit-tested without a server. This file must
//! never name SDK types: `sink.rs` reduces an `SdkError` to an [`Answer`] first.

use crate::sinks::SinkError;

/// What a failed SQS call got back, reduced to what classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer<'a> {
    /// Nothing from SQS: the connection failed (refused, DNS, TLS, I/O), credentials or
    /// the endpoint could not be resolved, or the request could not be built.
    NotReached,
    /// No answer within the timeout.
    TimedOut,
    /// Something answered with this HTTP status and, if it was an SQS error document,
    /// this error code.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The SQS error code (`QueueDoesNotExist`, `AWS.SimpleQueueService.NonExistentQueue`, …).
        code: Option<&'a str>,
    },
    /// A failure the SDK added after this code was written.
    Other,
}

/// Codes that mean "slow down": SQS or its KMS key is throttling us.
const THROTTLING: &[&str] = &[
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "OverLimit",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Codes about the queue or our identity, never about the message: every message would
/// get the same answer until the operator fixes the queue, its policy or our credentials.
const QUEUE_LEVEL: &[&str] = &[
    "QueueDoesNotExist",
    "NonExistentQueue",
    "QueueDeletedRecently",
    "InvalidAddress",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidSecurity",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "OptInRequired",
];

/// The code without the legacy `AWS.SimpleQueueService.` prefix (sent in the
/// `x-amzn-query-error` header) or a Smithy namespace (`com.amazonaws.sqs#…`).
fn normalize(code: &str) -> &str {
    let code = code.rsplit_once('#').map_or(code, |(_, name)| name);
    code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code)
}

/// Whether the code is about the queue's KMS key (`KmsAccessDenied`, `KMS.DisabledException`, …):
/// the queue's encryption setup, never the message.
fn is_kms(code: &str) -> bool {
    code.starts_with("Kms") || code.starts_with("KMS.")
}

/// Classifies a failed call; `detail` is the error as the SDK describes it, kept in the
/// [`SinkError`] for logs and `/ready`.
pub(super) fn classify(answer: Answer<'_>, detail: &str) -> SinkError {
    match answer {
        Answer::NotReached => SinkError::Unavailable(format!("SQS not reached: {detail}")),
        Answer::TimedOut => SinkError::Unavailable(format!("SQS timed out: {detail}")),
        Answer::Answered { status, code } => classify_answer(status, code, detail),
        Answer::Other => SinkError::Failed(format!("SQS call failed: {detail}")),
    }
}

fn classify_answer(status: u16, code: Option<&str>, detail: &str) -> SinkError {
    let described = match code {
        Some(code) => format!("SQS answered {status} {code}: {detail}"),
        None => format!("SQS answered {status}: {detail}"),
    };
    let code = code.map(normalize);
    if let Some(code) = code {
        if THROTTLING.contains(&code) {
            return SinkError::Unavailable(described);
        }
        if QUEUE_LEVEL.contains(&code) || is_kms(code) {
            return SinkError::Unavailable(described);
        }
    }
    match (status, code) {
        (429 | 500..=599, _) => SinkError::Unavailable(described),
        (400..=499, Some(_)) => SinkError::Rejected(described),
        // A 4xx without an SQS error document, or an unreadable 2xx: whatever answered is
        // not behaving like SQS (a proxy, a wrong endpoint). Retried, within the message's
        // attempts.
        _ => SinkError::Failed(described),
    }
}

/// One entry SQS refused in a `SendMessageBatch` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryFailure<'a> {
    /// The entry id we gave it (its index in the chunk).
    pub id: &'a str,
    /// Whether SQS blames the request (a 4xx) rather than itself (a 5xx).
    pub sender_fault: bool,
    /// The error code.
    pub code: &'a str,
    /// SQS's explanation.
    pub message: Option<&'a str>,
}

/// Classifies one refused batch entry like a whole call with the same code.
pub(super) fn classify_entry(failure: &EntryFailure<'_>) -> SinkError {
    let status = if failure.sender_fault { 400 } else { 500 };
    let detail = failure.message.unwrap_or("no message");
    classify(Answer::Answered { status, code: Some(failure.code) }, detail)
}

/// How many of a chunk's `entries` (ids `"0"`, `"1"`, …) were delivered as an unbroken
/// prefix, and why the next one was not. Entries after the first refused one may have
/// been delivered too, but the batch contract reports a prefix: they are sent again later,
/// which FIFO queues de-duplicate by message id and standard queues allow (at-least-once).
pub(super) fn delivered_prefix(
    entries: usize,
    successful: &[&str],
    failed: &[EntryFailure<'_>],
) -> (usize, Option<SinkError>) {
    for index in 0..entries {
        let id = index.to_string();
        if successful.contains(&id.as_str()) {
            continue;
        }
        let error = match failed.iter().find(|failure| failure.id == id) {
            Some(failure) => classify_entry(failure),
            // SQS answered for the batch but not for this entry: its fate is unknown.
            None => SinkError::Failed(format!("SQS returned no result for batch entry {id}")),
        };
        return (index, Some(error));
    }
    (entries, None)
}
