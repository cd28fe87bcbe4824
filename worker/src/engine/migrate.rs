//! The `migrate` loop: validates the positions' MIs, resumes after the last
//! keyframe flush (or starts over), migrates batches of positions and
//! persists each batch with one fenced checkpoint script.
//!
//! Durability: every checkpoint writes its batch's events, MIs, counts and
//! cursor atomically; the keyframes are flushed (deduplicated) by some of
//! them, which also record `keyframe_cursor`. A crash anywhere resumes after
//! `keyframe_cursor`: the first checkpoint of that run forgets the positions
//! written after it and they are migrated again, to the same bytes, so the
//! result equals an uninterrupted run. Writes to the live datastore during
//! `migrate` add positions after the snapshot's last position; they are left
//! for the next `migrate`/`finalize`.
//!
//! The keyframe of the lowest MI below the target is flushed less often (a
//! *lowest flush*: at most every [`LOWEST_FLUSH_INTERVAL`], when many of its
//! models changed, when stopping and at the end): a resumed run loads it as
//! of `lowest_cursor` and replays only the live events after it (see
//! `keyframes.rs`), so a clean stop costs no replay at all and a crash at
//! most that interval of replay, never a replay from position 1.
//!
//! Stopping: every phase checks the cancel token between two Redis calls
//! and honours the throttle (`pace.rs`); the phases before the first
//! checkpoint write nothing, so they stop at once with
//! [`EngineError::Cancelled`]; the migration loop stops after its next
//! checkpoint (a keyframe and lowest flush).
//!
//! Resume rule: the migration area is reused only when `mig:state` was built
//! for this registry (same target and fingerprint). Otherwise it is discarded
//! (atomically, by the first checkpoint) and every position is migrated again
//! from the live events, which are untouched until `finalize`: migrated events
//! of another registry may be wrong for this one, and the keyframes of the
//! lower MIs could not be rebuilt from them.

use std::time::{Duration, Instant};

use migration_shared::jobs::ProgressUpdate;

use super::keyframes::Keyframes;
use super::pace::Pacer;
use super::position::migrate_position;
use super::store::{AreaState, Checkpoint, LivePosition, Mode, Snapshot};
use super::{Engine, EngineError, OutputSink};

/// Positions per checkpoint without a throttle: big enough that the round
/// trips and the script call are amortised, small enough that one script
/// blocks Redis only for a few milliseconds.
pub(crate) const BATCH_POSITIONS: u64 = 256;

/// Longest time between two keyframe flushes: what a crash can cost in
/// redone work. Between flushes the changed models are deduplicated, which
/// is most of the write volume of a checkpoint.
pub(crate) const KEYFRAME_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Flush earlier when this many (MI, model) pairs changed, so that one
/// checkpoint script stays small enough not to stall other Redis clients
/// for long (about 0.1 s for 50 000 models), and far inside any response
/// timeout (the binaries use 30 s, redis-rs defaults to 500 ms).
pub(crate) const KEYFRAME_FLUSH_MODELS: usize = 50_000;

/// Longest time between two flushes of the lowest keyframe (below the
/// target): what a crash costs in replayed live events on resume. Fifteen
/// times the keyframe flush interval, so the lowest keyframe's changes are
/// deduplicated over a long stretch and its writes stay a small share.
pub(crate) const LOWEST_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Positions per read while rebuilding the lowest keyframe.
const REPLAY_BATCH: u64 = 1024;

/// How a migrate pass ended.
pub(crate) enum Migrated {
    /// The live MI is the target (or the datastore is empty).
    NothingToMigrate,
    /// Every position of the snapshot is migrated.
    Done { positions: u64 },
}

/// Output lines at every 5 % of the work, at most one a second, and the
/// structured progress (absolute: what earlier runs did counts).
struct Progress {
    total: u64,
    last_step: u64,
    last_line: Instant,
    /// Positions and events already migrated when this run began, and the
    /// snapshot's totals.
    before: ProgressUpdate,
}

