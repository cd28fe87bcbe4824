//! The `MIGRATIONS_FILE` (SPEC section 6): reading, parsing, validating, and
//! [`RegistryError`], the one error type of building a registry.
//!
//! The file is parsed by hand from JSON values rather than with derived serde
//! types, so that every error names the file, the migration (index, name and
//! target MI), the op and the key at fault, in words an operator understands
//! at 3 a.m. Duplicate keys in a JSON object are refused too (serde_json
//! would silently keep the last one).
//!
//! Everything that can be checked without data is checked here, at start:
//! names, op kinds, keys, types, collection and field names, duplicate
//! migration names. What depends on the data (a `create` lacking a required
//! field) fails later, in the migration.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::declarative::{DeclarativeMigration, Op};
use super::{Migration, Registry};
use crate::datastore::{is_reserved_field, is_valid_collection, is_valid_field_name};

/// Why a registry could not be built. Printed by the binaries as
/// `MIGRATIONS_FILE: <error>` before exiting with code 2.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON (or repeats a key in an object).
    #[error("{}: invalid JSON: {source}", path.display())]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is well-formed but does not define valid migrations.
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where and what (boxed: errors are rare, results should stay small).
        error: Box<DefinitionError>,
    },
    /// The compiled-in registry (`builtin.rs`) is invalid: a developer error,
    /// caught at start and by the tests.
    #[error("compiled-in registry: {0}")]
    InvalidBuiltin(Box<DefinitionError>),
}

/// So that the binaries report a bad registry like any other bad setting:
/// `Registry::load(config.migrations_file.as_deref()).map_err(ConfigError::from)`
/// then [`crate::config::exit_with_config_error`] prints
/// `configuration error: MIGRATIONS_FILE: <error>` and exits with code 2.
impl From<RegistryError> for crate::config::ConfigError {
    fn from(error: RegistryError) -> Self {
        crate::config::ConfigError::new("MIGRATIONS_FILE", error.to_string())
    }
}

/// A problem in a migrations definition and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct DefinitionError {
    /// Where.
    pub location: Location,
    /// What is wrong.
    pub problem: Problem,
}

impl DefinitionError {
    /// A boxed error, as [`RegistryError`] holds it.
    pub fn boxed(location: Location, problem: Problem) -> Box<DefinitionError> {
        Box::new(DefinitionError { location, problem })
    }
}

/// Where in a migrations definition a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (its top-level object).
    TopLevel,
    /// One migration entry.
    Migration {
        /// 0-based index in the list.
        index: usize,
        /// Its name, when it has a valid one.
        name: Option<String>,
    },
    /// One op of a migration entry.
    Op {
        /// 0-based index of the migration in the list.
        migration: usize,
        /// The migration's name, when it has a valid one.
        name: Option<String>,
        /// 0-based index of the op in the migration's `ops`.
        op: usize,
        /// The op's kind (`rename_field`, ...), when known.
        kind: Option<String>,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let migration = |f: &mut fmt::Formatter<'_>, index: usize, name: &Option<String>| {
            let target = index + 2;
            match name {
                Some(name) => write!(f, "migration {index} (\"{name}\", target MI {target})"),
                None => write!(f, "migration {index} (target MI {target})"),
            }
        };
        match self {
            Location::TopLevel => f.write_str("top level"),
            Location::Migration { index, name } => migration(f, *index, name),
            Location::Op {
                migration: index,
                name,
                op,
                kind,
            } => {
                migration(f, *index, name)?;
                match kind {
                    Some(kind) => write!(f, ", op {op} ({kind})"),
                    None => write!(f, ", op {op}"),
                }
            }
        }
    }
}

