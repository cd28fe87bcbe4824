//! `migrationctl` (SPEC 9) through the real binaries: exit codes, every
//! output line printed once, `--json`, request errors, and the live
//! progress bar in a real terminal (a tmux pane read with `capture-pane`).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use migration_tests::migration_jobs::*;
use migration_tests::{binary_path, Binary, TestCluster};
use serde_json::Value;

/// Longest a `migrationctl` run may take in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// `migrationctl`, next to the api binary (the harness builds every binary
/// of the workspace).
fn migrationctl() -> PathBuf {
    binary_path(Binary::Api).with_file_name(format!("migrationctl{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `migrationctl args` against the cluster's first api (through the
/// environment variables, as an operator would set them).
async fn run(cluster: &TestCluster, args: &[&str]) -> Output {
    run_with_env(
        args,
        &[
            ("MIGRATION_API_URL", cluster.api().base_url()),
            (
                "INTERNAL_AUTH_PASSWORD_FILE",
                cluster
                    .options()
                    .password_file_path()
                    .expect("the cluster has a password file")
                    .display()
                    .to_string(),
            ),
        ],
    )
    .await
}

async fn run_with_env(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = tokio::process::Command::new(migrationctl());
    command
        .args(args)
        .env_remove("MIGRATION_API_URL")
        .env_remove("INTERNAL_AUTH_PASSWORD_FILE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("migrationctl {args:?} did not end within {RUN_TIMEOUT:?}"))
        .expect("run migrationctl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A cluster over [`MIGRATIONS`] whose command answers come at once and
/// whose worker migrates `throttle` positions a second, seeded with
/// `positions` positions.
async fn seeded_cluster(positions: u64, throttle: u32) -> TestCluster {
    let cluster = cluster(1, 1, throttle, 0);
    seed(&cluster.client(), positions).await;
    cluster
}

/// The job's full output as `progress` returns it now (the final answer is
/// the same on every repeat).
async fn job_output(cluster: &TestCluster) -> String {
    let (status, answer) = cluster.client().progress().await;
    assert_eq!(status, 200, "{answer}");
    output_of(&answer)
}

#[tokio::test]
async fn migrate_follow_prints_every_output_line_once_then_the_status_and_exits_0() {
    let cluster = seeded_cluster(60, 30).await;
    let output = run(&cluster, &["migrate", "--follow"]).await;
    assert_exit(&output, 0);
    let printed = stdout(&output);
    let job = job_output(&cluster).await;
    // Every line of the job's output, in order, once; then the final line.
    assert_eq!(printed, format!("{job}status: finalization_required\n"));
    assert!(job.contains("Migrated 60 positions"), "{job}");
    // The run lasted about two seconds: the output grew while it was
    // followed, so lines arrived in several pieces and still none twice.
    assert!(job.lines().count() >= 6, "{job}");
}

#[tokio::test]
async fn without_a_stream_follow_polls_progress_and_still_prints_every_line_once() {
    // MIGRATION_STREAM_MAX_CLIENTS=0: every stream request gets 503.
    let cluster = TestCluster::builder()
        .workers(1)
        .migrations(MIGRATIONS)
        .configure(|options| {
            options
                .migration_wait_ms(0)
                .worker_max_positions_per_second(30)
                .env("MIGRATION_STREAM_MAX_CLIENTS", "0")
        })
        .start();
    seed(&cluster.client(), 60).await;
    let output = run(&cluster, &["migrate", "--follow"]).await;
    assert_exit(&output, 0);
    let job = job_output(&cluster).await;
    assert_eq!(
        stdout(&output),
        format!("{job}status: finalization_required\n")
    );
    // Polled about once a second over a two-second run: the output grew
    // between polls and no line came twice.
    assert!(job.lines().count() >= 6, "{job}");
    // The stream really is refused here (so the lines above were polled).
    let (status, body) = cluster.client().get("/internal/migrations/stream").await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn verbose_follow_prints_one_line_per_position_once() {
    let cluster = seeded_cluster(30, 30).await;
    let output = run(&cluster, &["migrate", "--verbose", "--follow"]).await;
    assert_exit(&output, 0);
    let printed = stdout(&output);
    for position in 1..=30 {
        let line = format!("Position {position} from MI 1 to MI 4");
        assert_eq!(
            printed.lines().filter(|printed| *printed == line).count(),
            1,
            "{line} printed once:\n{printed}"
        );
    }
    assert_eq!(
        printed,
        format!(
            "{}status: finalization_required\n",
            job_output(&cluster).await
        )
    );
}

#[tokio::test]
async fn a_failing_migration_exits_1_and_prints_the_exception() {
    let cluster = TestCluster::builder()
        .workers(1)
        .migrations(
            r#"{"migrations": [{"name": "0002_needs_summary", "ops": [
                {"op": "require_fields", "collection": "motion", "fields": ["summary"]}]}]}"#,
        )
        .configure(|options| options.migration_wait_ms(0))
        .start();
    seed(&cluster.client(), 5).await;
    let output = run(&cluster, &["migrate", "--follow"]).await;
    assert_exit(&output, 1);
    let (_, answer) = cluster.client().progress().await;
    let exception = answer["exception"]
        .as_str()
        .expect("an exception")
        .to_string();
    assert!(exception.contains("summary"), "{exception}");
    assert_eq!(
        stdout(&output),
        format!(
            "{}migrate ended with an exception; status: migration_required\n",
            output_of(&answer)
        )
    );
    assert!(
        stderr(&output).contains(&format!("exception: {exception}")),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn json_prints_the_final_answer_as_one_object() {
    let cluster = seeded_cluster(20, 40).await;
    let output = run(&cluster, &["migrate", "--follow", "--json"]).await;
    assert_exit(&output, 0);
    let printed = stdout(&output);
    assert_eq!(printed.lines().count(), 1, "one line: {printed}");
    let answer: Value = serde_json::from_str(&printed).expect("a JSON object");
    // The final result, the same on every repeat: equal to `progress` now.
    let (_, again) = cluster.client().progress().await;
    assert_eq!(answer, again);
    assert_eq!(answer["status"], "finalization_required");
    assert_eq!(answer["progress"]["positions_done"], 20);
    assert_eq!(answer["progress"]["positions_total"], 20);

    let stats = run(&cluster, &["stats", "--json"]).await;
    assert_exit(&stats, 0);
    let stats: Value = serde_json::from_str(&stdout(&stats)).expect("a JSON object");
    assert_eq!(stats["stats"]["fully_migrated_positions"], 20);
}

#[tokio::test]
async fn without_follow_migrate_answers_at_once_and_progress_follow_waits_for_the_end() {
    let cluster = seeded_cluster(40, 20).await;
    // stdout is no terminal: no following by default.
    let output = run(&cluster, &["migrate"]).await;
    assert_exit(&output, 0);
    let first = stdout(&output);
    assert!(
        first.ends_with("status: migration_running (the job goes on; `migrationctl progress --follow` follows it)\n"),
        "{first}"
    );
    let output = run(&cluster, &["progress", "--follow"]).await;
    assert_exit(&output, 0);
    assert_eq!(
        stdout(&output),
        format!(
            "{}status: finalization_required\n",
            job_output(&cluster).await
        )
    );
}

#[tokio::test]
async fn stats_prints_the_migration_state() {
    let cluster = seeded_cluster(7, 0).await;
    let output = run(&cluster, &["stats"]).await;
    assert_exit(&output, 0);
    let printed = stdout(&output);
    for line in [
        "status: migration_required",
        "positions: 7",
        "current_migration_index: 1",
        "target_migration_index: 4",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in:\n{printed}");
    }
}

#[tokio::test]
async fn request_errors_exit_2_with_the_message() {
    let cluster = seeded_cluster(3, 0).await;
    let url = cluster.api().base_url();

    // wrong password, given as a flag
    let wrong = cluster.write_file("wrong_password", "not-it");
    let output = run_with_env(
        &[
            "stats",
            "--url",
            &url,
            "--password-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("401"), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));

    // a password file that does not exist
    let output = run_with_env(
        &["stats", "--url", &url, "--password-file", "/nonexistent/pw"],
        &[],
    )
    .await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("cannot read the password file /nonexistent/pw"),
        "{}",
        stderr(&output)
    );

    // nothing listens there
    let port = migration_shared::test_support::free_port();
    let output = run_with_env(
        &["stats"],
        &[
            ("MIGRATION_API_URL", format!("http://127.0.0.1:{port}")),
            (
                "INTERNAL_AUTH_PASSWORD_FILE",
                cluster
                    .options()
                    .password_file_path()
                    .unwrap()
                    .display()
                    .to_string(),
            ),
        ],
    )
    .await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains(&format!(
            "cannot reach the migration api at http://127.0.0.1:{port}"
        )),
        "{}",
        stderr(&output)
    );

    // not an http(s) base URL: refused before any request
    for url in [
        "localhost:9002",
        "ftp://127.0.0.1:9002",
        "http://127.0.0.1:9002/?x=1",
        "nonsense",
    ] {
        let output = run_with_env(&["stats", "--url", url], &[]).await;
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains(&format!("invalid api URL '{url}'")),
            "{url}: {}",
            stderr(&output)
        );
    }

    // a refused command: a job runs (slowly), so `reset` gets the SPEC 4.2
    // message; with --json the api's answer is printed too
    let slow = seeded_cluster(50, 5).await;
    let started = run(&slow, &["migrate"]).await;
    assert_exit(&started, 0);
    let output = run(&slow, &["reset"]).await;
    assert_exit(&output, 2);
    assert!(stderr(&output).contains(RUNNING), "{}", stderr(&output));
    let output = run(&slow, &["reset", "--json"]).await;
    assert_exit(&output, 2);
    let body: Value = serde_json::from_str(&stdout(&output)).expect("the api's JSON answer");
    assert_eq!(
        body,
        serde_json::json!({"success": false, "message": RUNNING})
    );

    // an unknown command never reaches the api (clap's usage error: 2)
    let output = run(&cluster, &["explode"]).await;
    assert_exit(&output, 2);
}

// ---------------------------------------------------------------------------
// The bar in a real terminal
// ---------------------------------------------------------------------------

/// A private tmux server (its own socket in a temp dir), killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(session: &str, width: u16, height: u16, command: &str) -> Tmux {
        let dir = tempfile::tempdir().expect("temp dir for tmux");
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", session])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .status()
            .expect("tmux is installed (scripts/test.sh installs it)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new("tmux");
        command
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null");
        command
    }

    /// The visible pane, as text.
    fn capture(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-S", "-200"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Captures until `condition` holds; panics with the last screen.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture();
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never shown; last screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// Shell-quotes `text` for the tmux command line.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[tokio::test]
async fn in_a_terminal_migrate_follows_by_default_with_a_live_bar_and_ends_with_the_status() {
    // 120 positions at 30 a second: about four seconds of bar.
    let cluster = seeded_cluster(120, 30).await;
    let password_file = cluster.options().password_file_path().unwrap();
    let done_marker = "MIGRATIONCTL-EXITED-WITH";
    let command = format!(
        "env MIGRATION_API_URL={} INTERNAL_AUTH_PASSWORD_FILE={} {} migrate; echo {done_marker} $?; sleep 600",
        quoted(&cluster.api().base_url()),
        quoted(&password_file.display().to_string()),
        quoted(&migrationctl().display().to_string()),
    );
    let tmux = Tmux::start("migrationctl", 200, 50, &command);

    // Mid-run: the bar with positions done/total, events/s and an ETA.
    let bar = tmux
        .wait_for("the progress bar", Duration::from_secs(60), |screen| {
            screen.lines().any(|line| {
                line.contains("/120 positions, ")
                    && line.contains(" events/s, ETA ")
                    && !line.contains("120/120")
            })
        })
        .await;
    let bar_line = bar
        .lines()
        .find(|line| line.contains("/120 positions, "))
        .unwrap()
        .to_string();
    assert!(
        bar_line.contains('[') && bar_line.contains(']'),
        "{bar_line}"
    );

    // The end: exit code 0, the final status line, every output line once.
    let end = tmux
        .wait_for("the end of migrationctl", RUN_TIMEOUT, |screen| {
            screen.contains(&format!("{done_marker} "))
        })
        .await;
    assert!(end.contains(&format!("{done_marker} 0")), "{end}");
    let lines: Vec<&str> = end.lines().map(str::trim_end).collect();
    let marker = lines
        .iter()
        .position(|line| line.starts_with(done_marker))
        .unwrap();
    assert_eq!(lines[marker - 1], "status: finalization_required", "{end}");
    // The bar stays with its last numbers above the status line.
    assert!(
        lines[..marker]
            .iter()
            .any(|line| line.contains("120/120 positions")),
        "{end}"
    );
    let job = job_output(&cluster).await;
    for line in job.lines() {
        assert_eq!(
            lines.iter().filter(|shown| **shown == line).count(),
            1,
            "{line:?} shown once:\n{end}"
        );
    }
}

#[tokio::test]
async fn a_worker_killed_while_migrationctl_follows_every_line_is_printed_once_and_it_exits_0() {
    let mut cluster = cluster(1, 0, 20, 0);
    cluster.start_worker();
    cluster.start_worker();
    cluster.wait_for_workers(2, Duration::from_secs(30)).await;
    seed(&cluster.client(), 60).await;
    let follow = {
        let url = cluster.api().base_url();
        let password_file = cluster.options().password_file_path().unwrap();
        tokio::spawn(async move {
            run_with_env(
                &["migrate", "--follow"],
                &[
                    ("MIGRATION_API_URL", url),
                    (
                        "INTERNAL_AUTH_PASSWORD_FILE",
                        password_file.display().to_string(),
                    ),
                ],
            )
            .await
        })
    };
    wait_for_job_state(&cluster, "running", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let holder = (0..2)
        .find(|&index| cluster.workers[index].log().contains("claimed job"))
        .expect("a worker claimed the job");
    cluster.workers[holder].kill9();

    let output = follow.await.expect("the migrationctl task");
    assert_exit(&output, 0);
    let job = job_output(&cluster).await;
    assert!(job.contains("took the job over"), "{job}");
    assert_eq!(
        stdout(&output),
        format!("{job}status: finalization_required\n")
    );
}

#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_follow_and_the_exit_code_still_tells() {
    let cluster = seeded_cluster(30, 30).await;
    let password_file = cluster.options().password_file_path().unwrap();
    // `head -1` closes the pipe after the first line; the exit code is
    // migrationctl's (PIPESTATUS), and the job is followed to its end.
    let script = format!(
        "{} migrate --follow --url {} --password-file {} | head -1; exit ${{PIPESTATUS[0]}}",
        quoted(&migrationctl().display().to_string()),
        quoted(&cluster.api().base_url()),
        quoted(&password_file.display().to_string()),
    );
    let output = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new("bash")
            .args(["-c", &script])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("migrationctl ends")
    .expect("run bash");
    assert_exit(&output, 0);
    assert!(
        stdout(&output).ends_with("queued: migrate\n"),
        "{}",
        stdout(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    let (_, answer) = cluster.client().progress().await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
}