impl Progress {
    fn new(total: u64, before: ProgressUpdate) -> Progress {
        Progress {
            total,
            last_step: 0,
            last_line: Instant::now(),
            before,
        }
    }

    fn update(&self, done: u64, events: u64) -> ProgressUpdate {
        ProgressUpdate {
            positions_done: self.before.positions_done + done,
            events_done: self.before.events_done + events,
            run_positions: done,
            run_events: events,
            ..self.before
        }
    }

    fn line(&mut self, done: u64, events: u64) -> Option<String> {
        let step = done * 20 / self.total.max(1);
        if step <= self.last_step
            || done == self.total
            || self.last_line.elapsed() < Duration::from_secs(1)
        {
            return None;
        }
        self.last_step = step;
        self.last_line = Instant::now();
        Some(format!(
            "Migrated {done} of {} positions ({}%), {events} events",
            self.total,
            done * 100 / self.total
        ))
    }
}

/// Fails the command: the message is the output's last line and the
/// `exception`.
pub(crate) async fn fail<S: OutputSink>(sink: &mut S, message: String) -> EngineError {
    // A migration's message may span lines; an output line may not.
    let message = message.replace(['\r', '\n'], " ");
    match sink.line(message.clone()).await {
        Ok(()) => EngineError::Failed(message),
        Err(err) => err,
    }
}

/// Checks every position `1..=last`: it has an MI, not above the target, and
/// the MI does not rise from one position to the next. Runs before anything
/// is written; reads only the MIs, in chunks, throttled; stops (`Cancelled`)
/// between two chunks.
async fn validate<S: OutputSink>(
    engine: &Engine,
    last: u64,
    sink: &mut S,
) -> Result<(), EngineError> {
    let target = engine.registry.target_migration_index();
    let mut previous: Option<(u64, u64)> = None;
    let mut problem: Option<String> = None;
    engine
        .store
        .for_each_position_mi(last, engine.rate(), |position, mi| {
            if problem.is_some() {
                return Ok(());
            }
            let Some(mi) = mi else {
                problem = Some(format!(
                    "Position {position} has no migration index; nothing was changed"
                ));
                return Ok(());
            };
            if mi > target {
                problem = Some(format!(
                    "Position {position} has migration index {mi}, above the target migration index {target}; nothing was changed"
                ));
            } else if let Some((before, before_mi)) = previous.filter(|(_, before_mi)| mi > *before_mi) {
                problem = Some(format!(
                    "Position {position} has migration index {mi}, higher than position {before} with migration index {before_mi}; nothing was changed"
                ));
            }
            previous = Some((position, mi));
            Ok(())
        })
        .await?;
    match problem {
        Some(message) => Err(fail(sink, message).await),
        None => Ok(()),
    }
}

/// The state name of SPEC 4.1 for the start line, as `stats` computes it.
/// Every position up to the cursor of a current area is at the target
/// (MI-first), so the cursor counts the fully migrated positions.
fn state_name(snapshot: &Snapshot, target: u64, area_is_current: bool) -> &'static str {
    use migration_shared::stats::{migration_state, StateFacts};
    migration_state(StateFacts {
        positions: snapshot.positions,
        current_migration_index: snapshot.migration_index.unwrap_or(target),
        target_migration_index: target,
        fully_migrated_positions: snapshot.area.cursor,
        area_is_current,
    })
    .as_str()
}

