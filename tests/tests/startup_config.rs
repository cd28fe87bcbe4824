//! SPEC section 2 at the process boundary: `--help` on each binary lists the
//! variables, and a bad value stops the process at start with exit code 2
//! and one line naming the variable. Every check runs once per binary (see
//! `for_each_binary!` at the end), so a failure names the binary.

use std::time::Duration;

use migration_tests::binaries::Binary;
use migration_tests::options::SPEC_VARIABLES;
use migration_tests::process::run_to_exit;
use migration_tests::ServiceOptions;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Options that would otherwise be valid (an unreachable Redis: a config
/// error must be reported before any connection attempt).
fn options() -> ServiceOptions {
    ServiceOptions::new("redis://127.0.0.1:1/0").api_addr("127.0.0.1:0")
}

/// Runs `binary` with `options` and asserts exit code 2 and exactly one
/// stderr line naming `variable`.
fn assert_config_error(binary: Binary, options: &ServiceOptions, variable: &str) {
    let output = run_to_exit(binary, options, &[], TIMEOUT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{} with bad {variable}: {:?}, stderr:\n{stderr}",
        binary.name(),
        output.status
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: one line expected, got:\n{stderr}",
        binary.name()
    );
    assert!(
        lines[0].contains(variable),
        "{}: {:?} should name {variable}",
        binary.name(),
        lines[0]
    );
}

fn help_lists_every_variable(binary: Binary) {
    let output = run_to_exit(binary, &options(), &["--help"], TIMEOUT);
    assert_eq!(output.status.code(), Some(0), "{}", binary.name());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in SPEC_VARIABLES {
        assert!(
            help.contains(variable),
            "{} --help lacks {variable}:\n{help}",
            binary.name()
        );
    }
}

fn unparsable_numbers_exit_2_naming_the_variable(binary: Binary) {
    for (variable, value) in [
        ("MIGRATION_WAIT_MS", "abc"),
        ("WORKER_LOCK_TTL_MS", "-5"),
        ("WORKER_MAX_POSITIONS_PER_SECOND", "fast"),
        ("WORKER_KEYFRAME_CACHE_MODELS", "lots"),
        // Fewer than two models cannot hold a model and read another.
        ("WORKER_KEYFRAME_CACHE_MODELS", "1"),
    ] {
        assert_config_error(binary, &options().env(variable, value), variable);
    }
}

fn bad_urls_prefixes_and_flags_exit_2_naming_the_variable(binary: Binary) {
    for (variable, value) in [
        ("REDIS_URL", "not a url"),
        ("REDIS_KEY_PREFIX", "a{b}"),
        ("OPENSLIDES_DEVELOPMENT", "maybe"),
        ("LOG_FORMAT", "xml"),
    ] {
        assert_config_error(binary, &options().env(variable, value), variable);
    }
}

fn an_unreadable_or_invalid_migrations_file_exits_2(binary: Binary) {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"migrations": [{"name": "x", "ops": [{"op": "bogus"}]}]}"#,
    )
    .unwrap();
    let not_json = dir.path().join("not_json.json");
    std::fs::write(&not_json, "migrations: yes").unwrap();
    for path in [dir.path().join("missing.json"), invalid, not_json] {
        assert_config_error(binary, &options().migrations_file(&path), "MIGRATIONS_FILE");
    }
}

#[test]
fn a_bad_api_addr_stops_the_api_with_exit_2() {
    assert_config_error(Binary::Api, &options().api_addr("nowhere"), "API_ADDR");
}

/// One `#[test]` per binary and check.
macro_rules! for_each_binary {
    ($($check:ident),* $(,)?) => {
        mod api {
            $(#[test] fn $check() { super::$check(super::Binary::Api) })*
        }
        mod worker {
            $(#[test] fn $check() { super::$check(super::Binary::Worker) })*
        }
    };
}

for_each_binary!(
    help_lists_every_variable,
    unparsable_numbers_exit_2_naming_the_variable,
    bad_urls_prefixes_and_flags_exit_2_naming_the_variable,
    an_unreadable_or_invalid_migrations_file_exits_2,
);
