//! The container-level compose verbs: start, stop, restart, kill, rm, pause, unpause, logs,
//! exec, run, top, port, cp, wait, images, events, scale, version.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::args::{
    CpArgs, EventsArgs, ExecArgs, ImagesArgs, KillArgs, LogsArgs, PortArgs, PullArgs, PushArgs,
    RestartArgs, RmArgs, RunArgs, ScaleArgs, ServicesArgs, StopArgs, TopArgs, VersionArgs,
    WaitArgs,
};
use super::output::{Mode, Progress};
use super::printer::{Printer, source_name};
use super::query::print_table;
use super::{lock, open_stack};
use crate::cli::GlobalArgs;
use crate::engine::compose::{Stack, StackOptions, labels};
use crate::engine::container::{ExecOptions, Status, Summary, logs};
use crate::plan::{self, DownOptions, Op, Plan, UpOptions};

/// The service containers (no one-offs) of the named services (all when empty), in start
/// order of their services, replicas by number.
fn service_containers(stack: &Stack, services: &[String]) -> anyhow::Result<Vec<Summary>> {
    for s in services {
        if !stack.project.services.contains_key(s) {
            anyhow::bail!("no such service: {s}");
        }
    }
    let desired = stack.desired();
    let all: Vec<String> = desired.services.iter().map(|s| s.name.clone()).collect();
    let order = plan::select_services(&desired, &all, true)?;
    let mut cs = stack.project_containers()?;
    cs.retain(|c| {
        let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
        c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
            && (services.is_empty() || services.iter().any(|s| s == svc))
    });
    let pos = |c: &Summary| {
        let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
        let n: u32 = c
            .labels
            .get(labels::NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (order.iter().position(|s| s == svc).unwrap_or(usize::MAX), n)
    };
    cs.sort_by_key(pos);
    Ok(cs)
}

fn progress(global: &GlobalArgs) -> Progress {
    Progress::from_global(global)
}

fn finish(plan: &Plan, stack: &Stack, global: &GlobalArgs) -> anyhow::Result<i32> {
    if global.dry_run {
        print!("{plan}");
        return Ok(0);
    }
    let mut p = progress(global);
    let outcome = p.run(plan, stack);
    if let Some(m) = super::output::failures(plan, &outcome) {
        anyhow::bail!("{m}");
    }
    Ok(0)
}

/// A plan that stops the given containers, dependents first.
pub(crate) fn stop_plan(stack: &Stack, services: &[String]) -> anyhow::Result<Plan> {
    let down = plan::plan_down(
        &stack.desired(),
        &stack.observed()?,
        &DownOptions {
            services: services.to_vec(),
            ..DownOptions::default()
        },
    )?;
    let mut plan = Plan::default();
    let mut remap: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, n) in down.nodes.into_iter().enumerate() {
        if let Op::StopContainer { .. } = n.op {
            let after = n
                .after
                .iter()
                .filter_map(|a| remap.get(a).copied())
                .collect();
            remap.insert(i, plan.push(n.op, "stop".to_string(), after));
        }
    }
    Ok(plan)
}

/// A plan that starts the stopped containers of the given services, each after its
/// dependencies meet their conditions.
pub(crate) fn start_plan(stack: &Stack, services: &[String]) -> anyhow::Result<Plan> {
    let cs = service_containers(stack, services)?;
    if cs.is_empty() {
        anyhow::bail!("no container to start");
    }
    let desired = stack.desired();
    let mut plan = Plan::default();
    let mut started: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for c in &cs {
        let svc = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
        if !matches!(c.state, Status::Created | Status::Exited) {
            continue;
        }
        let mut after = Vec::new();
        if let Some(d) = desired.service(&svc) {
            for dep in &d.depends_on {
                if let Some(ids) = started.get(&dep.service) {
                    let w = plan.push(
                        Op::WaitFor {
                            service: dep.service.clone(),
                            condition: dep.condition,
                            required: dep.required,
                        },
                        format!("{svc} depends on it"),
                        ids.clone(),
                    );
                    after.push(w);
                }
            }
        }
        let id = plan.push(
            Op::StartContainer {
                service: svc.clone(),
                name: c.name.clone(),
            },
            c.state.as_str().to_string(),
            after,
        );
        started.entry(svc).or_default().push(id);
    }
    Ok(plan)
}

/// `tug start`.
///
/// # Errors
/// Loading, or a container that cannot start.
pub fn run_start(global: &GlobalArgs, args: &ServicesArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let _l = lock(&stack)?;
    let plan = start_plan(&stack, &args.services)?;
    finish(&plan, &stack, global)
}

