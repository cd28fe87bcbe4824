//! The job runner: the loop of one `migration-worker` process (SPEC 7).
//!
//! One process is one worker with a fresh uuid identity. It announces itself
//! in the `workers` set ([`presence`]), waits for work without polling
//! (`BLPOP` on `job:wakeup`, with a timeout of half a lease so that an
//! expired lease is noticed within about one lease), claims the current job
//! through `job_claim.lua` (a queued job, or a takeover of an expired lease),
//! and runs it ([`job`]) while [`lease`] renews the lock in a task of its
//! own. Output goes through the fenced [`sink`].
//!
//! Redis being down is never fatal: every Redis failure is logged and
//! retried with a capped backoff. A job whose worker lost touch with Redis
//! (a restart, a failover, a dropped connection) is not given up: the
//! worker claims it again as the job to *resume*, and `job_claim.lua` hands
//! it back to it, uncounted, when it is still its own (SPEC 7.1). Lease
//! renewal and presence run on a connection of their own ([`Connections`]).
//!
//! Shutdown is the [`CancellationToken`] given to [`run`]: the running job
//! stops at its next durable point and is handed back; the loop then ends
//! and the worker leaves the `workers` set.
//!
//! What a command does to the datastore is the engine's ([`crate::engine`]).

mod job;
mod lease;
mod presence;
pub mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use migration_shared::config::Config;
use migration_shared::jobs::{self, ClaimOutcome};
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_shared::redis_client;
use migration_shared::redis_client::{BlockingConnection, RedisConnection};
use tokio_util::sync::CancellationToken;

use job::RunEnd;
pub use sink::RedisOutputSink;

/// What a worker needs to run jobs.
#[derive(Clone)]
pub struct WorkerSettings {
    /// `REDIS_URL` (for the dedicated blocking connection).
    pub redis_url: String,
    /// Key names under `REDIS_KEY_PREFIX`.
    pub keys: Keys,
    /// `WORKER_LOCK_TTL_MS`: the lease of the global lock.
    pub lease: Duration,
    /// `WORKER_MAX_POSITIONS_PER_SECOND`, passed to the engine.
    pub max_positions_per_second: u32,
    /// `WORKER_KEYFRAME_CACHE_MODELS`, passed to the engine.
    pub keyframe_cache_models: usize,
    /// The migrations this worker runs.
    pub registry: Arc<Registry>,
    /// The registry's fingerprint: jobs accepted under another are refused.
    pub fingerprint: String,
}

impl WorkerSettings {
    /// Settings from the configuration and the loaded registry.
    pub fn new(config: &Config, registry: Arc<Registry>, fingerprint: String) -> WorkerSettings {
        WorkerSettings {
            redis_url: config.redis_url.clone(),
            keys: Keys::new(&config.key_prefix),
            lease: config.worker_lock_ttl,
            max_positions_per_second: config.worker_max_positions_per_second,
            keyframe_cache_models: config.worker_keyframe_cache_models,
            registry,
            fingerprint,
        }
    }
}

/// The runner could not start at all (a bad `REDIS_URL`); everything later
/// is retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The Redis client could not be built.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The worker's Redis connections. Each is a connection of its own (its
/// own TCP connection, reconnecting by itself), so traffic on one never
/// queues behind the other's.
#[derive(Clone)]
pub(crate) struct Connections {
    /// The engine's reads and checkpoints, output, claims, finishing.
    pub(crate) engine: RedisConnection,
    /// Lease renewal and presence only (SPEC 7.1): small commands that must
    /// never wait behind a big checkpoint or reply on `engine`.
    pub(crate) control: RedisConnection,
}

impl Connections {
    /// Opens both (lazily: a worker starts while Redis is down).
    pub(crate) fn open(url: &str) -> redis::RedisResult<Connections> {
        Ok(Connections {
            engine: redis_client::connection_manager(url)?,
            control: redis_client::connection_manager(url)?,
        })
    }
}

/// Runs jobs until `shutdown` is cancelled; returns once the current job (if
/// any) was handed back and the worker left the `workers` set.
pub async fn run(settings: WorkerSettings, shutdown: CancellationToken) -> Result<(), RunnerError> {
    let conns = Connections::open(&settings.redis_url)?;
    let worker_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(worker_id = %worker_id, lease_ms = settings.lease.as_millis() as u64,
        fingerprint = %settings.fingerprint, "migration-worker started");

    let presence = tokio::spawn(presence::keep_present(
        conns.control.clone(),
        settings.keys.clone(),
        worker_id.clone(),
        settings.lease,
        shutdown.clone(),
    ));

    let mut worker = Worker {
        settings,
        conns,
        worker_id,
        blocking: None,
        backoff: Backoff::new(),
        eviction_policy_checked: false,
        resume: None,
    };
    worker.job_loop(&shutdown).await;

    if let Err(err) = presence.await {
        tracing::warn!(error = %err, "presence task failed");
    }
    tracing::info!(worker_id = %worker.worker_id, "migration-worker stopped");
    Ok(())
}

struct Worker {
    settings: WorkerSettings,
    conns: Connections,
    worker_id: String,
    /// The connection for `BLPOP`, opened on first use and after failures.
    blocking: Option<BlockingConnection>,
    backoff: Backoff,
    eviction_policy_checked: bool,
    /// The job this worker stopped because it lost touch with Redis, and
    /// until when its lease would have lasted: a claim before then resumes
    /// it if it is still ours (SPEC 7.1).
    resume: Option<(String, tokio::time::Instant)>,
}

