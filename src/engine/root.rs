//! The state root (`--root`, `TUG_ROOT`, default `/var/lib/tug`): opened once per command
//! and handed to the stores, which find their directories through it instead of each
//! joining names onto a path of its own.
//!
//! | directory | store |
//! |---|---|
//! | `images/` (OCI layout), `layers/` | `image::ImageStore` |
//! | `containers/` (`.names/`), `runc/` | `container::ContainerStore` |
//! | `volumes/` | `volume::Volumes` |
//! | `networks/`, `netns/`, `ports/` | `network::Networks` |
//! | `projects/` | the compose layer (locks, secret and config copies) |
//! | `build/` | `build` (cache mounts, network slots) |
//!
//! Directories are made and files written only through [`crate::engine::private`] (`0700`,
//! `0600`); [`StateRoot::open`] also makes an older root private once
//! ([`crate::engine::private::ensure_root`]).

use std::path::{Path, PathBuf};

use crate::engine::private::{self, Tightened};

/// An opened state root.
#[derive(Debug, Clone)]
pub struct StateRoot {
    path: PathBuf,
    tightened: Option<Tightened>,
}

impl StateRoot {
    /// Opens the state root at `path` for a command: makes it (private) when missing, makes
    /// an older root private once (what changed is in [`StateRoot::tightened`], for the CLI
    /// to say), and resolves its path.
    ///
    /// # Errors
    /// The root cannot be made, tightened or resolved.
    pub fn open(path: &Path) -> std::io::Result<StateRoot> {
        let tightened = private::ensure_root(path)?;
        Ok(StateRoot {
            path: std::fs::canonicalize(path)?,
            tightened,
        })
    }

    /// The state root at `path` as it is, for a library user that opens one store: made
    /// (private) when missing, not tightened.
    ///
    /// # Errors
    /// The root cannot be made or resolved.
    pub fn at(path: &Path) -> std::io::Result<StateRoot> {
        private::create_dir_all(path)?;
        Ok(StateRoot {
            path: std::fs::canonicalize(path)?,
            tightened: None,
        })
    }

    /// The root directory (canonical).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What [`StateRoot::open`] made private in an older root, if anything.
    #[must_use]
    pub fn tightened(&self) -> Option<&Tightened> {
        self.tightened.as_ref()
    }

    /// `images/`: the OCI image layout.
    #[must_use]
    pub fn images(&self) -> PathBuf {
        self.path.join("images")
    }

    /// `layers/`: unpacked layers by diff id.
    #[must_use]
    pub fn layers(&self) -> PathBuf {
        self.path.join("layers")
    }

    /// `containers/`: one directory per container, `.names/` reservations.
    #[must_use]
    pub fn containers(&self) -> PathBuf {
        self.path.join("containers")
    }

    /// `volumes/`.
    #[must_use]
    pub fn volumes(&self) -> PathBuf {
        self.path.join("volumes")
    }

    /// `networks/`: one directory per network.
    #[must_use]
    pub fn networks(&self) -> PathBuf {
        self.path.join("networks")
    }

    /// `netns/`: network namespaces by key, and their claims.
    #[must_use]
    pub fn netns(&self) -> PathBuf {
        self.path.join("netns")
    }

    /// `ports/`: published ports and their proxies' logs.
    #[must_use]
    pub fn ports(&self) -> PathBuf {
        self.path.join("ports")
    }

    /// `projects/`: project locks and files.
    #[must_use]
    pub fn projects(&self) -> PathBuf {
        self.path.join("projects")
    }

    /// `build/`: the builder's cache mounts and network slots.
    #[must_use]
    pub fn build(&self) -> PathBuf {
        self.path.join("build")
    }

    /// `runc/`: the state of an external runtime (`--runtime runc`).
    #[must_use]
    pub fn runc(&self) -> PathBuf {
        self.path.join("runc")
    }

    /// Makes `dir` (one of the directories above) if missing, private.
    ///
    /// # Errors
    /// It cannot be made.
    pub fn ensure(&self, dir: &Path) -> std::io::Result<()> {
        private::create_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_root_lays_out_the_stores_under_its_canonical_path() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("link");
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", &link).unwrap();
        let r = StateRoot::at(&link).unwrap();
        assert_eq!(r.path(), t.path().join("real").canonicalize().unwrap());
        assert_eq!(r.containers(), r.path().join("containers"));
        assert!(r.tightened().is_none());
        let fresh = StateRoot::open(&t.path().join("new")).unwrap();
        assert!(fresh.path().is_dir());
    }
}
