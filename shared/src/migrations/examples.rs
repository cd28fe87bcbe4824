//! Rust migrations for tests (compiled with `cfg(test)` or the feature
//! `test-support`), and [`migrate_in_memory`], a reference run of the
//! MI-first cascade entirely in memory.
//!
//! They cover what declarative ops cannot: turning one event into several
//! ([`SplitOffUpdate`]), dropping events so that a position may end up empty
//! ([`DropCollection`]), reading the migrated (new) datastore
//! ([`CountRevisions`]) and the unmigrated (old) one ([`KeepPreviousValue`]),
//! and failing at a chosen position ([`FailAtPosition`]). The worker's engine
//! tests can compare what they store with [`migrate_in_memory`].
//!
//! Not for production: nothing here is in the compiled-in registry.

use std::collections::HashMap;

use serde_json::Value;

use super::{Migration, MigrationContext, MigrationError, Registry};
use crate::datastore::{apply_event, Event, Fields, Fqid, Models};

/// Turns each `create` of `collection` carrying `field` into a `create`
/// without it followed by an `update` setting it: one event becomes two, the
/// resulting model is the same.
#[derive(Debug, Clone)]
pub struct SplitOffUpdate {
    name: String,
    collection: String,
    field: String,
}

impl SplitOffUpdate {
    /// The migration `name` splitting `field` off the creates of `collection`.
    pub fn new(name: &str, collection: &str, field: &str) -> SplitOffUpdate {
        SplitOffUpdate {
            name: name.into(),
            collection: collection.into(),
            field: field.into(),
        }
    }
}

impl Migration for SplitOffUpdate {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint_source(&self) -> String {
        format!("split_off_update-v1:{}:{}", self.collection, self.field)
    }

    fn migrate(
        &self,
        _context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut rest = Vec::new();
        for event in events {
            match event {
                Event::Create { fqid, mut fields } if fqid.collection() == self.collection => {
                    if let Some(value) = fields.remove(&self.field) {
                        let mut split = Fields::new();
                        split.insert(self.field.clone(), value);
                        updates.push(Event::Update {
                            fqid: fqid.clone(),
                            fields: split,
                        });
                    }
                    creates.push(Event::Create { fqid, fields });
                }
                Event::Create { .. } => creates.push(event),
                other => rest.push(other),
            }
        }
        // Input comes creates first; keeping the split updates right after
        // the creates keeps every update after its model's create.
        creates.extend(updates);
        creates.extend(rest);
        Ok(creates)
    }
}

/// Drops every event of `collection`: the models of that collection vanish,
/// and a position holding only such events ends up with no events at all.
#[derive(Debug, Clone)]
pub struct DropCollection {
    name: String,
    collection: String,
}

impl DropCollection {
    /// The migration `name` dropping `collection`.
    pub fn new(name: &str, collection: &str) -> DropCollection {
        DropCollection {
            name: name.into(),
            collection: collection.into(),
        }
    }
}

impl Migration for DropCollection {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint_source(&self) -> String {
        format!("drop_collection-v1:{}", self.collection)
    }

    fn migrate(
        &self,
        _context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        events.retain(|event| event.fqid().collection() != self.collection);
        Ok(events)
    }
}

/// Gives the models of `collection` a `revision` field that exists only from
/// this MI on: a `create` gets `revision: 1`, every `update` sets it to the
/// migrated model's revision + 1. It must read the *new* (migrated)
/// datastore: the old one has no `revision`.
#[derive(Debug, Clone)]
pub struct CountRevisions {
    name: String,
    collection: String,
}

impl CountRevisions {
    /// The migration `name` counting the revisions of `collection`.
    pub fn new(name: &str, collection: &str) -> CountRevisions {
        CountRevisions {
            name: name.into(),
            collection: collection.into(),
        }
    }
}

