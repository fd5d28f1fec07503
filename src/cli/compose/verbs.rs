//! The container-level compose verbs: start, stop, restart, kill, rm, pause, unpause, logs,
//! exec, run, top, port, cp, commit, export, wait, images, events, scale, version. Each maps its flags to the
//! options of a compose service method and prints what comes back.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context as _;

use super::args::{
    CommitArgs, CpArgs, EventsArgs, ExecArgs, ExportArgs, ImagesArgs, KillArgs, LogsArgs, PortArgs,
    PullArgs, PushArgs, RestartArgs, RmArgs, RunArgs, ScaleArgs, ServicesArgs, StopArgs, TopArgs,
    VersionArgs, WaitArgs,
};
use super::output::{Mode, Progress};
use super::printer::Printer;
use super::query::print_table;
use super::{lock, open_stack};
use crate::cli::GlobalArgs;
use crate::compose::{
    ContainerEvent, CopyOptions, KillOptions, LogEvent, LogsOptions, PullOptions, PushOptions,
    Reporter, RunOptions, RunOutcome, RunPull, RunStep, ScaleOptions, Stack, StackOptions,
    WaitServicesOptions, labels,
};
use crate::engine::container::{ExecOptions, Summary};

fn progress(global: &GlobalArgs) -> Progress {
    Progress::from_global(global)
}

/// Opens the project for a verb that changes it: `--dry-run` shows its plans, `-t` is the
/// stop timeout of every service.
fn open_changing(
    global: &GlobalArgs,
    services: &[String],
    timeout: Option<u64>,
) -> anyhow::Result<Stack> {
    open_stack(
        global,
        services,
        StackOptions {
            stop_timeout: timeout.map(Duration::from_secs),
            dry_run: global.dry_run,
            ..StackOptions::default()
        },
    )
}

/// `tug start`.
///
/// # Errors
/// Loading, or a container that cannot start.
pub fn run_start(global: &GlobalArgs, args: &ServicesArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, &args.services, None)?;
    let _l = lock(&stack)?;
    stack.start(&args.services, &mut progress(global))?;
    Ok(0)
}

/// `tug stop`.
///
/// # Errors
/// Loading, or a container that cannot stop.
pub fn run_stop(global: &GlobalArgs, args: &StopArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, &args.services, args.timeout)?;
    let _l = lock(&stack)?;
    stack.stop(&args.services, &mut progress(global))?;
    Ok(0)
}

/// `tug restart`.
///
/// # Errors
/// Loading, or a container that cannot stop or start.
pub fn run_restart(global: &GlobalArgs, args: &RestartArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, &args.services, args.timeout)?;
    let _l = lock(&stack)?;
    stack.restart(&args.services, &mut progress(global))?;
    Ok(0)
}

/// `tug kill`.
///
/// # Errors
/// Loading, or a bad signal.
pub fn run_kill(global: &GlobalArgs, args: &KillArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    stack.kill(
        &KillOptions {
            services: args.services.clone(),
            signal: args.signal.clone(),
            remove_orphans: args.remove_orphans,
        },
        &mut progress(global),
    )?;
    Ok(0)
}

/// `tug rm`.
///
/// # Errors
/// Loading, or a container that cannot be removed.
pub fn run_rm(global: &GlobalArgs, args: &RmArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, &args.services, None)?;
    let _l = lock(&stack)?;
    if args.stop {
        stack.stop(&args.services, &mut progress(global))?;
    }
    let cs = stack.removable_containers(&args.services)?;
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
    stack.remove(&cs, args.volumes, &mut progress(global))?;
    Ok(0)
}

/// `tug pause` / `tug unpause`.
///
/// # Errors
/// Loading, or a container that is not running.
pub fn run_pause(global: &GlobalArgs, args: &ServicesArgs, pause: bool) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    stack.pause(&args.services, pause, &mut progress(global))?;
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
    // A service that does not exist is named before the flags are read.
    stack.service_containers(&args.services)?;
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let tail: Option<usize> = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}"))?),
    };
    let colour = !args.no_color && global.colour(std::io::stdout().is_terminal());
    let mut printer = Printer::new(colour, !args.no_log_prefix, args.timestamps);
    let opts = LogsOptions {
        services: args.services.clone(),
        index: args.index,
        since,
        until,
        tail,
        follow: args.follow,
    };
    stack.logs(&opts, &mut |ev| match ev {
        LogEvent::Sources(names) => {
            for n in names {
                printer.register(n);
            }
        }
        LogEvent::Record { source, record } => printer.log(source, record, None),
    })?;
    Ok(0)
}

/// `tug exec`.
///
/// # Errors
/// Loading, or a container that is not running.
pub fn run_exec(global: &GlobalArgs, args: &ExecArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let opts = ExecOptions {
        cmd: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        tty,
        interactive: !args.detach,
        detach: args.detach,
        timeout: None,
        privileged: args.privileged,
    };
    Ok(stack.exec(&args.service, args.index, &opts)?)
}

