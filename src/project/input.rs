//! Reading the loader's input files within limits, so that a path that names something other
//! than a small file fails at once with a clear error instead of hanging tug or eating the
//! host's memory.
//!
//! - Env files (`env_file`, `label_file`, `--env-file`, `.env`, an `include`'s `env_file`)
//!   must be regular files of at most [`MAX_ENV_FILE`] (1 MiB). The file is opened without
//!   blocking (`O_NONBLOCK`: a FIFO with no writer does not hang the open) and its type is
//!   checked on the open descriptor before anything is read, so a FIFO or `/dev/zero` is
//!   refused without reading a byte.
//! - Compose files (`-f`, `include`, `extends.file`) may be anything readable — `-f -` reads
//!   standard input and `-f <(…)` a pipe — but at most [`MAX_COMPOSE_FILE`] (16 MiB) is read:
//!   one byte more is an error, so `/dev/zero` costs 16 MiB of memory, not all of it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::error::{ProjectError, Result};

/// Largest env file (1 MiB).
pub const MAX_ENV_FILE: u64 = 1 << 20;
/// Largest compose file (16 MiB).
pub const MAX_COMPOSE_FILE: u64 = 16 << 20;

fn io_error(path: &Path, message: String) -> ProjectError {
    ProjectError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}

/// Reads at most `limit` bytes of `r`; one more is an error naming the limit and `what`.
fn read_limited(mut r: impl Read, path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ProjectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(io_error(
            path,
            format!("larger than {} MiB, the limit for {what}", limit >> 20),
        ));
    }
    Ok(buf)
}

/// Opens `path` for reading only if it is a regular file: the open does not block (a FIFO
/// with no writer is not waited for) and the type is checked on the open descriptor, before
/// anything is read, so a FIFO or a device such as `/dev/zero` is refused at once. The
/// error says what the path is instead (`it is a FIFO, not a regular file`).
///
/// # Errors
/// The file cannot be opened or is not a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let t = f.metadata()?.file_type();
    if t.is_file() {
        return Ok(f);
    }
    let kind = if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a socket"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("it is {kind}, not a regular file"),
    ))
}

/// Reads an env file: a regular file of at most [`MAX_ENV_FILE`].
///
/// # Errors
/// The file cannot be opened, is not a regular file (named: a FIFO, a device, a directory, a
/// socket), or is larger than the limit.
pub fn read_env_file(path: &Path) -> Result<Vec<u8>> {
    let io = |source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = open_regular(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > MAX_ENV_FILE {
        return Err(io_error(
            path,
            format!(
                "{len} bytes, larger than {} MiB, the limit for env files",
                MAX_ENV_FILE >> 20
            ),
        ));
    }
    // A regular file never blocks; the limit also holds for one that grows meanwhile.
    read_limited(f, path, MAX_ENV_FILE, "env files")
}

/// Reads a compose file (`-` is standard input): at most [`MAX_COMPOSE_FILE`].
///
/// # Errors
/// The file cannot be read or is larger than the limit.
pub fn read_compose_file(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        return read_limited(
            std::io::stdin().lock(),
            path,
            MAX_COMPOSE_FILE,
            "compose files",
        );
    }
    let f = File::open(path).map_err(|source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_limited(f, path, MAX_COMPOSE_FILE, "compose files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_env_file_limits() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("ok.env");
        std::fs::write(&ok, "A=1\n").unwrap();
        assert_eq!(read_env_file(&ok).unwrap(), b"A=1\n");
        let big = t.path().join("big.env");
        std::fs::write(&big, vec![b'#'; (MAX_ENV_FILE + 1) as usize]).unwrap();
        let e = read_env_file(&big).unwrap_err().to_string();
        assert!(
            e.contains("big.env") && e.contains("larger than 1 MiB"),
            "{e}"
        );
        let e = read_env_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a device, not a regular file"), "{e}");
        let e = read_env_file(t.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let fifo = t.path().join("fifo.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_env_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
    }

    #[test]
    fn input_compose_file_limit() {
        let e = read_compose_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("larger than 16 MiB, the limit for compose files"),
            "{e}"
        );
    }
}
