//! The real `signalbox` binary: exit codes, the ready line, SIGTERM, `token`,
//! `default-config`, `check-config`, and the pointer left where `bench` was.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn signalbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalbox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGNALBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn refuses_to_start_without_credentials_with_exit_2() {
    let out = signalbox().args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIGNALBOX_JWT_SECRET") && err.contains("SIGNALBOX_API_KEYS"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_configuration_exits_2_naming_the_setting() {
    let out = signalbox().args(["serve", "--dev", "--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));

    let out = signalbox().args(["serve", "--dev"]).env("SIGNALBOX_LOG_FORMAT", "xml").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGNALBOX_LOG_FORMAT"));

    let file = std::env::temp_dir().join(format!("signalbox-bad-{}.toml", std::process::id()));
    std::fs::write(&file, "[limits]\nmax_conections = 5\n").unwrap();
    let out = signalbox().args(["serve", "--dev", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));
    let out = signalbox().args(["check-config", "--dev"]).env("SIGNALBOX_CONFIG", &file).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "SIGNALBOX_CONFIG is read too");
    let out = signalbox().args(["--dev", "--config"]).arg(&file).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "flags before the subcommand work too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));

    let out = signalbox().args(["serve"]).env("SIGNALBOX_JWT_PUBLIC_KEY_FILE", "/nonexistent.pem").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGNALBOX_JWT_PUBLIC_KEY_FILE"));
}

