//! A simulated job pipeline that reports its progress through `POST /api/publish`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{PROGRESS_UPDATE, STAGE_COMPLETE, Server, api_call, describe, job_topic, out};

/// The stages of the simulated job, in order.
pub const STAGES: [&str; 5] = ["fetch", "analyse", "build", "test", "deploy"];

/// `progress_update`s published inside each stage, before its `stage_complete`.
const STEPS_PER_STAGE: usize = 3;

/// How the simulated job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every stage runs; the last event is `job_complete`.
    Complete,
    /// The named stage fails midway; the last event is `job_failed`.
    FailAt(String),
    /// The job is cancelled midway through the named stage; the last event is `job_cancelled`.
    CancelAt(String),
}

impl Ending {
    /// Builds the ending from the `--fail-at` / `--cancel-at` flags.
    pub fn from_flags(fail_at: Option<String>, cancel_at: Option<String>) -> Result<Self> {
        let ending = match (fail_at, cancel_at) {
            (Some(_), Some(_)) => bail!("give at most one of --fail-at and --cancel-at"),
            (Some(stage), None) => Self::FailAt(stage),
            (None, Some(stage)) => Self::CancelAt(stage),
            (None, None) => Self::Complete,
        };
        if let Self::FailAt(stage) | Self::CancelAt(stage) = &ending
            && !STAGES.contains(&stage.as_str())
        {
            bail!("unknown stage {stage:?}: the stages are {}", STAGES.join(", "));
        }
        Ok(ending)
    }

    fn stops_in(&self, stage: &str) -> bool {
        matches!(self, Self::FailAt(s) | Self::CancelAt(s) if s == stage)
    }
}

/// What the pipeline needs to run.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The Signalbox server.
    pub server: Server,
    /// The backend API key; `None` against a `--dev` server.
    pub api_key: Option<String>,
    /// The job id; events go to `job:<job>`.
    pub job: String,
    /// Pause between two events.
    pub delay: Duration,
    /// How the job ends.
    pub ending: Ending,
    /// Prefix of each printed line.
    pub label: String,
}

/// What a finished pipeline published.
#[derive(Debug, Clone)]
pub struct Published {
    /// Number of events published.
    pub events: u64,
    /// Offset of the first and last event.
    pub first_offset: u64,
    /// Offset of the last event.
    pub last_offset: u64,
    /// `type` of the last event.
    pub final_type: String,
}

/// The results a stage reports in its `stage_complete`.
fn stage_results(stage: &str) -> Value {
    match stage {
        "fetch" => json!({"commit": "3f9c2ab", "files": 1240}),
        "analyse" => json!({"warnings": 3, "errors": 0}),
        "build" => json!({"artifact": "app-x86_64.tar.gz", "size_bytes": 18_342_112}),
        "test" => json!({"passed": 412, "failed": 0, "skipped": 3}),
        "deploy" => json!({"environment": "staging", "url": "https://staging.example.com"}),
        _ => json!({}),
    }
}

fn step_message(stage: &str, step: usize) -> String {
    let what = match stage {
        "fetch" => ["Cloning repository", "Checking out 3f9c2ab", "Fetching submodules"],
        "analyse" => ["Parsing sources", "Running linters", "Checking licences"],
        "build" => ["Resolving dependencies", "Compiling 120/310 units", "Linking"],
        "test" => ["Running unit tests", "Running integration tests", "Collecting coverage"],
        "deploy" => ["Uploading artifact", "Rolling out to staging", "Running smoke tests"],
        _ => ["Working", "Working", "Working"],
    };
    what.get(step).copied().unwrap_or("Working").to_owned()
}

