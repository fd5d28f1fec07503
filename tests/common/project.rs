//! A compose project for end-to-end tests: a temp project dir, its own state root, a unique
//! project name, and a guard that takes the project down (`down -v`) even when the test fails.

use std::path::Path;
use std::process::{Command, Output};

use super::{busybox_image, ok, run, tug, unique};

/// A compose project in a temp dir with its own state root (or a shared one).
pub struct Project {
    /// The project directory (holds `compose.yaml`).
    pub dir: tempfile::TempDir,
    /// The state root, when this project owns it.
    root: Option<tempfile::TempDir>,
    /// The state root's path.
    pub root_path: std::path::PathBuf,
    /// The project name (`-p`).
    pub name: String,
}

impl Project {
    /// A project with its own state root, holding `busybox:latest`.
    pub fn new(yaml: &str) -> Project {
        let root = tempfile::tempdir().unwrap();
        busybox_image(root.path());
        let root_path = root.path().to_path_buf();
        let mut p = Project::in_root(&root_path, yaml);
        p.root = Some(root);
        p
    }

    /// A project in an existing state root (which must already hold the images it uses).
    pub fn in_root(root: &Path, yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        Project {
            dir,
            root: None,
            root_path: root.to_path_buf(),
            name: unique("tr"),
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// `tug -p NAME --progress plain` in the project dir.
    pub fn cmd(&self) -> Command {
        let mut c = tug(self.root());
        c.current_dir(self.dir.path())
            .args(["-p", &self.name, "--progress", "plain"]);
        c
    }

    /// Runs a verb that must succeed; returns stdout.
    #[track_caller]
    pub fn tug(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    /// Runs a verb; returns its output whatever the outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    /// `ps -a --format json`, one object per container.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        // Full ids (`--no-trunc`): tests find containers' directories by them.
        self.tug(&["ps", "-a", "--no-trunc", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("ps --format json prints one object a line"))
            .collect()
    }

    /// The `State` of one container by name, as `ps` shows it.
    pub fn state_of(&self, name: &str) -> Option<String> {
        self.ps()
            .into_iter()
            .find(|c| c["Name"] == name)
            .map(|c| c["State"].as_str().unwrap_or_default().to_string())
    }

    /// The container name of replica 1 of a service.
    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = run(self
            .cmd()
            .args(["down", "-v", "--remove-orphans", "-t", "1"]));
    }
}