/// Migrates every position of the current snapshot into the migration area.
pub(crate) async fn migrate<S: OutputSink>(
    engine: &Engine,
    sink: &mut S,
) -> Result<Migrated, EngineError> {
    let registry = &engine.registry;
    let target = registry.target_migration_index();
    let fingerprint = registry.fingerprint();
    let snapshot = engine.store.snapshot().await?;
    let last = snapshot.positions;
    let current = snapshot.migration_index.unwrap_or(target);
    if last == 0 || current == target {
        sink.line(format!(
            "State: no_migration_required; nothing to migrate: the datastore is at the target migration index {target} ({last} positions)"
        ))
        .await?;
        return Ok(Migrated::NothingToMigrate);
    }
    if let Err(err) = validate(engine, last, sink).await {
        return Err(stopped(sink, err, "while checking the positions' migration indices").await);
    }

    let area = &snapshot.area;
    let area_is_current = area.target == Some(target)
        && area.fingerprint.as_deref() == Some(fingerprint.as_str())
        && area.cursor <= last
        && area.keyframe_cursor <= area.cursor
        && (area.keyframe_cursor == 0 || area.min_mi.is_some());
    // A run resumes after the last keyframe flush; positions a crashed run
    // migrated after it are redone (identically) and forgotten by the first
    // checkpoint.
    let (mut cursor, mut mode) = if area.cursor > area.keyframe_cursor {
        (area.keyframe_cursor, Mode::Resume)
    } else {
        (area.keyframe_cursor, Mode::Continue)
    };
    if !area_is_current {
        if area.target.is_some() {
            sink.line(format!(
                "The migration data of {} positions was built for another registry (target migration index {}); it is discarded and every position is migrated again",
                area.cursor,
                area.target.unwrap_or_default()
            ))
            .await?;
        }
        cursor = 0;
        mode = Mode::Fresh;
    }
    let todo = last - cursor;
    let events_todo = if area_is_current {
        snapshot.events.saturating_sub(area.keyframe_source_events)
    } else {
        snapshot.events
    };
    sink.line(format!(
        "State: {}; current migration index {current}, target migration index {target}; {todo} positions and {events_todo} events to migrate ({cursor} of {last} positions already migrated)",
        state_name(&snapshot, target, area_is_current)
    ))
    .await?;
    if todo == 0 {
        return Ok(Migrated::Done { positions: last });
    }

    let mut keyframes = match (area_is_current, area.min_mi) {
        (true, Some(min_mi)) if cursor > 0 => {
            match resume_keyframes(engine, area, min_mi, cursor, sink).await {
                Ok(keyframes) => keyframes,
                Err(EngineError::Failed(message)) => return Err(fail(sink, message).await),
                Err(err) => {
                    return Err(stopped(sink, err, "while loading the keyframes").await);
                }
            }
        }
        _ => Keyframes::new(target),
    };

    let rate = engine.options.max_positions_per_second;
    // With a throttle, about ten checkpoints a second keep the rate smooth.
    let batch_size = if rate == 0 {
        engine.batch_positions
    } else {
        (u64::from(rate) / 10).clamp(1, engine.batch_positions)
    };
    let started = Instant::now();
    let mut progress = Progress::new(
        todo,
        ProgressUpdate {
            positions_done: cursor,
            positions_total: last,
            events_done: snapshot.events.saturating_sub(events_todo),
            events_total: snapshot.events,
            ..ProgressUpdate::default()
        },
    );
    sink.progress(progress.update(0, 0)).await?;
    let mut done = 0u64;
    let mut events_done = 0u64;
    let read = |first: u64| {
        let store = engine.store.clone();
        let end = last.min(first + batch_size - 1);
        tokio::spawn(async move { store.read_live(first, end).await })
    };
    // Three stages overlap: batch k + 1 is read while batch k is migrated,
    // and batch k is migrated while checkpoint k - 1 is written. Checkpoints
    // are still sent one after the other (each continues from the cursor the
    // previous one wrote), and a batch counts as done only when its
    // checkpoint has landed.
    let mut pending = Some(read(cursor + 1));
    let mut in_flight: Option<InFlight> = None;
    let mut last_flush = Instant::now();
    let mut last_lowest_flush = Instant::now();
    while let Some(reading) = pending.take() {
        let batch: Vec<LivePosition> = match reading.await {
            Ok(Ok(batch)) => batch,
            Ok(Err(EngineError::Failed(message))) => {
                let err = fail(sink, message).await;
                return Err(abandon(in_flight, err).await);
            }
            Ok(Err(err)) => return Err(abandon(in_flight, err).await),
            Err(err) => {
                let err = EngineError::Failed(format!("reading a batch failed: {err}"));
                return Err(abandon(in_flight, err).await);
            }
        };
        let batch_last = batch.last().map_or(cursor, |p| p.position);
        if batch_last < last {
            pending = Some(read(batch_last + 1));
        }

        let mut checkpoint = Checkpoint {
            mode,
            from_cursor: cursor,
            to_cursor: batch_last,
            target,
            fingerprint: fingerprint.clone(),
            min_mi: None,
            lowest: false,
            source_events: 0,
            migrated_events: 0,
            positions: Vec::with_capacity(batch.len()),
            keyframes: Default::default(),
            garbage: Vec::new(),
        };
        let mut verbose_lines = Vec::new();
        let mut failure = None;
        for live in batch {
            let migrated = match migrate_position(
                registry,
                &mut keyframes,
                live.position,
                live.migration_index,
                live.events_json,
                live.events,
            ) {
                Ok(migrated) => migrated,
                Err(message) => {
                    failure = Some(message);
                    break;
                }
            };
            if engine.options.verbose {
                verbose_lines.push(format!(
                    "Position {} from MI {} to MI {target}",
                    live.position, live.migration_index
                ));
            }
            checkpoint.garbage.extend(migrated.garbage);
            checkpoint.source_events += migrated.source_events;
            checkpoint.migrated_events += migrated.events;
            checkpoint
                .positions
                .push((live.position, target, migrated.events_json));
        }

        // Land the previous checkpoint before this one may be sent.
        if let Some(previous) = in_flight.take() {
            let landed = match previous.land(&mut done, &mut events_done).await {
                Ok(lines) => report(sink, &mut progress, lines, done, events_done).await,
                Err(err) => Err(err),
            };
            if let Err(err) = landed {
                abort(pending.take());
                return Err(err);
            }
        }
        if let Some(message) = failure {
            abort(pending.take());
            return Err(fail(sink, message).await);
        }
        let stopping = engine.cancel.is_cancelled();
        if rate > 0 && done > 0 && !stopping {
            let due = started + Duration::from_secs_f64(done as f64 / f64::from(rate));
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = engine.cancel.cancelled() => {}
            }
        }

        // The keyframes are flushed (the changed models since the last
        // flush, deduplicated) at most every KEYFRAME_FLUSH_INTERVAL, and
        // always at the end and when stopping, so that the checkpoint a run
        // ends with is one a later run resumes from. The lowest keyframe
        // below the target joins a flush more rarely (LOWEST_FLUSH_INTERVAL),
        // and also at the end and when stopping: a clean stop leaves nothing
        // to replay.
        let lowest_due = stopping
            || batch_last == last
            || last_lowest_flush.elapsed() >= engine.lowest_flush_interval
            || keyframes.lowest_dirty_len() >= engine.keyframe_flush_models;
        let flush = lowest_due
            || last_flush.elapsed() >= engine.keyframe_flush_interval
            || keyframes.dirty_len() >= engine.keyframe_flush_models;
        if flush {
            let min_mi = keyframes.min_mi().unwrap_or(target);
            checkpoint.min_mi = Some(min_mi);
            checkpoint.lowest = lowest_due && min_mi < target;
            checkpoint.keyframes = keyframes.take_dirty(lowest_due);
            last_flush = Instant::now();
            if lowest_due {
                last_lowest_flush = last_flush;
            }
        }
        let store = engine.store.clone();
        let positions = checkpoint.positions.len() as u64;
        let source_events = checkpoint.source_events;
        in_flight = Some(InFlight {
            handle: tokio::spawn(async move { store.checkpoint(&checkpoint).await }),
            positions,
            source_events,
            verbose_lines,
        });
        mode = Mode::Continue;
        cursor = batch_last;
        if stopping && cursor < last {
            abort(pending.take());
            if let Some(stopped) = in_flight.take() {
                let lines = stopped.land(&mut done, &mut events_done).await?;
                report(sink, &mut progress, lines, done, events_done).await?;
            }
            sink.line(format!(
                "Stopped after position {cursor} ({done} positions migrated in this run); the next run continues there"
            ))
            .await?;
            return Err(EngineError::Cancelled);
        }
    }
    // Freeing every model of the keyframes takes a while with many models:
    // done on a blocking thread, beside the last checkpoint and finalize.
    tokio::task::spawn_blocking(move || drop(keyframes));
    if let Some(last_checkpoint) = in_flight.take() {
        let lines = last_checkpoint.land(&mut done, &mut events_done).await?;
        report(sink, &mut progress, lines, done, events_done).await?;
    }
    sink.line(format!(
        "Migrated {done} positions ({events_done} events) in {:.1} s",
        started.elapsed().as_secs_f64()
    ))
    .await?;
    Ok(Migrated::Done { positions: last })
}

