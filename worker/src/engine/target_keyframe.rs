//! The target keyframe when no migration reads the context: a bounded cache
//! in front of the copy in Redis, sharded by fqid so that folding a batch
//! and serialising a flush use every core.
//!
//! Why a cache: the keyframe is the datastore's model projection at the
//! target MI, so holding it whole costs memory in proportion to the
//! datastore (about 1 KB per model). The keyframe flushes already store it
//! in Redis (`mig:keyframe:{target}:{collection}`), as of `keyframe_cursor`;
//! the engine keeps at most [`TargetKeyframe::capacity`] models in memory and
//! reads a batch's missing ones with one pipelined `HMGET` per batch.
//!
//! The invariant that makes this correct: **a model that is not in memory
//! has its current state in Redis, in a checkpoint that has landed.** A
//! model is only ever evicted when it is clean (unchanged since the flush
//! that wrote it) and that flush's checkpoint has landed, so a read of a
//! missing model can never see an older state, whatever is in flight. Dirty
//! models are never evicted; the flush policy bounds them
//! ([`TargetKeyframe::flush_threshold`]). A fresh run (the first checkpoint
//! deletes the old area) reads nothing from Redis until one of its
//! checkpoints landed: until then the keyframes there are the old area's.
//!
//! A resumed run starts with an empty cache: nothing is loaded, the models
//! are read as the batches need them, so a resume costs no more than the
//! positions it redoes.
//!
//! Compact when clean: a model changed since the last flush is held parsed
//! (about 1 KB for a model of six fields: the field map's node, the keys'
//! and values' allocations); once flushed it is held as the JSON the flush
//! wrote (a few hundred bytes), and parsed again when a batch touches it.
//! Models read from Redis stay JSON until they are touched. So most of the
//! cache costs a quarter of what parsed models would, and the parsing runs
//! in the parallel fold.
//!
//! Sharding: a model lives in shard `hash(fqid) % shards`; a batch's events
//! are split by shard (keeping their order), and the shards apply theirs in
//! parallel. Events of different models commute, so the result is the
//! sequential one; the first failing event in position order is reported,
//! as the sequential fold would.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use migration_shared::datastore::{apply_event_to, Event, Fqid, Model};
use rayon::prelude::*;

use super::keyframes::stored_json;
use super::store::KeyframeWrites;

/// Shards per core: more shards than cores keeps the parallel fold busy
/// when the batch's models are unevenly spread.
const SHARDS_PER_CORE: usize = 4;

/// The bounded, sharded target keyframe.
pub(crate) struct TargetKeyframe {
    mi: u64,
    shards: Vec<Shard>,
    capacity: usize,
    /// Flushes taken so far; a model records the one that wrote it.
    epoch: u64,
    /// The newest flush whose checkpoint landed.
    landed: u64,
    /// Whether Redis may hold models of this run that are not in memory.
    read_redis: bool,
    /// The number of the batch being folded (recency for eviction).
    tick: u64,
    /// Fixed-key hasher for the shard choice.
    hasher: std::hash::BuildHasherDefault<std::hash::DefaultHasher>,
}

#[derive(Default)]
struct Shard {
    models: HashMap<Fqid, Entry>,
    dirty: usize,
}

struct Entry {
    model: Slot,
    dirty: bool,
    /// The flush that last wrote this model (0: read from Redis as is).
    flushed: u64,
    /// The batch that last used it.
    used: u64,
}

/// A model as the cache holds it.
enum Slot {
    /// Parsed: changed since the last flush, or touched since.
    Parsed(Model),
    /// The stored JSON (as flushed, or as read from Redis).
    Stored(Box<str>),
}

/// A batch event that cannot be applied: the position, the event's index
/// in that position's events, and why.
pub(crate) struct FoldError {
    pub(crate) position: u64,
    pub(crate) index: usize,
    pub(crate) error: String,
}

impl TargetKeyframe {
    /// An empty cache for the keyframe at `mi` of about `capacity` models
    /// (when over it at the start of a batch, it evicts down to 90 % of it,
    /// as far as clean, landed models allow). `read_redis`: whether the area in
    /// Redis belongs to this run (a continued or resumed run), so that
    /// missing models are read from it.
    pub(crate) fn new(mi: u64, capacity: usize, read_redis: bool) -> TargetKeyframe {
        let shards = rayon::current_num_threads().max(1) * SHARDS_PER_CORE;
        TargetKeyframe {
            mi,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            capacity: capacity.max(1),
            epoch: 0,
            landed: 0,
            read_redis,
            tick: 0,
            hasher: Default::default(),
        }
    }

    /// The MI of this keyframe (the target).
    pub(crate) fn mi(&self) -> u64 {
        self.mi
    }

    /// Dirty models that force a flush: a quarter of the capacity. Dirty
    /// models (and flushed ones whose checkpoint has not landed) cannot be
    /// evicted, so this keeps most of the cache evictable, and the parsed
    /// (large) models a small part of it.
    pub(crate) fn flush_threshold(&self) -> usize {
        (self.capacity / 4).max(1)
    }

    fn shard_of(&self, fqid: &Fqid) -> usize {
        (self.hasher.hash_one(fqid) % self.shards.len() as u64) as usize
    }