/// `tug stop`.
///
/// # Errors
/// Loading, or a container that cannot stop.
pub fn run_stop(global: &GlobalArgs, args: &StopArgs) -> anyhow::Result<i32> {
    let stack = open_with_timeout(global, &args.services, args.timeout)?;
    let _l = lock(&stack)?;
    let plan = stop_plan(&stack, &args.services)?;
    finish(&plan, &stack, global)
}

/// Opens the project with `-t` as the stop timeout of every service.
fn open_with_timeout(
    global: &GlobalArgs,
    services: &[String],
    timeout: Option<u64>,
) -> anyhow::Result<Stack> {
    open_stack(
        global,
        services,
        StackOptions {
            stop_timeout: timeout.map(Duration::from_secs),
            ..StackOptions::default()
        },
    )
}

/// `tug restart`.
///
/// # Errors
/// Loading, or a container that cannot stop or start.
pub fn run_restart(global: &GlobalArgs, args: &RestartArgs) -> anyhow::Result<i32> {
    let stack = open_with_timeout(global, &args.services, args.timeout)?;
    let _l = lock(&stack)?;
    let stop = stop_plan(&stack, &args.services)?;
    finish(&stop, &stack, global)?;
    if global.dry_run {
        return Ok(0);
    }
    let start = start_plan(&stack, &args.services)?;
    finish(&start, &stack, global)
}

/// `tug kill`.
///
/// # Errors
/// Loading, or a bad signal.
pub fn run_kill(global: &GlobalArgs, args: &KillArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let mut cs = service_containers(&stack, &args.services)?;
    if args.remove_orphans {
        let known: Vec<&String> = stack.project.services.keys().collect();
        cs.extend(stack.project_containers()?.into_iter().filter(|c| {
            c.labels
                .get(labels::SERVICE)
                .is_some_and(|s| !known.contains(&s))
        }));
    }
    let mut p = progress(global);
    let mut any = false;
    for c in cs.iter().filter(|c| c.state == Status::Running) {
        any = true;
        stack
            .containers
            .kill(&c.id, &args.signal)
            .with_context(|| format!("cannot kill {}", c.name))?;
        p.line("Container", &c.name, "Killed");
    }
    if !any {
        anyhow::bail!("no container to kill");
    }
    Ok(0)
}

/// `tug rm`.
///
/// # Errors
/// Loading, or a container that cannot be removed.
pub fn run_rm(global: &GlobalArgs, args: &RmArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let _l = lock(&stack)?;
    if args.stop {
        let plan = stop_plan(&stack, &args.services)?;
        finish(&plan, &stack, global)?;
    }
    let cs: Vec<Summary> = service_containers(&stack, &args.services)?
        .into_iter()
        .filter(|c| matches!(c.state, Status::Created | Status::Exited | Status::Dead))
        .collect();
    if cs.is_empty() {
        eprintln!("No stopped containers");
        return Ok(0);
    }
    if !args.force && std::io::stdin().is_terminal() {
        let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        eprint!("Going to remove {}\nAre you sure? [yN] ", names.join(", "));
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Ok(0);
        }
    }
    let mut plan = Plan::default();
    for c in &cs {
        plan.push(
            Op::RemoveContainer {
                service: c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                name: c.name.clone(),
            },
            "rm",
            vec![],
        );
    }
    finish(&plan, &stack, global)?;
    if args.volumes {
        // Anonymous volumes of the removed containers: the service's, except those a
        // container still uses (another replica's, or one shared by `volumes_from`).
        let used = stack.volumes.referenced_by_containers()?;
        for v in stack.volumes.list()? {
            let ours = v.labels.get(labels::PROJECT) == Some(&stack.project.name)
                && v.labels.get("tug.anonymous").map(String::as_str) == Some("true")
                && v.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| cs.iter().any(|c| c.labels.get(labels::SERVICE) == Some(s)));
            if ours && !used.contains_key(&v.name) {
                stack.volumes.remove(&v.name, &[])?;
            }
        }
    }
    Ok(0)
}

/// `tug pause` / `tug unpause`.
///
/// # Errors
/// Loading, or a container that is not running.
pub fn run_pause(global: &GlobalArgs, args: &ServicesArgs, pause: bool) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let mut p = progress(global);
    for c in service_containers(&stack, &args.services)? {
        let wanted = if pause {
            c.state == Status::Running
        } else {
            c.state == Status::Paused
        };
        if wanted {
            stack.containers.pause(&c.id, pause)?;
            p.line(
                "Container",
                &c.name,
                if pause { "Paused" } else { "Unpaused" },
            );
        }
    }
    Ok(0)
}

