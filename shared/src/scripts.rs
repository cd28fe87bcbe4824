//! The datastore's Lua scripts, loaded once and called by SHA (redis-rs falls
//! back to EVAL on NOSCRIPT). Each script's file under `shared/lua/` lists
//! its KEYS and ARGV and what it guarantees.

use std::sync::LazyLock;

use redis::Script;

/// `lua/datastore_commit.lua`: the compare-and-commit of a write body.
pub static DATASTORE_COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/datastore_commit.lua")));
