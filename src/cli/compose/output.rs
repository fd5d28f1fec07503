//! Progress lines of plan execution, as docker compose prints them (`Container x  Started`),
//! in the `--progress` modes plain, tty, json and quiet.

use std::io::{IsTerminal, Write};

use crate::engine::executor::Event;
use crate::plan::{Node, Op};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One line per step, no colour.
    Plain,
    /// One line per finished step, with colour and ticks.
    Tty,
    /// One JSON object per line.
    Json,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// From `--progress` (and whether stderr is a terminal, and NO_COLOR).
    #[must_use]
    pub fn from_flag(flag: &str) -> Mode {
        match flag {
            "plain" => Mode::Plain,
            "json" => Mode::Json,
            "quiet" => Mode::Quiet,
            "tty" => Mode::Tty,
            _ => {
                if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
        }
    }
}

/// (kind, object, present participle, past participle) of an operation.
fn words(op: &Op) -> (&'static str, String, &'static str, &'static str) {
    match op {
        Op::CreateNetwork { name, .. } => ("Network", name.clone(), "Creating", "Created"),
        Op::CreateVolume { name, .. } => ("Volume", name.clone(), "Creating", "Created"),
        Op::PullImage { image } => ("Image", image.clone(), "Pulling", "Pulled"),
        Op::BuildImage { image, .. } => ("Image", image.clone(), "Building", "Built"),
        Op::CreateContainer { name, .. } => ("Container", name.clone(), "Creating", "Created"),
        Op::StartContainer { name, .. } => ("Container", name.clone(), "Starting", "Started"),
        Op::StopContainer { name, .. } => ("Container", name.clone(), "Stopping", "Stopped"),
        Op::RemoveContainer { name, .. } => ("Container", name.clone(), "Removing", "Removed"),
        Op::WaitFor {
            service, condition, ..
        } => match condition {
            crate::plan::Condition::ServiceHealthy => {
                ("Service", service.clone(), "Waiting", "Healthy")
            }
            crate::plan::Condition::ServiceCompletedSuccessfully => {
                ("Service", service.clone(), "Waiting", "Exited")
            }
            crate::plan::Condition::Ready => ("Service", service.clone(), "Waiting", "Ready"),
            crate::plan::Condition::ServiceStarted => {
                ("Service", service.clone(), "Waiting", "Started")
            }
        },
        Op::RemoveNetwork { name } => ("Network", name.clone(), "Removing", "Removed"),
        Op::RemoveVolume { name } => ("Volume", name.clone(), "Removing", "Removed"),
        Op::RemoveImage { image } => ("Image", image.clone(), "Removing", "Removed"),
    }
}

/// Prints execution events.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// A printer in the given mode.
    #[must_use]
    pub fn new(mode: Mode) -> Progress {
        Progress { mode }
    }

    /// Prints one event on stderr.
    pub fn event(&mut self, node: &Node, event: &Event) {
        let (kind, object, doing, done) = words(&node.op);
        let mut err = std::io::stderr().lock();
        let (status, text) = match event {
            Event::Started(_) => ("working", doing.to_string()),
            Event::Done(_, _) => ("done", done.to_string()),
            Event::Failed(_, e) => ("error", format!("Error: {e}")),
            Event::Warned(_, e) => ("warning", format!("Warning: {e}")),
            Event::Skipped(_) => ("skipped", "Skipped".to_string()),
        };
        let _ = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Json => writeln!(
                err,
                "{}",
                serde_json::json!({"id": format!("{kind} {object}"), "status": status, "text": text})
            ),
            Mode::Plain => writeln!(err, " {kind} {object}  {text}"),
            Mode::Tty => match event {
                Event::Started(_) => Ok(()),
                Event::Done(_, d) => writeln!(
                    err,
                    " \x1b[32m✔\x1b[0m {kind} {object:<30} \x1b[32m{text}\x1b[0m {:>5.1}s",
                    d.as_secs_f64()
                ),
                Event::Failed(..) => writeln!(
                    err,
                    " \x1b[31m✘\x1b[0m {kind} {object:<30} \x1b[31m{text}\x1b[0m"
                ),
                Event::Warned(..) => writeln!(
                    err,
                    " \x1b[33m!\x1b[0m {kind} {object:<30} \x1b[33m{text}\x1b[0m"
                ),
                Event::Skipped(_) => writeln!(err, " - {kind} {object:<30} {text}"),
            },
        };
    }

    /// Prints one finished step that did not go through a plan.
    pub fn line(&mut self, kind: &str, object: &str, done: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"id": format!("{kind} {object}"), "status": "done", "text": done})
            ),
            Mode::Plain => eprintln!(" {kind} {object}  {done}"),
            Mode::Tty => eprintln!(" \x1b[32m✔\x1b[0m {kind} {object:<30} \x1b[32m{done}\x1b[0m"),
        }
    }

    /// Prints a warning line.
    pub fn warn(&mut self, text: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("WARN[0000] {text}");
        }
    }
}