/// Every event of the simulated job, in publishing order.
pub fn job_events(ending: &Ending, delay: Duration) -> Vec<Value> {
    let total_steps = STAGES.len() * STEPS_PER_STAGE;
    // Events per stage: the progress updates plus the stage_complete; then one job_complete.
    let total_events = STAGES.len() * (STEPS_PER_STAGE + 1) + 1;
    let mut events = Vec::with_capacity(total_events);
    for (stage_index, stage) in STAGES.iter().enumerate() {
        for step in 0..STEPS_PER_STAGE {
            let done_steps = stage_index * STEPS_PER_STAGE + step;
            let remaining_events = total_events.saturating_sub(events.len() + 1) as u128;
            let eta = (remaining_events * delay.as_millis()).div_ceil(1000);
            events.push(json!({
                "type": PROGRESS_UPDATE,
                "stage": stage,
                "progress": done_steps * 100 / total_steps,
                "message": step_message(stage, step),
                "estimated_seconds_remaining": eta,
            }));
            if step == 1 && ending.stops_in(stage) {
                let last = match ending {
                    Ending::FailAt(_) => json!({
                        "type": "job_failed",
                        "error": format!("stage {stage} failed: simulated failure (--fail-at {stage})"),
                    }),
                    _ => json!({"type": "job_cancelled"}),
                };
                events.push(last);
                return events;
            }
        }
        events.push(json!({"type": STAGE_COMPLETE, "stage": stage, "results": stage_results(stage)}));
    }
    let elapsed = (events.len() as u128 * delay.as_millis()).div_ceil(1000);
    events.push(json!({
        "type": "job_complete",
        "results": {
            "artifact": "app-x86_64.tar.gz",
            "url": "https://staging.example.com",
            "duration_seconds": elapsed,
        },
    }));
    events
}

/// Publishes one event to `topic` with `"retain": true`; returns the offset it was given.
pub async fn publish_retained(
    client: &reqwest::Client,
    server: &Server,
    api_key: Option<&str>,
    topic: &str,
    event: &Value,
) -> Result<u64> {
    let body = json!({"topic": topic, "event": event, "retain": true});
    let answer = api_call(client.post(server.http_url("/api/publish")).json(&body), api_key).await?;
    answer
        .get("offset")
        .and_then(Value::as_u64)
        .with_context(|| format!("POST /api/publish answered without an offset: {answer}"))
}

/// Runs the simulated job: publishes each event, then waits `delay`.
pub async fn run(config: &PipelineConfig) -> Result<Published> {
    let client = super::http_client()?;
    let topic = job_topic(&config.job);
    let events = job_events(&config.ending, config.delay);
    let label = &config.label;
    out(format!(
        "[{label}] publishing {} events to {topic} with retain: true, one every {} ms",
        events.len(),
        config.delay.as_millis()
    ));
    let mut published = Published { events: 0, first_offset: 0, last_offset: 0, final_type: String::new() };
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(config.delay).await;
        }
        let offset = publish_retained(&client, &config.server, config.api_key.as_deref(), &topic, event)
            .await
            .with_context(|| format!("publishing event {} of {} to {topic}", index + 1, events.len()))?;
        let mut shown = event.clone();
        if let Some(object) = shown.as_object_mut() {
            object.insert("offset".into(), offset.into());
        }
        out(format!("[{label}] {topic} {}", describe(&shown)));
        if published.events == 0 {
            published.first_offset = offset;
        }
        published.events += 1;
        published.last_offset = offset;
        published.final_type = event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_job_ends_with_job_complete() {
        let events = job_events(&Ending::Complete, Duration::from_millis(500));
        assert_eq!(events.len(), 21);
        assert_eq!(events[0]["progress"], 0);
        assert_eq!(events[20]["type"], "job_complete");
        assert_eq!(events[19]["estimated_seconds_remaining"], Value::Null);
        assert_eq!(events[18]["estimated_seconds_remaining"], 1);
    }

    #[test]
    fn a_failing_job_stops_in_its_stage() {
        let events = job_events(&Ending::FailAt("build".into()), Duration::ZERO);
        assert_eq!(events.last().unwrap()["type"], "job_failed");
        assert!(events.iter().all(|e| e["stage"] != "test"));
    }
}