fn parse_time(s: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(jiff::Timestamp::from_second(secs)?);
    }
    let d = crate::project::model::Duration::parse(s)
        .map_err(|e| anyhow::anyhow!("invalid time {s:?}: {e}"))?;
    let now = jiff::Timestamp::now();
    Ok(now.checked_sub(jiff::SignedDuration::from_nanos(
        i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
    ))?)
}

/// `tug logs`.
///
/// # Errors
/// Loading, or bad flags.
pub fn run_logs(global: &GlobalArgs, args: &LogsArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let mut cs = service_containers(&stack, &args.services)?;
    if let Some(i) = args.index {
        cs.retain(|c| c.labels.get(labels::NUMBER) == Some(&i.to_string()));
    }
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let tail: Option<usize> = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}"))?),
    };
    let colour = !args.no_color && global.colour(std::io::stdout().is_terminal());
    let mut printer = Printer::new(colour, !args.no_log_prefix, args.timestamps);
    let mut by_name: Vec<&Summary> = cs.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    for c in by_name {
        printer.register(&source_name(c));
    }
    let keep = |r: &logs::LogRecord| -> bool {
        let t = r.time.parse::<jiff::Timestamp>().ok();
        since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t <= u))
    };
    let mut followers = Vec::new();
    for c in &cs {
        let name = source_name(c);
        let path = stack.containers.log_path(&c.id)?;
        let mut recs: Vec<logs::LogRecord> = logs::read_all(&path)
            .into_iter()
            .filter(|r| keep(r))
            .collect();
        if let Some(n) = tail {
            let skip = recs.len().saturating_sub(n);
            recs.drain(..skip);
        }
        for r in &recs {
            printer.log(&name, r, None);
        }
        if args.follow {
            followers.push((name, c.clone(), logs::Follower::at_end(&path)));
        }
    }
    // Woken by the followed logs' writes and the states' changes (inotify), not a timer.
    let watch = crate::engine::container::state::Watch::writes(
        &followers
            .iter()
            .map(|(_, c, _)| stack.containers.container_dir(&c.id))
            .collect::<Vec<_>>(),
    );
    while args.follow && !followers.is_empty() {
        for (name, _, f) in &mut followers {
            for r in f.poll() {
                if keep(&r) {
                    printer.log(name, &r, None);
                }
            }
        }
        // Stop following when every followed container has stopped for good.
        // (exited, and no supervisor left that could restart it).
        let all_done = followers.iter().all(|(_, c, _)| {
            let st = stack.containers.state(&c.id);
            matches!(st.status, Status::Exited | Status::Dead)
                && !crate::engine::container::state::alive(st.supervisor_pid, st.supervisor_start)
        });
        if all_done {
            for (name, _, f) in &mut followers {
                for r in f.poll() {
                    printer.log(name, &r, None);
                }
            }
            break;
        }
        match &watch {
            Some(w) => w.wait(Duration::from_millis(500)),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(0)
}

fn container_of(stack: &Stack, service: &str, index: u32) -> anyhow::Result<Summary> {
    service_containers(stack, &[service.to_string()])?
        .into_iter()
        .find(|c| c.labels.get(labels::NUMBER) == Some(&index.to_string()))
        .ok_or_else(|| anyhow::anyhow!("service {service} has no container with index {index}"))
}

/// `tug exec`.
///
/// # Errors
/// Loading, or a container that is not running.
pub fn run_exec(global: &GlobalArgs, args: &ExecArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let c = container_of(&stack, &args.service, args.index)?;
    if c.state != Status::Running {
        anyhow::bail!("service {} is not running", args.service);
    }
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let code = stack.containers.exec(
        &c.id,
        &ExecOptions {
            cmd: args.command.clone(),
            env: args.env.clone(),
            user: args.user.clone(),
            workdir: args.workdir.clone(),
            tty,
            interactive: !args.detach,
            detach: args.detach,
            timeout: None,
        },
    )?;
    Ok(code)
}

/// `tug run`: a one-off container of a service.
///
/// # Errors
/// Loading, dependencies that fail, or a container that cannot start.
pub fn run_run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<i32> {
    let stack = open_stack(
        global,
        std::slice::from_ref(&args.service),
        StackOptions::default(),
    )?;
    super::warn_unhonoured(&stack.project);
    let mut s = stack
        .project
        .services
        .get(&args.service)
        .with_context(|| format!("no such service: {}", args.service))?
        .clone();
    // What the one-off container adds to its service.
    s.cap_add.extend(args.cap_add.iter().cloned());
    s.cap_drop.extend(args.cap_drop.iter().cloned());
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        s.labels.insert(k.to_owned(), v.to_owned());
    }
    let mut env = Vec::new();
    let mut lookup = crate::project::interpolate::Environment::new();
    for (k, v) in &stack.project.environment {
        lookup.set(
            k.clone(),
            v.clone(),
            crate::project::interpolate::Source::Shell,
        );
    }
    for f in &args.env_from_file {
        for e in crate::project::dotenv::read(f, &lookup, false)? {
            match e.value {
                Some(v) => env.push(format!("{}={v}", e.key)),
                None => {
                    if let Some(v) = lookup.get(&e.key) {
                        env.push(format!("{}={v}", e.key));
                    }
                }
            }
        }
    }
    env.extend(args.env.iter().cloned());
    let quiet = args.quiet;
    let progress = |global: &GlobalArgs| {
        let mut p = if quiet {
            Progress::new(Mode::Quiet)
        } else {
            progress(global)
        };
        if args.quiet_pull {
            p.hide_pulls();
        }
        p
    };
    if args.remove_orphans {
        let _l = lock(&stack)?;
        let mut plan = Plan::default();
        for c in stack.project_containers()? {
            let svc = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
            if stack.project.services.contains_key(&svc) {
                continue;
            }
            let stop = (c.state == Status::Running).then(|| {
                plan.push(
                    Op::StopContainer {
                        service: svc.clone(),
                        name: c.name.clone(),
                    },
                    "orphan",
                    vec![],
                )
            });
            plan.push(
                Op::RemoveContainer {
                    service: svc,
                    name: c.name.clone(),
                },
                "orphan",
                stop.into_iter().collect(),
            );
        }
        finish(&plan, &stack, global)?;
    }
    // --pull: the service's image first (always: again; missing: when the store lacks it).
    let image = crate::plan::service_image(&stack.project.name, &s);
    let pull = match args.pull.as_deref() {
        Some("always") => true,
        Some("missing") | None => {
            args.pull.is_some() && s.build.is_none() && stack.images.resolve(&image).is_err()
        }
        _ => false,
    };
    if pull {
        let mut plan = Plan::default();
        plan.push(Op::PullImage { image }, "run --pull", vec![]);
        let outcome = progress(global).run(&plan, &stack);
        if let Some((_, e)) = outcome.failed.first() {
            anyhow::bail!("{e}");
        }
    }
    // Held until the one-off is created: another command of the project (`up`, `down`)
    // repairs namespaces named like the project's containers that have no record yet, and
    // must not take this one's while it is being wired.
    let creating = lock(&stack)?;
    if !args.no_deps && !s.depends_on.is_empty() {
        let deps: Vec<String> = s.depends_on.keys().cloned().collect();
        let plan = plan::plan_up(
            &stack.desired(),
            &stack.observed()?,
            &UpOptions {
                services: deps,
                no_recreate: true,
                ..UpOptions::default()
            },
        )?;
        let mut p = progress(global);
        let outcome = p.run(&plan, &stack);
        if !outcome.ok() {
            anyhow::bail!("cannot start the dependencies of {}", args.service);
        }
    }
    {
        // The service's own networks, volumes and image, as `up` would make them (docker
        // compose's `run` does too): a one-off needs no `up` first.
        let up = plan::plan_up(
            &stack.desired(),
            &stack.observed()?,
            &UpOptions {
                services: vec![args.service.clone()],
                no_deps: true,
                no_recreate: true,
                no_start: true,
                // `run --build`: the service's image is built again (cached steps stay).
                build: args.build,
                ..UpOptions::default()
            },
        )?;
        let mut needed = Plan::default();
        for n in up.nodes {
            if matches!(
                n.op,
                Op::CreateNetwork { .. }
                    | Op::CreateVolume { .. }
                    | Op::PullImage { .. }
                    | Op::BuildImage { .. }
            ) {
                needed.push(n.op, n.cause, vec![]);
            }
        }
        if !needed.nodes.is_empty() {
            let outcome = progress(global).run(&needed, &stack);
            if !outcome.ok() {
                anyhow::bail!(
                    "cannot prepare the networks and volumes of {}",
                    args.service
                );
            }
        }
    }
    let suffix = hex::encode(rand::random::<[u8; 6]>());
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-run-{}", stack.project.name, s.name, &suffix[..12]));
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let id = stack.create_oneoff(
        &s,
        &name,
        &crate::engine::compose::OneOff {
            command: (!args.command.is_empty()).then(|| args.command.clone()),
            entrypoint: args
                .entrypoint
                .as_deref()
                .map(crate::util::shell::split)
                .transpose()?,
            env,
            user: args.user.clone(),
            workdir: args.workdir.clone(),
            volumes: args.volumes.clone(),
            publish: args.publish.clone(),
            service_ports: args.service_ports,
            tty,
            interactive: args.interactive || !args.detach,
            remove: args.rm,
            use_aliases: args.use_aliases,
        },
    )?;
    drop(creating);
    if args.detach {
        stack.containers.start(&id, false)?;
        println!("{name}");
        return Ok(0);
    }
    let started = stack.containers.start(&id, true)?;
    let code = started.wait()?;
    if args.rm {
        let _ = stack.networks.disconnect_all(&name);
    }
    Ok(code)
}

