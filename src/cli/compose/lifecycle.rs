//! `up`, `create` and `down`: reconcile, print or execute the plan, and for an attached `up`
//! stream the services' logs until they stop or the user presses Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::args::{CreateArgs, CreateFlags, DownArgs, UpArgs};
use super::output::Progress;
use super::printer::{Printer, now_fixed, source_name};
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
    match super::output::failures(plan, outcome) {
        Some(m) => anyhow::bail!("{m}"),
        None => Ok(()),
    }
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
    if args.menu == Some(true) {
        anyhow::bail!("up --menu: interactive shortcuts are not supported by tug");
    }
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
    super::warn_unhonoured(&stack.project);
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
    let mut progress = Progress::from_global(global);
    if args.create.quiet_pull {
        progress.hide_pulls();
    }
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
    // Exits from now on are this `up`'s (a finish time has a second's precision at worst).
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(1))
        .unwrap_or_else(|_| jiff::Timestamp::now());
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
        return attach(&stack, global, args, since, followers, &mut progress);
    };
    // Attached with --watch: the watch runs beside the log stream and ends with it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            crate::cli::watch::run_session(&stack, &prepared, false, true, &|| {
                stop.load(Ordering::SeqCst)
            })
        });
        let code = attach(&stack, global, args, since, followers, &mut progress);
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
    super::warn_unhonoured(&stack.project);
    let _lock = lock(&stack)?;
    let mut up = up_options(&args.create);
    up.no_start = true;
    let mut progress = Progress::from_global(global);
    if args.create.quiet_pull {
        progress.hide_pulls();
    }
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
    let mut progress = Progress::from_global(global);
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

/// Whether Ctrl-C (or SIGTERM) came since [`install_interrupt_handler`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Counts Ctrl-C (and SIGTERM) from now on, instead of ending the process.
pub(crate) fn install_interrupt_handler() {
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

/// Attached `up`, as docker compose does it: `Attaching to …` (the attached containers, by
/// name without the project), then their output prefixed by those names, and a status line
/// when one exits (`web-1 exited with code 0`), until every attached container has exited
/// (or, with `--abort-on-container-exit`/`-failure`, one has), or Ctrl-C; then the project
/// is stopped gracefully (a second Ctrl-C kills). Exit code: `--exit-code-from`'s, the
/// failing container's on an abort, 130 after Ctrl-C, else 0.
fn attach(
    stack: &Stack,
    global: &GlobalArgs,
    args: &UpArgs,
    since: jiff::Timestamp,
    mut followers: BTreeMap<String, logs::Follower>,
    progress: &mut Progress,
) -> anyhow::Result<i32> {
    let colour =
        !args.no_color && global.colour(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    // Named services (and, with --attach-dependencies, what they depend on) or all.
    let named: Vec<String> = if args.create.services.is_empty() {
        Vec::new()
    } else if args.attach_dependencies {
        let desired = stack.desired();
        plan::select_services(&desired, &args.create.services, false)?
    } else {
        args.create.services.clone()
    };
    let attached = |service: &str| -> bool {
        if args.no_attach.iter().any(|s| s == service) {
            return false;
        }
        if !args.attach.is_empty() {
            return args.attach.iter().any(|s| s == service);
        }
        if !named.is_empty() && !named.iter().any(|s| s == service) {
            return false;
        }
        stack
            .project
            .services
            .get(service)
            .is_none_or(|s| s.attach != Some(false))
    };
    let mine =
        |cs: &[crate::engine::container::Summary]| -> Vec<crate::engine::container::Summary> {
            cs.iter()
                .filter(|c| {
                    c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                        && attached(c.labels.get(labels::SERVICE).map_or("", String::as_str))
                })
                .cloned()
                .collect()
        };
    let mut printer = Printer::new(colour, !args.no_log_prefix, args.timestamps);
    let first = mine(&stack.project_containers()?);
    let names: Vec<String> = first.iter().map(source_name).collect();
    for n in &names {
        printer.register(n);
    }
    println!("Attaching to {}", names.join(", "));
    // Each exit is reported once: by the container and the time it ended, counting only
    // what ended since this `up` began (a container may end before we look at it).
    let mut reported: std::collections::HashSet<(String, String)> =
        std::collections::HashSet::new();
    let mut exit_code = 0;
    let mut aborting = false;
    // Woken by log writes, state changes and new containers (inotify), or a Ctrl-C.
    let store = stack.root.join("containers");
    let watch = crate::engine::container::state::Watch::writes(&[&store]);
    let mut watched: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let containers = mine(&stack.project_containers()?);
        // A directory watched only now may have changed since it was read.
        let mut fresh = false;
        if let Some(w) = &watch {
            for c in &containers {
                if watched.insert(c.id.clone()) {
                    w.add(&store.join(&c.id));
                    fresh = true;
                }
            }
        }
        for c in &containers {
            let name = source_name(c);
            let f = followers.entry(c.id.clone()).or_insert_with(|| {
                let path = stack.containers.log_path(&c.id).unwrap_or_default();
                logs::Follower::at_start(&path)
            });
            for rec in f.poll() {
                let now = args.timestamps.then(now_fixed);
                printer.log(&name, &rec, now.as_deref());
            }
        }
        if INTERRUPTS.load(Ordering::SeqCst) > 0 {
            break;
        }
        let mut exited_now = Vec::new();
        for c in &containers {
            let Some(end) = c.finished_at.as_deref() else {
                continue;
            };
            let after_start = end.parse::<jiff::Timestamp>().is_ok_and(|t| t >= since);
            if after_start && reported.insert((c.id.clone(), end.to_owned())) {
                exited_now.push(c);
            }
        }
        for c in &exited_now {
            let code = c.exit_code.unwrap_or(0);
            // Running again (or about to be): its restart policy restarted it.
            let restarting = !matches!(c.state, Status::Exited | Status::Dead);
            printer.status(
                &source_name(c),
                &if restarting {
                    format!("exited with code {code} (restarting)")
                } else {
                    format!("exited with code {code}")
                },
            );
            if restarting {
                continue;
            }
            if args.exit_code_from.as_deref() == c.labels.get(labels::SERVICE).map(String::as_str) {
                exit_code = code;
            }
            let failed = code != 0;
            if (args.abort_on_container_exit || args.exit_code_from.is_some())
                || (args.abort_on_container_failure && failed)
            {
                if !aborting && args.exit_code_from.is_none() {
                    exit_code = code;
                }
                aborting = true;
            }
        }
        let all_down = !containers.is_empty()
            && containers
                .iter()
                .all(|c| matches!(c.state, Status::Exited | Status::Dead));
        if aborting || all_down {
            break;
        }
        match &watch {
            Some(_) if fresh => {}
            Some(w) => w.wait(Duration::from_millis(500)),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let interrupted = INTERRUPTS.load(Ordering::SeqCst) > 0;
    if interrupted {
        println!("Gracefully Stopping... press Ctrl+C again to force");
    } else if aborting {
        let text = "Aborting on container exit...";
        if global.colour(std::io::IsTerminal::is_terminal(&std::io::stderr())) {
            eprintln!("\x1b[31m\x1b[1m{text}\x1b[0m");
        } else {
            eprintln!("{text}");
        }
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
    Ok(if interrupted { 130 } else { exit_code })
}