impl Worker {
    async fn job_loop(&mut self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            if !self.eviction_policy_checked {
                self.eviction_policy_checked = warn_unless_noeviction(&mut self.conns.engine).await;
            }
            let claimed_at = tokio::time::Instant::now();
            let resume = self
                .resume
                .as_ref()
                .filter(|(_, until)| claimed_at < *until)
                .map(|(job_id, _)| job_id.as_str());
            let outcome = jobs::claim(
                &mut self.conns.engine,
                &self.settings.keys,
                &self.worker_id,
                &self.settings.fingerprint,
                self.settings.lease,
                resume,
            )
            .await;
            if outcome.is_ok() {
                if let Some((job_id, _)) = self.resume.take() {
                    match &outcome {
                        Ok(ClaimOutcome::Claimed(claimed)) if claimed.job_id == job_id => {}
                        _ => tracing::warn!(job_id = %job_id,
                            "lost the job's lease; it is someone else's now (or over)"),
                    }
                }
            }
            match outcome {
                Ok(ClaimOutcome::Claimed(claimed)) => {
                    self.backoff.reset();
                    tracing::info!(job_id = %claimed.job_id, command = %claimed.command,
                        fencing_token = claimed.fencing_token, attempts = claimed.attempts,
                        how = ?claimed.how, "claimed job");
                    let job_id = claimed.job_id.clone();
                    let end = job::run_claimed(
                        &self.settings,
                        &self.conns,
                        &self.worker_id,
                        claimed,
                        claimed_at,
                        shutdown,
                    )
                    .await;
                    match end {
                        RunEnd::Settled => {}
                        // Claim again at once: Redis may be back already.
                        RunEnd::LostTouch { resume_until } => {
                            self.resume = Some((job_id, resume_until))
                        }
                        // Give Redis a moment; the lease expires meanwhile.
                        RunEnd::GaveUp => self.pause(shutdown).await,
                    }
                }
                Ok(ClaimOutcome::Refused {
                    job_id,
                    job_fingerprint,
                }) => {
                    tracing::warn!(job_id = %job_id, job_fingerprint = %job_fingerprint,
                        worker_fingerprint = %self.settings.fingerprint,
                        "refused a job accepted with another migrations registry");
                }
                Ok(ClaimOutcome::Abandoned { job_id }) => {
                    tracing::warn!(job_id = %job_id, "job abandoned after too many takeovers");
                }
                Ok(ClaimOutcome::Idle) | Ok(ClaimOutcome::Busy { .. }) => {
                    self.backoff.reset();
                    self.wait_for_work(shutdown).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim a job; retrying");
                    self.pause(shutdown).await;
                }
            }
        }
    }

    /// Blocks until a wake-up signal (a job was queued or handed back), half
    /// a lease (to notice an expired lease of a dead worker), or shutdown.
    async fn wait_for_work(&mut self, shutdown: &CancellationToken) {
        let conn = match self.blocking.as_mut() {
            Some(conn) => conn,
            None => match redis_client::dedicated_connection(&self.settings.redis_url).await {
                Ok(conn) => self.blocking.insert(conn),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open the blocking connection; retrying");
                    return self.pause(shutdown).await;
                }
            },
        };
        let timeout_seconds = (self.settings.lease.as_secs_f64() / 2.0).max(0.05);
        let mut command = redis::cmd("BLPOP");
        command
            .arg(self.settings.keys.job_wakeup())
            .arg(timeout_seconds);
        let blpop = command.query_async::<Option<(String, String)>>(conn);
        // A hung connection must not hang the worker: bound the wait.
        let bound = self.settings.lease + Duration::from_secs(1);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(bound, blpop) => result,
        };
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "waiting for work failed; reconnecting");
                self.blocking = None;
                self.pause(shutdown).await;
            }
            Err(_) => self.blocking = None,
        }
    }

    async fn pause(&mut self, shutdown: &CancellationToken) {
        let mut delay = self.backoff.next_delay();
        if self.resume.is_some() {
            // Our job waits to be resumed: come back well within a lease,
            // before another worker may take it over.
            delay = delay.min((self.settings.lease / 4).max(Backoff::FIRST));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Logs a warning when Redis may evict keys (SPEC 7). Returns true once the
/// question is settled (answered, or CONFIG is forbidden, as on managed
/// Redis); false when Redis could not be reached, to ask again later.
async fn warn_unless_noeviction(conn: &mut RedisConnection) -> bool {
    let reply = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(conn)
        .await;
    match reply {
        Ok(values) => {
            match values.get(1) {
                Some(policy) if policy == "noeviction" => {}
                Some(policy) => tracing::warn!(
                    maxmemory_policy = %policy,
                    "Redis maxmemory-policy is not noeviction: Redis may evict job, lock or datastore keys; configure maxmemory-policy noeviction"
                ),
                None => tracing::debug!("CONFIG GET maxmemory-policy gave no value"),
            }
            true
        }
        Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() => false,
        Err(err) => {
            tracing::debug!(error = %err, "cannot check maxmemory-policy (CONFIG not allowed?)");
            true
        }
    }
}

/// Capped exponential backoff for retrying Redis.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}
