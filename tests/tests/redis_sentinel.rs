//! SPEC 8 on a Sentinel-managed primary: one primary, two replicas and
//! three sentinels on loopback ([`SentinelTopology`]), the binaries on
//! `REDIS_URL=redis+sentinel://...`.

use std::time::Duration;

use migration_tests::binaries::Binary;
use migration_tests::deployment::{route_flow, Deployment};
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
