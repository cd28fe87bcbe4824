//! `finalize`: migrate what is left, then flip the migration area into the
//! live datastore with one fenced script (`engine_finalize.lua`).
//!
//! Crash safety: before the flip, a crash leaves a resumable migration area
//! (the re-run migrates what is left and flips); the flip itself is one
//! atomic script; after it the live MI is the target, so a re-run finds
//! nothing to migrate. Every interruption therefore ends in the same final
//! datastore. Writes are refused by the write route while a finalize job is
//! current, so the positions cannot grow between the migrate pass and the
//! flip; the flip checks it anyway (STALE) and the engine then migrates the
//! new positions and flips again, a bounded number of times. A flip whose
//! answer was lost (an outage) is retried; the script recognises that it
//! already landed (no migration area, live MI at the target) and answers
//! with the live counts, so the retry is no failure.

use super::migrate::{migrate, Migrated};
use super::store::{is_stale, Landed};
use super::{Engine, EngineError, OutputSink};

/// How often the migrate pass and the flip are repeated when positions were
/// added in between (only possible when the write route's refusal failed).
const ATTEMPTS: usize = 3;

pub(crate) async fn finalize<S: OutputSink>(
    engine: &Engine,
    sink: &mut S,
) -> Result<(), EngineError> {
    let target = engine.registry.target_migration_index();
    let fingerprint = engine.registry.fingerprint();
    for attempt in 1..=ATTEMPTS {
        match migrate(engine, sink).await? {
            Migrated::NothingToMigrate => {
                sink.line(format!(
                    "Finalize finished: nothing to finalize, the datastore is already at migration index {target}"
                ))
                .await?;
                return Ok(());
            }
            Migrated::Done { .. } => {}
        }
        if engine.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        match engine.store.finalize(target, &fingerprint).await {
            Ok((positions, events, landed)) => {
                if landed == Landed::Already {
                    tracing::info!("the flip had landed although its answer was lost");
                }
                sink.line(format!(
                    "Finalize finished: {positions} positions with {events} events are live at migration index {target}; the migration data is deleted"
                ))
                .await?;
                return Ok(());
            }
            Err(err) if is_stale(&err) && attempt < ATTEMPTS => {
                sink.line(format!(
                    "The datastore changed before the migrated data could be made live ({err}); migrating again"
                ))
                .await?;
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("the last attempt returns")
}
