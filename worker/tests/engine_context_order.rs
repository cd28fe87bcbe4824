//! A Rust migration that iterates its context (`context.old`/`context.new`)
//! sees the models in one order, fqid order, however the engine built them:
//! position by position in an uninterrupted run, or loaded from the stored
//! keyframes in a resumed one. So a resumed run ends byte-identical to an
//! uninterrupted one even when a migration's output depends on that order.
//!
//! With a hash map for `Models` this fails: every map gets its own random
//! hash seed, so the two runs (and even two maps of one run) list the same
//! models in different orders.

use std::sync::Arc;

use migration_shared::datastore::{Event, Models};
use migration_shared::migrations::{Migration, MigrationContext, MigrationError, Registry};
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError};
use serde_json::{json, Value};

const POSITIONS: u64 = 25;

/// Writes into every `create`/`update` the fqids of `context.old` and
/// `context.new`, in the order iterating them gives.
struct ListsContext(&'static str);

impl ListsContext {
    fn listed(models: &Models) -> Value {
        let fqids: Vec<String> = models.keys().map(|fqid| fqid.to_string()).collect();
        json!(fqids.join(" "))
    }
}

impl Migration for ListsContext {
    fn name(&self) -> &str {
        self.0
    }

    fn fingerprint_source(&self) -> String {
        format!("lists_context {}", self.0)
    }

    fn migrate(
        &self,
        context: &MigrationContext<'_>,
        mut events: Vec<Event>,
    ) -> Result<Vec<Event>, MigrationError> {
        for event in &mut events {
            if let Event::Create { fields, .. } | Event::Update { fields, .. } = event {
                fields.insert("seen_old".into(), Self::listed(context.old));
                fields.insert("seen_new".into(), Self::listed(context.new));
            }
        }
        Ok(events)
    }
}

fn lists_registry() -> Arc<Registry> {
    registry(vec![
        Arc::new(ListsContext("0002_lists")),
        rename_field("0003_rename", "motion", "title", "name"),
        Arc::new(ListsContext("0004_lists")),
    ])
}

#[tokio::test]
async fn a_resumed_run_sees_the_context_in_the_same_order() {
    let registry = lists_registry();
    let mut reference = Setup::new();
    rich_history(&mut reference, POSITIONS, 42);
    reference.run_ok(&registry, Command::Migrate).await;
    let expected_area = reference.dump_area();
    reference.run_ok(&registry, Command::Finalize).await;
    let expected_final = reference.dump();

    // The test is not vacuous: late positions saw many models, listed in
    // fqid order (collection, then numeric id).
    let last: Vec<Value> = serde_json::from_str(
        expected_area["{t}:mig:events"][POSITIONS.to_string()]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let seen = last
        .iter()
        .find_map(|event| event["fields"]["seen_old"].as_str())
        .expect("the last position has a create or update");
    let listed: Vec<&str> = seen.split(' ').collect();
    assert!(listed.len() >= 8, "{seen}");
    let mut sorted = listed.clone();
    sorted.sort_by_key(|text| fqid(text));
    assert_eq!(listed, sorted);

    for k in [1usize, 6, 13, 20] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 42);
        let (result, lines) = run_stopping(&setup, &registry, Command::Migrate, 1, k).await;
        assert!(
            matches!(result, Err(EngineError::Cancelled)),
            "k={k}: {result:?} {lines:?}"
        );
        // Resumed from the stored keyframes, with another batch size.
        let (result, lines) =
            run_stopping(&setup, &registry, Command::Migrate, 4, usize::MAX).await;
        assert!(result.is_ok(), "k={k}: {result:?} {lines:?}");
        assert!(
            lines
                .iter()
                .any(|line| line.contains("positions already migrated)")
                    && !line.contains("(0 of")),
            "k={k}: did not resume: {lines:?}"
        );
        assert_eq!(setup.dump_area(), expected_area, "k={k}");
        setup.run_ok(&registry, Command::Finalize).await;
        assert_eq!(setup.dump(), expected_final, "k={k}");
    }
}
