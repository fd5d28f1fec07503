//! Synced files survive restarts and recreation.
//!
//! A service that a watch session (`tug watch`, `up --watch`) syncs into keeps its sync rules
//! in `<root>/projects/<project>/sync/<service>.json`. Every start of one of its containers
//! (`up`, `start`, `restart`, a recreation by `rebuild` or a config change) first copies them
//! into the container's directory ([`sync::RULES_FILE`]); the supervisor then writes the host
//! files that differ into the container's root after its mounts and before its process
//! starts, at that start and at every restart by the restart policy. So a recreated container
//! has the current host files from its first instruction on (docker compose loses them), and
//! a file changed while the container was down is not missed; a file the host deleted while
//! the container was down is removed then, when the container's record of what it was last
//! synced with ([`sync::Seen`]) lists it. The record outlives the watch session (the
//! containers keep what was synced into them); `down` forgets it.

use std::path::PathBuf;

use super::{Error, Result, Stack, labels};
use crate::engine::sync;

impl Stack {
    fn sync_dir(&self) -> PathBuf {
        self.root
            .join("projects")
            .join(&self.project.name)
            .join("sync")
    }

    /// Records `rules` as `service`'s synced files: its containers get them at every start
    /// from now on (those that exist at their next start).
    ///
    /// # Errors
    /// The record cannot be written.
    pub fn record_sync(&self, service: &str, rules: &[sync::Rule]) -> Result<()> {
        let dir = self.sync_dir();
        let io = |what: &str| {
            let what = format!("{what} {}", dir.display());
            move |e| Error::Io(what, e)
        };
        crate::engine::private::create_dir_all(&dir).map_err(io("create"))?;
        let path = dir.join(format!("{service}.json"));
        if rules.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            let bytes = serde_json::to_vec_pretty(rules)
                .map_err(|e| Error::Invalid(format!("sync rules of {service}: {e}")))?;
            crate::util::fs::write_atomic(&path, &bytes, 0o600, crate::util::fs::Durability::None)
                .map_err(io("write into"))?;
        }
        for c in self.project_containers()? {
            let oneoff = c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True");
            if !oneoff && c.labels.get(labels::SERVICE).map(String::as_str) == Some(service) {
                let cdir = self.containers.container_dir(&c.id);
                sync::write_rules(&cdir, rules)
                    .map_err(|e| Error::Io(format!("write into {}", cdir.display()), e))?;
            }
        }
        Ok(())
    }

    /// The synced files recorded for `service` (none when no watch synced into it).
    #[must_use]
    pub fn recorded_sync(&self, service: &str) -> Vec<sync::Rule> {
        std::fs::read(self.sync_dir().join(format!("{service}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Forgets every service's synced files (`down`).
    ///
    /// # Errors
    /// The records cannot be removed.
    pub fn forget_sync(&self) -> Result<()> {
        let dir = self.sync_dir();
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Gives the container `id` of `service` the service's recorded sync rules before it
    /// starts.
    pub(crate) fn sync_on_start(&self, service: &str, id: &str) -> Result<()> {
        let rules = self.recorded_sync(service);
        if rules.is_empty() {
            return Ok(());
        }
        let dir = self.containers.container_dir(id);
        sync::write_rules(&dir, &rules)
            .map_err(|e| Error::Io(format!("write into {}", dir.display()), e))
    }

    /// What the container `id` was last synced with, per rule (see [`sync::Seen`]).
    #[must_use]
    pub fn sync_seen(&self, id: &str) -> sync::SeenByRule {
        sync::read_seen(&self.containers.container_dir(id))
    }

    /// Records what the container `id` has been synced with.
    ///
    /// # Errors
    /// The record cannot be written.
    pub fn record_seen(&self, id: &str, seen: &sync::SeenByRule) -> Result<()> {
        let dir = self.containers.container_dir(id);
        sync::write_seen(&dir, seen)
            .map_err(|e| Error::Io(format!("write into {}", dir.display()), e))
    }

    /// The user a container's process runs as, for the files a sync writes (see
    /// [`sync::owner_of`]).
    #[must_use]
    pub fn sync_owner(&self, id: &str) -> sync::Owner {
        sync::owner_of(&self.containers, id)
    }

    /// A running container of the project, to sync files into (see
    /// [`sync::Container::open_as`]).
    ///
    /// # Errors
    /// It does not run, or its root cannot be opened.
    pub fn sync_container(
        &self,
        id: &str,
        owner: sync::Owner,
    ) -> std::result::Result<sync::Container, sync::SyncError> {
        sync::Container::open_as(&self.containers, id, owner)
    }
}
