//! The four declarative operations of a `MIGRATIONS_FILE` (SPEC section 6)
//! and [`DeclarativeMigration`], the built-in [`Migration`] that applies them.
//!
//! A declarative migration is a name plus an ordered list of [`Op`]s. Each
//! event of the position is passed through every op in order; an op touches
//! only events of its own collection. Field names are matched exactly (a
//! template field `group_$_ids` and its concrete `group_$1_ids` are separate
//! fields).
//!
//! Renaming into a name the event already carries: the renamed value wins
//! (within one event, `old`'s value replaces `new`'s; in `deletefields` the
//! names merge). Across events the usual rule holds: the later write wins.
//!
//! The ops are validated when the file is loaded ([`super::file`]), not here:
//! a [`DeclarativeMigration`] built in Rust is trusted like any other Rust
//! migration, and [`super::Registry::migrate_position`] still refuses output
//! that could not be stored. Empty events left behind (an `update` whose only
//! field was removed) are dropped by `migrate_position`, not here.

use serde_json::{Map, Value};

use super::{Migration, MigrationContext, MigrationError};
use crate::datastore::{Event, Fields, ListValues};

/// One declarative operation, applied to each event of `collection`.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// In `create`/`update` fields, `deletefields` names and `listfields`
    /// add/remove keys, `old` becomes `new`.
    RenameField {
        /// The collection whose events are changed.
        collection: String,
        /// The field's current name.
        old: String,
        /// The field's new name.
        new: String,
    },
    /// A `create` event without `field` (or with `field: null`) gets it with
    /// `default`.
    AddField {
        /// The collection whose events are changed.
        collection: String,
        /// The field added.
        field: String,
        /// Its value in created models that lack it; never null.
        default: Value,
    },
    /// Removes the fields from `create`/`update`/`deletefields`/`listfields`
    /// events.
    RemoveFields {
        /// The collection whose events are changed.
        collection: String,
        /// The fields removed.
        fields: Vec<String>,
    },
    /// A `create` event lacking one of the fields (absent or null) fails the
    /// migration.
    RequireFields {
        /// The collection whose events are checked.
        collection: String,
        /// The fields every created model must have.
        fields: Vec<String>,
    },
}