#[test]
fn default_config_is_valid_and_check_config_accepts_it() {
    let out = signalbox().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let file = std::env::temp_dir().join(format!("signalbox-default-{}.toml", std::process::id()));
    std::fs::write(&file, &out.stdout).unwrap();
    let out = signalbox().args(["check-config", "--dev", "--config"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_config_describes_the_agents_example_and_names_a_bad_route() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../examples/agents.toml")
        .replace("./signalbox-data", &dir.path().join("data").display().to_string());
    let file = dir.path().join("agents.toml");
    std::fs::write(&file, &example).unwrap();
    let out = signalbox().args(["check-config", "--dev", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "sink dev-agents (sqs) -> http://127.0.0.1:5000/123456789012/dev-agents",
        "sink pipeline (http)",
        "sink chat (redis_stream) -> redis://127.0.0.1:6379",
        r#"route "forward" when type = "dev" -> dev-agents"#,
        r#"route "cancel_job" -> pipeline"#,
        "outbox in",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    // The queue URLs come from the environment, as the agent platform's deployments set them.
    let queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/dev-agents";
    let out = signalbox()
        .args(["check-config", "--dev", "--config"])
        .arg(&file)
        .env("SQS_QUEUE_URL_DEV", queue)
        .env("SQS_QUEUE_URL_OPS", "https://sqs.eu-west-1.amazonaws.com/123456789012/ops-agents.fifo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("sink dev-agents (sqs) -> {queue}")), "{stdout}");
    assert!(stdout.contains("sink pm-agents (sqs) -> http://127.0.0.1:5000/123456789012/pm-agents"), "{stdout}");
    assert!(!stdout.contains(&format!("{queue} via")), "an AWS queue uses the region's endpoint: {stdout}");

    // The whole seed-style environment of an ECS task definition, plus the rule's names
    // for settings the seed never had: all resolved, the rule's names winning where both.
    let out = signalbox()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("SQS_QUEUE_URL_PM", "https://sqs.us-east-1.amazonaws.com/123456789/pm-queue")
        .env("SQS_QUEUE_URL_DEV", "https://sqs.us-east-1.amazonaws.com/123456789/dev-queue")
        .env("SQS_QUEUE_URL_QA", "https://sqs.us-east-1.amazonaws.com/123456789/qa-queue")
        .env("SQS_QUEUE_URL_OPS", "https://sqs.us-east-1.amazonaws.com/123456789/ops-queue.fifo")
        .env("AWS_REGION", "us-east-1")
        .env("DYNAMODB_TABLE_NAME", "agenticai-data")
        .env("WEBSOCKET_HOST", "0.0.0.0")
        .env("WEBSOCKET_PORT", "8080")
        .env("SIGNALBOX_JWT_SECRET", "a-secret-of-at-least-16-bytes")
        .env("SIGNALBOX_API_KEYS", "key-one-0123456789")
        .env("SIGNALBOX_BROKER", "redis://:hunter2-password@cache.internal:6379")
        .env("SIGNALBOX_SHUTDOWN__GRACE_PERIOD", "25s")
        .env("SIGNALBOX_SINKS__PIPELINE__URL", "https://jobs.internal/ws-events")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "listen 0.0.0.0:8080",
        "broker redis://:***@cache.internal:6379",
        "shutdown grace 25s",
        "sink pm-agents (sqs) -> https://sqs.us-east-1.amazonaws.com/123456789/pm-queue\n",
        "sink dev-agents (sqs) -> https://sqs.us-east-1.amazonaws.com/123456789/dev-queue\n",
        "sink qa-agents (sqs) -> https://sqs.us-east-1.amazonaws.com/123456789/qa-queue\n",
        "sink ops-agents (sqs) -> https://sqs.us-east-1.amazonaws.com/123456789/ops-queue.fifo\n",
        "sink pipeline (http) -> https://jobs.internal/ws-events",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(!stdout.contains("hunter2"), "the broker password is never printed: {stdout}");
    let out = signalbox()
        .args(["check-config", "--dev", "--config"])
        .arg(&file)
        .env("SIGNALBOX_LIMITS__RATE_PER_SECONDS", "10")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a misspelt setting is an error: {stderr}");
    assert!(stderr.contains("SIGNALBOX_LIMITS__RATE_PER_SECONDS"), "{stderr}");

    // Aliases are listed; one that shadows a built-in action is refused.
    std::fs::write(&file, format!("{example}\n[actions]\nsubscribeToDeals = \"subscribe\"\n")).unwrap();
    let out = signalbox().args(["check-config", "--dev", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("action alias \"subscribeToDeals\" -> subscribe"), "{stdout}");

    // API Gateway compatibility: the access key ids (never a secret) and the webhooks.
    let out = signalbox()
        .args(["check-config", "--dev", "--config"])
        .arg(&file)
        .env("SIGNALBOX_APIGW_CREDENTIALS", "AKIDOLD:old-secret-1,AKIDNEW:new-secret-2")
        .env("SIGNALBOX_APIGW__CONNECT_URL", "https://hooks.internal/ws/connect")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SigV4 (execute-api) by access key AKIDOLD, AKIDNEW"), "{stdout}");
    assert!(stdout.contains("apigw $connect webhook -> https://hooks.internal/ws/connect"), "{stdout}");
    assert!(!stdout.contains("secret-1") && !stdout.contains("secret-2"), "secrets are never printed: {stdout}");

    let cases = [
        ("[actions]\npublish = \"subscribe\"\n", "actions.publish"),
        ("[[routes]]\naction = \"forward\"\nsink = \"nowhere\"\n", "routes[0].sink"),
        (
            "[[routes]]\naction = \"subscribe\"\nsink = \"x\"\n[sinks.x]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n",
            "built-in",
        ),
        ("[sinks.q]\nkind = \"sqs\"\nqueue_url = \"not a url\"\n", "sinks.q.queue_url"),
        ("[sinks.q]\nkind = \"kafka\"\n", "kafka"),
        ("[sinks.r]\nkind = \"redis_stream\"\nurl = \"redis://127.0.0.1:6379\"\n", "stream"),
        ("[apigw]\ncredentials = [\"no-colon\"]\n", "apigw.credentials"),
        ("[apigw]\nconnect_url = \"ftp://x\"\n", "apigw.connect_url"),
        ("[apigw]\nmax_post_size = 0\n", "apigw.max_post_size"),
    ];
    for (text, named) in cases {
        std::fs::write(&file, text).unwrap();
        let out = signalbox().args(["check-config", "--dev", "--config"]).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(named), "{text}: expected {named:?} in {stderr}");
    }
}

#[tokio::test]
async fn serve_prints_ready_line_serves_minted_tokens_and_exits_0_on_sigterm() {
    let mut child = signalbox()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SIGNALBOX_JWT_SECRET", SECRET)
        .env("SIGNALBOX_API_KEYS", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("signalbox listening on ")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .to_owned();
    let port: u16 = addr.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
    assert_ne!(port, 0, "the real port is printed");

    let token = signalbox()
        .args(["token", "--sub", "cli-user", "--ttl", "10m", "--topics", "job:*,project:42", "--claim", "role=viewer"])
        .env("SIGNALBOX_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let mut c = Client::connect(&format!("ws://{addr}/ws?token={token}")).await;
    assert_eq!(c.connected["userId"], "cli-user");
    c.subscribe("job:cli").await;
    let api = Api { base: format!("http://{addr}"), client: reqwest::Client::new(), key: Some(API_KEY.into()) };
    api.publish("job:cli", json!({"type": "progress_update", "progress": 50})).await;
    assert_eq!(c.recv().await["progress"], 50);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut before = Vec::new();
    assert_eq!(c.expect_close(&mut before).await, 1001);
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(exit.code(), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.is_empty(), "exactly one line on stdout, got more: {rest:?}");
    let _ = Duration::ZERO;
}

#[test]
fn version_names_the_git_revision_it_was_built_from() {
    let out = signalbox().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let revision = line
        .trim()
        .strip_prefix(concat!("signalbox ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        revision == "unknown" || (revision.len() == 12 && revision.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line:?}"
    );
    // Built from this checkout: the revision is its HEAD's.
    if let Ok(head) = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output()
        && head.status.success()
        && std::env::var("SIGNALBOX_GIT_REV").is_err()
    {
        assert_eq!(revision, String::from_utf8_lossy(&head.stdout).trim(), "{line:?}");
    }
}

#[test]
fn token_needs_a_secret() {
    let out = signalbox().args(["token", "--sub", "u"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGNALBOX_JWT_SECRET"));
}

/// The load generator left the server binary (crates/signalbox-bench); the old subcommand
/// says where it went, with any flags after it, and is not in `--help`.
#[test]
fn bench_points_at_signalbox_bench_with_exit_2() {
    for args in [&["bench"][..], &["bench", "--scenario", "fanout", "--server", "127.0.0.1:8080", "--dev"]] {
        let out = signalbox().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("`signalbox-bench`") && err.lines().count() == 1, "{err}");
        assert!(out.stdout.is_empty());
    }
    let help = signalbox().arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("bench"));
}

#[test]
fn json_logs_on_stderr_carry_connection_fields() {
    // Covered through the running binary: start, connect, stop, read stderr.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut child = signalbox()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().trim_start_matches("signalbox listening on ").to_owned();
    let id = rt.block_on(async {
        let c = Client::connect(&format!("ws://{addr}/ws")).await;
        c.id()
    });
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"].as_str().unwrap_or("").contains("DEVELOPMENT MODE")), "loud dev warning");
    let connected = lines.iter().find(|l| l["message"] == "connected").expect("a connected log line");
    assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
    assert_eq!(connected["userId"], "anonymous");
}