impl Migration for CountRevisions {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint_source(&self) -> String {
        format!("count_revisions-v1:{}", self.collection)
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        // The context shows the datastore before this position, so revisions
        // given by earlier events of the same position are tracked here.
        let mut revisions: HashMap<Fqid, u64> = HashMap::new();
        for event in &mut events {
            if event.fqid().collection() != self.collection {
                continue;
            }
            match event {
                Event::Create { fqid, fields } => {
                    fields.insert("revision".into(), 1.into());
                    revisions.insert(fqid.clone(), 1);
                }
                Event::Update { fqid, fields } => {
                    let previous = match revisions.get(fqid) {
                        Some(revision) => *revision,
                        None => context
                            .new_model(fqid)
                            .and_then(|model| model.fields.get("revision"))
                            .and_then(Value::as_u64)
                            .ok_or_else(|| {
                                MigrationError::at(
                                    &self.name,
                                    context,
                                    format_args!(
                                        "{fqid} has no revision in the migrated datastore"
                                    ),
                                )
                            })?,
                    };
                    fields.insert("revision".into(), (previous + 1).into());
                    revisions.insert(fqid.clone(), previous + 1);
                }
                _ => {}
            }
        }
        Ok(events)
    }
}

/// An `update` of `collection` that sets `field` also sets `into` to the
/// value `field` had before, read from the *old* (unmigrated) datastore.
#[derive(Debug, Clone)]
pub struct KeepPreviousValue {
    name: String,
    collection: String,
    field: String,
    into: String,
}

impl KeepPreviousValue {
    /// The migration `name` keeping the previous `field` of `collection` in `into`.
    pub fn new(name: &str, collection: &str, field: &str, into: &str) -> KeepPreviousValue {
        KeepPreviousValue {
            name: name.into(),
            collection: collection.into(),
            field: field.into(),
            into: into.into(),
        }
    }
}

impl Migration for KeepPreviousValue {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint_source(&self) -> String {
        format!(
            "keep_previous_value-v1:{}:{}:{}",
            self.collection, self.field, self.into
        )
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        for event in &mut events {
            if let Event::Update { fqid, fields } = event {
                if fqid.collection() != self.collection || !fields.contains_key(&self.field) {
                    continue;
                }
                let previous = context
                    .old_model(fqid)
                    .and_then(|model| model.fields.get(&self.field));
                if let Some(previous) = previous {
                    fields.insert(self.into.clone(), previous.clone());
                }
            }
        }
        Ok(events)
    }
}

/// Leaves events as they are, but fails at `position`.
#[derive(Debug, Clone)]
pub struct FailAtPosition {
    name: String,
    position: u64,
}

impl FailAtPosition {
    /// The migration `name` failing at `position`.
    pub fn new(name: &str, position: u64) -> FailAtPosition {
        FailAtPosition {
            name: name.into(),
            position,
        }
    }
}

impl Migration for FailAtPosition {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint_source(&self) -> String {
        format!("fail_at_position-v1:{}", self.position)
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        if context.position == self.position {
            return Err(MigrationError::at(
                &self.name,
                context,
                "failing on purpose",
            ));
        }
        Ok(events)
    }
}

/// The result of [`migrate_in_memory`].
#[derive(Debug, Clone, PartialEq)]
pub struct InMemoryRun {
    /// The migrated events of each position (index 0 is position 1), at the
    /// registry's target MI.
    pub positions: Vec<Vec<Event>>,
    /// The models at the target MI after the last position.
    pub models: Models,
}

