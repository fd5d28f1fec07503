//! Phase 4: variable interpolation.
//!
//! Every string value of a compose file may refer to variables of the interpolation
//! environment (the shell environment, over the `--env-file`s or the project's `.env`):
//!
//! | syntax | value |
//! |---|---|
//! | `$V`, `${V}` | the value of `V`, empty (with a warning) when unset |
//! | `${V:-d}` / `${V-d}` | `d` when `V` is unset or empty / unset |
//! | `${V:?msg}` / `${V?msg}` | error `msg` when `V` is unset or empty / unset |
//! | `${V:+alt}` / `${V+alt}` | `alt` when `V` is set and not empty / set |
//! | `$$` | a literal `$` |
//!
//! Defaults and alternatives are themselves interpolated, so they nest
//! (`${A:-${B:-x}}`), at most [`MAX_NESTING`] references deep: each level rescans the rest of
//! the string and takes a stack frame, so an unbounded depth would cost quadratic time and
//! end in a stack overflow (a 16,000-deep value did); with the cap the work is linear in
//! the length of the value. A `$` followed by anything else is kept as is; an unterminated
//! or malformed `${...}` is an error. Mapping keys are not interpolated.
//!
//! Each lookup is recorded ([`Lookup`]) so `tug config --explain` can say where every value
//! came from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::error::{ProjectError, Result};
use super::yaml::{Node, Pos, Value, push_key};

/// How deep references may nest (`${A:-${B:-…}}`): 64 levels.
pub const MAX_NESTING: usize = 64;

/// Where a variable's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The shell environment of tug.
    Shell,
    /// An env file (`.env` or `--env-file`), with the line.
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
    },
}

/// The interpolation environment: variable → (value, source).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, (String, Source)>,
}

impl Environment {
    /// An empty environment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a variable (replacing any earlier value).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>, source: Source) {
        self.vars.insert(name.into(), (value.into(), source));
    }

    /// Sets a variable unless it is already set.
    pub fn set_default(&mut self, name: &str, value: &str, source: Source) {
        if !self.vars.contains_key(name) {
            self.vars
                .insert(name.to_owned(), (value.to_owned(), source));
        }
    }

    /// The value of a variable.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|(v, _)| v.as_str())
    }

    /// The value and source of a variable.
    #[must_use]
    pub fn lookup(&self, name: &str) -> Option<&(String, Source)> {
        self.vars.get(name)
    }

    /// All variables as a plain map.
    #[must_use]
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// How a variable reference was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Found in the environment.
    Found(Source),
    /// Unset (or empty), the default written in the file was used.
    Default,
    /// Set, the alternative written in the file was used.
    Alternative(Source),
    /// Unset: replaced by an empty string (compose warns).
    Unset,
    /// Unset (or empty) in `${V:+alt}`: an empty string, as the form asks (no warning).
    NoAlternative,
}

/// One variable reference met while interpolating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The variable.
    pub name: String,
    /// The value it produced.
    pub value: String,
    /// How.
    pub resolution: Resolution,
    /// Where the reference is.
    pub pos: Pos,
    /// The key path of the value holding it.
    pub path: String,
}

/// Interpolates every string in a tree. Lookups are appended to `log`.
///
/// # Errors
/// A malformed reference, or a `${V:?msg}` whose variable is unset: the error names the file,
/// line, column and key path, and carries `msg`.
pub fn interpolate_tree(node: &mut Node, env: &Environment, log: &mut Vec<Lookup>) -> Result<()> {
    let mut errors = Vec::new();
    walk(node, &mut String::new(), env, log, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ProjectError::from_many(errors))
    }
}

