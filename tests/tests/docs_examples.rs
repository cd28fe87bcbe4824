//! The examples of `README.md` and `docs/routes.md`, run against the real
//! binaries, so that the docs cannot rot.
//!
//! What counts as an example (the docs are written to this form):
//!
//! - every command in a ```` ```sh ```` block that starts with `curl` and
//!   names a URL under `$API` (`"$API/internal/migrations"`, `"$API/health"`).
//!   The request is taken from the command: `-d '<body>'` or
//!   `--data-binary @<file>` (relative to the repository), `-X POST` or GET,
//!   and the `Authorization` header (`$AUTH` is the cluster's password, any
//!   other value is sent as written, none is none);
//! - the status it answers: a trailing `# answers <code>` comment, else `200`;
//! - its sample response: a ```` ```json ```` block that directly follows the
//!   `sh` block (blank lines between are fine); it belongs to the block's
//!   last command.
//! - `<!-- docs-test: new cluster -->` (an HTML comment, invisible when
//!   rendered) starts the examples after it on a fresh, empty cluster.
//!
//! Each file's examples run in document order on one cluster: a private
//! Redis, `migration-api` with `MIGRATIONS_FILE=examples/migrations.json`
//! (two replicas: one with `MIGRATION_WAIT_MS=0`, one with a long wait) and
//! workers the test starts and stops. To make each sample deterministic,
//! the test sets up the state the sample shows: a `migration_running`
//! answer or the `Migration is running` refusal is asked with no worker
//! alive (the job stays queued); a final result is asked of the long-wait
//! replica with a worker alive; `progress` with a final sample is repeated
//! until the job has finished (as the docs tell the reader to); the
//! `Last migration output not read yet` refusal is asked after the job
//! finished and before anyone called `progress`.
//!
//! The real answer must have the documented status code and be equal to the
//! sample, except: `workers` (how many are alive) only has to be a number,
//! and `output` is compared line by line with job and worker ids, durations
//! and the timed progress lines (`Migrated 55 of 265 positions (20%) ...`,
//! at most one a second, so they depend on the machine) left out.
//!
//! Also checked: every environment variable the docs name exists (in
//! `migration-api --help`, or, for the scripts' and the harness's own
//! variables, in the file that reads it); README's configuration table has
//! every variable with `--help`'s default, and so has every section of
//! `docs/configuration.md`; the two exact messages of
//! SPEC 4.2 are quoted in README's troubleshooting section.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use migration_shared::jobs::{self, JobState, NOT_READ_MESSAGE, RUNNING_MESSAGE};
use migration_tests::binaries::{help_defaults, workspace_root, Binary};
use migration_tests::{ApiClient, Auth, TestCluster};
use serde_json::Value;

/// Long enough for any command on the example datastore; only a bug makes a
/// request wait this long.
const LONG_WAIT_MS: u64 = 20_000;
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);
const NEW_CLUSTER: &str = "<!-- docs-test: new cluster -->";

// ---------------------------------------------------------------------------
// Reading the examples
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum DocAuth {
    /// `-H "Authorization: $AUTH"`.
    Cluster,
    /// Another header value, sent as written.
    Raw(String),
    /// No header.
    None,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Text(String),
    File(String),
}

#[derive(Debug, Clone)]
struct Example {
    /// `file:line` of the command, for failure messages.
    place: String,
    post: bool,
    path: String,
    auth: DocAuth,
    body: Option<Body>,
    status: u16,
    sample: Option<Value>,
    /// Runs on a fresh cluster (a `new cluster` marker came before it).
    new_cluster: bool,
}

impl Example {
    /// `cmd` of a migration route body.
    fn command(&self) -> Option<String> {
        if !self.path.starts_with("/internal/migrations") {
            return None;
        }
        let Some(Body::Text(text)) = &self.body else {
            return None;
        };
        let body: Value = serde_json::from_str(text).ok()?;
        body["cmd"].as_str().map(str::to_string)
    }

