//! Progress lines of plan execution, as docker compose prints them (`Container x  Started`),
//! in the `--progress` modes plain, tty, json and quiet.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::ops::Not;
use std::time::Duration;

use crate::compose::Reporter;
use crate::compose::executor::Event;
use crate::plan::{Node, Op, Plan};

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
    /// From `--progress` (`auto`: tty when stderr is a terminal and colours are allowed).
    #[must_use]
    pub fn from_flag(flag: &str, colour: bool) -> Mode {
        match flag {
            "plain" => Mode::Plain,
            "json" => Mode::Json,
            "quiet" => Mode::Quiet,
            "tty" => Mode::Tty,
            _ => {
                if std::io::stderr().is_terminal() && colour {
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

/// The live board of `--progress tty` on a terminal: a header counting finished objects and
/// one line per object (network, volume, image, container, service) that turns from a spinner
/// into a tick when the object's last step finishes, as docker compose draws it.
#[derive(Debug)]
struct Board {
    multi: indicatif::MultiProgress,
    header: indicatif::ProgressBar,
    colour: bool,
    /// Line of each object, by "Kind object".
    lines: HashMap<String, indicatif::ProgressBar>,
    /// Steps of each object not finished yet.
    remaining: HashMap<String, usize>,
    total: usize,
    finished: usize,
}

impl Board {
    fn new(colour: bool) -> Board {
        let multi = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        let header = multi.add(indicatif::ProgressBar::new_spinner());
        header.set_style(template("{msg}"));
        Board {
            multi,
            header,
            colour,
            lines: HashMap::new(),
            remaining: HashMap::new(),
            total: 0,
            finished: 0,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn draw_header(&self) {
        self.header.set_message(format!(
            "{} Running {}/{}",
            self.paint("34", "[+]"),
            self.finished,
            self.total
        ));
    }

    fn add_plan(&mut self, plan: &Plan) {
        for node in &plan.nodes {
            let (kind, object, ..) = words(&node.op);
            let key = format!("{kind} {object}");
            let n = self.remaining.entry(key).or_insert(0);
            if *n == 0 {
                self.total += 1;
            }
            *n += 1;
        }
        self.draw_header();
    }

    fn line(&mut self, key: &str) -> indicatif::ProgressBar {
        if let Some(b) = self.lines.get(key) {
            return b.clone();
        }
        let b = self.multi.add(indicatif::ProgressBar::new_spinner());
        b.set_style(template(" {spinner} {prefix:<40} {msg} {elapsed:>5}"));
        b.set_prefix(key.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        self.lines.insert(key.to_string(), b.clone());
        b
    }

    fn event(&mut self, key: &str, event: &Event, doing: &str, done: &str) {
        let bar = self.line(key);
        let last = matches!(event, Event::Started(_)).not()
            && self.remaining.get_mut(key).is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        match event {
            Event::Started(_) => bar.set_message(self.paint("34", doing)),
            Event::Done(..) if !last => bar.set_message(self.paint("34", done)),
            Event::Done(..) => self.finish(&bar, key, "32", "✔", done),
            Event::Failed(_, e) => self.finish(&bar, key, "31", "✘", &format!("Error: {e}")),
            Event::Warned(_, e) => self.finish(&bar, key, "33", "!", &format!("Warning: {e}")),
            Event::Skipped(_) => self.finish(&bar, key, "0", "-", "Skipped"),
        }
        if last {
            self.finished += 1;
            self.draw_header();
        }
    }

    fn finish(&self, bar: &indicatif::ProgressBar, key: &str, code: &str, mark: &str, text: &str) {
        let secs = bar.elapsed().as_secs_f64();
        bar.set_style(template("{msg}"));
        bar.finish_with_message(format!(
            " {} {key:<40} {} {secs:>5.1}s",
            self.paint(code, mark),
            self.paint(code, text)
        ));
    }
}

fn template(t: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(t)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

/// Prints execution events.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    colour: bool,
    board: Option<Board>,
    /// Operations at once (`--parallel`), 0 for no limit.
    parallel: usize,
    /// Leave image pulls out (`--quiet-pull`).
    hide_pulls: bool,
    /// Lines already printed, so that none is printed twice (several dependents waiting
    /// for one service fail with one message).
    printed: std::collections::HashSet<String>,
}

impl Progress {
    /// A printer in the given mode, colours as `--ansi`/`NO_COLOR` allow on stderr.
    #[must_use]
    pub fn new(mode: Mode) -> Progress {
        Progress::with(mode, std::env::var_os("NO_COLOR").is_none(), 0)
    }

    /// The printer the global options ask for (`--progress`, `--ansi`, `--parallel`).
    #[must_use]
    pub fn from_global(global: &crate::cli::GlobalArgs) -> Progress {
        let colour = global.colour(std::io::stderr().is_terminal());
        Progress::with(
            Mode::from_flag(&global.progress, colour),
            colour,
            global.parallel,
        )
    }

    fn with(mode: Mode, colour: bool, parallel: usize) -> Progress {
        // Forced `--progress tty` without a terminal prints the finished lines only.
        let board =
            (mode == Mode::Tty && std::io::stderr().is_terminal()).then(|| Board::new(colour));
        Progress {
            mode,
            colour,
            board,
            parallel,
            hide_pulls: false,
            printed: std::collections::HashSet::new(),
        }
    }

    /// Leaves image pulls out of the output (`--quiet-pull`).
    pub fn hide_pulls(&mut self) {
        self.hide_pulls = true;
    }

    /// Prints one event on stderr.
    pub fn event(&mut self, node: &Node, event: &Event) {
        if self.hide_pulls && matches!(node.op, Op::PullImage { .. }) {
            return;
        }
        let (kind, object, doing, done) = words(&node.op);
        if let Some(board) = &mut self.board {
            board.event(&format!("{kind} {object}"), event, doing, done);
            return;
        }
        let (status, text) = match event {
            Event::Started(_) => ("working", doing.to_string()),
            Event::Done(_, _) => ("done", done.to_string()),
            Event::Failed(_, e) => ("error", format!("Error: {e}")),
            Event::Warned(_, e) => ("warning", format!("Warning: {e}")),
            Event::Skipped(_) => ("skipped", "Skipped".to_string()),
        };
        // The same line twice (several waits for one failed service) is printed once.
        if !matches!(self.mode, Mode::Quiet)
            && !self
                .printed
                .insert(format!("{kind} {object} {status} {text}"))
        {
            return;
        }
        let mut err = std::io::stderr().lock();
        let paint = |code: &str, t: &str| {
            if self.colour {
                format!("\x1b[{code}m{t}\x1b[0m")
            } else {
                t.to_string()
            }
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
                    " {} {kind} {object:<30} {} {:>5.1}s",
                    paint("32", "✔"),
                    paint("32", &text),
                    d.as_secs_f64()
                ),
                Event::Failed(..) => writeln!(
                    err,
                    " {} {kind} {object:<30} {}",
                    paint("31", "✘"),
                    paint("31", &text)
                ),
                Event::Warned(..) => writeln!(
                    err,
                    " {} {kind} {object:<30} {}",
                    paint("33", "!"),
                    paint("33", &text)
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
            Mode::Tty => {
                let text = if self.colour {
                    format!(" \x1b[32m✔\x1b[0m {kind} {object:<30} \x1b[32m{done}\x1b[0m")
                } else {
                    format!(" ✔ {kind} {object:<30} {done}")
                };
                match &self.board {
                    Some(b) => {
                        let _ = b.multi.println(text);
                    }
                    None => eprintln!("{text}"),
                }
            }
        }
    }

    /// Prints a warning line.
    pub fn warn(&mut self, text: &str) {
        match (&self.board, self.mode) {
            (_, Mode::Quiet) => {}
            (Some(b), _) => {
                let _ = b.multi.println(format!("WARN[0000] {text}"));
            }
            (None, _) => eprintln!("WARN[0000] {text}"),
        }
    }
}

impl Reporter for Progress {
    fn parallel(&self) -> usize {
        self.parallel
    }

    fn plan_started(&mut self, plan: &Plan) {
        // One board per plan, as docker compose draws one per phase.
        if self.board.is_some() {
            let mut board = Board::new(self.colour);
            board.add_plan(plan);
            self.board = Some(board);
        }
    }

    fn event(&mut self, node: &Node, event: &Event) {
        Progress::event(self, node, event);
    }

    fn plan_finished(&mut self, _plan: &Plan) {
        if let Some(b) = &self.board {
            b.draw_header();
            b.header.finish();
            for line in b.lines.values() {
                if !line.is_finished() {
                    line.finish();
                }
            }
        }
    }

    fn line(&mut self, kind: &str, object: &str, done: &str) {
        Progress::line(self, kind, object, done);
    }

    fn warn(&mut self, text: &str) {
        Progress::warn(self, text);
    }

    fn show_plan(&mut self, plan: &Plan) {
        print!("{plan}");
    }
}
