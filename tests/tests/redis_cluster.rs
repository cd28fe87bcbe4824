//! SPEC 8 on a Redis Cluster: six nodes (three primaries, three replicas)
//! made with `redis-cli --cluster create` ([`ClusterTopology`]), the
//! binaries on `REDIS_URL=redis+cluster://...`. Every key of a datastore
//! carries the `{PREFIX}` hash tag, so each datastore lives in one slot and
//! every script runs on one node; several prefixes spread over the nodes.

use std::time::Duration;

use migration_tests::binaries::Binary;
use migration_tests::deployment::{
    motions, route_flow, run_command, run_with_fault, seed, Deployment, FlowResult,
};
use migration_tests::process::run_to_exit;
use migration_tests::topology::ClusterTopology;
use migration_tests::ServiceOptions;

#[tokio::test]
async fn the_route_flow_runs_on_a_redis_cluster() {
    let topology = ClusterTopology::start();
    let deployment = Deployment::start(&topology.url(), "cluster", 1, |options| options);
    deployment
        .wait_for_workers(1, Duration::from_secs(30))
        .await;
    route_flow(&deployment.client(), 30).await;
}

#[tokio::test]
async fn datastores_with_different_prefixes_migrate_at_once_without_touching_each_other() {
    let topology = ClusterTopology::start();
    let prefixes = topology.prefixes_on_distinct_primaries("tenant", 3);
    let deployments: Vec<Deployment> = prefixes
        .iter()
        .map(|prefix| Deployment::start(&topology.url(), prefix, 1, |options| options))
        .collect();
    for deployment in &deployments {
        deployment
            .wait_for_workers(1, Duration::from_secs(30))
            .await;
    }
    // Different sizes: a datastore that saw another's positions, jobs or
    // models would not match its own expectation.
    let flows: Vec<_> = deployments
        .iter()
        .zip([20u64, 27, 34])
        .map(|(deployment, positions)| {
            let client = deployment.client();
            tokio::spawn(async move { route_flow(&client, positions).await })
        })
        .collect();
    for flow in flows {
        flow.await.expect("a route flow panicked");
    }

    // Every key in the Cluster belongs to one of the three datastores.
    let mut foreign = Vec::new();
    for node in &topology.nodes {
        let keys: Vec<String> = node.query(redis::cmd("KEYS").arg("*")).unwrap_or_default();
        foreign.extend(keys.into_iter().filter(|key| {
            !prefixes
                .iter()
                .any(|prefix| key.starts_with(&format!("{{{prefix}}}:")))
        }));
    }
    assert!(foreign.is_empty(), "keys outside the prefixes: {foreign:?}");
    // ... and each datastore's keys are on its own primary: three nodes
    // ran the scripts, each for one datastore.
    for prefix in &prefixes {
        let port = topology
            .primary_port_for_key(&format!("{{{prefix}}}:probe"))
            .expect("slot map");
        let node = topology
            .nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap();
        let keys: Vec<String> = node
            .query(redis::cmd("KEYS").arg(format!("{{{prefix}}}:*")))
            .unwrap();
        assert!(keys.len() > 3, "{prefix} on {port}: {keys:?}");
    }
}

/// Positions of the failover runs; at 40 positions a second a command
/// runs for about three seconds, so the kill lands in the middle of it.
const POSITIONS: u64 = 120;
const THROTTLE: u32 = 40;
const LEASE_MS: u64 = 2000;

#[tokio::test]
async fn kill_9_of_the_primary_during_migrate_and_finalize_changes_no_result() {
    let mut topology = ClusterTopology::start();
    let url = topology.url();
    // Each disturbed datastore on a primary of its own, so the second kill
    // hits a primary that still has its replica.
    let prefixes = topology.prefixes_on_distinct_primaries("storm", 2);
    let calm = Deployment::start(&url, "calm", 1, |options| options);
    let storm_options = |options: migration_tests::ServiceOptions| {
        options
            .worker_lock_ttl_ms(LEASE_MS)
            .worker_max_positions_per_second(THROTTLE)
            // the fault comes while the job runs: answer at once
            .migration_wait_ms(0)
    };
    let during_migrate = Deployment::start(&url, &prefixes[0], 1, storm_options);
    let during_finalize = Deployment::start(&url, &prefixes[1], 1, storm_options);
    for deployment in [&calm, &during_migrate, &during_finalize] {
        deployment
            .wait_for_workers(1, Duration::from_secs(30))
            .await;
    }
    let expected: FlowResult = route_flow(&calm.client(), POSITIONS).await;

    // 1. kill -9 of the datastore's primary a quarter of the way through
    // migrate.
    let slot_key = format!("{{{}}}:probe", prefixes[0]);
    let client = during_migrate.client();
    seed(&client, POSITIONS).await;
    topology.primary_for_key(&slot_key).wait_for_replicas(1);
    let mut killed = 0;
    let migrate = run_with_fault(&client, "migrate", POSITIONS / 4, || {
        killed = topology.kill_primary_for_key(&slot_key)
    })
    .await;
    assert!(
        migrate.answer.get("exception").is_none(),
        "{}",
        migrate.answer
    );
    assert_eq!(
        migrate.answer["status"], "finalization_required",
        "{}",
        migrate.answer
    );
    assert_eq!(client.stats().await, expected.stats_after_migrate);
    assert_eq!(motions(&client).await, expected.models_after_migrate);
    let answer = run_command(&client, "finalize", Duration::from_secs(120)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(client.stats().await, expected.stats_after_finalize);
    assert_eq!(motions(&client).await, expected.models_after_finalize);
    topology.wait_for_new_primary(&slot_key, killed);
    eprintln!(
        "FAILOVER TIMING cluster, kill -9 during migrate: next output line after {:?} ({} failed progress polls)",
        migrate.fault_to_next_line, migrate.failed_polls
    );

    // 2. kill -9 of the other datastore's primary half way through
    // finalize (its migrate part).
    let slot_key = format!("{{{}}}:probe", prefixes[1]);
    during_finalize
        .wait_for_workers(1, Duration::from_secs(30))
        .await;
    let client = during_finalize.client();
    seed(&client, POSITIONS).await;
    topology.primary_for_key(&slot_key).wait_for_replicas(1);
    let mut killed = 0;
    let finalize = run_with_fault(&client, "finalize", POSITIONS / 2, || {
        killed = topology.kill_primary_for_key(&slot_key)
    })
    .await;
    assert!(
        finalize.answer.get("exception").is_none(),
        "{}",
        finalize.answer
    );
    assert_eq!(
        finalize.answer["status"], "no_migration_required",
        "{}",
        finalize.answer
    );
    assert_eq!(client.stats().await, expected.stats_after_finalize);
    assert_eq!(motions(&client).await, expected.models_after_finalize);
    topology.wait_for_new_primary(&slot_key, killed);
    eprintln!(
        "FAILOVER TIMING cluster, kill -9 during finalize: next output line after {:?} ({} failed progress polls)",
        finalize.fault_to_next_line, finalize.failed_polls
    );
}

#[test]
fn a_cluster_url_with_a_database_stops_both_binaries_with_exit_2() {
    for binary in [Binary::Api, Binary::Worker] {
        let options = ServiceOptions::new("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/3")
            .api_addr("127.0.0.1:0");
        let output = run_to_exit(binary, &options, &[], Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{}: {stderr}", binary.name());
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}: {stderr}", binary.name());
        assert!(
            lines[0].contains("REDIS_URL") && lines[0].contains("only database 0"),
            "{}: {}",
            binary.name(),
            lines[0]
        );
    }
}
