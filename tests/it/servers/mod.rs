//! Real backend servers the sink tests start on free loopback ports (redis-server,
//! moto_server, a local webhook), and what they share: finding a tool, a free port, and
//! killing the process when the test ends.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod moto;
pub mod redis;
pub mod webhook;

/// A server process, killed (and reaped) when dropped.
pub struct ServerProcess {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl ServerProcess {
    /// Starts `program args…`, then waits up to 20 s until 127.0.0.1:`port` accepts.
    /// A missing program fails the test with the command that installs it.
    pub fn start(program: &str, args: &[&str], port: u16, install: &str) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}; install it with: {install}"));
        let mut server = Self { child, port };
        server.wait_until_listening(Duration::from_secs(20));
        server
    }

    fn wait_until_listening(&mut self, limit: Duration) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server on port {} exited before listening: {status}", self.port);
            }
            assert!(start.elapsed() < limit, "server on port {} did not listen within {limit:?}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGKILL) and waits for it: an outage.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
