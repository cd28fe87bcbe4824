//! Looking into the private Redis the way an operator does with
//! `redis-cli`: the live datastore keys of `docs/redis-keys.md`, read
//! directly, so a test can check what was stored (not only what a route
//! answers) and that a refused request changed nothing.

use std::collections::BTreeMap;

use migration_shared::datastore::Event;
use redis::Commands;

use crate::cluster::TestCluster;

/// Everything a write could change, for "nothing was written" assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreSnapshot {
    /// `ds:position`.
    pub position: Option<u64>,
    /// `ds:migration_index`.
    pub migration_index: Option<u64>,
    /// `ds:event_count`.
    pub event_count: Option<u64>,
    /// `ds:events`: position -> raw JSON.
    pub events: BTreeMap<u64, String>,
    /// `ds:position_mi`.
    pub position_mi: BTreeMap<u64, u64>,
    /// `ds:positions`: position -> raw JSON metadata.
    pub positions: BTreeMap<u64, String>,
    /// collection -> id -> raw stored model JSON, for every collection in
    /// `ds:collections`.
    pub models: BTreeMap<String, BTreeMap<u64, String>>,
}

impl TestCluster {
    /// `ds:position`: the last committed position, `None` when empty.
    pub fn stored_position(&self) -> Option<u64> {
        self.redis_connection()
            .get(self.keys().position())
            .expect("GET ds:position")
    }

    /// `ds:migration_index`.
    pub fn stored_migration_index(&self) -> Option<u64> {
        self.redis_connection()
            .get(self.keys().migration_index())
            .expect("GET ds:migration_index")
    }

    /// `ds:position_mi[position]`.
    pub fn stored_position_mi(&self, position: u64) -> Option<u64> {
        self.redis_connection()
            .hget(self.keys().position_mi(), position)
            .expect("HGET ds:position_mi")
    }

    /// The events stored at `position` (`ds:events[position]`), parsed as
    /// the shared [`Event`] type; panics when absent or unparsable.
    pub fn stored_events(&self, position: u64) -> Vec<Event> {
        let text: Option<String> = self
            .redis_connection()
            .hget(self.keys().events(), position)
            .expect("HGET ds:events");
        let text = text.unwrap_or_else(|| panic!("no events stored at position {position}"));
        serde_json::from_str(&text).unwrap_or_else(|err| {
            panic!("events at {position} are not stored events: {err}: {text}")
        })
    }

    /// Every live datastore key, read at once.
    pub fn snapshot(&self) -> DatastoreSnapshot {
        let keys = self.keys();
        let mut conn = self.redis_connection();
        let collections: Vec<String> = conn
            .smembers(keys.collections())
            .expect("SMEMBERS ds:collections");
        let mut models = BTreeMap::new();
        for collection in collections {
            let hash: BTreeMap<u64, String> = conn
                .hgetall(keys.models(&collection))
                .expect("HGETALL ds:models:*");
            models.insert(collection, hash);
        }
        DatastoreSnapshot {
            position: conn.get(keys.position()).expect("GET ds:position"),
            migration_index: conn
                .get(keys.migration_index())
                .expect("GET ds:migration_index"),
            event_count: conn.get(keys.event_count()).expect("GET ds:event_count"),
            events: conn.hgetall(keys.events()).expect("HGETALL ds:events"),
            position_mi: conn
                .hgetall(keys.position_mi())
                .expect("HGETALL ds:position_mi"),
            positions: conn
                .hgetall(keys.positions())
                .expect("HGETALL ds:positions"),
            models,
        }
    }
}
