//! Migrations (SPEC section 6): the [`Migration`] trait, the registry that
//! orders them, and its fingerprint.
//!
//! A migration takes the datastore from MI `n` to `n + 1`, one position at a
//! time. This module only describes migrations; running them (keyframes,
//! durability, fencing) is the worker's engine.
//!
//! - [`declarative`]: the four operations of a `MIGRATIONS_FILE`, as one
//!   built-in [`Migration`] implementation.
//! - [`file`]: parsing and validating a `MIGRATIONS_FILE`, and
//!   [`RegistryError`].
//! - [`builtin`]: the compiled-in registry (used when `MIGRATIONS_FILE` is
//!   unset); Rust migrations are registered there.
//! - `examples` (tests and feature `test-support`): Rust migrations that
//!   split, drop and read the context, and an in-memory reference run.
//!
//! Invariants kept here: entry `k` of a registry produces MI `k + 2`; a
//! registry's [`Registry::fingerprint`] changes with any change of order, name
//! or behaviour (as described by [`Migration::fingerprint_source`]); empty
//! events are dropped in exactly one place, [`Registry::migrate_position`].

use std::path::Path;
use std::sync::Arc;

use crate::datastore::{
    creates_first, is_reserved_field, is_valid_field_name, Event, Fqid, Model, Models,
};

pub mod builtin;
pub mod declarative;
#[cfg(any(test, feature = "test-support"))]
pub mod examples;
pub mod file;

pub use declarative::{DeclarativeMigration, Op};
pub use file::{DefinitionError, Location, Problem, RegistryError};

/// Compiles the Rust code blocks of `docs/migrations.md` as doctests, so the
/// guide's example cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/migrations.md")]
pub struct MigrationsGuide;

/// What a migration can see while it migrates one position: the datastore as
/// it was just before that position, unmigrated (old, MI `n`) and already
/// migrated (new, MI `n + 1`).
pub struct MigrationContext<'a> {
    /// The position being migrated.
    pub position: u64,
    /// The MI this migration produces (`n + 1`).
    pub target_migration_index: u64,
    /// Models at MI `n` before this position.
    pub old: &'a Models,
    /// Models at MI `n + 1` before this position.
    pub new: &'a Models,
}

impl MigrationContext<'_> {
    /// The unmigrated model (MI `n`) as it was before this position.
    pub fn old_model(&self, fqid: &Fqid) -> Option<&Model> {
        self.old.get(fqid)
    }

    /// The migrated model (MI `n + 1`) as it was before this position.
    pub fn new_model(&self, fqid: &Fqid) -> Option<&Model> {
        self.new.get(fqid)
    }
}

/// A migration failed: the job ends with this as its `exception`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MigrationError(pub String);

impl MigrationError {
    /// The error of migration `name` at the position of `context`, in the one
    /// shape every exception takes:
    /// `migration '<name>' (to MI <n>) failed at position <p>: <detail>`.
    /// Migrations should build their errors with it, so that the operator
    /// always learns which migration and which position failed.
    pub fn at(name: &str, context: &MigrationContext<'_>, detail: impl std::fmt::Display) -> Self {
        MigrationError(format!(
            "migration '{name}' (to MI {}) failed at position {}: {detail}",
            context.target_migration_index, context.position
        ))
    }
}

/// One migration step, from MI `n` to `n + 1`.
pub trait Migration: Send + Sync {
    /// A stable, unique name (e.g. `0002_rename_title`).
    fn name(&self) -> &str;

    /// Everything that determines what the migration does, as text; part of
    /// the registry fingerprint, so change it whenever the behaviour changes.
    fn fingerprint_source(&self) -> String;

    /// Returns the replacement events of one position. `events` come creates
    /// first, then the rest in order. Empty events in the result are dropped
    /// by the caller.
    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError>;

    /// `Some(fields)` when the migration tracks its own changes: then
    /// [`Migration::migrate_tracked`] says exactly whether it changed the
    /// events, and it changes them only in place (it never adds, drops or
    /// reorders events, nor changes their type or fqid) and only in
    /// `fields`, (collection, field name) pairs. The engine then needs no copy of a position's events to tell
    /// an unchanged one (stored as its live JSON, byte for byte), and when
    /// no two migrations of a run change the same field, no comparison
    /// either ([`Registry::changes_are_final`]). `None` (the default): the
    /// registry compares the output with a copy of the input.
    fn tracked_fields(&self) -> Option<&[(String, String)]> {
        None
    }

