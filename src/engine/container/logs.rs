//! Container logs, one file per container across restarts, in the CRI log format that
//! Kubernetes runtimes use: one record per line,
//! `<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <text>`, where `P` marks a partial line
//! (a chunk without newline, cut at 16 KiB or at exit) and `F` a full one.
//!
//! The writer rotates by size: when `container.log` would exceed the cap it is renamed to
//! `container.log.1` (replacing the previous one), so at most twice the cap is kept. Readers
//! read the rotated file first, then the current one.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};

/// Default size cap of one log file.
pub const DEFAULT_MAX: u64 = 10 << 20;
const MAX_LINE: usize = 16 << 10;

/// The stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends records to a container's log, rotating by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, max: u64) -> std::io::Result<LogWriter> {
        let file = crate::engine::private::open_options()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max: max.max(4096),
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn record(&mut self, stream: Stream, partial: bool, text: &[u8]) {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(super::state::now().as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.name().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max {
            self.rotate();
        }
        if let Some(f) = &mut self.file
            && f.write_all(&line).is_ok()
        {
            self.size += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension("log.1");
        let _ = fs::rename(&self.path, old);
        self.file = crate::engine::private::open_options()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }

    /// Feeds bytes read from a stream; complete lines become records.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut text = &buf[start..end];
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
            let owned = text.to_vec();
            self.record(stream, false, &owned);
            start = end + 1;
        }
        let rest = buf[start..].to_vec();
        if rest.len() >= MAX_LINE {
            self.record(stream, true, &rest);
        } else {
            self.pending[i] = rest;
        }
    }

    /// Writes out partial lines (at exit).
    pub fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.record(stream, true, &rest);
            }
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// RFC 3339 timestamp.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// A partial line (no newline after it).
    pub partial: bool,
    /// The text.
    pub text: String,
}

/// Parses one log line.
#[must_use]
pub fn parse(line: &str) -> Option<LogRecord> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?.to_string();
    let stream = it.next()?.to_string();
    let tag = it.next()?;
    let text = it.next().unwrap_or("").to_string();
    Some(LogRecord {
        time,
        stream,
        partial: tag == "P",
        text,
    })
}

/// Reads every complete record of the log at `path` (rotated file first).
#[must_use]
pub fn read_all(path: &Path) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for p in [path.with_extension("log.1"), path.to_path_buf()] {
        let Ok(f) = File::open(&p) else { continue };
        let mut r = BufReader::new(f);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n')
                && let Some(rec) = parse(line.trim_end_matches('\n'))
            {
                out.push(rec);
            }
            line.clear();
        }
    }
    out
}

/// Reads the complete records of the rotated file (`container.log.1`) only.
#[must_use]
pub fn read_rotated(path: &Path) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let Ok(f) = File::open(path.with_extension("log.1")) else {
        return out;
    };
    let mut r = BufReader::new(f);
    let mut line = String::new();
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        if line.ends_with('\n')
            && let Some(rec) = parse(line.trim_end_matches('\n'))
        {
            out.push(rec);
        }
        line.clear();
    }
    out
}

/// Follows a log: yields records appended after `offset` bytes of the current file.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    ino: u64,
    buf: String,
}

impl Follower {
    /// Starts at the beginning of the current file.
    #[must_use]
    pub fn at_start(path: &Path) -> Follower {
        use std::os::unix::fs::MetadataExt;
        Follower {
            path: path.to_path_buf(),
            offset: 0,
            ino: fs::metadata(path).map_or(0, |m| m.ino()),
            buf: String::new(),
        }
    }

    /// Starts following at the current end of the log.
    #[must_use]
    pub fn at_end(path: &Path) -> Follower {
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(path).ok();
        Follower {
            path: path.to_path_buf(),
            offset: md.as_ref().map_or(0, fs::Metadata::len),
            ino: md.map_or(0, |m| m.ino()),
            buf: String::new(),
        }
    }

    /// New complete records since the last call.
    pub fn poll(&mut self) -> Vec<LogRecord> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let Ok(md) = fs::metadata(&self.path) else {
            return out;
        };
        if md.ino() != self.ino {
            // Rotated: the rest of the old file is in .1, then start the new one from 0.
            let old = self.path.with_extension("log.1");
            if let Ok(mut f) = File::open(&old)
                && f.seek(SeekFrom::Start(self.offset)).is_ok()
            {
                let _ = f.read_to_string(&mut self.buf);
            }
            self.ino = md.ino();
            self.offset = 0;
        }
        if let Ok(mut f) = File::open(&self.path)
            && f.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut chunk = String::new();
            if let Ok(n) = f.read_to_string(&mut chunk) {
                self.offset += n as u64;
                self.buf.push_str(&chunk);
            }
        }
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            if let Some(r) = parse(line.trim_end_matches('\n')) {
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_logs_records_and_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("container.log");
        let mut w = LogWriter::open(&p, 4096).unwrap();
        w.write(Stream::Stdout, b"hello\nwor");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"ld\n");
        w.write(Stream::Stdout, b"tail");
        w.flush();
        let r = read_all(&p);
        let texts: Vec<(&str, &str, bool)> = r
            .iter()
            .map(|r| (r.stream.as_str(), r.text.as_str(), r.partial))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("stdout", "hello", false),
                ("stderr", "oops", false),
                ("stdout", "world", false),
                ("stdout", "tail", true)
            ]
        );
        for i in 0..200 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        assert!(p.with_extension("log.1").exists());
        let total = fs::metadata(&p).unwrap().len()
            + fs::metadata(p.with_extension("log.1")).unwrap().len();
        assert!(total <= 2 * 4096, "{total}");
        let all = read_all(&p);
        assert_eq!(all.last().unwrap().text, "line 199");
    }
}
