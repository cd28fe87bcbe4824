//! Migrations (SPEC section 6): the [`Migration`] trait, the registry that
//! orders them, and its fingerprint.
//!
//! A migration takes the datastore from MI `n` to `n + 1`, one position at a
//! time. This module only describes migrations; running them (keyframes,
//! durability, fencing) is the worker's engine.

use std::sync::Arc;

use crate::datastore::{Event, Fqid, Model, Models};

/// What a migration can see while it migrates one position: the datastore as
/// it was just before that position, unmigrated (old, MI `n`) and already
/// migrated (new, MI `n + 1`).
pub struct MigrationContext<'a> {
    /// The position being migrated.
    pub position: u64,
    /// The MI this migration produces (`n + 1`).
    pub target_migration_index: u64,
    /// Models at MI `n` before this position.
    pub old: &'a Models,
    /// Models at MI `n + 1` before this position.
    pub new: &'a Models,
}

impl MigrationContext<'_> {
    /// The unmigrated model (MI `n`) as it was before this position.
    pub fn old_model(&self, fqid: &Fqid) -> Option<&Model> {
        self.old.get(fqid)
    }

    /// The migrated model (MI `n + 1`) as it was before this position.
    pub fn new_model(&self, fqid: &Fqid) -> Option<&Model> {
        self.new.get(fqid)
    }
}

/// A migration failed: the job ends with this as its `exception`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MigrationError(pub String);

/// One migration step, from MI `n` to `n + 1`.
pub trait Migration: Send + Sync {
    /// A stable, unique name (e.g. `0002_rename_title`).
    fn name(&self) -> &str;

    /// Everything that determines what the migration does, as text; part of
    /// the registry fingerprint, so change it whenever the behaviour changes.
    fn fingerprint_source(&self) -> String;

    /// Returns the replacement events of one position. `events` come creates
    /// first, then the rest in order. Empty events in the result are dropped
    /// by the caller.
    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError>;
}

/// The ordered list of migrations both binaries build at start.
#[derive(Clone, Default)]
pub struct Registry {
    migrations: Vec<Arc<dyn Migration>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.migrations.iter().map(|m| m.name().to_string()))
            .finish()
    }
}

impl Registry {
    /// A registry of `migrations`; entry `k` (0-based) has target MI `k + 2`.
    pub fn new(migrations: Vec<Arc<dyn Migration>>) -> Registry {
        Registry { migrations }
    }

    /// The target migration index: number of migrations + 1.
    pub fn target_migration_index(&self) -> u64 {
        self.migrations.len() as u64 + 1
    }

    /// The migration that produces MI `to` (from `to - 1`), if any.
    pub fn migration_to(&self, to: u64) -> Option<&dyn Migration> {
        let index = usize::try_from(to.checked_sub(2)?).ok()?;
        self.migrations.get(index).map(|m| m.as_ref())
    }

    /// The migrations in order.
    pub fn migrations(&self) -> &[Arc<dyn Migration>] {
        &self.migrations
    }
}
