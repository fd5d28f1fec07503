//! A service's `build:` on the engine's builder: the compose keys become
//! [`BuildOptions`]; keys tug cannot honour are refused by name. [`Stack::build`] is the
//! `build` verb: which services, in which order, each built (and pushed) in turn.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Error, Reporter, Result, Stack};
use crate::engine::build::{self, BuildOptions, Event, SecretSource};
use crate::plan;

/// What the command line adds to every build (`tug build`, `up --build`).
#[derive(Debug, Clone, Default)]
pub struct BuildOverrides {
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--build-arg K=V` (over the service's `args`).
    pub args: BTreeMap<String, String>,
}

/// `build`.
#[derive(Debug, Clone, Default)]
pub struct BuildServicesOptions {
    /// The services (every service with a `build:` section when empty).
    pub services: Vec<String>,
    /// The services the named ones depend on too, dependencies first.
    pub with_dependencies: bool,
    /// What the command line adds to every build.
    pub overrides: BuildOverrides,
    /// Push each image once it is built.
    pub push: bool,
}

impl Stack {
    /// `build`: the images of the services with a `build:` section, one after another in
    /// the order given (dependencies first with `with_dependencies`), each pushed after it
    /// is built when asked. Each build's steps go to [`Reporter::build_progress`]; a built or
    /// pushed image and a named service without `build:` (skipped) are reported as lines.
    ///
    /// # Errors
    /// An unknown service, refused `build:` keys, a failed build or push: the first one ends
    /// the work (the images built before it stay).
    pub fn build(&self, opts: &BuildServicesOptions, rep: &mut dyn Reporter) -> Result<()> {
        for name in &self.services_to_build(opts)? {
            let s = self
                .project
                .services
                .get(name)
                .ok_or_else(|| Error::NotFound(format!("no such service: {name}")))?;
            if s.build.is_none() {
                if opts.services.contains(name) {
                    rep.line("Service", name, "no build section, skipped");
                }
                continue;
            }
            let image = plan::service_image(&self.project.name, s);
            let built = {
                let progress = rep.build_progress(name);
                self.build_service(name, &image, &opts.overrides, &*progress)?
            };
            rep.line(
                "Service",
                name,
                &format!("built {image} ({})", built.short_id()),
            );
            if opts.push {
                self.push_image(&image)?;
                rep.line("Service", name, &format!("pushed {image}"));
            }
        }
        Ok(())
    }

    /// The services `build` goes through, in order, each once.
    fn services_to_build(&self, opts: &BuildServicesOptions) -> Result<Vec<String>> {
        let mut names: Vec<String> = if opts.services.is_empty() {
            self.project
                .services
                .iter()
                .filter(|(_, s)| s.build.is_some())
                .map(|(n, _)| n.clone())
                .collect()
        } else if opts.with_dependencies {
            plan::select_services(&self.desired(), &opts.services, false)?
        } else {
            opts.services.clone()
        };
        names.dedup();
        Ok(names)
    }

    /// The builder's options for `service`'s `build:` (image named `image`).
    ///
    /// # Errors
    /// A `build:` key tug cannot carry out, or a secret that is not declared.
    // Long: one statement per key of compose's `build:`, refused keys named, in the order of the
    // compose specification.
    pub(super) fn build_options(
        &self,
        service: &str,
        image: &str,
        over: &BuildOverrides,
    ) -> Result<BuildOptions> {
        let s = self
            .project
            .services
            .get(service)
            .ok_or_else(|| Error::NotFound(format!("no such service: {service}")))?;
        let b = s
            .build
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("service {service} has no build section")))?;
        let refuse = |key: &str| {
            Err(Error::Unsupported(format!(
                "service {service}: build.{key} is not supported by tug's builder"
            )))
        };
        if !b.entitlements.is_empty() {
            return refuse("entitlements");
        }
        if b.provenance.is_some() {
            return refuse("provenance");
        }
        if b.sbom.is_some() {
            return refuse("sbom");
        }
        if !b.ssh.is_empty() {
            return refuse("ssh");
        }
        if !b.cache_to.is_empty() {
            return refuse("cache_to");
        }
        if !b.no_cache_filter.is_empty() {
            return refuse("no_cache_filter");
        }
        if b.isolation.as_deref().is_some_and(|i| i != "default") {
            return refuse("isolation");
        }
        if !b.ulimits.is_empty() {
            return refuse("ulimits");
        }
        if b.privileged {
            return refuse("privileged");
        }
        let host = format!("linux/{}", crate::engine::image::host_arch());
        if b.platforms.iter().any(|p| p != &host) {
            return Err(Error::Unsupported(format!(
                "service {service}: build.platforms: tug builds for the host only ({host})"
            )));
        }
        let context = b.context.clone().unwrap_or_else(|| ".".into());
        if context.contains("://") || context.starts_with("git@") {
            return Err(Error::Unsupported(format!(
                "service {service}: build.context {context}: remote contexts are not supported"
            )));
        }
        let context = PathBuf::from(context);
        let context = if context.is_absolute() {
            context
        } else {
            self.project.working_dir.join(context)
        };
        let mut build_args = BTreeMap::new();
        for (k, v) in &b.args {
            match v {
                Some(v) => {
                    build_args.insert(k.clone(), v.clone());
                }
                None => {
                    if let Some(v) = self.project.environment.get(k) {
                        build_args.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        build_args.extend(over.args.clone());
        let mut secrets = BTreeMap::new();
        for r in &b.secrets {
            let obj = self.project.secrets.get(&r.source).ok_or_else(|| {
                Error::NotFound(format!(
                    "service {service}: build secret {} is not declared",
                    r.source
                ))
            })?;
            let src = if let Some(f) = &obj.file {
                SecretSource::File(PathBuf::from(f))
            } else if let Some(var) = &obj.environment {
                let v = self.project.environment.get(var).ok_or_else(|| {
                    Error::Invalid(format!(
                        "build secret {}: environment variable {var} is not set",
                        r.source
                    ))
                })?;
                SecretSource::Content(v.clone().into_bytes())
            } else {
                return Err(Error::Invalid(format!(
                    "build secret {}: needs file or environment",
                    r.source
                )));
            };
            let id = r.target.clone().unwrap_or_else(|| r.source.clone());
            secrets.insert(id, src);
        }
        let mut additional_contexts = BTreeMap::new();
        for (k, v) in &b.additional_contexts {
            if v.contains("://") || v.starts_with("docker-image://") {
                return Err(Error::Unsupported(format!(
                    "service {service}: build.additional_contexts.{k}: only local directories are supported"
                )));
            }
            let p = PathBuf::from(v);
            additional_contexts.insert(
                k.clone(),
                if p.is_absolute() {
                    p
                } else {
                    self.project.working_dir.join(p)
                },
            );
        }
        let mut tags = vec![image.to_string()];
        tags.extend(b.tags.iter().cloned());
        Ok(BuildOptions {
            context,
            dockerfile: b.dockerfile.as_ref().map(PathBuf::from),
            dockerfile_inline: b.dockerfile_inline.clone(),
            tags,
            target: b.target.clone(),
            build_args,
            labels: b.labels.clone(),
            no_cache: b.no_cache || over.no_cache,
            pull: b.pull || over.pull,
            network: b.network.clone(),
            secrets,
            additional_contexts,
            extra_hosts: b.extra_hosts.clone(),
            shm_size: b.shm_size.bytes().filter(|n| *n > 0),
            cache_from: b.cache_from.clone(),
            exe: None,
        })
    }

    /// Builds `service`'s image, named `image`.
    ///
    /// # Errors
    /// Refused keys and build failures (the failing step, its line and its output).
    pub(super) fn build_service(
        &self,
        service: &str,
        image: &str,
        over: &BuildOverrides,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<crate::engine::image::Image> {
        let opts = self.build_options(service, image, over)?;
        let out = build::build(&self.root, &opts, events)
            .map_err(|e| Error::Invalid(format!("service {service}: {e}")))?;
        Ok(out.image)
    }
}
