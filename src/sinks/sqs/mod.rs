//! The `sqs` sink: AWS SQS queues, standard and FIFO, through `aws-sdk-sqs` with the
//! standard credential chain (environment, profile, web identity, ECS task role, instance
//! metadata), so the same binary runs unchanged on a laptop, on EC2 and on ECS Fargate.
//!
//! This module owns turning a [`RoutedMessage`](crate::sinks::RoutedMessage) into an SQS
//! `SendMessage`/`SendMessageBatch` call (body = the envelope, string attributes, FIFO
//! group and de-duplication ids) and turning every SQS failure into a
//! [`SinkError`](crate::sinks::SinkError). It must never retry (the SDK's own retries are
//! disabled; the shared [`RetryPolicy`](crate::sinks::retry::RetryPolicy) decides), never
//! wait longer than the configured `timeout` for one call, and never create, purge or
//! reconfigure queues: queues belong to the operator.
//!
//! # How failures are classified
//!
//! | What happened | [`SinkError`](crate::sinks::SinkError) |
//! |---|---|
//! | No answer: connection refused, DNS, TLS, I/O, a timeout (ours or the SDK's) | `Unavailable` |
//! | Credentials or the endpoint could not be resolved, the request could not be built | `Unavailable` |
//! | Throttling: `RequestThrottled`, `ThrottlingException`, `OverLimit`, HTTP 429 | `Unavailable` |
//! | Any HTTP 5xx (`InternalError`, `ServiceUnavailable`, a proxy's 502/503/504) | `Unavailable` |
//! | The queue, not the message: `QueueDoesNotExist`, `AccessDenied`, bad or expired credentials (`InvalidClientTokenId`, `SignatureDoesNotMatch`, `ExpiredToken`, …), the queue's KMS key (`KmsAccessDenied`, `KmsDisabled`, …) | `Unavailable` |
//! | Any other 4xx with an SQS error code: `InvalidParameterValue` (e.g. a too-long message), `InvalidMessageContents`, `InvalidAttributeValue`, … | `Rejected` |
//! | Something answered that is not SQS: a 4xx without an error code, an unreadable success | `Failed` |
//!
//! Why queue-level errors are `Unavailable` and not `Rejected`: a missing queue or a
//! missing IAM permission refuses *every* message the same way, whatever it contains.
//! `Rejected` would dead-letter the whole outbox message by message while the operator
//! fixes a typo in `queue_url` or a task role; `Unavailable` keeps the messages waiting
//! (without spending their attempts), marks the sink down in `/ready` and the metrics, and
//! delivers everything once the queue exists. Likewise 5xx answers are SQS's own trouble,
//! never one message's (the SDK's own retry classifier treats them as transient), so they
//! must not spend a message's attempts either.
//!
//! In a batch, each refused entry is classified the same way, with `SenderFault = true`
//! standing for a 4xx and `false` for a 5xx. When a whole `SendMessageBatch` call is
//! refused (`Rejected`) the chunk is re-sent one message at a time, so the refusal is pinned
//! on the message that caused it and not on the first one of the chunk.

mod classify;
mod config;
mod request;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{MessageGroup, SqsConfig};
pub use sink::{SqsSink, build, build_with_loader};
