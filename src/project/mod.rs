//! The compose project: the model (serde types, no I/O) and the loader pipeline that builds it
//! from compose files (find → parse → merge → interpolate → validate → extends/include/profiles
//! → canonical form → paths and defaults → semantic checks → dependency graph).

pub mod model;
pub mod validate;

pub use model::*;
