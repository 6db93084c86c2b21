//! `examples/agents.toml` end to end: the shipped example, pointed at a real moto_server
//! (four SQS queues, one FIFO), a real webhook and a real redis-server, behind a real
//! gateway with its outbox. Needs the AWS test environment that `scripts/test` exports.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use crate::servers::moto::Moto;
use crate::servers::redis::{Redis, stream_entries};
use crate::servers::webhook::{Behaviour, Webhook};
use crate::support::{TestGateway, metric};

const EXAMPLE: &str = include_str!("../../examples/agents.toml");

fn require_aws_test_environment() {
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        assert_eq!(
            std::env::var(name).ok().as_deref(),
            Some(value),
            "the gateway's SQS sinks use the standard credential chain: run with \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
             AWS_EC2_METADATA_DISABLED=true (scripts/test sets them)"
        );
    }
}

/// The example's settings with its local stand-ins replaced by the test's servers.
fn example_config(moto: &Moto, webhook: &Webhook, redis: &Redis, data_dir: &std::path::Path) -> signalbox::Config {
    let text = EXAMPLE
        .replace("http://127.0.0.1:5000", &moto.endpoint())
        .replace("http://127.0.0.1:9000/ws-events", &webhook.url())
        .replace("redis://127.0.0.1:6379", &redis.url())
        .replace("./signalbox-data", &data_dir.display().to_string());
    signalbox::Config::from_toml(&text).unwrap()
}

async fn receive_one(admin: &aws_sdk_sqs::Client, queue_url: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = admin
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(message) = answer.messages().first() {
            assert_eq!(answer.messages().len(), 1, "exactly one message in {queue_url}");
            return serde_json::from_str(message.body().unwrap()).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived in {queue_url}");
    }
}

#[tokio::test]
async fn the_agents_example_routes_each_action_to_its_backend() {
    require_aws_test_environment();
    let (moto, webhook, redis) = (Moto::start(), Webhook::start().await, Redis::start());
    let data = tempfile::tempdir().unwrap();
    let admin = moto.client().await;
    let mut queues = std::collections::BTreeMap::new();
    for name in ["pm-agents", "dev-agents", "qa-agents", "ops-agents.fifo"] {
        let mut request = admin.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let url = request.send().await.unwrap().queue_url().unwrap().to_owned();
        queues.insert(name.trim_end_matches(".fifo").trim_end_matches("-agents").to_owned(), url);
    }
    webhook.set(Behaviour::Json(r#"{"status":"cancelling","job_id":"job_1"}"#));
    let example = example_config(&moto, &webhook, &redis, data.path());
    let gw = TestGateway::spawn_with(|c| {
        c.sinks = example.sinks.clone();
        c.routes = example.routes.clone();
        c.routing = example.routing.clone();
        c.storage = example.storage.clone();
    })
    .await;
    let mut client = gw.connect("alice", json!({})).await;

    for kind in ["pm", "dev", "qa", "ops"] {
        let reply = client.request(json!({"action": "forward", "type": kind, "text": format!("to {kind}")})).await;
        assert_eq!(reply["type"], "accepted", "{reply}");
        let envelope = receive_one(&admin, &queues[kind]).await;
        assert_eq!(envelope["message"]["type"], kind, "{envelope}");
        assert_eq!(envelope["messageId"], reply["messageId"]);
        assert_eq!(envelope["userId"], "alice");
    }

    // cancel_job: the webhook's JSON answer follows `accepted`, as one frame, unchanged.
    let reply = client.request(json!({"action": "cancel_job", "job_id": "job_1", "requestId": "c1"})).await;
    assert_eq!(reply["type"], "accepted", "{reply}");
    assert_eq!(reply["requestId"], "c1");
    assert_eq!(client.recv().await, json!({"status": "cancelling", "job_id": "job_1"}));
    let event = webhook.wait_for(1).await[0].json();
    assert_eq!(event["requestContext"]["routeKey"], "cancel_job");
    assert_eq!(event["requestContext"]["connectionId"], client.id());
    assert_eq!(event["requestContext"]["authorizer"]["principalId"], "alice");
    assert_eq!(event["requestContext"]["stage"], "production");
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["job_id"], "job_1");

    for action in ["sendMessage", "notificationAck"] {
        let reply = client.request(json!({"action": action, "text": "hi"})).await;
        assert_eq!(reply["type"], "accepted", "{reply}");
    }
    let start = tokio::time::Instant::now();
    let entries = loop {
        let entries = stream_entries(&redis.url(), "chat-in").await;
        if entries.len() >= 2 || start.elapsed() > Duration::from_secs(20) {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let actions: Vec<&str> = entries.iter().map(|(_, f)| f["action"].as_str()).collect();
    assert_eq!(actions, ["sendMessage", "notificationAck"]);

    let reply = client.request(json!({"action": "forward", "type": "sales"})).await;
    assert_eq!(reply["code"], "UNKNOWN_ACTION", "{reply}");

    let (status, ready) = gw.http().get("/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    assert_eq!(ready["sinks"].as_object().unwrap().len(), 6, "{ready}");
    let metrics = gw.http().get("/metrics").await.1.as_str().unwrap().to_owned();
    for (sink, queued) in [("dev-agents", 1.0), ("pipeline", 1.0), ("chat", 2.0)] {
        let series = format!(r#"signalbox_sink_messages_total{{sink="{sink}",outcome="queued"}}"#);
        assert_eq!(metric(&metrics, &series), queued, "{series}");
    }
}
