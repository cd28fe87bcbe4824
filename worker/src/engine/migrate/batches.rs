//! The batch loop of `migrate`: read, migrate, fold, checkpoint.
//!
//! Three stages overlap. The next two batches are read (one pipelined
//! `HMGET` of events and MIs each) and prepared on the worker pool while
//! batch k is folded: their positions are parsed in parallel and, when no
//! migration reads the context, also migrated and their changed events
//! serialised (a position's migration then depends on nothing but its own
//! events). The missing keyframe models of batch k + 1 are asked for before
//! checkpoint k is sent, so Redis answers them before that script runs.
//! Batch k is folded into the keyframes while up to three checkpoints are
//! being written (`pipeline.rs`).
//!
//! Two kinds of keyframes ([`Fold`]): with a migration that reads the
//! context, every MI's keyframe is held in memory and the positions are
//! migrated one by one on this thread, each against the keyframes as they
//! were before it (`keyframes.rs`); without one, only the target keyframe
//! is needed, as a bounded cache in front of Redis, folded in parallel
//! shards (`target_keyframe.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration_shared::datastore::{Event, Fqid};
use migration_shared::migrations::Registry;
use rayon::prelude::*;

use super::super::keyframes::Keyframes;
use super::super::pool::on_pool;
use super::super::position::{
    migrate_position, migrate_position_blind, not_applicable, BlindPosition,
};
use super::super::store::{Checkpoint, EventsJson, LivePosition, Mode};
use super::super::target_keyframe::TargetKeyframe;
use super::super::{Engine, EngineError, OutputSink};
use super::flush::{Flush, FlushPolicy};
use super::pipeline::{LandedBatch, Pipeline};
use super::plan::Plan;
use super::{fail, report, Progress};

/// The keyframes a run folds its batches into.
pub(crate) enum Fold {
    /// Every MI's keyframe in memory (a migration reads the context).
    Context(Keyframes),
    /// The target keyframe alone, cached in front of Redis.
    Target(TargetKeyframe),
}

/// A batch as the reading task hands it over.
enum Prepared {
    /// Parsed; migrated on the loop's thread against the keyframes.
    Parsed(Vec<(LivePosition, Result<Vec<Event>, String>)>),
    /// Migrated already, in position order; the first failure ends it.
    Migrated(Vec<Result<BlindPosition, String>>),
}

type Reading = tokio::task::JoinHandle<Result<Prepared, EngineError>>;

/// Reads positions `first..=last` and prepares them on the worker pool.
fn read(engine: &Engine, first: u64, last: u64) -> Reading {
    let store = engine.store.clone();
    let registry: Arc<Registry> = engine.registry.clone();
    tokio::spawn(async move {
        let batch = store.read_live(first, last).await?;
        on_pool("preparing a batch", move || prepare(&registry, batch)).await
    })
}

fn prepare(registry: &Registry, batch: Vec<LivePosition>) -> Prepared {
    if registry.reads_context() {
        return Prepared::Parsed(
            batch
                .into_par_iter()
                .map(|live| {
                    let events = live.parse();
                    (live, events)
                })
                .collect(),
        );
    }
    let migrated: Vec<Result<BlindPosition, String>> = batch
        .into_par_iter()
        .map(|live| {
            let events = live.parse()?;
            migrate_position_blind(
                registry,
                live.position,
                live.migration_index,
                live.events_json,
                events,
            )
        })
        .collect();
    // Only the positions before the first failure count.
    let end = migrated
        .iter()
        .position(Result::is_err)
        .map_or(migrated.len(), |at| at + 1);
    let mut migrated = migrated;
    migrated.truncate(end);
    Prepared::Migrated(migrated)
}

/// What the loop did: positions and their live events, landed.
pub(crate) struct Tally {
    pub(crate) done: u64,
    pub(crate) events_done: u64,
}

