#!/usr/bin/env python3
"""tug's benchmark harness: the workloads, the alternating runner, the summary and the JSON.

`bench/run.sh` installs and starts the peers; this file does the measuring. Each workload
runs tug and each peer **alternately** (tug, peer 1, tug, peer 2, ..., then again), so slow
drifts of the machine (page cache, other load, thermal state) hit both sides alike. The
compose workloads leave `TRIAL_GAP` seconds (default 0.5) of idle before every sample, tug's
and the peers' alike: each tool's `down` leaves the kernel tearing down namespaces and links
in the background (and dockerd more), which would otherwise land on the next tool's sample. A
workload whose tug feature has not landed yet is reported as pending, never as a failure.

Usage (normally through run.sh):
    bench.py [--smoke] [--peers none|daemonless|all] [--tug PATH] [--out FILE] [WORKLOAD...]
    bench.py --markdown FILE      print the figures of a results file as markdown tables
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client; /usr/local/bin/docker may shadow it
DC2 = BENCH / ".tools" / "docker-compose-v2"
PC6 = BENCH / ".tools" / "venv-podman-compose" / "bin" / "podman-compose"
NO_CGROUP2 = "umount /sys/fs/cgroup/unified"

# What tug says when a verb or flag is not there yet (clap) or a verb is still being written.
PENDING_RE = re.compile(
    r"unrecognized subcommand|unexpected argument|invalid value .* for '--format"
    r"|not (yet )?(implemented|supported)|being written|not landed|not done yet|later issue",
    re.IGNORECASE,
)


class CmdError(Exception):
    """A command failed; carries its argv and the tail of its output."""

    def __init__(self, argv, code, out):
        self.argv, self.code, self.out = argv, code, out
        tail = "\n".join(out.strip().splitlines()[-6:])
        super().__init__(f"`{' '.join(map(str, argv))}` exited {code}: {tail}")


class Pending(Exception):
    """The tug feature a workload needs has not landed."""


class Skip(Exception):
    """A workload or peer cannot run here (missing tool, no daemon); the reason is the text."""


def run(argv, *, env=None, timeout=600, check=True) -> str:
    """Runs a command (no shell) and returns its stdout; a failure raises CmdError carrying
    stdout and stderr."""
    argv = [str(a) for a in argv]
    try:
        p = subprocess.run(argv, env=env, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, text=True, errors="replace")
    except subprocess.TimeoutExpired as e:
        out = e.stderr if isinstance(e.stderr, str) else ""
        raise CmdError(argv, "timeout", out) from None
    except FileNotFoundError:
        raise CmdError(argv, 127, f"{argv[0]}: not found") from None
    if check and p.returncode != 0:
        raise CmdError(argv, p.returncode, p.stdout + p.stderr)
    return p.stdout


def timed(argv, *, env=None, timeout=600) -> float:
    """Wall time of one successful run of argv, in seconds."""
    t0 = time.perf_counter()
    run(argv, env=env, timeout=timeout)
    return time.perf_counter() - t0


def quiet(argv, **kw):
    """Runs a clean-up command; failures are ignored (the thing may already be gone)."""
    try:
        run(argv, check=False, **kw)
    except CmdError:
        pass


def have(cmd) -> bool:
    return shutil.which(str(cmd)) is not None or Path(cmd).exists()


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_kib(pid: int) -> dict:
    """Pss and private (Private_Clean + Private_Dirty, the USS) of a process, KiB, from
    /proc/PID/smaps_rollup; shared pages of a binary count once per process in RSS but are
    divided among the sharers in PSS and left out of the USS."""
    out = {"pss": 0, "uss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            k, _, rest = line.partition(":")
            if k == "Pss":
                out["pss"] = int(rest.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def ppid_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return ""


def pids_with_exe(path: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and exe_of(int(d.name)) == path:
            out.append(int(d.name))
    return out


def environ_of(pid: int) -> dict:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == prefix or mp.startswith(prefix + "/"):
            found.append(mp)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def safe_rmtree(path: Path):
    """Removes a directory tree after unmounting anything mounted inside it."""
    if not path.exists():
        return
    for mp in mounts_under(path):
        quiet(["umount", "-l", mp])
    quiet(["rm", "-rf", "--one-file-system", str(path)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(samples: list[float]) -> dict:
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(x, 6) for x in samples],
    }


# ------------------------------------------------------------------ inputs made at run time


def compose_yaml(n: int) -> str:
    """The peers' stack: s1 serves HTTP with busybox httpd and mounts the named volume; s2..sN
    sleep; sK depends on s(K-1); one user-defined network. Every service traps TERM so that
    `down` measures the engine and not a 10 s stop timeout (busybox as PID 1 ignores TERM)."""
    lines = [
        'version: "3.7"',
        "services:",
        "  s1:",
        "    image: busybox",
        "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; httpd -f -p 8080 -h /var/www & wait\"]",
        "    volumes:",
        "      - data:/data",
        "    networks:",
        "      - net",
    ]
    for i in range(2, n + 1):
        lines += [
            f"  s{i}:",
            "    image: busybox",
            "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"]",
            "    depends_on:",
            f"      - s{i - 1}",
            "    networks:",
            "      - net",
        ]
    lines += ["volumes:", "  data: {}", "networks:", "  net: {}", ""]
    return "\n".join(lines)


def busybox_rootfs(state: Path) -> Path:
    """A busybox root filesystem (Debian's busybox-static) and its tarball; the same bits are
    imported into tug, docker and podman and laid out as the crun/runc bundle."""
    tar_path = state / "busybox-rootfs.tar"
    root = state / "busybox-rootfs"
    if tar_path.exists() and root.exists():
        return tar_path
    bb = Path("/bin/busybox")
    if not bb.exists():
        raise Skip("no /bin/busybox (apt-get install busybox-static)")
    shutil.rmtree(root, ignore_errors=True)
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www", "data"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(bb, root / "bin" / "busybox")
    for app in run([bb, "--list"]).split():
        if app != "busybox":
            (root / "bin" / app).symlink_to("busybox")
    (root / "sbin").symlink_to("bin")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "var" / "www" / "index.html").write_text("hello from busybox\n")
    (root / "tmp").chmod(0o1777)
    tmp = tar_path.with_suffix(".tmp")
    run(["tar", "-C", root, "--numeric-owner", "-cf", tmp, "."])
    tmp.rename(tar_path)
    return tar_path


def debian_layer(state: Path, smoke: bool) -> Path:
    """The gzip layer for the unpack and pull workloads: a Debian 12 minbase root filesystem
    made with mmdebstrap (about 170 MB unpacked); the busybox rootfs in smoke mode."""
    if smoke:
        out = state / "busybox-layer.tar.gz"
        if not out.exists():
            with open(busybox_rootfs(state), "rb") as src, gzip.open(out, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst)
        return out
    out = state / "debian-layer.tar.gz"
    if out.exists():
        return out
    if not have("mmdebstrap"):
        raise Skip("mmdebstrap missing (bench/run.sh --install)")
    tmp = state / "debian-layer.tmp.tar"
    run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates,procps,less",
         "--quiet", "bookworm", tmp], timeout=900)
    run(["sh", "-c", f"gzip -6 -n -c {tmp} > {out}.tmp && mv {out}.tmp {out} && rm -f {tmp}"], timeout=600)
    return out


def oci_layout_of_layer(layer_gz: Path, dest: Path, tag: str) -> Path:
    """Wraps one gzip layer into an OCI image layout (config, manifest, index) so skopeo can
    push it to the local registry: the image every puller then fetches."""
    if (dest / "index.json").exists():
        return dest
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return digest

    layer = layer_gz.read_bytes()
    layer_digest = put(layer)
    diff_id = hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "tug bench: mmdebstrap layer"}],
    }).encode()
    config_digest = put(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer_digest}", "size": len(layer)}],
    }).encode()
    manifest_digest = put(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": f"sha256:{manifest_digest}", "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    return dest


# ------------------------------------------------------------------ the context of one run


class Ctx:
    """Paths, tools and switches shared by the workloads of one run."""

    def __init__(self, args):
        self.smoke = args.smoke
        self.peers = "none" if args.smoke else args.peers
        self.tug_bin = str(Path(args.tug).resolve())
        self.state = BENCH / ".state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.root = self.state / "tug-root"  # tug's state root for this run
        self.env = dict(os.environ, TUG_ROOT=str(self.root), NO_COLOR="1")
        for k in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_ENV_FILES"):
            self.env.pop(k, None)
        self.registry = None  # (process, port)
        self.busybox_in = set()  # engines the busybox image is in
        self.notes = []

    def tug(self, *args, root=None) -> list[str]:
        return [self.tug_bin, "--root", str(root or self.root), *map(str, args)]

    def runs(self, name, full, smoke=1) -> int:
        if self.smoke:
            return smoke
        return int(os.environ.get(f"RUNS_{name.upper()}", full))

    def peer_ok(self, kind: str) -> bool:
        """kind: 'daemonless' (crun, runc, compose config, tar, skopeo) or 'daemon' (docker,
        podman: they change host networking)."""
        if self.peers == "none":
            return False
        if kind == "daemonless":
            return True
        return self.peers == "all"

    def docker_up(self) -> bool:
        if not self.peer_ok("daemon"):
            return False
        try:
            run([DOCKER, "version"], timeout=10)
            return True
        except CmdError:
            return False

    # -- tug side --------------------------------------------------------------------------

    def tug_call(self, *args, root=None, timeout=600) -> str:
        """Runs tug; a not-yet-landed verb raises Pending, anything else CmdError."""
        try:
            return run(self.tug(*args, root=root), env=self.env, timeout=timeout)
        except CmdError as e:
            if PENDING_RE.search(e.out):
                raise Pending(first_line(e.out)) from None
            raise

    def ensure_tug_busybox(self):
        if "tug" in self.busybox_in:
            return
        tar_path = busybox_rootfs(self.state)
        try:
            self.tug_call("image", "import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV PATH=/bin",
                          tar_path, "busybox:latest")
        except Pending:
            self.tug_call("image", "bootstrap", "busybox")
        self.busybox_in.add("tug")

    def ensure_peer_busybox(self, engine: str):
        if engine in self.busybox_in:
            return
        tar_path = busybox_rootfs(self.state)
        if engine == "docker":
            run([DOCKER, "import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin", tar_path, "busybox:latest"])
        else:
            run(["podman", "import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin", tar_path,
                 "localhost/busybox:latest"])
        self.busybox_in.add(engine)

    def bundle(self) -> Path:
        """OCI bundle for crun and runc: the busybox rootfs, `crun spec` with args /bin/true,
        no terminal, read-only root (new pid, net, ipc, uts, mount namespaces; v1 cgroups)."""
        b = self.state / "bundle"
        if (b / "config.json").exists():
            return b
        busybox_rootfs(self.state)
        shutil.rmtree(b, ignore_errors=True)
        b.mkdir()
        run(["cp", "-a", self.state / "busybox-rootfs", b / "rootfs"])
        subprocess.run(["crun", "spec"], cwd=b, check=True, stdout=subprocess.DEVNULL)
        spec = json.loads((b / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        spec["root"]["readonly"] = True
        (b / "config.json").write_text(json.dumps(spec, indent=1))
        return b

    def start_registry(self) -> int:
        """docker-registry (distribution) on a free loopback port, storage in .state."""
        if self.registry:
            return self.registry[1]
        if not have("docker-registry"):
            raise Skip("docker-registry missing")
        port = free_port()
        data = self.state / "registry-data"
        safe_rmtree(data)
        data.mkdir(parents=True)
        cfg = self.state / "registry.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
        )
        log = open(self.state / "registry.log", "w")
        proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        (self.state / "registry.pid").write_text(str(proc.pid))
        self.registry = (proc, port)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return port
            except OSError:
                time.sleep(0.1)
        raise Skip("registry did not start")

    def stop_registry(self):
        if self.registry:
            proc, _ = self.registry
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.registry = None
            (self.state / "registry.pid").unlink(missing_ok=True)
            safe_rmtree(self.state / "registry-data")

    def cleanup_tug(self):
        """Removes every tug container in this run's root, stops the supervisors this run
        started (matched by TUG_ROOT in their environment, ended by pid) and deletes the root."""
        if self.root.exists():
            try:
                out = run(self.tug("container", "ls", "-a", "-q"), env=self.env, check=False, timeout=60)
                ids = [l for l in out.split() if re.fullmatch(r"[0-9a-f]{6,64}", l)]
                if ids:
                    quiet(self.tug("container", "rm", "--force", *ids), env=self.env, timeout=300)
                quiet(self.tug("network", "prune", "--force"), env=self.env, timeout=60)
                # The build workloads' RUN steps joined the default `bridge` network through
                # pooled namespaces: release them, then the network (never pruned).
                quiet(self.tug("builder", "prune", "--force"), env=self.env, timeout=60)
                quiet(self.tug("network", "rm", "--force", "bridge"), env=self.env, timeout=60)
            except CmdError:
                pass
        for pid in pids_with_exe(self.tug_bin):
            if environ_of(pid).get("TUG_ROOT", "").startswith(str(self.state)):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        safe_rmtree(self.root)


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:200]
    return "(no output)"


# ------------------------------------------------------------------ sides and the runner


class Side:
    """One contestant of a workload: prepare (untimed) and trial (timed; returns
    {metric: value}). `kind` decides if it may run (tug, daemonless, daemon)."""

    def __init__(self, name, trial, prepare=None, kind="tug", setup=None, teardown=None, context=False):
        self.name, self.trial_fn, self.prepare_fn = name, trial, prepare
        self.kind, self.setup_fn, self.teardown_fn, self.context = kind, setup, teardown, context
        self.samples: dict[str, list[float]] = {}
        self.error = None

    def once(self):
        if self.prepare_fn:
            self.prepare_fn()
        result = self.trial_fn()
        if not isinstance(result, dict):
            result = {"": result}
        return result

    def record(self, result):
        for metric, v in result.items():
            self.samples.setdefault(metric, []).append(v)


class Workload:
    def __init__(self, name, title, unit="s", runs=("x", 5), setup=None, teardown=None, pending=None):
        self.name, self.title, self.unit = name, title, unit
        self.runs_name, self.runs_full = runs
        self.setup_fn, self.teardown_fn = setup, teardown
        self.pending = pending  # a reason string: not measured at all
        self.tug: Side | None = None
        self.peers: list[Side] = []
        self.alternate = True
        self.warmup = True  # one untimed trial per side first (memory workloads skip it)
        self.gap = 0.0  # seconds of idle before every sample (see the module docs)


def tug_once(side: Side) -> dict:
    """One trial of tug; an error that says the verb or flag is not there yet means pending."""
    try:
        return side.once()
    except CmdError as e:
        if PENDING_RE.search(e.out):
            raise Pending(first_line(e.out)) from None
        raise


def run_workload(ctx: Ctx, w: Workload) -> dict:
    out = {"name": w.name, "title": w.title, "unit": w.unit}
    first_note = len(ctx.notes)
    try:
        return measure(ctx, w, out)
    finally:
        if len(ctx.notes) > first_note:
            out["checks"] = ctx.notes[first_note:]


def measure(ctx: Ctx, w: Workload, out: dict) -> dict:
    if w.pending:
        return out | {"status": "pending", "reason": w.pending}
    runs = ctx.runs(w.runs_name, w.runs_full)
    try:
        if w.setup_fn:
            w.setup_fn()
        peers = []
        for p in w.peers:
            if p.kind != "tug" and not ctx.peer_ok(p.kind):
                continue
            try:
                if p.setup_fn:
                    p.setup_fn()
                if w.warmup:
                    p.once()  # warm-up, and proof that it works
                peers.append(p)
            except (Skip, CmdError) as e:
                p.error = str(e)
                print(f"  peer {p.name}: not measured: {first_line(str(e))}", flush=True)
        # warm-up of tug, unless smoke (one run is all smoke does)
        if w.warmup and not ctx.smoke:
            tug_once(w.tug)
        if w.alternate:
            for _ in range(runs):
                for p in peers or [None]:
                    time.sleep(w.gap)
                    w.tug.record(tug_once(w.tug))
                    if p is not None:
                        time.sleep(w.gap)
                        p.record(p.once())
        else:
            for _ in range(runs):
                w.tug.record(tug_once(w.tug))
            for p in peers:
                try:
                    for _ in range(runs):
                        p.record(p.once())
                except (Skip, CmdError) as e:
                    p.error = str(e)
                    p.samples.clear()
        out["status"] = "measured"
    except Pending as e:
        return out | {"status": "pending", "reason": f"feature not landed: {e}"}
    except Skip as e:
        return out | {"status": "skipped", "reason": str(e)}
    except CmdError as e:
        out["status"] = "error"
        out["reason"] = str(e)
        return out
    finally:
        for p in w.peers:
            if p.teardown_fn:
                try:
                    p.teardown_fn()
                except Exception as e:  # noqa: BLE001 - clean-up must go on
                    print(f"  clean-up of {p.name} failed: {e}", file=sys.stderr)
        if w.teardown_fn:
            try:
                w.teardown_fn()
            except Exception as e:  # noqa: BLE001
                print(f"  clean-up of {w.name} failed: {e}", file=sys.stderr)
    out["metrics"] = []
    for metric, tug_samples in w.tug.samples.items():
        m = {"metric": metric or w.title, "tug": stats(tug_samples), "peers": []}
        for p in w.peers:
            if metric in p.samples:
                ps = stats(p.samples[metric])
                entry = {"name": p.name, **ps}
                if not p.context and ps["median"] > 0:
                    entry["ratio"] = m["tug"]["median"] / ps["median"]
                entry["context_only"] = p.context
                m["peers"].append(entry)
        out["metrics"].append(m)
    out["not_measured"] = {p.name: first_line(p.error) for p in w.peers if p.error}
    return out


# ------------------------------------------------------------------ the workloads


def wl_config(ctx: Ctx) -> Workload:
    f = ctx.state / "config500" / "compose.yaml"

    def setup():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(compose_yaml(500))

    w = Workload("config", "project-file load, 500 services (config -q)", runs=("config", 10), setup=setup)
    w.tug = Side("tug", lambda: timed(ctx.tug("-f", f, "-p", "tbconfig", "config", "-q"), env=ctx.env))

    def dc2():
        if not DC2.exists():
            raise Skip("docker compose v2 missing (bench/run.sh --install)")
        return timed([DC2, "-f", f, "-p", "tbconfig", "config", "-q"])

    w.peers = [Side("docker compose v2.40.3 config -q", dc2, kind="daemonless")]
    return w


def wl_start(ctx: Ctx) -> Workload:
    """One-shot start without a network everywhere: the OCI bundle has only an empty
    network namespace, so tug (whose `container run` joins the `bridge` network by default,
    like docker), docker and podman all run with --network none to match."""
    net = ["--network", "none"]
    w = Workload("start", "one-shot container start, no network (run --rm --network none busybox true)",
                 runs=("start", 20), setup=ctx.ensure_tug_busybox)
    w.tug = Side("tug", lambda: timed(ctx.tug("container", "run", "--rm", *net, "busybox", "true"), env=ctx.env))
    def bundle_run(runtime, wrapper):
        def trial():
            b = ctx.bundle()
            cid = f"tugbench-{runtime}"
            cmd = f"exec {runtime} run -b {b} {cid}"
            if wrapper:
                return timed(["unshare", "-m", "sh", "-c", f"{NO_CGROUP2} && {cmd}"])
            return timed(["sh", "-c", cmd])
        return trial

    def bundle_clean(runtime):
        return lambda: quiet([runtime, "delete", "-f", f"tugbench-{runtime}"])

    peers = [
        Side("crun 1.8.1 run (OCI bundle) [mntns wrapper]", bundle_run("crun", True), kind="daemonless",
             teardown=lambda: quiet(["unshare", "-m", "sh", "-c", f"{NO_CGROUP2} && crun delete -f tugbench-crun"])),
        Side("runc 1.1.5 run (OCI bundle)", bundle_run("runc", False), kind="daemonless",
             teardown=bundle_clean("runc")),
        Side("mntns wrapper alone (unshare -m + umount + true)",
             lambda: timed(["unshare", "-m", "sh", "-c", f"{NO_CGROUP2} && exec true"]),
             kind="daemonless", context=True),
    ]
    peers += [
        Side("docker run --rm --network none busybox true (docker 20.10)",
             lambda: timed([DOCKER, "run", "--rm", *net, "busybox", "true"]), kind="daemon",
             setup=lambda: require_docker(ctx) or ctx.ensure_peer_busybox("docker")),
        Side("podman run --rm --network none busybox true (podman 4.3, runc)",
             lambda: timed(["podman", "run", "--rm", *net, "busybox", "true"]), kind="daemon",
             setup=lambda: ctx.ensure_peer_busybox("podman")),
    ]
    w.peers = peers
    return w


def wl_start_net(ctx: Ctx) -> Workload:
    """One-shot start on each tool's default network: tug's `bridge` network (a netns, a veth
    pair on the bridge, an address, DNS), docker's `bridge` and podman's default network. The
    run ends when the container is gone, its namespace and veth included. tug with
    `--network none` is shown alongside (context) for the cost of the network itself."""
    w = Workload("start_net", "one-shot container start, default network (run --rm busybox true)",
                 runs=("start_net", 20), setup=ctx.ensure_tug_busybox)
    w.tug = Side("tug", lambda: timed(ctx.tug("container", "run", "--rm", "busybox", "true"), env=ctx.env))
    w.peers = [
        Side("tug container run --rm --network none busybox true (context)",
             lambda: timed(ctx.tug("container", "run", "--rm", "--network", "none", "busybox", "true"),
                           env=ctx.env),
             kind="tug", context=True),
        Side("docker run --rm busybox true (docker 20.10, default bridge)",
             lambda: timed([DOCKER, "run", "--rm", "busybox", "true"]), kind="daemon",
             setup=lambda: require_docker(ctx) or ctx.ensure_peer_busybox("docker")),
        Side("podman run --rm busybox true (podman 4.3, runc, default network)",
             lambda: timed(["podman", "run", "--rm", "busybox", "true"]), kind="daemon",
             setup=lambda: ctx.ensure_peer_busybox("podman")),
    ]
    return w


def require_docker(ctx):
    if not ctx.docker_up():
        raise Skip("dockerd is not running (bench/run.sh starts it with the full run)")


def compose_sides(ctx: Ctx, n: int):
    """tug, docker compose v2 and podman-compose 1.6.0 bringing the n-service stack up from a
    clean state and down again; one trial gives both metrics. The first trial of each tool
    also checks the stack (all n running, sN fetches http://s1:8080/ by service name)."""
    d = ctx.state / f"compose{n}"
    f = d / "compose.yaml"

    def setup():
        d.mkdir(parents=True, exist_ok=True)
        f.write_text(compose_yaml(n))

    def updown(tool, up, down, count_running, fetch, env=None):
        checked = []

        def trial():
            t_up = timed(up, env=env, timeout=300)
            if not checked:
                checked.append(1)
                running = count_running()
                try:
                    got = first_line(fetch())
                except CmdError as e:
                    got = f"failed: {first_line(e.out)}"
                ctx.notes.append(f"{tool}, {n} services: running {running}/{n}; s{n} -> http://s1:8080/: {got}")
            t_down = timed(down, env=env, timeout=300)
            return {"up -d": t_up, "down -v": t_down}
        return trial

    p_tug = f"tbtug{n}"
    tug_base = ctx.tug("-f", f, "-p", p_tug)

    def tug_clean():
        quiet([*tug_base, "down", "-v"], env=ctx.env, timeout=300)

    def tug_count():
        out = run([*tug_base, "ps", "-q"], env=ctx.env, check=False)
        return len(out.split())

    tug_inner = updown("tug", [*tug_base, "up", "-d"], [*tug_base, "down", "-v"], tug_count,
                       lambda: run([*tug_base, "exec", "-T", f"s{n}", "wget", "-qO-", "http://s1:8080/"],
                                   env=ctx.env, timeout=20), env=ctx.env)

    def tug_trial():
        try:
            return tug_inner()
        except CmdError as e:
            if PENDING_RE.search(e.out):
                raise Pending(first_line(e.out)) from None
            raise

    tug = Side("tug", tug_trial, prepare=tug_clean)

    p_dc2, p_pc6 = f"tbdc2n{n}", f"tbpc6n{n}"
    dc2 = [str(DC2), "-f", str(f), "-p", p_dc2]
    pc6 = [str(PC6), "-f", str(f), "-p", p_pc6]

    def dc2_clean():
        quiet([*dc2, "down", "-v", "-t", "0"], timeout=300)

    def pc6_clean():
        quiet([*pc6, "down", "-v"], timeout=300)
        quiet(["podman", "pod", "rm", "-f", f"pod_{p_pc6}"])
        quiet(["podman", "network", "rm", "-f", f"{p_pc6}_net"])
        quiet(["podman", "volume", "rm", "-f", f"{p_pc6}_data"])

    def engine_count(cli, project):
        return len(run([*cli, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                       check=False).split())

    dc2_trial = updown("docker compose v2", [*dc2, "up", "-d"], [*dc2, "down", "-v"],
                       lambda: engine_count([DOCKER], p_dc2),
                       lambda: run([DOCKER, "exec", f"{p_dc2}-s{n}-1", "wget", "-qO-", "http://s1:8080/"], timeout=20))
    pc6_trial = updown("podman-compose 1.6.0", [*pc6, "up", "-d"], [*pc6, "down", "-v"],
                       lambda: engine_count(["podman"], p_pc6),
                       lambda: run(["podman", "exec", f"{p_pc6}_s{n}_1", "wget", "-qO-", "http://s1:8080/"], timeout=20))

    def dc2_setup():
        require_docker(ctx)
        if not DC2.exists():
            raise Skip("docker compose v2 missing (bench/run.sh --install)")
        ctx.ensure_peer_busybox("docker")

    def pc6_setup():
        if not PC6.exists():
            raise Skip("podman-compose 1.6.0 missing (bench/run.sh --install)")
        ctx.ensure_peer_busybox("podman")

    peers = [
        Side("docker compose v2.40.3 (docker 20.10)", dc2_trial, prepare=dc2_clean, kind="daemon",
             setup=dc2_setup, teardown=dc2_clean),
        Side("podman-compose 1.6.0 (podman 4.3)", pc6_trial, prepare=pc6_clean, kind="daemon",
             setup=pc6_setup, teardown=pc6_clean),
    ]
    return setup, tug, peers, tug_clean


def wl_compose(ctx: Ctx, n: int) -> Workload:
    setup, tug, peers, tug_clean = compose_sides(ctx, n)
    w = Workload(f"compose{n}", f"{n}-service stack: up -d from clean, then down -v",
                 runs=(f"compose{n}", 5 if n < 20 else 3),
                 setup=lambda: (ctx.ensure_tug_busybox(), setup()), teardown=tug_clean)
    w.tug, w.peers = tug, peers
    w.gap = float(os.environ.get("TRIAL_GAP", "0.5"))
    return w


def wl_noop(ctx: Ctx) -> Workload:
    n = 20
    d = ctx.state / "noop20"
    f = d / "compose.yaml"
    p_tug, p_dc2 = "tbnooptug", "tbnoopdc2"

    def setup():
        ctx.ensure_tug_busybox()
        d.mkdir(parents=True, exist_ok=True)
        f.write_text(compose_yaml(n))
        ctx.tug_call("-f", f, "-p", p_tug, "up", "-d", timeout=300)

    def teardown():
        quiet(ctx.tug("-f", f, "-p", p_tug, "down", "-v"), env=ctx.env, timeout=300)

    def dc2_setup():
        require_docker(ctx)
        ctx.ensure_peer_busybox("docker")
        run([DC2, "-f", f, "-p", p_dc2, "up", "-d"], timeout=300)

    w = Workload("noop20", "no-op up -d on a running 20-service stack", runs=("noop", 10),
                 setup=setup, teardown=teardown)
    w.gap = float(os.environ.get("TRIAL_GAP", "0.5"))
    w.tug = Side("tug", lambda: timed(ctx.tug("-f", f, "-p", p_tug, "up", "-d"), env=ctx.env))
    w.peers = [Side("docker compose v2.40.3 (docker 20.10)",
                    lambda: timed([DC2, "-f", f, "-p", p_dc2, "up", "-d"]), kind="daemon", setup=dc2_setup,
                    teardown=lambda: quiet([DC2, "-f", f, "-p", p_dc2, "down", "-v", "-t", "0"], timeout=300))]
    return w


def wl_unpack(ctx: Ctx) -> Workload:
    """tug image import (store the blob, unpack, sync, write config/manifest/index) vs
    tar -xzf of the same file (no sync), and tar -xzf followed by sync -f as context.

    Every sample unpacks into a directory of its own, and the trees are removed only when the
    workload ends: this disk's ext4 has no journal, and there the inode allocator skips, one
    by one, inodes freed in the last 30 s (`recently_deleted`); a tree of ~10,000 files
    removed just before a sample made that scan 60% of the sample's CPU, on both sides,
    varying with where the freed inodes were (the 0.7-2.7 s spread of earlier runs)."""
    holder = {"n": 0}
    base = ctx.state / "unpack"

    def setup():
        holder["layer"] = debian_layer(ctx.state, ctx.smoke)
        holder["mb"] = round(len(gzip.open(holder["layer"]).read()) / 1e6, 1) if ctx.smoke else None
        safe_rmtree(base)

    def fresh_dir(side):
        def prep():
            holder["n"] += 1
            holder[side] = base / f"{side}-{holder['n']}"
            if side != "tug":
                holder[side].mkdir(parents=True)
            os.sync()  # no writeback of the previous sample left to pay for
        return prep

    def tug_trial():
        return timed_tug(ctx, ["image", "import", holder["layer"], "bench/unpack:1"], root=holder["tug"])

    def tar_sync_trial():
        d = holder["tarsync"]
        return timed(["sh", "-c", f'tar -xzf "{holder["layer"]}" -C "{d}" && sync -f "{d}"'])

    w = Workload("unpack", "layer unpack: Debian 12 minbase rootfs, gzip (tug image import vs tar -xzf)",
                 runs=("unpack", 5), setup=setup, teardown=lambda: safe_rmtree(base))
    w.tug = Side("tug", tug_trial, prepare=fresh_dir("tug"))
    w.peers = [
        Side("tar -xzf (GNU tar 1.34 + gzip)", lambda: timed(["tar", "-xzf", holder["layer"], "-C", holder["tar"]]),
             prepare=fresh_dir("tar"), kind="daemonless"),
        Side("tar -xzf, then sync -f (what tug's syncfs adds)", tar_sync_trial,
             prepare=fresh_dir("tarsync"), kind="daemonless", context=True),
    ]
    return w


BUILD5_DOCKERFILE = """FROM busybox
COPY app.txt /app/app.txt
RUN echo built > /app/built.txt && ls /app
ENV APP_MODE=dev
WORKDIR /app
CMD ["cat", "/app/built.txt"]
"""

BUILDDEB_DOCKERFILE = """FROM {base}
RUN apt-get update && apt-get install -y --no-install-recommends hello tree && rm -rf /var/lib/apt/lists/*
COPY app.txt /app/app.txt
CMD ["sh", "-c", "hello && cat /app/app.txt"]
"""


def wl_build(ctx: Ctx, which: str) -> Workload:
    """Image builds, one trial = three metrics: cold (image and build cache removed first;
    the base image stays), fully cached rebuild, and rebuild after one copied file changed.
    build5: the peers' 5-step Dockerfile (../shared/peers/bench.sh) on the busybox base;
    builddeb: a Debian 12 minbase base, `apt-get install` of two packages from the Debian
    mirror, then COPY of an app file."""
    d = ctx.state / which
    holder = {"n": 0}
    deb = which == "builddeb"
    tag = f"tugbench-{which}:1"

    def write_app():
        holder["n"] += 1
        (d / "app.txt").write_text(f"app v{holder['n']}\n")

    def setup():
        d.mkdir(parents=True, exist_ok=True)
        write_app()
        if deb:
            if ctx.smoke:
                raise Skip("smoke: needs a Debian base and the mirror (tests/build.rs covers apt-get builds)")
            holder["layer"] = debian_layer(ctx.state, False)
            (d / "Dockerfile").write_text(BUILDDEB_DOCKERFILE.format(base="tugbench-debian:12"))
            ctx.tug_call("image", "import", "--change", 'CMD ["bash"]', "--change",
                         "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         holder["layer"], "tugbench-debian:12", timeout=600)
        else:
            ctx.ensure_tug_busybox()
            (d / "Dockerfile").write_text(BUILD5_DOCKERFILE)

    def three(build, clean):
        def trial():
            clean()
            cold = timed(build())
            cached = timed(build())
            write_app()
            changed = timed(build())
            return {"cold": cold, "fully cached": cached, "one file changed": changed}
        return trial

    def tug_clean():
        quiet(ctx.tug("image", "rm", "--force", tag), env=ctx.env)
        quiet(ctx.tug("builder", "prune", "--force"), env=ctx.env)

    def tug_build():
        return ctx.tug("image", "build", "-q", "-t", tag, d)

    def tug_trial():
        tug_clean()
        t0 = time.perf_counter()
        ctx.tug_call("image", "build", "-q", "-t", tag, d, timeout=900)
        cold = time.perf_counter() - t0
        cached = timed(tug_build(), env=ctx.env)
        write_app()
        changed = timed(tug_build(), env=ctx.env)
        return {"cold": cold, "fully cached": cached, "one file changed": changed}

    def peer_setup(engine):
        def f():
            if engine == "docker":
                require_docker(ctx)
            if deb:
                if engine == "docker":
                    quiet([DOCKER, "import", "-c", 'CMD ["bash"]', holder["layer"], "tugbench-debian:12"], timeout=600)
                else:
                    quiet(["podman", "import", "-c", 'CMD ["bash"]', holder["layer"], "localhost/tugbench-debian:12"],
                          timeout=600)
            else:
                ctx.ensure_peer_busybox(engine)
        return f

    def docker_clean():
        quiet([DOCKER, "rmi", "-f", tag])
        quiet([DOCKER, "builder", "prune", "-af"])

    def podman_clean():
        quiet(["podman", "rmi", "-f", tag])
        quiet(["podman", "image", "prune", "-f"])

    title = ("image build: peers' 5-step Dockerfile on busybox" if not deb else
             "image build: Debian 12 base, apt-get install of two packages, COPY of an app")
    w = Workload(which, title, runs=("build", 5 if not deb else 3), setup=setup,
                 teardown=lambda: (tug_clean(), safe_rmtree(d)))
    w.tug = Side("tug", tug_trial)
    w.peers = [
        Side("docker build, BuildKit (docker 20.10)",
             three(lambda: ["env", "DOCKER_BUILDKIT=1", DOCKER, "build", "-q", "-t", tag, str(d)], docker_clean),
             kind="daemon", setup=peer_setup("docker"),
             teardown=lambda: (docker_clean(), quiet([DOCKER, "rmi", "-f", "tugbench-debian:12"]))),
        Side("podman build (podman 4.3, buildah)",
             three(lambda: ["podman", "build", "-q", "-t", tag, str(d)], podman_clean),
             kind="daemon", setup=peer_setup("podman"),
             teardown=lambda: (podman_clean(), quiet(["podman", "rmi", "-f", "localhost/tugbench-debian:12"]))),
    ]
    return w


def timed_tug(ctx, args, root=None, timeout=600) -> float:
    t0 = time.perf_counter()
    ctx.tug_call(*args, root=root, timeout=timeout)
    return time.perf_counter() - t0


def pull_layer(state: Path, smoke: bool) -> Path:
    """The layer of debian_layer with one more file, so that its digest and diff_id are its
    own: docker and podman keep the layer of the imported tugbench-debian:12 (the builddeb
    workload's base), and a pull of an image with that same layer only fetched the manifest
    and config (docker's pull + unpack row measured 45 ms)."""
    base = debian_layer(state, smoke)
    out = state / (base.name.split(".")[0] + "-pull.tar.gz")
    if out.exists():
        return out
    extra = state / "pull-extra"
    (extra / "etc").mkdir(parents=True, exist_ok=True)
    (extra / "etc" / "tug-bench-pull").write_text("a layer of its own for the pull workloads\n")
    tmp = state / "pull-layer.tmp.tar"
    run(["sh", "-c", f"gzip -dc {base} > {tmp} && tar --append -f {tmp} -C {extra} etc/tug-bench-pull "
         f"&& gzip -6 -n -c {tmp} > {out}.tmp && mv {out}.tmp {out} && rm -f {tmp}"], timeout=600)
    return out


def pull_setup(ctx: Ctx, holder: dict):
    """The Debian image in a local registry (pushed once with skopeo); its reference in holder."""
    def setup():
        layer = pull_layer(ctx.state, ctx.smoke)
        layout = oci_layout_of_layer(layer, ctx.state / ("pull-src-" + layer.name.split(".")[0]), "1")
        if not have("skopeo"):
            raise Skip("skopeo missing (needed to fill the local registry)")
        port = ctx.start_registry()
        ref = f"127.0.0.1:{port}/bench/debian:1"
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{ref}"], timeout=300)
        holder["ref"] = ref
    return setup


def fresh(path):
    def prep():
        safe_rmtree(path)
        os.sync()
    return prep


def wl_pull(ctx: Ctx) -> Workload:
    """Like with like: both sides fetch the manifest, config and layer blob, verify the
    digests and store the blobs; neither unpacks (tug unpacks on first use)."""
    holder = {}
    troot = ctx.state / "pull-tug"
    sdir = ctx.state / "pull-skopeo"
    w = Workload("pull", "pull of that image from a local registry (127.0.0.1): transfer + verify, no unpack",
                 runs=("pull", 5), setup=pull_setup(ctx, holder),
                 teardown=lambda: (safe_rmtree(troot), safe_rmtree(sdir), ctx.stop_registry()))
    w.tug = Side("tug image pull", lambda: timed_tug(ctx, ["image", "pull", holder["ref"]], root=troot),
                 prepare=fresh(troot))
    w.peers = [
        Side("skopeo 1.9.3 copy to an OCI layout",
             lambda: timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{holder['ref']}", f"oci:{sdir}:1"]),
             prepare=fresh(sdir), kind="daemonless"),
    ]
    return w


def wl_pull_unpack(ctx: Ctx) -> Workload:
    """Pull and unpack: `tug image pull --unpack` vs the pulls of docker and podman, which
    unpack into their storage."""
    holder = {}
    troot = ctx.state / "pull-unpack-tug"

    def docker_prep():
        quiet([DOCKER, "rmi", "-f", holder["ref"]])

    def podman_prep():
        quiet(["podman", "rmi", "-f", holder["ref"]])

    w = Workload("pullunpack", "pull + unpack of that image from a local registry (127.0.0.1)",
                 runs=("pull", 5), setup=pull_setup(ctx, holder),
                 teardown=lambda: (safe_rmtree(troot), ctx.stop_registry()))
    w.tug = Side("tug image pull --unpack",
                 lambda: timed_tug(ctx, ["image", "pull", "--unpack", holder["ref"]], root=troot),
                 prepare=fresh(troot))
    w.peers = [
        Side("docker pull (docker 20.10, unpacks)", lambda: timed([DOCKER, "pull", "-q", holder["ref"]]),
             prepare=docker_prep, kind="daemon", setup=lambda: require_docker(ctx), teardown=docker_prep),
        # podman pull needs no daemon and touches no host networking.
        Side("podman pull (podman 4.3, unpacks)",
             lambda: timed(["podman", "pull", "-q", "--tls-verify=false", holder["ref"]]),
             prepare=podman_prep, kind="daemonless", teardown=podman_prep),
    ]
    return w


# -- memory: supervisors of running containers


def supervisor_mem(container_pid: int, stop_exes: tuple) -> dict:
    """Memory (KiB: rss, pss, uss) of the processes between a container's first process and
    PID 1: the supervisor (tug's, conmon, containerd-shim), not the container itself nor a
    daemon."""
    total = {"rss": 0, "pss": 0, "uss": 0}
    pid = ppid_of(container_pid)
    while pid > 1:
        exe = exe_of(pid)
        if any(exe.endswith(s) for s in stop_exes):
            break
        total["rss"] += rss_kib(pid)
        for k, v in smaps_kib(pid).items():
            total[k] += v
        pid = ppid_of(pid)
    return total


def sum_mem(pids) -> dict:
    total = {"rss": 0, "pss": 0, "uss": 0}
    for p in pids:
        total["rss"] += rss_kib(p)
        for k, v in smaps_kib(p).items():
            total[k] += v
    return total


def tug_container_pids(ctx: Ctx, names) -> dict:
    """Pid of each named container's main process, from `tug container inspect` (the `ls`
    listing has docker's columns, which carry no pid)."""
    names = sorted(names)
    if not names:
        return {}
    out = ctx.tug_call("container", "inspect", *names)
    pids = {}
    for r in json.loads(out):
        low = {k.lower(): v for k, v in r.items()}
        name = str(low.get("name") or "").lstrip("/")
        pid = low.get("pid")
        if name in names and pid:
            pids[name] = int(pid)
    return pids


def tug_processes(ctx: Ctx) -> list[int]:
    """Every tug process serving this run's root (supervisors, helpers)."""
    return [p for p in pids_with_exe(ctx.tug_bin) if environ_of(p).get("TUG_ROOT") == str(ctx.root)]


def wl_memory(ctx: Ctx, count: int, name: str, title: str) -> Workload:
    """Starts `count` containers (busybox sleep, no network) with each engine, one engine at a
    time, and measures the RSS of what keeps them running."""
    names = [f"tbm{i}" for i in range(count)]
    label = "tugbench=1"
    w = Workload(name, title, unit="MiB", runs=("mem", 1), setup=ctx.ensure_tug_busybox)
    w.alternate = False
    w.warmup = False  # starting 100 containers twice per engine buys nothing

    def tug_trial():
        t0 = time.perf_counter()
        for n in names:
            ctx.tug_call("container", "run", "-d", "--network", "none", "--name", n, "busybox", "sleep", "1000")
        t_start = time.perf_counter() - t0
        time.sleep(1)
        pids = tug_container_pids(ctx, set(names))
        per = [supervisor_mem(pids[n], ()) for n in names if n in pids]
        total = sum_mem(tug_processes(ctx))
        tug_rm()
        if not per:
            raise CmdError(["tug", "container", "ls"], 0, "no pid of the started containers found")
        return mem_metrics(per, total, t_start, count)

    def tug_rm():
        quiet(ctx.tug("container", "rm", "--force", *names), env=ctx.env, timeout=600)

    def engine_trial(cli, shim_exe, stop):
        def trial():
            t0 = time.perf_counter()
            for n in names:
                run([*cli, "run", "-d", "--network", "none", "--label", label, "--name", n, "busybox", "sleep", "1000"])
            t_start = time.perf_counter() - t0
            time.sleep(1)
            per = []
            for n in names:
                pid = int(run([*cli, "inspect", "-f", "{{.State.Pid}}", n]).strip())
                per.append(supervisor_mem(pid, stop))
            total = sum_mem(pids_with_exe(shim_exe))
            clean()
            return mem_metrics(per, total, t_start, count)

        def clean():
            ids = run([*cli, "ps", "-aq", "--filter", f"label={label}"], check=False).split()
            if ids:
                quiet([*cli, "rm", "-f", *ids], timeout=600)
        return trial, clean

    w.tug = Side("tug", tug_trial, prepare=tug_rm)
    d_trial, d_clean = engine_trial([DOCKER], "/usr/bin/containerd-shim-runc-v2", ("/containerd", "/dockerd"))
    p_trial, p_clean = engine_trial(["podman"], "/usr/bin/conmon", ())
    w.peers = [
        Side("docker 20.10 (containerd-shim-runc-v2)", d_trial, prepare=d_clean, kind="daemon", teardown=d_clean,
             setup=lambda: require_docker(ctx) or ctx.ensure_peer_busybox("docker")),
        Side("podman 4.3 (conmon)", p_trial, prepare=p_clean, kind="daemon", teardown=p_clean,
             setup=lambda: ctx.ensure_peer_busybox("podman")),
    ]
    w.teardown_fn = tug_rm
    return w


def mem_metrics(per, total, t_start, count):
    """per: supervisor memory of each container (KiB dicts); total: of all supervising
    processes. Reported in MiB: per container the median over the containers."""
    med = {k: statistics.median(p[k] for p in per) / 1024 for k in ("rss", "pss", "uss")}
    return {
        "supervisor RSS per container": med["rss"],
        "supervisor private memory (USS) per container": med["uss"],
        f"total RSS of the supervising processes, {count} containers": total["rss"] / 1024,
        f"total PSS of the supervising processes, {count} containers": total["pss"] / 1024,
        f"time to start {count} containers one after another (s)": t_start,
    }


WATCH_YAML = """services:
  app:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
"""


def wl_watch(ctx: Ctx) -> Workload:
    """`develop.watch` sync, measured the same way for every tool: a file written on the host
    is read back through /proc/<container pid>/root (the container's own view of its files,
    its mounts included), polled every 0.5 ms, until it has the new content. p50 and p95 over
    EDITS edits (WATCH_EDITS, 100; 20 in smoke), each after the previous one was seen and 0.2 s
    of rest, the first 3 not counted; then a burst of 500 files (50 in smoke) written one
    after another as fast as Python can, like a checkout: time until every file has its new
    content in the container. One trial per tool (RUNS_WATCH to repeat)."""
    edits = 20 if ctx.smoke else int(os.environ.get("WATCH_EDITS", 100))
    burst = 50 if ctx.smoke else 500
    sides = {}  # name -> {"dir", "proc", "pid", "log"}

    def project(name) -> Path:
        d = ctx.state / "watch" / name
        safe_rmtree(d)
        (d / "src").mkdir(parents=True)
        (d / "src" / "file.txt").write_text("start\n")
        (d / "compose.yaml").write_text(WATCH_YAML)
        return d

    def start_watch(name, argv, ready, container_pid, env=None):
        d = sides[name]["dir"]
        log = open(d / "watch.log", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=d)
        sides[name].update(proc=proc, log=d / "watch.log")
        deadline = time.time() + 60
        while ready not in (d / "watch.log").read_text(errors="replace"):
            if proc.poll() is not None or time.time() > deadline:
                raise CmdError(argv, proc.poll(), (d / "watch.log").read_text(errors="replace"))
            time.sleep(0.05)
        sides[name]["pid"] = container_pid()

    def stop_watch(name):
        proc = sides.get(name, {}).get("proc")
        if proc and proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def read(path: Path) -> str | None:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None

    def wait_for(path: Path, want: str, what: str):
        deadline = time.perf_counter() + 30
        while read(path) != want:
            if time.perf_counter() > deadline:
                raise CmdError([what], "timeout", f"{path} never got the new content")
            time.sleep(0.0005)

    def trial_of(name):
        def trial():
            src = sides[name]["dir"] / "src"
            inside = Path(f"/proc/{sides[name]['pid']}/root/app")
            lat = []
            for i in range(edits + 3):
                text = f"{name} edit {i} {time.time_ns()}\n"
                t0 = time.perf_counter()
                (src / "file.txt").write_text(text)
                wait_for(inside / "file.txt", text, f"{name} edit {i}")
                if i >= 3:
                    lat.append(time.perf_counter() - t0)
                time.sleep(0.2)
            gen = time.time_ns()
            files = {f"f{k:03d}": f"{gen} {k}\n" for k in range(burst)}
            (src / "tree").mkdir(exist_ok=True)
            time.sleep(0.5)
            t0 = time.perf_counter()
            for n, text in files.items():
                (src / "tree" / n).write_text(text)
            pending = dict(files)
            deadline = t0 + 120
            while pending:
                for n in [n for n, text in pending.items() if read(inside / "tree" / n) == text]:
                    del pending[n]
                if pending and time.perf_counter() > deadline:
                    raise CmdError([name, "burst"], "timeout", f"{len(pending)} files never arrived")
                if pending:
                    time.sleep(0.0005)
            t_burst = time.perf_counter() - t0
            time.sleep(0.5)
            return {
                "sync latency, p50": statistics.median(lat),
                "sync latency, p95": statistics.quantiles(lat, n=20)[18],
                f"{burst}-file burst: until every file is right in the container": t_burst,
            }
        return trial

    p_tug, p_dc2 = "tbwatchtug", "tbwatchdc2"

    def tug_setup():
        ctx.ensure_tug_busybox()
        d = project("tug")
        sides["tug"] = {"dir": d}
        base = ctx.tug("-f", d / "compose.yaml", "-p", p_tug)
        ctx.tug_call("-f", d / "compose.yaml", "-p", p_tug, "up", "-d", timeout=120)

        def pid():
            pids = tug_container_pids(ctx, {f"{p_tug}-app-1"})
            return pids[f"{p_tug}-app-1"]

        start_watch("tug", [*base, "watch", "--no-up"], "watching ", pid, env=ctx.env)

    def tug_teardown():
        stop_watch("tug")
        if "tug" in sides:
            quiet(ctx.tug("-f", sides["tug"]["dir"] / "compose.yaml", "-p", p_tug, "down", "-v"),
                  env=ctx.env, timeout=120)

    def dc2_setup():
        require_docker(ctx)
        if not DC2.exists():
            raise Skip("docker compose v2 missing (bench/run.sh --install)")
        ctx.ensure_peer_busybox("docker")
        d = project("dc2")
        sides["dc2"] = {"dir": d}
        base = [DC2, "-f", d / "compose.yaml", "-p", p_dc2]
        run([*base, "up", "-d"], timeout=120)

        def pid():
            return int(run([DOCKER, "inspect", "-f", "{{.State.Pid}}", f"{p_dc2}-app-1"]).strip())

        start_watch("dc2", [*map(str, base), "watch", "--no-up"], "Watch enabled", pid)

    def dc2_teardown():
        stop_watch("dc2")
        if "dc2" in sides:
            quiet([DC2, "-f", sides["dc2"]["dir"] / "compose.yaml", "-p", p_dc2, "down", "-v", "-t", "0"],
                  timeout=120)

    w = Workload("watch", "watch: host write to readable in the container (sync action)",
                 runs=("watch", 1), setup=tug_setup, teardown=tug_teardown)
    w.warmup = False  # the first edits of each trial are the warm-up
    w.tug = Side("tug watch", trial_of("tug"))
    w.peers = [Side("docker compose v2.40.3 watch (docker 20.10)", trial_of("dc2"), kind="daemon",
                    setup=dc2_setup, teardown=dc2_teardown)]
    return w


def workloads(ctx: Ctx) -> list[Workload]:
    many = 3 if ctx.smoke else int(os.environ.get("MANY", 100))
    return [
        wl_config(ctx),
        wl_start(ctx),
        wl_start_net(ctx),
        wl_compose(ctx, 5),
        wl_compose(ctx, 20),
        wl_noop(ctx),
        wl_build(ctx, "build5"),
        wl_build(ctx, "builddeb"),
        wl_unpack(ctx),
        wl_pull(ctx),
        wl_pull_unpack(ctx),
        wl_memory(ctx, 5, "rss", "supervisor RSS per container (5 containers running)"),
        wl_memory(ctx, many, "many", f"{many} containers running at once: RSS of the supervising processes"),
        wl_watch(ctx),
    ]


# ------------------------------------------------------------------ output


def machine() -> dict:
    def read(p):
        try:
            return Path(p).read_text().strip()
        except OSError:
            return ""
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", read("/proc/meminfo")).group(1))
    cg = run(["findmnt", "-rn", "-t", "cgroup,cgroup2", "-o", "TARGET,FSTYPE"], check=False).split("\n")
    v1 = [l.split()[0].rsplit("/", 1)[1] for l in cg if l.endswith(" cgroup")]
    v2 = [l.split()[0] for l in cg if l.endswith(" cgroup2")]
    layout = "v2" if not v1 else ("hybrid" if v2 else "v1")
    return {
        "kernel": os.uname().release,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": re.search(r'PRETTY_NAME="([^"]*)"', read("/etc/os-release")).group(1),
        "cgroups": {"layout": layout, "v1": v1, "v2_mounts": v2,
                    "v2_controllers": read("/sys/fs/cgroup/unified/cgroup.controllers")
                    if "/sys/fs/cgroup/unified" in v2 else read("/sys/fs/cgroup/cgroup.controllers")},
        "root_fs": run(["findmnt", "-no", "FSTYPE", "/"], check=False).strip(),
        "load_at_start": read("/proc/loadavg"),
    }


def fmt(v, unit):
    if unit == "MiB":
        return f"{v:.2f}"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def fmt_metric(v, metric, unit):
    if "(s)" in metric:
        return fmt(v, "s")
    return fmt(v, unit) + (" MiB" if unit == "MiB" else "")


def print_summary(results):
    for r in results["workloads"]:
        print(f"\n== {r['name']}: {r['title']}")
        if r["status"] != "measured":
            print(f"   {r['status']}: {r.get('reason', '')}")
            continue
        for m in r["metrics"]:
            t = m["tug"]
            print(f"   [{m['metric']}]")
            print(f"     {'tug':<58} median {fmt_metric(t['median'], m['metric'], r['unit']):>12}"
                  f"  min {fmt_metric(t['min'], m['metric'], r['unit']):>12}  max {fmt_metric(t['max'], m['metric'], r['unit']):>12}  n={t['n']}")
            for p in m["peers"]:
                ratio = f"tug/peer {p['ratio']:.2f}x" if "ratio" in p else "(context)"
                print(f"     {p['name'][:58]:<58} median {fmt_metric(p['median'], m['metric'], r['unit']):>12}"
                      f"  min {fmt_metric(p['min'], m['metric'], r['unit']):>12}  max {fmt_metric(p['max'], m['metric'], r['unit']):>12}  n={p['n']}  {ratio}")
        for name, why in r.get("not_measured", {}).items():
            print(f"     {name}: not measured: {why}")


def markdown(results) -> str:
    """Two tables: the ratios (tug median / peer median) and the absolute figures."""
    rows, abs_rows, pend = [], [], []
    for r in results["workloads"]:
        if r["status"] != "measured":
            pend.append(f"| {r['title']} | {r['status']}: {r.get('reason', '')} |")
            continue
        for m in r["metrics"]:
            label = r["title"] if m["metric"] == r["title"] else f"{r['title']} — {m['metric']}"
            t = m["tug"]
            u = r["unit"]
            abs_rows.append(f"| {label} | tug | {t['n']} | {fmt_metric(t['median'], m['metric'], u)} | "
                            f"{fmt_metric(t['min'], m['metric'], u)} | {fmt_metric(t['max'], m['metric'], u)} |")
            for p in m["peers"]:
                abs_rows.append(f"| | {p['name']} | {p['n']} | {fmt_metric(p['median'], m['metric'], u)} | "
                                f"{fmt_metric(p['min'], m['metric'], u)} | {fmt_metric(p['max'], m['metric'], u)} |")
                if "ratio" in p and "(s)" not in m["metric"]:
                    rows.append(f"| {label} | {p['name']} | **{p['ratio']:.2f}×** | "
                                f"{fmt_metric(t['median'], m['metric'], u)} vs {fmt_metric(p['median'], m['metric'], u)} |")
            if not m["peers"]:
                rows.append(f"| {label} | (no peer measured) | – | {fmt_metric(t['median'], m['metric'], u)} |")
        for name, why in r.get("not_measured", {}).items():
            pend.append(f"| {r['title']} — {name} | not measured: {why} |")
    out = ["| workload | peer | tug / peer (median) | medians |", "|---|---|---:|---|", *rows, "",
           "| workload | tool | runs | median | min | max |", "|---|---|---:|---:|---:|---:|", *abs_rows]
    if pend:
        out += ["", "| not measured | why |", "|---|---|", *pend]
    return "\n".join(out)


def update_doc(doc: Path, res: dict):
    """Replaces the text between the figure markers of the benchmarks doc with the tables,
    the run's date, commit and machine."""
    m = res["machine"]
    cg = m["cgroups"]
    checks = [c for r in res["workloads"] for c in r.get("checks", [])]
    dates = sorted({r["date"] for r in res["workloads"] if "date" in r})
    body = "\n".join([
        f"Run of {res['date']}, tug {res['tug_commit']} ({res['tug_binary']}), mode {res['mode']}"
        + (f"; workloads measured at {', '.join(dates)} (each row's run is in latest.json)" if len(dates) > 1 else "")
        + ".",
        f"Machine: {m['os']}, kernel {m['kernel']}, {m['cores']} cores, {m['memory_gib']} GiB, root fs "
        f"{m['root_fs']}; cgroups {cg['layout']} (v1: {', '.join(cg['v1'])}; cgroup2 at "
        f"{', '.join(cg['v2_mounts']) or '-'} with controllers '{cg['v2_controllers']}'); "
        f"load average at start {m['load_at_start'].split()[0]}.",
        "",
        markdown(res),
        "",
        *([f"Checks before timing: {'; '.join(checks)}."] if checks else []),
    ])
    text = doc.read_text()
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    i, j = text.index(begin) + len(begin), text.index(end)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text[:i] + "\n" + body + "\n" + text[j:])
    os.replace(tmp, doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", help="workload names (default: all)")
    ap.add_argument("--smoke", action="store_true", help="each workload once, tug only")
    ap.add_argument("--peers", choices=["none", "daemonless", "all"], default="all")
    ap.add_argument("--tug", default=str(REPO / "target" / "release" / "tug"))
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/latest.json; smoke: none)")
    ap.add_argument("--markdown", metavar="FILE", help="print the tables of a results file and exit")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--update-doc", metavar="FILE",
                    help="write the tables of --markdown FILE into docs/benchmarks.md between its markers")
    args = ap.parse_args()
    if args.markdown:
        res = json.loads(Path(args.markdown).read_text())
        if args.update_doc:
            update_doc(Path(args.update_doc), res)
        else:
            print(markdown(res))
        return 0
    ctx = Ctx(args)
    all_w = workloads(ctx)
    if args.list:
        for w in all_w:
            print(f"{w.name:<10} {w.title}")
        return 0
    names = {w.name for w in all_w}
    unknown = [n for n in args.workloads if n not in names]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}", file=sys.stderr)
        return 2
    chosen = [w for w in all_w if not args.workloads or w.name in args.workloads]
    if not Path(ctx.tug_bin).exists():
        print(f"no tug binary at {ctx.tug_bin}", file=sys.stderr)
        return 2
    commit = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).strip()
    results = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tug_commit": commit,
        "tug_binary": os.path.relpath(ctx.tug_bin, REPO),
        "mode": "smoke" if ctx.smoke else f"peers={ctx.peers}",
        "alternation": "per run: tug, peer 1, tug, peer 2, ... (each peer sample right after a tug sample)",
        "machine": machine(),
        "workloads": [],
    }
    t0 = time.time()
    safe_rmtree(ctx.root)
    try:
        for w in chosen:
            print(f"-- {w.name}: {w.title}", flush=True)
            r = run_workload(ctx, w)
            results["workloads"].append(r)
            if r["status"] != "measured":
                print(f"   {r['status']}: {r.get('reason', '')}", flush=True)
            # what is measured so far survives an interrupted run
            (BENCH / ".state" / "partial.json").write_text(json.dumps(results, indent=1) + "\n")
    finally:
        ctx.cleanup_tug()
        ctx.stop_registry()
    results["seconds"] = round(time.time() - t0, 1)
    print_summary(results)
    out = args.out or (None if ctx.smoke else str(BENCH / "results" / "latest.json"))
    for r in results["workloads"]:
        r["date"], r["tug_commit"], r["mode"] = results["date"], commit, results["mode"]
    if out and args.workloads and Path(out).exists():
        # A run of some workloads updates their entries and keeps the others' figures.
        try:
            old = json.loads(Path(out).read_text())
        except (OSError, ValueError):
            old = {"workloads": []}
        fresh = {r["name"]: r for r in results["workloads"]}
        kept = {r["name"]: r for r in old.get("workloads", []) if r["name"] not in fresh}
        order = [w.name for w in all_w]
        merged = {**kept, **fresh}
        results["workloads"] = [merged[n] for n in order if n in merged]
    if out:
        tmp = Path(out + ".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, out)
        print(f"\nresults: {out}")
    broken = [r for r in results["workloads"] if r["status"] == "error"]
    for r in broken:
        print(f"BROKEN {r['name']}: {r['reason']}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
