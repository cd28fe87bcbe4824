//! The six stored event types of SPEC section 5, as they are kept in Redis
//! (`ds:events`, `mig:events`) and handed to migrations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fqid::Fqid;

/// Field name -> JSON value.
pub type Fields = Map<String, Value>;

/// Field name -> list values (integers or strings) of a `listfields` event.
pub type ListValues = BTreeMap<String, Vec<Value>>;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A new model with its fields.
    Create {
        /// The model.
        fqid: Fqid,
        /// Its fields (no nulls).
        fields: Fields,
    },
    /// Sets fields (no nulls: a null in a stored update removes the field).
    Update {
        /// The model.
        fqid: Fqid,
        /// The fields to set.
        fields: Fields,
    },
    /// Removes fields.
    Deletefields {
        /// The model.
        fqid: Fqid,
        /// The names of the fields to remove.
        fields: Vec<String>,
    },
    /// Adds values to / removes values from list fields.
    Listfields {
        /// The model.
        fqid: Fqid,
        /// Values appended when not yet in the list.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        add: ListValues,
        /// Values removed from the list.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        remove: ListValues,
    },
    /// Hides the model; its fields are kept for `restore`.
    Delete {
        /// The model.
        fqid: Fqid,
    },
    /// Brings a deleted model back with the fields it had.
    Restore {
        /// The model.
        fqid: Fqid,
    },
}

impl Event {
    /// The model the event is about.
    pub fn fqid(&self) -> &Fqid {
        match self {
            Event::Create { fqid, .. }
            | Event::Update { fqid, .. }
            | Event::Deletefields { fqid, .. }
            | Event::Listfields { fqid, .. }
            | Event::Delete { fqid }
            | Event::Restore { fqid } => fqid,
        }
    }

    /// The type as written in JSON (`create`, `update`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Create { .. } => "create",
            Event::Update { .. } => "update",
            Event::Deletefields { .. } => "deletefields",
            Event::Listfields { .. } => "listfields",
            Event::Delete { .. } => "delete",
            Event::Restore { .. } => "restore",
        }
    }

    /// True for events that change nothing and are dropped (SPEC section 6):
    /// an `update` without fields, a `deletefields` without names, a
    /// `listfields` without values.
    pub fn is_empty(&self) -> bool {
        match self {
            Event::Update { fields, .. } => fields.is_empty(),
            Event::Deletefields { fields, .. } => fields.is_empty(),
            Event::Listfields { add, remove, .. } => {
                add.values().all(Vec::is_empty) && remove.values().all(Vec::is_empty)
            }
            Event::Create { .. } | Event::Delete { .. } | Event::Restore { .. } => false,
        }
    }
}

/// Orders the events of one position as migrations see them: creates first,
/// then the rest, each group in its original order (SPEC section 6).
pub fn creates_first(mut events: Vec<Event>) -> Vec<Event> {
    let is_create = |event: &Event| matches!(event, Event::Create { .. });
    // Usually already in order: then nothing moves and nothing is allocated
    // (this runs for every position and migration step of the engine).
    if let Some(first_other) = events.iter().position(|event| !is_create(event)) {
        if events[first_other..].iter().any(is_create) {
            // A stable sort keeps each group's order.
            events[first_other..].sort_by_key(|event| !is_create(event));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shape_round_trips() {
        let text = r#"[{"type":"create","fqid":"motion/1","fields":{"title":"A"}},{"type":"listfields","fqid":"motion/1","add":{"tag_ids":[2]}},{"type":"deletefields","fqid":"motion/1","fields":["text"]},{"type":"delete","fqid":"motion/1"}]"#;
        let events: Vec<Event> = serde_json::from_str(text).unwrap();
        assert_eq!(events[1].type_name(), "listfields");
        assert_eq!(serde_json::to_string(&events).unwrap(), text);
    }

    #[test]
    fn creates_first_keeps_each_group_in_order() {
        let event = |text: &str| -> Event {
            let (kind, id) = text.split_at(1);
            let fqid: Fqid = format!("m/{id}").parse().unwrap();
            match kind {
                "c" => Event::Create {
                    fqid,
                    fields: Fields::new(),
                },
                "u" => Event::Update {
                    fqid,
                    fields: Fields::new(),
                },
                _ => Event::Delete { fqid },
            }
        };
        let events = |texts: &str| -> Vec<Event> { texts.split(' ').map(event).collect() };
        for (input, expected) in [
            ("c1 u1 u2", "c1 u1 u2"),
            ("u1 d2 u3", "u1 d2 u3"),
            ("c1 c2", "c1 c2"),
            ("u1 c2 d3 c4 u5", "c2 c4 u1 d3 u5"),
            ("c1 u2 c3 u4 c5", "c1 c3 c5 u2 u4"),
        ] {
            assert_eq!(creates_first(events(input)), events(expected), "{input}");
        }
        assert!(creates_first(Vec::new()).is_empty());
    }

    #[test]
    fn empty_events() {
        let fqid: Fqid = "motion/1".parse().unwrap();
        assert!(Event::Update {
            fqid: fqid.clone(),
            fields: Fields::new()
        }
        .is_empty());
        let mut add = ListValues::new();
        add.insert("tag_ids".into(), vec![]);
        assert!(Event::Listfields {
            fqid: fqid.clone(),
            add: add.clone(),
            remove: ListValues::new()
        }
        .is_empty());
        add.insert("tag_ids".into(), vec![json!(1)]);
        assert!(!Event::Listfields {
            fqid: fqid.clone(),
            add,
            remove: ListValues::new()
        }
        .is_empty());
        assert!(!Event::Delete { fqid }.is_empty());
    }
}
