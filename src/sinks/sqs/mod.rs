//! The `sqs` sink: AWS SQS queues, standard and FIFO, through `aws-sdk-sqs` with the
//! standard credential chain (environment, profile, ECS task role, instance metadata).

mod config;

pub use config::{MessageGroup, SqsConfig};
