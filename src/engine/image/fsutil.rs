//! Small file-system helpers for the store: atomic writes, hashing readers and writers, and the
//! store locks.
//!
//! An atomic write puts the bytes in a temporary file in the destination's directory, flushes
//! them to disk (`fsync`), renames the file over the destination, and flushes the directory, so
//! a reader sees either the old or the new content and a crash leaves at most a temporary file
//! that the next command removes.
//!
//! Locks are `flock(2)` locks on files in the store: the kernel drops them when the process
//! dies, so a killed tug never leaves a stale lock behind.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use super::{Error, Result};

/// Wraps an `io::Error` with what was being done.
pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A random suffix for temporary names.
pub(crate) fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Writes `data` to `path` atomically (private temp file + fsync + rename + fsync of the
/// directory); the file is `0600`.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::util::fs::write_atomic(
        path,
        data,
        crate::engine::private::FILE_MODE,
        crate::util::fs::Durability::FileAndDir,
    )
    .map_err(io_ctx(format!("cannot write {}", path.display())))
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::util::fs::sync_dir(dir).map_err(io_ctx(format!("cannot sync {}", dir.display())))
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A reader that hashes (sha256) and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Returns (`sha256:<hex>`, bytes read, inner reader) without reading further.
    pub(crate) fn into_parts(self) -> (String, u64, R) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
            self.inner,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Returns the inner writer, `sha256:<hex>` and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A held `flock` on a lock file; released on drop (or when the process dies).
pub(crate) struct LockGuard {
    _lock: Flock<File>,
}

/// Which kind of lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

/// Takes a lock on `path` (created if missing), waiting for it.
pub(crate) fn lock(path: &Path, kind: LockKind) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    let arg = match kind {
        LockKind::Shared => FlockArg::LockShared,
        LockKind::Exclusive => FlockArg::LockExclusive,
    };
    let lock = Flock::lock(file, arg).map_err(|(_, e)| Error::Io {
        context: format!("cannot lock {}", path.display()),
        source: e.into(),
    })?;
    Ok(LockGuard { _lock: lock })
}

/// Takes an exclusive lock on `path` if nobody holds any lock on it; `None` otherwise.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(LockGuard { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::Io {
            context: format!("cannot lock {}", path.display()),
            source: e.into(),
        }),
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    crate::engine::private::open_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_ctx(format!("cannot open lock file {}", path.display())))
}

/// Removes a directory tree if it exists; a missing tree is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_ctx(format!("cannot remove {}", path.display()))(e)),
    }
}

/// Entries of `dir` whose names start with one of `prefixes`.
pub(crate) fn entries_with_prefix(dir: &Path, prefixes: &[&str]) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(std::result::Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            prefixes.iter().any(|p| n.starts_with(p))
        })
        .map(|e| e.path())
        .collect()
}

/// Bytes written between two background flushes of a [`Flusher`].
const FLUSH_EVERY: u64 = 16 << 20;

/// Writes a file system's dirty data to disk on a thread of its own while a layer is being
/// unpacked into it: after every 16 MiB of file content, `syncfs(2)` runs beside the unpack
/// (a signal that arrives while one runs is merged into the next). The unpack itself never
/// waits for the disk, and the `syncfs` that must come before the layer directory becomes
/// visible ([`super::ImageStore::commit_layer`]) finds only the last few MiB left to write
/// instead of the whole layer. Only an optimisation: what makes the layer durable is that
/// final `syncfs`, whose error counts.
pub(crate) struct Flusher {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
    pending: u64,
}

impl Flusher {
    /// Starts the thread for the file system holding `dir` (an fd of it).
    pub(crate) fn start(dir: &std::os::fd::OwnedFd) -> io::Result<Self> {
        let fd = dir.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("layer-flush".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let _ = nix::unistd::syncfs(&fd);
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            pending: 0,
        })
    }

    /// Counts `n` more bytes written; every 16 MiB wakes the thread.
    pub(crate) fn wrote(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= FLUSH_EVERY {
            self.pending = 0;
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the flush it may be running.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Size of the chunks a [`ThreadedReader`] hands over.
const CHUNK: usize = 1 << 20;
/// Chunks a [`ThreadedReader`] may run ahead of its consumer.
const AHEAD: usize = 4;

/// A reader whose inner reader runs on its own thread, a few chunks ahead: one stage of a
/// pipeline (read + hash the compressed stream | decompress + hash | unpack), so each stage
/// gets a core of its own, as `tar -xz` runs gzip in a second process. The 1 MiB buffers
/// travel back to the producer once read, so a long stream costs no allocation and no fresh
/// page faults per chunk. It is also a [`io::BufRead`]: a decompressor on top reads the
/// chunks where they are.
pub(crate) struct ThreadedReader<R: Read + Send + 'static> {
    rx: Option<std::sync::mpsc::Receiver<io::Result<Vec<u8>>>>,
    back: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    handle: Option<std::thread::JoinHandle<R>>,
}

impl<R: Read + Send + 'static> ThreadedReader<R> {
    pub(crate) fn new(mut inner: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            loop {
                let mut buf = spare.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                while filled < CHUNK {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return inner;
                        }
                    }
                }
                if filled == 0 {
                    return inner;
                }
                buf.truncate(filled);
                if tx.send(Ok(buf)).is_err() {
                    return inner;
                }
            }
        });
        Self {
            rx: Some(rx),
            back: Some(back),
            cur: Vec::new(),
            pos: 0,
            handle: Some(handle),
        }
    }

    /// Reads to the end and returns the inner reader.
    pub(crate) fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        self.rx = None;
        self.handle
            .take()
            .ok_or_else(|| io::Error::other("reader finished twice"))?
            .join()
            .map_err(|_| io::Error::other("the reader thread panicked"))
    }
}

impl<R: Read + Send + 'static> io::BufRead for ThreadedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.cur.len() {
            let Some(rx) = &self.rx else { return Ok(&[]) };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    if let Some(back) = &self.back
                        && old.capacity() >= CHUNK
                    {
                        let _ = back.send(old);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.cur.len());
    }
}

impl<R: Read + Send + 'static> Read for ThreadedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = io::BufRead::fill_buf(self)?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl<R: Read + Send + 'static> Drop for ThreadedReader<R> {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next chunk.
        self.rx = None;
        self.back = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
