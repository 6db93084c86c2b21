//! A throwaway `redis-server` on a free port, no persistence.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A throwaway Redis Cluster: `masters` real redis-server processes in cluster mode on
/// free loopback ports, no replicas, no persistence, every slot assigned. The processes
/// are killed on drop, then their working directory (cluster config files) is removed.
pub struct RedisCluster {
    /// The nodes, in the order of [`RedisCluster::ports`] (killed on drop). Declared
    /// before `dir` so the processes stop before their directory is removed.
    pub nodes: Vec<ServerProcess>,
    /// Holds one working directory per node (`--dir`, with its cluster config file).
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// How long the cluster may take to agree on a full slot map after `--cluster create`.
    const CONVERGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

    /// Starts `masters` (at least 3, as `redis-cli --cluster create` requires) cluster-mode
    /// redis-servers, joins them with `redis-cli --cluster create … --cluster-replicas 0`,
    /// then waits (polling `CLUSTER INFO` on every node, up to 20 s) until every node
    /// reports `cluster_state:ok`, all 16384 slots assigned and ok, and knows every node.
    pub fn start(masters: usize) -> Self {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters, got {masters}");
        // Fail before starting anything if the tool that creates the cluster is missing.
        if let Err(e) = std::process::Command::new("redis-cli").arg("--version").output() {
            panic!("cannot run redis-cli: {e}; install it with: apt-get install -y redis-tools");
        }
        let dir = tempfile::Builder::new().prefix("signalbox-redis-cluster-").tempdir().unwrap();
        // Each node needs a client port and a cluster bus port. The bus port is set
        // explicitly (--cluster-port, Redis ≥ 7): the default, port + 10000, can be taken
        // or above 65535 for a port from the ephemeral range.
        let mut taken = std::collections::HashSet::new();
        let mut distinct_free_port = || loop {
            let port = free_port();
            if taken.insert(port) {
                return port;
            }
        };
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            let port = distinct_free_port();
            let bus_port = distinct_free_port();
            let node_dir = dir.path().join(format!("node-{port}"));
            std::fs::create_dir(&node_dir).unwrap();
            let port_arg = port.to_string();
            let bus_port_arg = bus_port.to_string();
            let config_file = node_dir.join(format!("nodes-{port}.conf"));
            let config_arg = config_file.to_str().unwrap();
            let dir_arg = node_dir.to_str().unwrap();
            let args = [
                "--port",
                &port_arg,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port_arg,
                "--cluster-config-file",
                config_arg,
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
                "--dir",
                dir_arg,
            ];
            nodes.push(ServerProcess::start("redis-server", &args, port, "apt-get install -y redis-server"));
        }
        let cluster = Self { nodes, _dir: dir };
        cluster.create();
        cluster.wait_until_ok();
        cluster
    }

    /// `redis-cli --cluster create <every node> --cluster-replicas 0 --cluster-yes`.
    fn create(&self) {
        let addresses: Vec<String> = self.ports().iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let output = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}; install it with: apt-get install -y redis-tools"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create {} failed ({}):\n{}\n{}",
            addresses.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// Polls `CLUSTER INFO` on every node until all of them report a healthy, fully
    /// assigned cluster that knows every node; fails with the last reply after 20 s.
    fn wait_until_ok(&self) {
        let start = std::time::Instant::now();
        let known_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        let wanted = ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384", &known_nodes];
        for url in self.node_urls() {
            let client = ::redis::Client::open(url.as_str()).unwrap();
            loop {
                let info = Self::cluster_info(&client);
                let lines = info.as_deref().map(|info| info.lines().map(str::trim).collect::<Vec<_>>());
                if lines.as_ref().is_ok_and(|lines| wanted.iter().all(|w| lines.contains(w))) {
                    break;
                }
                assert!(
                    start.elapsed() < Self::CONVERGE_LIMIT,
                    "Redis Cluster node {url} not ready within {:?}, last CLUSTER INFO: {info:?}",
                    Self::CONVERGE_LIMIT,
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// `CLUSTER INFO` from one node, on a fresh connection (1 s timeouts).
    fn cluster_info(client: &::redis::Client) -> ::redis::RedisResult<String> {
        let mut conn = client.get_connection_with_timeout(std::time::Duration::from_secs(1))?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        ::redis::cmd("CLUSTER").arg("INFO").query(&mut conn)
    }

    /// The nodes' client ports, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,…` (every node as a seed).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.ports().iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis://127.0.0.1:<port>` for each node, in start order.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports().iter().map(|port| format!("redis://127.0.0.1:{port}")).collect()
    }
}

impl Redis {
    /// Starts redis-server on `port` with `extra` arguments after the defaults of
    /// [`Redis::start_on`] (later arguments win): e.g. `["--appendonly", "yes", "--dir",
    /// dir]` for a Redis that keeps its data when killed and started again on the same port
    /// with the same arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        args.extend_from_slice(extra);
        let process = ServerProcess::start("redis-server", &args, port, "apt-get install -y redis-server");
        Self { process }
    }
}

/// `calls` of `command` in an `INFO commandstats` answer (0 when never called).
pub fn command_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// `redis-cli monitor` on `port`: every command Redis runs, one line each, on a channel.
pub struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    /// Starts `redis-cli monitor` and waits for its `OK`.
    pub fn start(port: u16) -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli (apt-get install -y redis-tools)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(5)).expect("MONITOR answers");
        assert_eq!(first.trim(), "OK", "{first}");
        Self { child, lines }
    }

    /// Lines up to the one containing `marker` (excluded).
    pub fn until(&self, marker: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the marker");
            if line.contains(marker) {
                return out;
            }
            out.push(line);
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (source, command in upper case, first argument) of a MONITOR line such as
/// `1700000000.1 [0 127.0.0.1:5000] "EVALSHA" "abc" …` (`source` is `lua` for a
/// command a script ran).
pub fn monitored(line: &str) -> (String, String, String) {
    let (_, rest) = line.split_once('[').unwrap_or_else(|| panic!("MONITOR line {line}"));
    let (source, rest) = rest.split_once(']').unwrap();
    let source = source.split_once(' ').map_or(source, |(_, s)| s).to_owned();
    let mut quoted = rest.split('"').skip(1).step_by(2);
    let command = quoted.next().unwrap_or_default().to_uppercase();
    let first = quoted.next().unwrap_or_default().to_owned();
    (source, command, first)
}
