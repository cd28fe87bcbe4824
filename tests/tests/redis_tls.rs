//! SPEC 2 and 8 over TLS: `REDIS_URL=rediss://` to a `redis-server` that
//! speaks only TLS, with a certificate authority the test makes itself.
//! The binaries trust it through `SSL_CERT_FILE` (the standard variable the
//! rustls native root store reads), so the certificate is verified, host
//! name included, as in production.

use std::time::Duration;

use migration_tests::deployment::{route_flow, Deployment};
use migration_tests::topology::{TestCertificates, TlsServer};

#[tokio::test]
async fn the_route_flow_runs_over_tls_with_a_verified_certificate() {
    let server = TlsServer::start();
    let ca_file = server.ca_file.display().to_string();
    let deployment = Deployment::start(&server.url(), "tls", 1, |options| {
        options.env("SSL_CERT_FILE", ca_file)
    });
    deployment
        .wait_for_workers(1, Duration::from_secs(30))
        .await;
    route_flow(&deployment.client(), 30).await;
}

#[tokio::test]
async fn a_certificate_nobody_vouches_for_is_refused() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("other-ca.pem");
    std::fs::write(&stranger, TestCertificates::generate().ca_pem).unwrap();
    let deployment = Deployment::start(&server.url(), "tls", 0, |options| {
        options.env("SSL_CERT_FILE", stranger.display().to_string())
    });
    let (status, body) = deployment.client().health().await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["redis"], "ok", "{body}");
    let (status, body) = deployment.client().post_migration("stats").await;
    assert_eq!(status, 503, "{body}");
}