    /// [`Migration::migrate`], also saying whether the output differs from
    /// `events`. Called only for migrations with
    /// [`Migration::tracked_fields`]; the default calls `migrate` and
    /// compares with a copy of the input.
    fn migrate_tracked(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<(Vec<Event>, bool), MigrationError> {
        let input = events.clone();
        let output = self.migrate(context, events)?;
        let changed = output != input;
        Ok((output, changed))
    }

    /// Whether [`Migration::migrate`] looks at `context.old` / `context.new`
    /// (the default, always safe). A migration that returns `false` must not
    /// read them: when no migration of a registry reads the context, the
    /// engine keeps only the target's models and hands empty maps to
    /// `old`/`new`, which halves its work and memory.
    fn reads_context(&self) -> bool {
        true
    }
}

/// One position migrated by one step ([`Registry::migrate_position`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    /// The events at the step's target MI.
    pub events: Vec<Event>,
    /// Whether they differ from the step's input (in content or order;
    /// dropped empty events count): exactly, never "maybe".
    pub changed: bool,
}

/// The ordered list of migrations both binaries build at start.
#[derive(Clone, Default)]
pub struct Registry {
    migrations: Vec<Arc<dyn Migration>>,
    /// `final_from[k]`: [`Registry::changes_are_final`] for the steps of
    /// migrations `k..`; one more entry (true) for no steps at all.
    final_from: Vec<bool>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.migrations.iter().map(|m| m.name().to_string()))
            .finish()
    }
}

impl Registry {
    /// A registry of `migrations`; entry `k` (0-based) has target MI `k + 2`.
    pub fn new(migrations: Vec<Arc<dyn Migration>>) -> Registry {
        // From the last migration back: the steps from k on are final when
        // migration k tracks its changes, the steps after it are final, and
        // none of them changes a field migration k changes.
        let mut final_from = vec![true; migrations.len() + 1];
        let mut later_fields: std::collections::HashSet<(&str, &str)> =
            std::collections::HashSet::new();
        for (k, migration) in migrations.iter().enumerate().rev() {
            final_from[k] = match migration.tracked_fields() {
                Some(fields) => {
                    let disjoint = fields
                        .iter()
                        .all(|(c, f)| !later_fields.contains(&(c.as_str(), f.as_str())));
                    later_fields.extend(fields.iter().map(|(c, f)| (c.as_str(), f.as_str())));
                    disjoint && final_from[k + 1]
                }
                None => false,
            };
        }
        Registry {
            migrations,
            final_from,
        }
    }

    /// Whether, migrating from MI `from` to the target, a change made by one
    /// step can never be undone by a later one: every migration of those
    /// steps tracks its changes ([`Migration::tracked_fields`]) and no two
    /// of them may change the same field. Then a position changed by any
    /// step differs from its live events at the end, and the engine needs
    /// no copy of them to tell. (Steps only change fields in place, so a
    /// change to fields no later step touches stays; a dropped event stays
    /// dropped; the creates-first order stays.)
    pub fn changes_are_final(&self, from: u64) -> bool {
        let first = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        self.final_from.get(first).copied().unwrap_or(true)
    }

    /// The target migration index: number of migrations + 1.
    pub fn target_migration_index(&self) -> u64 {
        self.migrations.len() as u64 + 1
    }

    /// The migration that produces MI `to` (from `to - 1`), if any.
    pub fn migration_to(&self, to: u64) -> Option<&dyn Migration> {
        let index = usize::try_from(to.checked_sub(2)?).ok()?;
        self.migrations.get(index).map(|m| m.as_ref())
    }

    /// The migrations in order.
    pub fn migrations(&self) -> &[Arc<dyn Migration>] {
        &self.migrations
    }

    /// True when some migration reads the models before the position
    /// ([`Migration::reads_context`]): only then must the engine keep the
    /// models of every MI below the target.
    pub fn reads_context(&self) -> bool {
        self.migrations.iter().any(|m| m.reads_context())
    }

