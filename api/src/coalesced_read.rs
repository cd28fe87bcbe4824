//! One read for many concurrent callers, none answered from a read older
//! than its call.
//!
//! `progress` is polled by every operator tool and every `migrationctl`, on
//! every replica, and each poll used to cost one Redis round trip: the
//! route's rate was bound by Redis, not by the api. Concurrent polls on one
//! replica want the same answer, so they share one read. What they may not
//! share is an *old* read: an operator who polls after the job finished must
//! see it finished, so an answer must come from a read that started after
//! the call arrived. A call that arrives while a read is running therefore
//! waits for the next read, which starts as soon as the running one ends
//! and answers every call that arrived before it started. Under load there
//! is one read at a time per replica, each answering the whole batch that
//! piled up during the previous one; a lone call costs what it cost before
//! (one read, started at once).
//!
//! The reads run in a task of their own, not in a caller's: a caller may be
//! dropped at any moment (its client went away, its budget ran out, see
//! `crate::route_class`), and that must neither cancel the read the others
//! wait for nor leave them waiting for a read nobody runs. A read whose
//! callers have all gone is not started. A read that panics answers its
//! callers [`ReadLost`] and the next read runs as usual.
//!
//! What is read, how long a read may take and whether it is retried is the
//! caller's: the value (success or error) is handed to every caller as is,
//! so errors reach each of them exactly as a read of its own would have.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use tokio::sync::watch;

/// Coalesces concurrent reads of one value (see the module doc).
#[derive(Debug)]
pub struct CoalescedRead<T> {
    slot: Mutex<Slot<T>>,
}

#[derive(Debug)]
struct Slot<T> {
    /// The read that has not started yet: callers that arrive now join it.
    /// Taken out (under this lock) right before the read starts, so every
    /// caller that joined it arrived before it started.
    next: Option<watch::Sender<Option<T>>>,
    /// Whether the task that runs the reads is alive; it ends when there is
    /// no next read.
    running: bool,
}

/// The read a caller waited for panicked: there is no value to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared read failed unexpectedly (see the api's log); retry")]
pub struct ReadLost;