    fn sample_field(&self, field: &str) -> Option<&str> {
        self.sample.as_ref()?.get(field)?.as_str()
    }
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// A fenced block: its language, its first line number (1-based, of the
/// fence) and its text.
struct Block {
    language: String,
    line: usize,
    text: String,
    /// Only blank lines between the end of the previous block and this one.
    directly_after_previous: bool,
    /// A `new cluster` marker since the previous block.
    new_cluster: bool,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut only_blank_since_block = false;
    let mut marker = false;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match current.take() {
            Some(mut block) => {
                if trimmed.starts_with("```") {
                    blocks.push(block);
                    only_blank_since_block = true;
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    current = Some(block);
                }
            }
            None => {
                if let Some(language) = trimmed.strip_prefix("```") {
                    current = Some(Block {
                        language: language.trim().to_string(),
                        line: index + 1,
                        text: String::new(),
                        directly_after_previous: only_blank_since_block,
                        new_cluster: std::mem::take(&mut marker),
                    });
                } else {
                    if trimmed.contains(NEW_CLUSTER) {
                        marker = true;
                    }
                    if !trimmed.is_empty() {
                        only_blank_since_block = false;
                    }
                }
            }
        }
    }
    assert!(current.is_none(), "a fenced block is not closed");
    blocks
}

/// The commands of a `sh` block that are examples, with their line offset
/// inside the block: a `curl` line and its continuation lines (a trailing
/// `\` or an open single quote).
fn commands(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut commands = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let start = index;
        if !lines[index].trim_start().starts_with("curl ") {
            index += 1;
            continue;
        }
        let mut command = lines[index].to_string();
        while command.matches('\'').count() % 2 == 1 || command.trim_end().ends_with('\\') {
            index += 1;
            assert!(index < lines.len(), "unterminated command: {command}");
            command.push('\n');
            command.push_str(lines[index]);
        }
        commands.push((start, command));
        index += 1;
    }
    commands
}

/// The text after `flag` up to the next `'`, when `flag` is followed by `'`.
fn quoted_after(command: &str, flag: &str) -> Option<String> {
    let start = command.find(flag)? + flag.len();
    let rest = &command[start..];
    let end = rest.find('\'')?;
    Some(rest[..end].to_string())
}

