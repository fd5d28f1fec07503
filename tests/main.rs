//! tug's integration tests: one binary, one module per area.

mod cli;
mod common;
mod container;
mod image;
mod plan;
