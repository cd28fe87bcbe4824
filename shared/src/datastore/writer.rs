//! The write path of the datastore (SPEC 5.1).
//!
//! Writes are optimistic, per model: read the migration index, the current
//! job and the touched models (one pipelined round trip), validate the whole
//! body in memory ([`super::plan`]), then commit with one Lua script
//! (`lua/datastore_commit.lua`) that re-checks exactly what the validation
//! depended on (each touched model, by the SHA-1 of its stored JSON; the MI;
//! the current job) and numbers the positions itself. Writers that touch
//! different models therefore never conflict, which a single version
//! counter (`ds:position`) used to make every pair of writers do. Writers
//! racing for the same models retry within the deadline.
//!
//! That alone still lets a stream of small writes to one model starve a
//! bulk body that touches it too (each validation of the bulk body takes
//! long, and each small commit outdates it), so a bulk body (at least
//! [`BULK_EVENTS`] events) first takes the short exclusive writer token
//! (`ds:writer_token`, a `SET NX` with the rest of its deadline as TTL; it
//! waits while another bulk body holds it). While the token is held every
//! other commit answers `locked` and waits a moment: the bulk body commits
//! in one attempt, and small writes pause for one bulk validation.
//!
//! Why not validate in Lua: Redis's cjson decodes integers into doubles and
//! prints them with 14 digits, which would silently change field values.
//! Here Lua never decodes a value: it only prepends `meta_position` to the
//! model JSON built here.
//!
//! Deadlines: the whole write spends at most [`WRITE_DEADLINE`] in Redis.
//! Until the commit is handed to the connection, a hung Redis costs nothing
//! but a `503` ([`WriteError::NoAnswer`]: certainly not written); once it
//! was handed over, a missing answer is [`WriteError::OutcomeUnknown`]
//! (`504`: retry with the same `Idempotency-Key`). A commit is not started
//! with less than [`COMMIT_BUDGET`] left.
//!
//! Cost: a body of any size is one read round trip plus one script call
//! (two more with an `Idempotency-Key`), so bulk imports are bound by
//! serialisation, not by round trips.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis_client::RedisConnection;
use serde_json::Value;
use tokio::time::Instant;

use super::event::Event;
use super::fqid::Fqid;
use super::idempotency::{
    body_fingerprint, Claim, IdempotencyKey, WriteAnswer, ANSWER_TTL, CLAIM_TTL,
};
use super::model::Model;
use super::plan::{plan_commit, CommitPlan, Snapshot};
use super::request::{parse_write_body, WriteRequest};
use crate::keys::Keys;
use crate::scripts::{
    DATASTORE_COMMIT, IDEMPOTENCY_BEGIN, IDEMPOTENCY_SETTLE, WRITER_TOKEN_RELEASE,
};

/// A body with at least this many events is a bulk body: it takes the
/// exclusive writer token before its first attempt.
pub const BULK_EVENTS: usize = 1_000;
/// The longest time one write spends in Redis (SPEC 4.3: every route answers
/// within 5 s; the api's 5 s timeout layer is only a backstop).
pub const WRITE_DEADLINE: Duration = Duration::from_millis(4000);
/// The least time left for which a commit is still sent: with less, the
/// write is refused as certainly not sent rather than risk an unknown
/// outcome. A healthy Redis runs even a 1 MiB commit well within it; a
/// commit that does not fit is a `504`, which a keyed retry resolves.
pub const COMMIT_BUDGET: Duration = Duration::from_millis(300);

