//! How a container's first process enters its cgroup: `clone3` with `CLONE_INTO_CGROUP` on
//! the machine's real cgroup2 tree (pure v2, or the unified tree of a hybrid machine), and
//! the fallback that moves the process by pid when the kernel cannot clone into the given
//! directory (here: a fake tree, which is not cgroup2). The v1 side (the child writing itself
//! into each hierarchy's `tasks`) is checked end to end in `container.rs`.

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use nix::sched::CloneFlags;
use tug::engine::runtime::cgroups::{Cgroup, Layout};
use tug::engine::runtime::clone_into_cgroup;

use crate::common::{self, CgroupDir, cgroup2_root};

#[test]
fn container_cgroup_clone3_starts_the_child_in_the_real_cgroup2_directory() {
    if !common::require_root() {
        return;
    }
    let root = cgroup2_root().expect("no cgroup2 tree on this machine");
    let name = common::unique("tug-clonetest-");
    let dir = root.join(&name);
    // Made by hand: Cgroup::create on a v2 layout would also enable controllers in the
    // root's subtree_control, which is not this test's business on a shared host.
    std::fs::create_dir(&dir).unwrap();
    let _guard = CgroupDir(dir.clone());
    let cg = Cgroup::new(Layout::V2 { root }, Path::new(&format!("/{name}")));
    let attach = cg.attach().unwrap();
    assert_eq!(attach.v1_count(), 0);
    let fd = attach.unified_fd().expect("a cgroup2 directory descriptor");
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let wfd = w.as_raw_fd();
    // The child only makes async-signal-safe calls (this test process has threads).
    let child = || -> i32 {
        let mut buf = [0u8; 4096];
        // SAFETY: open/read/write/close on a static path and a stack buffer.
        unsafe {
            let f = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
            if f < 0 {
                return 2;
            }
            let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
            libc::close(f);
            let Ok(n) = usize::try_from(n) else { return 3 };
            libc::write(wfd, buf.as_ptr().cast(), n);
        }
        0
    };
    // SAFETY: the child only runs `child` above and exits.
    let pid = unsafe { clone_into_cgroup(CloneFlags::empty(), fd, child) }
        .expect("clone3 with CLONE_INTO_CGROUP (Linux 5.7+)");
    drop(w);
    let mut text = String::new();
    std::fs::File::from(r).read_to_string(&mut text).unwrap();
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    let want = format!("0::/{name}");
    assert!(
        text.lines().any(|l| l == want),
        "the child did not start in {want}: {text}"
    );
}

#[test]
fn container_cgroup_fake_v2_tree_cannot_be_cloned_into_so_the_pid_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::write(root.join("cgroup.controllers"), "").unwrap();
    let cg = Cgroup::new(Layout::V2 { root: root.clone() }, Path::new("/tug-fake"));
    cg.create(None).unwrap();
    let attach = cg.attach().unwrap();
    assert_eq!(attach.v1_count(), 0);
    let fd = attach.unified_fd().unwrap();
    // Not a cgroup2 directory: the kernel refuses before any child exists.
    // SAFETY: the child would only return 0; none is started.
    let r = unsafe { clone_into_cgroup(CloneFlags::empty(), fd, || 0) };
    assert!(r.is_err(), "{r:?}");
    // The fallback the runtime takes then: the pid into cgroup.procs.
    cg.add_unified(4242).unwrap();
    let procs = std::fs::read_to_string(root.join("tug-fake/cgroup.procs")).unwrap();
    assert_eq!(procs, "4242");
}
