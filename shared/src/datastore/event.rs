//! The six stored event types of SPEC section 5, as they are kept in Redis
//! (`ds:events`, `mig:events`) and handed to migrations.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fqid::Fqid;

/// Field name -> JSON value.
pub type Fields = Map<String, Value>;

/// Field name -> list values (integers or strings) of a `listfields` event.
pub type ListValues = BTreeMap<String, Vec<Value>>;

/// One stored event.
///
/// `Serialize` is derived (`type` first, then the variant's fields);
/// `Deserialize` is written out below, see [`EventVisitor`].
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        add: ListValues,
        /// Values removed from the list.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
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

/// The `type` of an event. A variant identifier in the derive's order, so
/// that every deserializer identifies the types as the derived
/// `#[serde(tag = "type")]` enum did (same names, same "unknown variant"
/// error).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(variant_identifier, rename_all = "lowercase")]
enum Kind {
    Create,
    Update,
    Deletefields,
    Listfields,
    Delete,
    Restore,
}

impl Kind {
    /// What the derive expected of the sequence form (`[type, fqid, ...]`).
    fn expected_sequence(self) -> &'static str {
        match self {
            Kind::Create => "struct variant Event::Create with 2 elements",
            Kind::Update => "struct variant Event::Update with 2 elements",
            Kind::Deletefields => "struct variant Event::Deletefields with 2 elements",
            Kind::Listfields => "struct variant Event::Listfields with 3 elements",
            Kind::Delete => "struct variant Event::Delete with 1 element",
            Kind::Restore => "struct variant Event::Restore with 1 element",
        }
    }
}

/// The keys of an event object; every other key is ignored, as the derive
/// ignored it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Type,
    Fqid,
    Fields,
    Add,
    Remove,
    #[serde(other)]
    Other,
}

/// The parts of an event collected from an object, keys in any order.
#[derive(Default)]
struct Parts {
    kind: Option<Kind>,
    fqid: Option<Fqid>,
    /// `fields` of a create or update.
    values: Option<Fields>,
    /// `fields` of a deletefields.
    names: Option<Vec<String>>,
    add: Option<ListValues>,
    remove: Option<ListValues>,
}

impl Parts {
    fn finish<E: de::Error>(self) -> Result<Event, E> {
        let kind = self.kind.ok_or_else(|| E::missing_field("type"))?;
        let fqid = self.fqid.ok_or_else(|| E::missing_field("fqid"))?;
        let values = || self.values.ok_or_else(|| E::missing_field("fields"));
        Ok(match kind {
            Kind::Create => Event::Create {
                fqid,
                fields: values()?,
            },
            Kind::Update => Event::Update {
                fqid,
                fields: values()?,
            },
            Kind::Deletefields => Event::Deletefields {
                fqid,
                fields: self.names.ok_or_else(|| E::missing_field("fields"))?,
            },
            Kind::Listfields => Event::Listfields {
                fqid,
                add: self.add.unwrap_or_default(),
                remove: self.remove.unwrap_or_default(),
            },
            Kind::Delete => Event::Delete { fqid },
            Kind::Restore => Event::Restore { fqid },
        })
    }
}

/// Parses the value of `fqid`, `fields`, `add` or `remove` once the type is
/// known: into the variant's slot, or ignored when the variant has no such
/// field (the derive ignored it too, whatever its value).
struct Body<'a> {
    parts: &'a mut Parts,
    kind: Kind,
    key: Key,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        fn fill<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
            slot: &mut Option<T>,
            name: &'static str,
            deserializer: D,
        ) -> Result<(), D::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(T::deserialize(deserializer)?);
            Ok(())
        }
        let parts = self.parts;
        match (self.kind, self.key) {
            (_, Key::Fqid) => fill(&mut parts.fqid, "fqid", deserializer),
            (Kind::Create | Kind::Update, Key::Fields) => {
                fill(&mut parts.values, "fields", deserializer)
            }
            (Kind::Deletefields, Key::Fields) => fill(&mut parts.names, "fields", deserializer),
            (Kind::Listfields, Key::Add) => fill(&mut parts.add, "add", deserializer),
            (Kind::Listfields, Key::Remove) => fill(&mut parts.remove, "remove", deserializer),
            _ => IgnoredAny::deserialize(deserializer).map(drop),
        }
    }
}

