//! Progress of a long operator operation (`backup create`, `audit verify`, `security audit
//! --deep`) on a terminal: one spinner line on stderr with what runs and for how long, cleared
//! when the operation ends.
//!
//! Owns: deciding when to show it — only when stderr is a terminal and `--json` was not given,
//! so scripts, pipes and logs never see it. Must not: write to stdout (the command's answer
//! and the `--json` document live there), or show a secret.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner moves.
const TICK: Duration = Duration::from_millis(120);

/// A spinner that runs until dropped (or [`Progress::finish`]); a no-op when hidden.
pub struct Progress {
    /// The spinner; `None` when hidden.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A spinner saying `message`, shown when stderr is a terminal and `json` is false.
    pub fn start(json: bool, message: &str) -> Progress {
        Progress::start_if(!json && std::io::stderr().is_terminal(), message)
    }

    fn start_if(shown: bool, message: &str) -> Progress {
        if !shown {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(TICK);
        Progress { bar: Some(bar) }
    }

    /// Says what runs now.
    pub fn step(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        }
    }

    /// True when the spinner is drawn.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Clears the line.
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_with_json_or_without_a_terminal() {
        assert!(!Progress::start(true, "x").is_shown());
        assert!(!Progress::start_if(false, "x").is_shown());
    }
}
