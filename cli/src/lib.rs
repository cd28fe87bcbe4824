//! `migrationctl` (SPEC 9), the operator tool of the migration service.
//!
//! One run sends one command to the migration route and, while the job
//! runs and `--follow` is in force, follows it: through the api's output
//! stream (`GET /internal/migrations/stream`, resumed with `Last-Event-ID`
//! after a broken connection), or by polling `progress` once a second when
//! the api has no stream or it keeps failing. Either way every output line
//! is printed once ([`screen`]) and the run ends with the final answer.
//!
//! Exit codes: 0 when the command ended without exception (or is still
//! running and was not followed), 1 when it ended with one, 2 for a request
//! error (bad password, unreachable api, a refused command), whose message
//! is printed on stderr (with `--json`, the api's JSON answer on stdout too).

pub mod args;
pub mod client;
pub mod screen;
pub mod sse;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use migration_shared::jobs::MigrationProgress;
use serde_json::Value;

use crate::args::{Args, CommandName};
use crate::client::{ApiClient, RequestError};
use crate::screen::{print_line, Screen};

/// How often `progress` is polled when there is no stream.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Broken or refused stream connections in a row before polling instead.
const STREAM_ATTEMPTS: u32 = 3;

/// Runs the command line; the exit code says how it ended.
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("migrationctl: cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    let follow =
        args.follow || (args.command.follows_on_a_terminal() && std::io::stdout().is_terminal());
    let mut screen = Screen::new(args.json);
    match runtime.block_on(execute(&args, follow, &mut screen)) {
        Ok(answer) => {
            screen.finish();
            report(&args, &answer)
        }
        Err(err) => {
            screen.finish();
            // A script reading `--json` gets the api's own answer too.
            if let RequestError::Refused {
                body: Some(body), ..
            } = &err
            {
                if args.json {
                    print_line(&body.to_string());
                }
            }
            eprintln!("migrationctl: {err}");
            ExitCode::from(2)
        }
    }
}

/// Sends the command and, when following, waits for the job's end; the
/// answer returned is the final one (or the first, when not following).
async fn execute(args: &Args, follow: bool, screen: &mut Screen) -> Result<Value, RequestError> {
    let client = ApiClient::new(&args.url, args.password_file.as_deref())?;
    let answer = client.command(args.command.as_str(), args.verbose).await?;
    if args.command == CommandName::Stats || !is_running(&answer) || !follow {
        screen.catch_up(output_of(&answer));
        return Ok(answer);
    }
    screen.start_bar();
    show_progress(screen, &answer);
    follow_job(&client, screen).await
}

/// Follows the running job to its final answer.
async fn follow_job(client: &ApiClient, screen: &mut Screen) -> Result<Value, RequestError> {
    let mut last_event_id: Option<String> = None;
    let mut failures = 0;
    while failures < STREAM_ATTEMPTS {
        match client.open_stream(last_event_id.as_deref()).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(event)) => {
                        failures = 0;
                        match event.event.as_str() {
                            "line" => {
                                screen.line(&event.data);
                                last_event_id = event.id.or(last_event_id);
                            }
                            "progress" => {
                                if let Ok(progress) =
                                    serde_json::from_str::<MigrationProgress>(&event.data)
                                {
                                    screen.progress(&progress);
                                }
                            }
                            "result" => {
                                let answer: Value = serde_json::from_str(&event.data)
                                    .map_err(|_| RequestError::Malformed(event.data.clone()))?;
                                show_progress(screen, &answer);
                                screen.catch_up(output_of(&answer));
                                return Ok(answer);
                            }
                            _ => {}
                        }
                    }
                    // Ended without a result (the replica is shutting
                    // down) or broken: resume after the last line.
                    Ok(None) => break,
                    Err(reason) => {
                        screen.note(&format!(
                            "migrationctl: the output stream broke ({reason}); reconnecting"
                        ));
                        failures += 1;
                        break;
                    }
                }
            },
            Err(err) if err.means_no_stream() => break,
            Err(err) => {
                screen.note(&format!("migrationctl: {err}; retrying"));
                failures += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    poll(client, screen).await
}

/// Polls `progress` until the job has ended.
async fn poll(client: &ApiClient, screen: &mut Screen) -> Result<Value, RequestError> {
    loop {
        let answer = client.command("progress", false).await?;
        show_progress(screen, &answer);
        screen.catch_up(output_of(&answer));
        if !is_running(&answer) {
            return Ok(answer);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn show_progress(screen: &mut Screen, answer: &Value) {
    if let Some(progress) = answer
        .get("progress")
        .and_then(|value| serde_json::from_value::<MigrationProgress>(value.clone()).ok())
    {
        screen.progress(&progress);
    }
}

fn is_running(answer: &Value) -> bool {
    answer["status"] == "migration_running"
}

fn output_of(answer: &Value) -> &str {
    answer["output"].as_str().unwrap_or("")
}

/// Prints the final line (or the JSON) and picks the exit code.
fn report(args: &Args, answer: &Value) -> ExitCode {
    let exception = answer["exception"].as_str();
    if args.json {
        print_line(&answer.to_string());
    } else if args.command == CommandName::Stats {
        if let Some(stats) = answer["stats"].as_object() {
            for (name, value) in stats {
                let value = value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string());
                print_line(&format!("{name}: {value}"));
            }
        }
    } else {
        let status = answer["status"].as_str().unwrap_or("unknown");
        match exception {
            Some(exception) => {
                print_line(&format!(
                    "{} ended with an exception; status: {status}",
                    args.command.as_str()
                ));
                eprintln!("exception: {exception}");
            }
            None if status == "migration_running" => print_line(
                "status: migration_running (the job goes on; `migrationctl progress --follow` follows it)",
            ),
            None => print_line(&format!("status: {status}")),
        }
    }
    if exception.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
