//! Phase 1: find the compose files.
//!
//! Without `-f`, compose looks in the working directory, then in each parent, for the first
//! directory holding one of `compose.yaml`, `compose.yml`, `docker-compose.yaml`,
//! `docker-compose.yml` (in that order of preference) and adds the matching override file
//! (`compose.override.yaml`, ...) from the same directory when present. With `-f` the files
//! are taken as given (`-` is standard input), relative to the working directory.

use std::path::{Path, PathBuf};

use super::error::{ProjectError, Result};

/// Default file names, in order of preference.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Override file names, matching [`DEFAULT_FILES`].
pub const OVERRIDE_FILES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// The compose files to load: `explicit` (made absolute against `cwd`) or the default file
/// (and its override) of `cwd` or its nearest parent that has one.
///
/// # Errors
/// [`ProjectError::NotFound`] when no default file exists; [`ProjectError::Io`] when an
/// explicit file does not exist.
pub fn find_files(cwd: &Path, explicit: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if !explicit.is_empty() {
        let mut out = Vec::new();
        for f in explicit {
            if f.as_os_str() == "-" {
                out.push(f.clone());
                continue;
            }
            let p = absolute(cwd, f);
            if !p.is_file() {
                return Err(ProjectError::Io {
                    path: p,
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            out.push(p);
        }
        return Ok(out);
    }
    let mut dir = Some(cwd);
    while let Some(d) = dir {
        for (i, name) in DEFAULT_FILES.iter().enumerate() {
            let p = d.join(name);
            if p.is_file() {
                let mut out = vec![p];
                // The override matching the found name first, then any other one.
                let mut overrides = vec![OVERRIDE_FILES[i]];
                overrides.extend(OVERRIDE_FILES.iter().filter(|o| **o != OVERRIDE_FILES[i]));
                if let Some(o) = overrides.iter().map(|o| d.join(o)).find(|o| o.is_file()) {
                    out.push(o);
                }
                return Ok(out);
            }
        }
        dir = d.parent();
    }
    Err(ProjectError::NotFound {
        dir: cwd.to_path_buf(),
    })
}

/// `p` made absolute against `base`, with `.` and `..` components folded lexically.
#[must_use]
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    clean(&joined)
}

/// Folds `.` and `..` components without touching the file system.
#[must_use]
pub fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_default_file_in_parent_with_override() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("docker-compose.yml"), "services: {}\n").unwrap();
        std::fs::write(root.join("docker-compose.override.yml"), "services: {}\n").unwrap();
        let sub = root.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let files = find_files(&sub, &[]).unwrap();
        assert_eq!(
            files,
            vec![
                root.join("docker-compose.yml"),
                root.join("docker-compose.override.yml")
            ]
        );
    }

    #[test]
    fn find_prefers_compose_yaml() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("compose.yaml"), "").unwrap();
        std::fs::write(tmp.path().join("docker-compose.yml"), "").unwrap();
        let files = find_files(tmp.path(), &[]).unwrap();
        assert_eq!(files, vec![tmp.path().join("compose.yaml")]);
    }

    #[test]
    fn find_reports_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let e = find_files(tmp.path(), &[PathBuf::from("nope.yaml")]).unwrap_err();
        assert!(e.to_string().contains("nope.yaml"), "{e}");
        std::fs::write(tmp.path().join("x.yaml"), "").unwrap();
        let f = find_files(tmp.path(), &[PathBuf::from("./x.yaml")]).unwrap();
        assert_eq!(f, vec![tmp.path().join("x.yaml")]);
    }

    #[test]
    fn find_clean_folds_dots() {
        assert_eq!(clean(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(
            absolute(Path::new("/w"), Path::new("../x")),
            PathBuf::from("/x")
        );
    }
}
