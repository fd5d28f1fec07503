//! tug's integration tests: one binary, one module per area.

mod cli;
mod cli_setup;
mod common;
mod compose;
mod compose_shutdown;
mod config_golden;
mod container;
mod container_cgroup;
mod container_devices;
mod container_net;
mod hidden_waits;
mod image;
mod image_archive;
mod image_registry;
mod image_token;
mod image_transfer;
mod image_unpack;
mod malformed;
mod network;
mod network_compose;
mod network_containers;
mod network_internal;
mod parallel_root;
mod plan;
mod project;
mod volume;
