//! Follows one job over the WebSocket, drops its connection on purpose after a few events,
//! then reconnects and resumes with `since`, checking that no event is lost or repeated.
//! See `docs/jobs.md`.
//!
//! ```sh
//! cargo run --release -- serve --dev                                # in one shell
//! cargo run --example job_watcher -- --dev --job 42                 # in another
//! cargo run --example job_pipeline -- --dev --job 42                # in a third
//! ```
//!
//! Exit code 0 once the job is over (`job_complete`, `job_failed` or `job_cancelled`, live or
//! from the retained state); 1 on a gap, a duplicate, `recovered: false`, or any other error.

#[allow(dead_code)] // each example uses its own part of the shared code
mod common;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use common::watcher::{self, Outcome, WatchConfig};
use common::{DEFAULT_SERVER, Server, describe, out, require_credential};

/// Watch a job on Signalbox and demonstrate resume after a reconnect.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the Signalbox server (the WebSocket is `<server>/ws`).
    #[arg(long, env = "SIGNALBOX_URL", default_value = DEFAULT_SERVER)]
    server: String,
    /// Client JWT (e.g. from `signalbox token --sub alice --topics 'job:*'`); not needed with --dev.
    #[arg(long, env = "SIGNALBOX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server runs with `serve --dev`: no token needed.
    #[arg(long)]
    dev: bool,
    /// The job to watch (topic `job:<ID>`).
    #[arg(long = "job", value_name = "ID")]
    job: String,
    /// Close the connection after this many events, to show resume (0 = never).
    #[arg(long, default_value_t = 5)]
    drop_after: u64,
    /// How many times to drop the connection.
    #[arg(long, default_value_t = 1)]
    drops: u32,
    /// How long to stay offline after a drop, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    offline_ms: u64,
    /// Only these event types, e.g. `--only stage_complete` (a subscribe `filters`; the
    /// terminal types are always included). Offsets then skip, so only order is checked.
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    only: Vec<String>,
    /// Give up if the server sends nothing for this many seconds (0 = wait forever).
    #[arg(long, default_value_t = 120)]
    idle_timeout_s: u64,
}

async fn watch(args: Args) -> Result<Outcome> {
    let config = WatchConfig {
        server: Server::parse(&args.server)?,
        token: require_credential(args.token, args.dev, "a client token (--token or SIGNALBOX_TOKEN)")?,
        job: args.job,
        drop_after: args.drop_after,
        drops: args.drops,
        offline: Duration::from_millis(args.offline_ms),
        only: args.only,
        idle_timeout: Duration::from_secs(args.idle_timeout_s),
        label: "watcher".into(),
    };
    watcher::run(&config, None).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match watch(Args::parse()).await {
        Ok(outcome) => {
            if outcome.already_finished {
                out(format!(
                    "[watcher] the job was already over; its retained state says: {}",
                    describe(&outcome.final_event)
                ));
            } else {
                out(format!(
                    "[watcher] OK: {} events, {} of them replayed over {} resume(s), no gap, no duplicate",
                    outcome.events, outcome.replayed, outcome.resumes
                ));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("[watcher] FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}
