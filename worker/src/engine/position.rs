//! Migrating one position: the pure, in-memory core of `migrate`.
//!
//! Given a position's live events at its source MI, runs every migration from
//! the source MI to the target (MI-first: this position reaches the target
//! before the next one starts), then advances the keyframe of every MI with
//! the position's events at that MI. Touches no Redis; the caller batches and
//! persists.

use migration_shared::datastore::{creates_first, Event};
use migration_shared::migrations::{MigrationContext, Registry};

use super::keyframes::Keyframes;

/// One migrated position, ready for a checkpoint.
pub(crate) struct MigratedPosition {
    /// The events at the target MI, as stored JSON (the live JSON itself when
    /// no migration changed them, so unchanged positions are never
    /// re-serialised).
    pub(crate) json: String,
    /// How many events that is.
    pub(crate) events: u64,
    /// How many live events the position had.
    pub(crate) source_events: u64,
}

/// Why a position could not be migrated: the message becomes the job's
/// `exception` and the last output line, so it names the position and, when
/// a migration is at fault, the migration.
pub(crate) type PositionError = String;

/// Migrates `position` from `source_mi` to the registry's target and advances
/// the keyframes.
pub(crate) fn migrate_position(
    registry: &Registry,
    keyframes: &mut Keyframes,
    position: u64,
    source_mi: u64,
    source_json: String,
) -> Result<MigratedPosition, PositionError> {
    let target = registry.target_migration_index();
    let source: Vec<Event> = serde_json::from_str(&source_json).map_err(|err| {
        format!("Position {position}: its stored events are not valid JSON events: {err}")
    })?;
    keyframes.ensure_range(source_mi, target);

    // Events at each MI from source_mi to target; all computed against the
    // keyframes *before* this position, then applied.
    let mut by_mi: Vec<Vec<Event>> = Vec::with_capacity((target - source_mi + 1) as usize);
    for mi in source_mi..target {
        let migration = registry
            .migration_to(mi + 1)
            .ok_or_else(|| format!("the registry has no migration to MI {}", mi + 1))?;
        let input = creates_first(by_mi.last().unwrap_or(&source).clone());
        let context = MigrationContext {
            position,
            target_migration_index: mi + 1,
            old: keyframes.at(mi),
            new: keyframes.at(mi + 1),
        };
        let mut output = migration.migrate(&context, input).map_err(|err| {
            format!(
                "Migration {} (MI {mi} -> {}) failed at position {position}: {err}",
                migration.name(),
                mi + 1
            )
        })?;
        output.retain(|event| !event.is_empty());
        by_mi.push(output);
    }

    for (index, event) in source.iter().enumerate() {
        keyframes
            .apply(source_mi, event, position)
            .map_err(|err| {
                format!(
                    "Position {position}: its event {} ({} {}) cannot be applied at MI {source_mi}: {err}",
                    index + 1,
                    event.type_name(),
                    event.fqid()
                )
            })?;
    }
    for (offset, events) in by_mi.iter().enumerate() {
        let mi = source_mi + 1 + offset as u64;
        for event in events {
            keyframes.apply(mi, event, position).map_err(|err| {
                let name = registry.migration_to(mi).map_or("?", |m| m.name());
                format!(
                    "Migration {name} (MI {} -> {mi}) failed at position {position}: its event {} {} cannot be applied: {err}",
                    mi - 1,
                    event.type_name(),
                    event.fqid()
                )
            })?;
        }
    }

    let source_events = source.len() as u64;
    let (json, events) = match by_mi.pop() {
        Some(migrated) if migrated != source => {
            let json = serde_json::to_string(&migrated)
                .map_err(|err| format!("Position {position}: cannot serialise events: {err}"))?;
            (json, migrated.len() as u64)
        }
        _ => (source_json, source_events),
    };
    Ok(MigratedPosition {
        json,
        events,
        source_events,
    })
}
