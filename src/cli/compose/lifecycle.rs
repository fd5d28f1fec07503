//! `up`, `create` and `down`: reconcile, print or execute the plan, and for an attached `up`
//! stream the services' logs until they stop or the user presses Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::args::{CreateArgs, CreateFlags, DownArgs, UpArgs};
use super::output::{Mode, Progress};
use super::{lock, open_stack};
use crate::cli::GlobalArgs;
use crate::engine::compose::{Stack, StackOptions, WaitOptions, labels};
use crate::engine::container::{Status, logs};
use crate::engine::executor::Outcome;
use crate::plan::{self, DownOptions, Op, Plan, PullPolicy, UpOptions};

fn pull_policy(s: Option<&str>) -> Option<PullPolicy> {
    match s {
        Some("always") => Some(PullPolicy::Always),
        Some("never") => Some(PullPolicy::Never),
        Some("missing") => Some(PullPolicy::Missing),
        Some("build") => Some(PullPolicy::Build),
        _ => None,
    }
}

fn up_options(c: &CreateFlags) -> UpOptions {
    UpOptions {
        services: c.services.clone(),
        force_recreate: c.force_recreate,
        no_recreate: c.no_recreate,
        remove_orphans: c.remove_orphans,
        pull: pull_policy(c.pull.as_deref()),
        build: c.build,
        no_build: c.no_build,
        scale: c
            .scale
            .iter()
            .map(|s| (s.service.clone(), s.replicas))
            .collect(),
        ..UpOptions::default()
    }
}

/// Runs a plan with progress output; returns the outcome.
fn run_plan(stack: &Stack, plan: &Plan, progress: &mut Progress) -> Outcome {
    for w in &plan.warnings {
        progress.warn(w);
    }
    progress.run(plan, stack)
}

/// Turns failures of an outcome into one error.
pub(crate) fn check(plan: &Plan, outcome: &Outcome) -> anyhow::Result<()> {
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let msgs: Vec<String> = outcome
        .failed
        .iter()
        .map(|(i, e)| format!("{}: {e}", plan.nodes[*i].op))
        .collect();
    anyhow::bail!("{}", msgs.join("\n"))
}

/// Reconciles and applies: images first (so a new image is compared with the containers'),
/// then everything else.
pub(crate) fn converge(
    stack: &Stack,
    up: &UpOptions,
    dry_run: bool,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let plan = plan::plan_up(&stack.desired(), &stack.observed()?, up)?;
    if dry_run {
        print!("{plan}");
        return Ok(());
    }
    let image_nodes: Vec<&plan::Node> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::PullImage { .. } | Op::BuildImage { .. }))
        .collect();
    let plan = if image_nodes.is_empty() {
        plan
    } else {
        let mut images = Plan::default();
        for n in image_nodes {
            images.push(n.op.clone(), n.cause.clone(), vec![]);
        }
        let outcome = run_plan(stack, &images, progress);
        check(&images, &outcome)?;
        let mut again = up.clone();
        // What was pulled or built is now in the store: don't do it twice.
        again.pull = Some(PullPolicy::Never);
        again.build = false;
        again.no_build = true;
        plan::plan_up(&stack.desired(), &stack.observed()?, &again)?
    };
    let outcome = run_plan(stack, &plan, progress);
    check(&plan, &outcome)
}