    /// The registry both binaries run with: `None` (no `MIGRATIONS_FILE`)
    /// gives the compiled-in registry of [`builtin`], `Some(path)` the
    /// migrations of that JSON file (SPEC section 6). Binaries print the
    /// error as `MIGRATIONS_FILE: <error>` and exit with code 2.
    pub fn load(path: Option<&Path>) -> Result<Registry, RegistryError> {
        match path {
            None => builtin::registry(),
            Some(path) => file::load(path),
        }
    }

    /// [`Registry::load`] for a binary at start: the error names
    /// `MIGRATIONS_FILE` (the caller exits 2 with it); success is logged with
    /// the fingerprint, so operators can compare replicas during a rolling
    /// deploy.
    pub fn load_at_start(
        config: &crate::config::Config,
    ) -> Result<Registry, crate::config::ConfigError> {
        let registry = Registry::load(config.migrations_file.as_deref())?;
        tracing::info!(
            migrations = registry.migrations().len(),
            target_migration_index = registry.target_migration_index(),
            fingerprint = %registry.fingerprint(),
            "migration registry loaded"
        );
        Ok(registry)
    }

    /// Parses the text of a `MIGRATIONS_FILE`; errors name `path` as the
    /// file. [`Registry::load`] reads the file and calls this; tests use it
    /// directly.
    pub fn from_json(path: &Path, text: &str) -> Result<Registry, RegistryError> {
        file::parse(path, text)
    }

    /// A stable hex digest (SHA-1) of the ordered migrations' names and
    /// [`Migration::fingerprint_source`]s. A job carries the fingerprint of
    /// the registry that enqueued it; a worker with another fingerprint
    /// refuses the job, so api and worker of different deploys never mix
    /// their migrations.
    pub fn fingerprint(&self) -> String {
        let mut hasher = sha1_smol::Sha1::new();
        // Versioned and length-prefixed, so that no two different registries
        // can produce the same byte stream (e.g. by moving text between a
        // name and a source).
        hasher.update(b"migration-registry-v1\n");
        for migration in &self.migrations {
            for part in [migration.name().to_string(), migration.fingerprint_source()] {
                hasher.update(format!("{}:", part.len()).as_bytes());
                hasher.update(part.as_bytes());
                hasher.update(b"\n");
            }
        }
        hasher.digest().to_string()
    }

