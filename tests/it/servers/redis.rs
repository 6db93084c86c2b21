//! A throwaway `redis-server` on a free port, no persistence.

use super::{ServerProcess, free_port};

/// A running redis-server.
pub struct Redis {
    /// The process (killed on drop).
    pub process: ServerProcess,
}

impl Redis {
    /// Starts redis-server on a free port, without persistence.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts redis-server on `port` (e.g. again, after a simulated outage).
    pub fn start_on(port: u16) -> Self {
        let port_arg = port.to_string();
        let args = ["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let process = ServerProcess::start("redis-server", &args, port, "apt-get install -y redis-server");
        Self { process }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port)
    }
}

/// Every entry of `stream` as (id, field → value), oldest first (read in pages, so a
/// long stream never hits the client's response timeout).
pub async fn stream_entries(url: &str, stream: &str) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut entries = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .unwrap();
        let Some(last) = reply.ids.last() else { return entries };
        start = format!("({}", last.id);
        for entry in reply.ids {
            let fields = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), ::redis::from_redis_value_ref::<String>(v).unwrap()))
                .collect();
            entries.push((entry.id, fields));
        }
    }
}

/// `XLEN stream`.
pub async fn stream_len(url: &str, stream: &str) -> usize {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("XLEN").arg(stream).query_async(&mut conn).await.unwrap()
}
