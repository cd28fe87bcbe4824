//! Property: migrating random event histories with random chains of
//! rename/add/remove migrations gives the same final models as applying the
//! same transformations to the final unmigrated models directly.
//!
//! The equivalence holds only under restrictions the generators keep:
//! renames and adds use fresh field names no event mentions; `update`
//! never sets the list field, so `listfields` always finds a list.
//! `meta_position` is not compared: a migration that empties an event drops
//! it, so the last position that changed a model may legitimately move.

use std::collections::BTreeMap;
use std::sync::Arc;

use migration_shared::datastore::Fields;
use migration_shared::migrations::Migration;
use migration_tests::engine::*;
use migration_worker::engine::Command;
use proptest::prelude::*;
use serde_json::{json, Value};

const FIELDS: [&str; 4] = ["a", "b", "c", "tags"];

#[derive(Debug, Clone)]
enum Step {
    Rename(usize),
    Add,
    Remove(usize),
}

/// Turns random choices into a valid history (positions of 1..=3 events).
fn history(choices: &[(u8, u8, u8, u8)], setup: &mut Setup) {
    let mut pending: Vec<Value> = Vec::new();
    for (index, &(op, id, field, value)) in choices.iter().enumerate() {
        let fqid = format!("motion/{}", id % 4 + 1);
        let model = setup.writer.models().get(&fqid.parse().unwrap()).cloned();
        let in_pending = pending.iter().any(|e| e["fqid"] == json!(fqid));
        let name = FIELDS[(field % 3) as usize];
        let event = if in_pending {
            None
        } else {
            match model {
                None => Some(json!({"type": "create", "fqid": fqid,
                    "fields": {"a": value, name: format!("v{value}"), "tags": [value % 3]}})),
                Some(model) if model.deleted => Some(json!({"type": "restore", "fqid": fqid})),
                Some(_) => Some(match op % 6 {
                    0 | 1 => json!({"type": "update", "fqid": fqid, "fields": {name: value}}),
                    2 => {
                        json!({"type": "deletefields", "fqid": fqid, "fields": [name, FIELDS[(value % 4) as usize]]})
                    }
                    3 => json!({"type": "listfields", "fqid": fqid,
                        "add": {"tags": [value % 5]}, "remove": {"tags": [op % 5]}}),
                    4 => json!({"type": "delete", "fqid": fqid}),
                    _ => json!({"type": "update", "fqid": fqid, "fields": {"b": value, "c": op}}),
                }),
            }
        };
        pending.extend(event);
        if !pending.is_empty() && (op % 3 == 0 || index + 1 == choices.len()) {
            setup.write(1, std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        setup.write(1, pending);
    }
}

/// The migrations of `steps` and the same transformation as a function on
/// a model's fields.
#[allow(clippy::type_complexity)]
fn migrations(steps: &[Step]) -> (Vec<Arc<dyn Migration>>, Vec<Box<dyn Fn(&mut Fields)>>) {
    let mut names: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    let mut list = Vec::new();
    let mut direct: Vec<Box<dyn Fn(&mut Fields)>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let migration_name = format!("{:04}_step", i + 2);
        match *step {
            Step::Rename(pick) if !names.is_empty() => {
                let old = names.remove(pick % names.len());
                let new = format!("r{i}");
                names.push(new.clone());
                list.push(rename_field(&migration_name, "motion", &old, &new));
                direct.push(Box::new(move |fields: &mut Fields| {
                    if let Some(value) = fields.remove(&old) {
                        fields.insert(new.clone(), value);
                    }
                }));
            }
            Step::Remove(pick) if !names.is_empty() => {
                let field = names.remove(pick % names.len());
                list.push(remove_field(&migration_name, "motion", &field));
                direct.push(Box::new(move |fields: &mut Fields| {
                    fields.remove(&field);
                }));
            }
            _ => {
                let field = format!("f{i}");
                let default = json!(i);
                names.push(field.clone());
                list.push(add_field(
                    &migration_name,
                    "motion",
                    &field,
                    default.clone(),
                ));
                direct.push(Box::new(move |fields: &mut Fields| {
                    fields
                        .entry(field.clone())
                        .or_insert_with(|| default.clone());
                }));
            }
        }
    }
    (list, direct)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..8).prop_map(Step::Rename),
        Just(Step::Add),
        (0usize..8).prop_map(Step::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn migrating_events_equals_transforming_final_models(
        choices in proptest::collection::vec(any::<(u8, u8, u8, u8)>(), 1..40),
        steps in proptest::collection::vec(step(), 1..4),
        batch in 1u64..5,
    ) {
        let mut setup = Setup::new();
        history(&choices, &mut setup);
        let (list, direct) = migrations(&steps);
        let expected: BTreeMap<String, (Fields, bool)> = setup
            .writer
            .models()
            .iter()
            .map(|(fqid, model)| {
                let mut fields = model.fields.clone();
                for transform in &direct {
                    transform(&mut fields);
                }
                (fqid.to_string(), (fields, model.deleted))
            })
            .collect();
        let registry = registry(list);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let engine = setup.engine(&registry, Default::default()).await.with_batch_positions(batch);
            let mut sink = VecSink::default();
            engine.run(Command::Finalize, &mut sink).await.unwrap();
        });
        let actual: BTreeMap<String, (Fields, bool)> = setup
            .live_models()
            .into_iter()
            .map(|(fqid, model)| (fqid, (model.fields, model.deleted)))
            .collect();
        prop_assert_eq!(actual, expected);
    }
}
