//! The write request of SPEC section 5.1 and its translation into stored
//! events.
//!
//! Structural checks happen here (types, names, fqids); whether an event fits
//! the current models is the writer's job ([`super::writer`]), because only
//! the writer knows the models.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::event::{Event, Fields, ListValues};
use super::fqid::{is_reserved_field, is_valid_field_name, Fqid};

/// One write request: it becomes one position.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// Who wrote it.
    pub user_id: i64,
    /// Free-form information kept with the position.
    #[serde(default)]
    pub information: Value,
    /// Optional; see SPEC 5.1 for the rules.
    #[serde(default)]
    pub migration_index: Option<u64>,
    /// The request's events, in order.
    pub events: Vec<RequestEvent>,
}

/// An event as clients send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RequestEvent {
    /// Create a model.
    Create {
        /// The new model.
        fqid: String,
        /// Its fields; a `null` value is refused (SPEC 5).
        #[serde(default)]
        fields: Map<String, Value>,
    },
    /// Update a model: non-null fields are set, null fields removed, list
    /// fields changed.
    Update {
        /// The model.
        fqid: String,
        /// Fields to set (or remove, when null).
        #[serde(default)]
        fields: Map<String, Value>,
        /// List additions and removals.
        #[serde(default)]
        list_fields: Option<RequestListFields>,
    },
    /// Delete a model.
    Delete {
        /// The model.
        fqid: String,
    },
    /// Restore a deleted model.
    Restore {
        /// The model.
        fqid: String,
    },
}

/// `list_fields` of an update.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestListFields {
    /// Values to append.
    #[serde(default)]
    pub add: BTreeMap<String, Vec<Value>>,
    /// Values to remove.
    #[serde(default)]
    pub remove: BTreeMap<String, Vec<Value>>,
}

/// Parses a write body: one request object or an array of them. The error
/// names the request index.
pub fn parse_write_body(body: Value) -> Result<Vec<WriteRequest>, String> {
    let items = match body {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("body must be a write request object or an array of them".into()),
    };
    if items.is_empty() {
        return Err("body contains no write request".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_value::<WriteRequest>(item)
                .map_err(|err| format!("request {index}: {err}"))
        })
        .collect()
}

impl WriteRequest {
    /// The stored events of this request: each `update` becomes an `update`
    /// (non-null fields), a `deletefields` (null fields) and a `listfields`
    /// event, those that are non-empty, in that order. The error is the
    /// reason, with the fqid where there is one.
    pub fn stored_events(&self) -> Result<Vec<Event>, String> {
        if self.events.is_empty() {
            return Err("request has no events".into());
        }
        let mut stored = Vec::with_capacity(self.events.len());
        for event in &self.events {
            match event {
                RequestEvent::Create { fqid, fields } => {
                    let fqid = parse_fqid(fqid)?;
                    check_field_names(&fqid, fields.keys())?;
                    if let Some((name, _)) = fields.iter().find(|(_, value)| value.is_null()) {
                        return Err(format!(
                            "{fqid}: create sets field '{name}' to null (null only deletes a field in an update; leave the field out instead)"
                        ));
                    }
                    stored.push(Event::Create {
                        fqid,
                        fields: fields.clone(),
                    });
                }
                RequestEvent::Update {
                    fqid,
                    fields,
                    list_fields,
                } => {
                    let fqid = parse_fqid(fqid)?;
                    check_field_names(&fqid, fields.keys())?;
                    let mut set = Fields::new();
                    let mut removed = Vec::new();
                    for (name, value) in fields {
                        if value.is_null() {
                            removed.push(name.clone());
                        } else {
                            set.insert(name.clone(), value.clone());
                        }
                    }
                    let list_fields = list_fields.clone().unwrap_or_default();
                    let add = check_list_values(&fqid, list_fields.add)?;
                    let remove = check_list_values(&fqid, list_fields.remove)?;
                    let candidates = [
                        Event::Update {
                            fqid: fqid.clone(),
                            fields: set,
                        },
                        Event::Deletefields {
                            fqid: fqid.clone(),
                            fields: removed,
                        },
                        Event::Listfields {
                            fqid: fqid.clone(),
                            add,
                            remove,
                        },
                    ];
                    let before = stored.len();
                    stored.extend(candidates.into_iter().filter(|event| !event.is_empty()));
                    if stored.len() == before {
                        return Err(format!("{fqid}: update changes nothing"));
                    }
                }
                RequestEvent::Delete { fqid } => stored.push(Event::Delete {
                    fqid: parse_fqid(fqid)?,
                }),
                RequestEvent::Restore { fqid } => stored.push(Event::Restore {
                    fqid: parse_fqid(fqid)?,
                }),
            }
        }
        Ok(stored)
    }
}

