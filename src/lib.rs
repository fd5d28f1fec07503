//! tug — compose-style multi-container development environments on a built-in container engine.
//!
//! Data flows one way: project file → [`project`] (model) → [`plan`] → [`engine`] → kernel.
//! Only [`cli`] prints. See `docs/ARCHITECTURE.md` for the code map and the invariants.

pub mod cli;
pub mod compose;
pub mod engine;
pub mod plan;
pub mod project;
pub mod util;
pub mod watch;