/// `tug up`.
///
/// # Errors
/// Loading, planning or execution failures.
pub fn run_up(global: &GlobalArgs, args: &UpArgs) -> anyhow::Result<i32> {
    let services = args.create.services.clone();
    let options = StackOptions {
        stop_timeout: args.timeout.map(Duration::from_secs),
        wait: WaitOptions {
            timeout: args
                .wait_timeout
                .map_or(WaitOptions::default().timeout, Duration::from_secs),
            ..WaitOptions::default()
        },
        renew_anon_volumes: args.renew_anon_volumes,
        ..StackOptions::default()
    };
    let stack = open_stack(global, &services, options)?;
    let _lock = if global.dry_run {
        None
    } else {
        Some(lock(&stack)?)
    };
    let mut up = up_options(&args.create);
    up.no_deps = args.no_deps;
    up.always_recreate_deps = args.always_recreate_deps;
    up.renew_anon_volumes = args.renew_anon_volumes;
    up.no_start = args.no_start;
    up.wait = args.wait;
    let mut progress = Progress::new(Mode::from_flag(&global.progress));
    if !global.dry_run {
        repair(&stack, &mut progress)?;
    }
    let attached = !(global.dry_run || args.detach || args.wait || args.no_start);
    if args.watch && args.no_start {
        anyhow::bail!("up --watch needs the services started: drop --no-start");
    }
    // The watch's rules are checked and recorded before the containers start, so they get
    // the host's files from their first start on.
    let watching = if args.watch && !global.dry_run {
        Some(crate::cli::watch::prepare(
            &stack,
            &services,
            attached.then_some(false),
        )?)
    } else {
        None
    };
    if attached {
        // From here on Ctrl-C means "stop the project" (once the plan has run), never a
        // bare exit that would leave the stack half-attached.
        install_interrupt_handler();
    }
    // Output of containers that already exist is shown from now on, not replayed.
    let mut followers: BTreeMap<String, logs::Follower> = BTreeMap::new();
    if attached {
        for c in stack.project_containers()? {
            if let Ok(path) = stack.containers.log_path(&c.id) {
                followers.insert(c.id.clone(), logs::Follower::at_end(&path));
            }
        }
    }
    converge(&stack, &up, global.dry_run, &mut progress)?;
    if !attached {
        if watching.is_some() {
            drop(_lock);
            return crate::cli::watch::spawn_background(global, &stack, &services, false, true);
        }
        return Ok(0);
    }
    drop(_lock);
    let Some(prepared) = watching else {
        return attach(&stack, args, followers, &mut progress);
    };
    // Attached with --watch: the watch runs beside the log stream and ends with it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| crate::cli::watch::run_session(&stack, &prepared, false, true, &stop));
        let code = attach(&stack, args, followers, &mut progress);
        stop.store(true, Ordering::SeqCst);
        match w.join() {
            Ok(Err(e)) => eprintln!("watch: {e:#}"),
            Err(_) => eprintln!("watch: the watch thread panicked"),
            Ok(Ok(())) => {}
        }
        code
    })
}

/// `tug create`.
///
/// # Errors
/// Loading, planning or execution failures.
pub fn run_create(global: &GlobalArgs, args: &CreateArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.create.services, StackOptions::default())?;
    let _lock = lock(&stack)?;
    let mut up = up_options(&args.create);
    up.no_start = true;
    let mut progress = Progress::new(Mode::from_flag(&global.progress));
    converge(&stack, &up, global.dry_run, &mut progress)?;
    Ok(0)
}

/// `tug down`.
///
/// # Errors
/// Loading, planning or execution failures.
pub fn run_down(global: &GlobalArgs, args: &DownArgs) -> anyhow::Result<i32> {
    let options = StackOptions {
        stop_timeout: args.timeout.map(Duration::from_secs),
        // The network removals at the end of the plan hide the kernel's destruction of the
        // containers' links and the deletion of their files; `settle` below finishes
        // whatever is left.
        teardown: true,
        ..StackOptions::default()
    };
    let stack = open_stack(global, &[], options)?;
    // The project's watch ends first (before the lock, which a restart of the watch may
    // hold), and with the whole project its synced files are forgotten.
    if !global.dry_run && args.services.is_empty() {
        crate::cli::watch::stop_for_down(&stack)?;
    }
    let _lock = if global.dry_run {
        None
    } else {
        Some(lock(&stack)?)
    };
    let opts = DownOptions {
        volumes: args.volumes,
        remove_orphans: args.remove_orphans,
        rmi: args.rmi.clone(),
        services: args.services.clone(),
    };
    let plan = plan::plan_down(&stack.desired(), &stack.observed()?, &opts)?;
    if global.dry_run {
        print!("{plan}");
        return Ok(0);
    }
    let mut progress = Progress::new(Mode::from_flag(&global.progress));
    repair(&stack, &mut progress)?;
    let outcome = run_plan(&stack, &plan, &mut progress);
    let settled = stack.settle();
    check(&plan, &outcome)?;
    settled?;
    Ok(0)
}

/// Brings back what a crash or reboot took from the networks (bridges, rules, DNS servers,
/// port proxies) before the plan runs on them.
fn repair(stack: &Stack, progress: &mut Progress) -> anyhow::Result<()> {
    for w in stack.networks.reconcile()? {
        progress.warn(&w);
    }
    for key in stack.remove_stray_netns()? {
        progress.warn(&format!(
            "removed the network namespace of {key}, left by an interrupted command"
        ));
    }
    Ok(())
}

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn install_interrupt_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only increments an atomic counter, which is async-signal-safe.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}

