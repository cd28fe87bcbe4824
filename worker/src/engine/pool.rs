//! The engine's CPU work (parsing, migrating and serialising batches,
//! folding the target keyframe) runs on the rayon pool, awaited from the
//! async loop. One pool for all of it: fewer threads than tokio's blocking
//! pool would start, each with its own allocator heap, so the worker's
//! memory stays close to what the data needs.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::EngineError;

/// Runs `work` on the rayon pool and waits for it without blocking the
/// async runtime. A panic in `work` becomes a `Failed` naming `what`.
pub(crate) async fn on_pool<T, F>(what: &'static str, work: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        if let Ok(result) = catch_unwind(AssertUnwindSafe(work)) {
            let _ = sender.send(result);
        }
    });
    receiver
        .await
        .map_err(|_| EngineError::Failed(format!("{what} failed: it panicked")))
}
