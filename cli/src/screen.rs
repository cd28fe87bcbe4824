//! What the operator sees: output lines, each printed once, above a live
//! progress bar (positions done/total, events/s, ETA).
//!
//! Lines go to stdout, the bar to stderr, so `migrationctl migrate > log`
//! keeps a clean log while the terminal still shows the bar; indicatif
//! hides the bar by itself when stderr is no terminal. The printed-lines
//! count is what makes "every line once" hold whichever way lines arrive
//! (stream events, a resumed stream, polled `output`): a full output is
//! only ever printed from that count on.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use migration_shared::jobs::MigrationProgress;

/// Lines printed so far, and the bar while following.
pub struct Screen {
    printed: usize,
    print_lines: bool,
    bar: Option<ProgressBar>,
    bar_has_numbers: bool,
}

impl Screen {
    /// A screen that prints lines unless `quiet` (`--json`).
    pub fn new(quiet: bool) -> Screen {
        Screen {
            printed: 0,
            print_lines: !quiet,
            bar: None,
            bar_has_numbers: false,
        }
    }

    /// Shows the bar (a spinner until the first progress numbers arrive).
    pub fn start_bar(&mut self) {
        if self.bar.is_some() || !self.print_lines {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message("waiting for a worker to run the job");
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    /// Prints one output line.
    pub fn line(&mut self, line: &str) {
        self.printed += 1;
        if !self.print_lines {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| print_line(line)),
            None => print_line(line),
        }
    }

    /// Prints the lines of a full `output` that were not printed yet.
    pub fn catch_up(&mut self, output: &str) {
        let missing: Vec<&str> = output.lines().skip(self.printed).collect();
        for line in missing {
            self.line(line);
        }
    }

    /// Updates the bar with the job's numbers.
    pub fn progress(&mut self, progress: &MigrationProgress) {
        let Some(bar) = &self.bar else { return };
        if !self.bar_has_numbers {
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} positions, {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar_has_numbers = true;
        }
        bar.set_length(progress.positions_total);
        bar.set_position(progress.positions_done.min(progress.positions_total));
        bar.set_message(rate_and_eta(progress));
    }

    /// Leaves the bar as it stands (the last numbers stay on the screen);
    /// a spinner that never got numbers (a `reset`, or a job that ended
    /// before it migrated anything) is cleared.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            if self.bar_has_numbers {
                bar.abandon();
            } else {
                bar.finish_and_clear();
            }
        }
    }

    /// Prints a line of `migrationctl`'s own (not job output).
    pub fn note(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

/// Writes `line` to stdout. A closed stdout (`migrationctl migrate | head`)
/// is no reason to stop following: the exit code still tells the outcome,
/// so write errors are ignored instead of panicking as `println!` would.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// `1234 events/s, ETA 1m 05s`, from the job's own rates (the same numbers
/// every reader sees).
pub fn rate_and_eta(progress: &MigrationProgress) -> String {
    let left = progress
        .positions_total
        .saturating_sub(progress.positions_done);
    let eta = if left == 0 {
        "0s".to_string()
    } else if progress.positions_per_second > 0.0 {
        duration_text((left as f64 / progress.positions_per_second).ceil() as u64)
    } else {
        "unknown".to_string()
    };
    format!("{:.0} events/s, ETA {eta}", progress.events_per_second)
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_comes_from_the_positions_rate() {
        let progress = MigrationProgress {
            positions_done: 100,
            positions_total: 1000,
            events_done: 400,
            events_total: 4000,
            started_at: 0,
            updated_at: 0,
            positions_per_second: 10.0,
            events_per_second: 40.4,
        };
        assert_eq!(rate_and_eta(&progress), "40 events/s, ETA 1m 30s");
        let stalled = MigrationProgress {
            positions_per_second: 0.0,
            ..progress
        };
        assert_eq!(rate_and_eta(&stalled), "40 events/s, ETA unknown");
        assert_eq!(duration_text(7300), "2h 01m");
    }
}
