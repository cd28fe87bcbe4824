//! The replica's copy of the current job's output, so that `progress` reads
//! only new stream entries (SPEC 4.1 still answers the full output).
//!
//! One slot, keyed by job id and last entry id ([`OutputCursor`]): only one
//! job is current at a time, so the copy of an older job is simply replaced.
//! A poll asks Redis for the entries after the cursor in one round trip
//! (`jobs::read_current_output`), appends them to the kept text, and
//! answers. Redis stays the truth: the stream length read with the new
//! entries tells whether the kept lines are still the stream's, and when
//! they are not (entries lost by Redis) the whole stream is read again, so
//! every replica answers the same output.
//!
//! Each snapshot is immutable (an `Arc`) and renders its answer once: the
//! many pollers that see the same snapshot share one serialized body
//! (`Bytes`), which is also what bounds the memory of a poll to the cache,
//! not to the number of pollers.

use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use migration_shared::jobs::{JobOutput, JobProgress, OutputCursor};
use migration_shared::stats::MigrationState;
use serde::Serialize;

/// The kept output of one job at one point of its stream.
#[derive(Debug)]
pub struct OutputSnapshot {
    /// Where this copy stands in the job's stream.
    pub cursor: OutputCursor,
    /// Every line read so far, each ending in `\n` (SPEC 4.1's `output`).
    pub text: String,
    running_body: OnceLock<Bytes>,
    final_body: Mutex<Option<(FinalKey, Bytes)>>,
}

/// What a final answer depends on besides the output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FinalKey {
    status: MigrationState,
    exception: Option<String>,
}

/// SPEC 4.1's answer for a job, serialized once per snapshot.
#[derive(Serialize)]
struct JobAnswer<'a> {
    success: bool,
    status: MigrationState,
    output: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<&'a str>,
}

impl OutputSnapshot {
    /// `{"success": true, "status": "migration_running", "output": ...}`.
    pub fn running_body(&self) -> Bytes {
        self.running_body
            .get_or_init(|| self.render(MigrationState::MigrationRunning, None))
            .clone()
    }

    /// The final result: the datastore's `status`, the output and the
    /// job's exception, if any.
    pub fn final_body(&self, status: MigrationState, exception: Option<&str>) -> Bytes {
        let key = FinalKey {
            status,
            exception: exception.map(str::to_string),
        };
        let mut kept = self.final_body.lock().unwrap_or_else(|e| e.into_inner());
        match kept.as_ref() {
            Some((kept_key, body)) if *kept_key == key => body.clone(),
            _ => {
                let body = self.render(status, exception);
                *kept = Some((key, body.clone()));
                body
            }
        }
    }

    fn render(&self, status: MigrationState, exception: Option<&str>) -> Bytes {
        let answer = JobAnswer {
            success: true,
            status,
            output: &self.text,
            exception,
        };
        // Serializing plain strings and an enum cannot fail.
        Bytes::from(serde_json::to_vec(&answer).expect("serialize a progress answer"))
    }
}

/// The replica's cache: the latest snapshot of the current job's output.
#[derive(Debug, Default)]
pub struct OutputCache {
    slot: Mutex<Option<Arc<OutputSnapshot>>>,
}

impl OutputCache {
    /// The kept snapshot: ask Redis for what follows its cursor, then
    /// [`OutputCache::update`] with it.
    pub fn latest(&self) -> Option<Arc<OutputSnapshot>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Merges what Redis answered after `base`'s cursor (`base` as returned
    /// by [`OutputCache::latest`] before the read) and returns the snapshot
    /// to answer from, with the job's state; `None` when there is no
    /// current job. Keeps the result when it is further than the kept one.
    pub fn update(
        &self,
        base: Option<&Arc<OutputSnapshot>>,
        read: Option<JobOutput>,
    ) -> Option<(JobProgress, Arc<OutputSnapshot>)> {
        let JobOutput {
            job,
            cursor,
            lines,
            continued,
        } = read?;
        // `continued`: the lines follow the cursor we asked with, `base`'s.
        let base = base.filter(|_| continued);
        if let Some(base) = base {
            if lines.is_empty() && base.cursor == cursor {
                // Unchanged: the kept snapshot and its rendered body.
                return Some((job, base.clone()));
            }
        }
        let kept_len = base.map_or(0, |base| base.text.len());
        let mut text =
            String::with_capacity(kept_len + lines.iter().map(|l| l.len() + 1).sum::<usize>());
        if let Some(base) = base {
            text.push_str(&base.text);
        }
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        let snapshot = Arc::new(OutputSnapshot {
            cursor,
            text,
            running_body: OnceLock::new(),
            final_body: Mutex::new(None),
        });
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        // A whole read is the truth of its moment (it may follow entries
        // that Redis lost); a continued one replaces only an older copy.
        let further = !continued
            || match slot.as_ref() {
                Some(kept) if kept.cursor.job_id == snapshot.cursor.job_id => {
                    kept.cursor.entries < snapshot.cursor.entries
                }
                _ => true,
            };
        if further {
            *slot = Some(snapshot.clone());
        }
        Some((job, snapshot))
    }
}