/// What is wrong with a migrations definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A value has the wrong JSON type.
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        /// The quoted key (`"ops"`), or `the file`, `the migration`, `the op`.
        what: String,
        /// The expected type, with its article (`an array`).
        expected: &'static str,
        /// The JSON type found, with its article.
        found: &'static str,
    },
    /// A required key is missing.
    #[error("missing key \"{key}\"")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A key that this object does not take (often a typo).
    #[error("unknown key \"{key}\" (expected keys: {expected})")]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys this object takes.
        expected: String,
    },
    /// The `op` is none of the four.
    #[error(
        "unknown op \"{op}\" (known ops: rename_field, add_field, remove_fields, require_fields)"
    )]
    UnknownOp {
        /// The op as written.
        op: String,
    },
    /// A collection name does not match `^[a-z]([a-z_]*[a-z])?$`.
    #[error("\"{key}\": invalid collection name \"{value}\" (must match ^[a-z]([a-z_]*[a-z])?$)")]
    InvalidCollection {
        /// The key holding it.
        key: &'static str,
        /// The name.
        value: String,
    },
    /// A field name does not match `^[a-z][a-z0-9_]*(\$[a-z0-9_]*)?$`.
    #[error(
        "\"{key}\": invalid field name \"{value}\" (must match ^[a-z][a-z0-9_]*(\\$[a-z0-9_]*)?$)"
    )]
    InvalidField {
        /// The key holding it.
        key: &'static str,
        /// The name.
        value: String,
    },
    /// A field name with the reserved `meta_` prefix.
    #[error("\"{key}\": field name \"{value}\" is reserved (names starting with meta_ belong to the datastore)")]
    ReservedField {
        /// The key holding it.
        key: &'static str,
        /// The name.
        value: String,
    },
    /// A field is listed twice in one op.
    #[error("\"{key}\": field \"{value}\" is listed twice")]
    DuplicateField {
        /// The key holding the list.
        key: &'static str,
        /// The name.
        value: String,
    },
    /// An op's field list is empty (the op would do nothing: likely a mistake).
    #[error("\"{key}\" must list at least one field")]
    NoFields {
        /// The key holding the list.
        key: &'static str,
    },
    /// `rename_field` with `old` equal to `new`.
    #[error("\"old\" and \"new\" are the same field \"{value}\"")]
    RenameToItself {
        /// The name.
        value: String,
    },
    /// `add_field` with `default: null` (a stored model never holds null).
    #[error("\"default\" must not be null (a model never stores null fields)")]
    NullDefault,
    /// The migration's name is empty (or only whitespace).
    #[error("the migration name is empty")]
    EmptyName,
    /// The name has surrounding whitespace or control characters, which would
    /// garble output lines and make two names look alike.
    #[error("the migration name {value:?} has surrounding whitespace or control characters")]
    InvalidName {
        /// The name.
        value: String,
    },
    /// Two migrations share a name.
    #[error("duplicate migration name \"{name}\" (already used by migration {first})")]
    DuplicateName {
        /// The name.
        name: String,
        /// The index of its first use.
        first: usize,
    },
}

const TOP_KEYS: &[&str] = &["migrations"];
const MIGRATION_KEYS: &[&str] = &["name", "ops"];

/// Reads and parses the file at `path`.
pub(crate) fn load(path: &Path) -> Result<Registry, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of a `MIGRATIONS_FILE`; `path` only names it in errors.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Registry, RegistryError> {
    // Editors on Windows like to start UTF-8 files with a byte order mark,
    // which JSON parsers refuse; it carries no meaning, so skip it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let StrictValue(root) =
        serde_json::from_str(text).map_err(|source| RegistryError::InvalidJson {
            path: path.to_path_buf(),
            source,
        })?;
    let invalid = |location: Location, problem: Problem| RegistryError::Invalid {
        path: path.to_path_buf(),
        error: DefinitionError::boxed(location, problem),
    };
    let top = object(&root, "the file", TOP_KEYS).map_err(|p| invalid(Location::TopLevel, p))?;
    let entries = match required(top, "migrations").map_err(|p| invalid(Location::TopLevel, p))? {
        Value::Array(entries) => entries,
        other => {
            return Err(invalid(
                Location::TopLevel,
                wrong_type("migrations", "an array", other),
            ))
        }
    };
    let mut migrations: Vec<Arc<dyn Migration>> = Vec::with_capacity(entries.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let (name, ops) = parse_migration(index, entry).map_err(|(l, p)| invalid(l, p))?;
        if let Some(&first) = names.get(&name) {
            let location = Location::Migration {
                index,
                name: Some(name.clone()),
            };
            return Err(invalid(location, Problem::DuplicateName { name, first }));
        }
        names.insert(name.clone(), index);
        migrations.push(Arc::new(DeclarativeMigration::new(name, ops)));
    }
    Ok(Registry::new(migrations))
}

