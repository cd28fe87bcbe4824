//! How both binaries connect to Redis: the one place that knows whether it
//! is one server, a Sentinel-managed primary or a Redis Cluster (SPEC 2, 8).
//!
//! Everything else names [`RedisConnection`] (non-blocking commands, cheap
//! to clone, shared by every route, the engine and the runner) and
//! [`BlockingConnection`] (one reader's own connection for `BLPOP` /
//! `XREAD BLOCK`), both implementing [`redis::aio::ConnectionLike`], and
//! never learns which deployment it talks to. The kind comes from the
//! `REDIS_URL` scheme ([`RedisTarget`]):
//!
//! - **single server** (`redis://`, `rediss://`): the crate's
//!   `ConnectionManager`, created lazily (a binary starts, and its health
//!   route answers 503, while Redis is down) and reconnecting by itself.
//! - **Sentinel** (`redis+sentinel://`): the crate's Sentinel client names
//!   the primary; a `ConnectionManager` talks to it. A connection error or a
//!   `READONLY` answer (the node we knew was demoted) drops that manager, and
//!   the next command asks the sentinels again, so a failover needs no
//!   restart ([`sentinel`]).
//! - **Cluster** (`redis+cluster://`): the crate's async cluster client,
//!   which routes each command by its first key's slot and follows
//!   `MOVED`/`ASK` and slot-map changes itself. All keys of a datastore
//!   share the `{PREFIX}` hash tag, so every script and every `MULTI` runs on
//!   one node.
//!
//! Timeouts are short so that a request against an unreachable Redis fails
//! in about a second instead of hanging: SPEC 4.3 wants a prompt 503. This
//! module does not retry commands whose outcome is unknown (a dropped
//! connection after a write was sent): that decision belongs to the caller
//! (idempotency keys, fencing tokens). It only retries a command that Redis
//! refused without running it (`READONLY` on a demoted Sentinel primary).

mod sentinel;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    Value,
};
use tokio::sync::OnceCell;

pub use url::{ClusterTarget, RedisTarget, RedisUrlError, SentinelTarget};

/// Longest time one command may take before it counts as failed. Generous:
/// a bulk write or a finalize flip is one long script.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time a connection attempt may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest time finding the primary (asking the sentinels) or the slot map
/// (the first cluster connection) may take.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The connection every route, the engine and the runner use for
/// non-blocking commands: cheap to clone, multiplexed, self-reconnecting,
/// whatever the deployment.
#[derive(Clone)]
pub struct RedisConnection(Shared);

#[derive(Clone)]
enum Shared {
    Single(ConnectionManager),
    Sentinel(sentinel::SentinelConnection),
    Cluster(LazyCluster),
}

/// A connection of its own for one blocking reader (`BLPOP`, `XREAD BLOCK`),
/// without a response timeout (the command's own timeout bounds the wait).
/// On a Cluster it is a cluster connection of its own, so the blocking
/// command goes to the node that owns its key's slot. After an error, open
/// a new one with [`dedicated_connection`]: on Sentinel that asks for the
/// primary again.
#[derive(Clone)]
pub struct BlockingConnection(Dedicated);