    /// Migrates the events of one position to MI `context.target_migration_index`
    /// with the migration that produces it: orders the input creates first,
    /// calls the migration, drops the empty events of its output
    /// ([`Event::is_empty`]), and checks that what is left can be stored
    /// (valid, non-reserved field names; no nulls in `create`/`update`;
    /// `listfields` values are integers or strings). Says whether the result
    /// differs from `events` ([`Migrated::changed`]): from the migration's
    /// own report when it tracks its changes, else by comparing with a copy.
    ///
    /// The engine calls this once per MI step (`n -> n + 1 -> ... -> target`),
    /// feeding each step's output into the next.
    pub fn migrate_position(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Migrated, MigrationError> {
        let migration = self.step(context)?;
        let copy = match migration.tracked_fields() {
            Some(_) => None,
            None => Some(events.clone()),
        };
        self.run_step(migration, context, events, copy.as_deref())
    }

    /// [`Registry::migrate_position`] of borrowed events, for a caller that
    /// keeps them anyway: a migration that does not track its changes is
    /// compared with `events` themselves, not with one more copy.
    pub fn migrate_position_from(
        &self,
        context: &MigrationContext<'_>,
        events: &[Event],
    ) -> Result<Migrated, MigrationError> {
        let migration = self.step(context)?;
        self.run_step(migration, context, events.to_vec(), Some(events))
    }

    /// The migration that produces the context's target MI.
    fn step(&self, context: &MigrationContext<'_>) -> Result<&dyn Migration, MigrationError> {
        let to = context.target_migration_index;
        self.migration_to(to).ok_or_else(|| {
            MigrationError(format!(
                "no migration produces MI {to} (position {}): the registry's target migration index is {}",
                context.position,
                self.target_migration_index()
            ))
        })
    }

    /// One step; `input` is a copy of `events`, required when the migration
    /// does not track its changes.
    fn run_step(
        &self,
        migration: &dyn Migration,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
        input: Option<&[Event]>,
    ) -> Result<Migrated, MigrationError> {
        let (output, changed) = match (migration.tracked_fields(), input) {
            (None, Some(input)) => {
                let mut output = migration.migrate(context, creates_first(events))?;
                output.retain(|e| !e.is_empty());
                let changed = output.as_slice() != input;
                (output, changed)
            }
            _ => {
                // The migration changes events in place, one for one: the
                // result differs from the input exactly when the migration
                // changed an event, the order changed, or an empty event
                // was dropped (the input's, or one the migration emptied).
                let had_empty = events.iter().any(Event::is_empty);
                let reordered = !creates_are_first(&events);
                let (mut output, changed) =
                    migration.migrate_tracked(context, creates_first(events))?;
                let before = output.len();
                output.retain(|e| !e.is_empty());
                let dropped = output.len() != before;
                (output, changed || reordered || had_empty || dropped)
            }
        };
        for event in &output {
            if let Err(problem) = check_storable(event) {
                return Err(MigrationError::at(
                    migration.name(),
                    context,
                    format_args!(
                        "it produced an invalid {} event for {}: {problem}",
                        event.type_name(),
                        event.fqid()
                    ),
                ));
            }
        }
        Ok(Migrated {
            events: output,
            changed,
        })
    }
}

/// True when no create follows another event: [`creates_first`] moves
/// nothing.
fn creates_are_first(events: &[Event]) -> bool {
    let is_create = |event: &Event| matches!(event, Event::Create { .. });
    match events.iter().position(|event| !is_create(event)) {
        Some(first_other) => !events[first_other..].iter().any(is_create),
        None => true,
    }
}

/// Why a migrated event could not be stored, or `Ok`. Declarative migrations
/// cannot produce such events (their names are checked at load); this guards
/// against Rust migrations writing what the writer would have refused.
fn check_storable(event: &Event) -> Result<(), String> {
    let check_name = |name: &str| {
        if is_reserved_field(name) {
            Err(format!("field '{name}' is reserved (meta_ prefix)"))
        } else if !is_valid_field_name(name) {
            Err(format!("invalid field name '{name}'"))
        } else {
            Ok(())
        }
    };
    match event {
        Event::Create { fields, .. } | Event::Update { fields, .. } => {
            for (name, value) in fields {
                check_name(name)?;
                if value.is_null() {
                    return Err(format!(
                        "field '{name}' is null (remove fields with a deletefields event)"
                    ));
                }
            }
        }
        Event::Deletefields { fields, .. } => {
            for name in fields {
                check_name(name)?;
            }
        }
        Event::Listfields { add, remove, .. } => {
            for (name, values) in add.iter().chain(remove) {
                check_name(name)?;
                if let Some(value) = values
                    .iter()
                    .find(|v| !(v.is_i64() || v.is_u64() || v.is_string()))
                {
                    return Err(format!(
                        "list field '{name}' gets {value}, not an integer or a string"
                    ));
                }
            }
        }
        Event::Delete { .. } | Event::Restore { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::examples::{DropCollection, SplitOffUpdate};
    use super::*;
    use serde_json::{json, Value};

    fn from_json(value: &str) -> Registry {
        Registry::from_json(Path::new("test.json"), value).unwrap()
    }

    fn events(value: Value) -> Vec<Event> {
        serde_json::from_value(value).unwrap()
    }

    const SPEC_EXAMPLE: &str = r#"{"migrations": [
        {"name": "0002_rename_title", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
        {"name": "0003_defaults", "ops": [
            {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
            {"op": "remove_fields", "collection": "motion", "fields": ["legacy"]}]},
        {"name": "0004_check", "ops": [
            {"op": "require_fields", "collection": "motion", "fields": ["name"]}]}
    ]}"#;

    #[test]
    fn fingerprint_is_stable_across_formatting() {
        let fingerprint = from_json(SPEC_EXAMPLE).fingerprint();
        assert_eq!(fingerprint.len(), 40);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        // Same registry, other whitespace and key order.
        let reformatted = r#"{"migrations":[{"ops":[{"new":"name","old":"title","collection":"motion","op":"rename_field"}],"name":"0002_rename_title"},
            {"ops":[{"default":0,"field":"weight","op":"add_field","collection":"motion"},{"fields":["legacy"],"collection":"motion","op":"remove_fields"}],"name":"0003_defaults"},
            {"name":"0004_check","ops":[{"fields":["name"],"op":"require_fields","collection":"motion"}]}]}"#;
        assert_eq!(from_json(reformatted).fingerprint(), fingerprint);
        // Nested default objects: key order does not matter either.
        let a = r#"{"migrations":[{"name":"a","ops":[{"op":"add_field","collection":"motion","field":"w","default":{"x":1,"y":[{"b":1,"a":2}]}}]}]}"#;
        let b = r#"{"migrations":[{"name":"a","ops":[{"op":"add_field","collection":"motion","field":"w","default":{"y":[{"a":2,"b":1}],"x":1}}]}]}"#;
        assert_eq!(from_json(a).fingerprint(), from_json(b).fingerprint());
        // Known value: a change of the fingerprint format breaks rolling
        // deploys (old workers refuse new jobs), so it must be deliberate.
        assert_eq!(
            Registry::default().fingerprint(),
            sha1_smol::Sha1::from("migration-registry-v1\n")
                .digest()
                .to_string()
        );
    }

    #[test]
    fn only_rust_migrations_read_the_context() {
        let declarative = from_json(SPEC_EXAMPLE);
        assert!(declarative.migrations().iter().all(|m| !m.reads_context()));
        assert!(!declarative.reads_context());
        assert!(!Registry::default().reads_context());
        // One migration that reads old/new is enough to need every keyframe.
        let mut migrations = declarative.migrations().to_vec();
        migrations.push(Arc::new(SplitOffUpdate::new(
            "0005_split",
            "motion",
            "text",
        )));
        assert!(Registry::new(migrations).reads_context());
    }

    #[test]
    fn fingerprint_changes_with_order_name_and_ops() {
        let base: Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
        let fingerprint = |value: &Value| from_json(&value.to_string()).fingerprint();
        let original = fingerprint(&base);
        let mut variants: Vec<Value> = Vec::new();
        let mut swapped = base.clone();
        swapped["migrations"].as_array_mut().unwrap().swap(1, 2);
        variants.push(swapped);
        let mut renamed = base.clone();
        renamed["migrations"][0]["name"] = json!("0002_rename_titles");
        variants.push(renamed);
        let mut ops_swapped = base.clone();
        ops_swapped["migrations"][1]["ops"]
            .as_array_mut()
            .unwrap()
            .swap(0, 1);
        variants.push(ops_swapped);
        for (path, value) in [
            ("/migrations/0/ops/0/new", json!("label")),
            ("/migrations/0/ops/0/old", json!("heading")),
            ("/migrations/0/ops/0/collection", json!("topic")),
            ("/migrations/1/ops/0/default", json!(1)),
            ("/migrations/1/ops/0/default", json!(0.0)),
            ("/migrations/1/ops/0/default", json!("0")),
            ("/migrations/1/ops/1/fields", json!(["legacy", "old"])),
            ("/migrations/2/ops/0/op", json!("remove_fields")),
        ] {
            let mut variant = base.clone();
            *variant.pointer_mut(path).unwrap() = value;
            variants.push(variant);
        }
        let mut dropped = base.clone();
        dropped["migrations"].as_array_mut().unwrap().pop();
        variants.push(dropped);
        let mut seen = std::collections::HashSet::new();
        seen.insert(original);
        for variant in &variants {
            assert!(
                seen.insert(fingerprint(variant)),
                "same fingerprint for {variant}"
            );
        }
        // Rust migrations: the name and the source both count.
        let rust = |name: &str, field: &str| {
            Registry::new(vec![Arc::new(SplitOffUpdate::new(name, "motion", field))]).fingerprint()
        };
        assert_eq!(rust("a", "text"), rust("a", "text"));
        assert_ne!(rust("a", "text"), rust("b", "text"));
        assert_ne!(rust("a", "text"), rust("a", "title"));
    }

    #[test]
    fn fingerprint_separates_name_and_source() {
        struct Raw(&'static str, &'static str);
        impl Migration for Raw {
            fn name(&self) -> &str {
                self.0
            }
            fn fingerprint_source(&self) -> String {
                self.1.to_string()
            }
            fn migrate(
                &self,
                _: &MigrationContext<'_>,
                events: Vec<Event>,
            ) -> Result<Vec<Event>, MigrationError> {
                Ok(events)
            }
        }
        let a = Registry::new(vec![Arc::new(Raw("ab", "c"))]).fingerprint();
        let b = Registry::new(vec![Arc::new(Raw("a", "bc"))]).fingerprint();
        assert_ne!(a, b);
    }

    fn context(models: &Models, to: u64) -> MigrationContext<'_> {
        MigrationContext {
            position: 3,
            target_migration_index: to,
            old: models,
            new: models,
        }
    }