impl<T> Default for CoalescedRead<T> {
    fn default() -> Self {
        CoalescedRead {
            slot: Mutex::new(Slot {
                next: None,
                running: false,
            }),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> CoalescedRead<T> {
    /// The value of a read that started after this call: the next one to
    /// start, shared with every caller that joins it before it does. `read`
    /// runs that read; it is used only when no reads are running, and then
    /// for every read until they stop, so every caller must pass the same
    /// read.
    pub async fn read<F, Fut>(self: &Arc<Self>, read: F) -> Result<T, ReadLost>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut answer = {
            let mut slot = self.lock();
            let answer = slot
                .next
                .get_or_insert_with(|| watch::channel(None).0)
                .subscribe();
            if !slot.running {
                slot.running = true;
                tokio::spawn(self.clone().run(read));
            }
            answer
        };
        // Closed without a value: the read panicked.
        let value = answer
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ReadLost)?;
        value.clone().ok_or(ReadLost)
    }

    /// Runs the reads one after the other while callers wait for one.
    async fn run<F, Fut>(self: Arc<Self>, mut read: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let flight = {
                let mut slot = self.lock();
                match slot.next.take() {
                    Some(flight) => flight,
                    None => {
                        slot.running = false;
                        return;
                    }
                }
            };
            if flight.receiver_count() == 0 {
                // Every caller gave up: nobody to answer.
                continue;
            }
            // `read()` inside the block: a panic of the call itself is
            // caught too, so the reads never stop with `running` still set.
            match AssertUnwindSafe(async { read().await })
                .catch_unwind()
                .await
            {
                Ok(value) => {
                    flight.send_replace(Some(value));
                }
                // Dropping `flight` answers its callers `ReadLost`.
                Err(_) => tracing::error!("a coalesced read panicked"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // Nothing panics while holding the lock; a poisoned one is still
        // consistent.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A "store" whose value is a version, bumped by the test, and whose
    /// reads take `delay`; `reads` counts them.
    struct Store {
        version: AtomicU64,
        reads: AtomicU64,
        delay: Duration,
    }

    impl Store {
        fn new(delay: Duration) -> Arc<Store> {
            Arc::new(Store {
                version: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                delay,
            })
        }

        /// A read: the version when it started.
        fn reader(
            self: &Arc<Self>,
        ) -> impl FnMut() -> futures_util::future::BoxFuture<'static, u64> {
            let store = self.clone();
            move || {
                let store = store.clone();
                Box::pin(async move {
                    store.reads.fetch_add(1, Ordering::SeqCst);
                    let version = store.version.load(Ordering::SeqCst);
                    tokio::time::sleep(store.delay).await;
                    version
                })
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_reads_and_never_get_an_older_value() {
        let store = Store::new(Duration::from_millis(5));
        let reads = Arc::new(CoalescedRead::<u64>::default());
        let mut callers = Vec::new();
        for i in 0..200u64 {
            if i % 20 == 0 {
                store.version.fetch_add(1, Ordering::SeqCst);
            }
            // The version this caller knows is current: its answer may not
            // be older.
            let seen = store.version.load(Ordering::SeqCst);
            let (reads, reader) = (reads.clone(), store.reader());
            callers.push(tokio::spawn(async move {
                (seen, reads.read(reader).await.unwrap())
            }));
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        for caller in callers {
            let (seen, answer) = caller.await.unwrap();
            assert!(answer >= seen, "answered {answer}, older than {seen}");
        }
        let count = store.reads.load(Ordering::SeqCst);
        assert!(count < 100, "{count} reads for 200 callers");
        assert!(count >= 2, "{count} reads: the versions moved on");
    }

    #[tokio::test]
    async fn a_caller_that_arrives_during_a_read_waits_for_the_next_one() {
        let store = Store::new(Duration::from_millis(100));
        let reads = Arc::new(CoalescedRead::<u64>::default());
        let first = tokio::spawn({
            let (reads, reader) = (reads.clone(), store.reader());
            async move { reads.read(reader).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "the read started");
        // Changed while the first read runs: the second caller must see it.
        store.version.store(7, Ordering::SeqCst);
        let second = reads.read(store.reader()).await.unwrap();
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(second, 7);
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dropped_caller_breaks_neither_the_read_nor_the_others() {
        let store = Store::new(Duration::from_millis(50));
        let reads = Arc::new(CoalescedRead::<u64>::default());
        // The caller that started the reads gives up at once.
        let gone = tokio::time::timeout(Duration::from_millis(1), reads.read(store.reader())).await;
        assert!(gone.is_err());
        let answers =
            futures_util::future::join_all((0..10).map(|_| reads.read(store.reader()))).await;
        assert!(answers.iter().all(|answer| *answer == Ok(0)), "{answers:?}");
        // The first read (its caller gone) and one for the ten.
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);

        // A read nobody waits for any more is not run.
        let store = Store::new(Duration::from_millis(50));
        let reads = Arc::new(CoalescedRead::<u64>::default());
        let running = tokio::spawn({
            let (reads, reader) = (reads.clone(), store.reader());
            async move { reads.read(reader).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiting =
            tokio::time::timeout(Duration::from_millis(10), reads.read(store.reader())).await;
        assert!(waiting.is_err());
        assert_eq!(running.await.unwrap(), Ok(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_read_that_panics_answers_read_lost_and_the_next_read_runs() {
        let reads = Arc::new(CoalescedRead::<u64>::default());
        let calls = Arc::new(AtomicU64::new(0));
        let reader = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert!(n != 0, "the first read fails");
                    n
                }
            }
        };
        assert_eq!(reads.read(reader.clone()).await, Err(ReadLost));
        assert_eq!(reads.read(reader).await, Ok(1));
    }
}
