//! Per-agent progress: indicatif lines on a terminal, timestamped log lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
enum Mode {
    Bars(MultiProgress),
    Plain,
    Quiet,
}

/// Progress reporting for one run.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars when stderr is a terminal and not under CI; plain lines otherwise; with `quiet`,
    /// only failures.
    pub fn new(ci: bool, quiet: bool) -> Self {
        if quiet {
            Progress { mode: Mode::Quiet }
        } else if !ci && std::io::stderr().is_terminal() {
            Progress {
                mode: Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            }
        } else {
            Progress { mode: Mode::Plain }
        }
    }

    /// A line for one agent (or the stack's network).
    pub fn line(&self, name: &str) -> Line {
        match &self.mode {
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<20} {wide_msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Line {
                    name: name.to_string(),
                    bar: Some(bar),
                    quiet: false,
                }
            }
            Mode::Plain | Mode::Quiet => Line {
                name: name.to_string(),
                bar: None,
                quiet: matches!(self.mode, Mode::Quiet),
            },
        }
    }

    /// A message outside any agent line.
    pub fn println(&self, msg: &str) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
            Mode::Plain => eprintln!("{} {msg}", timestamp()),
            Mode::Quiet => {}
        }
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// One agent's progress line.
pub struct Line {
    name: String,
    bar: Option<ProgressBar>,
    /// `--quiet`: only failures are printed.
    quiet: bool,
}

impl Line {
    pub fn set(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None if self.quiet => {}
            None => eprintln!("{} {}: {msg}", timestamp(), self.name),
        }
    }
    pub fn done(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(format!("✓ {msg}")),
            None if self.quiet => {}
            None => eprintln!("{} {}: {msg}", timestamp(), self.name),
        }
    }
    pub fn fail(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.abandon_with_message(format!("✗ {msg}")),
            None => eprintln!("{} {}: FAILED: {msg}", timestamp(), self.name),
        }
    }
}
