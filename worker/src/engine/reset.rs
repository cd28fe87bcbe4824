//! `reset`: deletes the whole migration area with one fenced script; live
//! data is never touched, so `migrate` followed by `reset` is a dry run.

use super::{Engine, EngineError, OutputSink};

pub(crate) async fn reset<S: OutputSink>(engine: &Engine, sink: &mut S) -> Result<(), EngineError> {
    let positions = engine.store.reset().await?;
    let line = if positions == 0 {
        "Reset finished: there was no migration data".to_string()
    } else {
        format!("Reset finished: deleted the migration data of {positions} positions")
    };
    sink.line(line).await
}
