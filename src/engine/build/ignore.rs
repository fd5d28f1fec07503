//! `.dockerignore` with Docker's semantics (not gitignore's):
//! - one pattern a line; blank lines and lines starting with `#` are skipped; a pattern is
//!   cleaned (`./a//b/` → `a/b`) and a leading `/` means nothing (all patterns are relative to
//!   the context root);
//! - `*` matches any run of characters but `/`, `?` one character but `/`, `[a-z]` a class,
//!   `**` any number of directories (`**/x`, `a/**`, `a/**/b`), `\` escapes;
//! - a pattern matches a path when it matches the whole path **or one of its parent
//!   directories** (`build` ignores `build/x/y`);
//! - unlike gitignore, a pattern without a slash is **not** matched at every depth:
//!   `*.log` ignores `a.log` but not `dir/a.log`;
//! - `!pattern` re-includes; the last matching line wins.

use regex::Regex;

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    re: Regex,
    exclusion: bool,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    /// The pattern lines as given (cleaned), for the cache key.
    pub lines: Vec<String>,
}

/// Cleans a path as Go's `filepath.Clean` does, relative (no leading `/`).
#[must_use]
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !p.starts_with('/') {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A pattern that does not compile.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The pattern breaks the syntax (an unclosed class, a trailing escape).
    #[error("syntax error in pattern {0:?}")]
    Syntax(String),
    /// The expression made of the pattern does not compile.
    #[error("bad pattern {pattern:?}: {source}")]
    Regex {
        /// The pattern as written (cleaned).
        pattern: String,
        /// Why.
        source: regex::Error,
    },
}

