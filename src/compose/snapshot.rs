//! `export` and `commit`: a service container's file system as a tar stream, and a new image
//! from its changes. The engine does the work ([`ContainerStore::export`],
//! [`engine::container::commit`]); this picks the replica.
//!
//! [`ContainerStore::export`]: crate::engine::container::ContainerStore::export
//! [`engine::container::commit`]: crate::engine::container::commit

use std::io::Write;

use super::{Result, Stack};
use crate::engine::container::commit::CommitOptions;
use crate::engine::image::Image;

impl Stack {
    /// `export`: writes the root file system of replica `index` of `service` to `w` as a tar
    /// stream (without its volumes, bind mounts and tmpfs), running or stopped.
    ///
    /// # Errors
    /// No such replica, or reading its file system or writing `w` fails.
    pub fn export<W: Write>(&self, service: &str, index: u32, w: W) -> Result<W> {
        let c = self.container_of(service, index)?;
        Ok(self.containers.export(&c.id, w)?)
    }

    /// `commit`: an image from the changes of replica `index` of `service`; returns the
    /// container's name and the image.
    ///
    /// # Errors
    /// No such replica, a bad reference or `--change`, or the image store fails.
    pub fn commit(
        &self,
        service: &str,
        index: u32,
        opts: &CommitOptions,
    ) -> Result<(String, Image)> {
        let c = self.container_of(service, index)?;
        let image = self.containers.commit(&self.images, &c.id, opts)?;
        Ok((c.name, image))
    }
}
