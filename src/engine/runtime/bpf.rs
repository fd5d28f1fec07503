//! The device allowlist on cgroup v2: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`.
//!
//! cgroup v1 has a `devices` controller with `devices.allow`/`devices.deny` files. cgroup v2
//! has none: the kernel instead runs the eBPF programs attached (`BPF_PROG_ATTACH`, attach
//! type `BPF_CGROUP_DEVICE`) to a process's cgroup and its ancestors whenever the process
//! opens or `mknod`s a device node. The program gets a `struct bpf_cgroup_dev_ctx`:
//!
//! ```text
//! offset 0: u32 access_type = (access << 16) | type   type: 1 block, 2 char
//!                                                     access: 1 mknod, 2 read, 4 write
//! offset 4: u32 major
//! offset 8: u32 minor
//! ```
//!
//! and returns 1 (allow) or 0 (deny, the caller gets `EPERM`). With `BPF_F_ALLOW_MULTI`, every
//! program of the cgroup and its ancestors must allow.
//!
//! [`program`] compiles the OCI rule list (as v1 would apply it: in order, the last matching
//! rule decides; nothing matching denies) into eBPF instructions by hand: each instruction is
//! 8 bytes — opcode, destination and source register nibbles, a 16-bit jump offset and a
//! 32-bit immediate. Rules are emitted from last to first, each a run of "if this field
//! differs, jump to the next rule" tests ending in `r0 = allow; exit`. [`attach`] loads the
//! program with `bpf(BPF_PROG_LOAD)` and attaches it to the cgroup directory's descriptor.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::cgroups::{CgroupError, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Jump offset (instructions after the next one).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.code, self.regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }
}

// Opcodes (class | operation | source).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// Access bits of an OCI access string (`rwm`).
fn access_bits(a: Option<&String>) -> i32 {
    let a = a.map_or("rwm", String::as_str);
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        };
    }
    bits
}

/// Compiles the rules into a device program (see the module docs).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut out = vec![
        ins(LDX_MEM_W, 2, 1, 0, 0),
        ins(ALU64_AND_K, 2, 0, 0, 0xffff),
        ins(LDX_MEM_W, 3, 1, 0, 0),
        ins(ALU64_RSH_K, 3, 0, 0, 16),
        ins(LDX_MEM_W, 4, 1, 4, 0),
        ins(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each test jumps past the rest of this block when the field does not match; the
        // offsets are filled in once the block's length is known (marked with off = -1).
        match r.typ() {
            Some(LinuxDeviceType::C) => block.push(ins(JMP_JNE_K, 2, 0, -1, DEV_CHAR)),
            Some(LinuxDeviceType::B) => block.push(ins(JMP_JNE_K, 2, 0, -1, DEV_BLOCK)),
            Some(LinuxDeviceType::A) | None => {}
            Some(t) => {
                return Err(CgroupError::Invalid(format!(
                    "device rule type {t:?} has no cgroup v2 equivalent"
                )));
            }
        }
        let bits = access_bits(r.access().as_ref());
        if bits != 7 {
            // Allow: every requested bit must be allowed. Deny: some requested bit is denied.
            block.push(ins(ALU64_MOV_X, 6, 3, 0, 0));
            if r.allow() {
                block.push(ins(ALU64_AND_K, 6, 0, 0, !bits & 7));
                block.push(ins(JMP_JNE_K, 6, 0, -1, 0));
            } else {
                block.push(ins(ALU64_AND_K, 6, 0, 0, bits));
                // Jump when (requested & denied) == 0: JEQ 0.
                block.push(ins(JMP_JEQ_K, 6, 0, -1, 0));
            }
        }
        let num = |v: i64, what: &str| {
            i32::try_from(v)
                .map_err(|_| CgroupError::Invalid(format!("device {what} {v} is out of range")))
        };
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            block.push(ins(JMP_JNE_K, 4, 0, -1, num(m, "major")?));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            block.push(ins(JMP_JNE_K, 5, 0, -1, num(m, "minor")?));
        }
        block.push(ins(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow())));
        block.push(ins(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        let mut conditional = false;
        for (i, b) in block.iter_mut().enumerate() {
            if b.off == -1 {
                b.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
                conditional = true;
            }
        }
        out.extend(block);
        if !conditional {
            // A rule matching everything decides; the verifier refuses unreachable code
            // after it.
            return Ok(out);
        }
    }
    out.push(ins(ALU64_MOV_K, 0, 0, 0, 0));
    out.push(ins(JMP_EXIT, 0, 0, 0, 0));
    Ok(out)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    // SAFETY: bpf(2) reads (and for some commands writes) at most `size` bytes of `attr`,
    // which is a live, zero-padded buffer of that size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        i32::try_from(r).map_err(|_| std::io::Error::other("bpf returned a bad descriptor"))
    }
}

