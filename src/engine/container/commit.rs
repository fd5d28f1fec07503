//! `commit`: a new image from a container's changes, as `docker commit` makes it.
//!
//! The image is the container's image plus one layer: the container's overlay upper
//! directory as an OCI layer diff (overlay whiteouts — character devices 0:0 — become
//! `.wh.NAME` entries, opaque directories `.wh..wh..opq`), written by the builder's
//! [`upper_to_tar`], which walks the directory through descriptors and never follows a link
//! the container made. The container is frozen while its upper directory is read unless
//! `pause` is off (docker's `--pause=false`); the walk is safe either way, only the
//! snapshot's consistency differs.
//!
//! The config is the image's, with what the container was created with on top, as docker
//! commit merges them: entrypoint and command (an entrypoint given without a command drops
//! the image's command, as at run), environment (the container's values win), working
//! directory, user, labels, stop signal; then each `--change` instruction. The history
//! gains one entry: the container's command line, the author and the message.
//!
//! The empty `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` tug makes in the upper
//! directory as mount targets (when the image lacks them) are part of the layer, as are the
//! mountpoints of volumes and tmpfs; their contents are not.
//!
//! [`upper_to_tar`]: crate::engine::build::layer::upper_to_tar

use oci_spec::image::{Config, HistoryBuilder};

use super::{ContainerError, ContainerStore, Result, Status};
use crate::engine::build::layer::{TarOut, upper_to_tar};
use crate::engine::image::{self, Image, ImageStore, Reference, StoredLayerRef};

/// Options of `commit`.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `REPOSITORY[:TAG]` of the new image; unnamed when `None`.
    pub reference: Option<String>,
    /// The author (`-a`).
    pub author: Option<String>,
    /// The commit message (`-m`), in the history.
    pub message: Option<String>,
    /// Dockerfile instructions applied to the config (`-c`).
    pub changes: Vec<String>,
    /// Freeze a running container while its changes are read.
    pub pause: bool,
}

impl ContainerStore {
    /// Makes an image from container `key`'s changes (see [`commit`](self)).
    ///
    /// # Errors
    /// No such container, its image is gone, a bad reference or `--change`, or the store
    /// cannot be written.
    pub fn commit(&self, images: &ImageStore, key: &str, opts: &CommitOptions) -> Result<Image> {
        let id = self.resolve(key)?;
        let rec = self.record(&id)?;
        let names: Vec<Reference> = opts
            .reference
            .as_deref()
            .map(Reference::parse)
            .transpose()?
            .into_iter()
            .collect();
        // Held from here on: no GC removes the base image's layers under the commit.
        let _hold = images.hold()?;
        let base = images.resolve(&rec.config.image_id)?;
        let mut config = merged_config(base.config.config().clone().unwrap_or_default(), &rec);
        for c in &opts.changes {
            image::apply_change(&mut config, c)?;
        }
        let layer = {
            let _frozen = if opts.pause {
                Frozen::freeze(self, &id)?
            } else {
                None
            };
            self.changes_layer(images, &id)?
        };
        let mut layers: Vec<StoredLayerRef> = base
            .manifest
            .layers()
            .iter()
            .zip(base.diff_ids())
            .map(|(d, diff_id)| StoredLayerRef {
                digest: d.digest().to_string(),
                size: d.size(),
                media_type: d.media_type().to_string(),
                diff_id: diff_id.clone(),
            })
            .collect();
        let mut ic = base.config.clone();
        let mut diff_ids = base.diff_ids().to_vec();
        diff_ids.push(layer.diff_id.clone());
        layers.push(layer);
        let mut rootfs = ic.rootfs().clone();
        rootfs.set_diff_ids(diff_ids);
        ic.set_rootfs(rootfs);
        let created = image::now_rfc3339();
        let mut h = HistoryBuilder::default()
            .created(created.clone())
            .created_by(created_by(&rec));
        if let Some(a) = &opts.author {
            h = h.author(a.clone());
        }
        if let Some(m) = &opts.message {
            h = h.comment(m.clone());
        }
        let h = h
            .build()
            .map_err(|e| image::Error::Corrupt(e.to_string()))?;
        let mut history = ic.history().clone().unwrap_or_default();
        history.push(h);
        ic.set_history(Some(history));
        ic.set_created(Some(created));
        ic.set_author(opts.author.clone());
        ic.set_config(Some(config));
        let bytes = ic
            .to_string()
            .map_err(|e| image::Error::Corrupt(e.to_string()))?;
        Ok(images.commit_config(bytes.as_bytes(), &layers, &names)?)
    }

