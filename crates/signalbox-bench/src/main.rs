//! The `signalbox-bench` binary: parse the flags, run the load, print the report. Exit 0
//! after a run, 1 when the run failed (the error on stderr), 2 for bad flags (clap).
//! `signalbox-bench apigw-post …` runs the API Gateway management API measurement instead
//! of a scenario.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signalbox_bench::BenchArgs;
use signalbox_bench::apigw::ApigwArgs;

/// jemalloc with background purging, as in the server: the load generator holds as many
/// client connections as the server under test and used this allocator when it was the
/// `signalbox bench` subcommand, so its figures stay comparable.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load-test a server that speaks the native protocol or Socket.IO (Signalbox or a peer):
/// writes report.json and SVG plots to --out. With the `apigw-post` command, measure
/// API Gateway's post_to_connection (`POST /@connections/{id}`) instead.
#[derive(Debug, Parser)]
#[command(name = "signalbox-bench", version = signalbox::VERSION, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure API Gateway's post_to_connection (`POST /@connections/{id}`) on the server.
    ///
    /// K keep-alive HTTP/1.1 clients (--clients) POST small JSON bodies to `/@connections/{id}`
    /// of C WebSocket receivers (--receivers), signed with SigV4 (--apigw-key and
    /// --apigw-secret, service execute-api) or with an API key bearer (--api-key). Reports
    /// requests/s, HTTP and end-to-end latency, errors by status, frames lost, and server CPU
    /// per request (--server-pid); writes report.json to --out. Exit 1 unless every request
    /// got a 200 whose frame arrived exactly once.
    ApigwPost(ApigwArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signalbox-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::ApigwPost(args)) = cli.command {
        let out = args.out.clone();
        return match runtime.block_on(signalbox_bench::apigw::run(args)) {
            Ok(report) => {
                print!("{report}");
                println!("report: {}", out.join("report.json").display());
                if report.clean() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("signalbox-bench apigw-post: errors, lost or misdelivered frames (see the report)");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("signalbox-bench apigw-post: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = cli.bench;
    let out = args.out.clone();
    match runtime.block_on(signalbox_bench::run(args)) {
        Ok(report) => {
            println!("{report}");
            println!("report and plots: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signalbox-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
