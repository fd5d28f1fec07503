//! Namespaces: the kernel's per-process views of pids, mounts, hostname, IPC and network.
//!
//! A container gets fresh pid, mount, uts and ipc namespaces from `clone(2)` flags, and either
//! a fresh network namespace, the host's (no flag), or an existing one joined with `setns(2)`
//! through a path (a bind-mounted netns made by the network layer, or `/proc/<pid>/ns/net` of
//! another container). The spec lists each namespace with an optional path; no path means new.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Errors of namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace file could not be opened.
    #[error("open namespace {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// setns failed.
    #[error("join namespace {path}: {source}")]
    Join {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: nix::Error,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, NamespaceError>;

/// The clone flag of a namespace type.
#[must_use]
pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// The namespaces to create (clone flags) and the ones to join (flag, path).
#[must_use]
pub fn plan(spec: &Spec) -> (CloneFlags, Vec<(CloneFlags, PathBuf)>) {
    let mut new = CloneFlags::empty();
    let mut join = Vec::new();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in list {
        let f = flag(ns.typ());
        match ns.path() {
            Some(p) => join.push((f, p.clone())),
            None => new |= f,
        }
    }
    (new, join)
}

/// Joins each `(flag, path)` namespace.
pub fn join(list: &[(CloneFlags, PathBuf)]) -> Result<()> {
    for (f, path) in list {
        let file = File::open(path).map_err(|source| NamespaceError::Open {
            path: path.clone(),
            source,
        })?;
        setns(&file, *f).map_err(|source| NamespaceError::Join {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
