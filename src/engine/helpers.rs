//! Helper processes: the long-lived or isolated work of a command runs in tug itself,
//! re-executed as `tug __<helper> ARGS…`. Every helper starts the same way: the binary's
//! `main` hands its arguments to [`dispatch`] before any command-line parsing (clap is never
//! built for a helper, so it starts fast and stays small), which runs the entry point
//! registered under the name in [`HELPERS`]. Helper names start with `__`, which no verb
//! does, and are not part of tug's command line for users.
//!
//! | helper | started by | what it is |
//! |---|---|---|
//! | `__shim run ROOT ID [--attach] [--cgroup-pipe]` | `ContainerStore::start` | a container's supervisor (`container::supervisor`) |
//! | `__shim exec ROOT ID OPTIONS` / `cp-out` / `cp-in` | `exec`, healthchecks, hooks, `cp` | joins a running container (`container::supervisor`) |
//! | `__build-run REQUEST` | the builder | one `RUN` step in a container (`build::run`) |
//! | `__network-dns --records FILE --udp-fd N --tcp-fd N` | `Networks` | a network's DNS server (`network::dns`) |
//! | `__network-proxy --record FILE --spec JSON` | `Networks::publish` | a container's port proxy (`network::ports`) |
//!
//! A helper that holds host resources is recorded by its [`crate::engine::proc::ProcId`] right
//! after it starts. The network helpers name their record file on their command line, so one
//! started by a command killed before the record is found by it ([`is_network_helper`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The container supervisor and the helpers that join a running container.
pub const SHIM: &str = "__shim";
/// One `RUN` step of a build.
pub const BUILD_RUN: &str = "__build-run";
/// A network's DNS server.
pub const NETWORK_DNS: &str = "__network-dns";
/// A container's port proxy.
pub const NETWORK_PROXY: &str = "__network-proxy";

/// Why a helper could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arguments are not what the engine passes.
    #[error("{helper}: {message} (this helper is started by tug itself)")]
    Usage {
        helper: &'static str,
        message: String,
    },
    /// The supervisor or an exec/cp helper failed.
    #[error(transparent)]
    Shim(#[from] crate::engine::container::supervisor::ShimError),
    /// A build step could not be run.
    #[error(transparent)]
    Build(#[from] crate::engine::build::run::RunError),
    /// A network helper failed.
    #[error(transparent)]
    Network(#[from] crate::engine::network::Error),
}

/// A registered helper: its name (`argv[1]`) and entry point, which gets the full argv.
pub struct Helper {
    /// `argv[1]`.
    pub name: &'static str,
    run: fn(&[OsString]) -> Result<i32, Error>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper").field("name", &self.name).finish()
    }
}

/// Every helper tug starts.
pub const HELPERS: &[Helper] = &[
    Helper {
        name: SHIM,
        run: run_shim,
    },
    Helper {
        name: BUILD_RUN,
        run: run_build,
    },
    Helper {
        name: NETWORK_DNS,
        run: run_dns,
    },
    Helper {
        name: NETWORK_PROXY,
        run: run_proxy,
    },
];

/// Runs the helper `args[1]` names and returns its exit code (the caller prints an error and
/// exits 126), or `None` when `args` is no helper's command line.
#[must_use]
pub fn dispatch(args: &[OsString]) -> Option<Result<i32, Error>> {
    let name = args.get(1)?;
    let helper = HELPERS.iter().find(|h| name == h.name)?;
    Some((helper.run)(args))
}

/// True when `arg` (a process's `argv[1]`) names a network helper, of this tug or of an
/// older one (which named them `network-dns`/`network-proxy`), so that a helper started
/// before an upgrade is still found.
#[must_use]
pub fn is_network_helper(arg: &[u8]) -> bool {
    [NETWORK_DNS, NETWORK_PROXY]
        .iter()
        .any(|h| arg == h.as_bytes() || arg == &h.as_bytes()[2..])
}

fn run_shim(args: &[OsString]) -> Result<i32, Error> {
    crate::engine::container::supervisor::main(args).map_err(Error::Shim)
}

fn run_build(args: &[OsString]) -> Result<i32, Error> {
    let request = args.get(2).ok_or(Error::Usage {
        helper: BUILD_RUN,
        message: "missing build request".into(),
    })?;
    crate::engine::build::run::main(Path::new(request)).map_err(Error::Build)
}

/// `--flag VALUE` pairs of a helper's command line.
struct Flags<'a> {
    helper: &'static str,
    args: &'a [OsString],
}

