//! The engine's Redis access: batched reads of the live datastore and the
//! migration area, and the calls of the fenced engine scripts.
//!
//! Reads are pipelined (one round trip per batch of positions); every write
//! is one of the scripts in `shared/lua/engine_*.lua`, which check the fencing
//! token first. Script refusals are mapped to [`EngineError`] here, so the
//! rest of the engine never looks at Redis error codes.
//!
//! Outages (SPEC 7.1): every call is retried with backoff while the error is
//! one of a connection (dropped, refused, timed out, Redis loading or busy)
//! and the run's cancel token has not fired; the runner cancels it when the
//! lease is lost or shutdown comes, and the call then ends with
//! [`EngineError::Cancelled`]: whether its last attempt landed or not, the
//! migration area is at a checkpoint, which is a durable point. Reads repeat
//! harmlessly; the writes are safe to repeat because their scripts recognise
//! a write that already landed although its answer was lost (`ALREADY` of
//! `engine_checkpoint.lua`, `already` of `engine_finalize.lua`) or are
//! idempotent (`engine_reset.lua`, a `fresh`/`resume` checkpoint rewriting
//! the same bytes).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use migration_shared::datastore::{Event, Fqid, Model, Models};
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use migration_shared::scripts::{self, FENCED, STALE};
use redis::{RedisError, RetryMethod};
use tokio_util::sync::CancellationToken;

use super::pace::{Pacer, LIGHT_UNITS_PER_POSITION};
use super::EngineError;

/// First pause after a failed call; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// Longest pause between two attempts: a Redis that is back is used within
/// about this long.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long a call in flight may still take once the cancel token fired
/// (a healthy Redis answers long before; a hung one is given up on, so that
/// shutdown stays prompt).
const CANCEL_GRACE: Duration = Duration::from_secs(3);
/// Stored keyframe models per `HSCAN` when loading the keyframes.
const SCAN_COUNT: u64 = 2000;

/// Positions per `HMGET` when only MIs are read (the validation pass).
const MI_CHUNK: u64 = 5000;

/// What `mig:state` says about the migration area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AreaState {
    /// Last position with migration data.
    pub(crate) cursor: u64,
    /// Last position the stored keyframes include (a run resumes after it).
    pub(crate) keyframe_cursor: u64,
    /// Last position the stored lowest keyframe includes (`None`: never
    /// stored), and its MI; valid only while it is still `min_mi`.
    pub(crate) lowest_cursor: Option<u64>,
    pub(crate) lowest_mi: Option<u64>,
    /// Live events of the positions up to `keyframe_cursor`.
    pub(crate) keyframe_source_events: u64,
    pub(crate) target: Option<u64>,
    pub(crate) fingerprint: Option<String>,
    pub(crate) min_mi: Option<u64>,
    pub(crate) source_events: u64,
    pub(crate) migrated_events: u64,
}

/// One consistent look at the live counters and the migration area.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Last live position (0: empty datastore).
    pub(crate) positions: u64,
    pub(crate) migration_index: Option<u64>,
    pub(crate) events: u64,
    pub(crate) area: AreaState,
}

/// One position of a batch as read from the live datastore, not yet parsed
/// (parsing runs on the worker pool, see `migrate/batches.rs`).
pub(crate) struct LivePosition {
    pub(crate) position: u64,
    pub(crate) migration_index: u64,
    pub(crate) events_json: String,
}

impl LivePosition {
    /// The stored events, or why they cannot be parsed.
    pub(crate) fn parse(&self) -> Result<Vec<Event>, String> {
        serde_json::from_str(&self.events_json).map_err(|err| {
            format!(
                "position {}: its stored events are not valid events: {err}",
                self.position
            )
        })
    }
}

/// The migrated events of one position as a checkpoint stores them.
pub(crate) enum EventsJson {
    /// The live JSON, unchanged (no migration changed the events).
    Raw(String),
    /// Changed events, serialised by the checkpoint task (beside the
    /// migration of the next batch).
    Events(Vec<Event>),
}

/// The keyframe models a checkpoint writes: (MI, collection) -> id -> JSON.
pub(crate) type KeyframeWrites = BTreeMap<(u64, String), Vec<(u64, String)>>;

/// How a checkpoint relates to the migration area it writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Delete the area first (none yet, or built for another registry).
    Fresh,
    /// Continue after `mig:state.cursor`.
    Continue,
    /// Continue after `mig:state.keyframe_cursor`, forgetting the positions
    /// after it (a crashed run wrote them; they are redone identically).
    Resume,
}

