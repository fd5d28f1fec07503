//! Seccomp: a BPF program the kernel runs on every system call of the container.
//!
//! The program sees the syscall number, the architecture and the six arguments, and returns
//! an action: allow, fail with an errno, kill, … Docker's default profile is an allowlist:
//! every syscall fails with `EPERM` unless listed, a few are allowed only with harmless
//! arguments (`personality`, `clone` without namespace flags, `socket` without `AF_VSOCK`),
//! `clone3` fails with `ENOSYS` so that libcs fall back to `clone`, and capabilities added to
//! the container open the syscalls they govern (`CAP_SYS_ADMIN` opens `mount`, `unshare`, …).
//!
//! The profile is carried in the OCI spec (`linux.seccomp`) so that runc applies the same one.
//! [`compile`] turns it into classic BPF. A profile of the usual shape (Docker's: each syscall
//! gets one action whatever its arguments, or is allowed under argument conditions) becomes
//! one **compact** program written here: after the architecture check, the syscall numbers
//! in ascending runs that share an answer (`jgt top` → next run, `jge start` → the answer,
//! else the default), and a small block of 64-bit argument comparisons for each conditional
//! syscall — about 190 instructions for Docker's profile. Size matters: the kernel translates
//! and JIT-compiles the program when it is installed (on the container's start path) and runs
//! it on every syscall. Any other shape goes the generic way, with `seccompiler`: one
//! seccompiler filter has a single "match" action, so the profile becomes a **stack** of
//! filters, a base filter (the default action for unlisted syscalls, `allow` for every listed
//! one) and one filter per other action (that action for its syscalls, `allow` otherwise); the
//! kernel runs all of them and keeps the most severe answer, which is what the profile means.
//! Tests run both on every syscall number with sample arguments and require equal answers.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// Errors of seccomp handling.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile cannot be compiled.
    #[error("seccomp profile: {0}")]
    Compile(String),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
    /// A profile file could not be read or parsed.
    #[error("seccomp profile {path}: {reason}")]
    Profile {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, SeccompError>;

/// The architectures tug compiles seccomp programs for. The program of a container is the
/// host's ([`Arch::HOST`]); the other one is compiled in tests, so that a number that only
/// exists on one architecture cannot slip into the profile unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`AUDIT_ARCH_X86_64`).
    X86_64,
    /// 64-bit ARM (`AUDIT_ARCH_AARCH64`).
    Aarch64,
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("tug's seccomp profile exists for x86_64 and aarch64 only");

impl Arch {
    /// The architecture tug was built for.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch` (linux/audit.h).
    #[must_use]
    pub const fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    /// The architectures a profile for this one lists (Docker's choice: the native one and
    /// the 32-bit ABIs the CPU can run; the compiled program admits only the native one).
    fn oci(self) -> Vec<oci_spec::runtime::Arch> {
        use oci_spec::runtime::Arch as A;
        match self {
            Arch::X86_64 => vec![A::ScmpArchX86_64, A::ScmpArchX86, A::ScmpArchX32],
            Arch::Aarch64 => vec![A::ScmpArchAarch64, A::ScmpArchArm],
        }
    }

    /// The number of syscall `name` on this architecture (the `syscalls` crate's tables,
    /// generated from the kernel's), or `None` when it does not exist there.
    #[must_use]
    pub fn syscall_number(self, name: &str) -> Option<i64> {
        match self {
            Arch::X86_64 => name
                .parse::<syscalls::x86_64::Sysno>()
                .ok()
                .map(|s| i64::from(s.id())),
            Arch::Aarch64 => {
                // The kernel (and libseccomp, and Docker's profile) call aarch64's call 79
                // `newfstatat`; the crate's table names it `fstatat`.
                let name = if name == "newfstatat" {
                    "fstatat"
                } else {
                    name
                };
                name.parse::<syscalls::aarch64::Sysno>()
                    .ok()
                    .map(|s| i64::from(s.id()))
            }
        }
    }
}

/// Syscalls Docker's default profile allows for everyone.
const ALLOWED: &str = "accept accept4 access adjtimex alarm bind brk capget capset chdir chmod \
chown clock_adjtime clock_getres clock_gettime clock_nanosleep close close_range connect \
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old \
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit \
exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat \
fchmodat2 fchown fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr \
fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv futimesat get_robust_list \
get_thread_area getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer \
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid \
getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr \
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy \
io_getevents io_setup io_submit ioctl ioprio_get ioprio_set kill landlock_add_rule \
landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat listen listxattr \
llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret \
mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr \
mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap mseal msgctl msgget msgrcv \
msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat \
openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll \
ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev \
pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg \
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq \
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend \
rt_sigtimedwait rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min \
sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval \
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select \
semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto set_robust_list \
set_thread_area set_tid_address setfsgid setfsuid setgid setgroups setitimer setpgid \
setpriority setregid setresgid setresuid setreuid setrlimit setsid setsockopt setuid \
setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socketpair splice \
stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time \
timer_create timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create \
timerfd_gettime timerfd_settime times tkill truncate umask uname unlink unlinkat utime \
utimensat utimes vfork vmsplice wait4 waitid write writev arch_prctl modify_ldt ptrace";

/// Syscalls opened by a capability the container holds (Docker's `includes.caps`).
const BY_CAP: &[(&str, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        "bpf clone fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount \
         mount_setattr move_mount name_to_handle_at open_tree perf_event_open quotactl setdomainname \
         sethostname setns syslog umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    (
        "CAP_SYS_TIME",
        "settimeofday stime clock_settime clock_adjtime adjtimex",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// Namespace flags `clone` may not carry without `CAP_SYS_ADMIN` (Docker's mask).
const CLONE_NS_MASK: u64 = 0x7E02_0000;

fn syscall(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
        .action(action)
        .build()
        .unwrap_or_default()
}

/// Docker's default profile for a container holding capabilities `caps` (`CAP_…` names), on
/// the host's architecture.
#[must_use]
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    default_profile_for(Arch::HOST, caps)
}

/// Docker's default profile for `arch`. The syscall names are the same for every
/// architecture (names that do not exist on `arch` are skipped when it is compiled, as runc
/// does); only the listed architectures differ.
#[must_use]
pub fn default_profile_for(arch: Arch, caps: &[String]) -> LinuxSeccomp {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut calls = vec![syscall(
        &ALLOWED.split_whitespace().collect::<Vec<_>>(),
        LinuxSeccompAction::ScmpActAllow,
    )];
    for personality in [0x0_u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        let mut s = syscall(&["personality"], LinuxSeccompAction::ScmpActAllow);
        s.set_args(Some(vec![
            LinuxSeccompArgBuilder::default()
                .index(0_usize)
                .value(personality)
                .op(LinuxSeccompOperator::ScmpCmpEq)
                .build()
                .unwrap_or_default(),
        ]));
        calls.push(s);
    }
    // socket: anything but AF_VSOCK (40).
    let mut sock = syscall(&["socket"], LinuxSeccompAction::ScmpActAllow);
    sock.set_args(Some(vec![
        LinuxSeccompArgBuilder::default()
            .index(0_usize)
            .value(40_u64)
            .op(LinuxSeccompOperator::ScmpCmpNe)
            .build()
            .unwrap_or_default(),
    ]));
    calls.push(sock);
    if has("CAP_SYS_ADMIN") {
        calls.push(syscall(&["clone3"], LinuxSeccompAction::ScmpActAllow));
    } else {
        let mut clone = syscall(&["clone"], LinuxSeccompAction::ScmpActAllow);
        clone.set_args(Some(vec![
            LinuxSeccompArgBuilder::default()
                .index(0_usize)
                .value(CLONE_NS_MASK)
                .value_two(0_u64)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .unwrap_or_default(),
        ]));
        calls.push(clone);
        let mut c3 = syscall(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        c3.set_errno_ret(Some(libc::ENOSYS as u32));
        calls.push(c3);
    }
    for (cap, names) in BY_CAP {
        if has(cap) {
            calls.push(syscall(
                &names.split_whitespace().collect::<Vec<_>>(),
                LinuxSeccompAction::ScmpActAllow,
            ));
        }
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(arch.oci())
        .syscalls(calls)
        .build()
        .unwrap_or_default()
}

/// Reads a Docker/OCI seccomp profile file (the `linux.seccomp` shape).
pub fn load_profile(path: &std::path::Path) -> Result<LinuxSeccomp> {
    let text = std::fs::read_to_string(path).map_err(|e| SeccompError::Profile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| SeccompError::Profile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(default_errno)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        other => {
            return Err(SeccompError::Compile(format!(
                "action {other:?} is not supported"
            )));
        }
    })
}

fn conditions(s: &LinuxSyscall) -> Result<Vec<SeccompCondition>> {
    let mut out = Vec::new();
    for a in s.args().iter().flatten() {
        let op = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
            LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
            LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
            LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
            LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
            LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
            LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
        };
        let value = match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            _ => a.value(),
        };
        let index = u8::try_from(a.index())
            .map_err(|_| SeccompError::Compile(format!("argument index {}", a.index())))?;
        out.push(
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| SeccompError::Compile(e.to_string()))?,
        );
    }
    Ok(out)
}

