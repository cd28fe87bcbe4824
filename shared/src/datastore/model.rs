//! Models and the rules for applying stored events to them (SPEC section 5).
//!
//! The same [`apply_event`] serves the writer (validating a write body), the
//! migration engine (keeping keyframes) and the tests, so the rules exist
//! exactly once.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::event::{Event, Fields, ListValues};
use super::fqid::Fqid;

/// Field holding the last position that changed the model.
pub const META_POSITION: &str = "meta_position";
/// Field marking a deleted model in the stored projection.
pub const META_DELETED: &str = "meta_deleted";

/// One model of the projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The model's own fields.
    pub fields: Fields,
    /// The last position that changed it.
    pub position: u64,
    /// Deleted models keep their fields hidden, for `restore`.
    pub deleted: bool,
}

impl Model {
    /// The stored JSON: the fields plus `meta_position`, and
    /// `"meta_deleted": true` while deleted.
    pub fn to_stored_json(&self) -> String {
        let mut object = self.fields.clone();
        object.insert(META_POSITION.into(), Value::from(self.position));
        if self.deleted {
            object.insert(META_DELETED.into(), Value::Bool(true));
        }
        Value::Object(object).to_string()
    }

    /// The stored JSON without `meta_position`: what the commit script
    /// completes once it has numbered the position (it never decodes JSON).
    pub fn to_stored_json_without_position(&self) -> String {
        let mut object = self.fields.clone();
        if self.deleted {
            object.insert(META_DELETED.into(), Value::Bool(true));
        }
        Value::Object(object).to_string()
    }

    /// Parses [`Model::to_stored_json`].
    pub fn from_stored_json(text: &str) -> Result<Model, String> {
        let mut object: Map<String, Value> =
            serde_json::from_str(text).map_err(|err| format!("corrupt stored model: {err}"))?;
        let position = object
            .remove(META_POSITION)
            .and_then(|value| value.as_u64())
            .ok_or_else(|| "corrupt stored model: no meta_position".to_string())?;
        let deleted = object
            .remove(META_DELETED)
            .is_some_and(|value| value == Value::Bool(true));
        Ok(Model {
            fields: object,
            position,
            deleted,
        })
    }

    /// What a reader sees: the fields plus `meta_position`, nothing else.
    pub fn reader_view(&self) -> Value {
        let mut object = self.fields.clone();
        object.insert(META_POSITION.into(), Value::from(self.position));
        Value::Object(object)
    }
}

/// Why an event cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// `create` on an fqid that exists (live or deleted).
    #[error("model already exists")]
    AlreadyExists,
    /// `create` on a deleted fqid.
    #[error("model already exists (it is deleted; use restore)")]
    ExistsDeleted,
    /// Any other type on an fqid that never existed.
    #[error("model does not exist")]
    DoesNotExist,
    /// `update`/`deletefields`/`listfields`/`delete` on a deleted model.
    #[error("model is deleted")]
    Deleted,
    /// `restore` on a live model.
    #[error("model is not deleted")]
    NotDeleted,
    /// `listfields` on a field whose value is not a list.
    #[error("field '{0}' is not a list")]
    NotAList(String),
}

/// The models an event is applied to: a map from fqid to model.
///
/// Ordered by fqid (collection, then numeric id), so iterating it gives the
/// same order however the map was built. A Rust migration may iterate
/// `context.old`/`context.new`; a resumed run loads those keyframes from
/// Redis in whatever order `HSCAN` returns them, an uninterrupted run builds
/// them position by position, and a hash map would hand the two runs the
/// models in different orders (and so, possibly, different output).
pub type Models = BTreeMap<Fqid, Model>;

/// Applies one event at `position`, or says why it is invalid (and changes
/// nothing then).
pub fn apply_event(models: &mut Models, event: &Event, position: u64) -> Result<(), ApplyError> {
    let fqid = event.fqid();
    if let Some(created) = apply_event_to(models.get_mut(fqid), event, position)? {
        models.insert(fqid.clone(), created);
    }
    Ok(())
}

/// [`apply_event`] on the one model the event is about (`None`: it does not
/// exist), for callers that keep models in a map of their own (the engine's
/// bounded keyframe cache). A `create` returns the new model for the caller
/// to insert; every other event changes `model` in place and returns `None`.
pub fn apply_event_to(
    model: Option<&mut Model>,
    event: &Event,
    position: u64,
) -> Result<Option<Model>, ApplyError> {
    if let Event::Create { fields, .. } = event {
        return match model {
            Some(model) if model.deleted => Err(ApplyError::ExistsDeleted),
            Some(_) => Err(ApplyError::AlreadyExists),
            None => Ok(Some(Model {
                fields: fields
                    .iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
                position,
                deleted: false,
            })),
        };
    }
    let model = model.ok_or(ApplyError::DoesNotExist)?;
    match event {
        Event::Create { .. } => unreachable!("handled above"),
        Event::Restore { .. } => {
            if !model.deleted {
                return Err(ApplyError::NotDeleted);
            }
            model.deleted = false;
        }
        _ if model.deleted => return Err(ApplyError::Deleted),
        Event::Update { fields, .. } => {
            for (name, value) in fields {
                if value.is_null() {
                    model.fields.remove(name);
                } else if let Some(slot) = model.fields.get_mut(name) {
                    // Most updates overwrite an existing field: reuse its
                    // key (and a string value's buffer) instead of
                    // allocating copies; this runs for every keyframe event.
                    match (slot, value) {
                        (Value::String(old), Value::String(new)) => old.clone_from(new),
                        (slot, value) => *slot = value.clone(),
                    }
                } else {
                    model.fields.insert(name.clone(), value.clone());
                }
            }
        }
        Event::Deletefields { fields, .. } => {
            for name in fields {
                model.fields.remove(name);
            }
        }
        Event::Listfields { add, remove, .. } => apply_list_fields(&mut model.fields, add, remove)?,
        Event::Delete { .. } => model.deleted = true,
    }
    model.position = position;
    Ok(None)
}

