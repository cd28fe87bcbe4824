//! The migration engine (SPEC 6.1): `migrate`, `finalize` and `reset`, the
//! only code that changes the migration area.
//!
//! The job runner builds one [`Engine`] per job run and calls [`Engine::run`];
//! every line of output goes to an [`OutputSink`]. Every write the engine makes
//! is a Lua script that first checks the run's fencing token against the lock
//! hash, so a run that lost its lease can never write again. The engine knows
//! nothing about jobs, leases or output streams: that is the runner's.

mod finalize;
mod keyframes;
mod migrate;
mod pace;
mod pool;
mod position;
mod reset;
mod store;
mod target_keyframe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use migration_shared::jobs::ProgressUpdate;
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_shared::redis_client::RedisConnection;
use tokio_util::sync::CancellationToken;

/// Target keyframe models kept in memory by default (about 1 KB each): a
/// cache of this size holds the whole keyframe of most datastores, and
/// bounds the worker's memory on the others (`target_keyframe.rs`).
pub const KEYFRAME_CACHE_MODELS: usize = 50_000;

/// A migration command the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Migrate every position not yet fully migrated into the migration area.
    Migrate,
    /// Migrate what is left, then make the migration area the live datastore.
    Finalize,
    /// Delete all migration data (not live data).
    Reset,
}

/// The fencing token this run holds; every migration-area write checks
/// `HGET {P}:lock fencing_token == token` in the same script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The lock's `fencing_token` when this run took the job.
    pub token: u64,
}

/// How a run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    /// One output line per migrated position.
    pub verbose: bool,
    /// Upper bound of migrated positions per second; `0`: no limit.
    pub max_positions_per_second: u32,
}

/// Where the engine's output lines go (the job's output stream).
pub trait OutputSink: Send {
    /// Appends one line (without a trailing newline).
    fn line(&mut self, line: String) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The structured progress after a checkpoint landed (and once when the
    /// migrate loop starts). A sink may keep only the latest; by default it
    /// is dropped (tests that only read lines).
    fn progress(
        &mut self,
        update: ProgressUpdate,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = update;
        async { Ok(()) }
    }
}

/// Why a run stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The migration failed: the job finishes with this as its `exception`.
    #[error("{0}")]
    Failed(String),
    /// The lock was lost: write nothing more, just stop.
    #[error("the fencing token no longer matches the lock: this run lost the lock")]
    Fenced,
    /// The cancel token fired (shutdown, or the runner saw the lease lost):
    /// stopped at a durable point; hand the job back. Also the end of a
    /// Redis outage that outlasted the run (the engine retries failed calls
    /// until the token fires; see `store.rs`).
    #[error("cancelled at a durable point")]
    Cancelled,
    /// Redis failed for good (not an outage: e.g. a script error, a wrong
    /// type, out of memory): stop; the job is retried or taken over.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Runs migration commands against one datastore.
pub struct Engine {
    store: store::Store,
    registry: Arc<Registry>,
    options: EngineOptions,
    cancel: CancellationToken,
    batch_positions: u64,
    keyframe_flush_models: usize,
    keyframe_flush_interval: Duration,
    lowest_flush_interval: Duration,
    keyframe_cache_models: usize,
    checkpoint_depth: usize,
}

impl Engine {
    /// An engine for one job run.
    pub fn new(
        conn: RedisConnection,
        keys: Keys,
        registry: Arc<Registry>,
        fence: Fence,
        options: EngineOptions,
        cancel: CancellationToken,
    ) -> Engine {
        Engine {
            store: store::Store::new(conn, keys, fence.token, cancel.clone()),
            registry,
            options,
            cancel,
            batch_positions: migrate::BATCH_POSITIONS,
            keyframe_flush_models: migrate::KEYFRAME_FLUSH_MODELS,
            keyframe_flush_interval: migrate::KEYFRAME_FLUSH_INTERVAL,
            lowest_flush_interval: migrate::LOWEST_FLUSH_INTERVAL,
            keyframe_cache_models: KEYFRAME_CACHE_MODELS,
            checkpoint_depth: migrate::CHECKPOINT_DEPTH,
        }
    }

    /// The throttle in positions a second (0: no limit).
    fn rate(&self) -> u64 {
        u64::from(self.options.max_positions_per_second)
    }

    /// Sets the number of positions per checkpoint (default 256; at least
    /// 1). For tests that stop a run after an exact number of positions, and
    /// for tuning; the throttle may make batches smaller still.
    #[doc(hidden)]
    pub fn with_batch_positions(mut self, positions: u64) -> Engine {
        self.batch_positions = positions.max(1);
        self
    }

    /// Sets how many changed (MI, model) pairs force a keyframe flush
    /// (default 50 000): the trade-off between the size of one checkpoint
    /// script (how long it blocks Redis) and the write volume on datastores
    /// with many models. For the benchmark and tuning.
    #[doc(hidden)]
    pub fn with_keyframe_flush_models(mut self, models: usize) -> Engine {
        self.keyframe_flush_models = models.max(1);
        self
    }

    /// Sets the longest time between two keyframe flushes (default 2 s) and
    /// between two flushes of the lowest keyframe below the target (default
    /// 30 s). For tests that need a flush at every checkpoint, or none but
    /// the forced ones (at the end and when stopping).
    #[doc(hidden)]
    pub fn with_flush_intervals(mut self, keyframes: Duration, lowest: Duration) -> Engine {
        self.keyframe_flush_interval = keyframes;
        self.lowest_flush_interval = lowest;
        self
    }

    /// Sets how many target keyframe models the run keeps in memory when no
    /// migration reads the context (default [`KEYFRAME_CACHE_MODELS`];
    /// `WORKER_KEYFRAME_CACHE_MODELS`): the worker's memory is bounded by
    /// this, not by the datastore's size. Smaller means more reads of
    /// models from Redis; a flush is forced when half of it changed.
    pub fn with_keyframe_cache_models(mut self, models: usize) -> Engine {
        self.keyframe_cache_models = models.max(2);
        self
    }

    /// Sets how many checkpoints may be in flight at once (default 3; at
    /// least 1). With 1 the run stops, or is fenced, exactly one batch after
    /// the last landed one: for tests that check exact stop points.
    #[doc(hidden)]
    pub fn with_checkpoint_depth(mut self, depth: usize) -> Engine {
        self.checkpoint_depth = depth.max(1);
        self
    }

    /// Runs the command to the end, or stops at the next durable point.
    pub async fn run<S: OutputSink>(
        &self,
        command: Command,
        sink: &mut S,
    ) -> Result<(), EngineError> {
        let target = self.registry.target_migration_index();
        let name = match command {
            Command::Migrate => "migrate",
            Command::Finalize => "finalize",
            Command::Reset => "reset",
        };
        sink.line(format!(
            "Started {name} (target migration index {target}, {} migrations in the registry)",
            self.registry.migrations().len()
        ))
        .await?;
        match command {
            Command::Migrate => {
                if let migrate::Migrated::Done { positions } = migrate::migrate(self, sink).await? {
                    sink.line(format!(
                        "Migrate finished: all {positions} positions are migrated to migration index {target}; call finalize to make them live"
                    ))
                    .await?;
                }
                Ok(())
            }
            Command::Finalize => finalize::finalize(self, sink).await,
            Command::Reset => reset::reset(self, sink).await,
        }
    }
}