impl Body<'_> {
    /// [`Body`] for a value buffered before the type. Well-formed values are
    /// moved into place (a `fields` object already is a [`Fields`]), so an
    /// event whose keys come sorted (`fields`, `fqid`, `type`: how
    /// `serde_json::Value` and many tools write objects) costs about what one
    /// written `type` first does. Anything else is parsed as [`Body`] parses
    /// it, for the same result and the same errors.
    fn take(self, value: Value) -> Result<(), serde_json::Error> {
        let parts = &mut *self.parts;
        let rest = match (self.kind, self.key, value) {
            (_, Key::Fqid, Value::String(text)) if parts.fqid.is_none() => {
                parts.fqid = Some(text.parse().map_err(de::Error::custom)?);
                None
            }
            (Kind::Create | Kind::Update, Key::Fields, Value::Object(fields))
                if parts.values.is_none() =>
            {
                parts.values = Some(fields);
                None
            }
            (Kind::Deletefields, Key::Fields, Value::Array(names))
                if parts.names.is_none() && names.iter().all(Value::is_string) =>
            {
                let names = names.into_iter().filter_map(|name| match name {
                    Value::String(name) => Some(name),
                    _ => None,
                });
                parts.names = Some(names.collect());
                None
            }
            (Kind::Listfields, key @ (Key::Add | Key::Remove), Value::Object(lists))
                if lists.values().all(Value::is_array) =>
            {
                let slot = if key == Key::Add {
                    &mut parts.add
                } else {
                    &mut parts.remove
                };
                if slot.is_some() {
                    Some(Value::Object(lists))
                } else {
                    let lists = lists.into_iter().filter_map(|(name, list)| match list {
                        Value::Array(list) => Some((name, list)),
                        _ => None,
                    });
                    *slot = Some(lists.collect());
                    None
                }
            }
            (_, _, value) => Some(value),
        };
        match rest {
            Some(value) => self.deserialize(value),
            None => Ok(()),
        }
    }
}

/// Parses an event straight from the input, without the intermediate
/// `Content` tree serde builds for `#[serde(tag = "type")]` (it buffers the
/// whole object to find the tag first): this runs for every live event the
/// engine migrates.
///
/// It accepts and refuses what the derive did: keys in any order, unknown
/// keys ignored, duplicate known keys refused, `listfields` without
/// `add`/`remove`, and the sequence form `[type, fqid, ...]`. Only values
/// that come before `type` (never in stored events, which are written `type`
/// first) are buffered, as JSON values, until the type says what they are;
/// they are then parsed in their order, so the first fault reported is the
/// derive's: a missing or unknown type first, then the fields in input order.
/// (Unlike the derive, a fault is reported before a syntax error or a
/// duplicate `type` further on.)
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("internally tagged enum Event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut parts = Parts::default();
        let mut before_type: Vec<(Key, Value)> = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => {
                    if parts.kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    let kind = map.next_value::<Kind>()?;
                    parts.kind = Some(kind);
                    for (key, value) in before_type.drain(..) {
                        let body = Body {
                            parts: &mut parts,
                            kind,
                            key,
                        };
                        body.take(value).map_err(de::Error::custom)?;
                    }
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Fqid | Key::Fields | Key::Add | Key::Remove => match parts.kind {
                    Some(kind) => map.next_value_seed(Body {
                        parts: &mut parts,
                        kind,
                        key,
                    })?,
                    None => before_type.push((key, map.next_value()?)),
                },
            }
        }
        parts.finish()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Event, A::Error> {
        let kind: Kind = seq
            .next_element()?
            .ok_or_else(|| de::Error::missing_field("type"))?;
        let expected = kind.expected_sequence();
        fn required<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
            seq: &mut A,
            index: usize,
            expected: &'static str,
        ) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| de::Error::invalid_length(index, &expected))
        }
        let fqid: Fqid = required(&mut seq, 0, expected)?;
        let event = match kind {
            Kind::Create => Event::Create {
                fqid,
                fields: required(&mut seq, 1, expected)?,
            },
            Kind::Update => Event::Update {
                fqid,
                fields: required(&mut seq, 1, expected)?,
            },
            Kind::Deletefields => Event::Deletefields {
                fqid,
                fields: required(&mut seq, 1, expected)?,
            },
            Kind::Listfields => {
                // Both optional: a short sequence defaults them.
                let add = seq.next_element()?;
                let remove = match add {
                    Some(_) => seq.next_element()?,
                    None => None,
                };
                Event::Listfields {
                    fqid,
                    add: add.unwrap_or_default(),
                    remove: remove.unwrap_or_default(),
                }
            }
            Kind::Delete => Event::Delete { fqid },
            Kind::Restore => Event::Restore { fqid },
        };
        // The derive refused elements beyond the variant's fields.
        let fields = match kind {
            Kind::Create | Kind::Update | Kind::Deletefields => 2,
            Kind::Listfields => 3,
            Kind::Delete | Kind::Restore => 1,
        };
        let mut extra = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            extra += 1;
        }
        if extra > 0 {
            return Err(de::Error::invalid_length(
                fields + extra,
                &ElementsInSequence(fields),
            ));
        }
        Ok(event)
    }
}

