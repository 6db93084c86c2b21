//! The TCP accept loop and the HTTP/1.1 life of each connection until it upgrades to a
//! WebSocket or closes: the edge an attacker reaches first.
//!
//! Owns what a connection may hold before it upgrades (SPEC's pre-upgrade limits, see
//! `docs/security.md`): the request line and headers within `http.handshake_timeout`, an
//! idle keep-alive connection for at most `http.idle_timeout`, a request answered within
//! `http.request_timeout`, headers bounded by `http.max_header_bytes`, and the number of
//! pending connections bounded in all and per IP (when full, the oldest idle one is
//! evicted). It survives the file-descriptor limit: it backs off, evicts an idle pending
//! connection, and hands a reserved descriptor to one priority connection that may reach
//! only `/health`, `/ready` and `/metrics`. Once a connection upgrades, this module lets go
//! of it: WebSockets are `ws`'s. It must never route requests (that is `http_api`'s
//! job) nor look inside a WebSocket.

mod clock;
mod pending;
mod spare;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::Phase;
use clock::{Clock, WatchedStream};
pub use pending::{PendingConnections, PendingRefusal};
use spare::{AcceptFailure, Backoff, SpareDescriptor, Throttled};

use crate::config::HttpConfig;
use crate::http_api::HttpService;
use crate::metrics::Metrics;

/// Paths a priority connection (one accepted on the reserved descriptor at the file
/// limit) may reach: what orchestrators and monitoring poll.
const PRIORITY_PATHS: &[&str] = &["/health", "/ready", "/metrics"];