fn parse_migration(index: usize, entry: &Value) -> Result<(String, Vec<Op>), (Location, Problem)> {
    let mut location = Location::Migration { index, name: None };
    let fields =
        object(entry, "the migration", MIGRATION_KEYS).map_err(|p| (location.clone(), p))?;
    let name = string(required(fields, "name"), "name").map_err(|p| (location.clone(), p))?;
    check_name(name).map_err(|p| (location.clone(), p))?;
    location = Location::Migration {
        index,
        name: Some(name.to_string()),
    };
    let ops = match required(fields, "ops").map_err(|p| (location.clone(), p))? {
        Value::Array(ops) => ops,
        other => return Err((location, wrong_type("ops", "an array", other))),
    };
    let ops = ops
        .iter()
        .enumerate()
        .map(|(op_index, op)| {
            parse_op(op).map_err(|(kind, problem)| {
                let location = Location::Op {
                    migration: index,
                    name: Some(name.to_string()),
                    op: op_index,
                    kind,
                };
                (location, problem)
            })
        })
        .collect::<Result<Vec<Op>, _>>()?;
    Ok((name.to_string(), ops))
}

/// Checks a migration name; shared with the compiled-in registry.
pub(crate) fn check_name(name: &str) -> Result<(), Problem> {
    if name.trim().is_empty() {
        return Err(Problem::EmptyName);
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(Problem::InvalidName {
            value: name.to_string(),
        });
    }
    Ok(())
}

/// Parses one op; the error carries the op's kind once it is known.
fn parse_op(value: &Value) -> Result<Op, (Option<String>, Problem)> {
    let no_kind = |problem| (None, problem);
    let fields = match value {
        Value::Object(fields) => fields,
        other => return Err(no_kind(wrong_shape("the op", "an object", other))),
    };
    let kind = string(required(fields, "op"), "op").map_err(no_kind)?;
    let expected: &[&str] = match kind {
        "rename_field" => &["op", "collection", "old", "new"],
        "add_field" => &["op", "collection", "field", "default"],
        "remove_fields" | "require_fields" => &["op", "collection", "fields"],
        other => {
            return Err(no_kind(Problem::UnknownOp {
                op: other.to_string(),
            }))
        }
    };
    let with_kind = |problem| (Some(kind.to_string()), problem);
    check_keys(fields, expected).map_err(with_kind)?;
    let collection = collection(fields).map_err(with_kind)?;
    let op = match kind {
        "rename_field" => {
            let old = field_name(required(fields, "old"), "old").map_err(with_kind)?;
            let new = field_name(required(fields, "new"), "new").map_err(with_kind)?;
            if old == new {
                return Err(with_kind(Problem::RenameToItself { value: old }));
            }
            Op::RenameField {
                collection,
                old,
                new,
            }
        }
        "add_field" => {
            let field = field_name(required(fields, "field"), "field").map_err(with_kind)?;
            let default = required(fields, "default").map_err(with_kind)?;
            if default.is_null() {
                return Err(with_kind(Problem::NullDefault));
            }
            Op::AddField {
                collection,
                field,
                default: default.clone(),
            }
        }
        _ => {
            let names = field_list(required(fields, "fields")).map_err(with_kind)?;
            if kind == "remove_fields" {
                Op::RemoveFields {
                    collection,
                    fields: names,
                }
            } else {
                Op::RequireFields {
                    collection,
                    fields: names,
                }
            }
        }
    };
    Ok(op)
}