/// Loads a device program; returns its descriptor.
pub fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let code: Vec<u8> = prog.iter().flat_map(|i| i.to_bytes()).collect();
    let license = b"GPL\0";
    let count = u32::try_from(prog.len())
        .map_err(|_| CgroupError::Invalid("device program too long".into()))?;
    let try_load = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_le_bytes());
        attr[4..8].copy_from_slice(&count.to_le_bytes());
        attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_le_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
        if let Some(log) = log {
            attr[24..28].copy_from_slice(&1u32.to_le_bytes()); // log_level
            attr[28..32].copy_from_slice(&u32::try_from(log.len()).unwrap_or(0).to_le_bytes());
            attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_le_bytes());
        }
        attr[48..56].copy_from_slice(b"tug_dev\0");
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match try_load(None) {
        Ok(fd) => fd,
        Err(e) => {
            // Load again with the verifier's log, for the error message.
            let mut log = vec![0u8; 1 << 20];
            let _ = try_load(Some(&mut log));
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let tail: String = text
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(CgroupError::Invalid(format!(
                "cannot load the device program: {e}: {tail}"
            )));
        }
    };
    // SAFETY: bpf returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Compiles `rules`, loads the program and attaches it to the cgroup v2 directory `dir`.
/// The attachment holds the program: it goes away with the cgroup.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = load(&program(rules)?)?;
    let cg = std::fs::File::open(dir).map_err(|source| CgroupError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cg.as_raw_fd() as u32).to_le_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_le_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_le_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_le_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| CgroupError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Whether `dir` is on a cgroup2 file system (where device programs can be attached).
#[must_use]
pub fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs the program on one request with a tiny interpreter of the opcodes it uses.
    fn eval(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i64::from(i.imm) as u64;
            pc += 1;
            match i.code {
                LDX_MEM_W => r[d] = u64::from(ctx[(i.off / 4) as usize]),
                ALU64_AND_K => r[d] &= imm,
                ALU64_RSH_K => r[d] >>= imm,
                ALU64_MOV_K => r[d] = imm,
                ALU64_MOV_X => r[d] = r[s],
                JMP_JNE_K => {
                    if r[d] != imm {
                        pc += i.off as usize;
                    }
                }
                JMP_JEQ_K => {
                    if r[d] == imm {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        t: LinuxDeviceType,
        maj: Option<i64>,
        min: Option<i64>,
        a: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(t)
            .access(a);
        if let Some(m) = maj {
            b = b.major(m);
        }
        if let Some(m) = min {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn cgroups_device_program_follows_the_rules() {
        use LinuxDeviceType::{A, B, C};
        let rules = vec![
            rule(false, A, None, None, "rwm"),
            rule(true, C, None, None, "m"),
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(true, C, Some(136), None, "rwm"),
            rule(true, B, Some(7), Some(0), "r"),
        ];
        let p = program(&rules).unwrap();
        let (r, w, m) = (2, 4, 1);
        assert_eq!(eval(&p, 2, r | w, 1, 3), 1, "/dev/null");
        assert_eq!(eval(&p, 2, r, 1, 1), 0, "/dev/mem");
        assert_eq!(eval(&p, 2, m, 1, 1), 1, "mknod of any char device");
        assert_eq!(eval(&p, 2, r | w, 136, 42), 1, "a pty");
        assert_eq!(eval(&p, 1, r, 7, 0), 1, "loop0 read");
        assert_eq!(eval(&p, 1, w, 7, 0), 0, "loop0 write");
        assert_eq!(eval(&p, 1, m, 8, 0), 0, "block mknod not allowed here");
        // A later deny wins over an earlier allow.
        let mut rules2 = rules.clone();
        rules2.push(rule(false, C, Some(1), Some(3), "w"));
        let p = program(&rules2).unwrap();
        assert_eq!(eval(&p, 2, r, 1, 3), 1);
        assert_eq!(eval(&p, 2, w, 1, 3), 0);
        // Nothing matching denies; allow-all allows.
        assert_eq!(eval(&program(&[]).unwrap(), 2, r, 1, 3), 0);
        assert_eq!(
            eval(
                &program(&[rule(true, A, None, None, "rwm")]).unwrap(),
                1,
                r,
                8,
                0
            ),
            1
        );
    }
}
