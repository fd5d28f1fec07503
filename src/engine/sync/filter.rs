//! Which paths of a watched tree are synced: a `develop.watch` rule's `ignore` and `include`
//! patterns, plus the paths every watch leaves alone (`.git`, editors' temporary and swap
//! files).
//!
//! Paths are relative to the rule's `path`, `/`-separated; `""` is the rule's path itself and
//! is never skipped. `ignore` and `include` take `.dockerignore` patterns (as docker compose
//! reads them), matched by the builder's matcher (`engine::build::ignore`): a pattern matches
//! a path when it matches the whole path or one of its parent directories, `*` stays within
//! one component, `**` spans any number, `!` re-includes.

use crate::engine::build::ignore::{Ignore, PatternError, glob_match};

/// Names that are never synced, at any depth: editors' temporary and swap files (Vim's
/// `.name.swp`, `.name.swx`, `name~` and its `4913` write test; Emacs' `.#name` locks and
/// `#name#` autosaves; JetBrains' safe-write `name___jb_tmp___`/`name___jb_old___`).
const EPHEMERAL: [&str; 8] = [
    ".*.swp",
    ".*.swx",
    "*~",
    "4913",
    ".#*",
    "#*#",
    "*___jb_tmp___",
    "*___jb_old___",
];

/// Compiles a rule's pattern list (the builder's `.dockerignore` matcher, one pattern an
/// item).
///
/// # Errors
/// A pattern that does not compile, named.
pub fn patterns(lines: &[String]) -> Result<Ignore, PatternError> {
    Ignore::parse(&lines.join("\n"))
}

/// Whether a `!` pattern of `ig` could bring back something below the directory `rel`: its
/// literal beginning (up to its first wildcard) leads into `rel` or below it.
#[must_use]
pub fn may_reinclude_below(ig: &Ignore, rel: &str) -> bool {
    let dir: Vec<&str> = rel.split('/').collect();
    ig.lines
        .iter()
        .filter_map(|l| l.strip_prefix('!'))
        .any(|p| {
            p.split('/')
                .take_while(|c| !c.contains(['*', '?', '[', '\\']))
                .zip(dir.iter())
                .all(|(a, b)| a == *b)
        })
}

/// What one rule syncs.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    ignore: Ignore,
    include: Option<Ignore>,
}

fn ephemeral(name: &str) -> bool {
    EPHEMERAL.iter().any(|p| glob_match(p, name, true))
}

impl Filter {
    /// A rule's filter from its `ignore` and `include` lists.
    ///
    /// # Errors
    /// A pattern that does not compile, named.
    pub fn new(ignore: &[String], include: Option<&[String]>) -> Result<Filter, PatternError> {
        Ok(Filter {
            ignore: patterns(ignore)?,
            include: include.map(patterns).transpose()?,
        })
    }

    /// Whether `rel` (a file when `!is_dir`) is left alone. A directory is skipped by
    /// `ignore` and the defaults only: `include` selects files.
    #[must_use]
    pub fn skip(&self, rel: &str, is_dir: bool) -> bool {
        if rel.is_empty() {
            return false;
        }
        if rel.split('/').any(|c| c == ".git") {
            return true;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if !is_dir && ephemeral(name) {
            return true;
        }
        if self.ignore.ignored(rel) {
            return true;
        }
        !is_dir && self.include.as_ref().is_some_and(|i| !i.ignored(rel))
    }

    /// Whether nothing below the directory `rel` can be synced, so it need not be walked or
    /// watched.
    #[must_use]
    pub fn prune(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        if rel.split('/').any(|c| c == ".git") {
            return true;
        }
        self.ignore.ignored(rel) && !may_reinclude_below(&self.ignore, rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_filter_follows_dockerignore_patterns() {
        let f = Filter::new(
            &[
                "node_modules/".into(),
                "*.log".into(),
                "build".into(),
                "!build/keep".into(),
                "**/*.tmp".into(),
            ],
            None,
        )
        .unwrap();
        assert!(f.skip("node_modules/x/y.js", false));
        assert!(f.prune("node_modules"));
        // Top level only (dockerignore, not gitignore).
        assert!(f.skip("a.log", false));
        assert!(!f.skip("src/a.log", false));
        assert!(f.skip("src/deep/a.tmp", false));
        assert!(f.skip("build/out", false));
        assert!(!f.skip("build/keep", false));
        // An exclusion below keeps an ignored directory walked.
        assert!(!f.prune("build"));
        assert!(!f.skip("", true));
    }

    #[test]
    fn watch_filter_defaults_and_include() {
        let f = Filter::new(&[], Some(&["*.js".into(), "lib/**".into()])).unwrap();
        for p in [
            ".git/HEAD",
            "sub/.git",
            "src/.main.js.swp",
            "main.js~",
            "4913",
            ".#main.js",
            "#main.js#",
            "main.js___jb_tmp___",
        ] {
            assert!(f.skip(p, false), "{p}");
        }
        assert!(f.prune(".git"));
        assert!(!f.skip("main.js", false));
        assert!(f.skip("main.css", false));
        assert!(!f.skip("lib/a/b.css", false));
        // Directories are walked whatever `include` says.
        assert!(!f.skip("src", true));
        assert!(Filter::new(&["[ab".into()], None).is_err());
    }
}
