//! A compose project on the engine: observe what exists, and carry out plan operations.
//!
//! [`Stack`] ties one loaded project to the engine's stores (images, containers, networks,
//! volumes) of one state root. It reports the observed state by the `com.docker.compose.*`
//! labels, and implements [`Backend`] so the executor can apply a plan: each operation maps
//! to engine calls, with the service's configuration turned into a container configuration
//! (`convert`). It decides nothing: what to do comes from the plan.

pub mod attach;
mod backend;
pub mod build;
mod by_name;
pub mod convert;
mod develop;
pub mod executor;
pub mod oneoff;
pub mod query;
pub mod service;
mod snapshot;
mod sync;
mod wait;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::engine::container::{
    ContainerError, ContainerStore, Retired, Status, Summary as ContainerSummary,
};
use crate::engine::image::ImageStore;
use crate::engine::network::{Detached, Networks};
use crate::engine::volume::Volumes;
use crate::plan::{self, Desired, Observed, ObservedContainer, RunState};
use crate::project::model::Project;

pub use attach::{
    AttachEvent, AttachOptions, ContainerEvent, Followers, LogEvent, LogsOptions, StopReason,
    source_name,
};
pub use backend::OneOff;
pub use build::{BuildOverrides, BuildServicesOptions};
pub use by_name::project_from_state;
pub use convert::labels;
pub use oneoff::{CopyOptions, RunOptions, RunOutcome, RunPull, RunStep};
pub use query::ContainerImage;
pub use service::{
    KillOptions, PullOptions, PushOptions, Reporter, ScaleOptions, WaitServicesOptions,
};
pub use wait::WaitOptions;

