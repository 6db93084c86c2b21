//! Failures: attempts and dead letters, unconfigured sinks, undecodable values, and one
//! sink's outage next to a healthy sink.

use serde_json::Value;

use super::support::{Fixture, Mode, TestSink, UNBOUNDED, eventually, message};
use crate::sinks::outbox::store::{FILE_NAME, TABLE};

fn dead_letters(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("dead-letters.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_repeatedly_is_dead_lettered_after_max_attempts_then_the_next_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    sink.failing.lock().insert(r#"{"poison":true}"#.into());
    let poison = message("a", r#"{"poison":true}"#);
    let poison_id = poison.message_id.to_string();
    let next = message("a", r#"{"n":1}"#);
    let next_id = next.message_id.to_string();
    fx.outbox.append(poison).await.unwrap();
    fx.outbox.append(next).await.unwrap();
    fx.start(&[&sink]);
    eventually(10, "the next message delivered", || sink.delivered() == vec![next_id.clone()]).await;
    // max_attempts = 3: three sends, two retries between them.
    assert_eq!(sink.offered_count(&poison_id), 3);
    assert_eq!(fx.metric("signalbox_sink_retries_total", "a", None), 2.0);
    assert_eq!(fx.metric("signalbox_sink_messages_total", "a", Some("dead_lettered")), 1.0);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter["sink"], "a");
    assert_eq!(letter["attempts"], 3);
    assert!(letter["error"].as_str().unwrap().contains("500 internal error"), "{letter}");
    assert!(letter["deadLetteredAt"].as_str().unwrap().ends_with('Z'), "{letter}");
    assert_eq!(letter["message"]["messageId"], poison_id.as_str());
    assert_eq!(letter["message"]["body"], r#"{"poison":true}"#);
    eventually(5, "pending 0", || fx.outbox.pending() == 0).await;
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    sink.rejecting.lock().insert(r#"{"bad":true}"#.into());
    fx.start(&[&sink]);
    let bad = message("a", r#"{"bad":true}"#);
    let bad_id = bad.message_id.to_string();
    fx.outbox.append(message("a", r#"{"n":0}"#)).await.unwrap();
    fx.outbox.append(bad).await.unwrap();
    fx.outbox.append(message("a", r#"{"n":2}"#)).await.unwrap();
    eventually(10, "the others delivered", || sink.delivered().len() == 2).await;
    assert_eq!(sink.offered_count(&bad_id), 1);
    assert_eq!(fx.metric("signalbox_sink_retries_total", "a", None), 0.0);
    eventually(5, "counted", || fx.metric("signalbox_sink_messages_total", "a", Some("dead_lettered")) == 1.0).await;
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 1);
    assert!(letters[0]["error"].as_str().unwrap().starts_with("rejected"), "{}", letters[0]);
    assert_eq!(letters[0]["message"]["messageId"], bad_id.as_str());
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_sink_no_longer_configured_are_dead_lettered_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let mut gone = Vec::new();
    for n in 0..5 {
        let m = message("gone", &format!("{{\"n\":{n}}}"));
        gone.push(m.message_id.to_string());
        fx.outbox.append(m).await.unwrap();
    }
    fx.outbox.append(message("a", "{}")).await.unwrap();
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    fx.start(&[&sink]);
    eventually(10, "5 dead letters", || dead_letters(dir.path()).len() == 5).await;
    eventually(10, "a delivered", || sink.delivered().len() == 1).await;
    let letters = dead_letters(dir.path());
    let ids: Vec<&str> = letters.iter().map(|l| l["message"]["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, gone);
    assert!(letters.iter().all(|l| l["error"] == "sink no longer configured" && l["sink"] == "gone"));
    eventually(5, "pending 0", || fx.outbox.pending() == 0).await;
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sink_down_does_not_block_another() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    let down = TestSink::new("down", &fx.log, Mode::Down);
    let up = TestSink::new("up", &fx.log, Mode::Up);
    fx.start(&[&down, &up]);
    for n in 0..100 {
        fx.outbox.append(message("down", &format!("{{\"n\":{n}}}"))).await.unwrap();
        fx.outbox.append(message("up", &format!("{{\"n\":{n}}}"))).await.unwrap();
    }
    eventually(10, "up got everything", || up.delivered().len() == 100).await;
    assert!(down.delivered().is_empty());
    eventually(5, "only down's messages wait", || fx.outbox.pending() == 100).await;
    assert_eq!(fx.metric("signalbox_outbox_messages", "down", None), 100.0);
    down.set(Mode::Up);
    eventually(10, "down caught up", || down.delivered().len() == 100).await;
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_stored_value_is_dead_lettered_with_its_raw_text() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(("a", 0), b"not json".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let fx = Fixture::open(dir.path(), UNBOUNDED);
    assert_eq!(fx.outbox.pending(), 1);
    let after = message("a", "{}");
    let after_id = after.message_id.to_string();
    fx.outbox.append(after).await.unwrap();
    let sink = TestSink::new("a", &fx.log, Mode::Up);
    fx.start(&[&sink]);
    eventually(10, "the next delivered", || sink.delivered() == vec![after_id.clone()]).await;
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["raw"], "not json");
    assert!(letters[0]["message"].is_null());
    assert!(letters[0]["error"].as_str().unwrap().starts_with("undecodable"));
    fx.shutdown().await;
}
