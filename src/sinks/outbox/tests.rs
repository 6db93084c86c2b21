//! The outbox against an in-memory sink: durability before `accepted`, order per sink,
//! outages, restarts and the bound. Failures and dead letters are in `failures`.

mod failures;
mod support;

use std::sync::Arc;
use std::time::Duration;

use self::support::{
    Event, Fixture, Mode, TestSink, UNBOUNDED, append_concurrently, eventually, is_subsequence, message,
};
use super::{OutboxError, OutboxLimits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_is_called_before_the_drainer_sees_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::with_slow_accepted(dir.path(), UNBOUNDED, Duration::from_micros(500));
    let sink = TestSink::replying("a", &fx.log);
    fx.start(&[&sink]);
    let m = message("a", "{}");
    let id = m.message_id.to_string();
    fx.outbox.append(m).await.unwrap();
    // When append returns, the client has been told.
    assert!(fx.accepted().contains(&id));
    append_concurrently(&fx.outbox, "a", 16, 200).await;
    eventually(10, "201 delivered", || sink.delivered().len() == 201).await;
    eventually(10, "201 relayed", || fx.log.lock().iter().filter(|e| matches!(e, Event::Relayed(_))).count() == 201)
        .await;
    let log = fx.log.lock().clone();
    let at = |wanted: &dyn Fn(&Event) -> bool| log.iter().position(wanted).unwrap();
    for id in sink.delivered() {
        let accepted = at(&|e| *e == Event::Accepted(id.clone()));
        let sent = at(&|e| matches!(e, Event::Sent(_, i) if *i == id));
        let relayed = at(&|e| *e == Event::Relayed(id.clone()));
        assert!(accepted < sent && sent < relayed, "{id}: accepted {accepted}, sent {sent}, relayed {relayed}");
    }
    assert_eq!(fx.metric("signalbox_sink_messages_total", "a", Some("delivered")), 201.0);
    eventually(5, "pending 0", || fx.outbox.pending() == 0).await;
    eventually(5, "gauge 0", || fx.metric("signalbox_outbox_messages", "a", None) == 0.0).await;
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_order_matches_append_order_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let mut appended = Vec::new();
    for n in 0..50 {
        let m = message("a", &format!(r#"{{"n":{n}}}"#));
        appended.push(m.message_id.to_string());
        fx.outbox.append(m).await.unwrap();
    }
    assert_eq!(fx.accepted(), appended);
    // Concurrent appenders: each one's own messages are accepted in its order.
    let per_task = append_concurrently(&fx.outbox, "b", 8, 400).await;
    let accepted = fx.accepted();
    for ids in &per_task {
        assert!(is_subsequence(ids, &accepted));
    }
    assert_eq!(fx.outbox.pending(), 450);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_preserved_per_sink_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    fx.start(&[&sink]);
    let mut appended = Vec::new();
    for n in 0..150 {
        let m = message("a", &format!(r#"{{"n":{n}}}"#));
        appended.push(m.message_id.to_string());
        fx.outbox.append(m).await.unwrap();
    }
    let per_task = append_concurrently(&fx.outbox, "a", 32, 1000).await;
    eventually(20, "1150 delivered", || sink.delivered().len() == 1150).await;
    let delivered = sink.delivered();
    // Delivery order is exactly the order of durability (accepted), which keeps each
    // appender's order.
    assert_eq!(delivered, fx.accepted());
    assert_eq!(delivered[..150], appended[..]);
    for ids in &per_task {
        assert!(is_subsequence(ids, &delivered));
    }
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_10000_messages_delivers_all_in_order_without_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let sink = TestSink::new("a", &fx.log, Mode::Down);
    fx.start(&[&sink]);
    let per_task = append_concurrently(&fx.outbox, "a", 100, 10_000).await;
    assert_eq!(fx.outbox.pending(), 10_000);
    eventually(10, "retries during the outage", || fx.metric("signalbox_sink_retries_total", "a", None) >= 3.0).await;
    assert_eq!(fx.metric("signalbox_outbox_messages", "a", None), 10_000.0);
    assert_eq!(fx.metric("signalbox_sink_up", "a", None), 0.0);
    sink.set(Mode::Up);
    eventually(60, "10000 delivered", || sink.delivered().len() == 10_000).await;
    let delivered = sink.delivered();
    assert_eq!(delivered, fx.accepted());
    for ids in &per_task {
        assert!(is_subsequence(ids, &delivered));
    }
    eventually(10, "pending 0", || fx.outbox.pending() == 0).await;
    assert_eq!(fx.metric("signalbox_sink_messages_total", "a", Some("dead_lettered")), 0.0);
    assert_eq!(fx.metric("signalbox_sink_messages_total", "a", Some("delivered")), 10_000.0);
    assert!(!dir.path().join("dead-letters.jsonl").exists());
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_everything_exactly_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = Fixture::open(dir.path(), UNBOUNDED);
    let down = TestSink::new("a", &first.log, Mode::Down);
    first.start(&[&down]);
    append_concurrently(&first.outbox, "a", 20, 300).await;
    let accepted = first.accepted();
    eventually(10, "an attempt during the outage", || !down.offered.lock().is_empty()).await;
    first.shutdown().await;

    let second = Fixture::open(dir.path(), UNBOUNDED);
    assert_eq!(second.outbox.pending(), 300);
    // A message appended after the restart goes after the recovered ones.
    let late = message("a", r#"{"late":true}"#);
    let late_id = late.message_id.to_string();
    second.outbox.append(late).await.unwrap();
    // Recovered messages were accepted before the restart and are not accepted again.
    assert_eq!(second.accepted(), vec![late_id.clone()]);
    let up = TestSink::new("a", &second.log, Mode::Up);
    second.start(&[&up]);
    eventually(20, "301 delivered", || up.delivered().len() == 301).await;
    let mut expected = accepted;
    expected.push(late_id);
    assert_eq!(up.delivered(), expected);
    eventually(5, "pending 0", || second.outbox.pending() == 0).await;
    second.shutdown().await;

    // Deletes were persisted at close: a third start has nothing to redeliver.
    let third = Fixture::open(dir.path(), UNBOUNDED);
    assert_eq!(third.outbox.pending(), 0);
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_outbox_without_close_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    append_concurrently(&fx.outbox, "a", 4, 40).await;
    let accepted = fx.accepted();
    drop(fx);
    // The writer thread releases the file shortly after the last handle is gone.
    let mut reopened = None;
    eventually(10, "the store reopens", || {
        reopened =
            super::Outbox::open(dir.path(), UNBOUNDED, Arc::new(support::Replies(Default::default(), Duration::ZERO)))
                .ok();
        reopened.is_some()
    })
    .await;
    let outbox = reopened.unwrap();
    assert_eq!(outbox.pending(), 40);
    outbox.close().await;
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    fx.start(&[&sink]);
    eventually(10, "40 delivered", || sink.delivered().len() == 40).await;
    assert_eq!(sink.delivered(), accepted);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_by_count_refuses_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), OutboxLimits { max_messages: 5, max_bytes: u64::MAX });
    for n in 0..5 {
        fx.outbox.append(message("a", &format!("{{\"n\":{n}}}"))).await.unwrap();
    }
    let refused = message("a", "{}");
    let refused_id = refused.message_id.to_string();
    let err = fx.outbox.append(refused).await.unwrap_err();
    assert!(matches!(err, OutboxError::Full { messages: 5, .. }), "{err:?}");
    assert!(!fx.accepted().contains(&refused_id), "a refused message is never accepted");
    assert_eq!(fx.outbox.pending(), 5);
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    fx.start(&[&sink]);
    eventually(10, "drained", || fx.outbox.pending() == 0).await;
    // Room is given back once the deletes are committed.
    eventually(10, "room again", || fx.outbox.usage_for_tests() == (0, 0)).await;
    fx.outbox.append(message("a", "{}")).await.unwrap();
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_by_bytes_counts_the_stored_json() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&message("a", "{}")).unwrap().len() as u64;
    let fx = Fixture::open(dir.path(), OutboxLimits { max_messages: u64::MAX, max_bytes: 2 * one + one / 2 });
    fx.outbox.append(message("a", "{}")).await.unwrap();
    fx.outbox.append(message("a", "{}")).await.unwrap();
    let err = fx.outbox.append(message("a", "{}")).await.unwrap_err();
    assert!(matches!(err, OutboxError::Full { messages: 2, bytes } if bytes == 2 * one), "{err:?}");
    // A message larger than the whole bound can never fit.
    let big = message("b", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(4 * one as usize)));
    assert!(matches!(fx.outbox.append(big).await, Err(OutboxError::Full { .. })));
    assert_eq!(fx.outbox.pending(), 2);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_outbox_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let outbox = fx.outbox.clone();
    fx.shutdown().await;
    assert_eq!(outbox.append(message("a", "{}")).await, Err(OutboxError::Closed));
}
