//! Redis deployments for the tests of SPEC 8: a Sentinel-managed primary, a
//! Redis Cluster and a TLS server, each made of real `redis-server`
//! processes on loopback, in one temp dir, on ports of their own.
//!
//! These are the local recipes of `docs/redis-deployments.md`, started the
//! way an operator would (config files, `redis-cli --cluster create`), so a
//! test runs the real binaries against the real thing. Every process is
//! killed when its topology is dropped, also when the test panics.
//!
//! Ports: random in 20000..=45000, checked free, never 6379. A Cluster node
//! also needs its bus port (port + 10000, so every port stays at most
//! 55535), and the range sits below Linux's ephemeral ports so an outgoing
//! connection cannot take a port between the check and the bind.
//!
//! Timing knobs are set for tests: a node is declared down after 1 s
//! (`down-after-milliseconds`, `cluster-node-timeout`), so a failover
//! completes in a few seconds. Production values are in the docs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use redis::Value;

/// How long a topology may take to form (sentinels to see each other,
/// the Cluster to agree on its slots). Generous: the machine is shared.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failover may take, from the kill to a new primary.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// The Sentinel service name of [`SentinelTopology`].
pub const SENTINEL_SERVICE: &str = "mymaster";

const LOWEST_PORT: u16 = 20_000;
const HIGHEST_PORT: u16 = 45_000;

