//! Every Redis key name of the product, built in one place.
//!
//! All keys start with `{PREFIX}:`: the braces make the prefix a Redis Cluster
//! hash tag, so all keys of one datastore live in one slot and every Lua
//! script may touch any of them. `docs/redis-keys.md` mirrors this module;
//! change both together.

/// Builds key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{PREFIX}:` — the hash-tagged start of every key.
    base: String,
}

impl Keys {
    /// Keys under `REDIS_KEY_PREFIX` = `prefix` (without braces).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            base: format!("{{{prefix}}}:"),
        }
    }

    /// `{PREFIX}:` — what every key starts with (for scripts that build
    /// per-collection or per-job keys themselves).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.base, suffix)
    }

    // ----- live datastore -----

    /// String: last committed position number; absent when empty.
    pub fn position(&self) -> String {
        self.key("ds:position")
    }
    /// String: the live migration index.
    pub fn migration_index(&self) -> String {
        self.key("ds:migration_index")
    }
    /// String: the number of live events.
    pub fn event_count(&self) -> String {
        self.key("ds:event_count")
    }
    /// Hash: position -> JSON metadata (timestamp, user_id, information).
    pub fn positions(&self) -> String {
        self.key("ds:positions")
    }
    /// Hash: position -> migration index of the position.
    pub fn position_mi(&self) -> String {
        self.key("ds:position_mi")
    }
    /// Hash: position -> JSON array of its stored events.
    pub fn events(&self) -> String {
        self.key("ds:events")
    }
    /// Hash: id -> JSON model of `collection` (the projection readers use).
    pub fn models(&self, collection: &str) -> String {
        self.key(&format!("ds:models:{collection}"))
    }
    /// Set: collections that have a models hash.
    pub fn collections(&self) -> String {
        self.key("ds:collections")
    }
    /// String with a TTL: the owner of the short exclusive writer token,
    /// taken by a writer that lost several races (see the writer).
    pub fn writer_token(&self) -> String {
        self.key("ds:writer_token")
    }
    /// Hash with a TTL: the claim and, once done, the kept answer of one
    /// `Idempotency-Key` of the write route (the key is visible ASCII, so
    /// it is used as it is).
    pub fn idempotency(&self, key: &str) -> String {
        self.key(&format!("ds:idempotency:{key}"))
    }

    // ----- migration area -----

    /// Hash: position -> JSON events at the position's migrated MI.
    pub fn mig_events(&self) -> String {
        self.key("mig:events")
    }
    /// Hash: position -> migrated MI.
    pub fn mig_position_mi(&self) -> String {
        self.key("mig:position_mi")
    }
    /// Hash: migrated MI -> number of positions at it.
    pub fn mig_mi_counts(&self) -> String {
        self.key("mig:mi_counts")
    }
    /// Hash: id -> JSON model of `collection` at MI `mi`, after the last
    /// migrated position.
    pub fn mig_keyframe(&self, mi: u64, collection: &str) -> String {
        self.key(&format!("mig:keyframe:{mi}:{collection}"))
    }
    /// Set: the collections of the keyframe at MI `mi`.
    pub fn mig_keyframe_collections(&self, mi: u64) -> String {
        self.key(&format!("mig:keyframe:{mi}:collections"))
    }
    /// Hash: `cursor`, `target`, `fingerprint` of the migration area.
    pub fn mig_state(&self) -> String {
        self.key("mig:state")
    }
    /// Set: every key of the migration area (so reset needs no SCAN).
    pub fn mig_keys(&self) -> String {
        self.key("mig:keys")
    }

    // ----- jobs, lock, workers -----

    /// String: id of the current job (queued, running or finished).
    pub fn current_job(&self) -> String {
        self.key("job:current")
    }
    /// Hash: the job record.
    pub fn job(&self, job_id: &str) -> String {
        self.key(&format!("job:{job_id}"))
    }
    /// Stream: the job's output lines.
    pub fn job_output(&self, job_id: &str) -> String {
        self.key(&format!("job:{job_id}:output"))
    }
    /// List: wake-up signals for idle workers (a new job was queued or handed back).
    pub fn job_wakeup(&self) -> String {
        self.key("job:wakeup")
    }
    /// Hash with a TTL (the lease): who holds the global lock.
    pub fn lock(&self) -> String {
        self.key("lock")
    }
    /// String: the fencing counter, incremented at every hand-over of the lock.
    pub fn fencing_counter(&self) -> String {
        self.key("lock:fencing_counter")
    }
    /// Sorted set: worker id -> presence expiry (ms since the epoch, Redis time).
    pub fn workers(&self) -> String {
        self.key("workers")
    }

    // ----- metrics -----

    /// Hash: the cluster-wide migration metrics (job outcomes, duration
    /// histogram buckets, takeovers, positions and events migrated), see
    /// `crate::metrics`.
    pub fn metrics(&self) -> String {
        self.key("metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_starts_with_the_hash_tag() {
        let keys = Keys::new("mig");
        for key in [
            keys.position(),
            keys.models("motion"),
            keys.mig_keyframe(2, "motion"),
            keys.job("abc"),
            keys.lock(),
        ] {
            assert!(key.starts_with("{mig}:"), "{key}");
        }
        assert_eq!(keys.models("motion"), "{mig}:ds:models:motion");
    }
}