#[derive(Clone)]
enum Dedicated {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// The connection for non-blocking commands, for `url` (`REDIS_URL`). It
/// connects lazily: this fails only for a URL that does not parse, which
/// [`crate::config`] has already refused at start.
pub fn connection_manager(url: &str) -> RedisResult<RedisConnection> {
    let target = RedisTarget::parse(url).map_err(invalid_url)?;
    connect(&target)
}

/// [`connection_manager`] with another response timeout than
/// [`RESPONSE_TIMEOUT`] (tests of a stalled Redis use a short one).
pub fn connection_manager_with_response_timeout(
    url: &str,
    response_timeout: Duration,
) -> RedisResult<RedisConnection> {
    let target = RedisTarget::parse(url).map_err(invalid_url)?;
    connect_with(&target, response_timeout)
}

/// [`connection_manager`] for a parsed target.
pub fn connect(target: &RedisTarget) -> RedisResult<RedisConnection> {
    connect_with(target, RESPONSE_TIMEOUT)
}

fn connect_with(target: &RedisTarget, response_timeout: Duration) -> RedisResult<RedisConnection> {
    let shared = match target {
        RedisTarget::Single(info) => {
            let client = Client::open(info.clone())?;
            Shared::Single(ConnectionManager::new_lazy_with_config(
                client,
                manager_config(response_timeout),
            )?)
        }
        RedisTarget::Sentinel(target) => Shared::Sentinel(sentinel::SentinelConnection::new(
            target.clone(),
            response_timeout,
        )?),
        RedisTarget::Cluster(target) => Shared::Cluster(LazyCluster {
            client: Arc::new(cluster_client(target, Some(response_timeout))?),
            connection: Arc::new(OnceCell::new()),
        }),
    };
    Ok(RedisConnection(shared))
}

/// A connection of its own, for blocking commands.
pub async fn dedicated_connection(url: &str) -> RedisResult<BlockingConnection> {
    let target = RedisTarget::parse(url).map_err(invalid_url)?;
    let dedicated = match &target {
        RedisTarget::Single(info) => {
            Dedicated::Single(multiplexed(Client::open(info.clone())?).await?)
        }
        RedisTarget::Sentinel(target) => {
            let client = sentinel::resolve_primary(target).await?;
            Dedicated::Single(multiplexed(client).await?)
        }
        RedisTarget::Cluster(target) => {
            let client = cluster_client(target, None)?;
            let connection = tokio::time::timeout(DISCOVERY_TIMEOUT, client.get_async_connection())
                .await
                .map_err(|_| discovery_timeout("the Redis Cluster's slot map"))??;
            Dedicated::Cluster(connection)
        }
    };
    Ok(BlockingConnection(dedicated))
}

/// The single-server manager's settings: one quick retry, short connect
/// and generous response timeouts.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
}

async fn multiplexed(client: Client) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The crate's cluster client. Its retries (after `MOVED`, `ASK`,
/// `TRYAGAIN`, `CLUSTERDOWN` or a lost node, refreshing the slot map on the
/// way) are bounded to a few seconds, about one failover: longer, and a
/// route would miss SPEC 4.3's five seconds; the caller retries after that.
fn cluster_client(
    target: &ClusterTarget,
    response_timeout: Option<Duration>,
) -> RedisResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(target.node_infos())
        .connection_timeout(CONNECTION_TIMEOUT)
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(800);
    if let Some(username) = &target.username {
        builder = builder.username(username);
    }
    if let Some(password) = &target.password {
        builder = builder.password(password);
    }
    if let Some(timeout) = response_timeout {
        builder = builder.response_timeout(timeout);
    }
    builder.build()
}

/// A cluster connection made at the first command, not at start, so a
/// binary starts while the Cluster is down (as with a single server). Once
/// made, the crate's connection keeps itself up to date.
#[derive(Clone)]
struct LazyCluster {
    client: Arc<ClusterClient>,
    connection: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                tokio::time::timeout(DISCOVERY_TIMEOUT, self.client.get_async_connection())
                    .await
                    .map_err(|_| discovery_timeout("the Redis Cluster's slot map"))?
            })
            .await?;
        Ok(connection.clone())
    }
}

fn invalid_url(err: RedisUrlError) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid REDIS_URL",
        err.to_string(),
    ))
}

fn discovery_timeout(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out finding {what}"),
    ))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Shared::Single(manager) => manager.req_packed_command(cmd),
            Shared::Sentinel(sentinel) => sentinel.req_packed_command(cmd),
            Shared::Cluster(cluster) => {
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Shared::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Shared::Sentinel(sentinel) => sentinel.req_packed_commands(pipeline, offset, count),
            Shared::Cluster(cluster) => Box::pin(async move {
                cluster
                    .connection()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Shared::Single(manager) => manager.get_db(),
            Shared::Sentinel(sentinel) => sentinel.get_db(),
            Shared::Cluster(_) => 0,
        }
    }
}

impl ConnectionLike for BlockingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Dedicated::Single(connection) => connection.req_packed_command(cmd),
            Dedicated::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Dedicated::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Dedicated::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Dedicated::Single(connection) => connection.get_db(),
            Dedicated::Cluster(_) => 0,
        }
    }
}
