//! Env files: the project's `.env` / `--env-file` (interpolation environment) and a service's
//! `env_file:` (container environment).
//!
//! One variable per line: `KEY=VALUE`, optionally preceded by `export `; `#` starts a comment
//! line, and in an unquoted value a ` #` starts a trailing comment. Values may be quoted:
//! single quotes are literal, double quotes understand `\n`, `\t`, `\\`, `\"` and may span
//! several lines. Unquoted and double-quoted values are interpolated (`${OTHER}`) with the
//! variables defined above them in the same file, then the given environment. A line with a
//! bare `KEY` takes the value from the given environment when it has one.
//!
//! With `format: raw` the value is everything after the first `=`, unchanged.

use std::path::Path;

use super::error::{ProjectError, Result};
use super::interpolate::{Environment, Source, interpolate_with};
use super::yaml::Pos;

/// One variable read from an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name.
    pub key: String,
    /// Value (`None` for a bare `KEY` not found in the environment).
    pub value: Option<String>,
    /// Line, from 1.
    pub line: usize,
}

/// Reads and parses an env file (a regular file of at most 1 MiB, see [`super::input`]).
///
/// # Errors
/// The file cannot be read, is not a regular file, is larger than the limit, is not UTF-8,
/// or has a malformed line (with its line number).
pub fn read(path: &Path, lookup: &Environment, raw: bool) -> Result<Vec<Entry>> {
    let bytes = super::input::read_env_file(path)?;
    let text = String::from_utf8(bytes).map_err(|e| ProjectError::Utf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse(&text, &path.display().to_string(), lookup, raw)
}

/// Parses env-file text. `file` names it in errors.
///
/// # Errors
/// A malformed line.
pub fn parse(text: &str, file: &str, lookup: &Environment, raw: bool) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    // Variables seen so far in this file, over the lookup environment.
    let mut scope = lookup.clone();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i].trim_start_matches('\u{feff}');
        i += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |msg: String| {
            ProjectError::invalid(
                Some(Pos {
                    file: file.into(),
                    line: lineno,
                    col: 1,
                }),
                "",
                msg,
            )
        };
        let body = trimmed
            .strip_prefix("export ")
            .map_or(trimmed, str::trim_start);
        let split = body.find(['=', ':']);
        let (key, value) = match split {
            Some(at) if !raw || body.as_bytes()[at] == b'=' => {
                (body[..at].trim(), Some(&body[at + 1..]))
            }
            _ => (body, None),
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'))
        {
            return Err(err(format!(
                "invalid variable name `{key}` (expected KEY=VALUE)"
            )));
        }
        let value = match value {
            None => lookup.get(key).map(str::to_owned),
            Some(v) if raw => Some(v.to_owned()),
            Some(v) => {
                let v = v.trim_start();
                if let Some(rest) = v.strip_prefix('\'') {
                    let (val, consumed) = quoted(rest, '\'', &lines, &mut i)
                        .ok_or_else(|| err("unterminated single-quoted value".to_owned()))?;
                    let _ = consumed;
                    Some(val)
                } else if let Some(rest) = v.strip_prefix('"') {
                    let (val, _) = quoted(rest, '"', &lines, &mut i)
                        .ok_or_else(|| err("unterminated double-quoted value".to_owned()))?;
                    let val = unescape(&val);
                    Some(interpolate_with(&val, &scope).map_err(|e| err(e.to_string()))?)
                } else {
                    let v = match v.find(" #") {
                        Some(at) => &v[..at],
                        None => v,
                    };
                    Some(interpolate_with(v.trim_end(), &scope).map_err(|e| err(e.to_string()))?)
                }
            }
        };
        // A variable of the shell keeps the shell's value for later references.
        let from_shell = matches!(lookup.lookup(key), Some((_, Source::Shell)));
        if let Some(v) = value.as_ref().filter(|_| !from_shell) {
            scope.set(
                key,
                v.clone(),
                Source::EnvFile {
                    path: file.into(),
                    line: lineno,
                },
            );
        }
        out.push(Entry {
            key: key.to_owned(),
            value,
            line: lineno,
        });
    }
    Ok(last_of_each_key(out))
}

