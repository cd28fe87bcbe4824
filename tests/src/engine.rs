//! The engine tests' harness (`worker/tests/engine_*.rs`): a private Redis
//! with the job lock held, live datastore content written directly in the
//! documented format ([`LiveWriter`]), output sinks that keep the lines, and
//! a dump of every key for byte-exact comparisons. The engine runs in the
//! test process here, not as a binary: these tests drive
//! `migration_worker::engine` directly.
//!
//! The test migrations and registries are in [`crate::test_migrations`] and
//! re-exported here, so one `use migration_tests::engine::*;` is a test's
//! whole set-up.

use std::collections::BTreeMap;
use std::sync::Arc;

use migration_shared::datastore::{Event, Fqid, Model, Models};
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_shared::test_support::RedisServer;
use migration_worker::engine::{Command, Engine, EngineError, EngineOptions, Fence, OutputSink};
use redis::Commands;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use crate::live_writer::LiveWriter;
pub use crate::test_migrations::*;

pub const PREFIX: &str = "t";
pub const TOKEN: u64 = 7;

pub fn keys() -> Keys {
    Keys::new(PREFIX)
}

/// A private Redis with the lock held by fencing token [`TOKEN`].
pub struct Setup {
    pub server: RedisServer,
    pub conn: redis::Connection,
    pub writer: LiveWriter,
}

impl Setup {
    /// Starts the private Redis and takes the lock with [`TOKEN`].
    // No `Default`: starting a redis-server is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Setup {
        let server = RedisServer::start();
        let mut conn = server.connection();
        set_token(&mut conn, TOKEN);
        Setup {
            server,
            conn,
            writer: LiveWriter::new(keys()),
        }
    }

    /// Writes one position at `mi` (the live MI).
    pub fn write(&mut self, mi: u64, events: Vec<Value>) -> u64 {
        let events = events
            .into_iter()
            .map(|e| serde_json::from_value(e).unwrap())
            .collect();
        self.writer.write(&mut self.conn, mi, events).unwrap()
    }

    pub async fn engine(&self, registry: &Arc<Registry>, options: EngineOptions) -> Engine {
        self.engine_with(registry, options, TOKEN, CancellationToken::new())
            .await
    }

    pub async fn engine_with(
        &self,
        registry: &Arc<Registry>,
        options: EngineOptions,
        token: u64,
        cancel: CancellationToken,
    ) -> Engine {
        Engine::new(
            self.server.connection_manager().await,
            keys(),
            registry.clone(),
            Fence { token },
            options,
            cancel,
        )
    }

    /// Runs `command` with default options; returns the result and the output.
    pub async fn run(
        &self,
        registry: &Arc<Registry>,
        command: Command,
    ) -> (Result<(), EngineError>, Vec<String>) {
        let engine = self.engine(registry, EngineOptions::default()).await;
        let mut sink = VecSink::default();
        let result = engine.run(command, &mut sink).await;
        (result, sink.lines)
    }

    pub async fn run_ok(&self, registry: &Arc<Registry>, command: Command) -> Vec<String> {
        let (result, lines) = self.run(registry, command).await;
        if let Err(err) = result {
            panic!("{command:?} failed: {err:?}\n{}", lines.join("\n"));
        }
        lines
    }

    /// Every key under the prefix with its content, canonical.
    pub fn dump(&mut self) -> BTreeMap<String, Value> {
        dump(&mut self.conn, "*")
    }

    /// Every migration-area key with its content.
    pub fn dump_area(&mut self) -> BTreeMap<String, Value> {
        dump(&mut self.conn, "mig:*")
    }

    /// The live models of every collection, parsed.
    pub fn live_models(&mut self) -> BTreeMap<String, Model> {
        let collections: Vec<String> = self.conn.smembers(keys().collections()).unwrap();
        let mut models = BTreeMap::new();
        for collection in collections {
            let stored: BTreeMap<u64, String> =
                self.conn.hgetall(keys().models(&collection)).unwrap();
            for (id, json) in stored {
                models.insert(
                    format!("{collection}/{id}"),
                    Model::from_stored_json(&json).unwrap(),
                );
            }
        }
        models
    }

    pub fn get(&mut self, key: &str) -> Option<String> {
        self.conn.get(format!("{{{PREFIX}}}:{key}")).unwrap()
    }
}

pub fn set_token(conn: &mut redis::Connection, token: u64) {
    let _: () = conn
        .hset(keys().lock(), "fencing_token", token.to_string())
        .unwrap();
}

