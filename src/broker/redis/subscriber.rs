//! The pub/sub side of the Redis broker: one task per node that holds the node's
//! subscriptions, turns channel messages into sequencer offers, and keeps the connection
//! honest.
//!
//! Watches and unwatches arrive as [`Command`]s and are applied in order, consecutive ones
//! of a kind in one SUBSCRIBE/UNSUBSCRIBE (a burst of first subscribers costs one round
//! trip). When the connection is lost (a disconnection push), or goes silent (the node's
//! probe, published to its own channel every [`PROBE_INTERVAL`], stops coming back), the
//! task subscribes to everything again, catches every watched topic up from its stream
//! and reconciles its presence (the `join`s and `leave`s published meanwhile never came).
//! It must never block on a single topic's repair for longer than one read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::Shared;
use super::conn::{PubSubConn, Push};
use super::keys::topic_of_channel;
use super::script::ChannelMessage;
use crate::broker::BrokerError;
use crate::domain::Topic;

/// How often a node publishes a probe to its own channel.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Probes published (Redis answered) but not received back after which the pub/sub
/// connection is considered silent and replaced.
pub const SILENT_AFTER_PROBES: u64 = 4;

/// The payload of a probe.
pub const PROBE: &str = "probe";

/// Retry delays for (re)subscribing while Redis is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// At most this many commands are applied together.
const BATCH: usize = 1024;

/// A change of the node's interest, from the broker.
pub(super) enum Command {
    /// Subscribe to the channel; answer once Redis confirmed.
    Watch(String, oneshot::Sender<Result<(), BrokerError>>),
    /// Unsubscribe from the channel.
    Unwatch(String),
}

