//! Which paths of a watched tree are synced: a `develop.watch` rule's `ignore` and `include`
//! patterns, plus the paths every watch leaves alone (`.git`, editors' temporary and swap
//! files).
//!
//! Paths are relative to the rule's `path`, `/`-separated; `""` is the rule's path itself and
//! is never skipped. `ignore` and `include` take `.dockerignore` patterns (as docker compose
//! reads them): a pattern matches a path when it matches the whole path or one of its parent
//! directories, `*` stays within one component, `**` spans any number, `!` re-includes.

use regex::Regex;

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

/// A list of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    patterns: Vec<(Regex, bool)>,
    /// The leading literal components of each `!` pattern (up to its first wildcard).
    exclusions: Vec<Vec<String>>,
}

/// Cleans a pattern as Go's `filepath.Clean` does, relative.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                }
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A `.dockerignore` pattern as a regular expression over a whole `/`-separated path.
fn to_regex(pat: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let mut chars = pat.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let mut class = String::from("[");
                if matches!(chars.peek(), Some('^' | '!')) {
                    chars.next();
                    class.push('^');
                }
                let mut closed = false;
                while let Some(d) = chars.next() {
                    match d {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(e) = chars.next() {
                                class.push_str(&regex::escape(&e.to_string()));
                            }
                        }
                        '[' | '&' | '~' => {
                            class.push('\\');
                            class.push(d);
                        }
                        d => class.push(d),
                    }
                }
                if !closed {
                    return Err(format!("bad pattern {pat:?}: unclosed `[`"));
                }
                class.push(']');
                re.push_str(&class);
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    re.push_str(&regex::escape(&e.to_string()));
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("bad pattern {pat:?}: {e}"))
}

impl Patterns {
    /// Compiles patterns, one per item (`#` comments and blank items skipped).
    ///
    /// # Errors
    /// A pattern that does not compile, named.
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Result<Patterns, String> {
        let mut patterns = Vec::new();
        let mut exclusions = Vec::new();
        for line in lines {
            let l = line.as_ref().trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (exclusion, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = clean(p);
            if p.is_empty() {
                continue;
            }
            patterns.push((to_regex(&p)?, exclusion));
            if exclusion {
                exclusions.push(
                    p.split('/')
                        .take_while(|c| !c.contains(['*', '?', '[', '\\']))
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
        Ok(Patterns {
            patterns,
            exclusions,
        })
    }

    /// Parses the text of a `.dockerignore` file.
    ///
    /// # Errors
    /// A pattern that does not compile, named.
    pub fn parse(text: &str) -> Result<Patterns, String> {
        Patterns::new(&text.lines().collect::<Vec<_>>())
    }

    /// Whether `rel` matches: the last pattern that matches it or a parent of it decides.
    #[must_use]
    pub fn matches(&self, rel: &str) -> bool {
        let mut hit = false;
        for (re, exclusion) in &self.patterns {
            let m = re.is_match(rel) || rel.match_indices('/').any(|(i, _)| re.is_match(&rel[..i]));
            if m {
                hit = !exclusion;
            }
        }
        hit
    }

    /// Whether a `!` pattern could bring back something below a matched directory.
    #[must_use]
    pub fn has_exclusions(&self) -> bool {
        !self.exclusions.is_empty()
    }

    /// Whether a `!` pattern could bring back something below the directory `rel`: its
    /// literal beginning leads into `rel` or below it.
    #[must_use]
    pub fn may_reinclude_below(&self, rel: &str) -> bool {
        let dir: Vec<&str> = rel.split('/').collect();
        self.exclusions
            .iter()
            .any(|lit| lit.iter().zip(dir.iter()).all(|(a, b)| a.as_str() == *b))
    }

    /// True when there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// What one rule syncs.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    ignore: Patterns,
    include: Option<Patterns>,
}

fn ephemeral(name: &str) -> bool {
    static RE: std::sync::OnceLock<Vec<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| EPHEMERAL.iter().filter_map(|p| to_regex(p).ok()).collect())
        .iter()
        .any(|r| r.is_match(name))
}

impl Filter {
    /// A rule's filter from its `ignore` and `include` lists.
    ///
    /// # Errors
    /// A pattern that does not compile, named.
    pub fn new(ignore: &[String], include: Option<&[String]>) -> Result<Filter, String> {
        Ok(Filter {
            ignore: Patterns::new(ignore)?,
            include: include.map(Patterns::new).transpose()?,
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
        if self.ignore.matches(rel) {
            return true;
        }
        !is_dir && self.include.as_ref().is_some_and(|i| !i.matches(rel))
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
        self.ignore.matches(rel) && !self.ignore.may_reinclude_below(rel)
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