impl Op {
    /// The op's name as written in the file (`rename_field`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::RenameField { .. } => "rename_field",
            Op::AddField { .. } => "add_field",
            Op::RemoveFields { .. } => "remove_fields",
            Op::RequireFields { .. } => "require_fields",
        }
    }

    /// The collection the op applies to.
    pub fn collection(&self) -> &str {
        match self {
            Op::RenameField { collection, .. }
            | Op::AddField { collection, .. }
            | Op::RemoveFields { collection, .. }
            | Op::RequireFields { collection, .. } => collection,
        }
    }

    /// The op as JSON, exactly the keys of the file format. Used for the
    /// fingerprint, so two files that mean the same give the same JSON.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("op".into(), self.kind().into());
        object.insert("collection".into(), self.collection().into());
        match self {
            Op::RenameField { old, new, .. } => {
                object.insert("old".into(), old.as_str().into());
                object.insert("new".into(), new.as_str().into());
            }
            Op::AddField { field, default, .. } => {
                object.insert("field".into(), field.as_str().into());
                object.insert("default".into(), default.clone());
            }
            Op::RemoveFields { fields, .. } | Op::RequireFields { fields, .. } => {
                object.insert("fields".into(), fields.clone().into());
            }
        }
        Value::Object(object)
    }

    /// Applies the op to one event. `Err` carries the missing field of a
    /// failed `require_fields`.
    fn apply(&self, event: &mut Event) -> Result<(), String> {
        if event.fqid().collection() != self.collection() {
            return Ok(());
        }
        match self {
            Op::RenameField { old, new, .. } => rename(event, old, new),
            Op::AddField { field, default, .. } => {
                if let Event::Create { fields, .. } = event {
                    if fields.get(field).is_none_or(Value::is_null) {
                        fields.insert(field.clone(), default.clone());
                    }
                }
            }
            Op::RemoveFields { fields: names, .. } => remove(event, names),
            Op::RequireFields { fields: names, .. } => {
                if let Event::Create { fields, .. } = event {
                    if let Some(missing) = names
                        .iter()
                        .find(|name| fields.get(*name).is_none_or(Value::is_null))
                    {
                        return Err(missing.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

fn rename(event: &mut Event, old: &str, new: &str) {
    match event {
        Event::Create { fields, .. } | Event::Update { fields, .. } => rename_key(fields, old, new),
        Event::Deletefields { fields, .. } => {
            if fields.iter().any(|name| name == old) {
                for name in fields.iter_mut().filter(|name| *name == old) {
                    *name = new.to_string();
                }
                // Both names now mean one field: list it once, where it first
                // appeared.
                let mut seen = std::collections::HashSet::new();
                fields.retain(|name| name != new || seen.insert(name.clone()));
            }
        }
        Event::Listfields { add, remove, .. } => {
            rename_list_key(add, old, new);
            rename_list_key(remove, old, new);
        }
        Event::Delete { .. } | Event::Restore { .. } => {}
    }
}

fn rename_key(fields: &mut Fields, old: &str, new: &str) {
    if let Some(value) = fields.remove(old) {
        fields.insert(new.to_string(), value);
    }
}

fn rename_list_key(values: &mut ListValues, old: &str, new: &str) {
    if let Some(list) = values.remove(old) {
        values.insert(new.to_string(), list);
    }
}

fn remove(event: &mut Event, names: &[String]) {
    match event {
        Event::Create { fields, .. } | Event::Update { fields, .. } => {
            for name in names {
                fields.remove(name);
            }
        }
        Event::Deletefields { fields, .. } => fields.retain(|name| !names.contains(name)),
        Event::Listfields { add, remove, .. } => {
            for name in names {
                add.remove(name);
                remove.remove(name);
            }
        }
        Event::Delete { .. } | Event::Restore { .. } => {}
    }
}

/// A migration made of declarative [`Op`]s: what a `MIGRATIONS_FILE` entry
/// becomes. It never looks at the context except for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarativeMigration {
    name: String,
    ops: Vec<Op>,
}

impl DeclarativeMigration {
    /// A migration named `name` applying `ops` in order.
    pub fn new(name: impl Into<String>, ops: Vec<Op>) -> DeclarativeMigration {
        DeclarativeMigration {
            name: name.into(),
            ops,
        }
    }

    /// The ops in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

impl Migration for DeclarativeMigration {
    fn name(&self) -> &str {
        &self.name
    }

    /// `declarative-v1:` plus the ops as canonical JSON (keys sorted, no
    /// whitespace): independent of the file's whitespace and key order, and
    /// equal to the source of the same ops built in Rust.
    fn fingerprint_source(&self) -> String {
        let ops = Value::Array(self.ops.iter().map(Op::to_json).collect());
        format!("declarative-v1:{}", canonical_json(&ops))
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        for event in &mut events {
            for op in &self.ops {
                op.apply(event).map_err(|missing| {
                    MigrationError::at(
                        &self.name,
                        context,
                        format_args!(
                            "{} lacks the required field '{missing}' (require_fields)",
                            event.fqid()
                        ),
                    )
                })?;
            }
        }
        Ok(events)
    }
}

/// JSON with object keys sorted at every level and no whitespace. Written out
/// rather than relying on `serde_json::Map` being sorted: that depends on a
/// cargo feature (`preserve_order`) any crate of the build could switch on.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{Fqid, Models};
    use crate::migrations::Registry;
    use serde_json::json;
    use std::sync::Arc;

    fn fqid(text: &str) -> Fqid {
        text.parse().unwrap()
    }

    fn events(value: Value) -> Vec<Event> {
        serde_json::from_value(value).unwrap()
    }

    fn run(ops: Vec<Op>, input: Value) -> Result<Vec<Event>, MigrationError> {
        let registry = Registry::new(vec![Arc::new(DeclarativeMigration::new("0002_test", ops))]);
        let models = Models::new();
        let context = MigrationContext {
            position: 7,
            target_migration_index: 2,
            old: &models,
            new: &models,
        };
        registry.migrate_position(&context, events(input))
    }

    fn rename(old: &str, new: &str) -> Op {
        Op::RenameField {
            collection: "motion".into(),
            old: old.into(),
            new: new.into(),
        }
    }

    /// Every event type of `motion/1` touching `field`, plus delete/restore.
    fn all_types(field: &str) -> Value {
        json!([
            {"type": "create", "fqid": "motion/1", "fields": {field: "A", "other": 1}},
            {"type": "update", "fqid": "motion/1", "fields": {field: "B", "other": 2}},
            {"type": "deletefields", "fqid": "motion/1", "fields": [field, "other"]},
            {"type": "listfields", "fqid": "motion/1", "add": {field: [1], "other": [2]}, "remove": {field: ["x"]}},
            {"type": "delete", "fqid": "motion/1"},
            {"type": "restore", "fqid": "motion/1"}
        ])
    }

    #[test]
    fn rename_field_on_every_event_type() {
        assert_eq!(
            run(vec![rename("title", "name")], all_types("title")).unwrap(),
            events(all_types("name"))
        );
    }

    #[test]
    fn rename_field_absent_changes_nothing() {
        let input = all_types("text");
        assert_eq!(
            run(vec![rename("title", "name")], input.clone()).unwrap(),
            events(input)
        );
    }

    #[test]
    fn rename_into_an_existing_field_the_renamed_value_wins() {
        let output = run(
            vec![rename("title", "name")],
            json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "T", "name": "N"}},
                {"type": "update", "fqid": "motion/1", "fields": {"name": "N2", "title": "T2"}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["name", "x", "title"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"title": [1], "name": [2]}, "remove": {"name": [3], "title": [4]}}
            ]),
        )
        .unwrap();
        assert_eq!(
            output,
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {"name": "T"}},
                {"type": "update", "fqid": "motion/1", "fields": {"name": "T2"}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["name", "x"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"name": [1]}, "remove": {"name": [4]}}
            ]))
        );
    }

    #[test]
    fn add_field_only_on_creates_lacking_it() {
        let op = Op::AddField {
            collection: "motion".into(),
            field: "weight".into(),
            default: json!(0),
        };
        let output = run(
            vec![op],
            json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A"}},
                {"type": "create", "fqid": "motion/2", "fields": {"weight": 5}},
                {"type": "create", "fqid": "motion/3", "fields": {"weight": null}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "B"}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["title"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"tag_ids": [1]}},
                {"type": "delete", "fqid": "motion/1"},
                {"type": "restore", "fqid": "motion/1"}
            ]),
        )
        .unwrap();
        assert_eq!(
            output,
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A", "weight": 0}},
                {"type": "create", "fqid": "motion/2", "fields": {"weight": 5}},
                {"type": "create", "fqid": "motion/3", "fields": {"weight": 0}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "B"}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["title"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"tag_ids": [1]}},
                {"type": "delete", "fqid": "motion/1"},
                {"type": "restore", "fqid": "motion/1"}
            ]))
        );
    }

    #[test]
    fn remove_fields_on_every_event_type_and_empty_events_are_dropped() {
        let op = Op::RemoveFields {
            collection: "motion".into(),
            fields: vec!["legacy".into(), "old".into()],
        };
        let output = run(
            vec![op],
            json!([
                {"type": "create", "fqid": "motion/1", "fields": {"legacy": 1, "title": "A"}},
                {"type": "create", "fqid": "motion/2", "fields": {"legacy": 1}},
                {"type": "update", "fqid": "motion/1", "fields": {"legacy": 2, "title": "B"}},
                {"type": "update", "fqid": "motion/1", "fields": {"legacy": 2, "old": 3}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["legacy", "title"]},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["old"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"legacy": [1], "tag_ids": [1]}, "remove": {"old": [2]}},
                {"type": "listfields", "fqid": "motion/1", "add": {"legacy": [1]}, "remove": {"old": [2]}},
                {"type": "delete", "fqid": "motion/1"},
                {"type": "restore", "fqid": "motion/1"}
            ]),
        )
        .unwrap();
        assert_eq!(
            output,
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A"}},
                // A create never becomes empty: the model still exists.
                {"type": "create", "fqid": "motion/2", "fields": {}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "B"}},
                {"type": "deletefields", "fqid": "motion/1", "fields": ["title"]},
                {"type": "listfields", "fqid": "motion/1", "add": {"tag_ids": [1]}},
                {"type": "delete", "fqid": "motion/1"},
                {"type": "restore", "fqid": "motion/1"}
            ]))
        );
    }

    fn require(fields: &[&str]) -> Op {
        Op::RequireFields {
            collection: "motion".into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn require_fields_passes_complete_creates_and_ignores_other_types() {
        let input = json!([
            {"type": "create", "fqid": "motion/1", "fields": {"name": "A", "weight": 0}},
            {"type": "create", "fqid": "topic/1", "fields": {}},
            {"type": "update", "fqid": "motion/1", "fields": {"other": 1}},
            {"type": "deletefields", "fqid": "motion/1", "fields": ["name"]},
            {"type": "listfields", "fqid": "motion/1", "add": {"x": [1]}},
            {"type": "delete", "fqid": "motion/1"},
            {"type": "restore", "fqid": "motion/1"}
        ]);
        assert_eq!(
            run(vec![require(&["name", "weight"])], input.clone()).unwrap(),
            events(input)
        );
    }

    #[test]
    fn require_fields_failure_names_migration_position_fqid_and_field() {
        let error = run(
            vec![require(&["name", "weight"])],
            json!([
                {"type": "create", "fqid": "motion/1", "fields": {"name": "A", "weight": 1}},
                {"type": "create", "fqid": "motion/3", "fields": {"name": "B"}}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            error.0,
            "migration '0002_test' (to MI 2) failed at position 7: motion/3 lacks the required field 'weight' (require_fields)"
        );
        // A null counts as missing: the stored model would not have it.
        let error = run(
            vec![require(&["name"])],
            json!([{"type": "create", "fqid": "motion/4", "fields": {"name": null}}]),
        )
        .unwrap_err();
        assert!(
            error.0.contains("motion/4 lacks the required field 'name'"),
            "{error}"
        );
    }

    #[test]
    fn ops_chain_in_order() {
        let ops = vec![
            rename("title", "name"),
            Op::AddField {
                collection: "motion".into(),
                field: "weight".into(),
                default: json!({"value": 0}),
            },
            Op::RemoveFields {
                collection: "motion".into(),
                fields: vec!["legacy".into()],
            },
            // Sees the renamed field: ops run in order on each event.
            require(&["name", "weight"]),
            rename("weight", "importance"),
        ];
        let output = run(
            ops.clone(),
            json!([
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A", "legacy": true}},
                {"type": "update", "fqid": "motion/1", "fields": {"title": "B", "weight": 3}}
            ]),
        )
        .unwrap();
        assert_eq!(
            output,
            events(json!([
                {"type": "create", "fqid": "motion/1", "fields": {"name": "A", "importance": {"value": 0}}},
                {"type": "update", "fqid": "motion/1", "fields": {"name": "B", "importance": 3}}
            ]))
        );
        // Order matters: requiring before the rename fails.
        let mut reordered = ops;
        reordered.swap(0, 3);
        let error = run(
            reordered,
            json!([{"type": "create", "fqid": "motion/1", "fields": {"title": "A"}}]),
        )
        .unwrap_err();
        assert!(
            error.0.contains("lacks the required field 'name'"),
            "{error}"
        );
    }

    #[test]
    fn ops_leave_other_collections_untouched() {
        let ops = vec![
            rename("title", "name"),
            Op::AddField {
                collection: "motion".into(),
                field: "weight".into(),
                default: json!(0),
            },
            Op::RemoveFields {
                collection: "motion".into(),
                fields: vec!["legacy".into()],
            },
            require(&["name"]),
        ];
        // `motion_block` shares a prefix with `motion`: matching is exact.
        let input = json!([
            {"type": "create", "fqid": "motion_block/1", "fields": {"title": "A", "legacy": 1}},
            {"type": "create", "fqid": "topic/2", "fields": {"title": "A"}},
            {"type": "update", "fqid": "topic/2", "fields": {"title": "B", "legacy": 1}},
            {"type": "deletefields", "fqid": "topic/2", "fields": ["title", "legacy"]},
            {"type": "listfields", "fqid": "topic/2", "add": {"title": [1]}, "remove": {"legacy": [2]}},
            {"type": "delete", "fqid": "topic/2"},
            {"type": "restore", "fqid": "topic/2"}
        ]);
        assert_eq!(run(ops, input.clone()).unwrap(), events(input));
    }

    #[test]
    fn fingerprint_source_is_canonical() {
        let a = DeclarativeMigration::new(
            "m",
            vec![Op::AddField {
                collection: "motion".into(),
                field: "weight".into(),
                default: json!({"b": 1, "a": [true, null, "x"]}),
            }],
        );
        assert_eq!(
            a.fingerprint_source(),
            r#"declarative-v1:[{"collection":"motion","default":{"a":[true,null,"x"],"b":1},"field":"weight","op":"add_field"}]"#
        );
        assert_eq!(fqid("motion/1").collection(), "motion");
    }
}