    /// The models `events` touch that are not in memory but may be in
    /// Redis: what must be read before the fold. Makes room first (never
    /// between this and the fold: a model evicted then would be missing).
    pub(crate) fn missing<'a>(&mut self, events: impl Iterator<Item = &'a Event>) -> Vec<Fqid> {
        if self.len() > self.capacity {
            self.evict();
        }
        if !self.read_redis {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        events
            .map(Event::fqid)
            .filter(|fqid| !self.shards[self.shard_of(fqid)].models.contains_key(*fqid))
            .filter(|fqid| seen.insert(*fqid))
            .cloned()
            .collect()
    }

    /// Adds models read from Redis (clean, as of a landed flush).
    pub(crate) fn insert_read(&mut self, models: Vec<(Fqid, String)>) {
        for (fqid, json) in models {
            let shard = self.shard_of(&fqid);
            self.shards[shard].models.entry(fqid).or_insert(Entry {
                model: Slot::Stored(json.into_boxed_str()),
                dirty: false,
                flushed: 0,
                used: self.tick,
            });
        }
    }

    /// Applies a batch: `positions` in order, each with its events in
    /// order. On an error the keyframe is left partly advanced: the command
    /// fails and the keyframe is dropped.
    pub(crate) fn fold(&mut self, positions: &[(u64, &[Event])]) -> Result<(), FoldError> {
        self.tick += 1;
        let tick = self.tick;
        let mut by_shard: Vec<Vec<(u64, usize, &Event)>> = vec![Vec::new(); self.shards.len()];
        for (position, events) in positions {
            for (index, event) in events.iter().enumerate() {
                by_shard[self.shard_of(event.fqid())].push((*position, index, event));
            }
        }
        let first_error = self
            .shards
            .par_iter_mut()
            .zip(by_shard)
            .filter_map(|(shard, events)| shard.apply(events, tick).err())
            .min_by_key(|err| (err.position, err.index));
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Models changed since the last flush.
    pub(crate) fn dirty_len(&self) -> usize {
        self.shards.iter().map(|shard| shard.dirty).sum()
    }

    /// Models in memory.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.models.len()).sum()
    }

    /// The changed models as stored JSON (serialised in parallel), marked
    /// clean as of a new flush; returns the writes and the flush's number,
    /// to be passed to [`TargetKeyframe::landed`] once its checkpoint landed.
    pub(crate) fn take_dirty(&mut self) -> (KeyframeWrites, u64) {
        self.epoch += 1;
        let epoch = self.epoch;
        let parts: Vec<Vec<(&str, u64, String)>> = self
            .shards
            .par_iter_mut()
            .map(|shard| {
                let mut out = Vec::with_capacity(shard.dirty);
                shard.dirty = 0;
                for (fqid, entry) in &mut shard.models {
                    if !entry.dirty {
                        continue;
                    }
                    entry.dirty = false;
                    entry.flushed = epoch;
                    if let Slot::Parsed(model) = &entry.model {
                        let json = stored_json(model);
                        entry.model = Slot::Stored(json.as_str().into());
                        out.push((fqid.collection(), fqid.id(), json));
                    }
                }
                out
            })
            .collect();
        let mut writes = KeyframeWrites::new();
        for (collection, id, json) in parts.into_iter().flatten() {
            writes
                .entry((self.mi, collection.to_string()))
                .or_default()
                .push((id, json));
        }
        (writes, epoch)
    }

    /// The checkpoint carrying flush `epoch` landed: its models are in
    /// Redis, so they may be evicted, and Redis now holds this run's area.
    pub(crate) fn landed(&mut self, epoch: u64) {
        self.landed = self.landed.max(epoch);
        self.read_redis = true;
    }

    /// Drops the least recently used evictable models until the cache is
    /// back at 90 % of its capacity (so that eviction runs once per many
    /// batches, not at every one).
    fn evict(&mut self) {
        if self.len() <= self.capacity * 9 / 10 {
            return;
        }
        let keep = self.capacity * 9 / 10 / self.shards.len();
        let landed = self.landed;
        self.shards
            .par_iter_mut()
            .for_each(|shard| shard.evict(keep, landed));
    }
}

impl Shard {
    fn apply(&mut self, events: Vec<(u64, usize, &Event)>, tick: u64) -> Result<(), FoldError> {
        for (position, index, event) in events {
            let fail = |error: String| FoldError {
                position,
                index,
                error,
            };
            let fqid = event.fqid();
            let Some(entry) = self.models.get_mut(fqid) else {
                let created =
                    apply_event_to(None, event, position).map_err(|err| fail(err.to_string()))?;
                if let Some(model) = created {
                    self.dirty += 1;
                    self.models.insert(
                        fqid.clone(),
                        Entry {
                            model: Slot::Parsed(model),
                            dirty: true,
                            flushed: 0,
                            used: tick,
                        },
                    );
                }
                continue;
            };
            if let Slot::Stored(json) = &entry.model {
                let model = Model::from_stored_json(json).map_err(|err| {
                    fail(format!(
                        "the stored keyframe model {fqid} is corrupt: {err}"
                    ))
                })?;
                entry.model = Slot::Parsed(model);
            }
            let Slot::Parsed(model) = &mut entry.model else {
                unreachable!("parsed above");
            };
            apply_event_to(Some(model), event, position).map_err(|err| fail(err.to_string()))?;
            entry.used = tick;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty += 1;
            }
        }
        Ok(())
    }

    /// Keeps at most `keep` models plus those that may not go (dirty, or
    /// written by a flush that has not landed yet), dropping the least
    /// recently used first.
    fn evict(&mut self, keep: usize, landed: u64) {
        let evictable = |entry: &Entry| !entry.dirty && entry.flushed <= landed;
        let excess = self.models.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut ages: Vec<u64> = self
            .models
            .values()
            .filter(|entry| evictable(entry))
            .map(|entry| entry.used)
            .collect();
        if ages.is_empty() {
            return;
        }
        let cut = excess.min(ages.len()) - 1;
        let (_, threshold, _) = ages.select_nth_unstable(cut);
        let threshold = *threshold;
        let mut dropped = 0;
        self.models.retain(|_, entry| {
            if dropped < excess && evictable(entry) && entry.used <= threshold {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}
