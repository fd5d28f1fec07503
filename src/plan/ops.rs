//! The plan: a DAG of operations, each with its cause. It is data: it prints, it compares, and
//! the executor carries it out without deciding anything.

use std::fmt;

use serde::Serialize;

use super::state::Condition;

/// One operation on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a project network (engine name).
    CreateNetwork {
        /// Project-local key.
        key: String,
        /// Engine name.
        name: String,
    },
    /// Create a named volume.
    CreateVolume {
        /// Project-local key.
        key: String,
        /// Engine name.
        name: String,
    },
    /// Pull an image from its registry.
    PullImage {
        /// Image reference.
        image: String,
    },
    /// Build a service's image from its `build:` section.
    BuildImage {
        /// The service whose build section is used.
        service: String,
        /// The image reference the result is tagged with.
        image: String,
    },
    /// Create a container for one replica of a service.
    CreateContainer {
        /// Service.
        service: String,
        /// Replica number (1-based).
        number: u32,
        /// Container name.
        name: String,
    },
    /// Start a created or stopped container.
    StartContainer {
        /// Service.
        service: String,
        /// Container name.
        name: String,
    },
    /// Stop a running container (stop signal, grace period, then SIGKILL).
    StopContainer {
        /// Service.
        service: String,
        /// Container name.
        name: String,
    },
    /// Remove a stopped container.
    RemoveContainer {
        /// Service.
        service: String,
        /// Container name.
        name: String,
    },
    /// Wait until a dependency meets its `depends_on` condition.
    WaitFor {
        /// The dependency.
        service: String,
        /// What to wait for.
        condition: Condition,
        /// A failure of a `required: false` dependency is only a warning.
        required: bool,
    },
    /// Remove a network.
    RemoveNetwork {
        /// Engine name.
        name: String,
    },
    /// Remove a named volume.
    RemoveVolume {
        /// Engine name.
        name: String,
    },
    /// Remove an image.
    RemoveImage {
        /// Image reference.
        image: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateNetwork { name, .. } => write!(f, "create network {name}"),
            Op::CreateVolume { name, .. } => write!(f, "create volume {name}"),
            Op::PullImage { image } => write!(f, "pull image {image}"),
            Op::BuildImage { service, image } => write!(f, "build image {image} for {service}"),
            Op::CreateContainer { name, .. } => write!(f, "create container {name}"),
            Op::StartContainer { name, .. } => write!(f, "start container {name}"),
            Op::StopContainer { name, .. } => write!(f, "stop container {name}"),
            Op::RemoveContainer { name, .. } => write!(f, "remove container {name}"),
            Op::WaitFor {
                service,
                condition,
                required,
            } => {
                write!(f, "wait for {service} ({})", condition.as_str())?;
                if !*required {
                    write!(f, " [optional]")?;
                }
                Ok(())
            }
            Op::RemoveNetwork { name } => write!(f, "remove network {name}"),
            Op::RemoveVolume { name } => write!(f, "remove volume {name}"),
            Op::RemoveImage { image } => write!(f, "remove image {image}"),
        }
    }
}

/// A node of the plan: an operation, why it is there, and what it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Why reconcile emitted it.
    pub cause: String,
    /// Indices of the nodes that must finish first.
    pub after: Vec<usize>,
}

/// The plan: nodes in a topological order (every `after` index is smaller than the node's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The operations.
    pub nodes: Vec<Node>,
    /// Things worth telling the user that need no operation (orphans left alone, …).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Appends a node and returns its index.
    pub fn push(&mut self, op: Op, cause: impl Into<String>, mut after: Vec<usize>) -> usize {
        after.sort_unstable();
        after.dedup();
        let id = self.nodes.len();
        debug_assert!(after.iter().all(|&a| a < id));
        self.nodes.push(Node {
            op,
            cause: cause.into(),
            after,
        });
        id
    }

    /// True when there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes.is_empty() {
            writeln!(f, "nothing to do")?;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            write!(f, "#{} {}", i + 1, n.op)?;
            if !n.after.is_empty() {
                let after: Vec<String> = n.after.iter().map(|a| format!("#{}", a + 1)).collect();
                write!(f, " after {}", after.join(" "))?;
            }
            writeln!(f, " ({})", n.cause)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