/// How long a priority connection may take in all: it holds the last free descriptor.
const PRIORITY_DEADLINE: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` and serves `http` on them until `stop` is
/// cancelled; then stops accepting, asks every pending connection to finish its request
/// and close, and returns once they have (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    http: HttpService,
    limits: HttpConfig,
    metrics: Metrics,
    stop: CancellationToken,
) -> io::Result<()> {
    let edge = Arc::new(Edge {
        pending: PendingConnections::new(
            limits.max_pending_connections,
            limits.max_pending_connections_per_ip,
            metrics.clone(),
        ),
        http,
        limits,
        metrics,
        stop,
        tasks: TaskTracker::new(),
        priority_in_flight: AtomicBool::new(false),
    });
    edge.accept_loop(&listener).await;
    drop(listener);
    edge.tasks.close();
    edge.tasks.wait().await;
    Ok(())
}

/// Everything the accept loop and the connection tasks share.
struct Edge {
    pending: Arc<PendingConnections>,
    http: HttpService,
    limits: HttpConfig,
    metrics: Metrics,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// A priority connection holds the reserved descriptor's place.
    priority_in_flight: AtomicBool,
}

/// How a connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Admitted under the pending limits, every route.
    Normal,
    /// Accepted on the reserved descriptor at the file limit: ops routes only, one
    /// request, a short deadline.
    Priority,
}

impl Edge {
    async fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let mut spare = SpareDescriptor::open();
        let mut backoff = Backoff::new();
        let mut log = Throttled::new(Duration::from_secs(10));
        loop {
            if !spare.is_held() && !self.priority_in_flight.load(Ordering::Acquire) {
                spare.restore();
            }
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let error = match accepted {
                Ok((stream, remote)) => {
                    backoff.reset();
                    self.start(stream, remote, Lane::Normal);
                    continue;
                }
                Err(error) => error,
            };
            let failure = AcceptFailure::of(&error);
            let Some(kind) = failure.metric_kind() else { continue };
            self.metrics.accept_error(kind);
            log.warn(failure, &error);
            if failure == AcceptFailure::FileLimit {
                // A slowloris holding descriptors loses its oldest idle one; a monitor
                // gets the reserved descriptor for one request to the ops routes.
                self.pending.evict_oldest();
                // Only a connection already waiting gets the priority lane: if none is,
                // the descriptor goes back into reserve at the top of the loop.
                if spare.release()
                    && let Some(Ok((stream, remote))) = listener.accept().now_or_never()
                {
                    self.priority_in_flight.store(true, Ordering::Release);
                    self.start(stream, remote, Lane::Priority);
                }
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff.step()) => {}
            }
        }
    }

    /// Admits `stream` and spawns the task that serves it until it upgrades or closes.
    fn start(self: &Arc<Self>, stream: TcpStream, remote: SocketAddr, lane: Lane) {
        // Frames are already coalesced per socket by the writer; Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        let clock = Clock::new();
        let slot = match lane {
            Lane::Priority => None,
            Lane::Normal => match self.pending.admit(remote.ip(), clock.clone()) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    refuse_at_accept(&stream, refusal);
                    self.metrics.shed(match refusal {
                        PendingRefusal::PerIp => "pending_limit_per_ip",
                        PendingRefusal::Full => "pending_limit",
                    });
                    return;
                }
            },
        };
        let edge = self.clone();
        self.tasks.spawn(async move {
            edge.drive(stream, remote, clock.clone(), lane).await;
            clock.finish();
            drop(slot);
            if lane == Lane::Priority {
                edge.priority_in_flight.store(false, Ordering::Release);
            }
        });
    }

    /// Serves HTTP/1.1 on `stream` and enforces the phase deadlines, eviction and the
    /// graceful stop. Returns when the connection upgraded or closed.
    async fn drive(&self, stream: TcpStream, remote: SocketAddr, clock: Arc<Clock>, lane: Lane) {
        let io = TokioIo::new(WatchedStream::new(stream, clock.clone()));
        let service = self.service(remote, clock.clone(), lane);
        let mut builder = http1::Builder::new();
        builder
            // Our own deadlines below replace hyper's (which would also cut idle keep-alive).
            .header_read_timeout(None)
            .max_header_size(self.limits.max_header_bytes)
            .max_buf_size(self.limits.max_header_bytes.max(8192))
            .keep_alive(lane == Lane::Normal)
            // Answers are small: one copy into the write buffer and one `write` beat a `writev`.
            .writev(false);
        let mut conn = pin!(builder.serve_connection(io, service).with_upgrades());
        let started = Instant::now();
        let mut sleep = pin!(tokio::time::sleep_until(started + self.limits.handshake_timeout));
        let mut stopping = pin!(self.stop.cancelled());
        let mut graceful = false;
        let shed = poll_fn(|cx| {
            if clock.poll_evicted(cx) {
                // Counted by the registry when it evicted.
                return Poll::Ready(None);
            }
            if !graceful && stopping.as_mut().poll(cx).is_ready() {
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    tracing::debug!(remote = %remote, error = %error, "HTTP connection ended with an error");
                }
                return Poll::Ready(None);
            }
            let (deadline, reason) = match lane {
                Lane::Priority => (started + PRIORITY_DEADLINE, "request_timeout"),
                Lane::Normal => self.deadline(&clock),
            };
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(reason)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(reason) = shed {
            self.metrics.shed(reason);
            tracing::debug!(remote = %remote, reason, "closing an HTTP connection that has not upgraded");
        }
    }

    /// When the connection's current phase ends, and the shed reason if it is not over by then.
    fn deadline(&self, clock: &Clock) -> (Instant, &'static str) {
        let limits = &self.limits;
        let (length, reason) = match clock.phase() {
            Phase::Head => (limits.handshake_timeout, "handshake_timeout"),
            Phase::Busy => (limits.request_timeout, "request_timeout"),
            Phase::Idle => (limits.idle_timeout, "idle_timeout"),
            // Not reached while the connection is served; a day is "never" here.
            Phase::Done => (Duration::from_secs(86_400), "request_timeout"),
        };
        (clock.since() + length, reason)
    }

    /// The HTTP service, as hyper calls it, with the peer address; the clock moved
    /// through the request's life, and on the priority lane only the ops routes.
    fn service(
        &self,
        remote: SocketAddr,
        clock: Arc<Clock>,
        lane: Lane,
    ) -> impl hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send> + use<>
    {
        let http = self.http.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            clock.request_started();
            let allowed = lane == Lane::Normal || PRIORITY_PATHS.contains(&request.uri().path());
            let (http, clock) = (http.clone(), clock.clone());
            async move {
                let response = if allowed { http.call(request, remote).await } else { at_file_limit() };
                clock.request_answered();
                Ok(response)
            }
        })
    }
}

/// The SPEC error body (the shape `/ws` refusals use) for `code` and `message`.
fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "error", "code": code, "message": message,
        "error": {"code": code, "message": message},
    })
}

/// The answer on the priority lane for anything but the ops routes.
fn at_file_limit() -> Response {
    let body = error_body("SERVICE_UNAVAILABLE", "server is at its open-file limit; try again shortly");
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// Tells a connection refused at accept why, if its socket takes the bytes at once (it
/// is closed right after either way; this never waits).
fn refuse_at_accept(stream: &TcpStream, refusal: PendingRefusal) {
    let _ = stream.try_write(&refusal_bytes(refusal));
}

/// The whole HTTP answer to a connection refused at accept (written by hand: hyper never
/// sees these connections).
fn refusal_bytes(refusal: PendingRefusal) -> Vec<u8> {
    let (status, extra, code) = match refusal {
        PendingRefusal::PerIp => ("429 Too Many Requests", "", "RATE_LIMIT_EXCEEDED"),
        PendingRefusal::Full => ("503 Service Unavailable", "retry-after: 1\r\n", "SERVICE_UNAVAILABLE"),
    };
    let body = error_body(code, &refusal.to_string()).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &[u8]) -> (usize, &[u8]) {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap();
        (length.parse().unwrap(), body.as_bytes())
    }

    #[test]
    fn refusals_at_accept_are_well_formed_json_answers() {
        for (refusal, code) in
            [(PendingRefusal::PerIp, "RATE_LIMIT_EXCEEDED"), (PendingRefusal::Full, "SERVICE_UNAVAILABLE")]
        {
            let bytes = refusal_bytes(refusal);
            let (length, body) = body_of(&bytes);
            assert_eq!(length, body.len(), "content-length of the {code} answer");
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["code"], code);
            assert_eq!(json["error"]["code"], code);
        }
    }
}
