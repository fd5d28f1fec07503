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

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::sys::{Linux, SetnsError, Syscall};

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
    /// The UTS namespace's host or domain name could not be set.
    #[error("{call}: {source}")]
    Name {
        /// The call (`sethostname`, `setdomainname`).
        call: &'static str,
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
///
/// # Errors
/// The first namespace that cannot be opened or joined, named.
pub fn join(list: &[(CloneFlags, PathBuf)]) -> Result<()> {
    join_with(&Linux, list)
}

/// [`join`] through `sys`.
///
/// # Errors
/// As [`join`].
pub fn join_with(sys: &dyn Syscall, list: &[(CloneFlags, PathBuf)]) -> Result<()> {
    for (f, path) in list {
        sys.setns(path, *f).map_err(|e| match e {
            SetnsError::Open(source) => NamespaceError::Open {
                path: path.clone(),
                source,
            },
            SetnsError::Join(source) => NamespaceError::Join {
                path: path.clone(),
                source,
            },
        })?;
    }
    Ok(())
}

/// Sets the names of the container's UTS namespace: its hostname and, when the spec has a
/// non-empty one, its NIS domain name.
///
/// # Errors
/// The call that failed and why (for the start error).
pub fn set_names(sys: &dyn Syscall, spec: &Spec) -> Result<()> {
    let name = |call| move |source| NamespaceError::Name { call, source };
    if let Some(h) = spec.hostname() {
        sys.sethostname(h).map_err(name("sethostname"))?;
    }
    if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        sys.setdomainname(d).map_err(name("setdomainname"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::runtime::sys::{Call, Recorder};
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    #[test]
    fn namespaces_join_in_order_and_name_the_one_that_fails() {
        let list = vec![
            (CloneFlags::CLONE_NEWNET, PathBuf::from("/run/netns/a")),
            (CloneFlags::CLONE_NEWIPC, PathBuf::from("/proc/7/ns/ipc")),
            (CloneFlags::CLONE_NEWUTS, PathBuf::from("/proc/7/ns/uts")),
        ];
        let sys = Recorder::default();
        join_with(&sys, &list).unwrap();
        assert_eq!(
            sys.calls(),
            list.iter()
                .map(|(f, p)| Call::Setns(p.clone(), *f))
                .collect::<Vec<_>>()
        );
        let sys = Recorder::failing(|c| {
            matches!(c, Call::Setns(_, f) if *f == CloneFlags::CLONE_NEWIPC)
                .then_some(nix::errno::Errno::EPERM)
        });
        let e = join_with(&sys, &list).unwrap_err();
        assert!(e.to_string().contains("/proc/7/ns/ipc"), "{e}");
        assert_eq!(sys.calls().len(), 2, "nothing is joined after a failure");
    }

    #[test]
    fn namespaces_uts_names_set_as_the_spec_says() {
        let spec = SpecBuilder::default()
            .hostname("web")
            .domainname("example.org")
            .build()
            .unwrap();
        let sys = Recorder::default();
        set_names(&sys, &spec).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Sethostname("web".into()),
                Call::Setdomainname("example.org".into())
            ]
        );
        // An empty domain name is not set; no hostname, no call.
        let spec = SpecBuilder::default().domainname("").build().unwrap();
        let mut spec = spec;
        spec.set_hostname(None);
        let sys = Recorder::default();
        set_names(&sys, &spec).unwrap();
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
    }

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