/// Why a write was not committed (or not known to be).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The body is invalid; nothing was written. The message names the
    /// request index, the fqid and the reason.
    #[error("{0}")]
    Invalid(String),
    /// A `finalize` job is current: nothing was written.
    #[error(
        "the datastore is being finalized; writes are refused until the finalize job has finished"
    )]
    Finalizing,
    /// Lost the race to concurrent writers of the same models (or waited
    /// for a bulk writer's token) until the deadline; nothing was written.
    #[error("the datastore is too busy: the write did not commit within its deadline after {attempts} attempts (concurrent writers of the same models, or a bulk write holding the writer token); nothing was written; retry")]
    Busy {
        /// Commits tried.
        attempts: u32,
    },
    /// The `Idempotency-Key` was used before with another body (`422`).
    #[error("this Idempotency-Key was already used with a different body; nothing was written (use a new key for a new write)")]
    KeyReused,
    /// Another attempt with the same key is executing (`409`).
    #[error("a write with this Idempotency-Key is still being executed; nothing more was written; retry with the same key in a moment")]
    InFlight,
    /// The claim on the key expired before the commit ran; nothing was
    /// written.
    #[error("the claim on this Idempotency-Key expired before the commit ran; nothing was written; retry with the same key")]
    ClaimLost,
    /// Redis did not answer before the commit was sent: nothing was written.
    #[error("redis did not answer within {} s while {phase}: redis is unreachable or hung; the write was not sent, nothing was written", after.as_secs_f32())]
    NoAnswer {
        /// What the write was doing.
        phase: &'static str,
        /// The write's deadline.
        after: Duration,
    },
    /// Too little of the deadline was left to send the commit (a large body
    /// on a loaded api or a slow Redis): nothing was written.
    #[error("the write used up its {} s budget before its commit could be sent (a large body on a busy api, or a slow redis); nothing was written; retry", budget.as_secs_f32())]
    OutOfTime {
        /// The write's deadline.
        budget: Duration,
    },
    /// The commit was sent but its answer never came: the write may or may
    /// not have happened (`504`).
    #[error("outcome unknown: the write may or may not have happened ({cause}); {advice}")]
    OutcomeUnknown {
        /// What went wrong after the commit was sent.
        cause: String,
        /// How to retry.
        advice: &'static str,
    },
    /// Redis failed or refused (the api classifies the error).
    #[error(transparent)]
    Store(#[from] DatastoreError),
}

/// A failure to read or write Redis.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis holds something this code did not write.
    #[error("corrupt datastore: {0}")]
    Corrupt(String),
}

impl From<redis::ParsingError> for DatastoreError {
    fn from(err: redis::ParsingError) -> Self {
        DatastoreError::Corrupt(format!("unexpected reply from redis: {err}"))
    }
}

impl From<redis::RedisError> for WriteError {
    fn from(err: redis::RedisError) -> Self {
        WriteError::Store(DatastoreError::Redis(err))
    }
}

impl From<redis::ParsingError> for WriteError {
    fn from(err: redis::ParsingError) -> Self {
        WriteError::Store(err.into())
    }
}

/// Handle on the datastore of one key prefix.
#[derive(Clone)]
pub struct Datastore {
    pub(super) conn: RedisConnection,
    pub(super) keys: Keys,
    default_migration_index: u64,
    write_deadline: Duration,
}

/// The time budget of one write.
#[derive(Clone, Copy)]
struct Deadline(Instant, Duration);

impl Deadline {
    fn start(length: Duration) -> Deadline {
        Deadline(Instant::now() + length, length)
    }

    fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Runs a step that comes before the commit: a timeout means nothing
    /// was written.
    async fn before_commit<T, E: Into<WriteError>>(
        &self,
        phase: &'static str,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, WriteError> {
        match tokio::time::timeout_at(self.0, step).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(WriteError::NoAnswer {
                phase,
                after: self.1,
            }),
        }
    }
}

/// A committed body.
struct Committed {
    positions: Vec<u64>,
    answer: String,
}

impl Datastore {
    /// A datastore under `keys`; `default_migration_index` (the registry's
    /// target) is given to the first position when its request has none.
    pub fn new(conn: RedisConnection, keys: Keys, default_migration_index: u64) -> Datastore {
        Datastore {
            conn,
            keys,
            default_migration_index,
            write_deadline: WRITE_DEADLINE,
        }
    }

    /// The same datastore with another write deadline (default
    /// [`WRITE_DEADLINE`], which the api keeps: SPEC 4.3's 5 s). For
    /// programs without that bound, such as bulk loaders and tests of very
    /// large bodies on slow machines.
    pub fn with_write_deadline(mut self, deadline: Duration) -> Datastore {
        self.write_deadline = deadline;
        self
    }

