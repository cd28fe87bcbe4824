//! The checkpoint pipeline: checkpoints are written by one writer task, in
//! order, while the batch loop migrates the next batches.
//!
//! Why it is safe to have several in flight: each checkpoint continues from
//! the `to_cursor` of the one before (`engine_checkpoint.lua` refuses
//! anything else with `STALE`), and one task sends them one after the
//! other, so Redis sees them in order. A checkpoint whose answer was lost
//! is retried by the store and recognised when it had landed (`ALREADY`).
//! When one fails, the writer stops: the ones queued behind it are dropped
//! unsent (they would be `STALE`), and the loop sees the first failure
//! first, because it lands checkpoints in the order it sent them. A batch
//! counts as done (progress, verbose lines, the cancel point) only once its
//! checkpoint has landed.

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot};

use super::super::store::{Checkpoint, Landed, Store};
use super::super::EngineError;

/// Checkpoints sent but not yet confirmed, at most (the default; see
/// `Engine::with_checkpoint_depth`): deep enough that the
/// batch loop does not wait for Redis in the steady state, shallow enough
/// that little is redone when a checkpoint fails.
pub(crate) const DEPTH: usize = 3;

type Reply = oneshot::Sender<Result<Landed, EngineError>>;

/// What the loop learns when a checkpoint landed.
pub(crate) struct LandedBatch {
    pub(crate) positions: u64,
    pub(crate) source_events: u64,
    pub(crate) verbose_lines: Vec<String>,
    /// The keyframe flush it carried, if any.
    pub(crate) flush: Option<u64>,
}

struct InFlight {
    reply: oneshot::Receiver<Result<Landed, EngineError>>,
    batch: LandedBatch,
}

/// The writer task and the checkpoints in flight.
pub(crate) struct Pipeline {
    sender: mpsc::UnboundedSender<(Checkpoint, Reply)>,
    in_flight: VecDeque<InFlight>,
    depth: usize,
}

impl Pipeline {
    pub(crate) fn new(store: Store, depth: usize) -> Pipeline {
        let (sender, mut queue) = mpsc::unbounded_channel::<(Checkpoint, Reply)>();
        tokio::spawn(async move {
            while let Some((checkpoint, reply)) = queue.recv().await {
                let result = store.checkpoint(&checkpoint).await;
                // The batch's events are freed here, off the loop's thread.
                drop(checkpoint);
                let failed = result.is_err();
                let _ = reply.send(result);
                if failed {
                    break;
                }
            }
        });
        Pipeline {
            sender,
            in_flight: VecDeque::with_capacity(depth),
            depth,
        }
    }

    /// Whether the next [`Pipeline::send`] must first land the oldest.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight.len() >= self.depth
    }

    /// Queues a checkpoint (the caller lands one first when full).
    pub(crate) fn send(&mut self, checkpoint: Checkpoint, batch: LandedBatch) {
        let (reply, receiver) = oneshot::channel();
        // A closed queue (the writer stopped after a failure) shows as a
        // dropped reply when this checkpoint is landed.
        let _ = self.sender.send((checkpoint, reply));
        self.in_flight.push_back(InFlight {
            reply: receiver,
            batch,
        });
    }

    /// Waits for the oldest checkpoint in flight (`None`: none).
    pub(crate) async fn land_oldest(&mut self) -> Result<Option<LandedBatch>, EngineError> {
        let Some(oldest) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        match oldest.reply.await {
            // Written now or recognised as written by an attempt whose
            // answer was lost: either way the batch is durable.
            Ok(Ok(_)) => Ok(Some(oldest.batch)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(EngineError::Failed(
                "writing a checkpoint failed: the checkpoint writer stopped".to_string(),
            )),
        }
    }

    /// Waits for every checkpoint in flight after the run failed with
    /// `err` (so the output and the durable state agree) and returns the
    /// error to report: a refused checkpoint (lock lost) wins.
    pub(crate) async fn abandon(mut self, err: EngineError) -> EngineError {
        while let Some(oldest) = self.in_flight.pop_front() {
            if let Ok(Err(EngineError::Fenced)) = oldest.reply.await {
                return EngineError::Fenced;
            }
        }
        err
    }
}