fn to_regex(pat: &str) -> Result<Regex, PatternError> {
    let mut re = String::from("^");
    let chars: Vec<char> = pat.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    i += 1;
                    // `**/` may match nothing; `**` alone matches anything.
                    if chars.get(i + 1) == Some(&'/') {
                        i += 1;
                        re.push_str("(.*/)?");
                    } else {
                        re.push_str(".*");
                    }
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '[' => {
                let mut j = i + 1;
                let mut class = String::from("[");
                if chars.get(j) == Some(&'^') || chars.get(j) == Some(&'!') {
                    class.push('^');
                    j += 1;
                }
                let mut closed = false;
                while j < chars.len() {
                    let d = chars[j];
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    if d == '\\' {
                        j += 1;
                        if let Some(e) = chars.get(j) {
                            class.push_str(&regex::escape(&e.to_string()));
                        }
                    } else if d == '[' || d == '&' || d == '~' {
                        class.push('\\');
                        class.push(d);
                    } else {
                        class.push(d);
                    }
                    j += 1;
                }
                if !closed {
                    return Err(PatternError::Syntax(pat.to_string()));
                }
                class.push(']');
                re.push_str(&class);
                i = j;
            }
            '\\' => {
                i += 1;
                if let Some(e) = chars.get(i) {
                    re.push_str(&regex::escape(&e.to_string()));
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).map_err(|source| PatternError::Regex {
        pattern: pat.to_string(),
        source,
    })
}

impl Ignore {
    /// Parses the contents of a `.dockerignore`.
    ///
    /// # Errors
    /// A pattern that does not compile, named.
    pub fn parse(text: &str) -> Result<Ignore, PatternError> {
        let mut ig = Ignore::default();
        for line in text.lines() {
            let l = line.trim();
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
            ig.patterns.push(Pattern {
                re: to_regex(&p)?,
                exclusion,
            });
            ig.lines.push(if exclusion { format!("!{p}") } else { p });
        }
        Ok(ig)
    }

    /// Whether the context path `rel` (relative, `/`-separated) is excluded.
    #[must_use]
    pub fn ignored(&self, rel: &str) -> bool {
        let mut ignored = false;
        let parents: Vec<&str> = {
            let mut v = Vec::new();
            let mut end = 0;
            for (i, c) in rel.char_indices() {
                if c == '/' {
                    v.push(&rel[..i]);
                }
                end = i;
            }
            let _ = end;
            v
        };
        for p in &self.patterns {
            let hit = p.re.is_match(rel) || parents.iter().any(|d| p.re.is_match(d));
            if hit {
                ignored = !p.exclusion;
            }
        }
        ignored
    }

    /// Whether an exclusion pattern could re-include something below directory `rel`
    /// (then an ignored directory must still be walked).
    #[must_use]
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// True when there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Shell-style glob match (`*`, `?`, `[…]`); with `path`, `*` and `?` do not match `/`.
#[must_use]
pub fn glob_match(pat: &str, s: &str, path: bool) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn m(p: &[char], t: &[char], path: bool) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len())
                .take_while(|&i| i == 0 || !path || t[i - 1] != '/')
                .any(|i| m(&p[1..], &t[i..], path)),
            Some('?') => !(t.is_empty() || path && t[0] == '/') && m(&p[1..], &t[1..], path),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|e| e + 1) else {
                    return !t.is_empty() && t[0] == '[' && m(&p[1..], &t[1..], path);
                };
                let Some(&c) = t.first() else {
                    return false;
                };
                let mut class = &p[1..end];
                let neg = matches!(class.first(), Some('^' | '!'));
                if neg {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut k = 0;
                while k < class.len() {
                    if k + 2 < class.len() && class[k + 1] == '-' {
                        if class[k] <= c && c <= class[k + 2] {
                            hit = true;
                        }
                        k += 3;
                    } else {
                        if class[k] == c {
                            hit = true;
                        }
                        k += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &t[1..], path)
            }
            Some('\\') if p.len() > 1 => !t.is_empty() && t[0] == p[1] && m(&p[2..], &t[1..], path),
            Some(c) => !t.is_empty() && t[0] == *c && m(&p[1..], &t[1..], path),
        }
    }
    m(&p, &t, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics_differ_from_gitignore() {
        let ig =
            Ignore::parse("# comment\n*.log\n/build\nsecret*\n!secret.pub\n**/*.tmp\n").unwrap();
        // Top level only, unlike gitignore's `*.log`.
        assert!(ig.ignored("a.log"));
        assert!(!ig.ignored("dir/a.log"));
        // A directory pattern covers everything below it.
        assert!(ig.ignored("build"));
        assert!(ig.ignored("build/x/y.c"));
        assert!(!ig.ignored("src/build"));
        // Exceptions: the last matching line wins.
        assert!(ig.ignored("secret.key"));
        assert!(!ig.ignored("secret.pub"));
        assert!(ig.ignored("a/b/c.tmp"));
        assert!(ig.ignored("c.tmp"));
        // The `ignore` crate (gitignore semantics) would ignore dir/a.log: check the
        // difference on the real matcher so a switch to it is caught.
        let mut gb = ::ignore::gitignore::GitignoreBuilder::new("/ctx");
        gb.add_line(None, "*.log").unwrap();
        let gi = gb.build().unwrap();
        assert!(gi.matched("/ctx/dir/a.log", false).is_ignore());
    }

    #[test]
    fn dockerignore_exception_under_ignored_dir() {
        let ig = Ignore::parse("docs\n!docs/keep.md\n").unwrap();
        assert!(ig.ignored("docs/a.md"));
        assert!(!ig.ignored("docs/keep.md"));
        assert!(ig.has_exclusions());
        let ig = Ignore::parse("*\n!app\n").unwrap();
        assert!(ig.ignored("x"));
        assert!(!ig.ignored("app"));
        assert!(!ig.ignored("app/main.go"));
        let ig = Ignore::parse("a/**/b\n./c/../d\n").unwrap();
        assert!(ig.ignored("a/b"));
        assert!(ig.ignored("a/x/y/b"));
        assert!(ig.ignored("d"));
        assert!(Ignore::parse("[abc").is_err());
    }

    #[test]
    fn dockerignore_glob() {
        assert!(glob_match("*.txt", "a.txt", true));
        assert!(!glob_match("*.txt", "d/a.txt", true));
        assert!(glob_match("*.txt", "d/a.txt", false));
        assert!(glob_match("f[0-9]?", "f1x", true));
        assert!(!glob_match("f[!0-9]", "f1", true));
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/x"), "x");
    }
}
