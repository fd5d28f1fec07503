//! Desired vs observed state: reconcile a project with what the engine reports and produce a
//! plan — a DAG of operations, each with its cause. Pure data, no I/O: every decision of `up`
//! and `down` is tested from hand-written states without a single container.

mod desired;
mod ops;
mod reconcile;
mod state;

pub use desired::{
    config_hash, desired_from_project, service_image, service_networks, service_volumes,
};
pub use ops::{Node, Op, Plan};
pub use reconcile::{ReconcileError, container_name, plan_down, plan_up, select_services};
pub use state::{
    Condition, Dependency, Desired, DesiredResource, DesiredService, DownOptions, Observed,
    ObservedContainer, PullPolicy, RunState, UpOptions,
};