    #[test]
    fn migrate_position_uses_the_migration_to_the_target_and_drops_empty_events() {
        let registry = from_json(SPEC_EXAMPLE);
        let models = Models::new();
        let input = events(json!([
            {"type": "update", "fqid": "motion/1", "fields": {"legacy": 1}},
            {"type": "create", "fqid": "motion/2", "fields": {"title": "A", "legacy": 1}},
            {"type": "listfields", "fqid": "motion/1", "add": {"legacy": [1]}},
            {"type": "deletefields", "fqid": "motion/1", "fields": ["legacy"]}
        ]));
        // MI 3 is produced by 0003_defaults; creates come first.
        let output = registry
            .migrate_position(&context(&models, 3), input)
            .unwrap();
        assert!(output.changed);
        let output = output.events;
        assert_eq!(
            output,
            events(json!([{"type": "create", "fqid": "motion/2",
                "fields": {"title": "A", "weight": 0}}]))
        );
        // 0004_check at MI 4.
        let error = registry
            .migrate_position(&context(&models, 4), output)
            .unwrap_err();
        assert_eq!(
            error.0,
            "migration '0004_check' (to MI 4) failed at position 3: motion/2 lacks the required field 'name' (require_fields)"
        );
        for to in [0, 1, 5] {
            let error = registry
                .migrate_position(&context(&models, to), vec![])
                .unwrap_err();
            assert_eq!(
                error.0,
                format!("no migration produces MI {to} (position 3): the registry's target migration index is 4")
            );
        }
    }

