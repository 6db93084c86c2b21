//! [`SqsSink`]: the SDK client, the calls (`SendMessage`, `SendMessageBatch`,
//! `GetQueueAttributes`) and the reduction of SDK errors to a [`classify::Answer`]. What
//! goes into a request and how failures are classified live in pure modules beside it.

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};

use super::classify::{self, Answer, EntryFailure};
use super::request::{self, MAX_BATCH_ENTRIES};
use super::{MessageGroup, SqsConfig};
use crate::sinks::{BatchOutcome, Delivered, RoutedMessage, Sink, SinkBuildError, SinkError};

/// A sink that sends each message to one SQS queue (standard or FIFO).
///
/// Built by [`build`]; cheap to share (the SDK client is a handle to a pooled connector).
#[derive(Debug, Clone)]
pub struct SqsSink {
    client: Client,
    queue_url: String,
    fifo: bool,
    group: MessageGroup,
    timeout: Duration,
}

/// Builds the sink `name` with the standard AWS configuration chain: credentials from the
/// environment, a profile, web identity, the ECS container endpoint or instance metadata
/// (so it runs unchanged on ECS Fargate with a task role); region from `region`, else the
/// queue URL, else the chain. Nothing is sent: credentials are resolved on the first call.
pub async fn build(name: &str, config: &SqsConfig) -> Result<SqsSink, SinkBuildError> {
    build_with_loader(name, config, aws_config::defaults(BehaviorVersion::latest())).await
}

/// [`build`] from a caller's AWS [`ConfigLoader`] (e.g. with static credentials for a test
/// server, or shared settings). The sink still overrides, whatever the loader says: retries
/// off (the shared retry policy decides), every timeout = `config.timeout`, and the
/// region and endpoint from `config` when given.
pub async fn build_with_loader(
    name: &str,
    config: &SqsConfig,
    loader: ConfigLoader,
) -> Result<SqsSink, SinkBuildError> {
    let error = |message: String| SinkBuildError { name: name.to_owned(), message };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.timeout)
        .read_timeout(config.timeout)
        .operation_attempt_timeout(config.timeout)
        .operation_timeout(config.timeout)
        .build();
    let mut loader = loader.retry_config(RetryConfig::disabled()).timeout_config(timeouts);
    // An AWS queue URL names its region; using it (unless `region` says otherwise) keeps
    // the endpoint and the signature in the queue's region even when the task runs in
    // another one, and spares a metadata lookup for the region.
    if let Some(region) = config.region.clone().or_else(|| request::region_from_queue_url(&config.queue_url)) {
        loader = loader.region(Region::new(region));
    }
    if let Some(endpoint) = config.endpoint() {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk_config = loader.load().await;
    if sdk_config.region().is_none() {
        return Err(error(
            "no AWS region: set `region`, AWS_REGION or a profile's region, or use an AWS queue URL".into(),
        ));
    }
    Ok(SqsSink {
        client: Client::new(&sdk_config),
        queue_url: config.queue_url.clone(),
        fifo: config.is_fifo(),
        group: config.message_group_id,
        timeout: config.timeout,
    })
}

/// One message made ready for a request.
struct Prepared {
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    group_id: Option<String>,
    deduplication_id: Option<String>,
    size: usize,
}

