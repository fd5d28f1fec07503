//! The built-in container engine: image store, root filesystems, runtime, networks, volumes,
//! supervisor, and the executor that carries out a plan. Only the engine calls the kernel.
pub mod build;
pub mod container;
pub mod helpers;
pub mod image;
pub mod network;
pub mod private;
pub mod proc;
pub mod root;
pub mod runtime;
pub mod sync;
pub mod volume;