fn parse_command(place: &str, command: &str) -> Example {
    let url_start = command
        .find("$API")
        .unwrap_or_else(|| panic!("{place}: a curl example must use $API: {command}"));
    let path: String = command[url_start + "$API".len()..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
        .collect();
    let auth = match command.find("-H \"Authorization: ") {
        None => DocAuth::None,
        Some(start) => {
            let rest = &command[start + "-H \"Authorization: ".len()..];
            let value = &rest[..rest.find('"').expect("closing quote of the header")];
            if value == "$AUTH" {
                DocAuth::Cluster
            } else {
                DocAuth::Raw(value.to_string())
            }
        }
    };
    let body = if let Some(text) = quoted_after(command, "-d '") {
        Some(Body::Text(text))
    } else if let Some(start) = command.find("--data-binary @") {
        let rest = &command[start + "--data-binary @".len()..];
        let file: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        Some(Body::File(file))
    } else {
        assert!(
            !command.contains(" -d ") && !command.contains("--data"),
            "{place}: write the body as -d '<json>' or --data-binary @file: {command}"
        );
        None
    };
    let post = command.contains("-X POST") || body.is_some();
    // The comment after the last quote (bodies may contain `#`).
    let tail = &command[command.rfind('\'').map_or(0, |quote| quote + 1)..];
    let status = match tail.find("# answers ") {
        Some(start) => tail[start + "# answers ".len()..]
            .split_whitespace()
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{place}: `# answers` needs a status code")),
        None => 200,
    };
    Example {
        place: place.to_string(),
        post,
        path,
        auth,
        body,
        status,
        sample: None,
        new_cluster: false,
    }
}

fn examples(relative: &str) -> Vec<Example> {
    let markdown = read(relative);
    let blocks = blocks(&markdown);
    let mut examples: Vec<Example> = Vec::new();
    let mut new_cluster = false;
    let mut last_sh_example: Option<usize> = None;
    for block in &blocks {
        new_cluster |= block.new_cluster;
        match block.language.as_str() {
            "sh" => {
                last_sh_example = None;
                for (offset, command) in commands(&block.text) {
                    let place = format!("{relative}:{}", block.line + 1 + offset);
                    let mut example = parse_command(&place, &command);
                    example.new_cluster = std::mem::take(&mut new_cluster);
                    examples.push(example);
                    last_sh_example = Some(examples.len() - 1);
                }
            }
            "json" if block.directly_after_previous => {
                if let Some(index) = last_sh_example.take() {
                    let sample = serde_json::from_str(&block.text).unwrap_or_else(|err| {
                        panic!(
                            "{relative}:{}: the sample after a curl example must be one JSON value: {err}",
                            block.line
                        )
                    });
                    examples[index].sample = Some(sample);
                }
            }
            _ => last_sh_example = None,
        }
    }
    examples
}

// ---------------------------------------------------------------------------
// Comparing a sample with the real answer
// ---------------------------------------------------------------------------

/// An output line with ids and durations replaced, or `None` for a timed
/// progress line.
fn normalize_line(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split(' ').collect();
    if words.first() == Some(&"Migrated") && words.get(2) == Some(&"of") {
        return None;
    }
    let mut normalized = Vec::new();
    for (index, word) in words.iter().enumerate() {
        let is_id = word.len() >= 36
            && uuid::Uuid::parse_str(word.trim_end_matches(|c: char| !c.is_ascii_hexdigit()))
                .is_ok();
        let is_duration = words.get(index + 1) == Some(&"s") && word.parse::<f64>().is_ok();
        normalized.push(if is_id {
            "<id>"
        } else if is_duration {
            "<t>"
        } else {
            word
        });
    }
    Some(normalized.join(" "))
}

fn normalize_output(output: &str) -> Vec<String> {
    output.lines().filter_map(normalize_line).collect()
}

fn assert_matches(place: &str, path: &str, sample: &Value, real: &Value) {
    let key = path.rsplit('.').next().unwrap_or("");
    match (sample, real) {
        (Value::Number(_), Value::Number(_)) if key == "workers" => {}
        // The structured progress's clock times and rates differ per run.
        (Value::Number(_), Value::Number(_))
            if path.contains(".progress.")
                && matches!(
                    key,
                    "started_at" | "updated_at" | "positions_per_second" | "events_per_second"
                ) => {}
        (Value::String(sample), Value::String(real)) if key == "output" => {
            assert!(real.ends_with('\n'), "{place}: output lines end in \\n");
            assert_eq!(
                normalize_output(sample),
                normalize_output(real),
                "{place}: the documented {path} differs from the real one:\n{real}"
            );
        }
        (Value::Object(sample), Value::Object(real)) => {
            let sample_keys: BTreeSet<&String> = sample.keys().collect();
            let real_keys: BTreeSet<&String> = real.keys().collect();
            assert_eq!(
                sample_keys, real_keys,
                "{place}: keys of {path} differ; real answer: {real:?}"
            );
            for (name, value) in sample {
                assert_matches(place, &format!("{path}.{name}"), value, &real[name]);
            }
        }
        (Value::Array(sample), Value::Array(real)) => {
            assert_eq!(
                sample.len(),
                real.len(),
                "{place}: length of {path}; real: {real:?}"
            );
            for (index, (sample, real)) in sample.iter().zip(real).enumerate() {
                assert_matches(place, &format!("{path}[{index}]"), sample, real);
            }
        }
        _ => assert_eq!(sample, real, "{place}: {path} differs from the real answer"),
    }
}

// ---------------------------------------------------------------------------
// Running the examples
// ---------------------------------------------------------------------------

/// The cluster the examples of one file run on.
struct DocsCluster {
    cluster: TestCluster,
}

impl DocsCluster {
    /// Replica 0 answers at once (`MIGRATION_WAIT_MS=0`), replica 1 waits
    /// for the job; no worker yet.
    fn start() -> DocsCluster {
        let migrations = read("examples/migrations.json");
        let mut cluster = TestCluster::builder()
            .migrations(migrations)
            .configure(|options| options.migration_wait_ms(0).rust_log("warn"))
            .start();
        let waiting = cluster.options().clone().migration_wait_ms(LONG_WAIT_MS);
        cluster.start_api_with(waiting);
        DocsCluster { cluster }
    }

    fn client(&self, replica: usize, auth: &DocAuth) -> ApiClient {
        let client = self.cluster.client_for(replica);
        match auth {
            DocAuth::Cluster => client,
            DocAuth::Raw(value) => client.with_auth(Auth::Raw(value.clone())),
            DocAuth::None => client.without_auth(),
        }
    }

    /// No worker alive: a job stays queued.
    fn stop_workers(&mut self) {
        for mut worker in self.cluster.workers.drain(..) {
            let status = worker.sigterm();
            assert!(status.success(), "worker exit: {status}");
        }
    }

    async fn ensure_worker(&mut self) {
        if self.cluster.workers.is_empty() {
            self.cluster.start_worker();
            self.cluster
                .wait_for_workers(1, Duration::from_secs(10))
                .await;
        }
    }

    /// Waits until the current job has finished, without reading its
    /// result (that would mark it read).
    async fn wait_for_job_to_finish(&self, place: &str) {
        let mut conn = self.cluster.redis_async().await;
        let keys = self.cluster.keys();
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            let job = jobs::current_job(&mut conn, &keys)
                .await
                .expect("read the current job");
            let job = job.unwrap_or_else(|| panic!("{place}: no job to wait for"));
            if job.state == JobState::Finished {
                return;
            }
            assert!(Instant::now() < deadline, "{place}: the job never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn send(&self, replica: usize, example: &Example) -> (u16, Value) {
        let client = self.client(replica, &example.auth);
        if !example.post {
            return client.get(&example.path).await;
        }
        let body = match &example.body {
            None => Vec::new(),
            Some(Body::Text(text)) => text.clone().into_bytes(),
            Some(Body::File(file)) => std::fs::read(workspace_root().join(file))
                .unwrap_or_else(|err| panic!("{}: cannot read {file}: {err}", example.place)),
        };
        client.post_raw(&example.path, body).await
    }

    /// Sets up the state the example's sample shows, sends it, returns the
    /// answer.
    async fn run(&mut self, example: &Example) -> (u16, Value) {
        let command = example.command();
        let status = example.sample_field("status");
        let message = example.sample_field("message");
        if status == Some("migration_running") || message == Some(RUNNING_MESSAGE) {
            self.stop_workers();
            return self.send(0, example).await;
        }
        if message == Some(NOT_READ_MESSAGE) {
            self.ensure_worker().await;
            self.wait_for_job_to_finish(&example.place).await;
            return self.send(0, example).await;
        }
        match command.as_deref() {
            Some("migrate" | "finalize" | "reset") if example.status == 200 => {
                self.ensure_worker().await;
                self.send(1, example).await
            }
            Some("progress") if example.status == 200 => {
                self.ensure_worker().await;
                let deadline = Instant::now() + FINISH_TIMEOUT;
                loop {
                    let (code, body) = self.send(0, example).await;
                    if code != 200 || body["status"] != "migration_running" {
                        return (code, body);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: still running: {body}",
                        example.place
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => self.send(0, example).await,
        }
    }
}

async fn check_examples_of(relative: &str) -> usize {
    let examples = examples(relative);
    let mut docs_cluster: Option<DocsCluster> = None;
    for example in &examples {
        if example.new_cluster || docs_cluster.is_none() {
            docs_cluster = Some(DocsCluster::start());
        }
        let docs_cluster = docs_cluster.as_mut().expect("just started");
        let (status, body) = docs_cluster.run(example).await;
        assert_eq!(
            status, example.status,
            "{}: documented status {}, real answer {status} {body}",
            example.place, example.status
        );
        if let Some(sample) = &example.sample {
            assert_matches(&example.place, "answer", sample, &body);
        }
    }
    examples.len()
}

#[tokio::test]
async fn readme_curl_examples_answer_as_documented() {
    let examples = examples("README.md");
    let commands: BTreeSet<String> = examples.iter().filter_map(Example::command).collect();
    for command in ["migrate", "finalize", "reset", "stats", "progress"] {
        let with_sample = examples.iter().any(|example| {
            example.command().as_deref() == Some(command) && example.sample.is_some()
        });
        assert!(
            with_sample,
            "README.md has no curl example of `{command}` with a sample answer ({commands:?})"
        );
    }
    check_examples_of("README.md").await;
}

#[tokio::test]
async fn routes_doc_curl_examples_answer_as_documented() {
    let examples = examples("docs/routes.md");
    for message in [RUNNING_MESSAGE, NOT_READ_MESSAGE] {
        assert!(
            examples
                .iter()
                .any(|example| example.sample_field("message") == Some(message)),
            "docs/routes.md shows no example answering `{message}`"
        );
    }
    let checked = check_examples_of("docs/routes.md").await;
    assert!(checked >= 10, "only {checked} examples in docs/routes.md");
}

// ---------------------------------------------------------------------------
// The parser itself (a parser that finds nothing would check nothing)
// ---------------------------------------------------------------------------

#[test]
fn the_example_parser_reads_commands_statuses_and_samples() {
    let markdown = "text\n\n```sh\nAPI=http://localhost:9002\n\
        curl -s -X POST \"$API/internal/migrations\" -H \"Authorization: $AUTH\" -d '{\"cmd\": \"stats\"}'\n\
        curl -s -X POST \"$API/internal/datastore/writer/write\" -H \"Authorization: d3Jvbmc=\" -d '{\n  \"a\": \"#\"}'   # answers 401\n\
        ```\n\n```json\n{\"success\": false}\n```\n\n<!-- docs-test: new cluster -->\n\n\
        ```sh\ncurl -s \"$API/health\"\ncurl -s -X POST \"$API/x\" --data-binary @examples/datastore.json | head\n```\n\
        Not a sample:\n\n```json\n{}\n```\n";
    let blocks = blocks(markdown);
    assert_eq!(blocks.len(), 4);
    let mut examples = Vec::new();
    for block in blocks.iter().filter(|block| block.language == "sh") {
        for (offset, command) in commands(&block.text) {
            examples.push(parse_command(&format!("line {offset}"), &command));
        }
    }
    assert_eq!(examples.len(), 4);
    assert_eq!(examples[0].path, "/internal/migrations");
    assert_eq!(examples[0].auth, DocAuth::Cluster);
    assert_eq!(examples[0].status, 200);
    assert!(examples[0].post);
    assert_eq!(examples[1].auth, DocAuth::Raw("d3Jvbmc=".into()));
    assert_eq!(examples[1].status, 401);
    assert_eq!(
        examples[1].body,
        Some(Body::Text("{\n  \"a\": \"#\"}".into()))
    );
    assert!(!examples[2].post);
    assert_eq!(examples[2].auth, DocAuth::None);
    assert_eq!(
        examples[3].body,
        Some(Body::File("examples/datastore.json".into()))
    );
    assert!(blocks[1].directly_after_previous);
    assert!(blocks[2].new_cluster);
    assert!(!blocks[3].directly_after_previous);
}

#[test]
fn output_lines_are_compared_without_ids_durations_and_timed_progress() {
    let real = "Job 3d462134-7bff-43b3-a390-229fc24e260d queued: migrate\n\
        Migrated 55 of 265 positions (20%), 245 events\n\
        Migrated 265 positions (790 events) in 0.1 s\n";
    let documented = "Job ba0b4973-3ccd-474c-a476-701d05e58c29 queued: migrate\n\
        Migrated 265 positions (790 events) in 2.5 s\n";
    assert_eq!(normalize_output(real), normalize_output(documented));
    assert_ne!(
        normalize_output("Migrate finished: all 265 positions\n"),
        normalize_output("Migrate finished: all 264 positions\n")
    );
}

// ---------------------------------------------------------------------------
// Environment variables and the configuration table
// ---------------------------------------------------------------------------

/// Words like `REDIS_URL`: upper case, digits and `_`, with at least one `_`.
fn variable_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        let name = std::mem::take(&mut word);
        let is_variable = name.starts_with(|c: char| c.is_ascii_uppercase())
            && name.contains('_')
            && !name.ends_with('_')
            && !name.chars().any(|c| c.is_ascii_lowercase());
        if is_variable {
            names.insert(name);
        }
    }
    names
}

/// Files that read variables of their own (not the product's configuration).
const OTHER_READERS: [&str; 8] = [
    "cli/src/args.rs",
    "scripts/run-local.sh",
    "scripts/test.sh",
    "scripts/bench.sh",
    "tests/src/binaries.rs",
    "tests/src/cluster.rs",
    "Dockerfile",
    // `SSL_CERT_FILE`: read by rustls's native trust store, set by the TLS test.
    "tests/tests/redis_tls.rs",
];

#[test]
fn every_variable_the_docs_name_exists() {
    let configuration: BTreeSet<String> = help_defaults(Binary::Api).into_keys().collect();
    assert!(configuration.contains("REDIS_URL"), "{configuration:?}");
    let readers: Vec<(&str, String)> = OTHER_READERS
        .iter()
        .map(|file| (*file, read(file)))
        .collect();
    let mut named = BTreeSet::new();
    for doc in [
        "README.md",
        "docs/routes.md",
        "docs/operations.md",
        "docs/configuration.md",
        "docs/architecture.md",
    ] {
        for name in variable_names(&read(doc)) {
            named.insert(name.clone());
            if configuration.contains(&name) {
                continue;
            }
            let reader = readers
                .iter()
                .find(|(_, text)| variable_names(text).contains(&name));
            assert!(
                reader.is_some(),
                "{doc} names `{name}`, which is no configuration variable (migration-api --help: \
                 {configuration:?}) and not read by any of {OTHER_READERS:?}"
            );
        }
    }
    // The scan finds names at all (else this test checks nothing).
    for name in [
        "REDIS_URL",
        "WORKER_LOCK_TTL_MS",
        "MIGRATIONS_FILE",
        "MIGRATION_TESTS_KEEP_LOGS",
    ] {
        assert!(named.contains(name), "no doc names {name}: {named:?}");
    }
    assert_eq!(
        variable_names("`REDIS_URL=x` and FOO_BAR, not Foo_Bar, x_y, SIGTERM or {PREFIX}"),
        BTreeSet::from(["FOO_BAR".to_string(), "REDIS_URL".to_string()])
    );
}

#[test]
fn readme_configuration_table_has_every_variable_with_its_real_default() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .expect("README.md has a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    for (variable, default) in help_defaults(Binary::Api) {
        let row = section
            .lines()
            .find(|line| line.starts_with(&format!("| `{variable}` |")))
            .unwrap_or_else(|| panic!("README.md's configuration table has no row for {variable}"));
        let cell = row.split('|').nth(2).expect("a default column").trim();
        match &default {
            Some(default) => assert_eq!(
                cell.split('`').nth(1),
                Some(default.as_str()),
                "README.md and migration-api --help disagree on the default of {variable}"
            ),
            None => assert_eq!(cell, "unset", "{variable} has no default"),
        }
    }
}

#[test]
fn configuration_doc_has_every_variable_with_its_real_default() {
    let doc = read("docs/configuration.md");
    for (variable, default) in help_defaults(Binary::Api) {
        let heading = format!("### `{variable}`");
        let section = doc
            .split(&heading)
            .nth(1)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
        let line = section
            .lines()
            .find(|line| line.starts_with("- **Default:**"))
            .unwrap_or_else(|| panic!("{heading} names no default"));
        let documented = line
            .split('`')
            .nth(1)
            .filter(|_| !line.contains("**Default:** unset"));
        assert_eq!(
            documented,
            default.as_deref(),
            "docs/configuration.md and migration-api --help disagree on the default of {variable}"
        );
    }
}

#[test]
fn readme_quotes_the_exact_messages_of_who_may_run_when() {
    let readme = read("README.md");
    let troubleshooting = readme
        .split("\n## Troubleshooting")
        .nth(1)
        .expect("README.md has a Troubleshooting section");
    for message in [RUNNING_MESSAGE, NOT_READ_MESSAGE] {
        assert!(
            troubleshooting.contains(&format!("`{message}`")),
            "README.md's troubleshooting does not quote `{message}`"
        );
    }
}