/// One argument comparison of a rule, on the full 64-bit value.
#[derive(Debug, Clone)]
struct Cond {
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

/// What a syscall number gets in the compact program.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// This return value, whatever the arguments.
    Ret(u32),
    /// Allowed when one of the number's rules holds, else the default action.
    Rules,
}

// Classic BPF opcodes (linux/bpf_common.h) used by the compact program.
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: nr, arch, args (little-endian 64-bit words).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// Where a condition's jump goes: the next instruction, the next condition (this one
/// holds), or the next rule (it does not).
#[derive(Clone, Copy)]
enum To {
    Fall,
    Ok,
    Fail,
}

/// The code of one 64-bit comparison: (opcode, k, true target, false target).
fn cond_code(c: &Cond) -> Vec<(u16, u32, To, To)> {
    let lo_off = DATA_ARGS + 8 * c.index;
    let hi_off = lo_off + 4;
    let split = |v: u64| ((v >> 32) as u32, (v & 0xffff_ffff) as u32);
    let (hi, lo) = split(c.value);
    use LinuxSeccompOperator as Op;
    use To::{Fail, Fall, Ok};
    match c.op {
        Op::ScmpCmpEq => vec![
            (LD_W_ABS, hi_off, Fall, Fall),
            (JEQ_K, hi, Fall, Fail),
            (LD_W_ABS, lo_off, Fall, Fall),
            (JEQ_K, lo, Ok, Fail),
        ],
        Op::ScmpCmpNe => vec![
            (LD_W_ABS, hi_off, Fall, Fall),
            (JEQ_K, hi, Fall, Ok),
            (LD_W_ABS, lo_off, Fall, Fall),
            (JEQ_K, lo, Fail, Ok),
        ],
        Op::ScmpCmpMaskedEq => {
            // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
            let (vhi, vlo) = split(c.value_two);
            vec![
                (LD_W_ABS, hi_off, Fall, Fall),
                (ALU_AND_K, hi, Fall, Fall),
                (JEQ_K, vhi, Fall, Fail),
                (LD_W_ABS, lo_off, Fall, Fall),
                (ALU_AND_K, lo, Fall, Fall),
                (JEQ_K, vlo, Ok, Fail),
            ]
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => vec![
            (LD_W_ABS, hi_off, Fall, Fall),
            (JGT_K, hi, Ok, Fall),
            (JEQ_K, hi, Fall, Fail),
            (LD_W_ABS, lo_off, Fall, Fall),
            (
                if c.op == Op::ScmpCmpGt { JGT_K } else { JGE_K },
                lo,
                Ok,
                Fail,
            ),
        ],
        Op::ScmpCmpLt | Op::ScmpCmpLe => vec![
            (LD_W_ABS, hi_off, Fall, Fall),
            (JGT_K, hi, Fail, Fall),
            (JEQ_K, hi, Fall, Ok),
            (LD_W_ABS, lo_off, Fall, Fall),
            (
                if c.op == Op::ScmpCmpLt { JGE_K } else { JGT_K },
                lo,
                Fail,
                Ok,
            ),
        ],
    }
}

/// The block of a syscall with rules: allow when a rule holds, else `default`. Entered with
/// the syscall number already known to match; ends in a return on every path.
fn rules_block(
    rules: &[Vec<Cond>],
    allow: u32,
    default: u32,
) -> Option<Vec<seccompiler::sock_filter>> {
    let mut out = Vec::new();
    for rule in rules {
        let codes: Vec<Vec<(u16, u32, To, To)>> = rule.iter().map(cond_code).collect();
        let rule_len: usize = codes.iter().map(Vec::len).sum::<usize>() + 1;
        let rule_end = out.len() + rule_len;
        for code in &codes {
            let cond_end = out.len() + code.len();
            for (op, k, t, f) in code {
                let here = out.len();
                let off = |to: To| -> Option<u8> {
                    let target = match to {
                        To::Fall => here + 1,
                        To::Ok => cond_end,
                        To::Fail => rule_end,
                    };
                    u8::try_from(target - here - 1).ok()
                };
                if *op == JEQ_K || *op == JGT_K || *op == JGE_K {
                    out.push(jump(*op, *k, off(*t)?, off(*f)?));
                } else {
                    out.push(stmt(*op, *k));
                }
            }
        }
        out.push(stmt(RET_K, allow));
    }
    out.push(stmt(RET_K, default));
    Some(out)
}

/// A single, compact program for the usual shape of profile (Docker's): every syscall either
/// gets an action whatever its arguments, or is allowed only under conditions. Consecutive
/// syscall numbers with the same answer share one range test, so Docker's profile takes a few
/// hundred instructions where the generic path takes about 1500 (the kernel translates and
/// JIT-compiles the program at install time, on the container's start path, and runs it on
/// every syscall). `None`: the profile has another shape (the generic path compiles it).
fn compile_compact(
    arch: Arch,
    profile: &LinuxSeccomp,
    default: &SeccompAction,
    default_errno: u32,
) -> Result<Option<BpfProgram>> {
    let default_ret = u32::from(default.clone());
    let allow = u32::from(SeccompAction::Allow);
    let mut fixed: BTreeMap<i64, u32> = BTreeMap::new();
    let mut allowed: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    let mut ruled: BTreeMap<i64, Vec<Vec<Cond>>> = BTreeMap::new();
    for s in profile.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret(), default_errno)?;
        if &act == default {
            continue;
        }
        let mut conds = Vec::new();
        for a in s.args().iter().flatten() {
            let index = u32::try_from(a.index())
                .ok()
                .filter(|i| *i <= 5)
                .ok_or_else(|| SeccompError::Compile(format!("argument index {}", a.index())))?;
            conds.push(Cond {
                index,
                op: a.op(),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        for name in s.names() {
            let Some(nr) = arch.syscall_number(name) else {
                continue;
            };
            match (act == SeccompAction::Allow, conds.is_empty()) {
                (true, true) => {
                    allowed.insert(nr);
                }
                (true, false) => ruled.entry(nr).or_default().push(conds.clone()),
                (false, true) => {
                    let ret = u32::from(act.clone());
                    if fixed.insert(nr, ret).is_some_and(|prev| prev != ret) {
                        return Ok(None);
                    }
                }
                (false, false) => return Ok(None),
            }
        }
    }
    // Per number: a fixed non-allow action wins (the most restrictive answer, as with a
    // stack of filters), then an unconditional allow, then the rules.
    let mut nrs: Vec<i64> = fixed
        .keys()
        .chain(allowed.iter())
        .chain(ruled.keys())
        .copied()
        .collect();
    nrs.sort_unstable();
    nrs.dedup();
    let verdict = |nr: i64| {
        if let Some(r) = fixed.get(&nr) {
            Verdict::Ret(*r)
        } else if allowed.contains(&nr) {
            Verdict::Ret(allow)
        } else {
            Verdict::Rules
        }
    };
    // Runs of consecutive numbers with the same fixed answer; a ruled number is a run alone.
    let mut runs: Vec<(u32, u32, Verdict)> = Vec::new();
    for nr in nrs {
        let Ok(n) = u32::try_from(nr) else {
            return Ok(None);
        };
        let v = verdict(nr);
        match runs.last_mut() {
            Some((_, hi, last)) if *hi + 1 == n && *last == v && v != Verdict::Rules => *hi = n,
            _ => runs.push((n, n, v)),
        }
    }
    let mut prog = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JEQ_K, arch.audit(), 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, DATA_NR),
    ];
    // Numbers ascending: past a run (above its top) go on to the next; inside its span the
    // answer is the run's, below its start (a gap) the default.
    for (lo, hi, v) in &runs {
        let body = match v {
            Verdict::Ret(r) => vec![stmt(RET_K, *r)],
            Verdict::Rules => {
                let Some(b) = rules_block(&ruled[&i64::from(*lo)], allow, default_ret) else {
                    return Ok(None);
                };
                b
            }
        };
        // jgt hi → past this block; jge lo → body, else → the default return after it.
        let Ok(skip) = u8::try_from(body.len() + 2) else {
            return Ok(None);
        };
        let Ok(to_default) = u8::try_from(body.len()) else {
            return Ok(None);
        };
        prog.push(jump(JGT_K, *hi, skip, 0));
        prog.push(jump(JGE_K, *lo, 0, to_default));
        prog.extend(body);
        prog.push(stmt(RET_K, default_ret));
    }
    prog.push(stmt(RET_K, default_ret));
    Ok(Some(prog))
}

