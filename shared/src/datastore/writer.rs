//! The datastore over Redis: the write path and the readers (SPEC 5.1).
//!
//! Writes are optimistic: read the position counter, the migration index and
//! the touched models (one pipelined round trip), apply the whole body in
//! memory with [`apply_event`] (so a body is validated against the current
//! models *and* its own earlier requests), then commit with one Lua script
//! that compares the counter and the MI and writes everything
//! (`lua/datastore_commit.lua`). A concurrent commit makes the compare fail;
//! the writer then reads again and retries, a bounded number of times.
//!
//! Why not validate in Lua: Redis's cjson decodes integers into doubles and
//! prints them with 14 digits, which would silently change field values.
//! Here Lua never decodes a value.
//!
//! Cost: a body of any size is one read round trip plus one script call, so
//! bulk imports are bound by serialisation, not by round trips.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis_client::RedisConnection;
use serde_json::{json, Value};

use super::event::Event;
use super::fqid::{is_valid_collection, Fqid};
use super::model::{apply_event, Model, Models};
use super::request::WriteRequest;
use crate::keys::Keys;
use crate::scripts::DATASTORE_COMMIT;

/// How often a write is retried after losing a race before it gives up.
const MAX_COMMIT_ATTEMPTS: u32 = 64;

/// Why a write was not committed.
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
    /// Lost the race to concurrent writers too often; nothing was written.
    #[error("the datastore is too busy: the write lost {MAX_COMMIT_ATTEMPTS} races to concurrent writers; retry")]
    Busy,
    /// Redis failed.
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

/// Handle on the datastore of one key prefix.
#[derive(Clone)]
pub struct Datastore {
    conn: RedisConnection,
    keys: Keys,
    default_migration_index: u64,
}

/// What a write body was validated against.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Last committed position (0: empty).
    pub last_position: u64,
    /// The live MI, if the datastore has one.
    pub migration_index: Option<u64>,
    /// The touched models that exist (live or deleted).
    pub models: Models,
}

/// A validated write body, ready for the commit script.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    /// The MI of the new positions.
    pub migration_index: u64,
    /// Per new position: metadata JSON and events JSON.
    pub positions: Vec<(String, String)>,
    /// Number of events added.
    pub event_count: usize,
    /// Changed models: collection, id, stored JSON.
    pub models: Vec<(String, u64, String)>,
}

impl Datastore {
    /// A datastore under `keys`; `default_migration_index` (the registry's
    /// target) is given to the first position when its request has none.
    pub fn new(conn: RedisConnection, keys: Keys, default_migration_index: u64) -> Datastore {
        Datastore {
            conn,
            keys,
            default_migration_index,
        }
    }