fn parse_fqid(text: &str) -> Result<Fqid, String> {
    text.parse()
}

fn check_field_names<'a>(
    fqid: &Fqid,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    for name in names {
        if is_reserved_field(name) {
            return Err(format!(
                "{fqid}: field '{name}' is reserved (meta_ names belong to the datastore)"
            ));
        }
        if !is_valid_field_name(name) {
            return Err(format!("{fqid}: invalid field name '{name}'"));
        }
    }
    Ok(())
}

fn check_list_values(
    fqid: &Fqid,
    lists: BTreeMap<String, Vec<Value>>,
) -> Result<ListValues, String> {
    check_field_names(fqid, lists.keys())?;
    for (name, values) in &lists {
        if let Some(bad) = values
            .iter()
            .find(|v| !(v.is_i64() || v.is_u64() || v.is_string()))
        {
            return Err(format!(
                "{fqid}: list field '{name}' takes integers or strings, not {bad}"
            ));
        }
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn update_splits_into_three_events() {
        let requests = parse_write_body(json!({"user_id": 1, "events": [
            {"type": "update", "fqid": "motion/1", "fields": {"title": "B", "text": null},
             "list_fields": {"add": {"tag_ids": [2]}, "remove": {}}}]}))
        .unwrap();
        let events = requests[0].stored_events().unwrap();
        let types: Vec<_> = events.iter().map(Event::type_name).collect();
        assert_eq!(types, ["update", "deletefields", "listfields"]);
        let only_null = parse_write_body(json!({"user_id": 1, "events": [
            {"type": "update", "fqid": "motion/1", "fields": {"text": null}}]}))
        .unwrap();
        let types: Vec<_> = only_null[0]
            .stored_events()
            .unwrap()
            .iter()
            .map(Event::type_name)
            .collect();
        assert_eq!(types, ["deletefields"]);
    }

    #[test]
    fn structural_errors_name_the_request() {
        let err =
            parse_write_body(json!([{"user_id": 1, "events": []}, {"user_id": "x", "events": []}]))
                .unwrap_err();
        assert!(err.starts_with("request 1:"), "{err}");
        let err =
            parse_write_body(json!({"user_id": 1, "events": [{"type": "explode", "fqid": "a/1"}]}))
                .unwrap_err();
        assert!(err.contains("explode"), "{err}");
        assert!(parse_write_body(json!(3)).is_err());
        assert!(parse_write_body(json!([])).is_err());
        let bad = |events: Value| {
            parse_write_body(json!({"user_id": 1, "events": events})).unwrap()[0]
                .stored_events()
                .unwrap_err()
        };
        assert!(
            bad(json!([{"type": "create", "fqid": "Motion/1", "fields": {}}]))
                .contains("invalid fqid")
        );
        assert!(
            bad(json!([{"type": "create", "fqid": "motion/1", "fields": {"meta_x": 1}}]))
                .contains("reserved")
        );
        assert!(
            bad(json!([{"type": "create", "fqid": "motion/1", "fields": {"Bad": 1}}]))
                .contains("invalid field name")
        );
        assert!(bad(
            json!([{"type": "update", "fqid": "motion/1", "list_fields": {"add": {"a": [1.5]}}}])
        )
        .contains("integers or strings"));
        assert!(bad(json!([])).contains("no events"));
        let null =
            bad(json!([{"type": "create", "fqid": "motion/7", "fields": {"a": 1, "text": null}}]));
        assert!(
            null.starts_with("motion/7:") && null.contains("'text'") && null.contains("null"),
            "{null}"
        );
    }
}
