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
        let port = free_port();
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
