//! The Lua scripts of the migration engine and of `stats`, embedded from
//! `shared/lua/engine_*.lua` and built once.
//!
//! The scripts live in `shared` (not in the worker) because `stats` is read by
//! the api too; only the worker's engine calls the writing ones. Each file's
//! header lists its KEYS and ARGV and what it guarantees.

use std::sync::LazyLock;

use redis::Script;

/// Error code a fenced script returns when the lock's `fencing_token` is not
/// the caller's (`redis::RedisError::code()`).
pub const FENCED: &str = "FENCED";
/// Error code a script returns when what the caller read is no longer what
/// Redis holds (the caller reads again and retries).
pub const STALE: &str = "STALE";

/// `engine_stats.lua`: one consistent snapshot of the stats counters.
pub static STATS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/engine_stats.lua")));

/// `engine_checkpoint.lua`: one fenced, atomic checkpoint of `migrate`.
pub static CHECKPOINT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/engine_checkpoint.lua")));

/// `engine_finalize.lua`: the fenced, atomic flip of `finalize`.
pub static FINALIZE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/engine_finalize.lua")));

/// `engine_reset.lua`: deletes the migration area, fenced.
pub static RESET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/engine_reset.lua")));
