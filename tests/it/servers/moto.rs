//! A throwaway `moto_server` (AWS service mock, here for SQS) on a free port, and SDK
//! settings that keep every request on it: static credentials and a fixed region, so the
//! AWS SDK's default chain never looks for credentials or a region anywhere else (no
//! environment needed, no instance-metadata address ever tried).

use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_sqs::config::Credentials;

use super::{ServerProcess, free_port};

/// The region every test queue lives in.
pub const REGION: &str = "us-east-1";

/// A running moto_server.
pub struct Moto {
    /// The process (killed on drop).
    pub process: ServerProcess,
}

impl Moto {
    /// Starts moto_server on a free loopback port.
    pub fn start() -> Self {
        let port = free_port();
        let port_arg = port.to_string();
        let args = ["-H", "127.0.0.1", "-p", &port_arg];
        let process = ServerProcess::start("moto_server", &args, port, "python3 -m pip install 'moto[server]'");
        Self { process }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// An SDK client for setting up and inspecting queues (CreateQueue, ReceiveMessage).
    pub async fn client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&loader().endpoint_url(self.endpoint()).load().await)
    }
}

/// AWS SDK settings for tests: the standard loader, with static `test` credentials and
/// [`REGION`] so nothing is looked up outside the test.
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .region(Region::new(REGION))
}
