//! The state every handler shares: one `Clone` handle. axum clones it for
//! every extractor of every request (the auth layer, the handler), so it is
//! one `Arc` around the handles ([`SharedState`]), reached through `Deref`
//! (`state.redis`, `state.keys`, ...).

use std::sync::Arc;

use axum::body::Bytes;
use migration_shared::config::{AuthConfig, Config};
use migration_shared::datastore::Datastore;
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_shared::redis_client::RedisConnection;

use tokio_util::sync::CancellationToken;

use crate::coalesced_read::CoalescedRead;
use crate::metrics::HttpMetrics;
use crate::output_cache::OutputCache;
use crate::routes::stream::StreamSlots;

/// Shared by all handlers: a cheap handle to [`SharedState`].
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What every handler reads.
pub struct SharedState {
    /// The configuration, parsed once at start.
    pub config: Arc<Config>,
    /// The migration registry, built once at start.
    pub registry: Arc<Registry>,
    /// Key names under `REDIS_KEY_PREFIX`.
    pub keys: Keys,
    /// The shared, self-reconnecting Redis connection.
    pub redis: RedisConnection,
    /// The datastore over that connection.
    pub datastore: Datastore,
    /// This replica's copy of the current job's output (`progress` reads
    /// only new entries).
    pub output_cache: OutputCache,
    /// The `progress` reads of this replica: concurrent polls share one
    /// (the rendered answer, or the read's error).
    pub progress_reads: Arc<CoalescedRead<Result<Bytes, redis::RedisError>>>,
    /// This replica's HTTP figures for `/metrics`.
    pub http_metrics: HttpMetrics,
    /// The cap on open output streams.
    pub stream_slots: StreamSlots,
    /// Cancelled when the api starts draining: long-lived responses (the
    /// output stream) end, so the drain does not wait for them.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State for `config`; connects to Redis lazily (the api starts while
    /// Redis is down and answers 503 until it is back).
    pub fn new(config: Config, registry: Arc<Registry>) -> redis::RedisResult<AppState> {
        let redis = migration_shared::redis_client::connection_manager(&config.redis_url)?;
        let keys = Keys::new(&config.key_prefix);
        let datastore = Datastore::new(
            redis.clone(),
            keys.clone(),
            registry.target_migration_index(),
        );
        let stream_slots = StreamSlots::new(config.migration_stream_max_clients);
        Ok(AppState(Arc::new(SharedState {
            stream_slots,
            config: Arc::new(config),
            registry,
            keys,
            redis,
            datastore,
            output_cache: OutputCache::default(),
            progress_reads: Arc::default(),
            http_metrics: HttpMetrics::default(),
            shutdown: CancellationToken::new(),
        })))
    }

    /// How `/internal/` requests are authenticated.
    pub fn auth(&self) -> &AuthConfig {
        &self.config.auth
    }
}