/// `tug top`.
///
/// # Errors
/// Loading, or reading processes.
pub fn run_top(global: &GlobalArgs, args: &TopArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    for c in service_containers(&stack, &args.services)?
        .into_iter()
        .filter(|c| c.state == Status::Running)
    {
        println!("{}", c.name);
        let mut rows = vec![["UID".to_string(), "PID".to_string(), "CMD".to_string()]];
        for (pid, uid, cmd) in stack.containers.top(&c.id)? {
            rows.push([uid.to_string(), pid.to_string(), cmd]);
        }
        print_table(&rows);
        println!();
    }
    Ok(0)
}

/// `tug port`.
///
/// # Errors
/// Loading, or a port that is not published.
pub fn run_port(global: &GlobalArgs, args: &PortArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let c = container_of(&stack, &args.service, args.index)?;
    let p = stack
        .networks
        .published(&c.name)?
        .into_iter()
        .find(|p| p.container_port == args.private_port && p.protocol.to_string() == args.protocol)
        .with_context(|| {
            format!(
                "no port {}/{} published for {}",
                args.private_port, args.protocol, args.service
            )
        })?;
    println!("{}:{}", p.host_ip, p.host_port);
    Ok(0)
}

/// `tug cp`.
///
/// # Errors
/// Loading, or the copy.
pub fn run_cp(global: &GlobalArgs, args: &CpArgs) -> anyhow::Result<i32> {
    if args.archive {
        anyhow::bail!("cp --archive (copy uid/gid information) is not supported by tug yet");
    }
    if args.follow_link {
        anyhow::bail!("cp --follow-link is not supported by tug yet");
    }
    let stack = open_stack(global, &[], StackOptions::default())?;
    let split = |s: &str| -> Option<(String, String)> {
        let (svc, path) = s.split_once(':')?;
        stack
            .project
            .services
            .contains_key(svc)
            .then(|| (svc.to_string(), path.to_string()))
    };
    // `--all`: a one-off container of the service too, when no service container has the
    // index.
    let find = |svc: &str| -> anyhow::Result<Summary> {
        match container_of(&stack, svc, args.index) {
            Ok(c) => Ok(c),
            Err(e) if args.all => {
                let mut oneoffs: Vec<Summary> = stack
                    .project_containers()?
                    .into_iter()
                    .filter(|c| {
                        c.labels.get(labels::SERVICE).map(String::as_str) == Some(svc)
                            && c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True")
                    })
                    .collect();
                oneoffs.sort_by(|a, b| a.created.cmp(&b.created));
                let i = usize::try_from(args.index.max(1) - 1).unwrap_or(0);
                oneoffs.into_iter().nth(i).ok_or(e)
            }
            Err(e) => Err(e),
        }
    };
    match (split(&args.source), split(&args.destination)) {
        (Some((svc, path)), None) => {
            let c = find(&svc)?;
            stack.containers.copy(
                &c.id,
                &PathBuf::from(path),
                &PathBuf::from(&args.destination),
                false,
            )?;
        }
        (None, Some((svc, path))) => {
            let c = find(&svc)?;
            stack.containers.copy(
                &c.id,
                &PathBuf::from(&args.source),
                &PathBuf::from(path),
                true,
            )?;
        }
        _ => anyhow::bail!("copying needs exactly one side of the form SERVICE:PATH"),
    }
    Ok(0)
}

