//! The compiled-in registry: the migrations both binaries run when
//! `MIGRATIONS_FILE` is unset.
//!
//! To add a Rust migration (see `docs/migrations.md`, "Adding a Rust
//! migration"): implement [`Migration`] in a new module under
//! `shared/src/migrations/` (or build a [`super::DeclarativeMigration`]), and
//! append it to the list in [`migrations`]. Never reorder, rename or remove an
//! entry that was ever deployed: entry `k` produces MI `k + 2`, and stored
//! positions carry that number.
//!
//! The list is checked at start like a file (non-empty, unique names), so a
//! copy-paste slip stops the binaries with a clear message instead of
//! producing a registry the fingerprint check would later trip over.

use std::collections::HashMap;
use std::sync::Arc;

use super::file::{check_name, DefinitionError, Location, Problem, RegistryError};
use super::{Migration, Registry};

/// The compiled-in migrations, in order: entry `k` produces MI `k + 2`.
///
/// Empty for now: the product ships without migrations of its own; operators
/// describe theirs in a `MIGRATIONS_FILE`.
pub fn migrations() -> Vec<Arc<dyn Migration>> {
    vec![
        // Append new migrations here, e.g.:
        // Arc::new(super::my_migration::MyMigration),
    ]
}

/// The compiled-in registry, validated.
pub fn registry() -> Result<Registry, RegistryError> {
    validated(migrations())
}

/// A registry of `migrations` after checking their names as a file's are
/// checked (not empty, no surrounding whitespace or control characters,
/// unique).
pub fn validated(migrations: Vec<Arc<dyn Migration>>) -> Result<Registry, RegistryError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, migration) in migrations.iter().enumerate() {
        let name = migration.name();
        let location = || Location::Migration {
            index,
            name: Some(name.to_string()),
        };
        check_name(name).map_err(|problem| {
            RegistryError::InvalidBuiltin(DefinitionError::boxed(
                Location::Migration { index, name: None },
                problem,
            ))
        })?;
        if let Some(&first) = seen.get(name) {
            return Err(RegistryError::InvalidBuiltin(DefinitionError::boxed(
                location(),
                Problem::DuplicateName {
                    name: name.to_string(),
                    first,
                },
            )));
        }
        seen.insert(name, index);
    }
    Ok(Registry::new(migrations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::examples::{DropCollection, SplitOffUpdate};
    use crate::migrations::DeclarativeMigration;

    #[test]
    fn the_compiled_in_registry_is_valid() {
        let registry = Registry::load(None).unwrap();
        assert_eq!(
            registry.target_migration_index(),
            migrations().len() as u64 + 1
        );
        assert_eq!(
            registry.fingerprint(),
            Registry::new(migrations()).fingerprint()
        );
    }

    #[test]
    fn duplicate_and_empty_names_are_refused() {
        let error = validated(vec![
            Arc::new(DropCollection::new("0002_a", "topic")),
            Arc::new(SplitOffUpdate::new("0003_b", "motion", "text")),
            Arc::new(DeclarativeMigration::new("0002_a", vec![])),
        ])
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "compiled-in registry: migration 2 (\"0002_a\", target MI 4): duplicate migration name \"0002_a\" (already used by migration 0)"
        );
        let error = validated(vec![Arc::new(DeclarativeMigration::new("", vec![]))]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "compiled-in registry: migration 0 (target MI 2): the migration name is empty"
        );
        let registry = validated(vec![
            Arc::new(DropCollection::new("0002_a", "topic")),
            Arc::new(SplitOffUpdate::new("0003_b", "motion", "text")),
        ])
        .unwrap();
        assert_eq!(registry.target_migration_index(), 3);
    }
}