/// Everything one checkpoint writes.
pub(crate) struct Checkpoint {
    pub(crate) mode: Mode,
    pub(crate) from_cursor: u64,
    pub(crate) to_cursor: u64,
    pub(crate) target: u64,
    pub(crate) fingerprint: String,
    /// `Some(lowest keyframe MI)` when this checkpoint flushes the keyframes.
    pub(crate) min_mi: Option<u64>,
    /// The flush includes the lowest keyframe (below the target).
    pub(crate) lowest: bool,
    pub(crate) source_events: u64,
    pub(crate) migrated_events: u64,
    /// (position, migrated MI, events)
    pub(crate) positions: Vec<(u64, u64, EventsJson)>,
    pub(crate) keyframes: KeyframeWrites,
    /// Events the batch no longer needs, dropped with the checkpoint (in its
    /// task, beside the migration of the next batch).
    pub(crate) garbage: Vec<Vec<Event>>,
}

/// Maps script refusals to engine errors.
fn script_error(err: redis::RedisError) -> EngineError {
    match err.code() {
        Some(FENCED) => EngineError::Fenced,
        // STALE stays a Redis error (retried by the runner); see `is_stale`.
        _ => EngineError::Redis(err),
    }
}

/// True when a script refused because the migration area or the live
/// datastore changed since it was read (error code STALE).
pub(crate) fn is_stale(err: &EngineError) -> bool {
    matches!(err, EngineError::Redis(err) if err.code() == Some(STALE))
}

/// True when `err` says Redis could not be reached or could not answer yet
/// (a dropped or refused connection, a timeout, a restart still loading, a
/// failover in progress, a long script running): the same call may succeed
/// later. Script refusals, wrong types, OOM and bad replies are final.
pub(crate) fn is_transient(err: &RedisError) -> bool {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return true;
    }
    if matches!(
        err.code(),
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY")
    ) {
        return true;
    }
    matches!(
        err.retry_method(),
        RetryMethod::Reconnect
            | RetryMethod::RetryImmediately
            | RetryMethod::WaitAndRetry
            | RetryMethod::ReconnectFromInitialConnections
            | RetryMethod::RefreshSlotsAndRetry
    )
}

fn parse_u64(map: &HashMap<String, String>, field: &str) -> Option<u64> {
    map.get(field).and_then(|value| value.parse().ok())
}

/// The engine's handle on Redis.
#[derive(Clone)]
pub(crate) struct Store {
    conn: RedisConnection,
    keys: Keys,
    token: String,
    cancel: CancellationToken,
}

/// What a checkpoint call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landed {
    /// Written now.
    Written,
    /// It had been written before (an attempt whose answer was lost).
    Already,
}