/// A port `p` such that `p` and `p + 10000` were free a moment ago.
pub fn free_port_pair() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = u32::from(HIGHEST_PORT - LOWEST_PORT);
    // Start each test process somewhere else, then walk.
    let _ = NEXT.compare_exchange(
        0,
        (seed() % span) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(7, Ordering::Relaxed);
        let port = LOWEST_PORT + (u32::from(offset) % span) as u16;
        if port != 6379 && port_is_free(port) && port_is_free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair in {LOWEST_PORT}..={HIGHEST_PORT}");
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

/// One `redis-server` (a data node or a sentinel) of a topology.
pub struct RedisNode {
    /// What it is, for messages (`primary`, `replica`, `sentinel`, `node`).
    pub role: &'static str,
    /// Its port (the TLS port for a TLS server).
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisNode {
    /// Starts `redis-server` with `args` in `dir/<name>`, logging there.
    fn start(role: &'static str, parent: &Path, port: u16, args: &[String]) -> RedisNode {
        let dir = parent.join(format!("{role}-{port}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut node = RedisNode {
            role,
            port,
            dir,
            child: None,
        };
        node.spawn(args);
        node
    }

    fn spawn(&mut self, args: &[String]) {
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it with apt-get)");
        self.child = Some(child);
    }

    /// The node's dir (its config and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(15);
        format!(
            "--- {} {} ---\n{}",
            self.role,
            self.port,
            lines[start..].join("\n")
        )
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`: the node dies at once, with whatever it had not yet
    /// replicated.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection to this node, or the error.
    pub fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let conn = redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// A plain connection to this node; panics if it does not answer.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .unwrap_or_else(|err| panic!("{} {}: {err}", self.role, self.port))
    }

    /// Runs `cmd` on this node (no redirection).
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        cmd.query(&mut self.try_connection()?)
    }

    /// `INFO <section>` as `field -> value`.
    pub fn info(&self, section: &str) -> redis::RedisResult<Vec<(String, String)>> {
        let text: String = self.query(redis::cmd("INFO").arg(section))?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(field, value)| (field.to_string(), value.trim().to_string()))
            .collect())
    }

    fn info_field(&self, section: &str, field: &str) -> Option<String> {
        self.info(section)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value)
    }

    /// True when this primary has `replicas` online replicas that have
    /// acknowledged everything it wrote (`INFO replication` offsets), so a
    /// failover now loses nothing the test wrote before.
    pub fn replicas_caught_up(&self, replicas: usize) -> bool {
        let Ok(info) = self.info("replication") else {
            return false;
        };
        let field = |name: &str| info.iter().find(|(f, _)| f == name).map(|(_, v)| v.clone());
        let Some(offset) = field("master_repl_offset") else {
            return false;
        };
        let caught_up = info
            .iter()
            .filter(|(name, _)| name.starts_with("slave") && name[5..].parse::<u32>().is_ok())
            .filter(|(_, value)| {
                value.contains("state=online") && value.contains(&format!("offset={offset},"))
            })
            .count();
        caught_up >= replicas
    }

    /// Waits until [`RedisNode::replicas_caught_up`].
    pub fn wait_for_replicas(&self, replicas: usize) {
        wait_for(
            "the replicas to catch up",
            FORM_TIMEOUT,
            || self.replicas_caught_up(replicas),
            || self.log_tail(),
        );
    }

    /// Waits until the node answers `PING`.
    fn wait_until_up(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .query::<String>(&redis::cmd("PING"))
                .is_ok_and(|pong| pong == "PONG")
            {
                return;
            }
            assert!(
                self.is_running(),
                "{} on port {} exited at start\n{}",
                self.role,
                self.port,
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "{} on port {} did not answer PING\n{}",
                self.role,
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The settings every data node of a topology shares: loopback, no
/// snapshots, the SPEC 7 eviction policy, a log file in its dir.
fn data_node_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--dir",
        ".",
        "--logfile",
        "redis.log",
    ]
    .map(String::from)
    .to_vec()
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On a panic: print the nodes' log tails, and keep the dir when
/// `MIGRATION_TESTS_KEEP_LOGS` is set.
fn report_on_panic(dir: &mut tempfile::TempDir, tails: String) {
    if std::thread::panicking() {
        eprintln!("redis logs:\n{tails}");
        if std::env::var_os("MIGRATION_TESTS_KEEP_LOGS").is_some() {
            let kept = std::mem::replace(dir, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("redis logs kept in {}", kept.display());
        }
    }
}

/// One primary, two replicas and three sentinels (quorum 2).
pub struct SentinelTopology {
    /// The data nodes; index 0 started as the primary.
    pub nodes: Vec<RedisNode>,
    /// The sentinels.
    pub sentinels: Vec<RedisNode>,
    dir: tempfile::TempDir,
}

impl SentinelTopology {
    /// Starts the nodes and sentinels and waits until every sentinel sees
    /// the primary, both replicas (in sync) and the other two sentinels.
    pub fn start() -> SentinelTopology {
        let dir = tempfile::Builder::new()
            .prefix("redis-sentinel-")
            .tempdir()
            .expect("temp dir");
        let primary_port = free_port_pair();
        let mut nodes = vec![RedisNode::start(
            "primary",
            dir.path(),
            primary_port,
            &data_node_args(primary_port),
        )];
        for _ in 0..2 {
            let port = free_port_pair();
            let mut args = data_node_args(port);
            args.extend(["--replicaof", "127.0.0.1", &primary_port.to_string()].map(String::from));
            nodes.push(RedisNode::start("replica", dir.path(), port, &args));
        }
        for node in &mut nodes {
            node.wait_until_up(FORM_TIMEOUT);
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let node_dir = dir.path().join(format!("sentinel-{port}"));
            std::fs::create_dir_all(&node_dir).expect("sentinel dir");
            // Sentinel rewrites its config file (it records what it learns),
            // so each gets its own.
            let config = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir .\nlogfile redis.log\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
            );
            std::fs::write(node_dir.join("sentinel.conf"), config).expect("sentinel.conf");
            let mut sentinel = RedisNode::start(
                "sentinel",
                dir.path(),
                port,
                &["sentinel.conf".to_string(), "--sentinel".to_string()],
            );
            sentinel.wait_until_up(FORM_TIMEOUT);
            sentinels.push(sentinel);
        }
        let topology = SentinelTopology {
            nodes,
            sentinels,
            dir,
        };
        wait_for(
            "the replicas to sync",
            FORM_TIMEOUT,
            || {
                topology.nodes[1..].iter().all(|node| {
                    node.info_field("replication", "master_link_status")
                        .as_deref()
                        == Some("up")
                })
            },
            || topology.log_tails(),
        );
        wait_for(
            "every sentinel to see 2 replicas and 2 other sentinels",
            FORM_TIMEOUT,
            || {
                topology.sentinels.iter().all(|sentinel| {
                    let master: redis::RedisResult<Vec<String>> =
                        sentinel.query(redis::cmd("SENTINEL").arg("MASTER").arg(SENTINEL_SERVICE));
                    let Ok(fields) = master else { return false };
                    let field = |name: &str| {
                        fields
                            .chunks(2)
                            .find(|pair| pair[0] == name)
                            .map(|pair| pair[1].clone())
                    };
                    field("num-slaves").as_deref() == Some("2")
                        && field("num-other-sentinels").as_deref() == Some("2")
                })
            },
            || topology.log_tails(),
        );
        topology
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// The port of the primary the sentinels name now (the first live
    /// sentinel's answer).
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let addr: Option<(String, u16)> = sentinel
                .query(
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(SENTINEL_SERVICE),
                )
                .ok()?;
            addr.map(|(_, port)| port)
        })
    }

    /// The data node that is the primary now.
    pub fn primary(&mut self) -> &mut RedisNode {
        let port = self.primary_port().expect("the sentinels name a primary");
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("the primary is one of our nodes")
    }

    /// `kill -9` of the current primary; returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let primary = self.primary();
        primary.kill9();
        primary.port
    }

    /// Waits until the sentinels name a primary other than `old_port`
    /// that says it is one; returns its port.
    pub fn wait_for_new_primary(&self, old_port: u16) -> u16 {
        let mut new_port = None;
        wait_for(
            "the sentinels to promote a replica",
            FAILOVER_TIMEOUT,
            || match self.primary_port() {
                Some(port) if port != old_port => {
                    let node = self.nodes.iter().find(|node| node.port == port);
                    let is_primary = node.is_some_and(|node| {
                        node.info_field("replication", "role").as_deref() == Some("master")
                    });
                    if is_primary {
                        new_port = Some(port);
                    }
                    is_primary
                }
                _ => false,
            },
            || self.log_tails(),
        );
        new_port.expect("set when the wait ends")
    }

    /// Every node's log tail (for a failure message).
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .chain(&self.sentinels)
            .map(RedisNode::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SentinelTopology {
    fn drop(&mut self) {
        let tails = self.log_tails();
        report_on_panic(&mut self.dir, tails);
    }
}

/// Six nodes, three primaries with one replica each, made with
/// `redis-cli --cluster create`.
pub struct ClusterTopology {
    /// The nodes, in start order (their roles change with failovers).
    pub nodes: Vec<RedisNode>,
    dir: tempfile::TempDir,
}

impl ClusterTopology {
    /// Starts six nodes, creates the Cluster and waits until every node
    /// reports `cluster_state:ok` with six known nodes and every replica is
    /// in sync.
    pub fn start() -> ClusterTopology {
        let dir = tempfile::Builder::new()
            .prefix("redis-cluster-")
            .tempdir()
            .expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port_pair();
            let mut args = data_node_args(port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ]
                .map(String::from),
            );
            nodes.push(RedisNode::start("node", dir.path(), port, &args));
        }
        for node in &mut nodes {
            node.wait_until_up(FORM_TIMEOUT);
        }
        let topology = ClusterTopology { nodes, dir };
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                topology
                    .nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        wait_for(
            "the Cluster to be ok on every node",
            FORM_TIMEOUT,
            || {
                topology.nodes.iter().all(|node| {
                    let info: redis::RedisResult<String> =
                        node.query(redis::cmd("CLUSTER").arg("INFO"));
                    info.is_ok_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains("cluster_known_nodes:6")
                            && info.contains("cluster_slots_ok:16384")
                    })
                })
            },
            || topology.log_tails(),
        );
        wait_for(
            "every replica to sync",
            FORM_TIMEOUT,
            || {
                topology.nodes.iter().all(|node| {
                    match node.info_field("replication", "role").as_deref() {
                        Some("master") => true,
                        Some("slave") => {
                            node.info_field("replication", "master_link_status")
                                .as_deref()
                                == Some("up")
                        }
                        _ => false,
                    }
                })
            },
            || topology.log_tails(),
        );
        topology
    }

    /// `redis+cluster://127.0.0.1:<p1>,...` naming every node (the client
    /// needs one that answers; naming all survives the loss of any).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The port of the primary that serves `key`'s slot, as the first
    /// live node sees the slot map.
    pub fn primary_port_for_key(&self, key: &str) -> Option<u16> {
        self.nodes.iter().find_map(|node| {
            let slot: i64 = node
                .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .ok()?;
            let slots: Value = node.query(redis::cmd("CLUSTER").arg("SLOTS")).ok()?;
            primary_of_slot(&slots, slot)
        })
    }

    /// `count` prefixes (`{stem}0`, `{stem}1`, ...) whose `{PREFIX}` slots
    /// belong to `count` different primaries, so that each datastore lives
    /// on a node of its own.
    pub fn prefixes_on_distinct_primaries(&self, stem: &str, count: usize) -> Vec<String> {
        let mut primaries = std::collections::BTreeSet::new();
        let mut chosen = Vec::new();
        for candidate in (0..500).map(|n| format!("{stem}{n}")) {
            let port = self
                .primary_port_for_key(&format!("{{{candidate}}}:probe"))
                .expect("a live node knows the slot map");
            if primaries.insert(port) {
                chosen.push(candidate);
                if chosen.len() == count {
                    return chosen;
                }
            }
        }
        panic!("500 prefixes hash to fewer than {count} primaries");
    }

    /// The node serving `key`'s slot as primary now.
    pub fn primary_for_key(&mut self, key: &str) -> &mut RedisNode {
        let port = self
            .primary_port_for_key(key)
            .expect("a live node knows the slot map");
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("the primary is one of our nodes")
    }

    /// `kill -9` of the primary serving `key`'s slot; returns its port.
    pub fn kill_primary_for_key(&mut self, key: &str) -> u16 {
        let node = self.primary_for_key(key);
        node.kill9();
        node.port
    }

    /// Waits until a live node that calls itself primary serves `key`'s
    /// slot, other than `old_port`, and the Cluster is ok again; returns
    /// its port.
    pub fn wait_for_new_primary(&self, key: &str, old_port: u16) -> u16 {
        let mut new_port = None;
        wait_for(
            "a replica to take over the slot",
            FAILOVER_TIMEOUT,
            || {
                let Some(port) = self.primary_port_for_key(key) else {
                    return false;
                };
                let node = self.nodes.iter().find(|node| node.port == port);
                let ok = port != old_port
                    && node.is_some_and(|node| {
                        node.info_field("replication", "role").as_deref() == Some("master")
                            && node
                                .query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                                .is_ok_and(|info| info.contains("cluster_state:ok"))
                    });
                if ok {
                    new_port = Some(port);
                }
                ok
            },
            || self.log_tails(),
        );
        new_port.expect("set when the wait ends")
    }

    /// A connection through the crate's cluster client (follows the slot
    /// map), for test set-up and assertions.
    pub fn cluster_connection(&self) -> redis::cluster::ClusterConnection {
        let nodes: Vec<String> = self.nodes.iter().map(RedisNode::url).collect();
        redis::cluster::ClusterClient::new(nodes)
            .and_then(|client| client.get_connection())
            .expect("connect to the Cluster")
    }

    /// Every node's log tail (for a failure message).
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(RedisNode::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ClusterTopology {
    fn drop(&mut self) {
        let tails = self.log_tails();
        report_on_panic(&mut self.dir, tails);
    }
}

/// The primary's port in a `CLUSTER SLOTS` reply for `slot`.
fn primary_of_slot(slots: &Value, slot: i64) -> Option<u16> {
    let Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        if !(*start..=*end).contains(&slot) {
            return None;
        }
        match primary.get(1) {
            Some(Value::Int(port)) => u16::try_from(*port).ok(),
            _ => None,
        }
    })
}

/// One `redis-server` that speaks only TLS, with a certificate authority
/// and a server certificate (for `127.0.0.1` and `localhost`) made here.
pub struct TlsServer {
    /// The server.
    pub node: RedisNode,
    /// The PEM file of the authority that signed the server's certificate:
    /// give it to clients as `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// Makes the certificates and starts the server on a TLS port (its
    /// plain port is off).
    pub fn start() -> TlsServer {
        let dir = tempfile::Builder::new()
            .prefix("redis-tls-")
            .tempdir()
            .expect("temp dir");
        let certificates = TestCertificates::generate();
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&ca_file, &certificates.ca_pem).expect("write ca.pem");
        std::fs::write(&cert_file, &certificates.server_pem).expect("write server.pem");
        std::fs::write(&key_file, &certificates.server_key_pem).expect("write server.key");
        let port = free_port_pair();
        let mut args = data_node_args(port);
        args[1] = "0".into(); // no plain port
        args.extend(["--tls-port".to_string(), port.to_string()]);
        for (flag, path) in [
            ("--tls-cert-file", &cert_file),
            ("--tls-key-file", &key_file),
            ("--tls-ca-cert-file", &ca_file),
        ] {
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        args.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
        let node = RedisNode::start("tls", dir.path(), port, &args);
        let mut server = TlsServer {
            node,
            ca_file,
            _dir: dir,
        };
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            match server.connection() {
                Ok(_) => break,
                Err(err) => {
                    assert!(
                        server.node.is_running(),
                        "redis-server --tls-port exited at start (built without TLS?)\n{}",
                        server.node.log_tail()
                    );
                    assert!(
                        Instant::now() < deadline,
                        "the TLS server does not answer: {err}\n{}",
                        server.node.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        server
    }

    /// `rediss://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.node.port)
    }

    /// A TLS connection that trusts the test authority.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let root_cert = std::fs::read(&self.ca_file).expect("read ca.pem");
        let client = redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }
}

/// A certificate authority and a server certificate it signed, in PEM.
pub struct TestCertificates {
    /// The authority's certificate.
    pub ca_pem: String,
    /// The server's certificate (SAN `127.0.0.1`, `localhost`).
    pub server_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
}

impl TestCertificates {
    /// Fresh keys and certificates, valid from now on.
    pub fn generate() -> TestCertificates {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "migration tests CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        TestCertificates {
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }
}
