//! The resume plan: where a `migrate` run starts and with which keyframes.
//!
//! Resume rule: the migration area is reused only when `mig:state` was built
//! for this registry (same target and fingerprint). Otherwise it is discarded
//! (atomically, by the first checkpoint) and every position is migrated again
//! from the live events, which are untouched until `finalize`: migrated events
//! of another registry may be wrong for this one, and the keyframes of the
//! lower MIs could not be rebuilt from them.
//!
//! A run resumes after the last keyframe flush (`keyframe_cursor`);
//! positions a crashed run migrated after it are redone (identically) and
//! forgotten by the first checkpoint (mode `resume`).
//!
//! What a resume costs: without a migration that reads the context, nothing
//! is loaded (the target keyframe is read from Redis as the batches need it,
//! see `target_keyframe.rs`). With one, the stored keyframes are loaded and
//! the lowest one below the target is rebuilt from its last *lowest flush*
//! (`lowest_cursor`) by replaying the live events after it: after a clean
//! stop nothing, after a crash at most [`super::LOWEST_FLUSH_INTERVAL`] of
//! work, and from position 1 only when it was never stored.

use super::super::keyframes::Keyframes;
use super::super::pace::Pacer;
use super::super::store::{AreaState, Mode, Snapshot};
use super::super::{Engine, EngineError, OutputSink};
use super::REPLAY_BATCH;

/// Where a run starts.
pub(crate) struct Plan {
    /// The snapshot's last position.
    pub(crate) last: u64,
    /// The last position already migrated (durably, with keyframes).
    pub(crate) cursor: u64,
    pub(crate) mode: Mode,
    /// Whether the stored area is this registry's and usable.
    pub(crate) area_is_current: bool,
    pub(crate) events_todo: u64,
}

impl Plan {
    /// The plan for `snapshot`; writes the "discarded" line when the area
    /// was built for another registry.
    pub(crate) async fn new<S: OutputSink>(
        engine: &Engine,
        snapshot: &Snapshot,
        sink: &mut S,
    ) -> Result<Plan, EngineError> {
        let target = engine.registry.target_migration_index();
        let fingerprint = engine.registry.fingerprint();
        let area = &snapshot.area;
        let last = snapshot.positions;
        let area_is_current = area.target == Some(target)
            && area.fingerprint.as_deref() == Some(fingerprint.as_str())
            && area.cursor <= last
            && area.keyframe_cursor <= area.cursor
            && (area.keyframe_cursor == 0 || area.min_mi.is_some());
        let mut plan = Plan {
            last,
            cursor: area.keyframe_cursor,
            mode: if area.cursor > area.keyframe_cursor {
                Mode::Resume
            } else {
                Mode::Continue
            },
            area_is_current,
            events_todo: snapshot.events.saturating_sub(area.keyframe_source_events),
        };
        if !area_is_current {
            if let Some(other) = area.target {
                sink.line(format!(
                    "The migration data of {} positions was built for another registry (target migration index {other}); it is discarded and every position is migrated again",
                    area.cursor
                ))
                .await?;
            }
            plan.cursor = 0;
            plan.mode = Mode::Fresh;
            plan.events_todo = snapshot.events;
        }
        Ok(plan)
    }

    /// Positions this run migrates.
    pub(crate) fn todo(&self) -> u64 {
        self.last - self.cursor
    }

    /// Whether Redis holds this run's keyframes (a continued or resumed
    /// area): a fresh run's first checkpoint deletes what is there.
    pub(crate) fn area_is_ours(&self) -> bool {
        self.mode != Mode::Fresh
    }

    /// The in-memory keyframes of a registry whose migrations read the
    /// context, as of `cursor`: the stored ones, and the lowest one below
    /// the target rebuilt from its last lowest flush (or from nothing when
    /// it has none) by replaying the live events up to `cursor`.
    pub(crate) async fn context_keyframes<S: OutputSink>(
        &self,
        engine: &Engine,
        area: &AreaState,
        sink: &mut S,
    ) -> Result<Keyframes, EngineError> {
        let target = engine.registry.target_migration_index();
        let cursor = self.cursor;
        let min_mi = match area.min_mi {
            Some(min_mi) if self.area_is_current && cursor > 0 => min_mi,
            _ => return Ok(Keyframes::new(target)),
        };
        // The stored lowest keyframe is usable while its MI is still the
        // lowest (a lower MI that appeared since has none stored).
        let lowest_from = match (area.lowest_mi, area.lowest_cursor) {
            (Some(mi), Some(lowest_cursor)) if mi == min_mi && lowest_cursor <= cursor => {
                Some(lowest_cursor)
            }
            _ => None,
        };
        let stored_from = if min_mi < target && lowest_from.is_none() {
            min_mi + 1
        } else {
            min_mi
        };
        let loaded = engine
            .store
            .load_keyframes(stored_from, target, engine.rate())
            .await?;
        let mut keyframes = Keyframes::loaded(loaded, target);
        if min_mi < target {
            let first = match lowest_from {
                Some(lowest_cursor) => lowest_cursor + 1,
                None => {
                    keyframes.start_replay(min_mi);
                    1
                }
            };
            if first <= cursor {
                replay(engine, &mut keyframes, min_mi, first, cursor, sink).await?;
            }
        }
        Ok(keyframes)
    }
}

/// Rebuilds the lowest keyframe by applying the live events of positions
/// `first..=last` in order (see `keyframes.rs`), reading them in batches,
/// throttled; stops (`Cancelled`) between two batches. An event that cannot
/// be applied is a `Failed`.
async fn replay<S: OutputSink>(
    engine: &Engine,
    keyframes: &mut Keyframes,
    mi: u64,
    first: u64,
    last: u64,
    sink: &mut S,
) -> Result<(), EngineError> {
    sink.line(format!(
        "Rebuilding the keyframe of migration index {mi} from the live events of positions {first} to {last}"
    ))
    .await?;
    let mut pacer = Pacer::new(engine.rate(), &engine.cancel);
    let step = pacer.step(REPLAY_BATCH);
    let mut next = first;
    while next <= last {
        let end = last.min(next + step - 1);
        pacer.take(end - next + 1).await?;
        let batch = engine.store.read_live(next, end).await?;
        for live in batch {
            for event in live.parse().map_err(EngineError::Failed)? {
                keyframes.replay(mi, &event, live.position).map_err(|err| {
                    EngineError::Failed(format!(
                        "position {}: its stored event {} {} cannot be applied at MI {mi}: {err}",
                        live.position,
                        event.type_name(),
                        event.fqid()
                    ))
                })?;
            }
        }
        next = end + 1;
    }
    Ok(())
}