fn apply_list_fields(
    fields: &mut Fields,
    add: &ListValues,
    remove: &ListValues,
) -> Result<(), ApplyError> {
    // Check every touched field first, so that a failure changes nothing.
    for name in add.keys().chain(remove.keys()) {
        if let Some(value) = fields.get(name) {
            if !value.is_array() {
                return Err(ApplyError::NotAList(name.clone()));
            }
        }
    }
    for (name, values) in add {
        let entry = fields
            .entry(name.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            for value in values {
                if !list.contains(value) {
                    list.push(value.clone());
                }
            }
        }
    }
    for (name, values) in remove {
        if let Some(Value::Array(list)) = fields.get_mut(name) {
            list.retain(|value| !values.contains(value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fqid() -> Fqid {
        "motion/1".parse().unwrap()
    }

    fn fields(value: Value) -> Fields {
        value.as_object().unwrap().clone()
    }

    fn create(models: &mut Models) {
        let event = Event::Create {
            fqid: fqid(),
            fields: fields(json!({"title": "A", "tag_ids": [1], "gone": null})),
        };
        apply_event(models, &event, 1).unwrap();
    }

    #[test]
    fn lifecycle() {
        let mut models = Models::new();
        create(&mut models);
        assert_eq!(
            models[&fqid()].fields,
            fields(json!({"title": "A", "tag_ids": [1]}))
        );
        let mut add = ListValues::new();
        add.insert("tag_ids".into(), vec![json!(1), json!(2)]);
        add.insert("new_ids".into(), vec![json!("x")]);
        let mut remove = ListValues::new();
        remove.insert("tag_ids".into(), vec![json!(1)]);
        apply_event(
            &mut models,
            &Event::Listfields {
                fqid: fqid(),
                add,
                remove,
            },
            2,
        )
        .unwrap();
        assert_eq!(
            models[&fqid()].reader_view(),
            json!({"title": "A", "tag_ids": [2], "new_ids": ["x"], "meta_position": 2})
        );
        apply_event(&mut models, &Event::Delete { fqid: fqid() }, 3).unwrap();
        assert_eq!(
            apply_event(
                &mut models,
                &Event::Update {
                    fqid: fqid(),
                    fields: fields(json!({"a": 1}))
                },
                4
            ),
            Err(ApplyError::Deleted)
        );
        assert_eq!(
            apply_event(
                &mut models,
                &Event::Create {
                    fqid: fqid(),
                    fields: Fields::new()
                },
                4
            ),
            Err(ApplyError::ExistsDeleted)
        );
        apply_event(&mut models, &Event::Restore { fqid: fqid() }, 4).unwrap();
        assert_eq!(models[&fqid()].fields["title"], json!("A"));
        assert_eq!(
            apply_event(&mut models, &Event::Restore { fqid: fqid() }, 5),
            Err(ApplyError::NotDeleted)
        );
        let stored = models[&fqid()].to_stored_json();
        assert_eq!(Model::from_stored_json(&stored).unwrap(), models[&fqid()]);
    }

    #[test]
    fn update_overwrites_adds_and_removes_fields() {
        let mut models = Models::new();
        create(&mut models);
        let update = |value: Value| Event::Update {
            fqid: fqid(),
            fields: fields(value),
        };
        // String over a longer string, a number over a string, a string over
        // a list, a new field, a removal.
        let event = update(json!({"title": "B", "tag_ids": "x", "new": 1}));
        apply_event(&mut models, &event, 2).unwrap();
        let event = update(json!({"title": "a much longer title", "new": "s", "tag_ids": null}));
        apply_event(&mut models, &event, 3).unwrap();
        apply_event(&mut models, &update(json!({"title": 7})), 4).unwrap();
        assert_eq!(
            models[&fqid()].reader_view(),
            json!({"title": 7, "new": "s", "meta_position": 4})
        );
    }

    #[test]
    fn list_fields_on_a_scalar_changes_nothing() {
        let mut models = Models::new();
        create(&mut models);
        let before = models.clone();
        let mut add = ListValues::new();
        add.insert("tag_ids".into(), vec![json!(5)]);
        add.insert("title".into(), vec![json!(5)]);
        let event = Event::Listfields {
            fqid: fqid(),
            add,
            remove: ListValues::new(),
        };
        assert_eq!(
            apply_event(&mut models, &event, 2),
            Err(ApplyError::NotAList("title".into()))
        );
        assert_eq!(models, before);
    }

    #[test]
    fn missing_model() {
        let mut models = Models::new();
        for event in [
            Event::Update {
                fqid: fqid(),
                fields: Fields::new(),
            },
            Event::Deletefields {
                fqid: fqid(),
                fields: vec![],
            },
            Event::Delete { fqid: fqid() },
            Event::Restore { fqid: fqid() },
        ] {
            assert_eq!(
                apply_event(&mut models, &event, 1),
                Err(ApplyError::DoesNotExist)
            );
        }
    }
}
