//! The Sentinel-managed primary: ask the sentinels, talk to the primary,
//! ask again when it is gone.
//!
//! The crate's Sentinel client does the discovery (it asks each sentinel
//! for the primary of the service, skips one that flags it down, and checks
//! the named node's `ROLE`). It does not watch for failovers, so this
//! module decides *when* to ask: at the first command, and after a command
//! failed in a way that says the node we knew may no longer be the primary
//! (the connection failed or timed out, or the node answered `READONLY`
//! because it was demoted to a replica). Between two such events every
//! command goes straight to the cached primary's `ConnectionManager`, so the
//! steady state costs nothing.
//!
//! A watcher task also asks once a second, for the failover whose old
//! primary stays up and keeps accepting writes until Sentinel demotes it
//! ([`watch`]).
//!
//! Asking is serialised by a mutex, so a burst of failing commands after a
//! failover makes one round of questions, not one per command; the commands
//! behind it find the new primary already there. What an operator sees in
//! the log is one `warn` when the primary is lost and one `info` naming the
//! new one (docs/redis-deployments.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::url::SentinelTarget;
use super::{discovery_timeout, manager_config, DISCOVERY_TIMEOUT};

/// A [`super::RedisConnection`] on a Sentinel-managed primary.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// The response timeout of the primary's connection manager.
    response_timeout: Duration,
    /// Whether the watcher task runs (started at the first command, where a
    /// runtime is certain).
    watching: AtomicBool,
    target: SentinelTarget,
    /// The crate's Sentinel client; locked while asking.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary we talk to, until a failure says it may not be one.
    primary: Mutex<Option<Primary>>,
    generations: AtomicU64,
}

#[derive(Clone)]
struct Primary {
    /// Which resolution made it, so that a late failure of an old primary
    /// never forgets a newer one.
    generation: u64,
    address: String,
    manager: ConnectionManager,
}

impl SentinelConnection {
    pub(super) fn new(
        target: SentinelTarget,
        response_timeout: Duration,
    ) -> RedisResult<SentinelConnection> {
        Ok(SentinelConnection {
            shared: Arc::new(Shared {
                response_timeout,
                watching: AtomicBool::new(false),
                sentinels: tokio::sync::Mutex::new(sentinel_client(&target)?),
                target,
                primary: Mutex::new(None),
                generations: AtomicU64::new(0),
            }),
        })
    }

    pub(super) fn get_db(&self) -> i64 {
        self.shared.target.db
    }

    fn cached(&self) -> Option<Primary> {
        self.shared.cached()
    }

    /// The primary, asking the sentinels if we do not know one.
    async fn primary(&self) -> RedisResult<Primary> {
        if !self.shared.watching.swap(true, Ordering::Relaxed) {
            tokio::spawn(watch(Arc::downgrade(&self.shared)));
        }
        if let Some(primary) = self.cached() {
            return Ok(primary);
        }
        let mut sentinels = self.shared.sentinels.lock().await;
        // Another command may have asked while we waited for the lock.
        if let Some(primary) = self.cached() {
            return Ok(primary);
        }
        let client = tokio::time::timeout(DISCOVERY_TIMEOUT, sentinels.async_get_client())
            .await
            .map_err(|_| discovery_timeout("the primary from the sentinels"))?
            .inspect_err(|err| {
                tracing::warn!(
                    service = %self.shared.target.service,
                    error = %err,
                    "the sentinels name no reachable primary yet"
                )
            })?;
        let address = client.get_connection_info().addr().to_string();
        let manager = ConnectionManager::new_lazy_with_config(
            client,
            manager_config(self.shared.response_timeout),
        )?;
        let primary = Primary {
            generation: self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1,
            address,
            manager,
        };
        tracing::info!(
            service = %self.shared.target.service,
            primary = %primary.address,
            "Sentinel names the Redis primary"
        );
        *self
            .shared
            .primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(primary.clone());
        Ok(primary)
    }

    /// Forgets `primary` after `err`, if it is still the one we know.
    fn forget(&self, primary: &Primary, err: &RedisError) {
        let mut current = self
            .shared
            .primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current
            .as_ref()
            .is_some_and(|known| known.generation == primary.generation)
        {
            *current = None;
            tracing::warn!(
                service = %self.shared.target.service,
                primary = %primary.address,
                error = %err,
                "lost the Redis primary; asking the sentinels again"
            );
        }
    }

    /// Runs `request` on the primary; after a failure that says the primary
    /// may have moved, forgets it. A `READONLY` refusal ran nothing, so it
    /// is retried once on the primary the sentinels name now.
    async fn with_primary<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let primary = self.primary().await?;
            match request(primary.manager.clone()).await {
                Err(err) if primary_may_have_moved(&err) => {
                    self.forget(&primary, &err);
                    if is_read_only(&err) && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
                result => return result,
            }
        }
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.with_primary(|mut manager| async move { manager.req_packed_command(cmd).await })
                .await
        })
    }

    pub(super) fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.with_primary(|mut manager| async move {
                manager.req_packed_commands(pipeline, offset, count).await
            })
            .await
        })
    }
}

impl Shared {
    fn cached(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// How often the watcher asks the sentinels whether the primary changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Asks the sentinels every [`WATCH_INTERVAL`] which node is the primary,
/// and drops the cached one when they name another. A failure tells us when
/// a primary died; this catches the failover whose old primary stays up (a
/// manual `SENTINEL FAILOVER`, a partition that heals): until Sentinel
/// demotes it, that node still accepts writes, which the demotion then
/// discards. It shortens that window to about a second;
/// `min-replicas-to-write` on the nodes closes it (docs/redis-deployments.md).
/// Ends when the last clone of the connection is dropped.
async fn watch(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Nothing cached: the next command asks anyway.
        let Some(known) = shared.cached() else {
            continue;
        };
        let named = {
            let mut sentinels = shared.sentinels.lock().await;
            tokio::time::timeout(DISCOVERY_TIMEOUT, sentinels.async_get_client()).await
        };
        let Ok(Ok(client)) = named else {
            continue; // no answer now; commands report their own failures
        };
        let address = client.get_connection_info().addr().to_string();
        if address != known.address {
            let mut current = shared
                .primary
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if current
                .as_ref()
                .is_some_and(|primary| primary.generation == known.generation)
            {
                *current = None;
                tracing::warn!(
                    service = %shared.target.service,
                    old = %known.address,
                    new = %address,
                    "the sentinels name another primary; switching"
                );
            }
        }
    }
}

/// A client for the primary the sentinels name now (for a blocking
/// reader's connection of its own).
pub(super) async fn resolve_primary(target: &SentinelTarget) -> RedisResult<Client> {
    let mut sentinels = sentinel_client(target)?;
    tokio::time::timeout(DISCOVERY_TIMEOUT, sentinels.async_get_client())
        .await
        .map_err(|_| discovery_timeout("the primary from the sentinels"))?
}

fn sentinel_client(target: &SentinelTarget) -> RedisResult<SentinelClient> {
    let addresses = target
        .sentinels
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    let mut builder =
        SentinelClientBuilder::new(addresses, &target.service, SentinelServerType::Master)?
            .set_client_to_redis_db(target.db);
    if let Some(username) = &target.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &target.password {
        builder = builder.set_client_to_redis_password(password);
    }
    builder.build()
}

fn is_read_only(err: &RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// Errors after which the node we talk to may no longer be the primary.
fn primary_may_have_moved(err: &RedisError) -> bool {
    is_read_only(err)
        || err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
}
