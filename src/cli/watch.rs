//! `tug watch` (and `up --watch`): follow `develop.watch` as files change — sync, restart,
//! run a command or rebuild — in the foreground, or in the background with `--detach`
//! (`tug ls` shows it, `tug watch --stop` and `tug down` end it). The flags become
//! [`watch::Options`]; the session (`crate::watch`) does the work and this module prints what
//! it reports.

use std::ffi::OsString;
use std::io::Write as _;
use std::time::Duration;

use clap::Args;

use super::GlobalArgs;
use super::compose::{self, Mode, Progress};
use crate::compose::{Stack, StackOptions};
use crate::plan::UpOptions;
use crate::watch::{self, Register, Report, Session, Work, session};

/// `tug watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Do not build & start services before watching.
    #[arg(long)]
    pub no_up: bool,
    /// Prune dangling images on rebuild.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub prune: bool,
    /// Hide build output (and the line per synced batch; errors are shown).
    #[arg(long)]
    pub quiet: bool,
    /// Keep watching in the background (`tug ls` lists it; `tug watch --stop` or `tug down`
    /// ends it; its output goes to the project's watch log).
    #[arg(long, conflicts_with = "stop")]
    pub detach: bool,
    /// End the project's watch (one started with --detach, or in another terminal).
    #[arg(long)]
    pub stop: bool,
    /// Services to watch (default: every service with develop.watch rules).
    pub services: Vec<String>,
}

/// How a session shows what happens.
#[derive(Debug, Clone, Copy)]
struct Show {
    quiet: bool,
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl watch::Reporter for Show {
    fn progress(&self, work: Work) -> Box<dyn crate::compose::Reporter + '_> {
        // A rebuild shows its build (unless --quiet); a restart's steps are its line.
        Box::new(Progress::new(if work == Work::Rebuild && !self.quiet {
            Mode::Plain
        } else {
            Mode::Quiet
        }))
    }

    fn report(&self, r: Report) {
        match r {
            Report::Watching { services, dirs } => {
                if !self.quiet {
                    println!(
                        "watching {} ({}); Ctrl-C stops",
                        services.join(", "),
                        plural(dirs, "directory", "directories")
                    );
                }
            }
            Report::Synced {
                service,
                files,
                containers,
                elapsed,
                full,
            } => {
                if self.quiet {
                    return;
                }
                let into = if containers > 1 {
                    format!(" into {containers} containers")
                } else {
                    String::new()
                };
                let what = if full { " that differed" } else { "" };
                println!(
                    "{service}: synced {}{what}{into} in {}",
                    plural(files, "file", "files"),
                    human(elapsed)
                );
            }
            Report::SyncFailed { service, error } => {
                eprintln!("{service}: sync failed: {error}");
            }
            Report::NotRunning { service, files } => {
                if !self.quiet {
                    println!(
                        "{service}: not running; {} changed (synced when it starts)",
                        plural(files, "file", "files")
                    );
                }
            }
            Report::Restarted { service, elapsed } => {
                if !self.quiet {
                    println!("{service}: restarted in {}", human(elapsed));
                }
            }
            Report::Rebuilt { service, elapsed } => {
                if !self.quiet {
                    println!("{service}: rebuilt in {}, recreated", human(elapsed));
                }
            }
            Report::Executed {
                service,
                container,
                code,
            } => {
                if code != 0 {
                    eprintln!("{service}: exec in {container} exited with code {code}");
                } else if !self.quiet {
                    println!("{service}: exec in {container} done");
                }
            }
            Report::Failed {
                service,
                work,
                error,
            } => eprintln!(
                "{service}: {work} failed: {}",
                super::render_error(&anyhow::Error::from(error))
            ),
            Report::Warning(w) => eprintln!("warning: {w}"),
        }
        let _ = std::io::stdout().flush();
    }
}

/// Checks and records the watch rules of `services` (all with rules when empty) and
/// registers the session as `register` says; warns about selected services without rules.
pub(crate) fn prepare(
    stack: &Stack,
    services: &[String],
    register: Register,
) -> anyhow::Result<watch::Prepared> {
    let prepared = watch::prepare(stack, services, register)?;
    for s in &prepared.unwatched {
        eprintln!("warning: service {s} has no develop.watch rules: not watched");
    }
    Ok(prepared)
}

