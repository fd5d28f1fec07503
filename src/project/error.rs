//! Errors of the loader. Every error about the content of a file names the file, line and
//! column, the key path (`services.web.ports[1]`) and what was expected.

use std::fmt;
use std::path::PathBuf;

use super::yaml::Pos;

/// Result alias of the project module.
pub type Result<T, E = ProjectError> = std::result::Result<T, E>;

/// What went wrong while loading a project.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// No compose file in the directory or its parents.
    #[error(
        "no compose file found in {} or its parents (looked for compose.yaml, compose.yml, \
         docker-compose.yaml, docker-compose.yml); use -f to name one",
        dir.display()
    )]
    NotFound {
        /// Where the search started.
        dir: PathBuf,
    },
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not UTF-8.
    #[error("{}: not valid UTF-8 (first bad byte at offset {offset})", path.display())]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// YAML syntax error, or a document the parser refuses (too deep, too large).
    #[error("{pos}: {message}")]
    Yaml {
        /// Where.
        pos: Pos,
        /// What.
        message: String,
    },
    /// Content that is not valid compose: the key path and what was expected.
    #[error("{}", render_invalid(pos.as_ref(), path, message))]
    Invalid {
        /// Where, when known.
        pos: Option<Pos>,
        /// Key path (`services.web.ports[1]`).
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A `depends_on` / `links` / `network_mode` / `extends` cycle.
    #[error("dependency cycle between services: {}", cycle.join(" -> "))]
    Cycle {
        /// The services of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// Several errors (all of them are reported).
    #[error("{}", render_many(.0))]
    Many(Vec<ProjectError>),
}

fn render_invalid(pos: Option<&Pos>, path: &str, message: &str) -> String {
    let mut s = String::new();
    if let Some(p) = pos {
        s.push_str(&p.to_string());
        s.push_str(": ");
    }
    if !path.is_empty() {
        s.push_str(path);
        s.push_str(": ");
    }
    s.push_str(message);
    s
}

fn render_many(errors: &[ProjectError]) -> String {
    struct Lines<'a>(&'a [ProjectError]);
    impl fmt::Display for Lines<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            const SHOWN: usize = 20;
            for (i, e) in self.0.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str("\n")?;
                }
                write!(f, "{e}")?;
            }
            if self.0.len() > SHOWN {
                write!(f, "\n... and {} more errors", self.0.len() - SHOWN)?;
            }
            Ok(())
        }
    }
    Lines(errors).to_string()
}

impl ProjectError {
    /// An [`ProjectError::Invalid`] error.
    #[must_use]
    pub fn invalid(pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        ProjectError::Invalid {
            pos,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The error with the key path of the entry that named the file it is about
    /// (`services.web.env_file` for an env file), unless it carries a key path already.
    #[must_use]
    pub fn with_key(self, key: &str) -> Self {
        match self {
            ProjectError::Invalid { pos, path, message } if path.is_empty() => {
                ProjectError::Invalid {
                    pos,
                    path: key.to_owned(),
                    message,
                }
            }
            e @ (ProjectError::Io { .. } | ProjectError::Utf8 { .. }) => {
                ProjectError::invalid(None, key, e.to_string())
            }
            e => e,
        }
    }

    /// One error from a list (the list itself when longer than one).
    #[must_use]
    pub fn from_many(mut errors: Vec<ProjectError>) -> Self {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ProjectError::Many(errors)
        }
    }
}