    #[test]
    fn migrate_position_drops_every_empty_event_a_migration_returns() {
        let registry = Registry::new(vec![Arc::new(DropCollection::new("0002_drop", "topic"))]);
        let models = Models::new();
        // A Rust migration may hand back empty events; they never reach storage.
        let input = events(json!([
            {"type": "update", "fqid": "motion/1", "fields": {}},
            {"type": "deletefields", "fqid": "motion/1", "fields": []},
            {"type": "listfields", "fqid": "motion/1", "add": {"x": []}, "remove": {}},
            {"type": "create", "fqid": "topic/1", "fields": {}},
            {"type": "delete", "fqid": "motion/1"}
        ]));
        let output = registry
            .migrate_position(&context(&models, 2), input)
            .unwrap();
        assert!(output.changed);
        assert_eq!(
            output.events,
            events(json!([{"type": "delete", "fqid": "motion/1"}]))
        );
    }

    /// A Rust migration that hands its events back in their live order
    /// (undoing the creates-first order) and adds an empty event: for the
    /// registry's report, only the comparison with the original input
    /// counts.
    struct Restore(Vec<Event>);

    impl Migration for Restore {
        fn name(&self) -> &str {
            "0002_restore"
        }
        fn fingerprint_source(&self) -> String {
            "restore".into()
        }
        fn migrate(
            &self,
            _: &MigrationContext<'_>,
            _: Vec<Event>,
        ) -> Result<Vec<Event>, MigrationError> {
            let mut output = self.0.clone();
            output.push(Event::Update {
                fqid: "motion/9".parse().unwrap(),
                fields: Default::default(),
            });
            Ok(output)
        }
    }

