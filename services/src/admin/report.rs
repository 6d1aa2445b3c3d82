//! Progress of long operators' commands: a bar on a terminal (events done,
//! events/s, ETA), a line every two seconds otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use projections::operate::{Phase, Progress};

/// Renders [`Progress`]: a bar on a terminal, a line every two seconds
/// otherwise.
pub(super) struct Reporter {
    what: String,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Reporter {
    pub(super) fn new(verb: &str, name: &str) -> Self {
        let what = format!("{verb} {name}");
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.clone());
            bar
        });
        Reporter {
            what,
            bar,
            last_line: None,
        }
    }

    pub(super) fn report(&mut self, p: Progress) {
        if let Some(bar) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
            if p.phase == Phase::Switching {
                bar.set_message(format!("{} (switching)", self.what));
            }
            return;
        }
        let due = self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if !due && p.phase != Phase::Done {
            return;
        }
        self.last_line = Some(Instant::now());
        let per_sec = rate(p.done, p.elapsed);
        let eta = if per_sec > 0.0 {
            format!("{:.0}s", p.total.saturating_sub(p.done) as f64 / per_sec)
        } else {
            "?".into()
        };
        let phase = match p.phase {
            Phase::CatchingUp => "catching up",
            Phase::Switching => "switching",
            Phase::Replaying => "replaying",
            Phase::Done => "done",
        };
        eprintln!(
            "{}: {phase}: {}/{} events, {per_sec:.0} events/s, ETA {eta}",
            self.what, p.done, p.total
        );
        let _ = std::io::stderr().flush();
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Events per second.
pub(super) fn rate(events: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}
