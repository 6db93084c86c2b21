//! Load for routed messages: `clients` WebSocket connections each send `messages` routed
//! messages one after another (each waits for its `accepted`, as a real client does),
//! and the tool reports accepted messages per second and the latency of `accepted`.
//!
//! ```sh
//! cargo run --release -- serve --dev --config my-routes.toml      # in one shell
//! cargo run --release --example route_bench -- --clients 64 --messages 200 --action sendMessage
//! ```
//!
//! The server's rate limit (`limits.rate_per_second`, 50/s per connection by default)
//! applies: raise it in the config for a throughput run. docs/benchmarks.md has the
//! configurations used for the published numbers.

#[allow(dead_code)] // each example uses its own part of the shared code
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::{DEFAULT_SERVER, Server};

/// Measure routed-message throughput and `accepted` latency against a running gateway.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the Signalbox server (`--dev` mode: no token needed).
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Messages per connection.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// The routed action to send.
    #[arg(long, default_value = "sendMessage")]
    action: String,
    /// Extra JSON fields merged into every message (e.g. '{"type":"dev"}').
    #[arg(long, default_value = "{}")]
    fields: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Server::parse(&args.server)?;
    let extra: serde_json::Map<String, Value> = serde_json::from_str(&args.fields).context("--fields")?;
    let mut connections = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.context("connect")?;
        ws.next().await.context("connected frame")??;
        connections.push(ws);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut ws) in connections.into_iter().enumerate() {
        let (action, extra, count) = (args.action.clone(), extra.clone(), args.messages);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for n in 0..count {
                let mut message = json!({"action": action, "client": c, "n": n, "text": "load"});
                if let Value::Object(map) = &mut message {
                    map.extend(extra.clone());
                }
                let sent = Instant::now();
                ws.send(Message::text(message.to_string())).await?;
                loop {
                    let Some(frame) = ws.next().await else { bail!("connection closed") };
                    if let Message::Text(text) = frame? {
                        let reply: Value = serde_json::from_str(&text)?;
                        match reply["type"].as_str() {
                            Some("accepted") => break,
                            Some("error") => bail!("refused: {reply}"),
                            _ => continue, // a relayed reply or an event
                        }
                    }
                }
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{} messages from {} clients in {:.2} s: {:.0} accepted/s; accepted latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        args.clients,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    Ok(())
}