/// Migrates positions `plan.cursor + 1 ..= plan.last` in batches.
pub(crate) async fn run<S: OutputSink>(
    engine: &Engine,
    plan: &Plan,
    mut fold: Fold,
    progress: &mut Progress,
    sink: &mut S,
) -> Result<Tally, EngineError> {
    let registry = &engine.registry;
    let target = registry.target_migration_index();
    let fingerprint = registry.fingerprint();
    let last = plan.last;
    let rate = engine.options.max_positions_per_second;
    // With a throttle, about ten checkpoints a second keep the rate smooth.
    let batch_size = if rate == 0 {
        engine.batch_positions
    } else {
        (u64::from(rate) / 10).clamp(1, engine.batch_positions)
    };
    let max_dirty = match &fold {
        Fold::Target(keyframe) => engine.keyframe_flush_models.min(keyframe.flush_threshold()),
        Fold::Context(_) => engine.keyframe_flush_models,
    };
    let mut policy = FlushPolicy::new(
        engine.keyframe_flush_interval,
        engine.lowest_flush_interval,
        max_dirty,
    );
    let started = Instant::now();
    let mut tally = Tally {
        done: 0,
        events_done: 0,
    };
    let mut cursor = plan.cursor;
    let mut mode = plan.mode;
    let mut pipeline = Pipeline::new(engine.store.clone(), engine.checkpoint_depth);
    let mut ahead = ReadAhead::new(engine, cursor + 1, last, batch_size);
    let mut upcoming = ahead.next(engine, &mut fold).await;
    while let Some(next) = upcoming.take() {
        let (batch_last, prepared, models) = match next {
            Ok(next) => next,
            Err(EngineError::Failed(message)) => {
                let err = fail(sink, message).await;
                return Err(pipeline.abandon(err).await);
            }
            Err(err) => return Err(pipeline.abandon(err).await),
        };
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
            positions: Vec::with_capacity((batch_last - cursor) as usize),
            keyframes: Default::default(),
            garbage: Vec::new(),
        };
        let mut verbose_lines = Vec::new();
        let migrated = migrate_batch(
            engine,
            &mut fold,
            prepared,
            models,
            &mut checkpoint,
            &mut verbose_lines,
        );
        let failure = match migrated.await {
            Ok(failure) => failure,
            Err(err) => {
                ahead.abort();
                return Err(pipeline.abandon(err).await);
            }
        };
        if let Some(message) = failure {
            ahead.abort();
            drain(&mut pipeline, &mut fold, sink, progress, &mut tally).await?;
            return Err(fail(sink, message).await);
        }
        // The next batch's missing models are asked for now, before this
        // batch's checkpoint is sent: Redis answers them first instead of
        // after the checkpoint script, and they arrive while this batch is
        // being checkpointed.
        upcoming = ahead.next(engine, &mut fold).await;

        if rate > 0 && !engine.cancel.is_cancelled() {
            // Paced on the positions sent, so the checkpoints in flight do
            // not let the rate run ahead.
            let sent_before = batch_last
                .saturating_sub(batch_size)
                .saturating_sub(plan.cursor);
            let due = started + Duration::from_secs_f64(sent_before as f64 / f64::from(rate));
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = engine.cancel.cancelled() => {}
            }
        }
        while pipeline.is_full() {
            land(&mut pipeline, &mut fold, sink, progress, &mut tally).await?;
        }
        // Looked at after landing: a cancel seen there stops the run with
        // this checkpoint already.
        let stopping = engine.cancel.is_cancelled();
        let flush = flush_into(
            &mut policy,
            &mut fold,
            stopping || batch_last == last,
            &mut checkpoint,
        );
        let batch = LandedBatch {
            positions: checkpoint.positions.len() as u64,
            source_events: checkpoint.source_events,
            verbose_lines,
            flush,
        };
        pipeline.send(checkpoint, batch);
        mode = Mode::Continue;
        cursor = batch_last;
        if stopping && cursor < last {
            ahead.abort();
            if let Some(Ok((_, _, Some(models)))) = upcoming {
                models.abort();
            }
            drain(&mut pipeline, &mut fold, sink, progress, &mut tally).await?;
            sink.line(format!(
                "Stopped after position {cursor} ({} positions migrated in this run); the next run continues there",
                tally.done
            ))
            .await?;
            return Err(EngineError::Cancelled);
        }
    }
    drain(&mut pipeline, &mut fold, sink, progress, &mut tally).await?;
    // Freeing every model of the keyframes takes a while with many models:
    // done on the pool, beside finalize.
    rayon::spawn(move || drop(fold));
    Ok(tally)
}

