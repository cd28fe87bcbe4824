//! Model identifiers (`collection/id`) and the name rules of SPEC section 5.
//!
//! The rules are checked by hand instead of with a regex crate: they are
//! tiny, and these checks run for every event of a bulk import.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A model's identifier: `collection/id`, id a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fqid {
    collection: String,
    id: u64,
}

impl Fqid {
    /// A new fqid; `collection` must be valid ([`is_valid_collection`]) and `id > 0`.
    pub fn new(collection: &str, id: u64) -> Result<Fqid, String> {
        if !is_valid_collection(collection) {
            return Err(format!("invalid collection '{collection}'"));
        }
        if id == 0 {
            return Err("id must be a positive integer".into());
        }
        Ok(Fqid {
            collection: collection.to_string(),
            id,
        })
    }

    /// The collection part.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The id part.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl fmt::Display for Fqid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

impl FromStr for Fqid {
    type Err = String;

    fn from_str(s: &str) -> Result<Fqid, String> {
        let (collection, id) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid fqid '{s}': expected collection/id"))?;
        let id_ok =
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
        let id = if id_ok { id.parse::<u64>().ok() } else { None };
        match id {
            Some(id) if is_valid_collection(collection) => Ok(Fqid {
                collection: collection.to_string(),
                id,
            }),
            _ => Err(format!(
                "invalid fqid '{s}': expected collection/id with a lower-case collection and a positive id"
            )),
        }
    }
}

impl Serialize for Fqid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses the text where the deserializer holds it, without first copying
/// it into a `String` of its own (every event has an fqid). Accepts what a
/// `String` accepts (text, or bytes that are UTF-8), as before.
impl<'de> Deserialize<'de> for Fqid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fqid, D::Error> {
        struct FqidVisitor;

        impl serde::de::Visitor<'_> for FqidVisitor {
            type Value = Fqid;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Fqid, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Fqid, E> {
                match std::str::from_utf8(bytes) {
                    Ok(text) => self.visit_str(text),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self)),
                }
            }
        }

        deserializer.deserialize_str(FqidVisitor)
    }
}

/// `^[a-z]([a-z_]*[a-z])?$`
pub fn is_valid_collection(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_lowercase()
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b == b'_')
}

/// `^[a-z][a-z0-9_]*(\$[a-z0-9_]*)?$` (template fields carry one `$`).
/// Does not check the reserved `meta_` prefix: see [`is_reserved_field`].
pub fn is_valid_field_name(name: &str) -> bool {
    let (head, tail) = match name.split_once('$') {
        Some((head, tail)) => (head, Some(tail)),
        None => (name, None),
    };
    let word = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    head.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && word(head)
        && tail.is_none_or(word)
}

/// Names starting with `meta_` are the datastore's own (`meta_position`,
/// `meta_deleted`) and may not be written by clients or migrations.
pub fn is_reserved_field(name: &str) -> bool {
    name.starts_with("meta_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqid_parsing() {
        let fqid: Fqid = "motion_block/12".parse().unwrap();
        assert_eq!(fqid.collection(), "motion_block");
        assert_eq!(fqid.id(), 12);
        assert_eq!(fqid.to_string(), "motion_block/12");
        for bad in [
            "motion",
            "motion/",
            "/1",
            "motion/0",
            "motion/01",
            "Motion/1",
            "motion_/1",
            "_m/1",
            "motion/1/2",
            "motion/-1",
            "motion/a",
            "mo-tion/1",
        ] {
            assert!(bad.parse::<Fqid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn field_names() {
        for good in [
            "title",
            "a",
            "tag_ids",
            "group_$_ids",
            "group_$",
            "x1",
            "a$b_1",
        ] {
            assert!(is_valid_field_name(good), "{good}");
        }
        for bad in ["", "Title", "1a", "_a", "a$b$c", "a-b", "a$B"] {
            assert!(!is_valid_field_name(bad), "{bad}");
        }
        assert!(is_reserved_field("meta_position"));
        assert!(!is_reserved_field("metadata"));
    }
}
