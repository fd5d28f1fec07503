//! The volumes a container gets without naming them: Docker's *anonymous volumes*.
//!
//! An image's `VOLUME` paths each get one, with the image's content at that path copied up
//! into it on creation, so data written there lives outside the container's writable layer
//! (a database image's data directory survives the container). A mount the container asks
//! for at the same path (a bind, a named volume, a tmpfs, `volumes_from`) takes its place,
//! as with Docker. `-v PATH` asks for one explicitly: a [`MountKind::Volume`] mount without
//! a source.
//!
//! The store makes them at create, with random names (`volume ls` shows them, labelled
//! `tug.anonymous=true`), and records them in [`ContainerConfig::anonymous_volumes`]:
//! `rm -v` and an auto-removed container (`run --rm`) delete them with the container; a
//! plain `rm` leaves them for `volume prune`. The compose layer mounts an image's volumes
//! itself, named after project, service, replica and path, so a recreated replica finds its
//! data again; those are `down -v`'s to delete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config::{ContainerConfig, Mount, MountKind};
use super::{ContainerStore, ImageInfo, Result, user};
use crate::engine::volume::{Prepare, Volumes};

/// `path` as a clean absolute path (`/data/` and `data/./x/..` are `/data`).
#[must_use]
pub fn clean_target(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The image's `VOLUME` paths that none of `mounts` covers, cleaned, in order.
#[must_use]
pub fn image_volume_targets(
    image: Option<&oci_spec::image::Config>,
    mounts: &[Mount],
) -> Vec<String> {
    let Some(vols) = image.and_then(|c| c.volumes().as_ref()) else {
        return Vec::new();
    };
    let taken: Vec<String> = mounts.iter().map(|m| clean_target(&m.target)).collect();
    let mut out: Vec<String> = vols
        .iter()
        .map(|v| clean_target(v))
        .filter(|t| t != "/" && !taken.contains(t))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// True for a volume mount that asks for an anonymous volume (no source yet).
#[must_use]
pub fn is_anonymous_request(m: &Mount) -> bool {
    m.kind == MountKind::Volume && m.source.as_os_str().is_empty()
}

impl ContainerStore {
    /// Makes the anonymous volumes of a new container (its `-v PATH` mounts and the image's
    /// uncovered `VOLUME` paths), copies the image's content up into each, fills in the
    /// mounts and records the names in the config. Returns the names made, for the caller to
    /// remove if the create fails.
    pub(crate) fn make_anonymous_volumes(
        &self,
        config: &mut ContainerConfig,
        image: &ImageInfo,
    ) -> Result<Vec<String>> {
        let targets = image_volume_targets(image.config.as_ref(), &config.mounts);
        if targets.is_empty() && !config.mounts.iter().any(is_anonymous_request) {
            return Ok(Vec::new());
        }
        for t in targets {
            config.mounts.push(Mount {
                kind: MountKind::Volume,
                source: PathBuf::new(),
                target: t,
                read_only: false,
                options: Vec::new(),
            });
        }
        // The volume's owner when the image has nothing at the path: the container's user.
        let user_spec = config
            .user
            .clone()
            .or_else(|| image.config.as_ref().and_then(|c| c.user().clone()))
            .unwrap_or_default();
        let who = user::resolve_in_layers(&user_spec, &config.group_add, &image.layers)?;
        let volumes = Volumes::open(&self.root)?;
        let mut made = Vec::new();
        let result = (|| -> Result<()> {
            for m in config.mounts.iter_mut().filter(|m| is_anonymous_request(m)) {
                m.target = clean_target(&m.target);
                let info = volumes.create_anonymous(BTreeMap::new())?;
                made.push(info.name.clone());
                m.source = volumes.prepare(
                    &info.name,
                    &Prepare {
                        layers: image.layers.clone(),
                        target: m.target.clone(),
                        nocopy: false,
                        uid: who.uid,
                        gid: who.gid,
                    },
                )?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.remove_anonymous_volumes(&made);
            return Err(e);
        }
        config.anonymous_volumes.extend(made.iter().cloned());
        Ok(made)
    }

    /// Deletes anonymous volumes of a removed container, except one another container still
    /// mounts (`volumes_from`): that one stays for `volume prune`. Returns the names deleted.
    pub fn remove_anonymous_volumes(&self, names: &[String]) -> Vec<String> {
        if names.is_empty() {
            return Vec::new();
        }
        let Ok(volumes) = Volumes::open(&self.root) else {
            return Vec::new();
        };
        let used = volumes.referenced_by_containers().unwrap_or_default();
        names
            .iter()
            .filter(|n| !used.contains_key(*n) && volumes.remove(n, &[]).is_ok())
            .cloned()
            .collect()
    }

    /// Removes a container like [`ContainerStore::remove`], then its anonymous volumes
    /// (`rm -v`); returns the volumes deleted.
    pub fn remove_with_volumes(&self, key: &str, force: bool) -> Result<Vec<String>> {
        let id = self.resolve(key)?;
        let names = self
            .record(&id)
            .map(|r| r.config.anonymous_volumes)
            .unwrap_or_default();
        self.remove(&id, force)?;
        Ok(self.remove_anonymous_volumes(&names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(vols: &[&str]) -> oci_spec::image::Config {
        let mut c = oci_spec::image::Config::default();
        c.set_volumes(Some(vols.iter().map(|s| (*s).to_string()).collect()));
        c
    }

    fn mount(kind: MountKind, target: &str) -> Mount {
        Mount {
            kind,
            source: PathBuf::from("/x"),
            target: target.into(),
            ..Mount::default()
        }
    }

    #[test]
    fn container_image_volumes_not_covered_by_a_mount() {
        let img = image(&["/var/lib/db/", "/data", "/cache", "/logs", "/"]);
        // A bind, a tmpfs and a named volume at an image volume's path take its place (the
        // paths compared clean); a mount below another path does not.
        let mounts = vec![
            mount(MountKind::Bind, "/data"),
            mount(MountKind::Tmpfs, "/cache/"),
            mount(MountKind::Volume, "/logs/sub"),
        ];
        assert_eq!(
            image_volume_targets(Some(&img), &mounts),
            vec!["/logs".to_string(), "/var/lib/db".to_string()]
        );
        assert!(image_volume_targets(None, &mounts).is_empty());
        assert_eq!(clean_target("a/./b/../c//"), "/a/c");
    }
}