/// Batches read ahead of the loop: how many are being read and prepared
/// while the current one is folded and checkpointed.
const READ_AHEAD: usize = 2;

/// The stored target keyframe models a batch needs and the cache lacks,
/// being read.
type ModelsRead = tokio::task::JoinHandle<Result<Vec<(Fqid, String)>, EngineError>>;

/// The next batch for the loop: its last position, the prepared batch, and
/// the read of its missing keyframe models.
type Upcoming = Result<(u64, Prepared, Option<ModelsRead>), EngineError>;

/// The reads of the batches after the current one, in order.
struct ReadAhead {
    queue: VecDeque<(u64, Reading)>,
    next_first: u64,
    last: u64,
    batch_size: u64,
}

impl ReadAhead {
    fn new(engine: &Engine, first: u64, last: u64, batch_size: u64) -> ReadAhead {
        let mut ahead = ReadAhead {
            queue: VecDeque::with_capacity(READ_AHEAD),
            next_first: first,
            last,
            batch_size,
        };
        ahead.fill(engine);
        ahead
    }

    fn fill(&mut self, engine: &Engine) {
        while self.queue.len() < READ_AHEAD && self.next_first <= self.last {
            let end = self.last.min(self.next_first + self.batch_size - 1);
            self.queue
                .push_back((end, read(engine, self.next_first, end)));
            self.next_first = end + 1;
        }
    }

    /// The next batch (`None` after the last one), with the read of the
    /// target keyframe models it needs and the cache lacks started (the
    /// cache must not evict between this and the batch's fold).
    async fn next(&mut self, engine: &Engine, fold: &mut Fold) -> Option<Upcoming> {
        let (end, reading) = self.queue.pop_front()?;
        self.fill(engine);
        let prepared = match reading.await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(err)) => return Some(Err(err)),
            Err(err) => {
                return Some(Err(EngineError::Failed(format!(
                    "reading a batch failed: {err}"
                ))))
            }
        };
        let models = match (&prepared, fold) {
            (Prepared::Migrated(batch), Fold::Target(keyframe)) => {
                let missing = keyframe.missing(
                    batch
                        .iter()
                        .flatten()
                        .flat_map(|position| position.fold.iter()),
                );
                (!missing.is_empty()).then(|| {
                    let store = engine.store.clone();
                    let mi = keyframe.mi();
                    tokio::spawn(async move { store.read_keyframe_models(mi, missing).await })
                })
            }
            _ => None,
        };
        Some(Ok((end, prepared, models)))
    }

    fn abort(&mut self) {
        for (_, reading) in self.queue.drain(..) {
            reading.abort();
        }
    }
}

