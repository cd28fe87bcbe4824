//! Process-wide memory settings of the worker.
//!
//! Transparent huge pages: on kernels with THP set to `always` (common on
//! servers and on the build machines), the allocator's regions are backed
//! by 2 MB pages as soon as one byte of them is touched, so the worker's
//! resident memory grew by about 50 MB above what its data needs (measured
//! with `scripts/bench.sh`: 105 MB against 56 MB for the same run with a
//! 2-model keyframe cache). The engine's memory is meant to be bounded by
//! `WORKER_KEYFRAME_CACHE_MODELS`, so the worker opts out of THP for its own
//! process (`prctl(PR_SET_THP_DISABLE)`), leaving the system setting alone.

/// Disables transparent huge pages for this process; call first thing in
/// `main`. A kernel that refuses (not Linux, too old) changes nothing but
/// the memory figure, so the error is only logged.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %err, "could not disable transparent huge pages");
    }
}
