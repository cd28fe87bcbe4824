//! Validating a write body and building what the commit script writes
//! (SPEC 5, 5.1). Pure: no Redis here, so the rules are tested without one.
//!
//! The plan is built against a [`Snapshot`] of exactly what validation
//! depends on (the touched models with their versions, the MI, the current
//! job); the commit script re-checks that snapshot. Positions in a plan are
//! relative (1: the body's first new position): the script numbers them.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::event::Event;
use super::fqid::Fqid;
use super::model::{apply_event, Models};
use super::request::WriteRequest;
use super::writer::WriteError;

/// What a write body was validated against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Last committed position (0: empty).
    pub last_position: u64,
    /// The live MI, if the datastore has one.
    pub migration_index: Option<u64>,
    /// The id in `job:current`, if any.
    pub current_job: Option<String>,
    /// The touched models that exist (live or deleted).
    pub models: Models,
    /// SHA-1 hex of the stored JSON of each model in `models`: the version
    /// the commit script compares.
    pub versions: HashMap<Fqid, String>,
}

/// A validated write body, ready for the commit script.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    /// The MI of the new positions.
    pub migration_index: u64,
    /// Per new position: metadata JSON and events JSON.
    pub positions: Vec<(String, String)>,
    /// Number of events added.
    pub event_count: usize,
    /// Changed models, in fqid order.
    pub models: Vec<ModelWrite>,
}

/// One model the commit writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWrite {
    /// The model.
    pub fqid: Fqid,
    /// The version it was validated against (`None`: it did not exist).
    pub expected_version: Option<String>,
    /// Which of the body's new positions (1-based) changed it last: the
    /// script turns this into `meta_position`.
    pub relative_position: u64,
    /// Its stored JSON without `meta_position`.
    pub json: String,
}

/// Validates a body against `snapshot` and builds what the commit script
/// writes. Pure: the rules of SPEC 5.1 are tested here without Redis. The
/// models' positions in the plan are relative (1: the body's first new
/// position).
pub fn plan_commit(
    requests: &[WriteRequest],
    stored: &[Vec<Event>],
    snapshot: Snapshot,
    default_migration_index: u64,
    timestamp_ms: u64,
) -> Result<CommitPlan, WriteError> {
    let mut models = snapshot.models;
    let versions = snapshot.versions;
    let mut changed: BTreeSet<Fqid> = BTreeSet::new();
    let mut current_mi = snapshot
        .migration_index
        .filter(|_| snapshot.last_position > 0);
    let mut positions = Vec::with_capacity(requests.len());
    let mut event_count = 0;
    for (index, (request, events)) in requests.iter().zip(stored).enumerate() {
        // Relative: the commit script numbers the positions.
        let position = index as u64 + 1;
        let mi = match (current_mi, request.migration_index) {
            (None, given) => given.unwrap_or(default_migration_index),
            (Some(current), Some(given)) if given != current => {
                return Err(WriteError::Invalid(format!(
                    "request {index}: migration_index {given} does not match the datastore's current migration index {current}"
                )));
            }
            (Some(current), _) => current,
        };
        if mi == 0 {
            return Err(WriteError::Invalid(format!(
                "request {index}: migration_index must be at least 1"
            )));
        }
        current_mi = Some(mi);
        for event in events {
            apply_event(&mut models, event, position).map_err(|reason| {
                WriteError::Invalid(format!(
                    "request {index}: {}: {}: {reason}",
                    event.fqid(),
                    event.type_name()
                ))
            })?;
            changed.insert(event.fqid().clone());
        }
        event_count += events.len();
        let metadata = json!({
            "timestamp": timestamp_ms,
            "user_id": request.user_id,
            "information": request.information,
        });
        let events_json = serde_json::to_string(events)
            .map_err(|err| WriteError::Invalid(format!("request {index}: {err}")))?;
        positions.push((metadata.to_string(), events_json));
    }
    let models = changed
        .into_iter()
        .map(|fqid| {
            let model = &models[&fqid];
            ModelWrite {
                expected_version: versions.get(&fqid).cloned(),
                relative_position: model.position,
                json: model.to_stored_json_without_position(),
                fqid,
            }
        })
        .collect();
    Ok(CommitPlan {
        migration_index: current_mi.unwrap_or(default_migration_index),
        positions,
        event_count,
        models,
    })
}