    /// Commits the body all-or-nothing; returns the new position numbers.
    pub async fn write(&self, requests: Vec<WriteRequest>) -> Result<Vec<u64>, WriteError> {
        let committed = self
            .execute(&requests, None, Deadline::start(self.write_deadline))
            .await?;
        Ok(committed.positions)
    }

    /// The write route with an `Idempotency-Key` (SPEC 5.1): the body is
    /// parsed here, so that a structural `400` is kept as the key's answer
    /// too. Returns the answer to send: the fresh one (`200` or `400`), or
    /// the one kept from the first attempt with this key.
    pub async fn write_idempotent(
        &self,
        key: &IdempotencyKey,
        body: Value,
    ) -> Result<WriteAnswer, WriteError> {
        let deadline = Deadline::start(self.write_deadline);
        let claim = Claim {
            record: self.keys.idempotency(key.as_str()),
            owner: uuid::Uuid::new_v4().to_string(),
        };
        let fingerprint = body_fingerprint(&body);
        let begun: Result<Vec<redis::Value>, WriteError> = deadline
            .before_commit("claiming the Idempotency-Key", async {
                let mut conn = self.conn.clone();
                IDEMPOTENCY_BEGIN
                    .key(&claim.record)
                    .arg(&fingerprint)
                    .arg(&claim.owner)
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        let begun = match begun {
            Ok(begun) => begun,
            Err(err @ WriteError::NoAnswer { .. }) => {
                // The claim may still be taken when a hung Redis resumes:
                // queue its release behind it, so the client's retry does
                // not wait out the claim's lifetime.
                self.settle(&claim, Settle::Release, deadline).await;
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        let state: String = reply_field(&begun, 0, "datastore_idempotency_begin")?;
        match state.as_str() {
            "new" => {}
            "mismatch" => return Err(WriteError::KeyReused),
            "pending" => return Err(WriteError::InFlight),
            "done" => {
                let status: u16 = reply_field(&begun, 1, "datastore_idempotency_begin")?;
                let body: String = reply_field(&begun, 2, "datastore_idempotency_begin")?;
                return Ok(WriteAnswer { status, body });
            }
            other => {
                return Err(DatastoreError::Corrupt(format!(
                    "datastore_idempotency_begin answered '{other}'"
                ))
                .into())
            }
        }
        let outcome = match parse_write_body(body) {
            Ok(requests) => self.execute(&requests, Some(&claim), deadline).await,
            Err(message) => Err(WriteError::Invalid(message)),
        };
        match outcome {
            Ok(committed) => Ok(WriteAnswer {
                status: 200,
                body: committed.answer,
            }),
            Err(WriteError::Invalid(message)) => {
                let answer = WriteAnswer::invalid(&message);
                self.settle(&claim, Settle::Keep(&answer), deadline).await;
                Ok(answer)
            }
            // Certainly not written, and a later attempt may succeed: free
            // the key at once instead of making the retry wait for 409s.
            Err(
                err @ (WriteError::Finalizing
                | WriteError::Busy { .. }
                | WriteError::NoAnswer { .. }
                | WriteError::OutOfTime { .. }
                | WriteError::Store(_)),
            ) => {
                self.settle(&claim, Settle::Release, deadline).await;
                Err(err)
            }
            // Unknown outcome: the claim stays, so the retry waits for the
            // commit (409) or finds its answer; a lost claim is not ours.
            Err(err) => Err(err),
        }
    }

    /// Validates and commits; retries lost races within the deadline.
    async fn execute(
        &self,
        requests: &[WriteRequest],
        claim: Option<&Claim>,
        deadline: Deadline,
    ) -> Result<Committed, WriteError> {
        let mut stored = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            stored.push(
                request
                    .stored_events()
                    .map_err(|reason| WriteError::Invalid(format!("request {index}: {reason}")))?,
            );
        }
        let touched: BTreeSet<&Fqid> = stored.iter().flatten().map(Event::fqid).collect();
        let mut token: Option<String> = None;
        let result = self
            .commit_until_done(requests, &stored, &touched, claim, deadline, &mut token)
            .await;
        if let (Some(token), Err(_)) = (&token, &result) {
            // A successful commit removed the token itself.
            self.release_writer_token(token).await;
        }
        result
    }

    /// The retry loop: read, validate, commit, until committed, refused or
    /// out of time. A bulk body ([`BULK_EVENTS`]) holds the writer token
    /// throughout, so that no stream of small writes can starve it.
    async fn commit_until_done(
        &self,
        requests: &[WriteRequest],
        stored: &[Vec<Event>],
        touched: &BTreeSet<&Fqid>,
        claim: Option<&Claim>,
        deadline: Deadline,
        token: &mut Option<String>,
    ) -> Result<Committed, WriteError> {
        let mut attempts: u32 = 0;
        let mut conflicts: u32 = 0;
        let event_count: usize = stored.iter().map(Vec::len).sum();
        if event_count >= BULK_EVENTS {
            // A bulk body needs a good part of its deadline for one
            // validation: it cannot afford to lose a race, so it takes the
            // token first (waiting while another bulk body holds it).
            let wait_until = deadline.0.checked_sub(COMMIT_BUDGET * 2);
            *token = self.take_writer_token(deadline, wait_until).await;
        }
        loop {
            let snapshot = deadline
                .before_commit("reading the models", self.read_snapshot(touched))
                .await?;
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            let plan = plan_commit(
                requests,
                stored,
                snapshot.clone(),
                self.default_migration_index,
                timestamp,
            )?;
            if deadline.left() < COMMIT_BUDGET {
                return Err(if attempts == 0 {
                    WriteError::OutOfTime { budget: deadline.1 }
                } else {
                    WriteError::Busy { attempts }
                });
            }
            attempts += 1;
            let outcome = self
                .commit(&snapshot, &plan, claim, token.as_deref(), deadline)
                .await?;
            let backoff_ms = match outcome {
                CommitOutcome::Committed(committed) => {
                    *token = None;
                    return Ok(committed);
                }
                CommitOutcome::Finalizing => return Err(WriteError::Finalizing),
                CommitOutcome::ClaimLost => return Err(WriteError::ClaimLost),
                // Small writers racing for one model: one of them wins each
                // round, and their attempts are cheap.
                CommitOutcome::Conflict => {
                    conflicts += 1;
                    2 * u64::from(conflicts.min(10))
                }
                // Another writer holds the token: wait for it to commit.
                CommitOutcome::Locked => 20,
            };
            // Jittered back-off so that racing writers spread out.
            let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (1 + backoff_ms);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
    }

    /// Takes `ds:writer_token` for the rest of this write's deadline (so a
    /// writer that dies holds it no longer than it would have run). While
    /// another writer holds it, tries again every few milliseconds until
    /// `wait_until` (`None`: one try). `None` when not taken.
    async fn take_writer_token(
        &self,
        deadline: Deadline,
        wait_until: Option<Instant>,
    ) -> Option<String> {
        let owner = uuid::Uuid::new_v4().to_string();
        loop {
            let lifetime = deadline.left().as_millis() as u64;
            if lifetime == 0 {
                return None;
            }
            let mut conn = self.conn.clone();
            let mut set = redis::cmd("SET");
            set.arg(self.keys.writer_token())
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(lifetime);
            let taken = set.query_async::<Option<String>>(&mut conn);
            match tokio::time::timeout_at(deadline.0, taken).await {
                Ok(Ok(Some(_))) => return Some(owner),
                Ok(Ok(None)) if wait_until.is_some_and(|until| Instant::now() < until) => {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                _ => return None,
            }
        }
    }

    /// Gives the writer token back after a write that did not commit. Best
    /// effort: it expires by itself at the end of that write's deadline.
    async fn release_writer_token(&self, owner: &str) {
        let mut conn = self.conn.clone();
        let mut invocation = WRITER_TOKEN_RELEASE.prepare_invoke();
        invocation.key(self.keys.writer_token()).arg(owner);
        let release = invocation.invoke_async::<i64>(&mut conn);
        if let Ok(Err(err)) = tokio::time::timeout(Duration::from_millis(500), release).await {
            tracing::warn!(error = %err, "could not release the writer token; it expires by itself");
        }
    }

    /// Keeps a refusal as the key's answer, or gives the key back. Best
    /// effort: when it fails, the claim expires after [`CLAIM_TTL`] and the
    /// key is executed afresh then (a refusal wrote nothing).
    async fn settle(&self, claim: &Claim, settle: Settle<'_>, deadline: Deadline) {
        let mut invocation = IDEMPOTENCY_SETTLE.prepare_invoke();
        invocation.key(&claim.record).arg(&claim.owner);
        match settle {
            Settle::Keep(answer) => invocation
                .arg("store")
                .arg(answer.status)
                .arg(&answer.body)
                .arg(ANSWER_TTL.as_millis() as u64),
            Settle::Release => invocation.arg("release"),
        };
        let budget = deadline.left().max(Duration::from_millis(200));
        let mut conn = self.conn.clone();
        match tokio::time::timeout(budget, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => {
                tracing::warn!(record = %claim.record, "idempotency claim was no longer ours when settling it")
            }
            Ok(Err(err)) => {
                tracing::warn!(record = %claim.record, error = %err, "could not settle an idempotency claim; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(record = %claim.record, "redis did not answer settling an idempotency claim; it expires by itself")
            }
        }
    }

    async fn read_snapshot(&self, touched: &BTreeSet<&Fqid>) -> Result<Snapshot, DatastoreError> {
        let by_collection = group_by_collection(touched.iter().copied());
        let mut pipe = redis::pipe();
        pipe.get(self.keys.position())
            .get(self.keys.migration_index())
            .get(self.keys.current_job());
        for (collection, ids) in &by_collection {
            pipe.cmd("HMGET").arg(self.keys.models(collection)).arg(ids);
        }
        let mut conn = self.conn.clone();
        let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let rest = values.split_off(3);
        let (last_position, migration_index, current_job): (
            Option<u64>,
            Option<u64>,
            Option<String>,
        ) = redis::from_redis_value(redis::Value::Array(values))?;
        let rows: Vec<Vec<Option<String>>> = rest
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()?;
        let mut snapshot = Snapshot {
            last_position: last_position.unwrap_or(0),
            migration_index,
            current_job,
            ..Snapshot::default()
        };
        for ((collection, ids), row) in by_collection.iter().zip(rows) {
            for (id, text) in ids.iter().zip(row) {
                if let Some(text) = text {
                    let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
                    let fqid = Fqid::new(collection, *id).map_err(DatastoreError::Corrupt)?;
                    snapshot.versions.insert(fqid.clone(), model_version(&text));
                    snapshot.models.insert(fqid, model);
                }
            }
        }
        Ok(snapshot)
    }

    async fn commit(
        &self,
        snapshot: &Snapshot,
        plan: &CommitPlan,
        claim: Option<&Claim>,
        token: Option<&str>,
        deadline: Deadline,
    ) -> Result<CommitOutcome, WriteError> {
        let keys = &self.keys;
        let mut invocation = DATASTORE_COMMIT.prepare_invoke();
        invocation
            .key(keys.position())
            .key(keys.migration_index())
            .key(keys.event_count())
            .key(keys.positions())
            .key(keys.position_mi())
            .key(keys.events())
            .key(keys.collections())
            .key(keys.current_job())
            .key(keys.writer_token());
        if let Some(job) = &snapshot.current_job {
            invocation.key(keys.job(job));
        }
        if let Some(claim) = claim {
            invocation.key(&claim.record);
        }
        let collections: Vec<&str> = plan
            .models
            .iter()
            .map(|model| model.fqid.collection())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for collection in &collections {
            invocation.key(keys.models(collection));
        }
        invocation
            .arg(snapshot.current_job.as_deref().unwrap_or_default())
            .arg(if snapshot.last_position == 0 {
                "1"
            } else {
                "0"
            })
            .arg(
                snapshot
                    .migration_index
                    .map(|mi| mi.to_string())
                    .unwrap_or_default(),
            )
            .arg(plan.migration_index)
            .arg(claim.map(|claim| claim.owner.as_str()).unwrap_or_default())
            .arg(ANSWER_TTL.as_millis() as u64)
            .arg(plan.positions.len())
            .arg(plan.event_count)
            .arg(plan.models.len())
            .arg(token.unwrap_or_default());
        for (metadata, events) in &plan.positions {
            invocation.arg(metadata).arg(events);
        }
        for model in &plan.models {
            let index = collections
                .iter()
                .position(|collection| *collection == model.fqid.collection())
                .map(|at| at + 1)
                .unwrap_or_default();
            invocation
                .arg(index)
                .arg(model.fqid.id())
                .arg(model.expected_version.as_deref().unwrap_or_default())
                .arg(model.relative_position)
                .arg(&model.json);
        }
        for collection in &collections {
            invocation.arg(*collection);
        }
        let advice = if claim.is_some() {
            "retry with the same Idempotency-Key"
        } else {
            "this request had no Idempotency-Key, so a plain retry may write twice: read the datastore first, and send writes with an Idempotency-Key"
        };
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> =
            match tokio::time::timeout_at(deadline.0, invocation.invoke_async(&mut conn)).await {
                Err(_) => {
                    return Err(WriteError::OutcomeUnknown {
                        cause: format!(
                            "the commit was sent, but redis did not answer it within {} s",
                            deadline.1.as_secs_f32()
                        ),
                        advice,
                    })
                }
                Ok(Err(err)) => return Err(commit_error(err, advice)),
                Ok(Ok(reply)) => reply,
            };
        let status: String = reply_field(&reply, 0, "datastore_commit")?;
        match status.as_str() {
            "ok" => {
                let first: u64 = reply_field(&reply, 1, "datastore_commit")?;
                let answer: String = reply_field(&reply, 2, "datastore_commit")?;
                Ok(CommitOutcome::Committed(Committed {
                    positions: (first..first + plan.positions.len() as u64).collect(),
                    answer,
                }))
            }
            "conflict" => Ok(CommitOutcome::Conflict),
            "finalizing" => Ok(CommitOutcome::Finalizing),
            "claim_lost" => Ok(CommitOutcome::ClaimLost),
            "locked" => Ok(CommitOutcome::Locked),
            other => {
                Err(DatastoreError::Corrupt(format!("datastore_commit answered '{other}'")).into())
            }
        }
    }
}

enum CommitOutcome {
    Committed(Committed),
    Conflict,
    Finalizing,
    ClaimLost,
    Locked,
}

enum Settle<'a> {
    Keep(&'a WriteAnswer),
    Release,
}

/// What a failed commit call means. Redis answered with an error (the
/// script refuses a wrong key type before its first write; OOM refuses the
/// whole script up front) or the connection was refused: nothing was
/// written. Anything else happened after the commit may have reached Redis.
fn commit_error(err: redis::RedisError, advice: &'static str) -> WriteError {
    let answered = matches!(
        err.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    );
    if answered || err.is_connection_refusal() {
        WriteError::Store(DatastoreError::Redis(err))
    } else {
        WriteError::OutcomeUnknown {
            cause: format!("the commit was sent, but the connection failed: {err}"),
            advice,
        }
    }
}

/// Element `index` of a script's array reply.
fn reply_field<T: redis::FromRedisValue>(
    reply: &[redis::Value],
    index: usize,
    script: &str,
) -> Result<T, DatastoreError> {
    let value = reply.get(index).ok_or_else(|| {
        DatastoreError::Corrupt(format!("{script} answered without element {index}"))
    })?;
    Ok(redis::from_redis_value_ref(value)?)
}

/// The version of a stored model: the SHA-1 hex of its JSON, as the commit
/// script computes it with `redis.sha1hex`.
fn model_version(stored_json: &str) -> String {
    sha1_smol::Sha1::from(stored_json).digest().to_string()
}

fn group_by_collection<'a>(fqids: impl Iterator<Item = &'a Fqid>) -> BTreeMap<&'a str, Vec<u64>> {
    let mut by_collection: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for fqid in fqids {
        by_collection
            .entry(fqid.collection())
            .or_default()
            .push(fqid.id());
    }
    by_collection
}
