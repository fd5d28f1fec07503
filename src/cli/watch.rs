//! `tug watch` (and `up --watch`): follow `develop.watch` as files change — sync, restart,
//! run a command or rebuild — in the foreground, or in the background with `--detach`
//! (`tug ls` shows it, `tug watch --stop` and `tug down` end it).

use std::ffi::OsString;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::GlobalArgs;
use super::compose::{self, Mode, Progress};
use crate::compose::service::check;
use crate::compose::{Stack, StackOptions};
use crate::engine::container::ExecOptions;
use crate::plan::UpOptions;
use crate::project::model::ServiceHook;
use crate::watch::{self, Driver, Report, Session, session};

/// Set in the environment of the background process `--detach` starts.
const BACKGROUND: &str = "TUG_WATCH_BACKGROUND";

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

impl Show {
    fn report(self, r: Report) {
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
                action,
                error,
            } => eprintln!("{service}: {action} failed: {error}"),
            Report::Warning(w) => eprintln!("warning: {w}"),
        }
        let _ = std::io::stdout().flush();
    }
}

/// The compose verbs' paths, for the session's restarts, rebuilds and commands.
struct Verbs<'a> {
    stack: &'a Stack,
    quiet: bool,
    prune: bool,
}

/// A compose error as the watch reports it: with its causes, as anyhow's `{:#}` shows them.
fn text(e: crate::compose::Error) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

impl Driver for Verbs<'_> {
    fn restart(&self, service: &str) -> Result<(), String> {
        let services = [service.to_string()];
        let _lock = self.stack.lock().map_err(text)?;
        let mut p = Progress::new(Mode::Quiet);
        let stop = self.stack.plan_stop(&services).map_err(text)?;
        let outcome = self.stack.execute(&stop, &mut p);
        check(&stop, &outcome).map_err(text)?;
        let start = self.stack.plan_start(&services).map_err(text)?;
        let outcome = self.stack.execute(&start, &mut p);
        check(&start, &outcome).map_err(text)
    }

    fn rebuild(&self, service: &str) -> Result<(), String> {
        let image = self
            .stack
            .project()
            .services
            .get(service)
            .map(|s| crate::plan::service_image(&self.stack.project().name, s))
            .ok_or_else(|| format!("no such service: {service}"))?;
        let before = self.stack.image_id(&image);
        let _lock = self.stack.lock().map_err(text)?;
        let mut p = Progress::new(if self.quiet { Mode::Quiet } else { Mode::Plain });
        let up = UpOptions {
            services: vec![service.to_string()],
            build: true,
            no_deps: true,
            ..UpOptions::default()
        };
        self.stack.converge(&up, &mut p).map_err(text)?;
        // The running services that ask to be restarted when this one is updated.
        let dependents: Vec<String> = self
            .stack
            .project()
            .services
            .values()
            .filter(|s| s.depends_on.get(service).is_some_and(|d| d.restart))
            .map(|s| s.name.clone())
            .collect();
        if !dependents.is_empty() {
            let stop = self.stack.plan_stop(&dependents).map_err(text)?;
            let running: Vec<String> = stop
                .nodes
                .iter()
                .filter_map(|n| match &n.op {
                    crate::plan::Op::StopContainer { service, .. } => Some(service.clone()),
                    _ => None,
                })
                .collect();
            if !running.is_empty() {
                let outcome = self.stack.execute(&stop, &mut p);
                check(&stop, &outcome).map_err(text)?;
                let start = self.stack.plan_start(&running).map_err(text)?;
                let outcome = self.stack.execute(&start, &mut p);
                check(&start, &outcome).map_err(text)?;
            }
        }
        // The image the service used before is dangling now: removed unless a container
        // still uses it.
        if self.prune
            && let Some(old) = before
        {
            self.stack.remove_replaced_image(&image, &old);
        }
        Ok(())
    }

    fn exec(&self, id: &str, hook: &ServiceHook) -> Result<i32, String> {
        let env = hook
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        self.stack
            .exec_in(
                id,
                &ExecOptions {
                    cmd: hook.command.clone().unwrap_or_default(),
                    env,
                    user: hook.user.clone(),
                    workdir: hook.working_dir.clone(),
                    privileged: hook.privileged,
                    ..ExecOptions::default()
                },
            )
            .map_err(|e| e.to_string())
    }
}

