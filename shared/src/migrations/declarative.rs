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

    /// The fields the op may change in events of its collection (none for
    /// `require_fields`, which only checks).
    fn changed_fields(&self) -> Vec<&str> {
        match self {
            Op::RenameField { old, new, .. } => vec![old, new],
            Op::AddField { field, .. } => vec![field],
            Op::RemoveFields { fields, .. } => fields.iter().map(String::as_str).collect(),
            Op::RequireFields { .. } => Vec::new(),
        }
    }

    /// Applies the op to one event; `Ok(true)` when that changed the event
    /// (exactly: `false` means the event is as it was). `Err` carries the
    /// missing field of a failed `require_fields`.
    fn apply(&self, event: &mut Event) -> Result<bool, String> {
        if event.fqid().collection() != self.collection() {
            return Ok(false);
        }
        Ok(match self {
            Op::RenameField { old, new, .. } => rename(event, old, new),
            Op::AddField { field, default, .. } => match event {
                Event::Create { fields, .. } if fields.get(field).is_none_or(Value::is_null) => {
                    // `default` is never null: absent or null becomes a value.
                    fields.insert(field.clone(), default.clone());
                    true
                }
                _ => false,
            },
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
                false
            }
        })
    }
}

/// Renames `old` to `new` in the event; true when that changed it.
fn rename(event: &mut Event, old: &str, new: &str) -> bool {
    match event {
        Event::Create { fields, .. } | Event::Update { fields, .. } => rename_key(fields, old, new),
        Event::Deletefields { fields, .. } => {
            if !fields.iter().any(|name| name == old) {
                return false;
            }
            let before = fields.len();
            for name in fields.iter_mut().filter(|name| *name == old) {
                *name = new.to_string();
            }
            // Both names now mean one field: list it once, where it first
            // appeared.
            let mut seen = std::collections::HashSet::new();
            fields.retain(|name| name != new || seen.insert(name.clone()));
            // A name became another one, or (renaming a name to itself)
            // duplicates of it went.
            old != new || fields.len() != before
        }
        Event::Listfields { add, remove, .. } => {
            // Not `||`: both maps are renamed.
            rename_list_key(add, old, new) | rename_list_key(remove, old, new)
        }
        Event::Delete { .. } | Event::Restore { .. } => false,
    }
}

fn rename_key(fields: &mut Fields, old: &str, new: &str) -> bool {
    match fields.remove(old) {
        Some(value) => {
            fields.insert(new.to_string(), value);
            old != new
        }
        None => false,
    }
}

fn rename_list_key(values: &mut ListValues, old: &str, new: &str) -> bool {
    match values.remove(old) {
        Some(list) => {
            values.insert(new.to_string(), list);
            old != new
        }
        None => false,
    }
}

/// Removes the fields `names` from the event; true when that changed it.
fn remove(event: &mut Event, names: &[String]) -> bool {
    match event {
        Event::Create { fields, .. } | Event::Update { fields, .. } => {
            let mut changed = false;
            for name in names {
                changed |= fields.remove(name).is_some();
            }
            changed
        }
        Event::Deletefields { fields, .. } => {
            let before = fields.len();
            fields.retain(|name| !names.contains(name));
            fields.len() != before
        }
        Event::Listfields { add, remove, .. } => {
            let mut changed = false;
            for name in names {
                changed |= add.remove(name).is_some();
                changed |= remove.remove(name).is_some();
            }
            changed
        }
        Event::Delete { .. } | Event::Restore { .. } => false,
    }
}

/// A migration made of declarative [`Op`]s: what a `MIGRATIONS_FILE` entry
/// becomes. It never looks at the context except for error messages.
///
/// It tracks its changes ([`Migration::tracked_fields`]): each op says
/// whether it changed an event, so the engine keeps no copy of a position's
/// events to find the unchanged ones.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarativeMigration {
    name: String,
    ops: Vec<Op>,
    /// (collection, field) of every field an op may change, each once.
    changed_fields: Vec<(String, String)>,
    /// Two ops may change the same field of one collection: then one may
    /// undo what another did (`rename a b` then `rename b a`), and "some op
    /// changed the event" does not mean "the event changed".
    ops_overlap: bool,
}

