//! The migration worker: runs migration jobs under a leased, fenced lock.
//!
//! `engine` migrates, finalizes and resets the datastore's migration area; the
//! job runner (queue, lease, takeover, shutdown) lives beside it. The crate
//! sets the global allocator (mimalloc, see below): binaries linking it must
//! not set another.

pub mod engine;

/// The worker's allocator (for every binary, example and test linking this
/// crate). The engine allocates and frees millions of small strings and
/// maps per run (JSON values, model fields), freed on other threads than the
/// one that allocated them; with glibc's malloc that was over a quarter of
/// the engine's CPU (consolidation, arena locks), and mimalloc made the
/// 100 000-position benchmark 20-35 % faster at the same peak memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
