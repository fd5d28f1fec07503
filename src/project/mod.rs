//! The compose project: the model (serde types, no I/O) and the loader pipeline that builds it
//! from compose files.
//!
//! The pipeline has numbered phases, one module each, each tested on its own:
//! 1. [`find`] the files (compose.yaml & co. in the directory or its parents, plus the
//!    override file; or the `-f` list);
//! 2. [`yaml`]: parse with anchors, aliases and merge keys, keeping line and column;
//! 3. [`merge`] several files by compose's merge rules (`!reset`, `!override`);
//! 4. [`interpolate`] variables (sources: shell env, then `--env-file`s or `.env`, read by
//!    [`dotenv`]);
//! 5. [`validate`] against tug's JSON schema;
//! 6. [`extends`], [`include`], [`profiles`];
//! 7. [`canonical`] long forms;
//! 8. [`normalize`]: paths, env files, defaults;
//! 9. [`checks`]: semantic checks;
//! 10. the dependency [`graph`].
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
