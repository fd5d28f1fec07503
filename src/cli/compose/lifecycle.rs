//! `up`, `create` and `down`: reconcile, print or execute the plan, and for an attached `up`
//! stream the services' logs until they stop or the user presses Ctrl-C.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::args::{CreateArgs, CreateFlags, DownArgs, UpArgs};
use super::output::Progress;
use super::printer::{Printer, now_fixed};
use super::{lock, open_stack};
use crate::cli::GlobalArgs;
use crate::compose::{
    AttachEvent, AttachOptions, Followers, Stack, StackOptions, StopReason, WaitOptions,
};
use crate::plan::{DownOptions, PullPolicy, UpOptions};

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
        dry_run: global.dry_run,
        ..StackOptions::default()
    };
    let stack = open_stack(global, &services, options)?;
    super::warn_unhonoured(stack.project());
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
        stack.repair(&mut progress)?;
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
            if attached {
                crate::watch::Register::Foreground
            } else {
                crate::watch::Register::No
            },
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
    let followers = if attached {
        stack.follow_existing()?
    } else {
        Followers::default()
    };
    stack.converge(&up, &mut progress)?;
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
    let options = StackOptions {
        dry_run: global.dry_run,
        ..StackOptions::default()
    };
    let stack = open_stack(global, &args.create.services, options)?;
    super::warn_unhonoured(stack.project());
    let _lock = lock(&stack)?;
    let mut up = up_options(&args.create);
    up.no_start = true;
    let mut progress = Progress::from_global(global);
    if args.create.quiet_pull {
        progress.hide_pulls();
    }
    stack.converge(&up, &mut progress)?;
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
        // containers' links and the deletion of their files; `down` settles whatever is
        // left at its end.
        teardown: true,
        dry_run: global.dry_run,
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
    stack.down(&opts, &mut Progress::from_global(global))?;
    Ok(0)
}

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Whether Ctrl-C (or SIGTERM) came since [`install_interrupt_handler`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// How many Ctrl-C (or SIGTERM) came since [`install_interrupt_handler`].
fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
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

/// Attached `up`, as docker compose prints it: `Attaching to …` (the attached containers, by
/// name without the project), then their output prefixed by those names, and a status line
/// when one exits (`web-1 exited with code 0`); the stop (`Stack::attach`) is announced
/// (`Gracefully Stopping…` after Ctrl-C, `Aborting on container exit...`).
fn attach(
    stack: &Stack,
    global: &GlobalArgs,
    args: &UpArgs,
    since: jiff::Timestamp,
    followers: Followers,
    progress: &mut Progress,
) -> anyhow::Result<i32> {
    let colour =
        !args.no_color && global.colour(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let opts = AttachOptions {
        services: args.create.services.clone(),
        attach_dependencies: args.attach_dependencies,
        attach: args.attach.clone(),
        no_attach: args.no_attach.clone(),
        exit_code_from: args.exit_code_from.clone(),
        abort_on_container_exit: args.abort_on_container_exit,
        abort_on_container_failure: args.abort_on_container_failure,
        since: Some(since),
    };
    let mut printer = Printer::new(colour, !args.no_log_prefix, args.timestamps);
    let mut on = |ev: AttachEvent<'_>| match ev {
        AttachEvent::Attaching(names) => {
            for n in names {
                printer.register(n);
            }
            println!("Attaching to {}", names.join(", "));
        }
        AttachEvent::Log { source, record } => {
            let now = args.timestamps.then(now_fixed);
            printer.log(source, record, now.as_deref());
        }
        AttachEvent::Exited {
            source,
            code,
            restarting,
        } => printer.status(
            source,
            &if restarting {
                format!("exited with code {code} (restarting)")
            } else {
                format!("exited with code {code}")
            },
        ),
        AttachEvent::Stopping(StopReason::Interrupted) => {
            println!("Gracefully Stopping... press Ctrl+C again to force");
        }
        AttachEvent::Stopping(StopReason::Aborting) => {
            let text = "Aborting on container exit...";
            if global.colour(std::io::IsTerminal::is_terminal(&std::io::stderr())) {
                eprintln!("\x1b[31m\x1b[1m{text}\x1b[0m");
            } else {
                eprintln!("{text}");
            }
        }
        AttachEvent::Stopping(StopReason::AllExited) => {}
    };
    Ok(stack.attach(&opts, followers, &interrupts, &mut on, progress)?)
}
