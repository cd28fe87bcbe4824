//! Writes live datastore content directly in the documented Redis format
//! (docs/architecture.md), the way the write route stores it: used by the
//! engine tests and the engine benchmark (`worker/examples/bench.rs`), which
//! need a datastore without going through the writer.
//!
//! It keeps the models in memory to build the projection, so it is meant for
//! one writer on a fresh datastore.

use std::collections::BTreeSet;

use migration_shared::datastore::{apply_event, Event, Models};
use migration_shared::keys::Keys;

/// Appends positions to a fresh live datastore.
pub struct LiveWriter {
    keys: Keys,
    models: Models,
    position: u64,
    events: u64,
    collections: BTreeSet<String>,
}

impl LiveWriter {
    pub fn new(keys: Keys) -> LiveWriter {
        LiveWriter {
            keys,
            models: Models::new(),
            position: 0,
            events: 0,
            collections: BTreeSet::new(),
        }
    }

    /// The models as the write route would hold them.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Adds the commands that write one position at `mi` to `pipe`; returns
    /// the position. Validates the events like the writer does.
    pub fn stage(
        &mut self,
        pipe: &mut redis::Pipeline,
        mi: u64,
        events: Vec<Event>,
    ) -> Result<u64, String> {
        let position = self.position + 1;
        let mut models = self.models.clone();
        for event in &events {
            apply_event(&mut models, event, position)
                .map_err(|err| format!("{} {}: {err}", event.type_name(), event.fqid()))?;
        }
        Ok(self.stage_applied(pipe, mi, &events, models))
    }

    /// Like [`LiveWriter::stage`], without cloning the models (for bulk data
    /// known to be valid).
    pub fn stage_trusted(&mut self, pipe: &mut redis::Pipeline, mi: u64, events: &[Event]) -> u64 {
        let position = self.position + 1;
        let mut models = std::mem::take(&mut self.models);
        for event in events {
            apply_event(&mut models, event, position).expect("valid bulk data");
        }
        self.stage_applied(pipe, mi, events, models)
    }

    /// Adds the commands that write the next position, whose `events` are
    /// already applied to `models` (the models after it), to `pipe`; makes
    /// `models` the writer's. Returns the position.
    fn stage_applied(
        &mut self,
        pipe: &mut redis::Pipeline,
        mi: u64,
        events: &[Event],
        models: Models,
    ) -> u64 {
        let position = self.position + 1;
        let k = &self.keys;
        pipe.hset(
            k.positions(),
            position,
            format!(
                r#"{{"timestamp":{},"user_id":1,"information":{{}}}}"#,
                1_700_000_000 + position
            ),
        )
        .hset(k.position_mi(), position, mi)
        .hset(k.events(), position, serde_json::to_string(events).unwrap());
        for event in events {
            let fqid = event.fqid();
            pipe.hset(
                k.models(fqid.collection()),
                fqid.id(),
                models[fqid].to_stored_json(),
            );
            if self.collections.insert(fqid.collection().to_string()) {
                pipe.sadd(k.collections(), fqid.collection());
            }
        }
        self.events += events.len() as u64;
        pipe.set(k.position(), position)
            .set(k.event_count(), self.events)
            .set(k.migration_index(), mi);
        self.models = models;
        self.position = position;
        position
    }

    /// Writes one position at `mi` now.
    pub fn write(
        &mut self,
        conn: &mut redis::Connection,
        mi: u64,
        events: Vec<Event>,
    ) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let position = self.stage(&mut pipe, mi, events)?;
        pipe.query::<()>(conn).map_err(|err| err.to_string())?;
        Ok(position)
    }
}
