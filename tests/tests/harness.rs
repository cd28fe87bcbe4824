//! Self-test of the harness: the private Redis, the binary lookup, the
//! process helpers and the HTTP client. If these fail, every end-to-end test
//! would fail for a reason that has nothing to do with the product.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use migration_tests::binaries::{binary_dir, binary_path, Binary};
use migration_tests::client::padded_json_body;
use migration_tests::options::SPEC_VARIABLES;
use migration_tests::process::{run_to_exit, ServiceProcess};
use migration_tests::{Auth, RedisServer, ServiceOptions, TestCluster};

#[test]
fn private_redis_answers_and_is_not_the_default_port() {
    let redis = RedisServer::start();
    assert_ne!(redis.port(), 6379);
    let mut conn = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let value: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(value, "v");
}

#[test]
fn both_binaries_are_found_next_to_the_test_executable() {
    for binary in [Binary::Api, Binary::Worker] {
        let path = binary_path(binary);
        assert!(path.is_file(), "{}", path.display());
        assert_eq!(path.parent().unwrap(), binary_dir());
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(binary.name()));
    }
}

#[test]
fn options_remove_inherited_spec_variables() {
    // The child must never see a REDIS_URL the test process inherited.
    let options = ServiceOptions::new("redis://127.0.0.1:1/0").unset("RUST_LOG");
    let mut command = std::process::Command::new("env");
    command
        .env("REDIS_KEY_PREFIX", "inherited")
        .env("KEEP_ME", "1");
    options.apply(&mut command);
    let output = command.output().expect("run env");
    let env = String::from_utf8_lossy(&output.stdout);
    assert!(env.contains("REDIS_URL=redis://127.0.0.1:1/0"), "{env}");
    assert!(env.contains("KEEP_ME=1"), "{env}");
    for name in SPEC_VARIABLES.iter().filter(|name| **name != "REDIS_URL") {
        assert!(!env.contains(&format!("\n{name}=")), "{name} leaked: {env}");
    }
}

fn sleeper(dir: &std::path::Path) -> ServiceProcess {
    let mut command = std::process::Command::new("sleep");
    command.arg("60");
    ServiceProcess::spawn_command("sleep", command, dir)
}

#[test]
fn sigstop_sigcont_and_kill9_act_on_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = sleeper(dir.path());
    assert!(process.is_running());
    process.sigstop();
    assert!(
        reaches_state(process.pid(), |s| s == 'T'),
        "stopped after SIGSTOP"
    );
    process.sigcont();
    assert!(
        reaches_state(process.pid(), |s| s != 'T'),
        "running after SIGCONT"
    );
    let status = process.kill9();
    assert_eq!(status.signal(), Some(9));
    assert_eq!(process.exit_status(), Some(status));
    // Signals after the exit are ignored, never sent to a recycled pid.
    process.sigstop();
}

#[test]
fn sigterm_waits_for_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = sleeper(dir.path());
    let status = process.sigterm();
    assert_eq!(status.signal(), Some(15));
    assert!(!process.is_running());
}

#[test]
fn drop_kills_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let process = sleeper(dir.path());
    let pid = process.pid();
    drop(process);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists after drop"
    );
}

/// Waits up to 5 s until the state letter of `/proc/<pid>/stat` (R, S, T,
/// ...) satisfies `wanted` (signals are delivered asynchronously).
fn reaches_state(pid: u32, wanted: impl Fn(char) -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // "pid (comm) S ..."; comm may contain spaces, so split after ')'.
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim()
            .chars()
            .next()
            .unwrap();
        if wanted(state) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn padded_bodies_have_the_exact_length() {
    for len in [2, 3, 1024, 1024 * 1024 + 1] {
        let body = padded_json_body(len);
        assert_eq!(body.len(), len);
        let _: serde_json::Value = serde_json::from_str(&body).unwrap();
    }
}

#[test]
fn run_to_exit_collects_output_and_status() {
    let output = run_to_exit(
        Binary::Api,
        &ServiceOptions::new("redis://127.0.0.1:1/0"),
        &["--help"],
        Duration::from_secs(30),
    );
    assert!(output.status.code().is_some(), "{:?}", output.status);
}

/// Needs the real `migration-api` (the lead's startup code): until then the
/// stub binary exits at once and this test says so.
#[tokio::test]
async fn a_cluster_starts_an_api_that_answers_health() {
    let cluster = TestCluster::spawn_app();
    let (status, body) = cluster.client().health().await;
    assert!(status == 200 || status == 503, "{status} {body}");
    assert!(cluster.password().starts_with(b"test-password-"));
    assert_eq!(cluster.keys().position(), "{mig}:ds:position");
}

/// Two replicas on one Redis, and signals on a real api: SIGSTOP freezes it
/// (health stops answering), SIGCONT resumes it, SIGTERM ends it with 0.
#[tokio::test]
async fn api_replicas_share_one_redis_and_obey_signals() {
    let mut cluster = TestCluster::builder().apis(2).start();
    assert_ne!(cluster.apis[0].addr(), cluster.apis[1].addr());
    for index in 0..2 {
        let (status, _) = cluster.client_for(index).health().await;
        assert_eq!(status, 200);
    }
    let addr = cluster.apis[1].addr();
    cluster.apis[1].sigstop();
    assert_eq!(migration_tests::process::health_status(addr), None);
    cluster.apis[1].sigcont();
    let (status, _) = cluster.client_for(1).health().await;
    assert_eq!(status, 200);
    let status = cluster.apis[1].sigterm();
    assert_eq!(status.code(), Some(0), "{}", cluster.apis[1].log_tail());
}

/// `restart` keeps the address; `pause_redis` freezes the Redis (a PING
/// times out) until `resume_redis`.
#[tokio::test]
async fn api_restart_keeps_its_address_and_redis_can_be_paused() {
    let mut cluster = TestCluster::builder()
        .migrations(r#"{"migrations": []}"#)
        .start();
    assert!(cluster
        .options()
        .get("MIGRATIONS_FILE")
        .is_some_and(|path| std::path::Path::new(path).starts_with(cluster.dir())));
    let addr = cluster.api().addr();
    let old_pid = cluster.api().pid();
    cluster.apis[0].restart();
    assert_eq!(cluster.api().addr(), addr);
    assert_ne!(cluster.api().pid(), old_pid);
    let (status, _) = cluster.client().health().await;
    assert_eq!(status, 200);

    let mut conn = cluster.redis_connection();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let pid = cluster.pause_redis();
    assert!(redis::cmd("PING").query::<String>(&mut conn).is_err());
    cluster.resume_redis(pid);
    let mut conn = cluster.redis_connection();
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut conn).unwrap(),
        "PONG"
    );
}

/// `password_file` uses the given file as is: the api reads that path, the
/// cluster's client sends its exact content (accepted), and any other
/// password is refused, so the api really checks against that file.
#[tokio::test]
async fn a_cluster_can_use_an_existing_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator_password");
    std::fs::write(&path, b"operator-secret\n").unwrap();
    let cluster = TestCluster::builder()
        .password("overridden")
        .password_file(&path)
        .start();
    assert_eq!(
        cluster.options().get("INTERNAL_AUTH_PASSWORD_FILE"),
        Some(path.display().to_string().as_str())
    );
    assert_eq!(cluster.password(), b"operator-secret\n");
    let (status, body) = cluster.client().get_model("motion/1").await;
    assert_eq!(status, 404, "the file's password is accepted: {body}");
    let wrong = cluster.client().with_auth(Auth::password("overridden"));
    let (status, body) = wrong.get_model("motion/1").await;
    assert_eq!(status, 401, "another password is refused: {body}");
}
