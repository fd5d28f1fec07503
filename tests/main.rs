//! tug's integration tests: one binary, one module per area.

mod cli;
mod common;
mod compose;
mod config_golden;
mod container;
mod container_cgroup;
mod container_devices;
mod container_net;
mod hostile;
mod image;
mod image_archive;
mod image_registry;
mod image_token;
mod image_transfer;
mod image_unpack;
mod limits;
mod malformed;
mod network;
mod network_compose;
mod network_containers;
mod plan;
mod private_root;
mod project;
mod volume;
mod watch;
