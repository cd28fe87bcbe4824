//! The keyframes: for every MI from the lowest source MI up to the target, the
//! models as they are after the last migrated position, held in memory.
//!
//! A migration from `m` to `m + 1` at position `p` sees the keyframes at `m`
//! and `m + 1` before `p`; afterwards each keyframe is advanced with `p`'s
//! events at its MI. Only the models changed since the last flush are
//! written back (the dirty set, deduplicated over many batches), and memory
//! grows with the models, never with the events.
//!
//! Positions' source MIs never rise (checked before the run), but they may
//! fall: when a position's MI is below every keyframe so far, the keyframes
//! of the missing lower MIs start as copies of the lowest one. The earlier
//! positions have no events at those MIs (they were written at a higher MI),
//! so their nearest available state is the best "old" view there is.
//!
//! The keyframe of the lowest MI (when below the target) is exactly the
//! replay of the live events of every migrated position (each position's
//! live events are its events at its own, lowest, MI; the copies above keep
//! that true). It is therefore stored less often than the others (see
//! `migrate/flush.rs`: a *lowest flush*, recorded as `lowest_cursor`): a resumed
//! run loads it as of `lowest_cursor` and replays the live events of the
//! positions after it up to `keyframe_cursor` ([`Keyframes::replay`]),
//! instead of writing it at every flush (that would double the keyframe
//! writes of a single migration) or replaying every position from 1. When a
//! lower MI appears, the former lowest keyframe becomes an ordinary stored
//! one and all its models are written at the next flush; the new lowest one
//! is written whole at its first lowest flush (until then a resume rebuilds
//! it from position 1).

use std::collections::{BTreeMap, HashSet};

use migration_shared::datastore::{apply_event, ApplyError, Event, Fqid, Model, Models};
use serde_json::Value;

use migration_shared::datastore::model::{META_DELETED, META_POSITION};

use super::store::KeyframeWrites;

/// The in-memory keyframes and what changed since the last flush.
pub(crate) struct Keyframes {
    by_mi: BTreeMap<u64, Models>,
    dirty: BTreeMap<u64, HashSet<Fqid>>,
    target: u64,
}

impl Keyframes {
    /// No keyframes yet (a run from position 1).
    pub(crate) fn new(target: u64) -> Keyframes {
        Keyframes::loaded(BTreeMap::new(), target)
    }

    /// Keyframes as loaded from the last flush (nothing dirty); the lowest
    /// one is rebuilt with [`Keyframes::replay`].
    pub(crate) fn loaded(by_mi: BTreeMap<u64, Models>, target: u64) -> Keyframes {
        Keyframes {
            by_mi,
            dirty: BTreeMap::new(),
            target,
        }
    }

    /// Whether `mi` is the lowest keyframe below the target (flushed only by
    /// lowest flushes).
    fn is_lowest(&self, mi: u64) -> bool {
        mi < self.target && self.min_mi() == Some(mi)
    }

    /// Starts rebuilding the keyframe at `mi` (below every loaded one) from
    /// nothing: it was never stored.
    pub(crate) fn start_replay(&mut self, mi: u64) {
        self.by_mi.insert(mi, Models::new());
    }

    /// Applies a live event to the lowest keyframe while rebuilding it; the
    /// model counts as changed since the lowest keyframe's last flush.
    pub(crate) fn replay(
        &mut self,
        mi: u64,
        event: &Event,
        position: u64,
    ) -> Result<(), ApplyError> {
        apply_event(self.by_mi.entry(mi).or_default(), event, position)?;
        self.mark_dirty(mi, event.fqid());
        Ok(())
    }

    fn mark_dirty(&mut self, mi: u64, fqid: &Fqid) {
        let dirty = self.dirty.entry(mi).or_default();
        if !dirty.contains(fqid) {
            dirty.insert(fqid.clone());
        }
    }

    /// The lowest MI with a keyframe.
    pub(crate) fn min_mi(&self) -> Option<u64> {
        self.by_mi.keys().next().copied()
    }

    /// Makes sure keyframes exist for every MI in `from..=target`.
    pub(crate) fn ensure_range(&mut self, from: u64, target: u64) {
        let lowest = self.min_mi();
        if let Some(lowest) = lowest.filter(|lowest| *lowest > from && *lowest < self.target) {
            // The former lowest keyframe was stored at lowest flushes only (or
            // never): from now on it is an ordinary one, stored whole.
            let models: Vec<Fqid> = self.by_mi[&lowest].keys().cloned().collect();
            self.dirty.entry(lowest).or_default().extend(models);
        }
        for mi in (from..=target).rev() {
            if self.by_mi.contains_key(&mi) {
                continue;
            }
            let models = match lowest {
                Some(lowest) if lowest > mi => self.by_mi[&lowest].clone(),
                _ => Models::new(),
            };
            self.dirty
                .entry(mi)
                .or_default()
                .extend(models.keys().cloned());
            self.by_mi.insert(mi, models);
        }
    }

