//! The two inputs of reconcile: the desired state (what the project asks for, already reduced
//! to what decisions need) and the observed state (what the engine reports). Both are plain
//! data, deserializable so golden tests can write them by hand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one `depends_on` entry waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The dependency's containers are started.
    #[default]
    ServiceStarted,
    /// The dependency's containers report healthy.
    ServiceHealthy,
    /// The dependency's containers exited with status 0.
    ServiceCompletedSuccessfully,
    /// `up --wait`: running, and healthy when a healthcheck is configured.
    Ready,
}

impl Condition {
    /// The compose spelling of the condition.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
            Condition::Ready => "running or healthy",
        }
    }
}

/// One `depends_on` entry in long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// What to wait for.
    #[serde(default)]
    pub condition: Condition,
    /// `required: false` tolerates a dependency that is not part of the run.
    #[serde(default = "yes")]
    pub required: bool,
    /// `restart: true`: restart this service when the dependency is recreated.
    #[serde(default)]
    pub restart: bool,
}

fn yes() -> bool {
    true
}

/// When to pull a service's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when the image is not in the store.
    #[default]
    Missing,
    /// Pull before every `up`.
    Always,
    /// Never pull; fail if the image is missing.
    Never,
    /// Build from `build:`, never pull.
    Build,
}

/// One service as reconcile sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredService {
    /// Service name.
    pub name: String,
    /// Number of replicas wanted.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Hash of the service configuration (changes when anything that needs a recreate does).
    pub hash: String,
    /// Image reference as written in the project.
    pub image: String,
    /// Id of that image in the store now, if present.
    #[serde(default)]
    pub image_id: Option<String>,
    /// The service has a `build:` section.
    #[serde(default)]
    pub build: bool,
    /// Pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Dependencies in long form.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// Project networks the service joins (project-local keys).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Project named volumes the service mounts (project-local keys).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// A fixed `container_name`.
    #[serde(default)]
    pub container_name: Option<String>,
    /// Services whose containers must exist before this one's are created: the sources of
    /// `volumes_from` and `network_mode: service:` (the new container takes their mounts or
    /// namespace at creation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_after: Vec<String>,
}

fn one() -> u32 {
    1
}

/// A network or volume the project declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredResource {
    /// Project-local key (`default`, `backend`).
    pub key: String,
    /// Engine name (`myproj_default`).
    pub name: String,
    /// `external: true`: must exist, never created or removed.
    #[serde(default)]
    pub external: bool,
}

/// What the project asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Project name.
    pub project: String,
    /// Services (in file order).
    pub services: Vec<DesiredService>,
    /// Networks.
    #[serde(default)]
    pub networks: Vec<DesiredResource>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<DesiredResource>,
}

impl Desired {
    /// Looks up a service.
    #[must_use]
    pub fn service(&self, name: &str) -> Option<&DesiredService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Run state of an observed container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running (or restarting under its restart policy).
    Running,
    /// Frozen.
    Paused,
    /// Exited (or dead).
    Exited,
}

/// A container of the project found in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// Engine id.
    #[serde(default)]
    pub id: String,
    /// Container name.
    pub name: String,
    /// `com.docker.compose.service`.
    pub service: String,
    /// `com.docker.compose.container-number`.
    pub number: u32,
    /// `com.docker.compose.config-hash`.
    pub hash: String,
    /// Image id the container was created from.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Run state.
    pub state: RunState,
    /// Exit code when exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `com.docker.compose.oneoff=True` (made by `run`).
    #[serde(default)]
    pub oneoff: bool,
}

/// What exists in the engine for the project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The project's containers.
    #[serde(default)]
    pub containers: Vec<ObservedContainer>,
    /// Engine names of networks that exist.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Engine names of volumes that exist.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// The flags of `up` that steer decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpOptions {
    /// Services named on the command line (empty: all).
    pub services: Vec<String>,
    /// `--no-deps`: don't touch dependencies of the named services.
    pub no_deps: bool,
    /// `--force-recreate`.
    pub force_recreate: bool,
    /// `--no-recreate`.
    pub no_recreate: bool,
    /// `--always-recreate-deps`.
    pub always_recreate_deps: bool,
    /// `--remove-orphans`.
    pub remove_orphans: bool,
    /// `-V`/`--renew-anon-volumes`.
    pub renew_anon_volumes: bool,
    /// `--no-start`: create only.
    pub no_start: bool,
    /// `--pull always|missing|never` overriding each service's policy.
    pub pull: Option<PullPolicy>,
    /// `--build`: build images before starting.
    pub build: bool,
    /// `--no-build`.
    pub no_build: bool,
    /// `--scale S=N`.
    pub scale: BTreeMap<String, u32>,
    /// `--wait`: wait for running/healthy at the end.
    pub wait: bool,
}

/// The flags of `down`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownOptions {
    /// `-v`: remove named volumes declared by the project (and anonymous ones).
    pub volumes: bool,
    /// `--remove-orphans`.
    pub remove_orphans: bool,
    /// `--rmi local|all`.
    pub rmi: Option<String>,
    /// Services named on the command line (empty: the whole project).
    pub services: Vec<String>,
}
