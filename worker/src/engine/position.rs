//! Migrating one position: the pure, in-memory core of `migrate`.
//!
//! Given a position's live events at its source MI, runs every migration from
//! the source MI to the target (MI-first: this position reaches the target
//! before the next one starts), then advances the keyframe of every MI with
//! the position's events at that MI. Touches no Redis; the caller batches and
//! persists.

use std::sync::LazyLock;

use migration_shared::datastore::{Event, Models};
use migration_shared::migrations::{MigrationContext, MigrationError, Registry};

use super::keyframes::Keyframes;
use super::store::EventsJson;

/// One migrated position, ready for a checkpoint.
pub(crate) struct MigratedPosition {
    /// The events at the target MI (the live JSON itself when no migration
    /// changed them, so unchanged positions are never re-serialised).
    pub(crate) events_json: EventsJson,
    /// How many events that is.
    pub(crate) events: u64,
    /// How many live events the position had.
    pub(crate) source_events: u64,
    /// The events of the other MIs, no longer needed: freeing them is left
    /// to the checkpoint task, off the migrating thread.
    pub(crate) garbage: Vec<Vec<Event>>,
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
    source: Result<Vec<Event>, String>,
) -> Result<MigratedPosition, PositionError> {
    let target = registry.target_migration_index();
    let source = source?;
    keyframes.ensure_range(source_mi, target);

    // Events at each MI from source_mi to target; all computed against the
    // keyframes *before* this position, then applied.
    let mut by_mi: Vec<Vec<Event>> = Vec::with_capacity((target - source_mi + 1) as usize);
    let mut steps_changed = 0;
    for mi in source_mi..target {
        let context = MigrationContext {
            position,
            target_migration_index: mi + 1,
            old: keyframes.at(mi),
            new: keyframes.at(mi + 1),
        };
        let input = by_mi.last().unwrap_or(&source);
        // Orders creates first, drops empty events, checks storability.
        let migrated = registry
            .migrate_position_from(&context, input)
            .map_err(|err| named(registry, &context, err.to_string()))?;
        steps_changed += usize::from(migrated.changed);
        by_mi.push(migrated.events);
    }

    for (index, event) in source.iter().enumerate() {
        keyframes
            .apply(source_mi, event, position)
            .map_err(|err| {
                format!(
                    "position {position}: its stored event {} ({} {}) cannot be applied at MI {source_mi}: {err}",
                    index + 1,
                    event.type_name(),
                    event.fqid()
                )
            })?;
    }
    for (offset, events) in by_mi.iter().enumerate() {
        let mi = source_mi + 1 + offset as u64;
        for event in events {
            keyframes
                .apply(mi, event, position)
                .map_err(|err| not_applicable(registry, position, mi, event, err))?;
        }
    }

    let source_events = source.len() as u64;
    // Every step's input is kept here anyway: the live events are compared
    // only when a later step may have undone an earlier step's change.
    let changed = match steps_changed {
        0 => false,
        1 => true,
        _ if registry.changes_are_final(source_mi) => true,
        _ => by_mi.last() != Some(&source),
    };
    let (events_json, events) = match by_mi.pop() {
        Some(migrated) if changed => {
            let count = migrated.len() as u64;
            (EventsJson::Events(migrated), count)
        }
        unchanged => {
            by_mi.extend(unchanged);
            (EventsJson::Raw(source_json), source_events)
        }
    };
    by_mi.push(source);
    Ok(MigratedPosition {
        events_json,
        events,
        source_events,
        garbage: by_mi,
    })
}

/// A position migrated without the context, ready for the fold into the
/// target keyframe ([`super::target_keyframe::TargetKeyframe::fold`]).
pub(crate) struct BlindPosition {
    pub(crate) position: u64,
    /// The live MI it was migrated from.
    pub(crate) source_mi: u64,
    /// The events to store, as JSON (the live JSON when unchanged).
    pub(crate) events_json: String,
    /// How many events that is.
    pub(crate) events: u64,
    /// How many live events the position had.
    pub(crate) source_events: u64,
    /// The events at the target, to apply to the target keyframe.
    pub(crate) fold: Vec<Event>,
}

/// Migrates one position for registries whose migrations never read the
/// context ([`Registry::reads_context`]): the migrations see empty `old`
/// and `new`, and each step consumes the previous step's output. Needs no
/// keyframe, so the positions of a batch are migrated (and their changed
/// events serialised) in parallel; the fold into the target keyframe is
/// the caller's. The target keyframe is the same as on the general path
/// (it is the replay of the migrated events alone); the lower ones are
/// neither kept nor stored.
pub(crate) fn migrate_position_blind(
    registry: &Registry,
    position: u64,
    source_mi: u64,
    source_json: String,
    source: Vec<Event>,
) -> Result<BlindPosition, PositionError> {
    let target = registry.target_migration_index();
    let source_events = source.len() as u64;
    // Each step says whether it changed the events, so an unchanged
    // position (stored as its live JSON) needs no copy of them. Only when a
    // later step may undo an earlier one's change (a migration that does
    // not track its changes, or two that change the same field) is a copy
    // kept, to compare.
    let copy =
        (target - source_mi >= 2 && !registry.changes_are_final(source_mi)).then(|| source.clone());
    let mut events = source;
    let mut steps_changed = 0;
    for mi in source_mi..target {
        let context = MigrationContext {
            position,
            target_migration_index: mi + 1,
            old: &EMPTY,
            new: &EMPTY,
        };
        let migrated = registry
            .migrate_position(&context, events)
            .map_err(|err| named(registry, &context, err.to_string()))?;
        steps_changed += usize::from(migrated.changed);
        events = migrated.events;
    }
    let changed = match (steps_changed, &copy) {
        (0, _) => false,
        (1, _) | (_, None) => true,
        (_, Some(source)) => events != *source,
    };
    let events_json = if changed {
        serde_json::to_string(&events).map_err(|err| {
            format!("position {position}: cannot serialise its migrated events: {err}")
        })?
    } else {
        source_json
    };
    Ok(BlindPosition {
        position,
        source_mi,
        events_json,
        events: events.len() as u64,
        source_events,
        fold: events,
    })
}

static EMPTY: LazyLock<Models> = LazyLock::new(Models::new);

/// The error in the one shape every migration exception takes
/// (`migration '<name>' (to MI <n>) failed at position <p>: <detail>`, see
/// [`MigrationError::at`]); messages a migration already built that way are
/// kept as they are.
/// A migrated event at MI `mi` that does not fit the keyframe: the fault of
/// the migration that produced MI `mi`, named as such.
pub(crate) fn not_applicable(
    registry: &Registry,
    position: u64,
    mi: u64,
    event: &Event,
    err: impl std::fmt::Display,
) -> PositionError {
    let context = MigrationContext {
        position,
        target_migration_index: mi,
        old: &EMPTY,
        new: &EMPTY,
    };
    named(
        registry,
        &context,
        format!(
            "its event {} {} cannot be applied: {err}",
            event.type_name(),
            event.fqid()
        ),
    )
}

fn named(registry: &Registry, context: &MigrationContext<'_>, detail: String) -> PositionError {
    let name = registry
        .migration_to(context.target_migration_index)
        .map_or("?", |migration| migration.name());
    if detail.starts_with(&format!("migration '{name}' ")) {
        detail
    } else {
        MigrationError::at(name, context, detail).0
    }
}
