//! The compose project: the model (serde types, no I/O) and the loader pipeline that builds it
//! from compose files.
//!
//! The pipeline has numbered phases, one module each, each tested on its own; [`load`] runs
//! them in this order:
//! 1. [`find`] the files (compose.yaml & co. in the directory or its parents, plus the
//!    override file; `-f`; `COMPOSE_FILE`) and the project directory;
//! 2. the interpolation environment: the shell, over the `--env-file`s or `.env` (read by
//!    [`dotenv`]);
//! 3. [`yaml`]: parse each file with anchors, aliases and merge keys, keeping line and
//!    column;
//! 4. the project name (`-p`, `COMPOSE_PROJECT_NAME`, `name:`, the directory);
//! 5. per file: [`interpolate`] variables, resolve its [`include`]s and its own
//!    [`extends`], then [`merge`] it onto the files before it (`!reset`, `!override`);
//! 6. the [`extends`] whose base is in another file;
//! 7. [`validate`] against tug's JSON schema;
//! 8. [`canonical`] long forms;
//! 9. the typed [`model`] (values compose spells as strings with a fixed meaning —
//!    `restart`, `pull_policy`, `network_mode`, `depends_on` conditions, volume types —
//!    become enums here, so a bad one is an error naming file, line and key);
//! 10. [`profiles`]: the enabled services;
//! 11. [`normalize`]: paths, env files, defaults;
//! 12. [`checks`]: semantic checks.
//!
//! The dependency [`graph`] is built on demand from the result.
//!
//! [`load`] runs them all; [`model`] holds the result.

pub mod canonical;
pub mod checks;
pub mod dotenv;
pub mod error;
pub mod extends;
pub mod find;
pub mod graph;
pub mod include;
pub mod input;
pub mod interpolate;
mod load;
pub mod merge;
pub mod model;
pub mod normalize;
pub mod profiles;
pub mod synth;
pub mod validate;
pub mod yaml;

pub use error::{ProjectError, Result};
pub use graph::Graph;
pub use load::{LoadOptions, Loaded, load, load_explained};
pub use model::*;
