//! `migrate`: validates the positions' MIs, plans where the run starts
//! (`plan.rs`), migrates batches of positions (`batches.rs`) and persists
//! each batch with one fenced checkpoint script, written in order by the
//! checkpoint pipeline (`pipeline.rs`); some checkpoints also flush the
//! keyframes (`flush.rs`).
//!
//! Durability: every checkpoint writes its batch's events, MIs, counts and
//! cursor atomically; the keyframe flushes also record `keyframe_cursor`. A
//! crash anywhere resumes after `keyframe_cursor`: the first checkpoint of
//! that run forgets the positions written after it and they are migrated
//! again, to the same bytes, so the result equals an uninterrupted run.
//! Writes to the live datastore during `migrate` add positions after the
//! snapshot's last position; they are left for the next `migrate`/`finalize`.
//!
//! Stopping: every phase checks the cancel token between two Redis calls
//! and honours the throttle (`pace.rs`); the phases before the first
//! checkpoint write nothing, so they stop at once with
//! [`EngineError::Cancelled`]; the migration loop stops after its next
//! checkpoint (a keyframe and lowest flush).

mod batches;
mod flush;
mod pipeline;
mod plan;

pub(crate) use pipeline::DEPTH as CHECKPOINT_DEPTH;

use std::time::{Duration, Instant};

use migration_shared::jobs::ProgressUpdate;

use super::store::Snapshot;
use super::target_keyframe::TargetKeyframe;
use super::{Engine, EngineError, OutputSink};
use batches::Fold;
use plan::Plan;

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
/// target; only kept when a migration reads the context): what a crash
/// costs in replayed live events on resume. Fifteen
/// times the keyframe flush interval, so the lowest keyframe's changes are
/// deduplicated over a long stretch and its writes stay a small share.
pub(crate) const LOWEST_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Positions per read while rebuilding the lowest keyframe.
pub(crate) const REPLAY_BATCH: u64 = 1024;

/// How a migrate pass ended.
pub(crate) enum Migrated {
    /// The live MI is the target (or the datastore is empty).
    NothingToMigrate,
    /// Every position of the snapshot is migrated.
    Done { positions: u64 },
}

/// Output lines at every 5 % of the work, at most one a second, and the
/// structured progress (absolute: what earlier runs did counts).
pub(crate) struct Progress {
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

    let plan = Plan::new(engine, &snapshot, sink).await?;
    let todo = plan.todo();
    sink.line(format!(
        "State: {}; current migration index {current}, target migration index {target}; {todo} positions and {} events to migrate ({} of {last} positions already migrated)",
        state_name(&snapshot, target, plan.area_is_current),
        plan.events_todo,
        plan.cursor
    ))
    .await?;
    if todo == 0 {
        return Ok(Migrated::Done { positions: last });
    }

    let fold = if registry.reads_context() {
        match plan.context_keyframes(engine, &snapshot.area, sink).await {
            Ok(keyframes) => Fold::Context(keyframes),
            Err(EngineError::Failed(message)) => return Err(fail(sink, message).await),
            Err(err) => return Err(stopped(sink, err, "while loading the keyframes").await),
        }
    } else {
        Fold::Target(TargetKeyframe::new(
            target,
            engine.keyframe_cache_models,
            plan.area_is_ours(),
        ))
    };

    let started = Instant::now();
    let mut progress = Progress::new(
        todo,
        ProgressUpdate {
            positions_done: plan.cursor,
            positions_total: last,
            events_done: snapshot.events.saturating_sub(plan.events_todo),
            events_total: snapshot.events,
            ..ProgressUpdate::default()
        },
    );
    sink.progress(progress.update(0, 0)).await?;
    let tally = batches::run(engine, &plan, fold, &mut progress, sink).await?;
    sink.line(format!(
        "Migrated {} positions ({} events) in {:.1} s",
        tally.done,
        tally.events_done,
        started.elapsed().as_secs_f64()
    ))
    .await?;
    Ok(Migrated::Done { positions: last })
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

/// The output after a checkpoint landed: its verbose lines, then progress.
pub(crate) async fn report<S: OutputSink>(
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
