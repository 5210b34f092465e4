//! Training progress within an epoch: a bar with loss, accuracy, images/s and ETA on a terminal,
//! plain log lines (about ten per epoch) otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports one epoch's progress on standard error.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    /// Images between two plain log lines.
    every: u64,
    next_line: u64,
}

/// A snapshot of the epoch so far.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// Images seen this epoch.
    pub seen: u64,
    /// Mean training loss so far.
    pub loss: f64,
    /// Training accuracy so far (fraction).
    pub accuracy: f64,
    /// Images per second.
    pub rate: f64,
}

impl Progress {
    /// Progress of epoch `epoch` (from 1) of `epochs` over `total` images, `seen` of them done.
    pub fn new(epoch: usize, epochs: usize, total: u64, seen: u64) -> Progress {
        let label = format!("epoch {epoch}/{epochs}");
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.clone());
            bar.set_position(seen);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let every = total.div_ceil(10).max(1);
        Progress {
            bar,
            label,
            total,
            every,
            next_line: (seen / every + 1) * every,
        }
    }

    /// Shows `now`.
    pub fn update(&mut self, now: Snapshot) {
        let stats = format!(
            "loss {:.4}  acc {:.2}%  {:.0} img/s",
            now.loss,
            100.0 * now.accuracy,
            now.rate
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(now.seen);
                bar.set_message(stats);
            }
            None if now.seen >= self.next_line && now.seen < self.total => {
                self.next_line = (now.seen / self.every + 1) * self.every;
                let eta = if now.rate > 0.0 {
                    (self.total - now.seen) as f64 / now.rate
                } else {
                    0.0
                };
                eprintln!(
                    "{} [{}/{}] {stats}  eta {}",
                    self.label,
                    now.seen,
                    self.total,
                    clock(eta)
                );
            }
            None => {}
        }
    }

    /// Removes the bar (the epoch's summary line replaces it).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Seconds as `m:ss` (or `h:mm:ss`).
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats_minutes_and_hours() {
        assert_eq!(clock(0.4), "0:00");
        assert_eq!(clock(75.0), "1:15");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
