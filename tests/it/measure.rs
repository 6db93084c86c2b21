//! Throughput measurements shared by the sink tests (run them with `--ignored
//! --nocapture` in a release build; they print, they do not assert speed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use signalbox::sinks::{RoutedMessage, Sink};

/// Sends `messages` one after another, then prints the rate as `what`.
pub async fn one_at_a_time(what: &str, sink: &impl Sink, messages: &[RoutedMessage]) {
    let start = Instant::now();
    for m in messages {
        sink.send(m).await.unwrap();
    }
    report(what, messages.len(), start.elapsed());
}

/// Sends `messages` in `batch`-sized `send_batch` calls, then prints the rate as `what`.
pub async fn in_batches(what: &str, sink: &impl Sink, messages: &[RoutedMessage], batch: usize) {
    let start = Instant::now();
    for chunk in messages.chunks(batch) {
        assert!(sink.send_batch(chunk).await.error.is_none());
    }
    report(what, messages.len(), start.elapsed());
}

/// Sends `messages` split over `in_flight` concurrent senders, then prints the rate.
pub async fn in_flight<S: Sink>(what: &str, sink: &Arc<S>, messages: &[RoutedMessage], in_flight: usize) {
    let start = Instant::now();
    let tasks: Vec<_> = messages
        .chunks(messages.len().div_ceil(in_flight))
        .map(|chunk| {
            let (sink, chunk) = (sink.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for m in &chunk {
                    sink.send(m).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report(what, messages.len(), start.elapsed());
}

fn report(what: &str, count: usize, took: Duration) {
    println!("{what}: {count} messages in {took:.2?} = {:.0} msg/s", count as f64 / took.as_secs_f64());
}
