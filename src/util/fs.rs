//! Files replaced atomically: the one way tug writes a file that someone may be reading.
//!
//! The content goes to a new file under a temporary name in the same directory, which is then
//! renamed over the target: a reader sees the old content or the new, never a torn file, and
//! a failed write removes its temporary file and leaves the old content. The temporary name
//! is `.<name>.<pid>-<counter>-<random>.tmp`, unique across processes and across the threads
//! of one process (a name by pid alone makes two threads of one command collide).
//!
//! How much survives a power loss is the caller's choice, named at each call
//! ([`Durability`]): nothing more than a crash-consistent rename, the content (`fsync` of the
//! file before the rename), or the content and the rename itself (then an `fsync` of the
//! directory too).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What of an atomic write survives a power loss (a crash of tug alone loses nothing in any
/// case: the rename is atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No `fsync`: for files derived from others and rewritten when missing or stale. After
    /// a power loss the file may be the old one or empty.
    None,
    /// The file's content is flushed before the rename: after a power loss the file is the
    /// old one or the new one, never empty.
    File,
    /// The content, then the directory after the rename: once the call returns, the new
    /// content is what the file holds after a power loss.
    FileAndDir,
}

/// A temporary name next to `path`, unique in this process and across processes:
/// `.<name>.<pid>-<counter>-<random>.tmp`.
#[must_use]
pub fn temp_path(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!(
        ".{name}.{}-{}-{:08x}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    ))
}

/// Writes `bytes` to `path` atomically, the file getting `mode` whatever the umask (see the
/// module docs).
///
/// # Errors
/// The temporary file cannot be created, written, flushed or renamed, or the directory
/// cannot be flushed.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    write_atomic_with(path, mode, durability, |f| f.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill` into the open temporary file (a
/// stream, an owner set with `fchown` before the file appears, …). `fill` may fail with the
/// caller's own error type.
///
/// # Errors
/// As [`write_atomic`], and what `fill` returns.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    mode: u32,
    durability: Durability,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_path(path);
    let result = (|| -> Result<(), E> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have dropped bits of `mode`.
        if mode & 0o077 != 0 {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        fill(&mut f)?;
        if durability != Durability::None {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if durability == Durability::FileAndDir {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Flushes a directory's entries (a rename, a new name) to disk.
///
/// # Errors
/// The directory cannot be opened or flushed.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_replace_with_the_mode_asked_and_leave_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_atomic(&p, b"1", 0o600, Durability::None).unwrap();
        assert_eq!(mode(&p), 0o600);
        write_atomic(&p, b"2", 0o644, Durability::FileAndDir).unwrap();
        assert_eq!(mode(&p), 0o644);
        assert_eq!(fs::read(&p).unwrap(), b"2");
        write_atomic(&p, b"3", 0o640, Durability::File).unwrap();
        assert_eq!((mode(&p), fs::read(&p).unwrap()), (0o640, b"3".to_vec()));
        assert_ne!(temp_path(&p), temp_path(&p));
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_content_and_removes_the_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"old", 0o600, Durability::File).unwrap();
        let e = write_atomic_with(&p, 0o600, Durability::File, |f| -> io::Result<()> {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        // A target whose directory is gone fails without leaving anything.
        let gone = t.path().join("missing/f");
        assert!(write_atomic(&gone, b"x", 0o600, Durability::None).is_err());
    }

    #[test]
    fn threads_writing_one_file_never_share_a_temporary_name() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, format!("{i}").as_bytes(), 0o600, Durability::None)
                            .unwrap();
                    }
                });
            }
        });
        let last = fs::read_to_string(&p).unwrap();
        assert!(last.parse::<u32>().is_ok_and(|n| n < 8), "{last}");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