/// Errors of the compose layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service uses a feature tug does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// A value the engine cannot take.
    #[error("{0}")]
    Invalid(String),
    /// A named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A dependency did not meet its condition.
    #[error("{0}")]
    Dependency(String),
    /// Image store.
    #[error(transparent)]
    Image(#[from] crate::engine::image::Error),
    /// Containers.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Networks.
    #[error(transparent)]
    Network(#[from] crate::engine::network::Error),
    /// Volumes.
    #[error(transparent)]
    Volume(#[from] crate::engine::volume::Error),
    /// Project lock or state files.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Reconcile cannot make a plan.
    #[error(transparent)]
    Plan(#[from] crate::plan::ReconcileError),
    /// Operations of a plan failed: each cause once (see [`service::failures`]).
    #[error("{0}")]
    Failed(String),
    /// What was being done when an error of the layer below happened.
    #[error("{what}")]
    Context {
        /// What failed (`cannot kill web-1`).
        what: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// `source`, with what was being done.
    #[must_use]
    pub fn context(what: String, source: Error) -> Error {
        Error::Context {
            what,
            source: Box::new(source),
        }
    }
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Options that shape how operations are carried out (not what is done).
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// `-t`: stop timeout overriding each service's `stop_grace_period`.
    pub stop_timeout: Option<std::time::Duration>,
    /// How long a `wait for` may take before it fails.
    pub wait: WaitOptions,
    /// `-V`: renew anonymous volumes.
    pub renew_anon_volumes: bool,
    /// The stack is being taken down (`down`): what only a stack that stays needs waiting for
    /// is left to the end, where the kernel and the supervisors do it meanwhile. A stop
    /// returns once the container's processes are gone (the removal that follows waits for
    /// the exit record); a removal leaves the wait for the container's links and the deletion
    /// of its files (after its supervisor's last unmount) to the next network removal, which
    /// does them while the kernel deletes the bridge, or to [`Stack::settle`], which the
    /// caller must call at its end.
    pub teardown: bool,
    /// What the command line adds to image builds (`up --build`).
    pub build: build::BuildOverrides,
    /// `--dry-run`: the verbs that change the project show their plan (through
    /// [`Reporter::show_plan`]) instead of carrying it out.
    pub dry_run: bool,
}

/// One project on one state root.
///
/// Its stores are its own: callers (the CLI, the watch) go through its methods, which are
/// the compose service (see [`service`]).
pub struct Stack {
    /// The loaded project.
    project: Project,
    /// State root.
    root: PathBuf,
    /// Image store.
    images: ImageStore,
    /// Containers.
    containers: ContainerStore,
    /// Networks.
    networks: Networks,
    /// Volumes.
    volumes: Volumes,
    /// Options.
    options: StackOptions,
    /// Per-service config hashes, computed once.
    hashes: BTreeMap<String, String>,
    /// Serialises the network and netns work of concurrent operations.
    wiring: Mutex<()>,
    /// Serialises volume preparation (first-use copy-up) of concurrent operations.
    preparing: Mutex<()>,
    /// Containers whose network namespaces and veths are still to remove (see
    /// [`StackOptions::teardown`]).
    detached: Mutex<Vec<Detached>>,
    /// Retired containers whose files are still to delete (see [`StackOptions::teardown`]).
    retired: Mutex<Vec<Retired>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("project", &self.project.name)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// An exclusive lock on one project of one state root, held while a command changes it.
#[derive(Debug)]
pub struct ProjectLock {
    _lock: nix::fcntl::Flock<File>,
}

impl ProjectLock {
    /// Takes the lock, waiting for another tug command on the same project to finish.
    ///
    /// # Errors
    /// The lock file cannot be created or locked.
    pub fn take(root: &Path, project: &str) -> Result<ProjectLock> {
        let dir = root.join("projects");
        crate::engine::private::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("{project}.lock"));
        let file = crate::engine::private::open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("open {}", path.display()), e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(|f| ProjectLock { _lock: f })
            .map_err(|(_, e)| Error::Io(format!("lock {}", path.display()), e.into()))
    }
}

impl Stack {
    /// Opens the engine's stores for a project.
    ///
    /// # Errors
    /// A store cannot be opened.
    pub fn open(root: &Path, project: Project, options: StackOptions) -> Result<Stack> {
        let hashes = project
            .services
            .values()
            .map(|s| (s.name.clone(), plan::config_hash(s)))
            .collect();
        // The state root is opened once; each store finds its directories through it.
        let state = crate::engine::root::StateRoot::at(root)
            .map_err(|e| Error::Io(format!("open the state root {}", root.display()), e))?;
        Ok(Stack {
            images: ImageStore::open_in(&state)?,
            containers: ContainerStore::open_in(&state)?,
            networks: Networks::open_in(&state)?,
            volumes: Volumes::open_in(&state)?,
            root: root.to_path_buf(),
            project,
            options,
            hashes,
            wiring: Mutex::new(()),
            preparing: Mutex::new(()),
            detached: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The loaded project.
    #[must_use]
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The state root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The options the stack was opened with.
    #[must_use]
    pub fn options(&self) -> &StackOptions {
        &self.options
    }

    /// Finishes what removals left for later (see [`StackOptions::teardown`]): removes the
    /// network namespaces of removed containers and the veths their networks' removal did
    /// not take, and deletes the files of retired containers once their supervisors have
    /// ended.
    ///
    /// # Errors
    /// Files, links or namespaces cannot be deleted.
    pub fn settle(&self) -> Result<()> {
        let detached = take_all(&self.detached);
        let (finished, purged) = std::thread::scope(|s| {
            let purge = s.spawn(|| self.purge_retired());
            let finished = self.networks.finish_detached(&detached);
            (finished, purge.join())
        });
        finished?;
        purged.unwrap_or_else(|_| Err(Error::Invalid("deleting container files panicked".into())))
    }

    /// Deletes the files of the containers retired so far, each once its supervisor has
    /// ended (all at once).
    pub(crate) fn purge_retired(&self) -> Result<()> {
        let retired = take_all(&self.retired);
        std::thread::scope(|s| {
            let handles: Vec<_> = retired
                .into_iter()
                .map(|r| s.spawn(move || r.purge()))
                .collect();
            let mut result = Ok(());
            for h in handles {
                if let Ok(Err(e)) = h.join() {
                    result = Err(e.into());
                }
            }
            result
        })
    }

    /// The config hash of a service.
    #[must_use]
    pub fn hash(&self, service: &str) -> &str {
        self.hashes.get(service).map_or("", String::as_str)
    }

    /// The project's containers (one-offs included), sorted by name.
    ///
    /// # Errors
    /// The container store cannot be read.
    pub fn project_containers(&self) -> Result<Vec<ContainerSummary>> {
        let mut v: Vec<ContainerSummary> = self
            .containers
            .list(true)?
            .into_iter()
            .filter(|c| c.labels.get(labels::PROJECT) == Some(&self.project.name))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Removes the network namespaces (and their veths, DNS records and port proxies) that a
    /// command killed between wiring a container and recording it left behind for this
    /// project. Only names of this project's services are touched: another project may be
    /// creating its containers in the same root right now.
    ///
    /// # Errors
    /// A store cannot be read or a namespace cannot be removed.
    pub fn remove_stray_netns(&self) -> Result<Vec<String>> {
        Ok(self.networks.gc_netns(&|key| {
            !self.names_a_container_of_this_project(key) || self.containers.has_name(key)
        })?)
    }

    /// Whether `name` has the shape of a container name of this project:
    /// `<project>-<service>-<number>` or a one-off `<project>-<service>-run-<id>`.
    fn names_a_container_of_this_project(&self, name: &str) -> bool {
        if self
            .project
            .services
            .values()
            .any(|s| s.container_name.as_deref() == Some(name))
        {
            return true;
        }
        let Some(rest) = name
            .strip_prefix(self.project.name.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        self.project.services.keys().any(|service| {
            rest.strip_prefix(service.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|tail| {
                    let number = !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit());
                    let oneoff = tail.strip_prefix("run-").is_some_and(|id| {
                        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())
                    });
                    number || oneoff
                })
        })
    }

    /// What opening the image store repaired, if its index was damaged.
    #[must_use]
    pub fn image_repair(&self) -> Option<&crate::engine::image::IndexRepair> {
        self.images.repaired()
    }

    /// The desired state: the project with image ids from the store. The compose layer's
    /// own: callers ask for plans and answers through the service methods.
    fn desired(&self) -> Desired {
        // Services often share an image: resolve each reference once.
        let mut ids: BTreeMap<String, Option<String>> = BTreeMap::new();
        plan::desired_from_project(&self.project, |r| {
            ids.entry(r.to_string())
                .or_insert_with(|| self.images.resolve(r).ok().map(|i| i.id))
                .clone()
        })
    }

    /// The observed state (the compose layer's own, as [`Stack::desired`]).
    ///
    /// # Errors
    /// A store cannot be read.
    fn observed(&self) -> Result<Observed> {
        let containers = self
            .project_containers()?
            .into_iter()
            .map(|c| ObservedContainer {
                id: c.id.clone(),
                service: c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                number: c
                    .labels
                    .get(labels::NUMBER)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                // A container whose record is damaged is recreated by `up`.
                hash: if c.damaged.is_some() {
                    String::new()
                } else {
                    c.labels
                        .get(labels::CONFIG_HASH)
                        .cloned()
                        .unwrap_or_default()
                },
                image_id: Some(c.image_id.clone()).filter(|i| !i.is_empty()),
                state: run_state(c.state),
                exit_code: c.exit_code,
                oneoff: c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True"),
                name: c.name,
            })
            .collect();
        // Damaged networks and volumes exist too: `down` removes them, `up` names the
        // damaged file when it uses one.
        let mut networks: Vec<String> = self.networks.list()?.into_iter().map(|n| n.name).collect();
        networks.extend(self.networks.damaged().into_iter().map(|(n, _)| n));
        let mut volumes: Vec<String> = self.volumes.list()?.into_iter().map(|v| v.name).collect();
        volumes.extend(self.volumes.damaged().into_iter().map(|(n, _)| n));
        Ok(Observed {
            containers,
            networks,
            volumes,
        })
    }
}

/// Appends to a list that concurrent operations share (a poisoned lock's list is still
/// whole: every change to it is one push or one take).
pub(crate) fn push_to<T>(list: &Mutex<Vec<T>>, item: T) {
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(item);
}

/// Empties a list that concurrent operations share (see [`push_to`]).
fn take_all<T>(list: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(
        &mut *list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Maps an engine status to the run state reconcile knows.
#[must_use]
pub fn run_state(s: Status) -> RunState {
    match s {
        Status::Created => RunState::Created,
        Status::Running | Status::Restarting => RunState::Running,
        Status::Paused => RunState::Paused,
        Status::Exited | Status::Dead => RunState::Exited,
    }
}