    /// The models at `mi` (empty when there is no keyframe there).
    pub(crate) fn at(&self, mi: u64) -> &Models {
        static EMPTY: std::sync::LazyLock<Models> = std::sync::LazyLock::new(Models::new);
        self.by_mi.get(&mi).unwrap_or(&EMPTY)
    }

    /// Applies `event` of `position` to the keyframe at `mi`.
    pub(crate) fn apply(
        &mut self,
        mi: u64,
        event: &Event,
        position: u64,
    ) -> Result<(), ApplyError> {
        let models = self.by_mi.entry(mi).or_default();
        apply_event(models, event, position)?;
        self.mark_dirty(mi, event.fqid());
        Ok(())
    }

    /// How many (MI, model) pairs changed since the last flush, the lowest
    /// keyframe below the target left out.
    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty
            .iter()
            .filter(|(mi, _)| !self.is_lowest(**mi))
            .map(|(_, fqids)| fqids.len())
            .sum()
    }

    /// How many models of the lowest keyframe below the target changed since
    /// its last flush (0 when the lowest keyframe is the target's).
    pub(crate) fn lowest_dirty_len(&self) -> usize {
        match self.min_mi() {
            Some(mi) if mi < self.target => self.dirty.get(&mi).map_or(0, HashSet::len),
            _ => 0,
        }
    }

    /// The changed models as stored JSON, grouped by (MI, collection); clears
    /// their dirty sets. The lowest keyframe below the target is included
    /// only when `lowest` is set (a lowest flush); else its changes are kept
    /// for the next lowest flush.
    pub(crate) fn take_dirty(&mut self, lowest: bool) -> KeyframeWrites {
        let mut writes = KeyframeWrites::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        if !lowest {
            if let Some(mi) = self.min_mi().filter(|mi| *mi < self.target) {
                if let Some(kept) = dirty.remove(&mi) {
                    self.dirty.insert(mi, kept);
                }
            }
        }
        for (mi, fqids) in dirty {
            let models = &self.by_mi[&mi];
            // Grouped by borrowed collection name: one allocation per
            // collection, not per model.
            let mut by_collection: std::collections::HashMap<&str, Vec<(u64, String)>> =
                std::collections::HashMap::new();
            for fqid in &fqids {
                if let Some(model) = models.get(fqid) {
                    by_collection
                        .entry(fqid.collection())
                        .or_default()
                        .push((fqid.id(), stored_json(model)));
                }
            }
            for (collection, entries) in by_collection {
                writes.insert((mi, collection.to_string()), entries);
            }
        }
        writes
    }
}

/// The bytes of [`Model::to_stored_json`] without cloning the model's fields
/// (a checkpoint serialises every changed model at every MI, so this is on
/// the hot path). Relies on the fields map iterating in sorted key order
/// (serde_json without `preserve_order`), where `to_stored_json` inserts the
/// `meta_` keys; the unit test below pins the equality.
pub(crate) fn stored_json(model: &Model) -> String {
    fn entry(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &Value) {
        if !std::mem::take(first) {
            out.push(b',');
        }
        // Writing a str or a Value to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    let position = Value::from(model.position);
    let mut meta: Vec<(&str, Value)> = Vec::with_capacity(2);
    if model.deleted {
        meta.push((META_DELETED, Value::Bool(true)));
    }
    meta.push((META_POSITION, position));
    let mut meta = meta.into_iter().peekable();
    let mut out = Vec::with_capacity(64 + 32 * model.fields.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &model.fields {
        while let Some((meta_key, meta_value)) =
            meta.next_if(|(meta_key, _)| *meta_key < key.as_str())
        {
            entry(&mut out, &mut first, meta_key, &meta_value);
        }
        entry(&mut out, &mut first, key, value);
    }
    for (meta_key, meta_value) in meta {
        entry(&mut out, &mut first, meta_key, &meta_value);
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_json_is_to_stored_json() {
        for (fields, deleted) in [
            (json!({}), false),
            (json!({}), true),
            (
                json!({"a": 1, "z": "x\"y", "m": [1, "two"], "meta": {"b": null}}),
                false,
            ),
            (
                json!({"a": 1, "mete": 2, "meta_": 3, "n": 4.5, "title": "\u{e9}\u{1}"}),
                true,
            ),
            (json!({"zz": true}), true),
        ] {
            let model = Model {
                fields: fields.as_object().unwrap().clone(),
                position: 42,
                deleted,
            };
            assert_eq!(stored_json(&model), model.to_stored_json());
        }
    }
}