/// Why a pub/sub session ended.
enum End {
    Stop,
    Restart(&'static str),
}

/// Runs pub/sub sessions until `stop`, replacing a lost or silent connection.
pub(super) async fn run(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut catch_up = false;
    loop {
        let (conn, pushes) = tokio::select! {
            () = stop.cancelled() => return,
            opened = shared.target.pubsub() => match opened {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the Redis pub/sub connection; retrying");
                    refuse_waiting(&mut commands, &e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        backoff = BACKOFF_MIN;
        match serve(&shared, conn, pushes, &mut commands, &stop, catch_up).await {
            End::Stop => return,
            End::Restart(why) => {
                tracing::warn!(
                    reason = why,
                    "restarting the Redis pub/sub connection; every watched topic will be caught up"
                );
                shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                catch_up = true;
            }
        }
    }
}

/// Answers every queued watch with an error (no connection to subscribe on).
fn refuse_waiting(commands: &mut mpsc::UnboundedReceiver<Command>, why: &str) {
    while let Ok(command) = commands.try_recv() {
        if let Command::Watch(_, done) = command {
            let _ = done.send(Err(BrokerError::Unavailable(why.to_owned())));
        }
    }
}

/// One pub/sub connection's life.
async fn serve(
    shared: &Arc<Shared>,
    mut conn: PubSubConn,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    stop: &CancellationToken,
    catch_up_first: bool,
) -> End {
    // `Some(catch_up)`: everything must be subscribed (again), then caught up if asked.
    let mut sync: Option<bool> = Some(catch_up_first);
    let mut retry_at = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut unreachable = false;
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    shared.stats.unanswered_probes.store(0, Ordering::Relaxed);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return End::Stop,
            () = tokio::time::sleep_until(retry_at), if sync.is_some() => {
                match conn.subscribe(&shared.channels()).await {
                    Ok(()) => {
                        if std::mem::take(&mut unreachable) {
                            tracing::info!("Redis pub/sub is back; every watched topic is caught up from its stream and its presence reconciled");
                        }
                        backoff = BACKOFF_MIN;
                        shared.stats.unanswered_probes.store(0, Ordering::Relaxed);
                        if sync.take() == Some(true) {
                            // Subscribed again: what was published meanwhile never came,
                            // events nor presence changes; both are read back now.
                            let (caught_up, reconciled) =
                                tokio::join!(shared.catch_up_all(), super::reconcile::reconcile_all(shared));
                            if !(caught_up && reconciled) {
                                sync = Some(true);
                                retry_at = Instant::now() + backoff;
                            }
                        }
                    }
                    Err(e) => {
                        // Once per outage at warn (the password never appears: the
                        // error is Redis's answer, not the URL).
                        if !std::mem::replace(&mut unreachable, true) {
                            tracing::warn!(error = %e, "cannot subscribe in Redis; retrying (the node is not ready meanwhile)");
                        } else {
                            tracing::debug!(error = %e, "subscribing again failed; retrying");
                        }
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            push = pushes.recv() => match push.map(Push::from_info) {
                None => return End::Restart("the pub/sub connection closed"),
                Some(Push::Disconnected) => {
                    tracing::warn!("lost the Redis pub/sub connection; subscribing again and catching up");
                    shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    sync = Some(true);
                    retry_at = Instant::now();
                }
                Some(Push::Message { channel, payload }) => on_message(shared, &channel, &payload),
                Some(Push::Other) => {}
            },
            command = commands.recv() => {
                let Some(command) = command else { return End::Stop };
                let mut batch = vec![command];
                while batch.len() < BATCH {
                    match commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
                apply(&mut conn, batch).await;
            }
            _ = probe.tick() => {
                if sync.is_none() && shared.stats.unanswered_probes.load(Ordering::Relaxed) >= SILENT_AFTER_PROBES {
                    return End::Restart("the pub/sub connection went silent (the node's probes stopped coming back)");
                }
                let shared = shared.clone();
                tokio::spawn(async move { shared.probe().await });
            }
        }
    }
}

/// Applies commands in order, each run of one kind in one command.
async fn apply(conn: &mut PubSubConn, batch: Vec<Command>) {
    let mut batch = batch.into_iter().peekable();
    while let Some(first) = batch.next() {
        match first {
            Command::Watch(channel, done) => {
                let (mut channels, mut waiters) = (vec![channel], vec![done]);
                while let Some(Command::Watch(..)) = batch.peek() {
                    if let Some(Command::Watch(channel, done)) = batch.next() {
                        channels.push(channel);
                        waiters.push(done);
                    }
                }
                let result = conn.subscribe(&channels).await.map_err(|e| BrokerError::Unavailable(e.to_string()));
                for done in waiters {
                    let _ = done.send(result.clone());
                }
            }
            Command::Unwatch(channel) => {
                let mut channels = vec![channel];
                while let Some(Command::Unwatch(_)) = batch.peek() {
                    if let Some(Command::Unwatch(channel)) = batch.next() {
                        channels.push(channel);
                    }
                }
                // A failure leaves a subscription nobody reads: its messages are ignored,
                // and the next reconnect subscribes only to what is watched.
                if let Err(e) = conn.unsubscribe(&channels).await {
                    tracing::debug!(error = %e, "unsubscribe failed");
                }
            }
        }
    }
}

fn on_message(shared: &Arc<Shared>, channel: &str, payload: &str) {
    if channel == shared.node_channel {
        if payload == PROBE {
            shared.stats.unanswered_probes.store(0, Ordering::Relaxed);
        } else {
            shared.node_message(payload);
        }
        return;
    }
    let Some(topic) = topic_of_channel(channel).and_then(|t| Topic::parse(t).ok()) else { return };
    let Some(message) = ChannelMessage::parse(payload) else {
        tracing::warn!(channel, "a message on a topic channel is not in the broker's format; ignored");
        return;
    };
    if message.node_id == shared.node_id {
        return; // this node delivered (or announced) it itself
    }
    if message.offset == 0 {
        super::reconcile::relay(shared, &topic, message.frame);
        return;
    }
    for (offset, frame) in message.frames() {
        shared.on_message(&topic, message.epoch, offset, frame);
    }
}