/// The keyframes a resumed run continues with, as of `cursor` (the
/// `keyframe_cursor`): the stored ones, and the lowest one below the target
/// rebuilt from its last lowest flush (or from nothing when it has none) by
/// replaying the live events up to `cursor`.
async fn resume_keyframes<S: OutputSink>(
    engine: &Engine,
    area: &AreaState,
    min_mi: u64,
    cursor: u64,
    sink: &mut S,
) -> Result<Keyframes, EngineError> {
    let target = engine.registry.target_migration_index();
    // Without a migration reading the context only the target keyframe is
    // needed (see `position.rs`); nothing to rebuild.
    let min_mi = if engine.registry.reads_context() {
        min_mi
    } else {
        target
    };
    // The stored lowest keyframe is usable while its MI is still the lowest
    // (a lower MI that appeared since has none stored).
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
            for event in live.events.map_err(EngineError::Failed)? {
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

/// A phase before the first checkpoint ended with `err`: on `Cancelled` the
/// output says so (nothing was written); any error is passed on.
async fn stopped<S: OutputSink>(sink: &mut S, err: EngineError, during: &str) -> EngineError {
    if !matches!(err, EngineError::Cancelled) {
        return err;
    }
    match sink
        .line(format!(
            "Stopped {during}, before migrating anything in this run; nothing was changed"
        ))
        .await
    {
        Ok(()) => EngineError::Cancelled,
        Err(err) => err,
    }
}

/// A checkpoint sent to Redis and not yet confirmed.
struct InFlight {
    handle: tokio::task::JoinHandle<Result<super::store::Landed, EngineError>>,
    positions: u64,
    source_events: u64,
    verbose_lines: Vec<String>,
}

impl InFlight {
    /// Waits for the checkpoint; on success its positions count as done and
    /// its verbose lines are returned for output.
    async fn land(self, done: &mut u64, events_done: &mut u64) -> Result<Vec<String>, EngineError> {
        self.handle
            .await
            .map_err(|err| EngineError::Failed(format!("writing a checkpoint failed: {err}")))??;
        // Written now or recognised as written by an attempt whose answer
        // was lost: either way the batch is durable.
        *done += self.positions;
        *events_done += self.source_events;
        Ok(self.verbose_lines)
    }
}

/// Waits for a checkpoint in flight (so the output and the durable state
/// agree) and returns `err`; a refused checkpoint (lock lost) wins.
async fn abandon(in_flight: Option<InFlight>, err: EngineError) -> EngineError {
    match in_flight {
        Some(in_flight) => match in_flight.handle.await {
            Ok(Err(fenced @ EngineError::Fenced)) => fenced,
            _ => err,
        },
        None => err,
    }
}

fn abort(pending: Option<tokio::task::JoinHandle<Result<Vec<LivePosition>, EngineError>>>) {
    if let Some(pending) = pending {
        pending.abort();
    }
}

/// The output after a checkpoint landed: its verbose lines, then progress.
async fn report<S: OutputSink>(
    sink: &mut S,
    progress: &mut Progress,
    verbose_lines: Vec<String>,
    done: u64,
    events_done: u64,
) -> Result<(), EngineError> {
    for line in verbose_lines {
        sink.line(line).await?;
    }
    if let Some(line) = progress.line(done, events_done) {
        sink.line(line).await?;
    }
    sink.progress(progress.update(done, events_done)).await
}