    /// `changed` is exactly "the result differs from the input", for
    /// migrations that track their changes and for those that do not, with
    /// reordering, dropped empty events and ops that cancel out.
    #[test]
    fn migrate_position_reports_changes_exactly() {
        let models = Models::new();
        let check = |registry: &Registry, input: Value, expected: bool| {
            let input = events(input);
            let owned = registry
                .migrate_position(&context(&models, 2), input.clone())
                .unwrap();
            let borrowed = registry
                .migrate_position_from(&context(&models, 2), &input)
                .unwrap();
            assert_eq!(owned, borrowed);
            assert_eq!(owned.changed, owned.events != input, "{input:?}");
            assert_eq!(owned.changed, expected, "{input:?}");
        };
        let rename = from_json(
            r#"{"migrations": [{"name": "0002_r", "ops": [
                {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]}]}"#,
        );
        let create = json!({"type": "create", "fqid": "motion/1", "fields": {"text": "x"}});
        let update = json!({"type": "update", "fqid": "motion/2", "fields": {"text": "y"}});
        let empty = json!({"type": "update", "fqid": "motion/2", "fields": {}});
        let titled = json!({"type": "update", "fqid": "motion/2", "fields": {"title": "y"}});
        check(&rename, json!([create, update]), false);
        check(&rename, json!([create, titled]), true);
        // Reordered creates first, or an empty event dropped: changed.
        check(&rename, json!([update, create]), true);
        check(&rename, json!([create, empty]), true);
        check(&rename, json!([]), false);
        // Two ops that cancel out: the migration compares instead.
        let there_and_back = from_json(
            r#"{"migrations": [{"name": "0002_r", "ops": [
                {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"},
                {"op": "rename_field", "collection": "motion", "old": "name", "new": "title"}]}]}"#,
        );
        check(&there_and_back, json!([create, titled]), false);
        let add_and_remove = from_json(
            r#"{"migrations": [{"name": "0002_r", "ops": [
                {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
                {"op": "remove_fields", "collection": "motion", "fields": ["weight"]}]}]}"#,
        );
        check(&add_and_remove, json!([create, update]), false);
        check(
            &add_and_remove,
            json!([{"type": "create", "fqid": "motion/1", "fields": {"weight": 0}}]),
            true,
        );
        // A Rust migration is compared with its original input: undoing the
        // creates-first order and adding an empty event changes nothing.
        let live = json!([update, create]);
        let restore = Registry::new(vec![Arc::new(Restore(events(live.clone())))]);
        check(&restore, live, false);
        check(&restore, json!([create]), true);
    }

    #[test]
    fn changes_are_final_when_no_two_steps_change_one_field() {
        let registry =
            |migrations: Value| from_json(&json!({ "migrations": migrations }).to_string());
        let rename = |old: &str, new: &str| {
            json!({"name": format!("r_{old}_{new}"), "ops": [
                {"op": "rename_field", "collection": "motion", "old": old, "new": new}]})
        };
        let chain = from_json(SPEC_EXAMPLE);
        assert!((0..=5).all(|from| chain.changes_are_final(from)));
        // `title -> name`, then `name -> title`: the second may undo the first.
        let back = registry(json!([rename("title", "name"), rename("name", "title")]));
        assert!(!back.changes_are_final(1));
        assert!(back.changes_are_final(2));
        assert!(back.changes_are_final(3));
        // A field of another collection, or a check, is no conflict.
        let other = registry(json!([rename("title", "name"),
            {"name": "t", "ops": [{"op": "rename_field", "collection": "topic", "old": "name", "new": "title"}]},
            {"name": "q", "ops": [{"op": "require_fields", "collection": "motion", "fields": ["name"]}]}]));
        assert!(other.changes_are_final(1));
        // Overlapping ops inside one migration are that migration's own
        // business (it compares itself).
        let inside = registry(json!([{"name": "x", "ops": [
            {"op": "add_field", "collection": "motion", "field": "w", "default": 0},
            {"op": "remove_fields", "collection": "motion", "fields": ["w"]}]}, rename("title", "name")]));
        assert!(inside.changes_are_final(1));
        // A migration that does not track its changes: never final.
        let mut migrations = chain.migrations().to_vec();
        migrations.insert(
            1,
            Arc::new(SplitOffUpdate::new("0003_split", "motion", "text")),
        );
        let rust = Registry::new(migrations);
        assert!(!rust.changes_are_final(1));
        assert!(!rust.changes_are_final(2));
        assert!(rust.changes_are_final(3));
        assert!(Registry::default().changes_are_final(1));
    }

    #[test]
    fn migrate_position_refuses_unstorable_output() {
        struct Emit(Value);
        impl Migration for Emit {
            fn name(&self) -> &str {
                "0002_emit"
            }
            fn fingerprint_source(&self) -> String {
                self.0.to_string()
            }
            fn migrate(
                &self,
                _: &MigrationContext<'_>,
                _: Vec<Event>,
            ) -> Result<Vec<Event>, MigrationError> {
                Ok(serde_json::from_value(self.0.clone()).unwrap())
            }
        }
        let models = Models::new();
        let cases = [
            (
                json!([{"type": "create", "fqid": "motion/1", "fields": {"meta_position": 1}}]),
                "invalid create event for motion/1: field 'meta_position' is reserved (meta_ prefix)",
            ),
            (
                json!([{"type": "update", "fqid": "motion/1", "fields": {"Title": 1}}]),
                "invalid update event for motion/1: invalid field name 'Title'",
            ),
            (
                json!([{"type": "update", "fqid": "motion/1", "fields": {"title": null}}]),
                "invalid update event for motion/1: field 'title' is null (remove fields with a deletefields event)",
            ),
            (
                json!([{"type": "deletefields", "fqid": "motion/1", "fields": ["meta_deleted"]}]),
                "field 'meta_deleted' is reserved",
            ),
            (
                json!([{"type": "listfields", "fqid": "motion/1", "add": {"ids": [1.5]}}]),
                "list field 'ids' gets 1.5, not an integer or a string",
            ),
        ];
        for (output, expected) in cases {
            let registry = Registry::new(vec![Arc::new(Emit(output.clone()))]);
            let error = registry
                .migrate_position(&context(&models, 2), vec![])
                .unwrap_err();
            assert!(
                error.0.starts_with(
                    "migration '0002_emit' (to MI 2) failed at position 3: it produced an invalid "
                ),
                "{error}"
            );
            assert!(error.0.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("migrations.json");
        std::fs::write(&path, SPEC_EXAMPLE).unwrap();
        let registry = Registry::load(Some(&path)).unwrap();
        assert_eq!(registry.target_migration_index(), 4);
        assert_eq!(
            registry.fingerprint(),
            from_json(SPEC_EXAMPLE).fingerprint()
        );
        std::fs::write(&path, "{\"migrations\": [{\"name\": \"\", \"ops\": []}]}").unwrap();
        let error = Registry::load(Some(&path)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: migration 0 (target MI 2): the migration name is empty",
                path.display()
            )
        );
    }

    /// `examples/migrations.json`, the example shipped with the repository.
    #[test]
    fn the_example_file_loads_and_migrates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/migrations.json");
        let registry = Registry::load(Some(&path)).unwrap();
        let names: Vec<&str> = registry.migrations().iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "0002_rename_motion_title",
                "0003_motion_defaults",
                "0004_require_motion_name"
            ]
        );
        let positions = vec![
            events(json!([
                {"type": "create", "fqid": "meeting/1", "fields": {"title": "Assembly"}},
                {"type": "create", "fqid": "motion/1", "fields": {"title": "Budget", "legacy": "x", "meeting_id": 1}}
            ])),
            events(json!([
                {"type": "update", "fqid": "motion/1", "fields": {"title": "Budget 2027", "legacy": "y"}}
            ])),
            events(json!([{"type": "update", "fqid": "motion/1", "fields": {"legacy": "z"}}])),
        ];
        let run = examples::migrate_in_memory(&registry, 1, &positions).unwrap();
        assert_eq!(
            run.positions,
            vec![
                events(json!([
                    {"type": "create", "fqid": "meeting/1", "fields": {"title": "Assembly"}},
                    {"type": "create", "fqid": "motion/1", "fields": {"name": "Budget", "meeting_id": 1, "weight": 0}}
                ])),
                events(
                    json!([{"type": "update", "fqid": "motion/1", "fields": {"name": "Budget 2027"}}])
                ),
                vec![],
            ]
        );
        // A motion created without a title fails at 0004.
        let bad = vec![events(
            json!([{"type": "create", "fqid": "motion/7", "fields": {"text": "t"}}]),
        )];
        let error = examples::migrate_in_memory(&registry, 1, &bad).unwrap_err();
        assert_eq!(
            error.0,
            "migration '0004_require_motion_name' (to MI 4) failed at position 1: motion/7 lacks the required field 'name' (require_fields)"
        );
    }
}