fn collection(fields: &Map<String, Value>) -> Result<String, Problem> {
    let value = string(required(fields, "collection"), "collection")?;
    if !is_valid_collection(value) {
        return Err(Problem::InvalidCollection {
            key: "collection",
            value: value.to_string(),
        });
    }
    Ok(value.to_string())
}

fn field_name(value: Result<&Value, Problem>, key: &'static str) -> Result<String, Problem> {
    let value = string(value, key)?;
    check_field_name(value, key)?;
    Ok(value.to_string())
}

fn check_field_name(value: &str, key: &'static str) -> Result<(), Problem> {
    if !is_valid_field_name(value) {
        return Err(Problem::InvalidField {
            key,
            value: value.to_string(),
        });
    }
    if is_reserved_field(value) {
        return Err(Problem::ReservedField {
            key,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn field_list(value: Result<&Value, Problem>) -> Result<Vec<String>, Problem> {
    const KEY: &str = "fields";
    let items = match value? {
        Value::Array(items) => items,
        other => return Err(wrong_type(KEY, "an array of field names", other)),
    };
    if items.is_empty() {
        return Err(Problem::NoFields { key: KEY });
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(wrong_type(KEY, "an array of field names", item));
        };
        check_field_name(name, KEY)?;
        if names.contains(name) {
            return Err(Problem::DuplicateField {
                key: KEY,
                value: name.clone(),
            });
        }
        names.push(name.clone());
    }
    Ok(names)
}

/// `value` (described as `what`) as an object that has no keys but `expected`.
fn object<'a>(
    value: &'a Value,
    what: &str,
    expected: &[&str],
) -> Result<&'a Map<String, Value>, Problem> {
    match value {
        Value::Object(fields) => {
            check_keys(fields, expected)?;
            Ok(fields)
        }
        other => Err(wrong_shape(what, "an object", other)),
    }
}

fn check_keys(fields: &Map<String, Value>, expected: &[&str]) -> Result<(), Problem> {
    // Sorted, so that the reported key does not depend on map ordering.
    let mut unknown: Vec<&String> = fields
        .keys()
        .filter(|key| !expected.contains(&key.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(key) => Err(Problem::UnknownKey {
            key: key.to_string(),
            expected: expected.join(", "),
        }),
        None => Ok(()),
    }
}

fn required<'a>(fields: &'a Map<String, Value>, key: &'static str) -> Result<&'a Value, Problem> {
    fields.get(key).ok_or(Problem::MissingKey { key })
}

fn string<'a>(value: Result<&'a Value, Problem>, key: &str) -> Result<&'a str, Problem> {
    match value? {
        Value::String(text) => Ok(text),
        other => Err(wrong_type(key, "a string", other)),
    }
}

/// The value of `key` has the wrong type.
fn wrong_type(key: &str, expected: &'static str, found: &Value) -> Problem {
    wrong_shape(&format!("\"{key}\""), expected, found)
}

/// `what` (a described value, e.g. `the op`) has the wrong type.
fn wrong_shape(what: &str, expected: &'static str, found: &Value) -> Problem {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Problem::WrongType {
        what: what.to_string(),
        expected,
        found,
    }
}

