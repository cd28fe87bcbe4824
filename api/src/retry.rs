//! Read retries: reads ride out a Redis restart or failover of up to about
//! 3 s (SPEC 4.3).
//!
//! When Redis restarts, the first command on the old connection fails
//! ("broken pipe"), and commands fail while the new server is not up yet
//! ("connection refused") or still loads its data (`LOADING`). The shared
//! connection reconnects by itself after such an error, so a read that is
//! simply run again, after a short pause, runs on a fresh connection. That
//! is all this module does: run a read again while its error is of the
//! connection class ([`is_connection_class`]), for at most [`RETRY_WINDOW`]
//! from the first attempt, which keeps the answer inside the route's budget
//! (`crate::route_class`). The last error is returned after that.
//!
//! Only reads go through here (`progress`, `stats`, the readers, health):
//! running them twice changes nothing (`progress` marking a final result as
//! read is idempotent). Writes and the migration commands are never retried:
//! a write whose answer was lost may have happened (SPEC 5.1 leaves the
//! retry to the client, with an `Idempotency-Key`). Errors that are not
//! about the connection (a script error, `WRONGTYPE`, a corrupt record) are
//! returned at once: running the read again would fail the same way.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use migration_shared::datastore::DatastoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// How long after the first attempt a failed read may still be started
/// again. With [`crate::route_class::REQUEST_BUDGET`] of 4 s this leaves
/// the last attempt time to answer.
pub const RETRY_WINDOW: Duration = Duration::from_millis(3500);

/// First pause between attempts; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// True for errors that say the connection (not the request) failed: I/O
/// errors (refused, reset, broken pipe, timed out), a server that is still
/// loading its data, a failover in progress (`TRYAGAIN`, `CLUSTERDOWN`,
/// `MASTERDOWN`, `READONLY` from a demoted primary) and a Sentinel or
/// Cluster that does not know its primary yet.
pub fn is_connection_class(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        ),
        _ => false,
    }
}

/// An error that may be of the connection class.
pub trait ConnectionError {
    /// True when the read may succeed on a fresh connection.
    fn is_connection_class(&self) -> bool;
}

impl ConnectionError for RedisError {
    fn is_connection_class(&self) -> bool {
        is_connection_class(self)
    }
}

impl ConnectionError for DatastoreError {
    fn is_connection_class(&self) -> bool {
        match self {
            DatastoreError::Redis(err) => is_connection_class(err),
            DatastoreError::Corrupt(_) => false,
        }
    }
}

/// Runs `read` until it succeeds, fails with an error not of the connection
/// class, or [`RETRY_WINDOW`] has passed since the first attempt.
pub async fn read<T, E, F, Fut>(what: &'static str, read: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: ConnectionError + std::fmt::Display,
{
    read_within(RETRY_WINDOW, what, read).await
}

/// [`read`] with another window (for tests).
pub async fn read_within<T, E, F, Fut>(
    window: Duration,
    what: &'static str,
    mut read: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: ConnectionError + std::fmt::Display,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1u32;
    loop {
        match read().await {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "read succeeded after a retry");
                }
                return Ok(value);
            }
            Err(err) if err.is_connection_class() && started.elapsed() + pause < window => {
                tracing::debug!(what, attempt, error = %err, "read failed; retrying on a fresh connection");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::from(kind).into()
    }

    #[test]
    fn connection_errors_are_told_from_request_errors() {
        assert!(is_connection_class(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_connection_class(&io(
            std::io::ErrorKind::ConnectionRefused
        )));
        assert!(is_connection_class(&io(std::io::ErrorKind::TimedOut)));
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert!(!is_connection_class(&script));
        let corrupt = RedisError::from((ErrorKind::UnexpectedReturnType, "bad"));
        assert!(!is_connection_class(&corrupt));
        assert!(!DatastoreError::Corrupt("x".into()).is_connection_class());
    }

    #[tokio::test]
    async fn a_connection_error_is_retried_and_a_request_error_is_not() {
        let calls = AtomicU32::new(0);
        let answer: Result<u32, RedisError> = read("test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(io(std::io::ErrorKind::BrokenPipe)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), 2);

        let calls = AtomicU32::new(0);
        let answer: Result<u32, RedisError> = read("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(RedisError::from((ErrorKind::UnexpectedReturnType, "bad")))
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_after_the_window() {
        let window = Duration::from_millis(400);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let answer: Result<u32, RedisError> = read_within(window, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(io(std::io::ErrorKind::ConnectionRefused))
        })
        .await;
        assert!(answer.unwrap_err().is_connection_refusal());
        assert!(calls.load(Ordering::SeqCst) >= 3);
        assert!(started.elapsed() < window);
    }
}
