//! tug's integration tests: one binary, one module per area.

mod cli;
mod common;
mod config_golden;
mod plan;
