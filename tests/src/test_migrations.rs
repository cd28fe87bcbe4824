//! Small test migrations for the engine tests (`Migration` implemented by
//! hand, plus the declarative kind read from JSON) and the registries the
//! tests run: each one changes events in one simple, checkable way.

use std::sync::Arc;

use migration_shared::datastore::{Event, Model};
use migration_shared::migrations::{Migration, MigrationContext, MigrationError, Registry};
use serde_json::{json, Value};

/// A registry of `migrations`, in order.
pub fn registry(migrations: Vec<Arc<dyn Migration>>) -> Arc<Registry> {
    Arc::new(Registry::new(migrations))
}

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
    let registry = file_registry(text);
    assert!(!registry.reads_context());
    registry
}

/// A registry read from `text`, a `MIGRATIONS_FILE` (SPEC 6); panics when
/// it is invalid.
pub fn file_registry(text: Value) -> Arc<Registry> {
    Arc::new(
        Registry::from_json(std::path::Path::new("migrations.json"), &text.to_string()).unwrap(),
    )
}