/// `tug run`: a one-off container of a service.
///
/// # Errors
/// Loading, dependencies that fail, or a container that cannot start.
pub fn run_run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, std::slice::from_ref(&args.service), None)?;
    super::warn_unhonoured(stack.project());
    if !stack.project().services.contains_key(&args.service) {
        anyhow::bail!("no such service: {}", args.service);
    }
    let mut env = Vec::new();
    let mut lookup = crate::project::interpolate::Environment::new();
    for (k, v) in &stack.project().environment {
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
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let opts = RunOptions {
        service: args.service.clone(),
        name: args.name.clone(),
        oneoff: crate::compose::OneOff {
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
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        labels: args.label.clone(),
        detach: args.detach,
        no_deps: args.no_deps,
        remove_orphans: args.remove_orphans,
        pull: match args.pull.as_deref() {
            None => RunPull::Unset,
            Some("always") => RunPull::Always,
            Some("missing") => RunPull::Missing,
            Some(_) => RunPull::Never,
        },
        build: args.build,
    };
    // The orphans' removal shows its progress as the global options ask; the other steps
    // honour `--quiet` and `--quiet-pull`.
    let reporter = |step: RunStep| -> Box<dyn Reporter> {
        if step == RunStep::Orphans {
            return Box::new(progress(global));
        }
        let mut p = if args.quiet {
            Progress::new(Mode::Quiet)
        } else {
            progress(global)
        };
        if args.quiet_pull {
            p.hide_pulls();
        }
        Box::new(p)
    };
    match stack.run(&opts, &reporter)? {
        RunOutcome::Detached(name) => {
            println!("{name}");
            Ok(0)
        }
        RunOutcome::Exited(code) => Ok(code),
    }
}

/// `tug top`.
///
/// # Errors
/// Loading, or reading processes.
pub fn run_top(global: &GlobalArgs, args: &TopArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    for (c, procs) in stack.top(&args.services)? {
        println!("{}", c.name);
        let mut rows = vec![["UID".to_string(), "PID".to_string(), "CMD".to_string()]];
        for (pid, uid, cmd) in procs {
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
    let p = stack.port(&args.service, args.index, args.private_port, &args.protocol)?;
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
    stack.copy(&CopyOptions {
        source: args.source.clone(),
        destination: args.destination.clone(),
        index: args.index,
        all: args.all,
    })?;
    Ok(0)
}

/// `tug export`.
///
/// # Errors
/// Loading, no such replica, stdout is a terminal and no `-o`, or the export.
pub fn run_export(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    if global.dry_run {
        // Dry run: the replica must exist; nothing is written.
        stack.container_of(&args.service, args.index)?;
        return Ok(0);
    }
    crate::cli::container::write_tar(
        args.output.as_deref(),
        "output option is required when exporting to terminal",
        |w| {
            stack.export(&args.service, args.index, w)?;
            Ok(())
        },
    )?;
    Ok(0)
}

/// `tug commit`.
///
/// # Errors
/// Loading, no such replica, a bad reference or `--change`, or the commit.
pub fn run_commit(global: &GlobalArgs, args: &CommitArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    if global.dry_run {
        // Dry run: the replica must exist; no image is made.
        stack.container_of(&args.service, args.index)?;
        return Ok(0);
    }
    let (name, _image) = stack.commit(
        &args.service,
        args.index,
        &crate::engine::container::commit::CommitOptions {
            reference: args.reference.clone(),
            author: args.author.clone(),
            message: args.message.clone(),
            changes: args.change.clone(),
            pause: args.pause,
        },
    )?;
    progress(global).line("Container", &name, "Committed");
    Ok(0)
}

/// `tug wait`.
///
/// # Errors
/// Loading.
pub fn run_wait(global: &GlobalArgs, args: &WaitArgs) -> anyhow::Result<i32> {
    let stack = open_changing(global, &[], None)?;
    let last = stack.wait_services(
        &WaitServicesOptions {
            services: args.services.clone(),
            down_project: args.down_project,
        },
        &mut |code| println!("{code}"),
        &mut progress(global),
    )?;
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
    let listed = stack.container_images(&args.services)?;
    if args.quiet {
        let mut seen: Vec<&str> = Vec::new();
        for c in listed.iter().map(|l| &l.container) {
            let id = c.image_id.trim_start_matches("sha256:");
            if !seen.contains(&id) {
                seen.push(id);
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let mut rows = Vec::new();
    for crate::compose::ContainerImage {
        container: c,
        image: img,
    } in &listed
    {
        let familiar = crate::engine::image::Reference::parse(&c.image)
            .map_or_else(|_| c.image.clone(), |r| r.familiar());
        let (repo, tag) = match familiar.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (familiar.clone(), "latest".to_string()),
        };
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
    let volumes = stack.project_volumes(&args.services)?;
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
    stack.events(&args.services, until, &mut |ev| match ev {
        ContainerEvent::Changed { container, action } => emit(args.json, container, action),
        ContainerEvent::Destroyed { id } => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"time": jiff::Timestamp::now().to_string(), "type": "container", "action": "destroy", "id": id})
                );
            } else {
                println!("{} container destroy {id}", jiff::Timestamp::now());
            }
        }
    })?;
    Ok(0)
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
    let stack = open_changing(global, &services, None)?;
    let _l = lock(&stack)?;
    stack.scale(
        &ScaleOptions {
            scale: args
                .scale
                .iter()
                .map(|s| (s.service.clone(), s.replicas))
                .collect(),
            no_deps: args.no_deps,
        },
        &mut progress(global),
    )?;
    Ok(0)
}

/// `tug pull`: pulls the images of the services (those with `image:`).
///
/// # Errors
/// Loading, or a failed pull (unless `--ignore-pull-failures`).
pub fn run_pull(global: &GlobalArgs, args: &PullArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &args.services, StackOptions::default())?;
    let mut p = if args.quiet {
        Progress::new(Mode::Quiet)
    } else {
        progress(global)
    };
    stack.pull(
        &PullOptions {
            services: args.services.clone(),
            include_deps: args.include_deps,
            ignore_buildable: args.ignore_buildable,
            missing_only: args.policy.as_deref() == Some("missing"),
            ignore_failures: args.ignore_pull_failures,
        },
        &mut p,
    )?;
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
    stack.push(
        &PushOptions {
            services: args.services.clone(),
            include_deps: args.include_deps,
            ignore_failures: args.ignore_push_failures,
        },
        &mut p,
    )?;
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
    let compose = crate::compose::convert::COMPOSE_VERSION;
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