    /// Commits the body all-or-nothing; returns the new position numbers.
    pub async fn write(&self, requests: Vec<WriteRequest>) -> Result<Vec<u64>, WriteError> {
        let mut stored = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            stored.push(
                request
                    .stored_events()
                    .map_err(|reason| WriteError::Invalid(format!("request {index}: {reason}")))?,
            );
        }
        let touched: BTreeSet<&Fqid> = stored.iter().flatten().map(Event::fqid).collect();
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let snapshot = self.read_snapshot(&touched).await?;
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            let plan = plan_commit(
                &requests,
                &stored,
                snapshot.clone(),
                self.default_migration_index,
                timestamp,
            )?;
            match self.commit(&snapshot, &plan).await? {
                CommitOutcome::Committed(first) => {
                    return Ok((first..first + plan.positions.len() as u64).collect());
                }
                CommitOutcome::Finalizing => return Err(WriteError::Finalizing),
                CommitOutcome::Conflict => {
                    // Jittered back-off so that racing writers spread out.
                    let jitter = uuid::Uuid::new_v4().as_u128() as u64
                        % (1 + 2 * u64::from(attempt.min(10)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
            }
        }
        Err(WriteError::Busy)
    }

    async fn read_snapshot(&self, touched: &BTreeSet<&Fqid>) -> Result<Snapshot, DatastoreError> {
        let mut by_collection: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for fqid in touched {
            by_collection
                .entry(fqid.collection())
                .or_default()
                .push(fqid.id());
        }
        let mut pipe = redis::pipe();
        pipe.get(self.keys.position())
            .get(self.keys.migration_index());
        for (collection, ids) in &by_collection {
            pipe.cmd("HMGET").arg(self.keys.models(collection)).arg(ids);
        }
        let mut conn = self.conn.clone();
        let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let rest = values.split_off(2);
        let (last_position, migration_index): (Option<u64>, Option<u64>) =
            redis::from_redis_value(redis::Value::Array(values))?;
        let rows: Vec<Vec<Option<String>>> = rest
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()?;
        let mut models = Models::new();
        for ((collection, ids), row) in by_collection.iter().zip(rows) {
            for (id, text) in ids.iter().zip(row) {
                if let Some(text) = text {
                    let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
                    let fqid = Fqid::new(collection, *id).map_err(DatastoreError::Corrupt)?;
                    models.insert(fqid, model);
                }
            }
        }
        Ok(Snapshot {
            last_position: last_position.unwrap_or(0),
            migration_index,
            models,
        })
    }

    async fn commit(
        &self,
        snapshot: &Snapshot,
        plan: &CommitPlan,
    ) -> Result<CommitOutcome, DatastoreError> {
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
            .arg(snapshot.last_position)
            .arg(
                snapshot
                    .migration_index
                    .map(|mi| mi.to_string())
                    .unwrap_or_default(),
            )
            .arg(plan.migration_index)
            .arg(keys.base())
            .arg(plan.positions.len())
            .arg(plan.event_count)
            .arg(plan.models.len());
        for (metadata, events) in &plan.positions {
            invocation.arg(metadata).arg(events);
        }
        for (collection, id, model) in &plan.models {
            invocation.arg(collection).arg(id).arg(model);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut conn).await?;
        let status: String = reply
            .first()
            .map(redis::from_redis_value_ref)
            .transpose()?
            .unwrap_or_default();
        match status.as_str() {
            "ok" => {
                let first: u64 = reply
                    .get(1)
                    .map(redis::from_redis_value_ref)
                    .transpose()?
                    .ok_or_else(|| {
                        DatastoreError::Corrupt("commit script returned no position".into())
                    })?;
                Ok(CommitOutcome::Committed(first))
            }
            "conflict" => Ok(CommitOutcome::Conflict),
            "finalizing" => Ok(CommitOutcome::Finalizing),
            other => Err(DatastoreError::Corrupt(format!(
                "commit script answered '{other}'"
            ))),
        }
    }

    /// The live model `fqid`; `None` if it never existed or is deleted.
    pub async fn get(&self, fqid: &Fqid) -> Result<Option<Model>, DatastoreError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.keys.models(fqid.collection()))
            .arg(fqid.id())
            .query_async(&mut conn)
            .await?;
        match text {
            None => Ok(None),
            Some(text) => {
                let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
                Ok((!model.deleted).then_some(model))
            }
        }
    }

    /// The live models of `collection`, by id.
    pub async fn get_all(&self, collection: &str) -> Result<BTreeMap<u64, Model>, DatastoreError> {
        if !is_valid_collection(collection) {
            return Ok(BTreeMap::new());
        }
        let mut conn = self.conn.clone();
        let all: HashMap<u64, String> = redis::cmd("HGETALL")
            .arg(self.keys.models(collection))
            .query_async(&mut conn)
            .await?;
        let mut models = BTreeMap::new();
        for (id, text) in all {
            let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
            if !model.deleted {
                models.insert(id, model);
            }
        }
        Ok(models)
    }
}

enum CommitOutcome {
    Committed(u64),
    Conflict,
    Finalizing,
}

/// Validates a body against `snapshot` and builds what the commit script
/// writes. Pure: the rules of SPEC 5.1 are tested here without Redis.
pub fn plan_commit(
    requests: &[WriteRequest],
    stored: &[Vec<Event>],
    snapshot: Snapshot,
    default_migration_index: u64,
    timestamp_ms: u64,
) -> Result<CommitPlan, WriteError> {
    let mut models = snapshot.models;
    let mut changed: BTreeSet<Fqid> = BTreeSet::new();
    let mut current_mi = snapshot
        .migration_index
        .filter(|_| snapshot.last_position > 0);
    let mut positions = Vec::with_capacity(requests.len());
    let mut event_count = 0;
    for (index, (request, events)) in requests.iter().zip(stored).enumerate() {
        let position = snapshot.last_position + index as u64 + 1;
        let mi = match (current_mi, request.migration_index) {
            (None, given) => given.unwrap_or(default_migration_index),
            (Some(current), Some(given)) if given != current => {
                return Err(WriteError::Invalid(format!(
                    "request {index}: migration_index {given} does not match the datastore's current migration index {current}"
                )));
            }
            (Some(current), _) => current,
        };
        if mi == 0 {
            return Err(WriteError::Invalid(format!(
                "request {index}: migration_index must be at least 1"
            )));
        }
        current_mi = Some(mi);
        for event in events {
            apply_event(&mut models, event, position).map_err(|reason| {
                WriteError::Invalid(format!(
                    "request {index}: {}: {}: {reason}",
                    event.fqid(),
                    event.type_name()
                ))
            })?;
            changed.insert(event.fqid().clone());
        }
        event_count += events.len();
        let metadata = json!({
            "timestamp": timestamp_ms,
            "user_id": request.user_id,
            "information": request.information,
        });
        let events_json = serde_json::to_string(events)
            .map_err(|err| WriteError::Invalid(format!("request {index}: {err}")))?;
        positions.push((metadata.to_string(), events_json));
    }
    let models = changed
        .into_iter()
        .map(|fqid| {
            let json = models[&fqid].to_stored_json();
            (fqid.collection().to_string(), fqid.id(), json)
        })
        .collect();
    Ok(CommitPlan {
        migration_index: current_mi.unwrap_or(default_migration_index),
        positions,
        event_count,
        models,
    })
}

/// The JSON value a reader returns for a model.
pub fn reader_json(model: &Model) -> Value {
    model.reader_view()
}
