//! The build context: a directory read through a [`View`] (so `..` and symlinks stay
//! inside it) minus what `.dockerignore` excludes, and the content hashes the cache keys
//! use.
//!
//! The ignore file is `<Dockerfile>.dockerignore` next to the Dockerfile when it exists,
//! else `<context>/.dockerignore`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::Ignore;
use super::view::{Kind, View};
use super::{BuildError, Result, io_ctx};

/// A source of files for `COPY`: the context, another named context, or a stage.
#[derive(Debug, Clone)]
pub struct Source {
    /// The files.
    pub view: View,
    /// What `.dockerignore` excludes (contexts only).
    pub ignore: Option<Ignore>,
    /// Ownership of copied files is reset to 0:0 (local contexts, as Docker does).
    pub reset_owner: bool,
    /// For a stage: its cache key, which stands for its whole content.
    pub key: Option<String>,
    /// For messages.
    pub name: String,
    /// A downloaded file (`ADD URL`): never unpacked as an archive.
    pub remote: bool,
}

/// Opens the context directory `dir`; `dockerfile` is the Dockerfile's path (for its own
/// ignore file).
pub fn open(dir: &Path, dockerfile: Option<&Path>) -> Result<Source> {
    let md = std::fs::metadata(dir).map_err(io_ctx(format!(
        "cannot read the build context {}",
        dir.display()
    )))?;
    if !md.is_dir() {
        return Err(BuildError::Invalid(format!(
            "the build context {} is not a directory",
            dir.display()
        )));
    }
    let own = dockerfile.map(|d| {
        let mut p = d.as_os_str().to_owned();
        p.push(".dockerignore");
        PathBuf::from(p)
    });
    let text = match own.as_ref().filter(|p| p.is_file()) {
        Some(p) => {
            std::fs::read_to_string(p).map_err(io_ctx(format!("cannot read {}", p.display())))?
        }
        None => match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_ctx(".dockerignore")(e)),
        },
    };
    let ignore =
        Ignore::parse(&text).map_err(|e| BuildError::Invalid(format!(".dockerignore: {e}")))?;
    let view = View::open(&[dir.to_path_buf()])
        .map_err(io_ctx(format!("cannot open {}", dir.display())))?;
    Ok(Source {
        view,
        ignore: Some(ignore),
        reset_owner: true,
        key: None,
        name: "context".into(),
        remote: false,
    })
}

impl Source {
    /// Whether `comps` is excluded by `.dockerignore`.
    #[must_use]
    pub fn ignored(&self, comps: &[String]) -> bool {
        !comps.is_empty()
            && self
                .ignore
                .as_ref()
                .is_some_and(|ig| ig.ignored(&comps.join("/")))
    }

    /// The paths a `COPY` source pattern names (resolved inside the source; globs in any
    /// component), sorted. Ignored paths are left out; an ignored or missing plain path is
    /// an error.
    pub fn expand(&self, pattern: &str) -> Result<Vec<Vec<String>>> {
        let has_glob = pattern.contains(['*', '?', '[']);
        if !has_glob {
            let comps = self
                .view
                .resolve(pattern, true)
                .map_err(|e| BuildError::Invalid(format!("{pattern}: {e}")))?;
            if self.ignored(&comps) || self.view.lstat(&comps).is_none() {
                return Err(BuildError::Invalid(format!(
                    "{pattern}: not found in the {}",
                    self.name
                )));
            }
            return Ok(vec![comps]);
        }
        let parts = super::view::split(pattern);
        let mut found: Vec<Vec<String>> = vec![Vec::new()];
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut next = Vec::new();
            for base in &found {
                if p == ".." {
                    let mut b = base.clone();
                    b.pop();
                    next.push(b);
                    continue;
                }
                if p == "." {
                    next.push(base.clone());
                    continue;
                }
                if p.contains(['*', '?', '[']) {
                    for name in self.view.list(base) {
                        if super::ignore::glob_match(p, &name, true) {
                            let mut c = base.clone();
                            c.push(name);
                            next.push(c);
                        }
                    }
                } else {
                    let mut c = base.clone();
                    c.push(p.clone());
                    next.push(c);
                }
            }
            // Follow symlinks of intermediate components inside the source.
            found = next
                .into_iter()
                .filter_map(|c| {
                    let r = self.view.resolve(&c.join("/"), !last).ok()?;
                    self.view.lstat(&r).map(|_| r)
                })
                .collect();
        }
        found.retain(|c| !self.ignored(c));
        found.sort();
        found.dedup();
        if found.is_empty() {
            return Err(BuildError::Invalid(format!(
                "{pattern}: no source files were specified (nothing in the {} matches)",
                self.name
            )));
        }
        Ok(found)
    }

    /// Every entry under directory `comps` (not following symlinks), with paths relative to
    /// it, in sorted walk order; ignored entries are left out (an ignored directory is still
    /// walked when an exception pattern might re-include something below it).
    #[must_use]
    pub fn walk(&self, comps: &[String]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk_into(comps, &mut Vec::new(), &mut out);
        out
    }

    fn walk_into(&self, base: &[String], rel: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut dir = base.to_vec();
        dir.extend(rel.iter().cloned());
        let exceptions = self.ignore.as_ref().is_some_and(Ignore::has_exclusions);
        for name in self.view.list(&dir) {
            let mut full = dir.clone();
            full.push(name.clone());
            let ignored = self.ignored(&full);
            let Some(e) = self.view.lstat(&full) else {
                continue;
            };
            rel.push(name);
            if !ignored {
                out.push(rel.clone());
            }
            if e.kind == Kind::Dir && (!ignored || exceptions) {
                self.walk_into(base, rel, out);
            }
            rel.pop();
        }
    }

    /// Adds the content of regular file `comps` to `h`.
    pub fn hash_file(&self, comps: &[String], h: &mut Sha256) -> Result<()> {
        let mut f = self
            .view
            .open_file(comps)
            .map_err(io_ctx(format!("cannot read {}", comps.join("/"))))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io_ctx(format!("cannot read {}", comps.join("/"))))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_expand_and_ignore() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("ctx");
        std::fs::create_dir_all(c.join("src/sub")).unwrap();
        std::fs::write(c.join("a.txt"), "a").unwrap();
        std::fs::write(c.join("b.txt"), "b").unwrap();
        std::fs::write(c.join("secret.key"), "s").unwrap();
        std::fs::write(c.join("src/main.rs"), "m").unwrap();
        std::fs::write(c.join("src/sub/x.tmp"), "x").unwrap();
        std::fs::write(t.path().join("outside"), "o").unwrap();
        std::os::unix::fs::symlink("../outside", c.join("escape")).unwrap();
        std::fs::write(c.join(".dockerignore"), "secret.*\nsrc/sub\n").unwrap();
        let s = open(&c, None).unwrap();
        assert_eq!(
            s.expand("*.txt").unwrap(),
            vec![vec!["a.txt"], vec!["b.txt"]]
        );
        assert!(s.expand("secret.key").is_err());
        assert!(s.expand("*.key").is_err());
        // `..` and symlinks stay inside the context.
        assert!(s.expand("../outside").is_err());
        assert!(s.expand("escape").is_err());
        let w: Vec<String> = s.walk(&[]).iter().map(|c| c.join("/")).collect();
        assert_eq!(
            w,
            vec![
                ".dockerignore",
                "a.txt",
                "b.txt",
                "escape",
                "src",
                "src/main.rs"
            ]
        );
    }
}