/// A JSON value parsed with duplicate object keys refused.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StrictValue, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        // JSON text cannot hold NaN or infinities, so this never becomes null.
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(StrictValue(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path() -> &'static Path {
        Path::new("/etc/migrations.json")
    }

    fn parse_value(value: Value) -> Result<Registry, RegistryError> {
        parse(path(), &value.to_string())
    }

    /// The error message of parsing `value`, which must be invalid.
    fn error(value: Value) -> String {
        parse_value(value).unwrap_err().to_string()
    }

    /// The problem and location of parsing `value`, which must be invalid.
    fn invalid(value: Value) -> (Location, Problem) {
        match parse_value(value).unwrap_err() {
            RegistryError::Invalid { path: p, error } => {
                assert_eq!(p, path());
                (error.location, error.problem)
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// A file with one migration named `0002_m` holding `op`.
    fn with_op(op: Value) -> Value {
        json!({"migrations": [{"name": "0002_m", "ops": [op]}]})
    }

    fn op_location(kind: Option<&str>) -> Location {
        Location::Op {
            migration: 0,
            name: Some("0002_m".into()),
            op: 0,
            kind: kind.map(str::to_string),
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let registry = parse_value(json!({"migrations": [
            {"name": "0002_rename_title", "ops": [
                {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
            {"name": "0003_defaults", "ops": [
                {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
                {"op": "remove_fields", "collection": "motion", "fields": ["legacy"]}]},
            {"name": "0004_check", "ops": [
                {"op": "require_fields", "collection": "motion", "fields": ["name"]}]}
        ]}))
        .unwrap();
        assert_eq!(registry.target_migration_index(), 4);
        assert_eq!(
            registry.migration_to(2).unwrap().name(),
            "0002_rename_title"
        );
        assert_eq!(registry.migration_to(4).unwrap().name(), "0004_check");
        assert!(registry.migration_to(5).is_none());
        assert!(registry.migration_to(1).is_none());
        let expected = Registry::new(vec![
            Arc::new(DeclarativeMigration::new(
                "0002_rename_title",
                vec![Op::RenameField {
                    collection: "motion".into(),
                    old: "title".into(),
                    new: "name".into(),
                }],
            )),
            Arc::new(DeclarativeMigration::new(
                "0003_defaults",
                vec![
                    Op::AddField {
                        collection: "motion".into(),
                        field: "weight".into(),
                        default: json!(0),
                    },
                    Op::RemoveFields {
                        collection: "motion".into(),
                        fields: vec!["legacy".into()],
                    },
                ],
            )),
            Arc::new(DeclarativeMigration::new(
                "0004_check",
                vec![Op::RequireFields {
                    collection: "motion".into(),
                    fields: vec!["name".into()],
                }],
            )),
        ]);
        // The file and the same ops built in Rust are the same registry.
        assert_eq!(registry.fingerprint(), expected.fingerprint());
    }

    #[test]
    fn converts_into_a_config_error_naming_the_variable() {
        let error = parse(path(), "[]").unwrap_err();
        let config_error = crate::config::ConfigError::from(error);
        assert_eq!(
            config_error.to_string(),
            "MIGRATIONS_FILE: /etc/migrations.json: top level: the file must be an object, found an array"
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let registry = parse(
            path(),
            "\u{feff}{\"migrations\": [{\"name\": \"a\", \"ops\": []}]}",
        )
        .unwrap();
        assert_eq!(registry.target_migration_index(), 2);
    }

    #[test]
    fn empty_list_and_empty_ops_are_valid() {
        let registry = parse_value(json!({"migrations": []})).unwrap();
        assert_eq!(registry.target_migration_index(), 1);
        // A migration without ops only raises the MI (e.g. to mark a release).
        let registry =
            parse_value(json!({"migrations": [{"name": "0002_bump", "ops": []}]})).unwrap();
        assert_eq!(registry.target_migration_index(), 2);
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let error = load(&missing).unwrap_err();
        assert!(matches!(error, RegistryError::Unreadable { .. }));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", missing.display())),
            "{message}"
        );
        // A directory is unreadable as a file too.
        let error = load(dir.path()).unwrap_err();
        assert!(matches!(error, RegistryError::Unreadable { .. }), "{error}");
        // So is a file that is not UTF-8 (JSON text always is).
        let latin1 = dir.path().join("latin1.json");
        std::fs::write(
            &latin1,
            b"{\"migrations\": [{\"name\": \"caf\xe9\", \"ops\": []}]}",
        )
        .unwrap();
        let error = load(&latin1).unwrap_err();
        assert!(matches!(error, RegistryError::Unreadable { .. }), "{error}");
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }

    #[test]
    fn invalid_json() {
        for text in [
            "",
            "{",
            "{\"migrations\": [}",
            "not json",
            "{\"migrations\": []} x",
        ] {
            let error = parse(path(), text).unwrap_err();
            assert!(
                matches!(error, RegistryError::InvalidJson { .. }),
                "{text}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("/etc/migrations.json: invalid JSON: "),
                "{error}"
            );
        }
        let error = parse(path(), "{\"migrations\": [], \"migrations\": []}").unwrap_err();
        assert!(matches!(error, RegistryError::InvalidJson { .. }));
        assert!(
            error.to_string().contains("duplicate key \"migrations\""),
            "{error}"
        );
        // Duplicate keys are found at any depth.
        let text = r#"{"migrations": [{"name": "a", "ops": [
            {"op": "add_field", "collection": "motion", "field": "w", "default": 0, "field": "x"}]}]}"#;
        let error = parse(path(), text).unwrap_err();
        assert!(
            error.to_string().contains("duplicate key \"field\""),
            "{error}"
        );
        // ...but nested objects in a default may repeat keys of their parents.
        let text = r#"{"migrations": [{"name": "a", "ops": [
            {"op": "add_field", "collection": "motion", "field": "w", "default": {"op": 1, "a": {"a": 2}}}]}]}"#;
        parse(path(), text).unwrap();
    }

    #[test]
    fn top_level_errors() {
        assert_eq!(
            invalid(json!([])),
            (
                Location::TopLevel,
                Problem::WrongType {
                    what: "the file".into(),
                    expected: "an object",
                    found: "an array"
                }
            )
        );
        assert_eq!(
            invalid(json!({})),
            (
                Location::TopLevel,
                Problem::MissingKey { key: "migrations" }
            )
        );
        assert_eq!(
            error(json!({"migrations": [], "version": 1})),
            "/etc/migrations.json: top level: unknown key \"version\" (expected keys: migrations)"
        );
        assert_eq!(
            error(json!({"migrations": {"name": "a"}})),
            "/etc/migrations.json: top level: \"migrations\" must be an array, found an object"
        );
    }

    #[test]
    fn migration_entry_errors() {
        let at = |index: usize, name: Option<&str>| Location::Migration {
            index,
            name: name.map(str::to_string),
        };
        let ok = json!({"name": "0002_ok", "ops": []});
        let cases = [
            (
                json!("x"),
                at(1, None),
                shape("the migration", "an object", "a string"),
            ),
            (
                json!({"ops": []}),
                at(1, None),
                Problem::MissingKey { key: "name" },
            ),
            (
                json!({"name": "a"}),
                at(1, Some("a")),
                Problem::MissingKey { key: "ops" },
            ),
            (
                json!({"name": 3, "ops": []}),
                at(1, None),
                wrong("name", "a string", "a number"),
            ),
            (
                json!({"name": "", "ops": []}),
                at(1, None),
                Problem::EmptyName,
            ),
            (
                json!({"name": "  ", "ops": []}),
                at(1, None),
                Problem::EmptyName,
            ),
            (
                json!({"name": " a", "ops": []}),
                at(1, None),
                Problem::InvalidName { value: " a".into() },
            ),
            (
                json!({"name": "a\nb", "ops": []}),
                at(1, None),
                Problem::InvalidName {
                    value: "a\nb".into(),
                },
            ),
            (
                json!({"name": "a", "ops": {}}),
                at(1, Some("a")),
                wrong("ops", "an array", "an object"),
            ),
            (
                json!({"name": "a", "ops": [], "note": "x"}),
                at(1, None),
                Problem::UnknownKey {
                    key: "note".into(),
                    expected: "name, ops".into(),
                },
            ),
            (
                json!({"name": "0002_ok", "ops": []}),
                at(1, Some("0002_ok")),
                Problem::DuplicateName {
                    name: "0002_ok".into(),
                    first: 0,
                },
            ),
        ];
        for (entry, location, problem) in cases {
            let file = json!({"migrations": [ok.clone(), entry.clone()]});
            assert_eq!(invalid(file), (location, problem), "{entry}");
        }
        assert_eq!(
            error(json!({"migrations": [ok.clone(), {"name": "0002_ok", "ops": []}]})),
            "/etc/migrations.json: migration 1 (\"0002_ok\", target MI 3): duplicate migration name \"0002_ok\" (already used by migration 0)"
        );
        assert_eq!(
            error(json!({"migrations": [ok, {"name": "", "ops": []}]})),
            "/etc/migrations.json: migration 1 (target MI 3): the migration name is empty"
        );
    }

    fn wrong(key: &str, expected: &'static str, found: &'static str) -> Problem {
        shape(&format!("\"{key}\""), expected, found)
    }

    fn shape(what: &str, expected: &'static str, found: &'static str) -> Problem {
        Problem::WrongType {
            what: what.into(),
            expected,
            found,
        }
    }

    #[test]
    fn op_errors() {
        let rename = |collection: Value, old: Value, new: Value| json!({"op": "rename_field", "collection": collection, "old": old, "new": new});
        let kind = Some("rename_field");
        let cases = [
            (json!(1), None, shape("the op", "an object", "a number")),
            (
                json!({"collection": "motion"}),
                None,
                Problem::MissingKey { key: "op" },
            ),
            (json!({"op": 1}), None, wrong("op", "a string", "a number")),
            (
                json!({"op": "rename_fields", "collection": "motion"}),
                None,
                Problem::UnknownOp {
                    op: "rename_fields".into(),
                },
            ),
            (
                json!({"op": "rename_field", "collection": "motion", "old": "a", "new": "b", "to": "c"}),
                kind,
                Problem::UnknownKey {
                    key: "to".into(),
                    expected: "op, collection, old, new".into(),
                },
            ),
            (
                json!({"op": "rename_field", "collection": "motion", "old": "a"}),
                kind,
                Problem::MissingKey { key: "new" },
            ),
            (
                json!({"op": "rename_field", "old": "a", "new": "b"}),
                kind,
                Problem::MissingKey { key: "collection" },
            ),
            (
                rename(json!(["motion"]), json!("a"), json!("b")),
                kind,
                wrong("collection", "a string", "an array"),
            ),
            (
                rename(json!("Motion"), json!("a"), json!("b")),
                kind,
                Problem::InvalidCollection {
                    key: "collection",
                    value: "Motion".into(),
                },
            ),
            (
                rename(json!("motion_"), json!("a"), json!("b")),
                kind,
                Problem::InvalidCollection {
                    key: "collection",
                    value: "motion_".into(),
                },
            ),
            (
                rename(json!("motion"), json!("a"), json!("B")),
                kind,
                Problem::InvalidField {
                    key: "new",
                    value: "B".into(),
                },
            ),
            (
                rename(json!("motion"), json!("a$b$c"), json!("b")),
                kind,
                Problem::InvalidField {
                    key: "old",
                    value: "a$b$c".into(),
                },
            ),
            (
                rename(json!("motion"), json!("a"), json!("meta_position")),
                kind,
                Problem::ReservedField {
                    key: "new",
                    value: "meta_position".into(),
                },
            ),
            (
                rename(json!("motion"), json!(null), json!("b")),
                kind,
                wrong("old", "a string", "null"),
            ),
            (
                rename(json!("motion"), json!("a"), json!("a")),
                kind,
                Problem::RenameToItself { value: "a".into() },
            ),
            (
                json!({"op": "add_field", "collection": "motion", "field": "w"}),
                Some("add_field"),
                Problem::MissingKey { key: "default" },
            ),
            (
                json!({"op": "add_field", "collection": "motion", "field": "w", "default": null}),
                Some("add_field"),
                Problem::NullDefault,
            ),
            (
                json!({"op": "add_field", "collection": "motion", "field": "meta_x", "default": 1}),
                Some("add_field"),
                Problem::ReservedField {
                    key: "field",
                    value: "meta_x".into(),
                },
            ),
            (
                json!({"op": "add_field", "collection": "motion", "fields": ["w"], "default": 1}),
                Some("add_field"),
                Problem::UnknownKey {
                    key: "fields".into(),
                    expected: "op, collection, field, default".into(),
                },
            ),
            (
                json!({"op": "remove_fields", "collection": "motion", "fields": "legacy"}),
                Some("remove_fields"),
                wrong("fields", "an array of field names", "a string"),
            ),
            (
                json!({"op": "remove_fields", "collection": "motion", "fields": ["a", 1]}),
                Some("remove_fields"),
                wrong("fields", "an array of field names", "a number"),
            ),
            (
                json!({"op": "remove_fields", "collection": "motion", "fields": []}),
                Some("remove_fields"),
                Problem::NoFields { key: "fields" },
            ),
            (
                json!({"op": "require_fields", "collection": "motion", "fields": ["a", "b", "a"]}),
                Some("require_fields"),
                Problem::DuplicateField {
                    key: "fields",
                    value: "a".into(),
                },
            ),
            (
                json!({"op": "require_fields", "collection": "motion", "fields": ["ok", "Bad"]}),
                Some("require_fields"),
                Problem::InvalidField {
                    key: "fields",
                    value: "Bad".into(),
                },
            ),
            (
                json!({"op": "require_fields", "collection": "motion", "fields": ["meta_deleted"]}),
                Some("require_fields"),
                Problem::ReservedField {
                    key: "fields",
                    value: "meta_deleted".into(),
                },
            ),
            (
                json!({"op": "require_fields", "collection": "motion"}),
                Some("require_fields"),
                Problem::MissingKey { key: "fields" },
            ),
        ];
        for (op, kind, problem) in cases {
            assert_eq!(
                invalid(with_op(op.clone())),
                (op_location(kind), problem),
                "{op}"
            );
        }
    }

    #[test]
    fn op_error_message_names_file_migration_and_op() {
        let file = json!({"migrations": [
            {"name": "0002_a", "ops": []},
            {"name": "0003_defaults", "ops": [
                {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
                {"op": "remove_fields", "collection": "motion", "fields": ["legacy"], "collection_name": "x"}
            ]}
        ]});
        assert_eq!(
            error(file),
            "/etc/migrations.json: migration 1 (\"0003_defaults\", target MI 3), op 1 (remove_fields): unknown key \"collection_name\" (expected keys: op, collection, fields)"
        );
        assert_eq!(
            error(with_op(json!({"op": "drop_table", "collection": "motion"}))),
            "/etc/migrations.json: migration 0 (\"0002_m\", target MI 2), op 0: unknown op \"drop_table\" (known ops: rename_field, add_field, remove_fields, require_fields)"
        );
        assert_eq!(
            error(with_op(json!({"op": "rename_field", "collection": "motion", "old": "a", "new": "meta_b"}))),
            "/etc/migrations.json: migration 0 (\"0002_m\", target MI 2), op 0 (rename_field): \"new\": field name \"meta_b\" is reserved (names starting with meta_ belong to the datastore)"
        );
    }

    #[test]
    fn template_field_names_are_valid() {
        parse_value(with_op(json!({"op": "rename_field", "collection": "user",
            "old": "group_$_ids", "new": "meeting_$_group_ids"})))
        .unwrap();
    }
}
