//! The process's shutdown signal, shared by both binaries: the first SIGTERM
//! or SIGINT cancels one [`CancellationToken`] that every long-running task
//! watches (the api drains requests, the worker hands its job back).

use tokio_util::sync::CancellationToken;

/// A token cancelled at the first SIGTERM or SIGINT; `what` is logged then.
pub fn cancel_on_signal(what: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: {what}");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