/// Migrates one prepared batch into `checkpoint` and folds it into the
/// keyframes. Returns the failure message of the first position that could
/// not be migrated (the batch is then not checkpointed), or a Redis error
/// (reading the missing keyframe models).
async fn migrate_batch(
    engine: &Engine,
    fold: &mut Fold,
    prepared: Prepared,
    models: Option<ModelsRead>,
    checkpoint: &mut Checkpoint,
    verbose_lines: &mut Vec<String>,
) -> Result<Option<String>, EngineError> {
    let registry = &engine.registry;
    let target = registry.target_migration_index();
    let verbose = engine.options.verbose;
    let mut line = |position: u64, from: u64| {
        if verbose {
            verbose_lines.push(format!("Position {position} from MI {from} to MI {target}"));
        }
    };
    match (prepared, fold) {
        (Prepared::Parsed(batch), Fold::Context(keyframes)) => {
            for (live, events) in batch {
                let migrated = match migrate_position(
                    registry,
                    keyframes,
                    live.position,
                    live.migration_index,
                    live.events_json,
                    events,
                ) {
                    Ok(migrated) => migrated,
                    Err(message) => return Ok(Some(message)),
                };
                line(live.position, live.migration_index);
                checkpoint.garbage.extend(migrated.garbage);
                checkpoint.source_events += migrated.source_events;
                checkpoint.migrated_events += migrated.events;
                checkpoint
                    .positions
                    .push((live.position, target, migrated.events_json));
            }
            Ok(None)
        }
        (Prepared::Migrated(batch), Fold::Target(keyframe)) => {
            let mut failure = None;
            let mut positions = Vec::with_capacity(batch.len());
            for item in batch {
                match item {
                    Ok(position) => positions.push(position),
                    Err(message) => failure = Some(message),
                }
            }
            if let Some(models) = models {
                let read = models.await.map_err(|err| {
                    EngineError::Failed(format!("reading keyframe models failed: {err}"))
                })??;
                keyframe.insert_read(read);
            }
            let events: Vec<(u64, &[Event])> = positions
                .iter()
                .map(|p| (p.position, p.fold.as_slice()))
                .collect();
            if let Err(err) = keyframe.fold(&events) {
                // An earlier position than any failure of the preparation.
                let event = positions
                    .iter()
                    .find(|p| p.position == err.position)
                    .and_then(|p| p.fold.get(err.index));
                return Ok(Some(match event {
                    Some(event) => not_applicable(registry, err.position, target, event, err.error),
                    None => format!("position {}: {}", err.position, err.error),
                }));
            }
            if failure.is_some() {
                return Ok(failure);
            }
            for position in positions {
                line(position.position, position.source_mi);
                checkpoint.source_events += position.source_events;
                checkpoint.migrated_events += position.events;
                checkpoint.positions.push((
                    position.position,
                    target,
                    EventsJson::Raw(position.events_json),
                ));
                checkpoint.garbage.push(position.fold);
            }
            Ok(None)
        }
        _ => unreachable!("the registry decides both the preparation and the keyframes"),
    }
}

/// Lets the flush policy decide for `checkpoint` and, on a flush, moves the
/// changed keyframe models into it; returns the flush's number for a
/// target keyframe (to be told when it landed).
fn flush_into(
    policy: &mut FlushPolicy,
    fold: &mut Fold,
    last_checkpoint: bool,
    checkpoint: &mut Checkpoint,
) -> Option<u64> {
    let target = checkpoint.target;
    let (dirty, lowest_dirty) = match fold {
        Fold::Context(keyframes) => (keyframes.dirty_len(), keyframes.lowest_dirty_len()),
        Fold::Target(keyframe) => (keyframe.dirty_len(), 0),
    };
    let flush = policy.decide(last_checkpoint, dirty, lowest_dirty);
    if flush == Flush::None {
        return None;
    }
    let with_lowest = flush == Flush::WithLowest;
    match fold {
        Fold::Context(keyframes) => {
            let min_mi = keyframes.min_mi().unwrap_or(target);
            checkpoint.min_mi = Some(min_mi);
            checkpoint.lowest = with_lowest && min_mi < target;
            checkpoint.keyframes = keyframes.take_dirty(with_lowest);
            None
        }
        Fold::Target(keyframe) => {
            checkpoint.min_mi = Some(target);
            let (writes, epoch) = keyframe.take_dirty();
            checkpoint.keyframes = writes;
            Some(epoch)
        }
    }
}

/// Lands the oldest checkpoint in flight: its positions count as done, its
/// lines are written, and its flushed models may leave the cache.
async fn land<S: OutputSink>(
    pipeline: &mut Pipeline,
    fold: &mut Fold,
    sink: &mut S,
    progress: &mut Progress,
    tally: &mut Tally,
) -> Result<bool, EngineError> {
    let Some(batch) = pipeline.land_oldest().await? else {
        return Ok(false);
    };
    tally.done += batch.positions;
    tally.events_done += batch.source_events;
    if let (Some(epoch), Fold::Target(keyframe)) = (batch.flush, fold) {
        keyframe.landed(epoch);
    }
    report(
        sink,
        progress,
        batch.verbose_lines,
        tally.done,
        tally.events_done,
    )
    .await?;
    Ok(true)
}

/// Lands every checkpoint in flight.
async fn drain<S: OutputSink>(
    pipeline: &mut Pipeline,
    fold: &mut Fold,
    sink: &mut S,
    progress: &mut Progress,
    tally: &mut Tally,
) -> Result<(), EngineError> {
    while land(pipeline, fold, sink, progress, tally).await? {}
    Ok(())
}
