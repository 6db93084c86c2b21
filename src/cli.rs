//! Command line: `serve`, `token`, `check-config`, `default-config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Signalbox: a real-time gateway.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version = crate::VERSION, about)]
pub struct Cli {
    /// Settings flags; accepted before or after the subcommand.
    #[command(flatten)]
    pub settings: ServeArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Print an HS256 client token signed with SIGNALBOX_JWT_SECRET (development, tests).
    Token(TokenArgs),
    /// Validate the configuration (file, environment, flags) and exit.
    CheckConfig,
    /// Print a commented TOML file with every setting and its default.
    DefaultConfig,
    /// Moved: the load generator is the `signalbox-bench` binary (crates/signalbox-bench).
    /// Kept hidden so that `signalbox bench …` says where it went instead of "unrecognized
    /// subcommand"; it exits 2.
    #[command(hide = true, disable_help_flag = true)]
    Bench {
        /// Whatever followed `bench`; ignored.
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Settings flags (used by `serve` and `check-config`).
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// TOML configuration file (also SIGNALBOX_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP + WebSocket address, e.g. 0.0.0.0:8080; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", global = true)]
    pub listen: Option<String>,
    /// Development mode: anonymous clients, open topics, no API key. Never in production.
    #[arg(long, global = true)]
    pub dev: bool,
}

/// Flags of `token`.
#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Extra claim `key=value` (value parsed as JSON when it is valid JSON); repeatable.
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    pub claims: Vec<String>,
    /// Comma-separated topic patterns for the `topics` claim, e.g. 'job:*,project:42'.
    #[arg(long)]
    pub topics: Option<String>,
}