/// Dumps every key matching `{PREFIX}:<pattern>` with its content.
pub fn dump(conn: &mut redis::Connection, pattern: &str) -> BTreeMap<String, Value> {
    let found: Vec<String> = conn
        .scan_match(format!("{{{PREFIX}}}:{pattern}"))
        .unwrap()
        .map(|key: redis::RedisResult<String>| key.unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for key in found {
        // The lock and the metrics counters say who runs and what happened,
        // not what the datastore holds.
        if key == keys().lock() || key == keys().metrics() {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let value = match kind.as_str() {
            "string" => json!(conn.get::<_, String>(&key).unwrap()),
            "hash" => json!(conn.hgetall::<_, BTreeMap<String, String>>(&key).unwrap()),
            "set" => {
                let mut members: Vec<String> = conn.smembers(&key).unwrap();
                members.sort();
                json!(members)
            }
            other => json!(format!("<{other}>")),
        };
        out.insert(key, value);
    }
    out
}

/// An [`OutputSink`] that keeps the lines.
#[derive(Default)]
pub struct VecSink {
    pub lines: Vec<String>,
}

impl OutputSink for VecSink {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        assert!(!line.contains('\n'), "output line with a newline: {line:?}");
        self.lines.push(line);
        Ok(())
    }
}

/// A sink that cancels `token` after `after` lines of progress (used to stop
/// a run at a checkpoint).
pub struct CancelAfter {
    pub lines: Vec<String>,
    pub token: CancellationToken,
    pub after_verbose_lines: usize,
}

impl OutputSink for CancelAfter {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        if line.starts_with("Position ") {
            self.after_verbose_lines = self.after_verbose_lines.saturating_sub(1);
            if self.after_verbose_lines == 0 {
                self.token.cancel();
            }
        }
        self.lines.push(line);
        Ok(())
    }
}

pub fn fqid(text: &str) -> Fqid {
    text.parse().unwrap()
}

/// The models after applying every event to nothing, for comparisons.
pub fn replay(positions: &[(u64, Vec<Event>)]) -> Models {
    let mut models = Models::new();
    for (position, events) in positions {
        for event in events {
            migration_shared::datastore::apply_event(&mut models, event, *position).unwrap();
        }
    }
    models
}

/// A deterministic, varied, valid history of `positions` positions at MI 1:
/// two collections of 6 ids each, every event type, several events per
/// position.
pub fn rich_history(setup: &mut Setup, positions: u64, seed: u64) {
    rich_history_of(setup, positions, seed, 6);
}

/// [`rich_history`] over `ids` ids per collection.
pub fn rich_history_of(setup: &mut Setup, positions: u64, seed: u64, ids: u64) {
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for position in 1..=positions {
        let mut events = Vec::new();
        for _ in 0..=next(3) {
            let collection = if next(3) == 0 { "topic" } else { "motion" };
            let id = next(ids) + 1;
            let fqid = fqid(&format!("{collection}/{id}"));
            let model = setup.writer.models().get(&fqid).cloned();
            let touched = events
                .iter()
                .any(|e: &Value| e["fqid"] == json!(fqid.to_string()));
            if touched {
                continue;
            }
            let event = match model {
                None => json!({"type": "create", "fqid": fqid.to_string(),
                    "fields": {"title": format!("t{position}"), "legacy": position, "tag_ids": [next(3)]}}),
                Some(model) if model.deleted => {
                    json!({"type": "restore", "fqid": fqid.to_string()})
                }
                Some(_) => match next(5) {
                    0 => json!({"type": "update", "fqid": fqid.to_string(),
                        "fields": {"title": format!("u{position}"), "text": format!("x{}", next(100))}}),
                    1 => {
                        json!({"type": "deletefields", "fqid": fqid.to_string(), "fields": ["text", "legacy"]})
                    }
                    2 => json!({"type": "listfields", "fqid": fqid.to_string(),
                        "add": {"tag_ids": [next(4)]}, "remove": {"tag_ids": [next(4)]}}),
                    3 => json!({"type": "delete", "fqid": fqid.to_string()}),
                    _ => {
                        json!({"type": "update", "fqid": fqid.to_string(), "fields": {"legacy": next(9)}})
                    }
                },
            };
            events.push(event);
        }
        setup.write(1, events);
    }
}

/// Runs `command` with `batch` positions per checkpoint, cancelling after
/// `stop_after` positions (verbose lines); returns the result and output.
pub async fn run_stopping(
    setup: &Setup,
    registry: &Arc<Registry>,
    command: Command,
    batch: u64,
    stop_after: usize,
) -> (Result<(), EngineError>, Vec<String>) {
    let cancel = CancellationToken::new();
    let engine = setup
        .engine_with(
            registry,
            EngineOptions {
                verbose: true,
                max_positions_per_second: 0,
            },
            TOKEN,
            cancel.clone(),
        )
        .await
        .with_batch_positions(batch)
        // One checkpoint in flight, so the run stops exactly one batch
        // after the `stop_after`-th position.
        .with_checkpoint_depth(1);
    let mut sink = CancelAfter {
        lines: Vec::new(),
        token: cancel,
        after_verbose_lines: stop_after,
    };
    let result = engine.run(command, &mut sink).await;
    (result, sink.lines)
}

/// Deletes the live events of `positions` (their MIs stay): a run that
/// reads them fails ("no stored events"), so a run that succeeds afterwards
/// has not read them.
pub fn forget_live_events(setup: &mut Setup, positions: std::ops::RangeInclusive<u64>) {
    let positions: Vec<u64> = positions.collect();
    if !positions.is_empty() {
        let _: () = redis::Commands::hdel(&mut setup.conn, keys().events(), positions).unwrap();
    }
}

/// A sink that changes the fencing token after `left` verbose lines (another
/// worker took the lock: the next checkpoint is refused).
pub struct FenceAfter<'a> {
    pub conn: &'a mut redis::Connection,
    pub left: usize,
}

impl OutputSink for FenceAfter<'_> {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        if line.starts_with("Position ") {
            self.left = self.left.saturating_sub(1);
            if self.left == 0 {
                set_token(self.conn, TOKEN + 1);
            }
        }
        Ok(())
    }
}
