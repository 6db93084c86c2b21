//! Publishes a simulated multi-stage job to `job:<id>` through `POST /api/publish`, every event
//! with `"retain": true`, following the conventions in `docs/jobs.md`.
//!
//! ```sh
//! cargo run --release -- serve --dev                       # in one shell
//! cargo run --example job_pipeline -- --dev --job 42        # in another
//! ```

#[allow(dead_code)] // each example uses its own part of the shared code
mod common;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use common::pipeline::{self, Ending, PipelineConfig};
use common::{DEFAULT_SERVER, Server, job_topic, out, random_job_id, require_credential};

/// Publish a simulated job (fetch → analyse → build → test → deploy) to Signalbox.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the Signalbox server.
    #[arg(long, env = "SIGNALBOX_URL", default_value = DEFAULT_SERVER)]
    server: String,
    /// Backend API key (one of the server's SIGNALBOX_API_KEYS); not needed with --dev.
    #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The server runs with `serve --dev`: no API key needed.
    #[arg(long)]
    dev: bool,
    /// Job id; events go to `job:<ID>` (default: a random id).
    #[arg(long = "job", value_name = "ID")]
    job: Option<String>,
    /// Pause between two events, in milliseconds.
    #[arg(long, default_value_t = 500)]
    delay_ms: u64,
    /// Make this stage fail midway (the job ends with `job_failed`).
    #[arg(long, value_name = "STAGE")]
    fail_at: Option<String>,
    /// Cancel the job midway through this stage (the job ends with `job_cancelled`).
    #[arg(long, value_name = "STAGE")]
    cancel_at: Option<String>,
}

async fn publish(args: Args) -> Result<()> {
    let config = PipelineConfig {
        server: Server::parse(&args.server)?,
        api_key: require_credential(args.api_key, args.dev, "an API key (--api-key or SIGNALBOX_API_KEY)")?,
        job: args.job.unwrap_or_else(random_job_id),
        delay: Duration::from_millis(args.delay_ms),
        ending: Ending::from_flags(args.fail_at, args.cancel_at)?,
        label: "pipeline".into(),
    };
    let dev = if config.api_key.is_none() { "--dev " } else { "" };
    out(format!("[pipeline] job {0}: watch it with `cargo run --example job_watcher -- {dev}--job {0}`", config.job));
    let published = pipeline::run(&config).await?;
    out(format!(
        "[pipeline] done: {} events on {}, offsets {}..={}, last {}",
        published.events,
        job_topic(&config.job),
        published.first_offset,
        published.last_offset,
        published.final_type
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match publish(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("[pipeline] FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}
