//! The one harness of the engine tests: a private Redis, live datastore
//! content written directly in the documented format (until the writer is
//! merged), an output sink that keeps the lines, small test migrations, and
//! a dump of every key for byte-exact comparisons.
#![allow(dead_code, unreachable_pub)]

pub mod live;

use std::collections::BTreeMap;
use std::sync::Arc;

use migration_shared::datastore::{Event, Fqid, Model, Models};
use migration_shared::keys::Keys;
use migration_shared::migrations::{Migration, MigrationContext, MigrationError, Registry};
use migration_shared::test_support::RedisServer;
use migration_worker::engine::{Command, Engine, EngineError, EngineOptions, Fence, OutputSink};
use redis::Commands;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use live::LiveWriter;

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

pub fn registry(migrations: Vec<Arc<dyn Migration>>) -> Arc<Registry> {
    Arc::new(Registry::new(migrations))
}

pub fn fqid(text: &str) -> Fqid {
    text.parse().unwrap()
}

// ----- test migrations -----

/// Applies `f` to each event of `collection`; `f` returns the replacement
/// events (possibly none, possibly several).
pub struct MapEvents {
    pub name: String,
    pub collection: String,
    #[allow(clippy::type_complexity)]
    pub f: Box<dyn Fn(Event) -> Vec<Event> + Send + Sync>,
}

impl Migration for MapEvents {
    fn name(&self) -> &str {
        &self.name
    }
    fn fingerprint_source(&self) -> String {
        format!("map {} {}", self.name, self.collection)
    }
    fn migrate(
        &self,
        _context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        Ok(events
            .into_iter()
            .flat_map(|event| {
                if event.fqid().collection() == self.collection {
                    (self.f)(event)
                } else {
                    vec![event]
                }
            })
            .collect())
    }
}

fn rename_in(fields: &mut serde_json::Map<String, Value>, old: &str, new: &str) {
    if let Some(value) = fields.remove(old) {
        fields.insert(new.to_string(), value);
    }
}

/// `rename_field` as SPEC 6 describes it.
pub fn rename_field(name: &str, collection: &str, old: &str, new: &str) -> Arc<dyn Migration> {
    let (old, new) = (old.to_string(), new.to_string());
    Arc::new(MapEvents {
        name: name.into(),
        collection: collection.into(),
        f: Box::new(move |mut event| {
            match &mut event {
                Event::Create { fields, .. } | Event::Update { fields, .. } => {
                    rename_in(fields, &old, &new)
                }
                Event::Deletefields { fields, .. } => {
                    for field in fields.iter_mut() {
                        if *field == old {
                            *field = new.clone();
                        }
                    }
                }
                Event::Listfields { add, remove, .. } => {
                    for list in [add, remove] {
                        if let Some(values) = list.remove(&old) {
                            list.insert(new.clone(), values);
                        }
                    }
                }
                Event::Delete { .. } | Event::Restore { .. } => {}
            }
            vec![event]
        }),
    })
}

/// `add_field`: a create without `field` gets `default`.
pub fn add_field(name: &str, collection: &str, field: &str, default: Value) -> Arc<dyn Migration> {
    let field = field.to_string();
    Arc::new(MapEvents {
        name: name.into(),
        collection: collection.into(),
        f: Box::new(move |mut event| {
            if let Event::Create { fields, .. } = &mut event {
                fields
                    .entry(field.clone())
                    .or_insert_with(|| default.clone());
            }
            vec![event]
        }),
    })
}

/// `remove_fields`: drops the fields from every event of the collection.
pub fn remove_field(name: &str, collection: &str, field: &str) -> Arc<dyn Migration> {
    let field = field.to_string();
    Arc::new(MapEvents {
        name: name.into(),
        collection: collection.into(),
        f: Box::new(move |mut event| {
            match &mut event {
                Event::Create { fields, .. } | Event::Update { fields, .. } => {
                    fields.remove(&field);
                }
                Event::Deletefields { fields, .. } => fields.retain(|f| *f != field),
                Event::Listfields { add, remove, .. } => {
                    add.remove(&field);
                    remove.remove(&field);
                }
                Event::Delete { .. } | Event::Restore { .. } => {}
            }
            vec![event]
        }),
    })
}