/// A session made ready before the services are brought up: its rules are known (and
/// checked), recorded for the containers' starts, and (in the foreground) registered.
pub(crate) struct Prepared {
    triggers: Vec<watch::Trigger>,
    _registration: Option<session::Registration>,
}

/// Checks and records the watch rules of `services` (all with rules when empty) and, with
/// `register`, registers this process as the project's session.
pub(crate) fn prepare(
    stack: &Stack,
    services: &[String],
    register: Option<bool>,
) -> anyhow::Result<Prepared> {
    let triggers = watch::triggers(stack.project(), services)?;
    if triggers.is_empty() {
        anyhow::bail!(
            "no selected service has develop.watch rules: add `develop: watch:` rules to the \
             services to watch"
        );
    }
    for s in services {
        if !triggers.iter().any(|t| &t.service == s) {
            eprintln!("warning: service {s} has no develop.watch rules: not watched");
        }
    }
    for t in &triggers {
        if std::fs::symlink_metadata(&t.rule.source).is_err() {
            anyhow::bail!(
                "service {}: develop.watch[{}]: path {} does not exist",
                t.service,
                t.index,
                t.rule.source.display()
            );
        }
    }
    let registration = match register {
        Some(detached) => {
            let watched = watch::rules::services(&triggers);
            let log = detached.then(|| session::log_path(stack.root(), &stack.project().name));
            Some(session::register(
                stack.root(),
                &stack.project().name,
                &watched,
                detached,
                log,
            )?)
        }
        None => None,
    };
    watch::run::record(stack, &triggers)?;
    Ok(Prepared {
        triggers,
        _registration: registration,
    })
}

/// Runs a prepared session until `stop` says so.
pub(crate) fn run_session(
    stack: &Stack,
    prepared: &Prepared,
    quiet: bool,
    prune: bool,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let show = Show { quiet };
    let report = move |r: Report| show.report(r);
    let verbs = Verbs {
        stack,
        quiet,
        prune,
    };
    let s = Session::new(stack, prepared.triggers.clone(), &verbs, &report);
    s.initial_sync();
    s.run(stop)?;
    Ok(())
}

/// Starts the project's session in the background: tug again, as `watch --no-up` with the
/// same project options, in a session of its own, output to the project's watch log. Returns
/// once it has registered.
pub(crate) fn spawn_background(
    global: &GlobalArgs,
    stack: &Stack,
    services: &[String],
    quiet: bool,
    prune: bool,
) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt as _;
    if let Some(r) = session::running(stack.root(), &stack.project().name) {
        anyhow::bail!(
            "a watch of project {} already runs (pid {}); stop it with `tug watch --stop`",
            stack.project().name,
            r.pid
        );
    }
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
    let log = session::log_path(stack.root(), &stack.project().name);
    let out = crate::engine::private::open_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("cannot find tug's own binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .env(BACKGROUND, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background watch")?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if session::running(stack.root(), &stack.project().name).is_some_and(|r| r.pid == pid) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!(
                "the background watch ended ({status}):\n{}",
                text.trim_end()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the background watch did not start within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "watching project {} in the background (pid {pid}); `tug watch --stop` ends it; \
         output in {}",
        stack.project().name,
        log.display()
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
    let background = std::env::var_os(BACKGROUND).is_some();
    if args.detach && !background {
        // Checked (and recorded) here, so a bad rule is said on this terminal.
        let _prepared = prepare(&stack, &args.services, None)?;
        if session::running(stack.root(), &stack.project().name).is_none() && !args.no_up {
            up(global, &stack, &args.services)?;
        }
        return spawn_background(global, &stack, &args.services, args.quiet, args.prune);
    }
    let prepared = prepare(&stack, &args.services, Some(background))?;
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
    session::stop(stack.root(), &stack.project().name, Duration::from_secs(10))?;
    stack.forget_sync()?;
    Ok(())
}

/// Whether a session watches `project` (for `ls`).
#[must_use]
pub(crate) fn is_watching(root: &std::path::Path, project: &str) -> bool {
    session::running(root, project).is_some()
}