/// The derive's "expected N elements in sequence".
struct ElementsInSequence(usize);

impl de::Expected for ElementsInSequence {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => formatter.write_str("1 element in sequence"),
            n => write!(formatter, "{n} elements in sequence"),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        deserializer.deserialize_any(EventVisitor)
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

    /// The derived `Deserialize` the hand-written one replaces, with the
    /// fqid parsing of that time, kept as the reference for parity and speed
    /// (named `Event` so that its messages name the same type).
    mod derived {
        use super::super::{Fields, ListValues};
        use serde::{Deserialize, Deserializer};

        /// An fqid parsed as before: copied into a `String`, then parsed.
        #[derive(Debug)]
        pub(super) struct Fqid(pub(super) crate::datastore::Fqid);

        impl<'de> Deserialize<'de> for Fqid {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fqid, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map(Fqid).map_err(serde::de::Error::custom)
            }
        }

        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        pub(super) enum Event {
            Create {
                fqid: Fqid,
                fields: Fields,
            },
            Update {
                fqid: Fqid,
                fields: Fields,
            },
            Deletefields {
                fqid: Fqid,
                fields: Vec<String>,
            },
            Listfields {
                fqid: Fqid,
                #[serde(default)]
                add: ListValues,
                #[serde(default)]
                remove: ListValues,
            },
            Delete {
                fqid: Fqid,
            },
            Restore {
                fqid: Fqid,
            },
        }
    }

    impl From<derived::Event> for Event {
        fn from(event: derived::Event) -> Event {
            use derived::{Event as Derived, Fqid as F};
            match event {
                Derived::Create {
                    fqid: F(fqid),
                    fields,
                } => Event::Create { fqid, fields },
                Derived::Update {
                    fqid: F(fqid),
                    fields,
                } => Event::Update { fqid, fields },
                Derived::Deletefields {
                    fqid: F(fqid),
                    fields,
                } => Event::Deletefields { fqid, fields },
                Derived::Listfields {
                    fqid: F(fqid),
                    add,
                    remove,
                } => Event::Listfields { fqid, add, remove },
                Derived::Delete { fqid: F(fqid) } => Event::Delete { fqid },
                Derived::Restore { fqid: F(fqid) } => Event::Restore { fqid },
            }
        }
    }

    /// Both parsers on `text`, from a string and from a `Value`.
    fn both(text: &str) -> [(Result<Event, String>, Result<Event, String>); 2] {
        let strip = |err: serde_json::Error| {
            let message = err.to_string();
            match message.find(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            }
        };
        let from_str = (
            serde_json::from_str::<Event>(text).map_err(strip),
            serde_json::from_str::<derived::Event>(text)
                .map(Event::from)
                .map_err(strip),
        );
        let value: Value = serde_json::from_str(text).unwrap();
        let from_value = (
            serde_json::from_value::<Event>(value.clone()).map_err(strip),
            serde_json::from_value::<derived::Event>(value)
                .map(Event::from)
                .map_err(strip),
        );
        [from_str, from_value]
    }

    /// Asserts that both parsers accept `text` as the same event, or both
    /// refuse it with the same message, from a string and from a `Value`.
    /// Returns whether it was accepted.
    fn assert_parity(text: &str) -> bool {
        let mut accepted = false;
        for (new, derived) in both(text) {
            assert_eq!(new, derived, "{text}");
            accepted = new.is_ok();
        }
        accepted
    }

    /// `{...}` of the entries, in their order.
    fn object(entries: &[(&str, &str)]) -> String {
        let entries: Vec<String> = entries
            .iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        format!("{{{}}}", entries.join(","))
    }

    const TYPES: [&str; 6] = [
        "create",
        "update",
        "deletefields",
        "listfields",
        "delete",
        "restore",
    ];

    /// Every combination of good, bad and absent values of every key (type,
    /// fqid, fields, add, remove, an unknown key), each in three key orders.
    #[test]
    fn parses_and_refuses_what_the_derive_did() {
        let types = [
            None,
            Some(r#""create""#),
            Some(r#""update""#),
            Some(r#""deletefields""#),
            Some(r#""listfields""#),
            Some(r#""delete""#),
            Some(r#""restore""#),
            Some(r#""bogus""#),
            Some(r#""Create""#),
            Some("0"),
            Some("null"),
        ];
        let fqids = [
            None,
            Some(r#""motion/1""#),
            Some(r#""Motion/1""#),
            Some("5"),
        ];
        let fields = [
            None,
            Some(r#"{"title":"A","n":1.5,"tag_ids":[1]}"#),
            Some(r#"["title","text"]"#),
            Some("[1]"),
            Some("5"),
            Some("null"),
            Some("{}"),
        ];
        let adds = [
            None,
            Some(r#"{"tag_ids":[1,"x"]}"#),
            Some("[1]"),
            Some(r#"{"tag_ids":5}"#),
        ];
        let removes = [None, Some(r#"{"tag_ids":[2]}"#), Some("7")];
        let unknown = [None, Some(r#"{"deep":[1,{"a":null}]}"#)];
        let (mut parses, mut accepted) = (0, 0);
        for t in types {
            for f in fqids {
                for fs in fields {
                    for a in adds {
                        for r in removes {
                            for x in unknown {
                                let entries: Vec<(&str, &str)> = [
                                    ("type", t),
                                    ("fqid", f),
                                    ("fields", fs),
                                    ("add", a),
                                    ("remove", r),
                                    ("x", x),
                                ]
                                .into_iter()
                                .filter_map(|(key, value)| value.map(|value| (key, value)))
                                .collect();
                                let mut reversed = entries.clone();
                                reversed.reverse();
                                let mut rotated = entries.clone();
                                rotated.rotate_left(1.min(entries.len()));
                                for order in [entries, reversed, rotated] {
                                    parses += 1;
                                    accepted += usize::from(assert_parity(&object(&order)));
                                }
                            }
                        }
                    }
                }
            }
        }
        // The corpus is not vacuous: it holds both kinds.
        assert!(
            accepted > 1000 && parses - accepted > 10_000,
            "{accepted} of {parses}"
        );
    }

    /// Every order of the keys of a complete event of each type, with an
    /// unknown key among them.
    #[test]
    fn keys_in_any_order() {
        fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
            if items.len() <= 1 {
                return vec![items.to_vec()];
            }
            let mut all = Vec::new();
            for (index, &first) in items.iter().enumerate() {
                let mut rest = items.to_vec();
                rest.remove(index);
                for mut tail in permutations(&rest) {
                    tail.insert(0, first);
                    all.push(tail);
                }
            }
            all
        }
        for kind in TYPES {
            let fields = if kind == "deletefields" {
                r#"["title"]"#
            } else {
                r#"{"title":"A"}"#
            };
            let kind = format!("\"{kind}\"");
            let entries = [
                ("type", kind.as_str()),
                ("fqid", r#""motion/1""#),
                ("fields", fields),
                ("add", r#"{"tag_ids":[1]}"#),
                ("remove", r#"{"tag_ids":[2]}"#),
                ("other", r#"[{"x":1}]"#),
            ];
            let mut seen = None;
            for order in permutations(&[0, 1, 2, 3, 4, 5]) {
                let ordered: Vec<(&str, &str)> = order.iter().map(|&i| entries[i]).collect();
                let text = object(&ordered);
                assert!(assert_parity(&text), "{text}");
                let event: Event = serde_json::from_str(&text).unwrap();
                assert_eq!(seen.get_or_insert_with(|| event.clone()), &event);
            }
        }
    }

    /// A known key twice is refused (by name) where the type has that field,
    /// ignored where it has not; an unknown key twice is ignored. (A second
    /// `type` is refused too; the derive named it before any other fault,
    /// this parser names the first fault in the input.)
    #[test]
    fn duplicate_keys() {
        for kind in TYPES {
            let kind = format!("\"{kind}\"");
            let base = [
                ("type", kind.as_str()),
                ("fqid", r#""motion/1""#),
                ("fields", r#"{"a":1}"#),
                ("add", r#"{"b":[1]}"#),
                ("remove", r#"{"c":[2]}"#),
                ("x", "1"),
            ];
            for duplicate in 0..base.len() {
                for at in 0..=base.len() {
                    for value in [base[duplicate].1, r#"["a"]"#] {
                        let mut entries = base.to_vec();
                        entries.insert(at, (base[duplicate].0, value));
                        let text = object(&entries);
                        if base[duplicate].0 == "type" {
                            // A `Value` keeps one of the two: only the
                            // string has the duplicate.
                            let [(new, derived), from_value] = both(&text);
                            assert!(new.is_err() && derived.is_err(), "{text}");
                            assert_eq!(from_value.0, from_value.1, "{text}");
                        } else {
                            assert_parity(&text);
                        }
                    }
                }
            }
        }
        let error = serde_json::from_str::<Event>(
            r#"{"type":"update","fqid":"motion/1","fields":{},"fields":{}}"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "duplicate field `fields` at line 1 column 56"
        );
    }

    /// The sequence form `[type, fqid, ...]` the derive accepted, and
    /// anything that is neither an object nor a sequence.
    #[test]
    fn sequences_and_other_values() {
        let accepted = [
            r#"["create","motion/1",{"a":1}]"#,
            r#"["deletefields","motion/1",["a"]]"#,
            r#"["listfields","motion/1"]"#,
            r#"["listfields","motion/1",{"a":[1]}]"#,
            r#"["listfields","motion/1",{"a":[1]},{"b":[2]}]"#,
            r#"["delete","motion/1"]"#,
        ];
        for text in accepted {
            assert!(assert_parity(text), "{text}");
        }
        let refused = [
            "[]",
            r#"["create"]"#,
            r#"["create","motion/1"]"#,
            r#"["create","motion/1",{},1]"#,
            r#"["update","motion/1",[]]"#,
            r#"["listfields","motion/1",{},{},5,6]"#,
            r#"["delete","motion/1",null]"#,
            r#"["restore"]"#,
            r#"["bogus","motion/1"]"#,
            r#"[5,"motion/1"]"#,
            r#"["delete",5]"#,
            "5",
            "-1",
            "1.5",
            r#""create""#,
            "null",
            "true",
            "{}",
        ];
        for text in refused {
            assert!(!assert_parity(text), "{text}");
        }
    }

    /// The messages name the fault and where it is.
    #[test]
    fn error_messages() {
        for (text, expected) in [
            (
                r#"{"type":"move","fqid":"motion/1"}"#,
                "unknown variant `move`, expected one of `create`, `update`, `deletefields`, `listfields`, `delete`, `restore` at line 1 column 14",
            ),
            (
                r#"{"type":"create","fields":{}}"#,
                "missing field `fqid` at line 1 column 29",
            ),
            (
                r#"{"fqid":"motion/1","fields":{}}"#,
                "missing field `type` at line 1 column 31",
            ),
            (
                r#"{"type":"update","fqid":"motion/1"}"#,
                "missing field `fields` at line 1 column 35",
            ),
            (
                r#"{"type":"create","fqid":"motion/1","fields":["a"]}"#,
                "invalid type: sequence, expected a map at line 1 column 44",
            ),
            (
                r#"{"type":"delete","fqid":"motion/0"}"#,
                "invalid fqid 'motion/0': expected collection/id with a lower-case collection and a positive id at line 1 column 34",
            ),
        ] {
            let error = serde_json::from_str::<Event>(text).unwrap_err();
            assert_eq!(error.to_string(), expected, "{text}");
        }
    }

    /// Extra keys are ignored, as by the derive (stored events never have
    /// them, but a later version's field must not break an older reader).
    #[test]
    fn unknown_keys_are_ignored() {
        let event: Event = serde_json::from_str(
            r#"{"type":"delete","x":{"y":[1,2]},"fqid":"motion/1","fields":"ignored","add":0}"#,
        )
        .unwrap();
        assert_eq!(
            event,
            Event::Delete {
                fqid: "motion/1".parse().unwrap()
            }
        );
    }

    /// Parse speed of the engine's input shape, new against the derive:
    /// `cargo test --release -p migration-shared --lib parse_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark, run by hand in release mode"]
    fn parse_speed() {
        let fields = |value: Value| -> Fields { value.as_object().cloned().unwrap() };
        let fqid = |id: u64| -> Fqid { Fqid::new("motion", id).unwrap() };
        // The bench's shape (worker/examples/bench.rs).
        let position = |p: u64| -> Vec<Event> {
            let mut events = vec![Event::Create {
                fqid: fqid(p),
                fields: fields(json!({
                    "title": format!("Motion {p}"),
                    "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
                    "number": p, "tag_ids": [1, 2, 3], "state_id": 4})),
            }];
            for update in 0..9u64 {
                events.push(Event::Update {
                    fqid: fqid(p / 2 + 1),
                    fields: fields(json!({
                        "title": format!("Motion {p} v{update}"),
                        "text": format!("Changed at position {p}"),
                        "number": p * 7 % 1000, "weight": update, "state_id": p % 10})),
                });
            }
            events
        };
        let positions: Vec<Vec<Event>> = (1..=100_000).map(position).collect();
        // As stored (`type` first), and with sorted keys (as a `Value` writes).
        let stored: Vec<String> = positions
            .iter()
            .map(|events| serde_json::to_string(events).unwrap())
            .collect();
        let sorted: Vec<String> = positions
            .iter()
            .map(|events| serde_json::to_value(events).unwrap().to_string())
            .collect();
        assert!(stored[0].starts_with(r#"[{"type":"create","fqid""#));
        assert!(sorted[0].starts_with(r#"[{"fields":"#));
        let events = positions.len() * 10;
        /// This thread's CPU time (user + system) in clock ticks (1/100 s on
        /// Linux): unlike the wall clock, not inflated by other processes.
        fn cpu_ticks() -> u64 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after_name.split(' ').collect();
            // utime and stime are fields 14 and 15 of stat(5); 12 and 13 here.
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        }
        fn time<T>(positions: &[String], parse: fn(&str) -> T) -> std::time::Duration {
            let started = cpu_ticks();
            for text in positions {
                std::hint::black_box(parse(text));
            }
            std::time::Duration::from_millis((cpu_ticks() - started) * 10)
        }
        // The machine may be shared: alternate, and keep each one's best
        // CPU time.
        let derive = |text: &str| serde_json::from_str::<Vec<derived::Event>>(text).unwrap();
        let new = |text: &str| serde_json::from_str::<Vec<Event>>(text).unwrap();
        let mut best = [std::time::Duration::MAX; 5];
        for _ in 0..7 {
            let round = [
                time(&stored, derive),
                time(&stored, new),
                time(&sorted, derive),
                time(&sorted, new),
                time(&stored, |text| {
                    serde_json::from_str::<Vec<Value>>(text).unwrap()
                }),
            ];
            for (best, elapsed) in best.iter_mut().zip(round) {
                *best = (*best).min(elapsed);
            }
        }
        let rate = |elapsed: std::time::Duration| events as f64 / elapsed.as_secs_f64();
        for (name, derived, new) in [
            ("stored", best[0], best[1]),
            ("sorted keys", best[2], best[3]),
        ] {
            eprintln!(
                "{events} events, {name}, best CPU time of 7: derive {:.0} events/s, hand-written {:.0} events/s, speedup {:.2}",
                rate(derived),
                rate(new),
                derived.as_secs_f64() / new.as_secs_f64()
            );
        }
        eprintln!("(a plain serde_json::Value: {:.0} events/s)", rate(best[4]));
    }

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