/// A migration whose every output is its input.
pub fn identity(name: &str) -> Arc<dyn Migration> {
    Arc::new(MapEvents {
        name: name.into(),
        collection: "no_collection".into(),
        f: Box::new(|event| vec![event]),
    })
}

/// Fails at the first create of `collection`.
pub struct FailOnCreate {
    pub name: String,
    pub collection: String,
}

impl Migration for FailOnCreate {
    fn name(&self) -> &str {
        &self.name
    }
    fn fingerprint_source(&self) -> String {
        format!("fail {}", self.collection)
    }
    fn migrate(
        &self,
        _context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        for event in &events {
            if let Event::Create { fqid, .. } = event {
                if fqid.collection() == self.collection {
                    return Err(MigrationError(format!("{fqid} lacks field 'name'")));
                }
            }
        }
        Ok(events)
    }
}

/// Records what the migration saw in its context: for every `update` of a
/// `motion`, writes the old and new `title`/`name` of the model into the
/// update as `seen_old`/`seen_new`.
pub struct ReadsContext;

impl Migration for ReadsContext {
    fn name(&self) -> &str {
        "reads_context"
    }
    fn fingerprint_source(&self) -> String {
        "reads_context".into()
    }
    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        Ok(events
            .into_iter()
            .map(|mut event| {
                if let Event::Update { fqid, fields } = &mut event {
                    let field = |models: Option<&Model>| -> Value {
                        models
                            .map(|m| {
                                let f = &m.fields;
                                f.get("title")
                                    .or(f.get("name"))
                                    .cloned()
                                    .unwrap_or(Value::Null)
                            })
                            .unwrap_or(Value::Null)
                    };
                    let old = field(context.old_model(fqid));
                    let new = field(context.new_model(fqid));
                    fields.insert(
                        "seen_old".into(),
                        if old.is_null() { json!("-") } else { old },
                    );
                    fields.insert(
                        "seen_new".into(),
                        if new.is_null() { json!("-") } else { new },
                    );
                }
                event
            })
            .collect())
    }
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
/// two collections, every event type, several events per position.
pub fn rich_history(setup: &mut Setup, positions: u64, seed: u64) {
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
            let id = next(6) + 1;
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

/// Three chained migrations 1 -> 4 touching every declarative kind of change.
pub fn chain_registry() -> Arc<Registry> {
    registry(vec![
        rename_field("0002_rename", "motion", "title", "name"),
        add_field("0003_add", "motion", "weight", json!(0)),
        remove_field("0004_remove", "motion", "legacy"),
    ])
}

/// The operations of [`chain_registry`] as declarative migrations (the
/// `MIGRATIONS_FILE` kind): none reads the context, so the engine keeps only
/// the target keyframe.
pub fn declarative_chain_registry() -> Arc<Registry> {
    let text = json!({"migrations": [
        {"name": "0002_rename", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
        {"name": "0003_add", "ops": [
            {"op": "add_field", "collection": "motion", "field": "weight", "default": 0}]},
        {"name": "0004_remove", "ops": [
            {"op": "remove_fields", "collection": "motion", "fields": ["legacy"]}]}
    ]});
    let registry =
        Registry::from_json(std::path::Path::new("migrations.json"), &text.to_string()).unwrap();
    assert!(!registry.reads_context());
    Arc::new(registry)
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
        .with_batch_positions(batch);
    let mut sink = CancelAfter {
        lines: Vec::new(),
        token: cancel,
        after_verbose_lines: stop_after,
    };
    let result = engine.run(command, &mut sink).await;
    (result, sink.lines)
}
