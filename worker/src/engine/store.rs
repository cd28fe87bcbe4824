//! The engine's Redis access: batched reads of the live datastore and the
//! migration area, and the calls of the fenced engine scripts.
//!
//! Reads are pipelined (one round trip per batch of positions); every write
//! is one of the scripts in `shared/lua/engine_*.lua`, which check the fencing
//! token first. Script refusals are mapped to [`EngineError`] here, so the
//! rest of the engine never looks at Redis error codes.

use std::collections::{BTreeMap, HashMap};

use migration_shared::datastore::{Event, Fqid, Model, Models};
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use migration_shared::scripts::{self, FENCED, STALE};

use super::EngineError;

/// Positions per `HMGET` when only MIs are read (the validation pass).
const MI_CHUNK: u64 = 5000;

/// What `mig:state` says about the migration area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AreaState {
    /// Last position with migration data.
    pub(crate) cursor: u64,
    /// Last position the stored keyframes include (a run resumes after it).
    pub(crate) keyframe_cursor: u64,
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

/// One position of a batch as read from the live datastore. The events are
/// parsed by the reading task, so parsing runs beside the migration of the
/// previous batch.
pub(crate) struct LivePosition {
    pub(crate) position: u64,
    pub(crate) migration_index: u64,
    pub(crate) events_json: String,
    /// The parsed events, or why they could not be parsed.
    pub(crate) events: Result<Vec<Event>, String>,
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

fn parse_u64(map: &HashMap<String, String>, field: &str) -> Option<u64> {
    map.get(field).and_then(|value| value.parse().ok())
}

/// The engine's handle on Redis.
#[derive(Clone)]
pub(crate) struct Store {
    conn: RedisConnection,
    keys: Keys,
    token: String,
}

impl Store {
    pub(crate) fn new(conn: RedisConnection, keys: Keys, token: u64) -> Store {
        Store {
            conn,
            keys,
            token: token.to_string(),
        }
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot, EngineError> {
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
    /// the MIs in chunks (memory does not grow with the positions).
    pub(crate) async fn for_each_position_mi(
        &self,
        last: u64,
        mut visit: impl FnMut(u64, Option<u64>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut conn = self.conn.clone();
        let mut first = 1;
        while first <= last {
            let end = last.min(first + MI_CHUNK - 1);
            let positions: Vec<u64> = (first..=end).collect();
            let mis: Vec<Option<u64>> = redis::cmd("HMGET")
                .arg(self.keys.position_mi())
                .arg(&positions)
                .query_async(&mut conn)
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
        let mut conn = self.conn.clone();
        let positions: Vec<u64> = (first..=last).collect();
        let (events, mis): (Vec<Option<String>>, Vec<Option<u64>>) = redis::pipe()
            .cmd("HMGET")
            .arg(self.keys.events())
            .arg(&positions)
            .cmd("HMGET")
            .arg(self.keys.position_mi())
            .arg(&positions)
            .query_async(&mut conn)
            .await?;
        let mut batch = Vec::with_capacity(positions.len());
        for ((position, events_json), mi) in positions.into_iter().zip(events).zip(mis) {
            let (Some(events_json), Some(migration_index)) = (events_json, mi) else {
                return Err(EngineError::Failed(format!(
                    "Position {position} has no stored events or no migration index in the live datastore"
                )));
            };
            let events = serde_json::from_str(&events_json).map_err(|err| {
                format!("position {position}: its stored events are not valid events: {err}")
            });
            batch.push(LivePosition {
                position,
                migration_index,
                events_json,
                events,
            });
        }
        Ok(batch)
    }

    /// The keyframes of every MI in `min_mi..=target`, as the last checkpoint
    /// left them.
    pub(crate) async fn load_keyframes(
        &self,
        min_mi: u64,
        target: u64,
    ) -> Result<BTreeMap<u64, Models>, EngineError> {
        let mut conn = self.conn.clone();
        let mut keyframes = BTreeMap::new();
        for mi in min_mi..=target {
            let collections: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.keys.mig_keyframe_collections(mi))
                .query_async(&mut conn)
                .await?;
            let mut models = Models::new();
            for collection in collections {
                // HSCAN in chunks: one HGETALL of a big keyframe could
                // block Redis and outlast the response timeout.
                let key = self.keys.mig_keyframe(mi, &collection);
                let mut stored: Vec<(u64, String)> = Vec::new();
                let mut scan_cursor = 0u64;
                loop {
                    let (next, chunk): (u64, Vec<(u64, String)>) = redis::cmd("HSCAN")
                        .arg(&key)
                        .arg(scan_cursor)
                        .arg("COUNT")
                        .arg(2000)
                        .query_async(&mut conn)
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

    /// Writes one checkpoint atomically (`engine_checkpoint.lua`).
    pub(crate) async fn checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), EngineError> {
        let keys = &self.keys;
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
        // Metrics: the cluster-wide counters this batch credits, after the
        // keyframe keys (its index is the last argument).
        extra_keys.push(keys.metrics());
        invocation.arg(6 + extra_keys.len());
        for key in extra_keys {
            invocation.key(key);
        }
        let mut conn = self.conn.clone();
        invocation
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(script_error)
    }

    /// The flip of `finalize` (`engine_finalize.lua`): returns the positions
    /// and events now live.
    pub(crate) async fn finalize(
        &self,
        target: u64,
        fingerprint: &str,
    ) -> Result<(u64, u64), EngineError> {
        let keys = &self.keys;
        let mut conn = self.conn.clone();
        scripts::FINALIZE
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
            .key(keys.mig_keyframe_collections(target))
            .arg(&self.token)
            .arg(target)
            .arg(fingerprint)
            .arg(keys.base())
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)
    }

    /// Deletes the migration area (`engine_reset.lua`): returns the number
    /// of positions that had migration data.
    pub(crate) async fn reset(&self) -> Result<u64, EngineError> {
        let keys = &self.keys;
        let mut conn = self.conn.clone();
        scripts::RESET
            .key(keys.lock())
            .key(keys.mig_keys())
            .key(keys.mig_state())
            .key(keys.mig_events())
            .key(keys.mig_position_mi())
            .key(keys.mig_mi_counts())
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)
    }
}