impl Store {
    pub(crate) fn new(
        conn: RedisConnection,
        keys: Keys,
        token: u64,
        cancel: CancellationToken,
    ) -> Store {
        Store {
            conn,
            keys,
            token: token.to_string(),
            cancel,
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the cancel token
    /// fires (then `Cancelled`); see the module doc.
    async fn retrying<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let mut delay = FIRST_RETRY_DELAY;
        let mut failures = 0u32;
        loop {
            let given_up = async {
                self.cancel.cancelled().await;
                tokio::time::sleep(CANCEL_GRACE).await;
            };
            let result = tokio::select! {
                biased;
                result = call() => result,
                () = given_up => return Err(EngineError::Cancelled),
            };
            match result {
                Err(EngineError::Redis(err)) if is_transient(&err) => {
                    failures += 1;
                    if self.cancel.is_cancelled() {
                        return Err(EngineError::Cancelled);
                    }
                    tracing::warn!(call = what, failures, error = %err, "Redis call failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => return Err(EngineError::Cancelled),
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(
                            call = what,
                            failures,
                            "Redis call succeeded after retrying"
                        );
                    }
                    return Ok(value);
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot, EngineError> {
        self.retrying("snapshot", || self.snapshot_once()).await
    }

    async fn snapshot_once(&self) -> Result<Snapshot, EngineError> {
        let mut conn = self.conn.clone();
        let (positions, migration_index, events, area): (
            Option<u64>,
            Option<u64>,
            Option<u64>,
            HashMap<String, String>,
        ) = redis::pipe()
            .atomic()
            .get(self.keys.position())
            .get(self.keys.migration_index())
            .get(self.keys.event_count())
            .hgetall(self.keys.mig_state())
            .query_async(&mut conn)
            .await?;
        Ok(Snapshot {
            positions: positions.unwrap_or(0),
            migration_index,
            events: events.unwrap_or(0),
            area: AreaState {
                cursor: parse_u64(&area, "cursor").unwrap_or(0),
                keyframe_cursor: parse_u64(&area, "keyframe_cursor").unwrap_or(0),
                lowest_cursor: parse_u64(&area, "lowest_cursor"),
                lowest_mi: parse_u64(&area, "lowest_mi"),
                keyframe_source_events: parse_u64(&area, "keyframe_source_events").unwrap_or(0),
                target: parse_u64(&area, "target"),
                fingerprint: area.get("fingerprint").cloned(),
                min_mi: parse_u64(&area, "min_mi"),
                source_events: parse_u64(&area, "source_events").unwrap_or(0),
                migrated_events: parse_u64(&area, "migrated_events").unwrap_or(0),
            },
        })
    }

    /// Calls `visit(position, live MI)` for every position `1..=last`, reading
    /// the MIs in chunks (memory does not grow with the positions), paced by
    /// `rate` positions a second (0: no limit). Stops with `Cancelled`
    /// between two chunks.
    pub(crate) async fn for_each_position_mi(
        &self,
        last: u64,
        rate: u64,
        mut visit: impl FnMut(u64, Option<u64>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut pacer = Pacer::new(rate * LIGHT_UNITS_PER_POSITION, &self.cancel);
        let chunk = pacer.step(MI_CHUNK);
        let mut first = 1;
        while first <= last {
            let end = last.min(first + chunk - 1);
            pacer.take(end - first + 1).await?;
            let positions: Vec<u64> = (first..=end).collect();
            let mis: Vec<Option<u64>> = self
                .retrying("read the positions' MIs", || async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("HMGET")
                        .arg(self.keys.position_mi())
                        .arg(&positions)
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            for (position, mi) in positions.into_iter().zip(mis) {
                visit(position, mi)?;
            }
            first = end + 1;
        }
        Ok(())
    }

    /// The live events and MIs of `first..=last`, in one round trip.
    pub(crate) async fn read_live(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<LivePosition>, EngineError> {
        let positions: Vec<u64> = (first..=last).collect();
        let (events, mis): (Vec<Option<String>>, Vec<Option<u64>>) = self
            .retrying("read live positions", || async {
                let mut conn = self.conn.clone();
                Ok(redis::pipe()
                    .cmd("HMGET")
                    .arg(self.keys.events())
                    .arg(&positions)
                    .cmd("HMGET")
                    .arg(self.keys.position_mi())
                    .arg(&positions)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let mut batch = Vec::with_capacity(positions.len());
        for ((position, events_json), mi) in positions.into_iter().zip(events).zip(mis) {
            let (Some(events_json), Some(migration_index)) = (events_json, mi) else {
                return Err(EngineError::Failed(format!(
                    "Position {position} has no stored events or no migration index in the live datastore"
                )));
            };
            batch.push(LivePosition {
                position,
                migration_index,
                events_json,
            });
        }
        Ok(batch)
    }

    /// The stored keyframe models at `mi` of `fqids` (those that exist), as
    /// their stored JSON, in one round trip: an `HMGET` per collection,
    /// pipelined.
    pub(crate) async fn read_keyframe_models(
        &self,
        mi: u64,
        fqids: Vec<Fqid>,
    ) -> Result<Vec<(Fqid, String)>, EngineError> {
        if fqids.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_collection: BTreeMap<&str, Vec<&Fqid>> = BTreeMap::new();
        for fqid in &fqids {
            by_collection
                .entry(fqid.collection())
                .or_default()
                .push(fqid);
        }
        let replies: Vec<Vec<Option<String>>> = self
            .retrying("read keyframe models", || async {
                let mut pipe = redis::pipe();
                for (collection, members) in &by_collection {
                    pipe.cmd("HMGET")
                        .arg(self.keys.mig_keyframe(mi, collection))
                        .arg(members.iter().map(|fqid| fqid.id()).collect::<Vec<_>>());
                }
                let mut conn = self.conn.clone();
                Ok(pipe.query_async(&mut conn).await?)
            })
            .await?;
        Ok(by_collection
            .into_values()
            .zip(replies)
            .flat_map(|(members, jsons)| members.into_iter().zip(jsons))
            .filter_map(|(fqid, json)| json.map(|json| (fqid.clone(), json)))
            .collect())
    }

    /// The keyframes of every MI in `min_mi..=target`, as the last checkpoint
    /// left them, paced by `rate` positions a second (0: no limit). Stops
    /// with `Cancelled` between two chunks.
    pub(crate) async fn load_keyframes(
        &self,
        min_mi: u64,
        target: u64,
        rate: u64,
    ) -> Result<BTreeMap<u64, Models>, EngineError> {
        let mut pacer = Pacer::new(rate * LIGHT_UNITS_PER_POSITION, &self.cancel);
        let count = pacer.step(SCAN_COUNT);
        let mut keyframes = BTreeMap::new();
        for mi in min_mi..=target {
            pacer.check()?;
            let collections: Vec<String> = self
                .retrying("read the keyframe collections", || async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("SMEMBERS")
                        .arg(self.keys.mig_keyframe_collections(mi))
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            let mut models = Models::new();
            for collection in collections {
                // HSCAN in chunks: one HGETALL of a big keyframe could
                // block Redis and outlast the response timeout.
                let key = self.keys.mig_keyframe(mi, &collection);
                let mut stored: Vec<(u64, String)> = Vec::new();
                let mut scan_cursor = 0u64;
                loop {
                    pacer.take(count).await?;
                    let (next, chunk): (u64, Vec<(u64, String)>) = self
                        .retrying("read a keyframe", || async {
                            let mut conn = self.conn.clone();
                            Ok(redis::cmd("HSCAN")
                                .arg(&key)
                                .arg(scan_cursor)
                                .arg("COUNT")
                                .arg(count)
                                .query_async(&mut conn)
                                .await?)
                        })
                        .await?;
                    stored.extend(chunk);
                    scan_cursor = next;
                    if scan_cursor == 0 {
                        break;
                    }
                }
                for (id, json) in stored {
                    let fqid = Fqid::new(&collection, id).map_err(|err| {
                        EngineError::Failed(format!("corrupt keyframe at MI {mi}: {err}"))
                    })?;
                    let model = Model::from_stored_json(&json).map_err(|err| {
                        EngineError::Failed(format!("keyframe {fqid} at MI {mi}: {err}"))
                    })?;
                    models.insert(fqid, model);
                }
            }
            keyframes.insert(mi, models);
        }
        Ok(keyframes)
    }

    /// The members of a set (the keys and collections scripts get as KEYS).
    async fn members(&self, set: String) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut conn)
            .await?)
    }

    /// Writes one checkpoint atomically (`engine_checkpoint.lua`).
    pub(crate) async fn checkpoint(&self, checkpoint: &Checkpoint) -> Result<Landed, EngineError> {
        let landed = self
            .retrying("checkpoint", || self.checkpoint_once(checkpoint))
            .await?;
        if landed == Landed::Already {
            tracing::info!(
                cursor = checkpoint.to_cursor,
                "the checkpoint had landed although its answer was lost"
            );
        }
        Ok(landed)
    }

    async fn checkpoint_once(&self, checkpoint: &Checkpoint) -> Result<Landed, EngineError> {
        let keys = &self.keys;
        // A fresh checkpoint deletes the old area: its keys are passed too.
        let old_keys = match checkpoint.mode {
            Mode::Fresh => self.members(keys.mig_keys()).await?,
            Mode::Continue | Mode::Resume => Vec::new(),
        };
        let mut invocation = scripts::CHECKPOINT.prepare_invoke();
        invocation
            .key(keys.lock())
            .key(keys.mig_state())
            .key(keys.mig_keys())
            .key(keys.mig_events())
            .key(keys.mig_position_mi())
            .key(keys.mig_mi_counts());
        invocation
            .arg(&self.token)
            .arg(match checkpoint.mode {
                Mode::Fresh => "fresh",
                Mode::Continue => "continue",
                Mode::Resume => "resume",
            })
            .arg(checkpoint.from_cursor)
            .arg(checkpoint.to_cursor)
            .arg(checkpoint.target)
            .arg(&checkpoint.fingerprint)
            .arg(
                checkpoint
                    .min_mi
                    .map(|mi| mi.to_string())
                    .unwrap_or_default(),
            )
            .arg(checkpoint.source_events)
            .arg(checkpoint.migrated_events)
            .arg(if checkpoint.lowest { "1" } else { "" })
            .arg(checkpoint.positions.len());
        for (position, mi, events) in &checkpoint.positions {
            invocation.arg(position).arg(mi);
            match events {
                EventsJson::Raw(json) => invocation.arg(json),
                EventsJson::Events(events) => {
                    let json = serde_json::to_string(events).map_err(|err| {
                        EngineError::Failed(format!(
                            "position {position}: cannot serialise its migrated events: {err}"
                        ))
                    })?;
                    invocation.arg(json)
                }
            };
        }
        invocation.arg(checkpoint.keyframes.len());
        // KEYS[1..6] are above; keyframe keys follow (1-based for Lua).
        let mut extra_keys: Vec<String> = Vec::new();
        let mut set_keys: HashMap<u64, usize> = HashMap::new();
        for ((mi, collection), models) in &checkpoint.keyframes {
            extra_keys.push(keys.mig_keyframe(*mi, collection));
            let hash_index = 6 + extra_keys.len();
            let set_index = *set_keys.entry(*mi).or_insert_with(|| {
                extra_keys.push(keys.mig_keyframe_collections(*mi));
                6 + extra_keys.len()
            });
            invocation
                .arg(hash_index)
                .arg(set_index)
                .arg(collection)
                .arg(models.len());
            for (id, json) in models {
                invocation.arg(id).arg(json);
            }
        }
        invocation.arg(old_keys.len());
        // Metrics: the cluster-wide counters this batch credits, after the
        // keyframe keys and before the old area keys (its KEYS index is the
        // last argument).
        extra_keys.push(keys.metrics());
        invocation.arg(6 + extra_keys.len());
        for key in extra_keys.into_iter().chain(old_keys) {
            invocation.key(key);
        }
        let mut conn = self.conn.clone();
        let answer: String = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)?;
        Ok(if answer == "ALREADY" {
            Landed::Already
        } else {
            Landed::Written
        })
    }

    /// The flip of `finalize` (`engine_finalize.lua`): returns the positions
    /// and events now live, and whether the flip had landed before.
    pub(crate) async fn finalize(
        &self,
        target: u64,
        fingerprint: &str,
    ) -> Result<(u64, u64, Landed), EngineError> {
        self.retrying("finalize", || self.finalize_once(target, fingerprint))
            .await
    }

    async fn finalize_once(
        &self,
        target: u64,
        fingerprint: &str,
    ) -> Result<(u64, u64, Landed), EngineError> {
        let keys = &self.keys;
        let live = self.members(keys.collections()).await?;
        let keyframes = self.members(keys.mig_keyframe_collections(target)).await?;
        let area = self.members(keys.mig_keys()).await?;
        let mut invocation = scripts::FINALIZE.prepare_invoke();
        invocation
            .key(keys.lock())
            .key(keys.mig_state())
            .key(keys.mig_keys())
            .key(keys.mig_events())
            .key(keys.mig_position_mi())
            .key(keys.mig_mi_counts())
            .key(keys.events())
            .key(keys.position_mi())
            .key(keys.collections())
            .key(keys.migration_index())
            .key(keys.event_count())
            .key(keys.position())
            .key(keys.mig_keyframe_collections(target));
        for collection in &live {
            invocation.key(keys.models(collection));
        }
        for collection in &keyframes {
            invocation
                .key(keys.mig_keyframe(target, collection))
                .key(keys.models(collection));
        }
        for key in &area {
            invocation.key(key);
        }
        invocation
            .arg(&self.token)
            .arg(target)
            .arg(fingerprint)
            .arg(live.len())
            .arg(keyframes.len())
            .arg(area.len());
        for collection in live.iter().chain(&keyframes) {
            invocation.arg(collection);
        }
        let mut conn = self.conn.clone();
        let (positions, events, already): (u64, u64, u64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)?;
        Ok((
            positions,
            events,
            if already == 1 {
                Landed::Already
            } else {
                Landed::Written
            },
        ))
    }

    /// Deletes the migration area (`engine_reset.lua`): returns the number
    /// of positions that had migration data.
    pub(crate) async fn reset(&self) -> Result<u64, EngineError> {
        self.retrying("reset", || self.reset_once()).await
    }

    async fn reset_once(&self) -> Result<u64, EngineError> {
        let keys = &self.keys;
        let area = self.members(keys.mig_keys()).await?;
        let mut invocation = scripts::RESET.prepare_invoke();
        invocation
            .key(keys.lock())
            .key(keys.mig_keys())
            .key(keys.mig_state())
            .key(keys.mig_events())
            .key(keys.mig_position_mi())
            .key(keys.mig_mi_counts());
        for key in &area {
            invocation.key(key);
        }
        invocation.arg(&self.token);
        let mut conn = self.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)
    }
}
