//! Runs the job pipeline and the job watcher together against a running server, then shows
//! what a late subscriber and the HTTP API see. See `docs/jobs.md`.
//!
//! ```sh
//! cargo run --release -- serve --dev                 # in one shell
//! cargo run --release --example job_demo             # in another
//! ```
//!
//! 1. The watcher subscribes to `job:<id>`; the pipeline starts publishing.
//! 2. After `--drop-after` events the watcher closes its connection, stays offline for
//!    `--offline-ms` while the pipeline goes on, then resumes with `since` and gets what it
//!    missed from history, with no gap and no duplicate.
//! 3. A second watcher subscribes after the job ended: the retained state tells it at once.
//! 4. `GET /api/topics/job:<id>` and `GET /api/topics/job:<id>/history` show state and history.

#[allow(dead_code)] // each example uses its own part of the shared code
mod common;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;
use tokio::sync::oneshot;

use common::pipeline::{self, Ending, PipelineConfig};
use common::watcher::{self, WatchConfig};
use common::{DEFAULT_SERVER, Server, api_call, describe, encode_path_segment, job_topic, out, random_job_id};

/// Publish a simulated job and watch it, with a reconnect and resume in the middle.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the Signalbox server.
    #[arg(long, env = "SIGNALBOX_URL", default_value = DEFAULT_SERVER)]
    server: String,
    /// Backend API key; leave out against a `serve --dev` server.
    #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Client JWT allowed to read `job:*`; leave out against a `serve --dev` server.
    #[arg(long, env = "SIGNALBOX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Job id (default: a random id).
    #[arg(long = "job", value_name = "ID")]
    job: Option<String>,
    /// Pause between two published events, in milliseconds.
    #[arg(long, default_value_t = 250)]
    delay_ms: u64,
    /// The watcher closes its connection after this many events.
    #[arg(long, default_value_t = 5)]
    drop_after: u64,
    /// How long the watcher stays offline, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    offline_ms: u64,
    /// Make this stage fail (the job ends with `job_failed`).
    #[arg(long, value_name = "STAGE")]
    fail_at: Option<String>,
}

async fn demo(args: Args) -> Result<()> {
    let server = Server::parse(&args.server)?;
    let client = common::http_client()?;
    common::check_health(&client, &server).await?;
    let job = args.job.unwrap_or_else(random_job_id);
    let topic = job_topic(&job);
    let api_key = args.api_key.filter(|k| !k.trim().is_empty());
    let token = args.token.filter(|t| !t.trim().is_empty());
    let watch = WatchConfig {
        server: server.clone(),
        token,
        job: job.clone(),
        drop_after: args.drop_after,
        drops: 1,
        offline: Duration::from_millis(args.offline_ms),
        only: Vec::new(),
        idle_timeout: Duration::from_secs(30),
        label: "watcher".into(),
    };
    let pipeline = PipelineConfig {
        server: server.clone(),
        api_key: api_key.clone(),
        job: job.clone(),
        delay: Duration::from_millis(args.delay_ms),
        ending: Ending::from_flags(args.fail_at, None)?,
        label: "pipeline".into(),
    };

    out(format!("== 1. watcher subscribes to {topic}, pipeline publishes (retain: true)"));
    let (ready_tx, ready_rx) = oneshot::channel();
    let watch_for_task = watch.clone();
    let mut watching = tokio::spawn(async move { watcher::run(&watch_for_task, Some(ready_tx)).await });
    tokio::select! {
        subscribed = ready_rx => subscribed.context("the watcher stopped before it subscribed")?,
        ended = &mut watching => {
            ended.context("the watcher task panicked")??;
            bail!("the watcher ended before it subscribed");
        }
    }
    let mut publishing = tokio::spawn(async move { pipeline::run(&pipeline).await });
    // Whichever ends first: a failing watcher stops the demo at once.
    let (published, outcome) = tokio::select! {
        published = &mut publishing => {
            let published = published.context("the pipeline task panicked")??;
            (published, watching.await.context("the watcher task panicked")??)
        }
        outcome = &mut watching => {
            let outcome = match outcome.context("the watcher task panicked")? {
                Ok(outcome) if !outcome.already_finished => outcome,
                Ok(_) => {
                    publishing.abort();
                    bail!("job {job} had already ended before this demo started; leave out --job to use a new one");
                }
                Err(error) => {
                    publishing.abort();
                    return Err(error);
                }
            };
            (publishing.await.context("the pipeline task panicked")??, outcome)
        }
    };
    if outcome.events != published.events {
        bail!("the pipeline published {} events but the watcher handled {}", published.events, outcome.events);
    }
    if outcome.final_event.get("offset").and_then(Value::as_u64) != Some(published.last_offset) {
        bail!(
            "the watcher ended on {} but the pipeline's last offset is {}",
            outcome.final_event,
            published.last_offset
        );
    }
    out(format!(
        "== watcher OK: {} events, {} replayed after {} resume(s), no gap, no duplicate, ended with {}",
        outcome.events, outcome.replayed, outcome.resumes, published.final_type
    ));
    if outcome.resumes == 0 {
        out("   (no resume happened: the job had fewer than --drop-after events)");
    }

    out("== 2. a late watcher subscribes after the job ended");
    let late = WatchConfig { drop_after: 0, drops: 0, label: "late watcher".into(), ..watch };
    let late_outcome = watcher::run(&late, None).await?;
    if !late_outcome.already_finished {
        bail!("the late watcher did not get the job's end from the retained state");
    }
    out(format!("== late watcher OK: the retained state says {}", describe(&late_outcome.final_event)));

    out("== 3. the HTTP API");
    let path = format!("/api/topics/{}", encode_path_segment(&topic));
    let info = api_call(client.get(server.http_url(&path)), api_key.as_deref()).await?;
    let state_type = info.pointer("/state/type").and_then(Value::as_str).unwrap_or("none");
    let epoch = info.get("epoch").and_then(Value::as_str).unwrap_or("?");
    out(format!("GET {path} -> offset {}, epoch {epoch}, state: {state_type}", info["offset"]));
    let history_path = format!("{path}/history?since=0&limit=100");
    let history = api_call(client.get(server.http_url(&history_path)), api_key.as_deref()).await?;
    let events = history.get("events").and_then(Value::as_array).context("history without `events`")?;
    let offsets: Vec<u64> = events.iter().filter_map(|e| e.get("offset").and_then(Value::as_u64)).collect();
    out(format!(
        "GET {history_path} -> {} events kept, offsets {}..={}",
        events.len(),
        offsets.first().copied().unwrap_or_default(),
        offsets.last().copied().unwrap_or_default()
    ));
    out(format!("== demo OK (job {job})"));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match demo(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("job_demo FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}
