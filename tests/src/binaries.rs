//! Finding (and, once per test process, building) the real binaries.
//!
//! A test executable lives in `<target>/<profile>/deps/<test>-<hash>`; the
//! binaries live in `<target>/<profile>/`. `CARGO_TARGET_DIR` moves both, so
//! the executable's own location is the primary source of truth, and
//! `CARGO_TARGET_DIR` (or the workspace's `target/`) the fallback when a test
//! runs from elsewhere.
//!
//! Why build at all: `cargo test -p migration-tests` does not build the bin
//! targets of other packages, so a test could silently run a missing or stale
//! `migration-api`. The first lookup in a process therefore runs
//! `cargo build --workspace --bins` (a no-op of about a second when fresh)
//! under a process-wide lock, with the same profile and target dir. It builds
//! the whole workspace, not only the two binaries, so that the feature set of
//! `migration-shared` is the same as in `scripts/test.sh` and the two builds
//! never invalidate each other. Set `MIGRATION_TESTS_NO_BUILD=1` to skip the
//! build and use whatever binaries exist.
//!
//! [`help_defaults`] reads the configuration variables a binary documents in
//! its `--help`, so that tests comparing docs and deployment files with the
//! real configuration parse that output in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::options::ServiceOptions;
use crate::process::{run_to_exit, START_TIMEOUT};

/// The two binaries of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `migration-api`.
    Api,
    /// `migration-worker`.
    Worker,
}

impl Binary {
    /// The binary's name (as in `Cargo.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Binary::Api => "migration-api",
            Binary::Worker => "migration-worker",
        }
    }
}

/// The path of `binary`, built if needed. Panics with a clear message when
/// it cannot be found or built.
pub fn binary_path(binary: Binary) -> PathBuf {
    let dir = binary_dir();
    if let Err(message) = ensure_built(&dir) {
        panic!("{message}");
    }
    let path = dir.join(format!("{}{}", binary.name(), std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary {} not found at {}; run `cargo build --workspace --bins` (scripts/test.sh does)",
        binary.name(),
        path.display()
    );
    path
}

/// The environment variables `binary`'s `--help` documents
/// (`[env: NAME=] [default: VALUE]`), with their defaults (`None`: no
/// default). Panics when `--help` fails.
pub fn help_defaults(binary: Binary) -> BTreeMap<String, Option<String>> {
    // No variable at all (the harness removes every inherited one), so the
    // help shows the built-in defaults and no `[env: NAME=<value>]`.
    let bare = ServiceOptions::new("").unset("REDIS_URL").unset("RUST_LOG");
    let output = run_to_exit(binary, &bare, &["--help"], START_TIMEOUT);
    assert!(output.status.success(), "{} --help failed", binary.name());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("[env: ")? + "[env: ".len()..];
            let name = rest[..rest.find('=')?].to_string();
            let default = line.find("[default: ").map(|start| {
                let value = &line[start + "[default: ".len()..];
                value[..value.find(']').unwrap_or(value.len())].to_string()
            });
            Some((name, default))
        })
        .collect()
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `<target>/<profile>`: where cargo puts the binaries for the profile the
/// running test was built with.
pub fn binary_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|name| name == "deps") {
                if let Some(profile_dir) = dir.parent() {
                    return profile_dir.to_path_buf();
                }
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// Runs `cargo build --workspace --bins` once per process (see the module
/// comment); later calls return the first result.
fn ensure_built(binary_dir: &Path) -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if std::env::var_os("MIGRATION_TESTS_NO_BUILD").is_some_and(|v| v != "0") {
                return Ok(());
            }
            build(binary_dir)
        })
        .clone()
}

fn build(binary_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--workspace", "--bins"])
        .current_dir(workspace_root());
    // Same profile and target dir as the running test, so the build is a
    // no-op when `cargo test` was preceded by `cargo build --workspace --bins`.
    match binary_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    if let Some(target_dir) = binary_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let output = command.output().map_err(|err| {
        format!(
            "cannot run `{} build --workspace --bins` to build migration-api and migration-worker: {err}",
            Path::new(&cargo).display()
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build --workspace --bins` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
