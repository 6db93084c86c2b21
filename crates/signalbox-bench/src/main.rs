//! The `signalbox-bench` binary: parse the flags, run the load, print the report. Exit 0
//! after a run, 1 when the run failed (the error on stderr), 2 for bad flags (clap).

use std::process::ExitCode;

use clap::Parser;
use signalbox_bench::BenchArgs;

/// jemalloc with background purging, as in the server: the load generator holds as many
/// client connections as the server under test and used this allocator when it was the
/// `signalbox bench` subcommand, so its figures stay comparable.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load-test a server that speaks the native protocol or Socket.IO (Signalbox or a peer):
/// writes report.json and SVG plots to --out.
#[derive(Debug, Parser)]
#[command(name = "signalbox-bench", version = signalbox::VERSION, about)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> ExitCode {
    let args = Cli::parse().bench;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signalbox-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
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