impl SqsSink {
    fn prepare(&self, message: &RoutedMessage) -> Result<Prepared, SinkError> {
        let body = message.envelope();
        let pairs = request::attributes(message);
        let size = request::payload_size(&body, &pairs);
        let mut attributes = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                // Only a missing data type fails this builder, and it is set above.
                .map_err(|e| SinkError::Failed(format!("cannot build attribute {name}: {e}")))?;
            attributes.insert(name.to_owned(), value);
        }
        let (group_id, deduplication_id) = if self.fifo {
            // The Signalbox message id de-duplicates: a message re-sent after a timeout
            // whose outcome was unknown is stored once.
            (Some(request::group_id(self.group, message).into_owned()), Some(message.message_id.as_str().to_owned()))
        } else {
            (None, None)
        };
        Ok(Prepared { body, attributes, group_id, deduplication_id, size })
    }

    /// Runs one SDK call, bounded by the timeout and with its failure classified. The SDK
    /// has the same operation timeout; this bound is the one the [`Sink`] contract relies
    /// on, whatever the SDK's configuration layering does.
    async fn call<T, E>(
        &self,
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, SinkError>
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(classify_sdk_error(&error)),
            Err(_) => Err(SinkError::Unavailable(format!(
                "SQS timed out: no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn send_one(&self, message: &RoutedMessage) -> Result<(), SinkError> {
        let prepared = self.prepare(message)?;
        let request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(prepared.body)
            .set_message_attributes(Some(prepared.attributes))
            .set_message_group_id(prepared.group_id)
            .set_message_deduplication_id(prepared.deduplication_id);
        self.call(request.send()).await.map(|_| ())
    }

    /// Sends `messages` one `SendMessage` at a time, stopping at the first failure; returns
    /// how many were delivered.
    async fn send_each(&self, messages: &[RoutedMessage]) -> (usize, Option<SinkError>) {
        for (index, message) in messages.iter().enumerate() {
            if let Err(error) = self.send_one(message).await {
                return (index, Some(error));
            }
        }
        (messages.len(), None)
    }

    /// Sends one chunk (≤ 10 messages, within the size limit) with `SendMessageBatch`;
    /// returns the delivered prefix and why the next message was not delivered.
    async fn send_chunk(&self, messages: &[RoutedMessage], prepared: Vec<Prepared>) -> (usize, Option<SinkError>) {
        if messages.len() == 1 {
            return self.send_each(messages).await;
        }
        let mut entries = Vec::with_capacity(prepared.len());
        for (index, prepared) in prepared.into_iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(prepared.body)
                .set_message_attributes(Some(prepared.attributes))
                .set_message_group_id(prepared.group_id)
                .set_message_deduplication_id(prepared.deduplication_id)
                .build();
            match entry {
                Ok(entry) => entries.push(entry),
                // Only a missing id or body fails this builder, and both are set above.
                Err(e) => return (0, Some(SinkError::Failed(format!("cannot build batch entry {index}: {e}")))),
            }
        }
        let request = self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries));
        match self.call(request.send()).await {
            Ok(output) => {
                let successful: Vec<&str> = output.successful().iter().map(|entry| entry.id()).collect();
                let failed: Vec<EntryFailure<'_>> = output
                    .failed()
                    .iter()
                    .map(|entry| EntryFailure {
                        id: entry.id(),
                        sender_fault: entry.sender_fault(),
                        code: entry.code(),
                        message: entry.message(),
                    })
                    .collect();
                classify::delivered_prefix(messages.len(), &successful, &failed)
            }
            // The whole call was refused and nothing in it was stored: a refusal aimed at one
            // message (too long, invalid contents) or at the batch's shape must not be
            // pinned on the chunk's first message, so send them one by one to find out.
            Err(SinkError::Rejected(_)) => self.send_each(messages).await,
            Err(error) => (0, Some(error)),
        }
    }
}

#[async_trait::async_trait]
impl Sink for SqsSink {
    async fn send(&self, message: &RoutedMessage) -> Result<Delivered, SinkError> {
        self.send_one(message).await.map(|()| Delivered::default())
    }

    async fn send_batch(&self, messages: &[RoutedMessage]) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let mut prepared = Vec::with_capacity(messages.len());
        for message in messages {
            match self.prepare(message) {
                Ok(p) => prepared.push(p),
                // Messages before this one can still go; it is reported as the failure.
                Err(error) => {
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        let sizes: Vec<usize> = prepared.iter().map(|p| p.size).collect();
        let mut prepared = prepared.into_iter();
        for range in request::batch_ranges(&sizes) {
            debug_assert!(range.len() <= MAX_BATCH_ENTRIES);
            let chunk: Vec<Prepared> = prepared.by_ref().take(range.len()).collect();
            let (delivered, error) = self.send_chunk(&messages[range.clone()], chunk).await;
            outcome.delivered.extend(std::iter::repeat_n(Delivered::default(), delivered));
            if let Some(error) = error {
                outcome.error = Some(error);
                return outcome;
            }
        }
        outcome
    }

    async fn check(&self) -> Result<(), SinkError> {
        let request =
            self.client.get_queue_attributes().queue_url(&self.queue_url).attribute_names(QueueAttributeName::QueueArn);
        self.call(request.send()).await.map(|_| ())
    }
}

/// Reduces an SDK error to what [`classify::classify`] needs.
fn classify_sdk_error<E>(error: &SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let detail = match error {
        // SQS's own explanation; the error chain would add a dump of the error document.
        SdkError::ServiceError(service) => service.err().message().unwrap_or("no message").to_owned(),
        _ => describe(error),
    };
    let answer = match error {
        // Identity (credentials) and endpoint resolution happen before transmission, so
        // their failures arrive here as dispatch failures too.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => Answer::NotReached,
        SdkError::TimeoutError(_) => Answer::TimedOut,
        SdkError::ServiceError(service) => {
            Answer::Answered { status: service.raw().status().as_u16(), code: service.err().code() }
        }
        SdkError::ResponseError(response) => Answer::Answered { status: response.raw().status().as_u16(), code: None },
        _ => Answer::Other,
    };
    classify::classify(answer, &detail)
}

/// The error and its causes, one line: `dispatch failure: io error: … Connection refused`.
/// Not the SDK's `DisplayErrorContext`, which appends a debug dump of the raw response
/// (headers, body) that has no place in a log line or `/ready`.
pub(super) fn describe(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Layers often repeat their source's text; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