/// `tug wait`.
///
/// # Errors
/// Loading.
pub fn run_wait(global: &GlobalArgs, args: &WaitArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let cs = service_containers(&stack, &args.services)?;
    let mut last = 0;
    for c in &cs {
        let code = stack.containers.wait(&c.id, None)?.unwrap_or(0);
        println!("{code}");
        last = code;
        if args.down_project {
            break;
        }
    }
    if args.down_project {
        let _l = lock(&stack)?;
        let plan = plan::plan_down(
            &stack.desired(),
            &stack.observed()?,
            &DownOptions::default(),
        )?;
        finish(&plan, &stack, global)?;
    }
    Ok(last)
}

/// A size as docker's clients print it (`go-units.HumanSizeWithPrecision(n, 3)`): decimal
/// units, three significant digits (`1.98MB`, `512B`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1000.0 && i + 1 < UNITS.len() {
        size /= 1000.0;
        i += 1;
    }
    // Go's %.3g: three significant digits, no trailing zeros.
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{size:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", UNITS[i])
}

/// `tug images`: the images of the project's containers, as docker compose lists them.
///
/// # Errors
/// Loading, reading the store, or a bad `--format`.
pub fn run_images(global: &GlobalArgs, args: &ImagesArgs) -> anyhow::Result<i32> {
    use super::query::{ListFormat, list_template, render_list};
    let fmt = list_template(
        &args.format,
        "table {{.ContainerName}}\t{{.Repository}}\t{{.Tag}}\t{{.Platform}}\t{{.ShortID}}\t{{.HumanSize}}\t{{.Created}}",
    )?;
    let stack = open_stack(global, &[], StackOptions::default())?;
    let mut cs = service_containers(&stack, &args.services)?;
    cs.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        let mut seen: Vec<&str> = Vec::new();
        for c in &cs {
            let id = c.image_id.trim_start_matches("sha256:");
            if !seen.contains(&id) {
                seen.push(id);
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let mut rows = Vec::new();
    for c in &cs {
        let familiar = crate::engine::image::Reference::parse(&c.image)
            .map_or_else(|_| c.image.clone(), |r| r.familiar());
        let (repo, tag) = match familiar.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (familiar.clone(), "latest".to_string()),
        };
        let img = stack.images.resolve(&c.image_id).ok();
        let platform = img
            .as_ref()
            .map(|i| {
                let cfg = &i.config;
                let mut p = format!("{}/{}", cfg.os(), cfg.architecture());
                if let Some(v) = cfg.variant() {
                    p.push('/');
                    p.push_str(v);
                }
                p
            })
            .unwrap_or_default();
        let size = img.as_ref().map_or(0, |i| i.size);
        let created = img
            .as_ref()
            .and_then(|i| i.config.created().clone())
            .unwrap_or_default();
        let mut r = crate::cli::format::Row::default();
        for (k, v) in [
            ("ID", serde_json::json!(c.image_id)),
            ("ContainerName", serde_json::json!(c.name)),
            ("Repository", serde_json::json!(repo)),
            ("Tag", serde_json::json!(tag)),
            ("Platform", serde_json::json!(platform)),
            ("Size", serde_json::json!(size)),
            ("LastTagTime", serde_json::json!(created)),
        ] {
            r.fields.insert(k.to_owned(), v);
        }
        // Table-only columns.
        if !matches!(fmt, ListFormat::JsonArray) {
            r.fields.insert(
                "ShortID".into(),
                serde_json::json!(
                    c.image_id
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect::<String>()
                ),
            );
            r.fields
                .insert("HumanSize".into(), serde_json::json!(human_size(size)));
            r.fields.insert(
                "Created".into(),
                serde_json::json!(format!(
                    "{} ago",
                    crate::cli::format::human_duration(crate::cli::format::seconds_since(&created))
                )),
            );
        }
        rows.push(r);
    }
    print!(
        "{}",
        render_list(
            &fmt,
            &rows,
            &[
                ("ContainerName", "CONTAINER"),
                ("Repository", "REPOSITORY"),
                ("Tag", "TAG"),
                ("Platform", "PLATFORM"),
                ("ShortID", "IMAGE ID"),
                ("ID", "IMAGE ID"),
                ("HumanSize", "SIZE"),
                ("Size", "SIZE"),
                ("Created", "CREATED"),
                ("LastTagTime", "CREATED"),
            ],
            true,
        )?
    );
    Ok(0)
}

/// `tug volumes`: the project's named volumes (those of the named services only), as docker
/// compose lists them.
///
/// # Errors
/// Loading, reading the volumes, or a bad `--format`.
pub fn run_volumes(global: &GlobalArgs, args: &super::args::VolumesArgs) -> anyhow::Result<i32> {
    let template =
        crate::cli::format::Template::parse(&args.format, "table {{.Driver}}\t{{.Name}}")
            .map_err(anyhow::Error::msg)?;
    let stack = open_stack(global, &[], StackOptions::default())?;
    for s in &args.services {
        if !stack.project.services.contains_key(s) {
            anyhow::bail!("no such service: {s}");
        }
    }
    // Volumes the named services' containers mount.
    let used: Option<Vec<std::path::PathBuf>> = if args.services.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for c in service_containers(&stack, &args.services)? {
            if let Ok(i) = stack.containers.inspect(&c.id) {
                v.extend(i.record.config.mounts.into_iter().map(|m| m.source));
            }
        }
        Some(v)
    };
    let mut volumes: Vec<_> = stack
        .volumes
        .list()?
        .into_iter()
        .filter(|v| {
            v.labels.get(labels::PROJECT) == Some(&stack.project.name)
                && v.labels.get("tug.anonymous").map(String::as_str) != Some("true")
                && used.as_ref().is_none_or(|u| {
                    u.iter()
                        .any(|m| m.starts_with(stack.volumes.mountpoint(&v.name)))
                })
        })
        .collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        for v in &volumes {
            println!("{}", v.name);
        }
        return Ok(0);
    }
    let rows: Vec<crate::cli::format::Row> = volumes
        .iter()
        .map(|v| {
            crate::cli::format::Row::new([
                ("Availability", serde_json::json!("N/A")),
                ("Driver", serde_json::json!(v.driver)),
                ("Group", serde_json::json!("N/A")),
                (
                    "Labels",
                    serde_json::json!(
                        v.labels
                            .iter()
                            .map(|(k, val)| format!("{k}={val}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ),
                ("Links", serde_json::json!("N/A")),
                (
                    "Mountpoint",
                    serde_json::json!(v.mountpoint.display().to_string()),
                ),
                ("Name", serde_json::json!(v.name)),
                ("Scope", serde_json::json!("local")),
                ("Size", serde_json::json!("N/A")),
                ("Status", serde_json::json!("N/A")),
            ])
            .with_labels(v.labels.clone())
        })
        .collect();
    print!(
        "{}",
        template
            .render(
                &rows,
                &[
                    ("Driver", "DRIVER"),
                    ("Name", "VOLUME NAME"),
                    ("Mountpoint", "MOUNTPOINT"),
                    ("Scope", "SCOPE"),
                    ("Labels", "LABELS"),
                    ("Size", "SIZE"),
                ],
            )
            .map_err(anyhow::Error::msg)?
    );
    Ok(0)
}

/// `tug events`: container state changes of the project as they happen, until interrupted.
///
/// # Errors
/// Loading, or reading the engine.
pub fn run_events(global: &GlobalArgs, args: &EventsArgs) -> anyhow::Result<i32> {
    let until = args.until.as_deref().map(parse_time).transpose()?;
    if let Some(since) = args.since.as_deref().map(parse_time).transpose()?
        && since < jiff::Timestamp::now()
    {
        eprintln!("warning: tug keeps no history of events: showing them from now on");
    }
    let stack = open_stack(global, &[], StackOptions::default())?;
    let mut last: BTreeMap<String, (Status, String)> = BTreeMap::new();
    let mut first = true;
    // Woken by containers appearing or going and by their states' changes (inotify).
    let store = stack.root.join("containers");
    let watch = crate::engine::container::state::Watch::states(&[&store]);
    loop {
        if until.is_some_and(|u| jiff::Timestamp::now() > u) {
            return Ok(0);
        }
        let cs = service_containers(&stack, &args.services)?;
        let mut seen = Vec::new();
        let mut fresh = false;
        for c in &cs {
            if !last.contains_key(&c.id)
                && let Some(w) = &watch
            {
                w.add(&store.join(&c.id));
                fresh = true;
            }
            seen.push(c.id.clone());
            let health = c.health.as_str().to_string();
            let now = (c.state, health.clone());
            let before = last.insert(c.id.clone(), now.clone());
            if first || before.as_ref() == Some(&now) {
                continue;
            }
            let action = match (before.map(|b| b.0), c.state) {
                (None, Status::Created) => "create".to_string(),
                (_, Status::Running) if last_health_changed(&now) => {
                    format!("health_status: {}", now.1)
                }
                (_, Status::Running) => "start".to_string(),
                (_, Status::Exited) => "die".to_string(),
                (_, Status::Paused) => "pause".to_string(),
                (_, Status::Restarting) => "restart".to_string(),
                (_, s) => s.as_str().to_string(),
            };
            emit(args.json, c, &action);
        }
        let gone: Vec<String> = last.keys().filter(|k| !seen.contains(k)).cloned().collect();
        for id in gone {
            last.remove(&id);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"time": jiff::Timestamp::now().to_string(), "type": "container", "action": "destroy", "id": id})
                );
            } else {
                println!("{} container destroy {id}", jiff::Timestamp::now());
            }
        }
        first = false;
        match &watch {
            // A directory watched only now may have changed since it was read.
            Some(_) if fresh => {}
            Some(w) => w.wait(Duration::from_millis(1000)),
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn last_health_changed(now: &(Status, String)) -> bool {
    now.1 == "healthy" || now.1 == "unhealthy"
}

fn emit(json: bool, c: &Summary, action: &str) {
    let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "time": jiff::Timestamp::now().to_string(),
                "type": "container",
                "action": action,
                "id": c.id,
                "service": service,
                "attributes": {"name": c.name, "image": c.image},
            })
        );
    } else {
        println!(
            "{} container {action} {} (image={}, name={})",
            jiff::Timestamp::now(),
            c.id,
            c.image,
            c.name
        );
    }
}