const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "96"];

/// Attached `up`: stream logs of the attached services, prefixed by container name, until
/// every attached container has exited (or, with `--abort-on-container-exit`, any has), or
/// Ctrl-C; then stop the project gracefully (a second Ctrl-C kills).
fn attach(
    stack: &Stack,
    args: &UpArgs,
    mut followers: BTreeMap<String, logs::Follower>,
    progress: &mut Progress,
) -> anyhow::Result<i32> {
    let colour = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let abort = args.abort_on_container_exit || args.exit_code_from.is_some();
    let attached = |service: &str| -> bool {
        if args.no_attach.iter().any(|s| s == service) {
            return false;
        }
        if !args.attach.is_empty() {
            return args.attach.iter().any(|s| s == service);
        }
        stack
            .project
            .services
            .get(service)
            .is_none_or(|s| s.attach != Some(false))
    };
    let width = stack
        .project_containers()?
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let mut exit_code = 0;
    // Woken by log writes, state changes and new containers (inotify), or a Ctrl-C.
    let store = stack.root.join("containers");
    let watch = crate::engine::container::state::Watch::writes(&[&store]);
    let mut watched: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let containers = stack.project_containers()?;
        let mine: Vec<_> = containers
            .iter()
            .filter(|c| {
                c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                    && attached(c.labels.get(labels::SERVICE).map_or("", String::as_str))
            })
            .collect();
        // A directory watched only now may have changed since it was read.
        let mut fresh = false;
        if let Some(w) = &watch {
            for c in &mine {
                if watched.insert(c.id.clone()) {
                    w.add(&store.join(&c.id));
                    fresh = true;
                }
            }
        }
        for (i, c) in mine.iter().enumerate() {
            let f = followers.entry(c.id.clone()).or_insert_with(|| {
                let path = stack.containers.log_path(&c.id).unwrap_or_default();
                crate::engine::container::logs::Follower::at_start(&path)
            });
            for rec in f.poll() {
                let prefix = if args.no_log_prefix {
                    String::new()
                } else if colour {
                    format!(
                        "\x1b[{}m{:<width$} |\x1b[0m ",
                        COLOURS[i % COLOURS.len()],
                        c.name
                    )
                } else {
                    format!("{:<width$} | ", c.name)
                };
                let ts = if args.timestamps {
                    format!("{} ", rec.time)
                } else {
                    String::new()
                };
                println!("{prefix}{ts}{}", rec.text.trim_end_matches('\n'));
            }
        }
        let exited: Vec<_> = mine
            .iter()
            .filter(|c| matches!(c.state, Status::Exited | Status::Dead))
            .collect();
        if let Some(svc) = &args.exit_code_from
            && let Some(c) = exited
                .iter()
                .find(|c| c.labels.get(labels::SERVICE) == Some(svc))
        {
            exit_code = c.exit_code.unwrap_or(0);
        }
        let done = (!mine.is_empty() && exited.len() == mine.len())
            || (abort && !exited.is_empty())
            || INTERRUPTS.load(Ordering::SeqCst) > 0;
        if done {
            if abort && exit_code == 0 && args.exit_code_from.is_none() {
                exit_code = exited.first().and_then(|c| c.exit_code).unwrap_or(0);
            }
            break;
        }
        match &watch {
            Some(_) if fresh => {}
            Some(w) => w.wait(Duration::from_millis(500)),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    if INTERRUPTS.load(Ordering::SeqCst) > 0 {
        eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
    }
    // Stop everything that still runs, in dependency order.
    let plan = super::verbs::stop_plan(stack, &[])?;
    let finished = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        // A second Ctrl-C kills what is still running.
        scope.spawn(|| {
            while !finished.load(Ordering::SeqCst) {
                if INTERRUPTS.load(Ordering::SeqCst) >= 2 {
                    if let Ok(cs) = stack.project_containers() {
                        for c in cs.iter().filter(|c| c.state == Status::Running) {
                            let _ = stack.containers.kill(&c.id, "SIGKILL");
                        }
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let outcome = run_plan(stack, &plan, progress);
        finished.store(true, Ordering::SeqCst);
        outcome
    });
    check(&plan, &outcome)?;
    Ok(exit_code)
}
