//! STAND-IN for the engine helper's `worker/src/engine` (same public API as
//! in BRIEF.md), so that the job runner compiles and its mechanics can be
//! tested before the real engine is merged. It does not touch the migration
//! area: it writes a few output lines, honouring the throttle and the
//! cancel token. DELETE THIS FILE when the real engine lands (the merge
//! takes theirs).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// The command a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Migrate into the migration area.
    Migrate,
    /// Migrate what is left and make it live.
    Finalize,
    /// Delete the migration area.
    Reset,
}

/// The fencing token this run holds.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    /// The lock's `fencing_token` at claim time.
    pub token: u64,
}

/// How the engine runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// One line per position.
    pub verbose: bool,
    /// Throttle; 0 = no limit.
    pub max_positions_per_second: u32,
}

/// Where the engine writes its output lines.
pub trait OutputSink: Send {
    /// Appends one line.
    fn line(&mut self, line: String) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The migration failed.
    #[error("{0}")]
    Failed(String),
    /// The lock was lost.
    #[error("fenced")]
    Fenced,
    /// Shutdown requested.
    #[error("cancelled")]
    Cancelled,
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Stand-in engine.
pub struct Engine {
    options: EngineOptions,
    cancel: CancellationToken,
}

impl Engine {
    /// Same signature as the real engine.
    pub fn new(
        _conn: ConnectionManager,
        _keys: Keys,
        _registry: Arc<Registry>,
        _fence: Fence,
        options: EngineOptions,
        cancel: CancellationToken,
    ) -> Engine {
        Engine { options, cancel }
    }

    /// Writes ten "position" lines at the throttle's pace.
    pub async fn run<S: OutputSink>(
        &self,
        command: Command,
        sink: &mut S,
    ) -> Result<(), EngineError> {
        sink.line(format!("Stand-in engine: {command:?}")).await?;
        for position in 1..=10u32 {
            if self.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if self.options.max_positions_per_second > 0 {
                tokio::time::sleep(Duration::from_millis(
                    1000 / u64::from(self.options.max_positions_per_second),
                ))
                .await;
            }
            sink.line(format!("Position {position}")).await?;
        }
        sink.line("Done".to_string()).await
    }
}