/// `path` is one buffer extended and truncated on the way down, so walking allocates only
/// where a value holds a `$`.
fn walk(
    node: &mut Node,
    path: &mut String,
    env: &Environment,
    log: &mut Vec<Lookup>,
    errors: &mut Vec<ProjectError>,
) {
    match &mut node.value {
        Value::Str(s) if s.contains('$') => {
            let mut ctx = Ctx {
                env,
                log,
                pos: &node.pos,
                path,
                depth: 0,
            };
            match interpolate_str(s, &mut ctx) {
                Ok(v) => *s = v,
                Err(e) => {
                    errors.push(ProjectError::invalid(
                        Some(node.pos.clone()),
                        path.clone(),
                        e.to_string(),
                    ));
                }
            }
        }
        Value::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                walk(it, path, env, log, errors);
                path.truncate(len);
            }
        }
        Value::Map(m) => {
            for (k, v) in m.iter_mut() {
                let len = path.len();
                push_key(path, k);
                walk(v, path, env, log, errors);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

struct Ctx<'a> {
    env: &'a Environment,
    log: &'a mut Vec<Lookup>,
    pos: &'a Pos,
    path: &'a str,
    /// Strings being interpolated (the value, then one more per nested default or
    /// alternative).
    depth: usize,
}

impl Ctx<'_> {
    fn record(&mut self, name: &str, value: &str, resolution: Resolution) {
        self.log.push(Lookup {
            name: name.to_owned(),
            value: value.to_owned(),
            resolution,
            pos: self.pos.clone(),
            path: self.path.to_owned(),
        });
    }
}

/// Why a string cannot be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// More than [`MAX_NESTING`] references inside each other.
    #[error(
        "variable references are nested more than {} levels deep (`${{A:-${{B:-…}}}}`); \
         the limit is {}",
        MAX_NESTING,
        MAX_NESTING
    )]
    TooDeep,
    /// A `${` without its `}`.
    #[error("invalid interpolation format: unterminated `${{` in `{0}` (escape a literal $ as $$)")]
    Unterminated(String),
    /// A `${…}` that is not a name with an optional operator.
    #[error("invalid interpolation format: `${{{inner}}}` in `{whole}` (escape a literal $ as $$)")]
    Malformed {
        /// What is between the braces.
        inner: String,
        /// The whole string.
        whole: String,
    },
    /// `${V:?message}` or `${V?message}` with `V` unset (or empty).
    #[error("required variable {name} is missing a value{}", with_colon(.message))]
    Required {
        /// The variable.
        name: String,
        /// The message the file gives (interpolated), possibly empty.
        message: String,
    },
}

