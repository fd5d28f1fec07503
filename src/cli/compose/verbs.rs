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
    Progress::new(Mode::from_flag(&global.progress))
}

fn finish(plan: &Plan, stack: &Stack, global: &GlobalArgs) -> anyhow::Result<i32> {
    if global.dry_run {
        print!("{plan}");
        return Ok(0);
    }
    let mut p = progress(global);
    let outcome = p.run(plan, stack);
    if !outcome.failed.is_empty() {
        let msgs: Vec<String> = outcome
            .failed
            .iter()
            .map(|(i, e)| format!("{}: {e}", plan.nodes[*i].op))
            .collect();
        anyhow::bail!("{}", msgs.join("\n"));
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

const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "96"];

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
    let colour =
        !args.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let width = cs.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let prefix = |i: usize, name: &str| -> String {
        if args.no_log_prefix {
            String::new()
        } else if colour {
            format!(
                "\x1b[{}m{name:<width$} |\x1b[0m ",
                COLOURS[i % COLOURS.len()]
            )
        } else {
            format!("{name:<width$} | ")
        }
    };
    let keep = |r: &logs::LogRecord| -> bool {
        let t = r.time.parse::<jiff::Timestamp>().ok();
        since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t <= u))
    };
    let show = |i: usize, c: &Summary, r: &logs::LogRecord| {
        let ts = if args.timestamps {
            format!("{} ", r.time)
        } else {
            String::new()
        };
        println!(
            "{}{ts}{}",
            prefix(i, &c.name),
            r.text.trim_end_matches('\n')
        );
    };
    let mut followers = Vec::new();
    for (i, c) in cs.iter().enumerate() {
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
            show(i, c, r);
        }
        if args.follow {
            followers.push((i, c.clone(), logs::Follower::at_end(&path)));
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
        for (i, c, f) in &mut followers {
            for r in f.poll() {
                if keep(&r) {
                    show(*i, c, &r);
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
            for (i, c, f) in &mut followers {
                for r in f.poll() {
                    show(*i, c, &r);
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
    let s = stack
        .project
        .services
        .get(&args.service)
        .with_context(|| format!("no such service: {}", args.service))?
        .clone();
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
            entrypoint: args.entrypoint.as_deref().map(shell_words),
            env: args.env.clone(),
            user: args.user.clone(),
            workdir: args.workdir.clone(),
            volumes: args.volumes.clone(),
            publish: args.publish.clone(),
            service_ports: args.service_ports,
            tty,
            interactive: args.interactive || !args.detach,
            remove: args.rm,
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

/// Splits an `--entrypoint` string like a POSIX shell would (quotes, backslashes).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (None, '\'' | '"') => {
                quote = Some(ch);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
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
    let stack = open_stack(global, &[], StackOptions::default())?;
    let split = |s: &str| -> Option<(String, String)> {
        let (svc, path) = s.split_once(':')?;
        stack
            .project
            .services
            .contains_key(svc)
            .then(|| (svc.to_string(), path.to_string()))
    };
    match (split(&args.source), split(&args.destination)) {
        (Some((svc, path)), None) => {
            let c = container_of(&stack, &svc, args.index)?;
            stack.containers.copy(
                &c.id,
                &PathBuf::from(path),
                &PathBuf::from(&args.destination),
                false,
            )?;
        }
        (None, Some((svc, path))) => {
            let c = container_of(&stack, &svc, args.index)?;
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

/// `tug images`.
///
/// # Errors
/// Loading, or reading the store.
pub fn run_images(global: &GlobalArgs, args: &ImagesArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let cs = service_containers(&stack, &args.services)?;
    let mut rows = vec![[
        "CONTAINER".to_string(),
        "REPOSITORY".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
    ]];
    let mut json = Vec::new();
    for c in &cs {
        let (repo, tag) = match c.image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (c.image.clone(), "latest".to_string()),
        };
        let id = c.image_id.trim_start_matches("sha256:");
        if args.quiet {
            println!("{}", c.image_id);
            continue;
        }
        json.push(serde_json::json!({
            "ContainerName": c.name, "Repository": repo, "Tag": tag, "ID": c.image_id,
        }));
        rows.push([c.name.clone(), repo, tag, id.chars().take(12).collect()]);
    }
    if args.quiet {
        return Ok(0);
    }
    if args.format == "json" {
        println!("{}", serde_json::Value::Array(json));
    } else {
        print_table(&rows);
    }
    Ok(0)
}

/// `tug events`: container state changes of the project as they happen, until interrupted.
///
/// # Errors
/// Loading, or reading the engine.
pub fn run_events(global: &GlobalArgs, args: &EventsArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let mut last: BTreeMap<String, (Status, String)> = BTreeMap::new();
    let mut first = true;
    // Woken by containers appearing or going and by their states' changes (inotify).
    let store = stack.root.join("containers");
    let watch = crate::engine::container::state::Watch::states(&[&store]);
    loop {
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
            && !images.contains(img)
        {
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
    for (name, s) in &stack.project.services {
        if !args.services.is_empty() && !args.services.contains(name) {
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

/// `tug version`.
///
/// # Errors
/// Never.
pub fn run_version(args: &VersionArgs) -> anyhow::Result<i32> {
    let v = env!("CARGO_PKG_VERSION");
    if args.short {
        println!("{v}");
    } else if args.format.as_deref() == Some("json") {
        println!("{}", serde_json::json!({"version": v}));
    } else {
        println!("tug version {v}");
    }
    Ok(0)
}
