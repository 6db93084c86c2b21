//! The `signalbox` binary: parse the command line, set up logging, map errors to exit
//! codes (2 for any configuration problem). Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use signalbox::cli::{Cli, Command, ServeArgs};
use signalbox::config::{Config, ConfigSources, Environment, FlagOverrides, ProcessEnvironment};
use signalbox::{DEFAULT_CONFIG_TOML, Gateway, telemetry};

const CONFIG_ERROR: u8 = 2;

/// jemalloc with background purging: memory freed after a burst (such as many large
/// partial messages) goes back to the OS within seconds; glibc's malloc kept it for the
/// life of the process (docs/benchmarks.md, "Memory after abuse").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => serve(&cli.settings),
        Command::CheckConfig => check_config(&cli.settings),
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Bench { .. } => fail(
            "the load generator moved to its own binary: run `signalbox-bench` with the same flags \
             (`cargo run --release -p signalbox-bench -- --help`)",
        ),
        Command::Token(args) => {
            match signalbox::token::mint(&args, ProcessEnvironment.var("SIGNALBOX_JWT_SECRET").as_deref()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("signalbox: {message}");
    ExitCode::from(CONFIG_ERROR)
}

fn load(args: &ServeArgs) -> Result<Config, String> {
    let sources = ConfigSources {
        config_file: args.config.clone(),
        env: &ProcessEnvironment,
        flags: FlagOverrides { listen: args.listen.clone(), dev: args.dev },
    };
    Config::load(&sources).map_err(|e| e.to_string())
}

fn check_config(args: &ServeArgs) -> ExitCode {
    let config = match load(args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signalbox: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(signalbox::app::check(&config)) {
        Ok(summary) => {
            println!(
                "configuration OK (listen {}, broker {}, dev {}, shutdown grace {})",
                config.listen,
                signalbox::sinks::config::hide_password(&config.broker),
                config.dev,
                humantime::format_duration(config.shutdown.grace_period),
            );
            for line in summary {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match load(args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    telemetry::init(&config.log);
    let listen = config.listen.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signalbox: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::build(config).await {
            Ok(gateway) => gateway,
            Err(e) => return fail(&e.to_string()),
        };
        let listener = match signalbox::app::bind(&listen).await {
            Ok(listener) => listener,
            Err(e) => {
                return fail(&format!(
                    "invalid setting listen (SIGNALBOX_LISTEN, --listen): cannot bind {listen}: {e}"
                ));
            }
        };
        match listener.local_addr() {
            Ok(addr) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "signalbox listening on {addr}");
                let _ = out.flush();
            }
            Err(e) => return fail(&format!("cannot read the bound address: {e}")),
        }
        match gateway.serve(listener, signalbox::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
