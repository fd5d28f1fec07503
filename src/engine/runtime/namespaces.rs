//! Namespaces: the kernel's per-process views of pids, mounts, hostname, IPC and network.
//!
//! A container gets fresh pid, mount, uts and ipc namespaces from `clone(2)` flags, and either
//! a fresh network namespace, the host's (no flag), or an existing one joined with `setns(2)`
//! through a path (a bind-mounted netns made by the network layer, or `/proc/<pid>/ns/net` of
//! another container). The spec lists each namespace with an optional path; no path means new.
//!
//! A new **cgroup** namespace is the exception: its root is the cgroup its creator is in at
//! that moment, so it is not a clone flag (the clone would take the supervisor's cgroups)
//! but unshared by the container's process once it is inside its own cgroups.

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

/// What a container's first process does with namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Created by the clone.
    pub clone: CloneFlags,
    /// Joined by path (flag, path).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// A new cgroup namespace, unshared once the process is inside its cgroups.
    pub cgroup: bool,
}

/// The namespaces of the spec: to create, to join, and whether a cgroup namespace is new.
#[must_use]
pub fn plan(spec: &Spec) -> Plan {
    let mut new = CloneFlags::empty();
    let mut join = Vec::new();
    let mut cgroup = false;
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in list {
        let f = flag(ns.typ());
        match ns.path() {
            Some(p) => join.push((f, p.clone())),
            None if f == CloneFlags::CLONE_NEWCGROUP => cgroup = true,
            None => new |= f,
        }
    }
    Plan {
        clone: new,
        join,
        cgroup,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    #[test]
    fn namespaces_cgroup_is_unshared_later_not_cloned() {
        let ns = |t: LinuxNamespaceType, path: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(t);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().unwrap()
        };
        let spec = SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .namespaces(vec![
                        ns(LinuxNamespaceType::Pid, None),
                        ns(LinuxNamespaceType::Mount, None),
                        ns(LinuxNamespaceType::Cgroup, None),
                        ns(LinuxNamespaceType::Network, Some("/run/netns/x")),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let p = plan(&spec);
        assert_eq!(p.clone, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        assert!(p.cgroup);
        assert_eq!(
            p.join,
            vec![(CloneFlags::CLONE_NEWNET, PathBuf::from("/run/netns/x"))]
        );
    }
}
