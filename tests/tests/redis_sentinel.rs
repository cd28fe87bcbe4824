//! SPEC 8 on a Sentinel-managed primary: one primary, two replicas and
//! three sentinels on loopback ([`SentinelTopology`]), the binaries on
//! `REDIS_URL=redis+sentinel://...`.

use std::time::Duration;

use migration_tests::binaries::Binary;
use migration_tests::deployment::{
    motions, route_flow, run_command, run_with_fault, seed, Deployment, FlowResult,
};
use migration_tests::process::run_to_exit;
use migration_tests::topology::SentinelTopology;
use migration_tests::ServiceOptions;

#[tokio::test]
async fn the_route_flow_runs_on_a_sentinel_managed_primary() {
    let topology = SentinelTopology::start();
    let deployment = Deployment::start(&topology.url(), "sentinel", 1, |options| options);
    deployment
        .wait_for_workers(1, Duration::from_secs(30))
        .await;
    route_flow(&deployment.client(), 30).await;
}

/// Positions of the failover runs; at 40 positions a second a command
/// runs for about three seconds, so the kill lands in the middle of it.
const POSITIONS: u64 = 120;
const THROTTLE: u32 = 40;
const LEASE_MS: u64 = 2000;

#[tokio::test]
async fn kill_9_of_the_primary_during_migrate_and_finalize_changes_no_result() {
    let mut topology = SentinelTopology::start();
    let url = topology.url();
    let calm = Deployment::start(&url, "calm", 1, |options| options);
    let storm_options = |options: migration_tests::ServiceOptions| {
        options
            .worker_lock_ttl_ms(LEASE_MS)
            .worker_max_positions_per_second(THROTTLE)
            // the fault comes while the job runs: answer at once
            .migration_wait_ms(0)
    };
    let during_migrate = Deployment::start(&url, "migrate", 1, storm_options);
    let during_finalize = Deployment::start(&url, "finalize", 1, storm_options);
    for deployment in [&calm, &during_migrate, &during_finalize] {
        deployment
            .wait_for_workers(1, Duration::from_secs(30))
            .await;
    }
    // The undisturbed run of the same data, on the same deployment.
    let expected: FlowResult = route_flow(&calm.client(), POSITIONS).await;

    // 1. kill -9 of the primary a third of the way through migrate.
    let client = during_migrate.client();
    seed(&client, POSITIONS).await;
    topology.primary().wait_for_replicas(2);
    let mut killed = 0;
    let migrate = run_with_fault(&client, "migrate", POSITIONS / 4, || {
        killed = topology.kill_primary()
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

    eprintln!(
        "FAILOVER TIMING sentinel, kill -9 during migrate: next output line after {:?} ({} failed progress polls)",
        migrate.fault_to_next_line, migrate.failed_polls
    );

    // 2. kill -9 of the new primary half way through finalize (its migrate
    // part: finalize migrates everything left before it flips).
    let primary = topology.wait_for_new_primary(killed);
    // That api's connection still points at the dead primary: its first
    // command fails (a write would answer 503, "not executed") and makes it
    // ask the sentinels again. Let health do that before seeding.
    during_finalize
        .wait_for_workers(1, Duration::from_secs(30))
        .await;
    let client = during_finalize.client();
    seed(&client, POSITIONS).await;
    topology.primary().wait_for_replicas(1);
    let finalize = run_with_fault(&client, "finalize", POSITIONS / 2, || {
        topology.kill_primary();
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
    topology.wait_for_new_primary(primary);

    eprintln!(
        "FAILOVER TIMING sentinel, kill -9 during finalize: next output line after {:?} ({} failed progress polls)",
        finalize.fault_to_next_line, finalize.failed_polls
    );
}

#[test]
fn a_sentinel_url_without_a_service_stops_both_binaries_with_exit_2() {
    for binary in [Binary::Api, Binary::Worker] {
        let options = ServiceOptions::new("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380")
            .api_addr("127.0.0.1:0");
        let output = run_to_exit(binary, &options, &[], Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{}: {stderr}", binary.name());
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}: {stderr}", binary.name());
        assert!(
            lines[0].contains("REDIS_URL") && lines[0].contains("no service name"),
            "{}: {}",
            binary.name(),
            lines[0]
        );
    }
}

/// `deploy/docker-compose.sentinel.yml` (no Docker here, so its structure):
/// two replicas of `redis`, three sentinels monitoring it, and api and
/// workers whose `REDIS_URL` names exactly those sentinels and that service.
#[test]
fn the_compose_sentinel_variant_points_the_binaries_at_its_sentinels() {
    use migration_shared::redis_client::RedisTarget;
    use yaml_rust2::{Yaml, YamlLoader};

    let path =
        migration_tests::binaries::workspace_root().join("deploy/docker-compose.sentinel.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let documents = YamlLoader::load_from_str(&text).expect("valid YAML");
    let services = &documents[0]["services"];
    let strings = |yaml: &Yaml| -> Vec<String> {
        yaml.as_vec()
            .unwrap_or_else(|| panic!("a list: {yaml:?}"))
            .iter()
            .map(|item| item.as_str().expect("a string").to_string())
            .collect()
    };
    for replica in ["redis-replica-1", "redis-replica-2"] {
        let command = strings(&services[replica]["command"]).join(" ");
        assert!(
            command.contains("/usr/local/etc/redis/redis.conf --replicaof redis 6379"),
            "{replica}: {command}"
        );
        assert!(strings(&services[replica]["volumes"])
            .contains(&"./deploy/redis.conf:/usr/local/etc/redis/redis.conf:ro".to_string()));
    }
    let sentinels = ["sentinel-1", "sentinel-2", "sentinel-3"];
    let mut monitored = None;
    for sentinel in sentinels {
        let script = strings(&services[sentinel]["command"]).join("\n");
        let monitor = script
            .lines()
            .find_map(|line| line.trim().strip_prefix("sentinel monitor "))
            .unwrap_or_else(|| panic!("{sentinel} monitors nothing: {script}"));
        let fields: Vec<&str> = monitor.split_whitespace().collect();
        assert_eq!(fields[1..], ["redis", "6379", "2"], "{sentinel}: {monitor}");
        monitored = Some(fields[0].to_string());
        assert!(script.contains("--sentinel"), "{sentinel}");
    }
    for binary in ["api", "worker"] {
        let url = services[binary]["environment"]["REDIS_URL"]
            .as_str()
            .unwrap_or_else(|| panic!("{binary} has no REDIS_URL"));
        let RedisTarget::Sentinel(target) = RedisTarget::parse(url).unwrap() else {
            panic!("{binary}: {url} is not a Sentinel URL");
        };
        let expected: Vec<(String, u16)> = sentinels
            .iter()
            .map(|name| (name.to_string(), 26379))
            .collect();
        assert_eq!(target.sentinels, expected, "{binary}");
        assert_eq!(Some(target.service), monitored, "{binary}");
        for sentinel in sentinels {
            assert_eq!(
                services[binary]["depends_on"][sentinel]["condition"].as_str(),
                Some("service_healthy"),
                "{binary} waits for {sentinel}"
            );
        }
    }
}