/// `: message`, or nothing for an empty message.
fn with_colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Interpolates one string with a plain lookup function (used for env files, where lookups
/// are not recorded).
///
/// # Errors
/// The message of a malformed reference or of a `${V:?msg}` whose variable is unset.
pub fn interpolate_with(
    s: &str,
    env: &Environment,
) -> std::result::Result<String, InterpolateError> {
    let mut log = Vec::new();
    let pos = Pos {
        file: "".into(),
        line: 0,
        col: 0,
    };
    let mut ctx = Ctx {
        env,
        log: &mut log,
        pos: &pos,
        path: "",
        depth: 0,
    };
    interpolate_str(s, &mut ctx)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn interpolate_str(s: &str, ctx: &mut Ctx<'_>) -> std::result::Result<String, InterpolateError> {
    if ctx.depth > MAX_NESTING {
        return Err(InterpolateError::TooDeep);
    }
    ctx.depth += 1;
    let out = interpolate_level(s, ctx);
    ctx.depth -= 1;
    out
}

fn interpolate_level(s: &str, ctx: &mut Ctx<'_>) -> std::result::Result<String, InterpolateError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&n) if is_name_start(n) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push_str(&simple(&name, ctx));
                i = end;
            }
            Some('{') => {
                let close = matching_brace(&chars, i + 1)
                    .ok_or_else(|| InterpolateError::Unterminated(s.to_owned()))?;
                let inner: String = chars[i + 2..close].iter().collect();
                out.push_str(&braced(&inner, s, ctx)?);
                i = close + 1;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn matching_brace(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn simple(name: &str, ctx: &mut Ctx<'_>) -> String {
    match ctx.env.lookup(name) {
        Some((v, src)) => {
            let (v, src) = (v.clone(), src.clone());
            ctx.record(name, &v, Resolution::Found(src));
            v
        }
        None => {
            ctx.record(name, "", Resolution::Unset);
            String::new()
        }
    }
}

fn braced(
    inner: &str,
    whole: &str,
    ctx: &mut Ctx<'_>,
) -> std::result::Result<String, InterpolateError> {
    let bad = || InterpolateError::Malformed {
        inner: inner.to_owned(),
        whole: whole.to_owned(),
    };
    let name_end = inner
        .char_indices()
        .find(|(_, c)| !is_name_char(*c))
        .map_or(inner.len(), |(i, _)| i);
    let name = &inner[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(bad());
    }
    let rest = &inner[name_end..];
    if rest.is_empty() {
        return Ok(simple(name, ctx));
    }
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = rest.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = rest.strip_prefix('?') {
        ("?", a)
    } else if let Some(a) = rest.strip_prefix('+') {
        ("+", a)
    } else {
        return Err(bad());
    };
    let found = ctx.env.lookup(name).cloned();
    let set = found.is_some();
    let non_empty = found.as_ref().is_some_and(|(v, _)| !v.is_empty());
    let use_value = if op.starts_with(':') { non_empty } else { set };
    match op.trim_start_matches(':') {
        "-" => {
            if use_value {
                let (v, src) = found.unwrap_or_else(|| (String::new(), Source::Shell));
                ctx.record(name, &v, Resolution::Found(src));
                Ok(v)
            } else {
                let d = interpolate_str(arg, ctx)?;
                ctx.record(name, &d, Resolution::Default);
                Ok(d)
            }
        }
        "?" => {
            if use_value {
                let (v, src) = found.unwrap_or_else(|| (String::new(), Source::Shell));
                ctx.record(name, &v, Resolution::Found(src));
                Ok(v)
            } else {
                let msg = interpolate_str(arg, ctx)?;
                Err(InterpolateError::Required {
                    name: name.to_owned(),
                    message: msg,
                })
            }
        }
        _ => {
            if use_value {
                let alt = interpolate_str(arg, ctx)?;
                let src = found.map_or(Source::Shell, |(_, s)| s);
                ctx.record(name, &alt, Resolution::Alternative(src));
                Ok(alt)
            } else {
                ctx.record(name, "", Resolution::NoAlternative);
                Ok(String::new())
            }
        }
    }
}

/// A variable a string refers to, as `config --variables` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Variable {
    /// The name.
    pub name: String,
    /// `${V:?msg}` / `${V?msg}`: an error when unset.
    pub required: bool,
    /// `${V:-d}` / `${V-d}`: the default value, as written.
    pub default: String,
    /// `${V:+a}` / `${V+a}`: the alternate value, as written.
    pub alternate: String,
}

/// The variables a string refers to (those in default and alternate values too), in order;
/// `$$` is no reference. Malformed references are skipped (interpolation reports them).
#[must_use]
pub fn variables(s: &str) -> Vec<Variable> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => i += 2,
            Some(&n) if is_name_start(n) => {
                let mut end = i + 1;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                out.push(Variable {
                    name: chars[i + 1..end].iter().collect(),
                    ..Variable::default()
                });
                i = end;
            }
            Some('{') => {
                let Some(close) = matching_brace(&chars, i + 1) else {
                    break;
                };
                let inner: String = chars[i + 2..close].iter().collect();
                let name_end = inner
                    .char_indices()
                    .find(|(_, c)| !is_name_char(*c))
                    .map_or(inner.len(), |(k, _)| k);
                let name = &inner[..name_end];
                let rest = &inner[name_end..];
                if !name.is_empty() && name.starts_with(is_name_start) {
                    let mut v = Variable {
                        name: name.to_owned(),
                        ..Variable::default()
                    };
                    let arg = rest.trim_start_matches(':');
                    match arg.chars().next() {
                        Some('?') => v.required = true,
                        Some('-') => v.default = arg[1..].to_owned(),
                        Some('+') => v.alternate = arg[1..].to_owned(),
                        _ => {}
                    }
                    let nested = if arg.len() > 1 { &arg[1..] } else { "" };
                    out.push(v);
                    out.extend(variables(nested));
                }
                i = close + 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        let mut e = Environment::new();
        e.set("A", "1", Source::Shell);
        e.set("EMPTY", "", Source::Shell);
        e.set(
            "F",
            "file",
            Source::EnvFile {
                path: PathBuf::from(".env"),
                line: 3,
            },
        );
        e
    }

    fn i(s: &str) -> std::result::Result<String, InterpolateError> {
        interpolate_with(s, &env())
    }

    #[test]
    fn interpolate_all_forms() {
        assert_eq!(i("$A ${A} x$$y").unwrap(), "1 1 x$y");
        assert_eq!(
            i("${NOPE:-d} ${EMPTY:-d} ${EMPTY-d} ${NOPE-d}").unwrap(),
            "d d  d"
        );
        assert_eq!(
            i("${A:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${NOPE+alt}").unwrap(),
            "alt  alt "
        );
        assert_eq!(i("${NOPE:-${A}x}").unwrap(), "1x");
        assert_eq!(i("${NOPE:-${NOPE2:-deep}}").unwrap(), "deep");
        assert_eq!(i("$1 $ x $").unwrap(), "$1 $ x $");
        assert_eq!(i("$A-$NOPE").unwrap(), "1-");
        assert_eq!(i("${F}").unwrap(), "file");
    }

    #[test]
    fn interpolate_errors() {
        assert_eq!(
            i("${DB:?set DB}").unwrap_err().to_string(),
            "required variable DB is missing a value: set DB"
        );
        assert!(i("${EMPTY:?x}").is_err());
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert!(i("${A").unwrap_err().to_string().contains("unterminated"));
        assert!(
            i("${}")
                .unwrap_err()
                .to_string()
                .contains("invalid interpolation")
        );
        assert!(
            i("${A*b}")
                .unwrap_err()
                .to_string()
                .contains("invalid interpolation")
        );
    }

    #[test]
    fn interpolate_nesting_is_capped() {
        let nest = |n: usize| format!("{}x{}", "${A_UNSET:-".repeat(n), "}".repeat(n));
        assert_eq!(i(&nest(MAX_NESTING)).unwrap(), "x");
        let e = i(&nest(MAX_NESTING + 1)).unwrap_err().to_string();
        assert!(e.contains("nested more than 64 levels"), "{e}");
        // Deep enough to overflow the stack without the cap (the test process would abort);
        // the cap also bounds the work, so these end at the 65th level (no timing here:
        // a timed unit test fails on a loaded machine, see bench/ for speed).
        for n in [12_000, 16_000, 100_000] {
            let e = i(&nest(n)).unwrap_err().to_string();
            assert!(e.contains("the limit is 64"), "{e}");
        }
        // Unterminated at depth: the same one clear error, quickly.
        let e = i(&"${A:-".repeat(50_000)).unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn interpolate_tree_records_sources_and_positions() {
        let mut n = crate::project::yaml::parse(
            "c.yaml",
            "services:\n  a:\n    image: \"${F}:${T:-latest}\"\n    x: ${Q:?need Q}\n",
        )
        .unwrap()
        .remove(0);
        let mut log = Vec::new();
        let e = interpolate_tree(&mut n, &env(), &mut log)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml:4:8") && e.contains("services.a.x") && e.contains("need Q"),
            "{e}"
        );
        assert_eq!(
            n.get("services")
                .unwrap()
                .get("a")
                .unwrap()
                .get("image")
                .unwrap()
                .as_str(),
            Some("file:latest")
        );
        assert_eq!(log[0].name, "F");
        assert!(matches!(
            log[0].resolution,
            Resolution::Found(Source::EnvFile { line: 3, .. })
        ));
        assert_eq!(log[1].resolution, Resolution::Default);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn interpolate_text_without_dollar_is_unchanged(s in "[^$]{0,64}") {
                prop_assert_eq!(i(&s).unwrap(), s);
            }

            #[test]
            fn interpolate_escaped_dollars_become_single(s in "[a-z$ ]{0,32}") {
                let escaped = s.replace('$', "$$");
                prop_assert_eq!(i(&escaped).unwrap(), s);
            }

            #[test]
            fn interpolate_never_panics(s in ".{0,64}") {
                let _ = i(&s);
            }

            #[test]
            fn interpolate_default_applies_only_when_unset(name in "[A-Z][A-Z0-9_]{0,8}", d in "[a-z0-9]{0,8}") {
                let mut e = Environment::new();
                let unset = interpolate_with(&format!("${{{name}:-{d}}}"), &e).unwrap();
                prop_assert_eq!(unset, d.clone());
                e.set(name.clone(), "v", Source::Shell);
                let set = interpolate_with(&format!("${{{name}:-{d}}}"), &e).unwrap();
                prop_assert_eq!(set, "v");
            }
        }
    }

    #[test]
    fn variables_lists_references_with_their_forms() {
        let v = variables("a $A ${B:?need} ${C:-d${D}} ${E+alt} $$F ${G}");
        let names: Vec<&str> = v.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "D", "E", "G"]);
        assert!(v[1].required);
        assert_eq!(v[2].default, "d${D}");
        assert_eq!(v[4].alternate, "alt");
    }
}
