//! A local webhook on 127.0.0.1:0 for the `http` sink tests: `POST /hook` answers as the
//! test sets it at run time ([`Behaviour`]) and records every request (headers and body).
//! Any other method on `/hook` gets axum's 405, which is what a health check may see.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// How the webhook answers the next POSTs.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// `204 No Content`.
    NoContent,
    /// `200 OK` with an empty body.
    EmptyOk,
    /// `200 OK` with this body and `Content-Type: application/json`.
    Json(&'static str),
    /// `200 OK` with this body as `text/plain`.
    Text(&'static str),
    /// This status with a short text body.
    Status(u16),
    /// Sleeps this long, then `200 OK`: longer than the sink's timeout.
    Slow(Duration),
}

/// One request as the webhook received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, exactly.
    pub body: Bytes,
}

impl Recorded {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

/// A running webhook (stopped on drop).
pub struct Webhook {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Starts the webhook answering `204` until told otherwise.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::NoContent),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let app = Router::new().route("/hook", post(hook)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await.unwrap();
        });
        Self { addr, shared, stop: Some(stop), task: Some(task) }
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Changes how the next POSTs are answered.
    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Every POST received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until at least `count` POSTs have arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                // Registered before looking, so an arrival in between is not missed.
                let arrived = self.shared.arrived.notified();
                let requests = self.requests();
                if requests.len() >= count {
                    return requests;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("{count} requests did not arrive; got {}", self.requests().len()))
    }

    /// Stops listening and closes its connections (an outage), once in-flight requests end.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.lock().unwrap().push(Recorded { headers, body });
    shared.arrived.notify_waiters();
    let behaviour = shared.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::NoContent => StatusCode::NO_CONTENT.into_response(),
        Behaviour::EmptyOk => StatusCode::OK.into_response(),
        Behaviour::Json(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Behaviour::Text(body) => ([(header::CONTENT_TYPE, "text/plain")], body).into_response(),
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            (status, format!("webhook says {code}")).into_response()
        }
        Behaviour::Slow(delay) => {
            // The one deliberate sleep: a webhook slower than the sink's timeout.
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}