/// Compiles an OCI seccomp profile into BPF programs for the host, to be installed in order.
/// Syscall names unknown on this architecture are skipped, as runc does.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    compile_for(Arch::HOST, profile)
}

/// Compiles an OCI seccomp profile into BPF programs for `arch`.
pub fn compile_for(arch: Arch, profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default_errno = profile.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(profile.default_action(), None, default_errno)?;
    if let Some(p) = compile_compact(arch, profile, &default, default_errno)? {
        return Ok(vec![p]);
    }
    compile_stacked(arch, profile, &default, default_errno)
}

/// The generic path: a stack of seccompiler filters (see the module docs).
fn compile_stacked(
    arch: Arch,
    profile: &LinuxSeccomp,
    default: &SeccompAction,
    default_errno: u32,
) -> Result<Vec<BpfProgram>> {
    let default = default.clone();
    // Base filter: listed syscalls are allowed (with their conditions when allowed by rule),
    // everything else gets the default action.
    let mut base: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut other: BTreeMap<String, (SeccompAction, BTreeMap<i64, Vec<SeccompRule>>)> =
        BTreeMap::new();
    let mut base_unconditional: Vec<i64> = Vec::new();
    for s in profile.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret(), default_errno)?;
        let conds = conditions(s)?;
        for name in s.names() {
            let Some(nr) = arch.syscall_number(name) else {
                continue;
            };
            if act == default {
                continue;
            }
            if act == SeccompAction::Allow {
                let rules = base.entry(nr).or_default();
                if conds.is_empty() {
                    base_unconditional.push(nr);
                } else {
                    rules.push(
                        SeccompRule::new(conds.clone())
                            .map_err(|e| SeccompError::Compile(e.to_string()))?,
                    );
                }
            } else {
                base_unconditional.push(nr);
                base.entry(nr).or_default();
                let entry = other
                    .entry(format!("{act:?}"))
                    .or_insert_with(|| (act.clone(), BTreeMap::new()));
                let rules = entry.1.entry(nr).or_default();
                if !conds.is_empty() {
                    rules.push(
                        SeccompRule::new(conds.clone())
                            .map_err(|e| SeccompError::Compile(e.to_string()))?,
                    );
                }
            }
        }
    }
    // An unconditional rule wins over conditional ones for the same syscall.
    for nr in base_unconditional {
        base.insert(nr, Vec::new());
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        let f = SeccompFilter::new(base, default, SeccompAction::Allow, arch.target())
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        programs.push(BpfProgram::try_from(f).map_err(|e| SeccompError::Compile(e.to_string()))?);
    }
    for (_, (act, rules)) in other {
        if act == SeccompAction::Allow || rules.is_empty() {
            continue;
        }
        let f = SeccompFilter::new(rules, SeccompAction::Allow, act, arch.target())
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        programs.push(BpfProgram::try_from(f).map_err(|e| SeccompError::Compile(e.to_string()))?);
    }
    Ok(programs)
}

