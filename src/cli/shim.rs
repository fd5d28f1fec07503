//! tug as docker compose for the clients that drive `docker compose`: `tug install-shim DIR`
//! puts two links to tug in DIR, `docker-compose` and `docker`. Run as `docker-compose`, tug
//! is docker compose; run as `docker compose …`, too (docker's own options before `compose`
//! are skipped); run as `docker` with any other command, the shim hands the command to the
//! first other `docker` on `PATH`, so a directory holding the shim can come first on `PATH`
//! without hiding docker.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

/// `tug install-shim`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Directory for the `docker` and `docker-compose` links (created if missing).
    /// Default: `$HOME/.local/share/tug/shim`.
    pub dir: Option<PathBuf>,
    /// Replace links or files of those names already there.
    #[arg(long)]
    pub force: bool,
}

/// Installs the links.
///
/// # Errors
/// The directory or a link cannot be made, or a file of that name exists (without
/// `--force`).
pub fn install(args: &InstallArgs) -> anyhow::Result<i32> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set: name a directory")?;
            PathBuf::from(home).join(".local/share/tug/shim")
        }
    };
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find tug's own executable")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in ["docker", "docker-compose"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_ok() {
            let ours = std::fs::canonicalize(&link).is_ok_and(|t| t == exe);
            if !ours && !args.force {
                anyhow::bail!(
                    "{} exists and is not a link to tug: remove it or use --force",
                    link.display()
                );
            }
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
    }
    let d = dir.display();
    println!("{d}/docker-compose and {d}/docker run tug as docker compose.");
    println!("  testcontainers: DockerCompose(..., docker_command_path=\"{d}/docker\")");
    println!(
        "  everything else: put {d} first on PATH (other docker commands go to the real docker)"
    );
    Ok(0)
}

/// Runs a docker command that is not `docker compose` with the first other `docker` on
/// `PATH`, and returns its exit code.
#[must_use]
pub fn other_docker(args: &[OsString]) -> i32 {
    let own = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("docker"))
            .find(|p| is_other_executable(p, own.as_deref()))
    });
    let Some(docker) = found else {
        let cmd = args
            .get(1)
            .map_or_else(String::new, |a| a.to_string_lossy().into_owned());
        eprintln!(
            "error: this `docker` is tug's shim: it runs `docker compose …` only, and no other \
             docker is on PATH to run `docker {cmd}`"
        );
        return 1;
    };
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&docker)
        .arg0(args.first().cloned().unwrap_or_else(|| "docker".into()))
        .args(&args[1..])
        .exec();
    eprintln!("error: cannot run {}: {err}", docker.display());
    126
}

fn is_other_executable(p: &Path, own: Option<&Path>) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    let target = std::fs::canonicalize(p).ok();
    meta.is_file() && meta.permissions().mode() & 0o111 != 0 && target.as_deref() != own
}
