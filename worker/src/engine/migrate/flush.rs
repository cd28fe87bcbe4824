//! When a checkpoint also flushes the keyframes: the trade-off between
//! redone work after a crash and write volume.
//!
//! Between flushes the changed models are deduplicated, which is most of a
//! checkpoint's write volume when updates spread over many models. A flush
//! is due at most every `interval` (what a crash can cost in redone work),
//! when `max_dirty` models changed (so one checkpoint script stays short and
//! a bounded keyframe cache stays near its capacity), at the end of the run
//! and when stopping (so the checkpoint a run ends with is one a later run
//! resumes from). The lowest keyframe below the target (context path only)
//! joins a flush more rarely: see [`super::LOWEST_FLUSH_INTERVAL`].

use std::time::{Duration, Instant};

/// The flush policy of one migrate run.
pub(crate) struct FlushPolicy {
    interval: Duration,
    lowest_interval: Duration,
    max_dirty: usize,
    last: Instant,
    last_lowest: Instant,
}

/// What the next checkpoint flushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Nothing: the keyframes' changes wait for a later checkpoint.
    None,
    /// The changed models of every keyframe but the lowest below the target.
    Keyframes,
    /// Every keyframe's changed models, the lowest included.
    WithLowest,
}

impl FlushPolicy {
    pub(crate) fn new(interval: Duration, lowest_interval: Duration, max_dirty: usize) -> Self {
        let now = Instant::now();
        FlushPolicy {
            interval,
            lowest_interval,
            max_dirty: max_dirty.max(1),
            last: now,
            last_lowest: now,
        }
    }

    /// Decides for the checkpoint about to be sent, given whether the run
    /// stops or ends with it and how many models changed since the last
    /// flush (`dirty`: the lowest keyframe left out; `lowest_dirty`: it
    /// alone).
    pub(crate) fn decide(
        &mut self,
        last_checkpoint: bool,
        dirty: usize,
        lowest_dirty: usize,
    ) -> Flush {
        let lowest = last_checkpoint
            || self.last_lowest.elapsed() >= self.lowest_interval
            || lowest_dirty >= self.max_dirty;
        let flush = lowest || self.last.elapsed() >= self.interval || dirty >= self.max_dirty;
        if !flush {
            return Flush::None;
        }
        self.last = Instant::now();
        if lowest {
            self.last_lowest = self.last;
            Flush::WithLowest
        } else {
            Flush::Keyframes
        }
    }
}
