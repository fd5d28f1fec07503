//! Small parts every layer shares (compose files, the command line, Dockerfiles, the
//! engine): durations, byte sizes, shell words, and the one atomic file write. This module
//! imports nothing of tug, so any layer may use it without importing another.

pub mod fs;
pub mod shell;
pub mod units;