/// `tug scale`.
///
/// # Errors
/// Loading, planning or execution.
pub fn run_scale(global: &GlobalArgs, args: &ScaleArgs) -> anyhow::Result<i32> {
    let services: Vec<String> = args.scale.iter().map(|s| s.service.clone()).collect();
    let stack = open_stack(global, &services, StackOptions::default())?;
    let _l = lock(&stack)?;
    let plan = plan::plan_up(
        &stack.desired(),
        &stack.observed()?,
        &UpOptions {
            services,
            no_deps: args.no_deps,
            no_recreate: true,
            scale: args
                .scale
                .iter()
                .map(|s| (s.service.clone(), s.replicas))
                .collect(),
            ..UpOptions::default()
        },
    )?;
    finish(&plan, &stack, global)
}

/// `tug pull`: pulls the images of the services (those with `image:`).
///
/// # Errors
/// Loading, or a failed pull (unless `--ignore-pull-failures`).
pub fn run_pull(global: &GlobalArgs, args: &PullArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let desired = stack.desired();
    let services = plan::select_services(&desired, &args.services, !args.include_deps)?;
    let mut images: Vec<String> = Vec::new();
    for name in &services {
        if let Some(s) = stack.project.services.get(name)
            && let Some(img) = &s.image
            && s.pull_policy.as_deref() != Some("build")
            && !(args.ignore_buildable && s.build.is_some())
            && !images.contains(img)
        {
            // `--policy missing`: only what the store lacks.
            if args.policy.as_deref() == Some("missing") && stack.images.resolve(img).is_ok() {
                continue;
            }
            images.push(img.clone());
        }
    }
    let mut plan = Plan::default();
    for image in images {
        plan.push(Op::PullImage { image }, "pull", vec![]);
    }
    let mut p = if args.quiet {
        Progress::new(Mode::Quiet)
    } else {
        progress(global)
    };
    let outcome = p.run(&plan, &stack);
    if !outcome.failed.is_empty() && !args.ignore_pull_failures {
        let msgs: Vec<String> = outcome.failed.iter().map(|(_, e)| e.clone()).collect();
        anyhow::bail!("{}", msgs.join("\n"));
    }
    Ok(0)
}