/// Runs a prepared session until `stop` says so, printing what it reports.
pub(crate) fn run_session(
    stack: &Stack,
    prepared: &watch::Prepared,
    quiet: bool,
    prune: bool,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let show = Show { quiet };
    Session::new(stack, prepared, watch::Options { prune }, &show).run(stop)?;
    Ok(())
}

/// Starts the project's session in the background (`watch --no-up` with the same project
/// options) and says where it went.
pub(crate) fn spawn_background(
    global: &GlobalArgs,
    stack: &Stack,
    services: &[String],
    quiet: bool,
    prune: bool,
) -> anyhow::Result<i32> {
    if global.files.iter().any(|f| f.as_os_str() == "-") {
        anyhow::bail!("watch --detach cannot read the compose file from stdin: name a file");
    }
    let mut args: Vec<OsString> = Vec::new();
    for f in &global.files {
        args.extend(["--file".into(), f.clone().into_os_string()]);
    }
    args.extend(["--project-name".into(), stack.project().name.clone().into()]);
    if let Some(d) = &global.project_directory {
        args.extend(["--project-directory".into(), d.clone().into_os_string()]);
    }
    for p in &global.profiles {
        args.extend(["--profile".into(), p.into()]);
    }
    for e in &global.env_files {
        args.extend(["--env-file".into(), e.clone().into_os_string()]);
    }
    args.extend(["--root".into(), stack.root().as_os_str().to_owned()]);
    args.extend(["watch".into(), "--no-up".into()]);
    if quiet {
        args.push("--quiet".into());
    }
    args.push(format!("--prune={prune}").into());
    args.extend(services.iter().map(OsString::from));
    let project = &stack.project().name;
    let pid = session::spawn_background(stack.root(), project, &args)?;
    println!(
        "watching project {project} in the background (pid {pid}); `tug watch --stop` ends it; \
         output in {}",
        session::log_path(stack.root(), project).display()
    );
    Ok(0)
}

/// `tug watch`.
///
/// # Errors
/// Loading, no rules, another session, a watcher that cannot be set up.
pub fn run(global: &GlobalArgs, args: &WatchArgs) -> anyhow::Result<i32> {
    let stack = compose::open_stack(global, &args.services, StackOptions::default())?;
    if args.stop {
        return match session::stop(stack.root(), &stack.project().name, Duration::from_secs(10))? {
            Some(r) => {
                println!(
                    "stopped the watch of project {} (pid {})",
                    stack.project().name,
                    r.pid
                );
                Ok(0)
            }
            None => anyhow::bail!("no watch runs for project {}", stack.project().name),
        };
    }
    let background = std::env::var_os(session::BACKGROUND).is_some();
    if args.detach && !background {
        // Checked (and recorded) here, so a bad rule is said on this terminal.
        let _prepared = prepare(&stack, &args.services, Register::No)?;
        if session::running(stack.root(), &stack.project().name).is_none() && !args.no_up {
            up(global, &stack, &args.services)?;
        }
        return spawn_background(global, &stack, &args.services, args.quiet, args.prune);
    }
    let register = if background {
        Register::Background
    } else {
        Register::Foreground
    };
    let prepared = prepare(&stack, &args.services, register)?;
    if !args.no_up && !background {
        up(global, &stack, &args.services)?;
    }
    // Ctrl-C (or `watch --stop`'s SIGTERM) ends the watch.
    compose::install_interrupt_handler();
    run_session(
        &stack,
        &prepared,
        args.quiet,
        args.prune,
        &compose::interrupted,
    )?;
    Ok(0)
}

/// `up -d --build` of the watched services (what `watch` does first unless `--no-up`, as
/// docker compose does: the containers start from images of the current sources; cached
/// steps stay cached).
fn up(global: &GlobalArgs, stack: &Stack, services: &[String]) -> anyhow::Result<()> {
    let _lock = compose::lock(stack)?;
    let mut p = Progress::from_global(global);
    let up = UpOptions {
        services: services.to_vec(),
        build: true,
        ..UpOptions::default()
    };
    Ok(stack.converge(&up, &mut p)?)
}

/// The background session of a project ends with it (`down`).
pub(crate) fn stop_for_down(stack: &Stack) -> anyhow::Result<()> {
    Ok(watch::end_for_down(stack)?)
}

/// Whether a session watches `project` (for `ls`).
#[must_use]
pub(crate) fn is_watching(root: &std::path::Path, project: &str) -> bool {
    session::running(root, project).is_some()
}