    /// Stores the container's upper directory as a layer.
    fn changes_layer(&self, images: &ImageStore, id: &str) -> Result<StoredLayerRef> {
        let upper = self.container_dir(id).join("upper");
        let (r, w) = std::io::pipe().map_err(|e| ContainerError::Io {
            path: upper.clone(),
            source: e,
        })?;
        std::thread::scope(|s| {
            let up = upper.clone();
            let writer = s.spawn(move || -> std::io::Result<()> {
                let mut out = TarOut::new(w, None);
                upper_to_tar(&up, &mut out)?;
                out.finish()?;
                Ok(())
            });
            let stored = images.ingest_tar(r, "container changes");
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the layer writer panicked")));
            // The writer's error is the cause when both failed (the reader saw a cut stream).
            written.map_err(|e| ContainerError::Io {
                path: upper.clone(),
                source: e,
            })?;
            Ok(stored?)
        })
    }
}

/// A container frozen for the time the guard lives.
struct Frozen<'a> {
    store: &'a ContainerStore,
    id: String,
}

impl<'a> Frozen<'a> {
    /// Freezes `id` when it runs (a paused or stopped container is left as it is).
    fn freeze(store: &'a ContainerStore, id: &str) -> Result<Option<Frozen<'a>>> {
        if store.state(id).status != Status::Running {
            return Ok(None);
        }
        store.cgroup(id)?.freeze(true)?;
        Ok(Some(Frozen {
            store,
            id: id.to_string(),
        }))
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Ok(cg) = self.store.cgroup(&self.id) {
            let _ = cg.freeze(false);
        }
    }
}

/// What the history says made the layer: the container's command line (docker's
/// `CreatedBy`).
fn created_by(rec: &super::Record) -> String {
    let img = rec.image_config.as_ref();
    let entry = rec
        .config
        .entrypoint
        .clone()
        .or_else(|| img.and_then(|c| c.entrypoint().clone()))
        .unwrap_or_default();
    let cmd = match (&rec.config.entrypoint, &rec.config.command) {
        (_, Some(c)) => c.clone(),
        (Some(_), None) => Vec::new(),
        (None, None) => img.and_then(|c| c.cmd().clone()).unwrap_or_default(),
    };
    entry.into_iter().chain(cmd).collect::<Vec<_>>().join(" ")
}

/// The image's config with the container's settings on top (docker commit's merge).
fn merged_config(mut c: Config, rec: &super::Record) -> Config {
    let cc = &rec.config;
    if let Some(e) = &cc.entrypoint {
        c.set_entrypoint((!e.is_empty()).then(|| e.clone()));
        if cc.command.is_none() {
            c.set_cmd(None);
        }
    }
    if let Some(cmd) = &cc.command {
        c.set_cmd(Some(cmd.clone()));
    }
    if !cc.env.is_empty() {
        let mut env = c.env().clone().unwrap_or_default();
        for kv in &cc.env {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(a, _)| a) != k);
            env.push(kv.clone());
        }
        c.set_env(Some(env));
    }
    if let Some(w) = &cc.working_dir {
        c.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &cc.user {
        c.set_user(Some(u.clone()));
    }
    if !cc.labels.is_empty() {
        let mut labels = c.labels().clone().unwrap_or_default();
        labels.extend(cc.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        c.set_labels(Some(labels));
    }
    if let Some(s) = &cc.stop_signal {
        c.set_stop_signal(Some(s.clone()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_config_is_the_image_s_with_the_container_s_on_top() {
        let mut img = Config::default();
        img.set_cmd(Some(vec!["sh".into()]));
        img.set_env(Some(vec!["PATH=/bin".into(), "A=image".into()]));
        img.set_user(Some("app".into()));
        let rec =
            |entrypoint: Option<Vec<String>>, command: Option<Vec<String>>| super::super::Record {
                id: String::new(),
                created: String::new(),
                config: super::super::ContainerConfig {
                    entrypoint,
                    command,
                    env: vec!["A=container".into(), "B=2".into()],
                    working_dir: Some("/srv".into()),
                    ..Default::default()
                },
                layers: Vec::new(),
                image_config: Some(img.clone()),
                spec_us: 0,
            };
        let c = merged_config(
            img.clone(),
            &rec(None, Some(vec!["echo".into(), "hi".into()])),
        );
        assert_eq!(
            c.cmd().as_deref(),
            Some(&["echo".to_string(), "hi".into()][..])
        );
        assert_eq!(
            c.env().as_deref(),
            Some(&["PATH=/bin".to_string(), "A=container".into(), "B=2".into()][..])
        );
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("app"));
        // An entrypoint without a command drops the image's command, as at run.
        let r = rec(Some(vec!["/bin/true".into()]), None);
        let c = merged_config(img.clone(), &r);
        assert_eq!(c.cmd(), &None);
        assert_eq!(created_by(&r), "/bin/true");
        assert_eq!(created_by(&rec(None, None)), "sh");
    }
}
