//! The cgroup v2 device allowlist (an eBPF program) on the machine's real cgroup2 tree: a
//! process in a cgroup with Docker's allowlist opens /dev/null but gets EPERM for a block
//! device (loop0) and for kmsg, even through device nodes it may make itself.

use std::path::Path;
use std::process::Command;

use tug::engine::container::spec::device_rules;
use tug::engine::runtime::cgroups::{Cgroup, Layout};

use crate::common::{self, CgroupDir, cgroup2_root, ok};

/// Removes the test cgroup (its only process has exited by then).

#[test]
fn container_devices_v2_allowlist_by_ebpf_on_the_real_cgroup2_tree() {
    if !common::require_root() {
        return;
    }
    let root = cgroup2_root().expect("no cgroup2 tree on this machine");
    let name = common::unique("tug-devtest-");
    let dir = root.join(&name);
    std::fs::create_dir(&dir).unwrap();
    let _guard = CgroupDir(dir.clone());
    // The pure-v2 code path of Cgroup::apply, with the container spec's device rules.
    let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
        .devices(device_rules(false))
        .build()
        .unwrap();
    Cgroup::new(
        Layout::V2 { root: root.clone() },
        Path::new(&format!("/{name}")),
    )
    .apply(&resources)
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();
    // Nodes made outside the cgroup: one allowed (null, c 1:3), one denied (loop0, b 7:0).
    ok(Command::new("mknod")
        .arg(tmp.path().join("null"))
        .args(["c", "1", "3"]));
    ok(Command::new("mknod")
        .arg(tmp.path().join("loop"))
        .args(["b", "7", "0"]));
    let script = format!(
        r#"echo $$ > {cg}/cgroup.procs || exit 9
try() {{ if head -c 1 "$2" > /dev/null 2> {t}/err; then echo "$1=ok"; else echo "$1=$(cat {t}/err)"; fi; }}
try devnull /dev/null
try ournull {t}/null
try ourloop {t}/loop
mknod {t}/made c 1 11 && echo mknod=ok || echo mknod=fail
try made {t}/made
"#,
        cg = dir.display()
    );
    let out = ok(Command::new("sh").arg("-c").arg(&script));
    let line = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    assert_eq!(line("devnull"), "ok", "{out}");
    assert_eq!(line("ournull"), "ok", "{out}");
    assert!(line("ourloop").contains("Operation not permitted"), "{out}");
    // mknod of any character device is allowed (Docker's `c *:* m`), opening it is not.
    assert_eq!(line("mknod"), "ok", "{out}");
    assert!(line("made").contains("Operation not permitted"), "{out}");
    // The same block node opens fine from outside the cgroup.
    ok(Command::new("head")
        .args(["-c", "1"])
        .arg(tmp.path().join("loop")));
}