/// Migrates `positions` (position `i + 1` is `positions[i]`, all stored at
/// MI `from`) to the registry's target, MI-first: each position goes
/// `from -> ... -> target` before the next starts; the migration to MI `m`
/// sees the models at `m - 1` (old) and `m` (new) as they were before the
/// position. This is what the engine must store, with or without crashes.
pub fn migrate_in_memory(
    registry: &Registry,
    from: u64,
    positions: &[Vec<Event>],
) -> Result<InMemoryRun, MigrationError> {
    let target = registry.target_migration_index();
    let steps = usize::try_from(target.saturating_sub(from)).unwrap_or(0);
    // keyframes[k]: the models at MI `from + k` before the current position.
    let mut keyframes: Vec<Models> = vec![Models::new(); steps + 1];
    let mut migrated = Vec::with_capacity(positions.len());
    for (index, events) in positions.iter().enumerate() {
        let position = index as u64 + 1;
        let mut at_mi = vec![events.clone()];
        for step in 1..=steps {
            let context = MigrationContext {
                position,
                target_migration_index: from + step as u64,
                old: &keyframes[step - 1],
                new: &keyframes[step],
            };
            let input = &at_mi[step - 1];
            let next = registry.migrate_position(&context, input.clone())?;
            // Every run of the reference checks the step's report too.
            assert_eq!(
                next.changed,
                next.events != *input,
                "position {position}, step to MI {}: wrong change report",
                context.target_migration_index
            );
            at_mi.push(next.events);
        }
        for (step, events) in at_mi.iter().enumerate() {
            for event in events {
                apply_event(&mut keyframes[step], event, position).map_err(|error| {
                    MigrationError(format!(
                        "position {position} at MI {}: {} on {}: {error}",
                        from + step as u64,
                        event.type_name(),
                        event.fqid()
                    ))
                })?;
            }
        }
        migrated.push(at_mi.pop().unwrap_or_default());
    }
    Ok(InMemoryRun {
        positions: migrated,
        models: keyframes.pop().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::{DeclarativeMigration, Op};
    use serde_json::json;
    use std::sync::Arc;

    fn events(value: Value) -> Vec<Event> {
        serde_json::from_value(value).unwrap()
    }

    fn fqid(text: &str) -> Fqid {
        text.parse().unwrap()
    }

    fn registry(migrations: Vec<Arc<dyn Migration>>) -> Registry {
        Registry::new(migrations)
    }

    #[test]
    fn one_event_becomes_several() {
        let registry = registry(vec![Arc::new(SplitOffUpdate::new(
            "0002_split",
            "motion",
            "text",
        ))]);
        let positions = vec![
            events(json!([{"type": "create", "fqid": "topic/1", "fields": {"text": "T"}}])),
            events(json!([
                {"type": "update", "fqid": "topic/1", "fields": {"a": 1}},
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A", "text": "T"}}
            ])),
        ];
        let run = migrate_in_memory(&registry, 1, &positions).unwrap();
        assert_eq!(run.positions[0], positions[0]);
        // The migration sees creates first (`migrate_position` orders them),
        // so the split update lands before the update of topic/1.
        assert_eq!(
            run.positions[1],
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A"}},
                {"type": "update", "fqid": "motion/1", "fields": {"text": "T"}},
                {"type": "update", "fqid": "topic/1", "fields": {"a": 1}}
            ]))
        );
        assert_eq!(
            run.models[&fqid("motion/1")].fields,
            json!({"title": "A", "text": "T"})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn dropped_events_can_leave_a_position_empty() {
        let registry = registry(vec![Arc::new(DropCollection::new("0002_drop", "topic"))]);
        let positions = vec![
            events(json!([{"type": "create", "fqid": "topic/1", "fields": {"a": 1}}])),
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {}},
                {"type": "update", "fqid": "topic/1", "fields": {"a": 2}}
            ])),
            events(json!([{"type": "delete", "fqid": "topic/1"}])),
        ];
        let run = migrate_in_memory(&registry, 1, &positions).unwrap();
        assert_eq!(
            run.positions,
            vec![
                vec![],
                events(json!([{"type": "create", "fqid": "motion/1", "fields": {}}])),
                vec![]
            ]
        );
        assert_eq!(run.models.len(), 1);
    }

    #[test]
    fn reads_the_new_datastore() {
        let registry = registry(vec![Arc::new(CountRevisions::new(
            "0002_revisions",
            "motion",
        ))]);
        let positions = vec![
            events(json!([{"type": "create", "fqid": "motion/1", "fields": {"title": "A"}}])),
            events(json!([{"type": "update", "fqid": "motion/1", "fields": {"title": "B"}}])),
            events(json!([
                {"type": "update", "fqid": "motion/1", "fields": {"title": "C"}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "D"}}
            ])),
        ];
        let run = migrate_in_memory(&registry, 1, &positions).unwrap();
        assert_eq!(
            run.positions[2],
            events(json!([
                {"type": "update", "fqid": "motion/1", "fields": {"title": "C", "revision": 3}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "D", "revision": 4}}
            ]))
        );
        assert_eq!(run.models[&fqid("motion/1")].fields["revision"], json!(4));
        // Without the migrated datastore (e.g. an engine passing the old one
        // twice) the migration cannot work, and says where it failed.
        let old = Models::new();
        let context = MigrationContext {
            position: 2,
            target_migration_index: 2,
            old: &old,
            new: &old,
        };
        let error = registry
            .migrate_position(&context, positions[1].clone())
            .unwrap_err();
        assert_eq!(
            error.0,
            "migration '0002_revisions' (to MI 2) failed at position 2: motion/1 has no revision in the migrated datastore"
        );
    }

    #[test]
    fn reads_the_old_datastore() {
        // The first migration renames `title`, so at MI 3 the old (MI 2)
        // model has `name`, and the new (MI 3) one has `name` too but with
        // `previous_name` from this migration: the two differ.
        let registry = registry(vec![
            Arc::new(DeclarativeMigration::new(
                "0002_rename",
                vec![Op::RenameField {
                    collection: "motion".into(),
                    old: "title".into(),
                    new: "name".into(),
                }],
            )),
            Arc::new(KeepPreviousValue::new(
                "0003_previous",
                "motion",
                "name",
                "previous_name",
            )),
        ]);
        let positions = vec![
            events(json!([{"type": "create", "fqid": "motion/1", "fields": {"title": "A"}}])),
            events(json!([{"type": "update", "fqid": "motion/1", "fields": {"title": "B"}}])),
            events(json!([{"type": "update", "fqid": "motion/1", "fields": {"title": "C"}}])),
        ];
        let run = migrate_in_memory(&registry, 1, &positions).unwrap();
        assert_eq!(
            run.positions[1],
            events(json!([{"type": "update", "fqid": "motion/1",
                "fields": {"name": "B", "previous_name": "A"}}]))
        );
        assert_eq!(
            run.models[&fqid("motion/1")].fields,
            json!({"name": "C", "previous_name": "B"})
                .as_object()
                .unwrap()
                .clone()
        );
        // Read directly: the context's old models are what it reads.
        let mut old = Models::new();
        apply_event(&mut old, &positions[0][0], 1).unwrap();
        let new = Models::new();
        let direct = KeepPreviousValue::new("m", "motion", "title", "was");
        let context = MigrationContext {
            position: 2,
            target_migration_index: 2,
            old: &old,
            new: &new,
        };
        let output = direct.migrate(&context, positions[1].clone()).unwrap();
        assert_eq!(
            output,
            events(
                json!([{"type": "update", "fqid": "motion/1", "fields": {"title": "B", "was": "A"}}])
            )
        );
    }

    #[test]
    fn mi_first_chain_and_failure() {
        let registry = registry(vec![
            Arc::new(SplitOffUpdate::new("0002_split", "motion", "text")),
            Arc::new(FailAtPosition::new("0003_fail", 2)),
        ]);
        let positions = vec![
            events(json!([{"type": "create", "fqid": "motion/1", "fields": {"text": "x"}}])),
            events(json!([{"type": "delete", "fqid": "motion/1"}])),
        ];
        let error = migrate_in_memory(&registry, 1, &positions).unwrap_err();
        assert_eq!(
            error.0,
            "migration '0003_fail' (to MI 3) failed at position 2: failing on purpose"
        );
        // Starting at MI 2 skips the split.
        let run = migrate_in_memory(&registry, 2, &positions[..1]).unwrap();
        assert_eq!(run.positions[0], positions[0]);
        // Nothing to do: the target is where the data is.
        let run = migrate_in_memory(&registry, 3, &positions).unwrap();
        assert_eq!(run.positions, positions);
    }

    #[test]
    fn fingerprint_sources_differ_by_parameters() {
        let a = SplitOffUpdate::new("m", "motion", "text").fingerprint_source();
        let b = SplitOffUpdate::new("m", "motion", "title").fingerprint_source();
        assert_ne!(a, b);
    }
}
