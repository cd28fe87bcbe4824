//! The migration worker: runs migration jobs under a leased, fenced lock.
//!
//! `engine` migrates, finalizes and resets the datastore's migration area; the
//! job runner (queue, lease, takeover, shutdown) lives beside it.

pub mod engine;
