//! What one message becomes in an SQS request, as pure functions: its string attributes,
//! its FIFO group id, how a batch is cut into `SendMessageBatch` calls, and the region an
//! AWS queue URL names. This file must never name SDK types or do I/O.

use std::borrow::Cow;
use std::ops::Range;

use super::MessageGroup;
use crate::sinks::RoutedMessage;

/// At most this many entries per `SendMessageBatch` call (an SQS limit).
pub(super) const MAX_BATCH_ENTRIES: usize = 10;

/// At most this many payload bytes per `SendMessageBatch` call. AWS now allows 1 MiB, but
/// 256 KiB was the limit for years and still is in SQS-compatible servers; staying under
/// it costs a few more calls only for very large messages.
pub(super) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The longest `MessageGroupId` SQS takes.
const MAX_GROUP_ID: usize = 128;

/// The `String` message attributes of a message, in a fixed order: `action`, `userId`,
/// `connectionId`, `requestId` (when the client gave one) and `messageId`. A value SQS
/// would refuse (empty, or with characters outside SQS's allowed set) is left out rather
/// than have the whole message refused: the envelope in the body carries it anyway.
pub(super) fn attributes(message: &RoutedMessage) -> Vec<(&'static str, &str)> {
    let candidates = [
        ("action", Some(message.action.as_str())),
        ("userId", Some(message.user_id.as_str())),
        ("connectionId", Some(message.connection_id.as_str())),
        ("requestId", message.request_id.as_deref()),
        ("messageId", Some(message.message_id.as_str())),
    ];
    candidates
        .into_iter()
        .filter_map(|(name, value)| value.filter(|v| is_valid_attribute_value(v)).map(|v| (name, v)))
        .collect()
}

/// Whether SQS accepts `value` as a `String` attribute value: not empty, and only the
/// characters SQS allows in messages (`#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
/// #x10000-#x10FFFF`; Rust strings cannot hold surrogates).
pub(super) fn is_valid_attribute_value(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..))
}

/// The bytes SQS counts against its size limits for one message: the body plus, for each
/// attribute, its name, its data type (`String`) and its value.
pub(super) fn payload_size(body: &str, attributes: &[(&str, &str)]) -> usize {
    let attributes: usize = attributes.iter().map(|(name, value)| name.len() + "String".len() + value.len()).sum();
    body.len() + attributes
}

/// A FIFO queue's `MessageGroupId` for the message, by the configured choice. SQS takes
/// 1–128 characters of ASCII letters, digits and punctuation; a value outside that (a
/// user id with spaces or accents, a very long action) is made valid deterministically —
/// the same input always gives the same group, so ordering per group still holds, also
/// across restarts while the outbox drains.
pub(super) fn group_id(choice: MessageGroup, message: &RoutedMessage) -> Cow<'_, str> {
    let value = match choice {
        MessageGroup::ConnectionId => &message.connection_id,
        MessageGroup::UserId => &message.user_id,
        MessageGroup::Action => &message.action,
    };
    valid_group_id(value)
}

/// `value` itself when SQS accepts it as a group id, else a readable prefix with the
/// disallowed characters replaced, `~`, and a stable 64-bit hash of the whole value (so
/// different values stay in different groups, barring a hash collision, which would only
/// merge two groups' ordering).
pub(super) fn valid_group_id(value: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_graphic();
    if !value.is_empty() && value.len() <= MAX_GROUP_ID && value.chars().all(allowed) {
        return Cow::Borrowed(value);
    }
    let prefix: String = value.chars().take(100).map(|c| if allowed(c) { c } else { '_' }).collect();
    Cow::Owned(format!("{prefix}~{:016x}", fnv1a(value.as_bytes())))
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`,
/// because group ids must not change when the binary is upgraded mid-outbox.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Cuts messages of the given payload sizes into consecutive `SendMessageBatch` calls, in
/// order: at most [`MAX_BATCH_ENTRIES`] entries and [`MAX_BATCH_BYTES`] bytes each. A
/// message larger than the byte limit gets a call of its own (SQS then judges it).
pub(super) fn batch_ranges(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, &size) in sizes.iter().enumerate() {
        let full = index - start == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES;
        if index > start && full {
            ranges.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// The region an AWS SQS queue URL names (`https://sqs.eu-west-1.amazonaws.com/…`,
/// `https://sqs-fips.us-east-1.amazonaws.com/…`, the legacy
/// `https://eu-west-1.queue.amazonaws.com/…`, VPC endpoints, China's `.amazonaws.com.cn`);
/// `None` for anything else (LocalStack, moto, ElasticMQ).
pub(super) fn region_from_queue_url(queue_url: &str) -> Option<String> {
    let url = url::Url::parse(queue_url).ok()?;
    let host = url.host_str()?;
    let stem = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = stem.split('.').collect();
    let region = match labels.as_slice() {
        [region, "queue"] => Some(*region),
        _ => labels.windows(2).find(|pair| matches!(pair[0], "sqs" | "sqs-fips")).map(|pair| pair[1]),
    }?;
    let looks_like_region =
        region.contains('-') && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    looks_like_region.then(|| region.to_owned())
}