/// Installs compiled filters on the calling thread. Unlike `seccompiler::apply_filter` this
/// does not set no_new_privs (Docker leaves it off): the caller must hold CAP_SYS_ADMIN, or
/// have set no_new_privs itself.
pub fn install(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len())
                .map_err(|_| SeccompError::Install("filter too long".into()))?,
            filter: p.as_ptr().cast_mut().cast::<libc::sock_filter>(),
        };
        // SAFETY: prog points to a valid BPF program that outlives the call; the kernel copies
        // it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(SeccompError::Install(
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    fn nr(arch: Arch, name: &str) -> u32 {
        u32::try_from(arch.syscall_number(name).unwrap()).unwrap()
    }

    #[test]
    fn seccomp_default_profile_compiles_for_both_architectures() {
        let caps: Vec<String> = vec!["CAP_CHOWN".into()];
        for arch in ARCHES {
            let p = default_profile_for(arch, &caps);
            let progs = compile_for(arch, &p).unwrap();
            assert_eq!(progs.len(), 1, "{arch:?}: one compact program");
            assert!(
                progs[0].len() < 400,
                "{arch:?}: {} instructions",
                progs[0].len()
            );
            let stacked = compile_stacked(arch, &p, &SeccompAction::Errno(1), 1).unwrap();
            assert_eq!(
                stacked.len(),
                2,
                "{arch:?}: base filter + ENOSYS filter for clone3"
            );
            assert!(arch.syscall_number("no_such_call").is_none());
        }
        assert_eq!(Arch::X86_64.syscall_number("read"), Some(0));
        assert_eq!(Arch::Aarch64.syscall_number("read"), Some(63));
        assert_eq!(Arch::X86_64.syscall_number("openat"), Some(257));
        assert_eq!(Arch::Aarch64.syscall_number("openat"), Some(56));
        assert_eq!(Arch::Aarch64.syscall_number("newfstatat"), Some(79));
        assert_eq!(Arch::X86_64.syscall_number("newfstatat"), Some(262));
        // Every allowed name exists on x86_64; on aarch64 only the legacy calls that the
        // generic syscall table replaced by their `*at`/newer forms are missing.
        let missing = |arch: Arch| -> Vec<&str> {
            ALLOWED
                .split_whitespace()
                .filter(|n| arch.syscall_number(n).is_none())
                .collect()
        };
        assert!(
            missing(Arch::X86_64).is_empty(),
            "{:?}",
            missing(Arch::X86_64)
        );
        assert_eq!(
            missing(Arch::Aarch64),
            AARCH64_ABSENT.split_whitespace().collect::<Vec<_>>()
        );
    }

    /// Names of [`ALLOWED`] that aarch64 does not have (in the order of the list).
    const AARCH64_ABSENT: &str = "access alarm chmod chown creat dup2 epoll_create \
        epoll_ctl_old epoll_wait epoll_wait_old eventfd fork futimesat get_thread_area getdents \
        getpgrp inotify_init lchown link lstat mkdir mknod open pause pipe poll readlink rename \
        rmdir select set_thread_area signalfd stat symlink time unlink utime utimes vfork \
        arch_prctl modify_ldt";

    #[test]
    fn seccomp_program_kills_a_foreign_architecture() {
        for arch in ARCHES {
            let p = compile_for(arch, &default_profile_for(arch, &[])).unwrap();
            for other in ARCHES.into_iter().filter(|a| *a != arch) {
                let read = nr(other, "read");
                assert_eq!(
                    run_as(&p[0], other, read, [0; 6]),
                    libc::SECCOMP_RET_KILL_PROCESS,
                    "{arch:?} program, {other:?} call"
                );
            }
        }
    }

    /// Runs a classic BPF seccomp program on (nr, args) for a call made on the host's
    /// architecture.
    fn run(prog: &[seccompiler::sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        run_as(prog, Arch::HOST, nr, args)
    }

    /// Runs a classic BPF seccomp program on (nr, args) for a call made on `arch`.
    fn run_as(prog: &[seccompiler::sock_filter], arch: Arch, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch.audit();
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = (*a & 0xffff_ffff) as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &prog[pc];
            pc += 1;
            let jmp = |cond: bool| usize::from(if cond { ins.jt } else { ins.jf });
            match ins.code {
                LD_W_ABS => acc = data[(ins.k / 4) as usize],
                ALU_AND_K => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                JEQ_K => pc += jmp(acc == ins.k),
                JGT_K => pc += jmp(acc > ins.k),
                JGE_K => pc += jmp(acc >= ins.k),
                0x45 => pc += jmp(acc & ins.k != 0),
                RET_K => return ins.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// The answer of a stack of filters: the most restrictive one (the kernel's order).
    fn run_stack(progs: &[BpfProgram], arch: Arch, nr: u32, args: [u64; 6]) -> u32 {
        progs
            .iter()
            .map(|p| run_as(p, arch, nr, args))
            .min_by_key(|r| (r & 0xffff_0000).cast_signed())
            .unwrap()
    }

    fn args_samples() -> Vec<[u64; 6]> {
        let firsts = [
            0,
            1,
            8,
            40,
            41,
            0x11,
            0x2_0000,
            0x2_0008,
            0x2_0011,
            0x1000_0000,
            0x7E02_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0028,
            0xffff_ffff_ffff_ffff,
        ];
        firsts.iter().map(|a| [*a, 7, 0, 0, 0, 0]).collect()
    }

    #[test]
    fn seccomp_compact_program_answers_like_the_filter_stack() {
        let cap_sets: [&[&str]; 3] = [
            &["CAP_CHOWN", "CAP_KILL"],
            &["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"],
            &[],
        ];
        for arch in ARCHES {
            for caps in cap_sets {
                let caps: Vec<String> = caps.iter().map(|c| (*c).to_string()).collect();
                let p = default_profile_for(arch, &caps);
                let compact = compile_for(arch, &p).unwrap();
                assert_eq!(compact.len(), 1);
                let stacked = compile_stacked(arch, &p, &SeccompAction::Errno(1), 1).unwrap();
                for n in (0..480).chain([0x4000_0000, 0x4000_0001]) {
                    for args in args_samples() {
                        assert_eq!(
                            run_as(&compact[0], arch, n, args),
                            run_stack(&stacked, arch, n, args),
                            "{arch:?} caps {caps:?} nr {n} args {args:x?}"
                        );
                    }
                }
                // Spot checks of what Docker's profile means.
                let read = run_as(&compact[0], arch, nr(arch, "read"), [0; 6]);
                assert_eq!(read, libc::SECCOMP_RET_ALLOW);
                let vsock = run_as(&compact[0], arch, nr(arch, "socket"), [40, 1, 0, 0, 0, 0]);
                assert_eq!(vsock, libc::SECCOMP_RET_ERRNO | 1);
                let inet = run_as(&compact[0], arch, nr(arch, "socket"), [2, 1, 0, 0, 0, 0]);
                assert_eq!(inet, libc::SECCOMP_RET_ALLOW);
                let c3 = run_as(&compact[0], arch, nr(arch, "clone3"), [0; 6]);
                if caps.is_empty() {
                    assert_eq!(c3, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
                }
                let mount = run_as(&compact[0], arch, nr(arch, "mount"), [0; 6]);
                let admin = caps.iter().any(|c| c == "CAP_SYS_ADMIN");
                assert_eq!(mount == libc::SECCOMP_RET_ALLOW, admin, "{arch:?} mount");
            }
        }
    }

    #[test]
    fn seccomp_compact_comparisons_match_the_generic_path() {
        use LinuxSeccompOperator as Op;
        let values = [
            0_u64,
            7,
            8,
            9,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0008,
            u64::MAX,
        ];
        for op in [
            Op::ScmpCmpEq,
            Op::ScmpCmpNe,
            Op::ScmpCmpLt,
            Op::ScmpCmpLe,
            Op::ScmpCmpGt,
            Op::ScmpCmpGe,
            Op::ScmpCmpMaskedEq,
        ] {
            for v in [8_u64, 0x1_0000_0008] {
                let mut s = syscall(&["personality"], LinuxSeccompAction::ScmpActAllow);
                s.set_args(Some(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(1_usize)
                        .value(v)
                        .value_two(8_u64)
                        .op(op)
                        .build()
                        .unwrap(),
                ]));
                let p = LinuxSeccompBuilder::default()
                    .default_action(LinuxSeccompAction::ScmpActErrno)
                    .default_errno_ret(1_u32)
                    .syscalls(vec![
                        syscall(&["read", "write"], LinuxSeccompAction::ScmpActAllow),
                        s,
                    ])
                    .build()
                    .unwrap();
                let compact = compile(&p).unwrap();
                assert_eq!(compact.len(), 1);
                let stacked = compile_stacked(Arch::HOST, &p, &SeccompAction::Errno(1), 1).unwrap();
                let nr = nr(Arch::HOST, "personality");
                for a in values {
                    assert_eq!(
                        run(&compact[0], nr, [0, a, 0, 0, 0, 0]),
                        run_stack(&stacked, Arch::HOST, nr, [0, a, 0, 0, 0, 0]),
                        "{op:?} {v:#x} arg {a:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn seccomp_sys_admin_opens_mount() {
        let p = default_profile(&["CAP_SYS_ADMIN".to_string()]);
        let names: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(oci_spec::runtime::LinuxSyscall::names)
            .collect();
        assert!(names.iter().any(|n| *n == "mount"));
        let p = default_profile(&[]);
        let names: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(oci_spec::runtime::LinuxSyscall::names)
            .collect();
        assert!(!names.iter().any(|n| *n == "mount"));
    }
}