/// `tug push`: pushes the images of services that have both `build:` and `image:`.
///
/// # Errors
/// Loading, or a failed push (unless `--ignore-push-failures`).
pub fn run_push(global: &GlobalArgs, args: &PushArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let mut p = if args.quiet {
        Progress::new(Mode::Quiet)
    } else {
        progress(global)
    };
    let quiet = crate::engine::image::no_progress();
    let selected: Vec<String> = if args.services.is_empty() {
        stack.project.services.keys().cloned().collect()
    } else {
        plan::select_services(&stack.desired(), &args.services, !args.include_deps)?
    };
    for (name, s) in &stack.project.services {
        if !selected.contains(name) {
            continue;
        }
        let (Some(img), Some(_)) = (&s.image, &s.build) else {
            continue;
        };
        match stack.images.push(None, img, &quiet) {
            Ok(_) => p.line("Image", img, "Pushed"),
            Err(e) if args.ignore_push_failures => p.warn(&format!("{img}: {e}")),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot push {img}"))),
        }
    }
    Ok(0)
}

/// `tug version`. As docker compose (`docker-compose`, `docker compose` through the shim) it
/// reports the docker compose version whose interface tug implements, in compose's words, so
/// clients that check for compose v2 accept it; as `tug`, tug's own version.
///
/// # Errors
/// Never.
pub fn run_version(args: &VersionArgs) -> anyhow::Result<i32> {
    let v = env!("CARGO_PKG_VERSION");
    let compose = crate::engine::compose::convert::COMPOSE_VERSION;
    let json = args.format.as_deref() == Some("json");
    if crate::cli::compose_persona() {
        if args.short {
            println!("{compose}");
        } else if json {
            println!(
                "{}",
                serde_json::json!({"version": format!("v{compose}"), "tug": v})
            );
        } else {
            println!("Docker Compose version v{compose} (tug {v})");
        }
    } else if args.short {
        println!("{v}");
    } else if json {
        println!("{}", serde_json::json!({"version": v, "compose": compose}));
    } else {
        println!("tug version {v} (docker compose {compose} compatible)");
    }
    Ok(0)
}