impl DeclarativeMigration {
    /// A migration named `name` applying `ops` in order.
    pub fn new(name: impl Into<String>, ops: Vec<Op>) -> DeclarativeMigration {
        let mut changed_fields: Vec<(String, String)> = Vec::new();
        let mut ops_overlap = false;
        for op in &ops {
            // One op touching a field twice (`rename a a`) is its own
            // business: only the fields of different ops may collide.
            let mut own: Vec<&str> = op.changed_fields();
            own.sort_unstable();
            own.dedup();
            for field in own {
                let pair = (op.collection().to_string(), field.to_string());
                if changed_fields.contains(&pair) {
                    ops_overlap = true;
                } else {
                    changed_fields.push(pair);
                }
            }
        }
        DeclarativeMigration {
            name: name.into(),
            ops,
            changed_fields,
            ops_overlap,
        }
    }

    /// The ops in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Runs every op on every event; true when some op changed some event.
    fn apply_ops(
        &self,
        context: &MigrationContext<'_>,
        events: &mut [Event],
    ) -> Result<bool, MigrationError> {
        let mut changed = false;
        for event in events {
            for op in &self.ops {
                changed |= op.apply(event).map_err(|missing| {
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
        Ok(changed)
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

    /// The four operations look at the events alone.
    fn reads_context(&self) -> bool {
        false
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        self.apply_ops(context, &mut events)?;
        Ok(events)
    }

    /// Ops change events in place, one for one, and only in the fields they
    /// name.
    fn tracked_fields(&self) -> Option<&[(String, String)]> {
        Some(&self.changed_fields)
    }

    /// Each op's own report, when no two ops change the same field (the
    /// usual case: no copy, no comparison); else the output compared with a
    /// copy of the input, as two ops may cancel out.
    fn migrate_tracked(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<(Vec<Event>, bool), MigrationError> {
        if self.ops_overlap {
            let input = events.clone();
            self.apply_ops(context, &mut events)?;
            let changed = events != input;
            return Ok((events, changed));
        }
        let changed = self.apply_ops(context, &mut events)?;
        Ok((events, changed))
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
        let input = events(input);
        let migrated = registry.migrate_position(&context, input.clone())?;
        // Every test of an op checks its change report as well.
        assert_eq!(migrated.changed, migrated.events != input, "change report");
        Ok(migrated.events)
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

    /// Turns raw numbers into a valid history of one-event positions on
    /// `motion/1..3`, with `title`/`text`/`legacy` scalars and a `tag_ids`
    /// list.
    fn history(actions: &[(u8, u8, u8, u8)]) -> Vec<Vec<Event>> {
        let mut models = Models::new();
        let mut positions = Vec::new();
        for &(kind, id, a, b) in actions {
            let fqid = Fqid::new("motion", u64::from(id % 3) + 1).unwrap();
            let scalars = |bits: u8| {
                let mut fields = Fields::new();
                for (bit, name) in [(1, "title"), (2, "text"), (4, "legacy")] {
                    if bits & bit != 0 {
                        fields.insert(name.into(), json!(format!("{name}{b}")));
                    }
                }
                if fields.is_empty() {
                    fields.insert("title".into(), json!(b));
                }
                fields
            };
            let event = match models.get(&fqid) {
                None => {
                    let mut fields = scalars(a);
                    if a & 8 != 0 {
                        fields.insert("tag_ids".into(), json!([b % 3]));
                    }
                    Event::Create { fqid, fields }
                }
                Some(model) if model.deleted => Event::Restore { fqid },
                Some(_) => match kind % 5 {
                    0 => Event::Update {
                        fqid,
                        fields: scalars(a),
                    },
                    1 => Event::Deletefields {
                        fqid,
                        fields: ["title", "text", "legacy", "tag_ids"]
                            .iter()
                            .enumerate()
                            .filter(|(bit, _)| a & (1 << bit) != 0)
                            .map(|(_, name)| name.to_string())
                            .chain(std::iter::once("legacy".to_string()))
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    },
                    2 => {
                        let mut add = ListValues::new();
                        add.insert("tag_ids".into(), vec![json!(b % 4)]);
                        let mut remove = ListValues::new();
                        remove.insert("tag_ids".into(), vec![json!(a % 4)]);
                        Event::Listfields { fqid, add, remove }
                    }
                    3 => Event::Delete { fqid },
                    _ => Event::Update {
                        fqid,
                        fields: scalars(4),
                    },
                },
            };
            let position = positions.len() as u64 + 1;
            crate::datastore::apply_event(&mut models, &event, position).unwrap();
            positions.push(vec![event]);
        }
        positions
    }

    proptest::proptest! {
        /// Migrating the events and then projecting them gives the models
        /// that projecting the old events and then renaming/removing the
        /// models' fields gives: the ops mean the same on events as on data.
        #[test]
        fn ops_on_events_match_ops_on_models(
            actions in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8)>(), 0..40)
        ) {
            let positions = history(&actions);
            let registry = Registry::new(vec![Arc::new(DeclarativeMigration::new(
                "0002_reshape",
                vec![
                    rename("title", "name"),
                    rename("tag_ids", "label_ids"),
                    Op::RemoveFields {
                        collection: "motion".into(),
                        fields: vec!["legacy".into()],
                    },
                ],
            ))]);
            let migrated = crate::migrations::examples::migrate_in_memory(&registry, 1, &positions)
                .unwrap();
            let unmigrated = crate::migrations::examples::migrate_in_memory(&Registry::default(), 1, &positions)
                .unwrap();
            proptest::prop_assert_eq!(migrated.models.len(), unmigrated.models.len());
            for (fqid, model) in &unmigrated.models {
                let mut expected = model.fields.clone();
                rename_key(&mut expected, "title", "name");
                rename_key(&mut expected, "tag_ids", "label_ids");
                expected.remove("legacy");
                let actual = &migrated.models[fqid];
                proptest::prop_assert_eq!(&actual.fields, &expected);
                proptest::prop_assert_eq!(actual.deleted, model.deleted);
            }
            for events in &migrated.positions {
                proptest::prop_assert!(events.iter().all(|event| !event.is_empty()));
            }
        }
    }

    proptest::proptest! {
        /// Each op's report is exact, and so is the migration's, for random
        /// op lists (renames onto themselves and ops that cancel out
        /// included) over random histories.
        #[test]
        fn change_reports_are_exact(
            actions in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8)>(), 0..30),
            ops in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8)>(), 0..5),
        ) {
            const FIELDS: [&str; 5] = ["title", "text", "legacy", "tag_ids", "name"];
            let field = |n: u8| FIELDS[usize::from(n) % FIELDS.len()].to_string();
            let ops: Vec<Op> = ops
                .iter()
                .map(|&(kind, a, b)| match kind % 3 {
                    0 => Op::RenameField { collection: "motion".into(), old: field(a), new: field(b) },
                    1 => Op::AddField { collection: "motion".into(), field: field(a), default: json!(b % 2) },
                    _ => Op::RemoveFields { collection: "motion".into(), fields: vec![field(a), field(b)] },
                })
                .collect();
            for op in &ops {
                for events in history(&actions) {
                    for mut event in events {
                        let before = event.clone();
                        let changed = op.apply(&mut event).unwrap();
                        proptest::prop_assert_eq!(changed, event != before, "{:?} on {:?}", op, before);
                    }
                }
            }
            let migration = DeclarativeMigration::new("0002_random", ops);
            let models = Models::new();
            let context = MigrationContext {
                position: 1,
                target_migration_index: 2,
                old: &models,
                new: &models,
            };
            // Whole positions: several events of one model.
            let mut position: Vec<Event> = history(&actions).into_iter().flatten().collect();
            position.truncate(6);
            let (output, changed) = migration.migrate_tracked(&context, position.clone()).unwrap();
            proptest::prop_assert_eq!(changed, output != position);
        }
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