/// Keeps the last entry of each key, in the order of those last entries (a key defined again
/// moves to where it was defined last). Linear: an env file has up to ~100,000 lines.
fn last_of_each_key(entries: Vec<Entry>) -> Vec<Entry> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Entry> = entries
        .into_iter()
        .rev()
        .filter(|e| seen.insert(e.key.clone()))
        .collect();
    out.reverse();
    out
}

/// Reads a quoted value that may continue on the next lines. Returns the content without the
/// quotes.
fn quoted(first: &str, q: char, lines: &[&str], next: &mut usize) -> Option<(String, usize)> {
    let mut acc = String::new();
    let mut cur = first.to_owned();
    loop {
        let mut escaped = false;
        for (idx, c) in cur.char_indices() {
            if q == '"' && c == '\\' && !escaped {
                escaped = true;
                continue;
            }
            if c == q && !escaped {
                acc.push_str(&cur[..idx]);
                return Some((acc, *next));
            }
            escaped = false;
        }
        acc.push_str(&cur);
        acc.push('\n');
        let l = lines.get(*next)?;
        *next += 1;
        cur = (*l).to_owned();
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('$') => out.push_str("$$"),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<(String, Option<String>)> {
        let mut env = Environment::new();
        env.set("SHELL_V", "sh", Source::Shell);
        parse(text, ".env", &env, false)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    #[test]
    fn dotenv_forms() {
        let v = p(
            "# c\nA=1\nexport B=\"x y\" # c\nC=${A}2\nD='$A'\nE\nF: colon\nG=a #c\nSHELL_V\nH=\"l1\\nl2\"\nI=\"multi\nline\"\nJ=\n",
        );
        let get = |k: &str| v.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("x y"));
        assert_eq!(get("C").as_deref(), Some("12"));
        assert_eq!(get("D").as_deref(), Some("$A"));
        assert_eq!(get("E"), None);
        assert_eq!(get("F").as_deref(), Some("colon"));
        assert_eq!(get("G").as_deref(), Some("a"));
        assert_eq!(get("SHELL_V").as_deref(), Some("sh"));
        assert_eq!(get("H").as_deref(), Some("l1\nl2"));
        assert_eq!(get("I").as_deref(), Some("multi\nline"));
        assert_eq!(get("J").as_deref(), Some(""));
    }

    #[test]
    fn dotenv_large_file_loads_and_last_definition_wins() {
        let env = Environment::new();
        let mut text: String = (0..100_000).map(|i| format!("K{i}=v\n")).collect();
        text.push_str("K5=again\n");
        assert!(text.len() as u64 <= crate::project::input::MAX_ENV_FILE);
        let v = parse(&text, "big.env", &env, false).unwrap();
        assert_eq!(v.len(), 100_000);
        let last = v.last().unwrap();
        assert_eq!(
            (last.key.as_str(), last.value.as_deref()),
            ("K5", Some("again"))
        );
        assert_eq!(v[0].key, "K0");
    }

    #[test]
    fn dotenv_deep_nesting_names_the_line() {
        let env = Environment::new();
        let deep = format!("A=1\nB={}x{}\n", "${U:-".repeat(16_000), "}".repeat(16_000));
        let e = parse(&deep, "deep.env", &env, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deep.env:2:1") && e.contains("the limit is 64"),
            "{e}"
        );
    }

    #[test]
    fn dotenv_raw_keeps_values() {
        let env = Environment::new();
        let v = parse("A=\"${X}\" # y\n", ".env", &env, true).unwrap();
        assert_eq!(v[0].value.as_deref(), Some("\"${X}\" # y"));
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        let env = Environment::new();
        let e = parse("A=1\nB C=2\n", "x.env", &env, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.env:2:1"), "{e}");
        let e = parse("A='open\n", "x.env", &env, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unterminated"), "{e}");
    }
}