impl Flags<'_> {
    fn value(&self, flag: &str) -> Result<&OsString, Error> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .ok_or_else(|| Error::Usage {
                helper: self.helper,
                message: format!("missing {flag}"),
            })
    }

    fn path(&self, flag: &str) -> Result<PathBuf, Error> {
        self.value(flag).map(PathBuf::from)
    }

    fn string(&self, flag: &str) -> Result<String, Error> {
        let v = self.value(flag)?;
        v.to_str().map(str::to_string).ok_or_else(|| Error::Usage {
            helper: self.helper,
            message: format!("{flag} is not UTF-8"),
        })
    }

    /// An inherited descriptor: a number above stdio that is open in this process.
    fn fd(&self, flag: &str) -> Result<i32, Error> {
        let s = self.string(flag)?;
        let fd: i32 = s.parse().map_err(|_| Error::Usage {
            helper: self.helper,
            message: format!("{flag} {s:?} is not a descriptor number"),
        })?;
        check_fd(self.helper, fd)?;
        Ok(fd)
    }
}

/// An inherited descriptor must be open and not stdio.
fn check_fd(helper: &'static str, fd: i32) -> Result<(), Error> {
    if fd < 3 || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(Error::Usage {
            helper,
            message: format!("file descriptor {fd} is not open"),
        });
    }
    Ok(())
}

fn run_dns(args: &[OsString]) -> Result<i32, Error> {
    use std::os::fd::FromRawFd;
    let flags = Flags {
        helper: NETWORK_DNS,
        args,
    };
    let records = flags.path("--records")?;
    let (udp_fd, tcp_fd) = (flags.fd("--udp-fd")?, flags.fd("--tcp-fd")?);
    if udp_fd == tcp_fd {
        return Err(Error::Usage {
            helper: NETWORK_DNS,
            message: "one descriptor for both sockets".into(),
        });
    }
    // SAFETY: the descriptors were bound by the tug command that started this process, for
    // it alone (checked open above, and distinct), and each is wrapped exactly once.
    let udp = unsafe { std::net::UdpSocket::from_raw_fd(udp_fd) };
    // SAFETY: as above.
    let tcp = unsafe { std::net::TcpListener::from_raw_fd(tcp_fd) };
    // <root>/networks/<name>/dns.json → <root>: the containers the server answers for.
    let root = records
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or(Path::new("/nonexistent"));
    let liveness = crate::engine::container::state::StoreLiveness::new(root);
    crate::engine::network::dns::serve(&records, udp, tcp, Box::new(liveness))?;
    Ok(0)
}

fn run_proxy(args: &[OsString]) -> Result<i32, Error> {
    let flags = Flags {
        helper: NETWORK_PROXY,
        args,
    };
    let record = flags.path("--record")?;
    let spec = flags.string("--spec")?;
    let entries: Vec<crate::engine::network::ports::ProxyEntry> = serde_json::from_str(&spec)
        .map_err(|e| Error::Usage {
            helper: NETWORK_PROXY,
            message: format!("bad proxy spec: {e}"),
        })?;
    for e in &entries {
        check_fd(NETWORK_PROXY, e.fd)?;
    }
    crate::engine::network::ports::serve(&record, entries)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn helpers_are_found_by_name_and_only_by_name() {
        assert!(dispatch(&argv(&["tug", "up"])).is_none());
        assert!(dispatch(&argv(&["tug"])).is_none());
        assert!(dispatch(&argv(&["tug", "network-dns"])).is_none());
        for h in HELPERS {
            assert!(h.name.starts_with("__"), "{}", h.name);
        }
        let e = dispatch(&argv(&["tug", NETWORK_DNS, "--records", "/x"]))
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("missing --udp-fd"), "{e}");
        let e = dispatch(&argv(&[
            "tug",
            NETWORK_DNS,
            "--records",
            "/x",
            "--udp-fd",
            "1",
            "--tcp-fd",
            "9",
        ]))
        .unwrap()
        .unwrap_err();
        assert!(e.to_string().contains("descriptor 1 is not open"), "{e}");
        let e = dispatch(&argv(&["tug", BUILD_RUN])).unwrap().unwrap_err();
        assert!(e.to_string().contains("missing build request"), "{e}");
    }

    #[test]
    fn helpers_recognise_network_helpers_old_and_new() {
        assert!(is_network_helper(b"__network-dns"));
        assert!(is_network_helper(b"network-proxy"));
        assert!(!is_network_helper(b"__shim"));
        assert!(!is_network_helper(b"network"));
    }
}
