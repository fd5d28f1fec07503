//! The layering of the source tree, checked as a test (docs/ARCHITECTURE.md, "Invariants").
//! Data flows one way: project → plan → compose → engine → kernel (the compose layer joins a
//! plan to the engine; the engine never sees a project or a plan); inside the engine,
//! `network` knows nothing of containers (containers use networks, never the other way
//! round). A change that imports against the flow fails here, naming the file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a line without its `//` comment (string literals with `//` do not name
/// modules, so cutting there is harmless for this check).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The module paths a line of code names: `crate::a::b`, `super::x`, and the members of a
/// `crate::engine::{a, b}` group, as `crate::engine::a`.
fn paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let line = code(line);
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':');
        if rest[end..].starts_with('{') {
            let group = &rest[end + 1..rest.find('}').unwrap_or(rest.len())];
            for m in group.split(',') {
                let m = m.trim().split("::").next().unwrap_or("").trim();
                if !m.is_empty() {
                    out.push(format!("{path}::{m}"));
                }
            }
        } else {
            out.push(path.to_string());
        }
    }
    out
}

/// Files under `dir` (minus `except`) whose code names a path starting with one of
/// `forbidden`, as `file:line: path`.
fn violations(dir: &str, forbidden: &[&str], except: &[&str]) -> Vec<String> {
    let root = src();
    let mut out = Vec::new();
    for f in sources(&root.join(dir)) {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if except.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for p in paths(line) {
                if forbidden
                    .iter()
                    .any(|fb| p == *fb || p.starts_with(&format!("{fb}::")))
                {
                    out.push(format!("src/{rel}:{}: {p}", n + 1));
                }
            }
            let c = code(line);
            // `super::super::container` from inside network reaches the container module too.
            if dir == "engine/network" && c.contains("super::super::container") {
                out.push(format!("src/{rel}:{}: super::super::container", n + 1));
            }
        }
    }
    out
}

#[test]
fn architecture_paths_are_read_from_code() {
    assert_eq!(
        paths("use crate::engine::{container, network::Networks};"),
        vec!["crate::engine::container", "crate::engine::network"]
    );
    assert_eq!(
        paths("let x = crate::plan::plan_up(a); // crate::project"),
        vec!["crate::plan::plan_up"]
    );
}

#[test]
fn architecture_network_does_not_import_container() {
    let v = violations("engine/network", &["crate::engine::container"], &[]);
    assert!(
        v.is_empty(),
        "engine::network imports engine::container:\n{}",
        v.join("\n")
    );
}

/// The engine knows containers, images, networks and volumes, not projects or plans; the
/// compose layer (`src/compose/`) is what joins them.
#[test]
fn architecture_engine_does_not_import_project_plan_compose_or_cli() {
    let v = violations(
        "engine",
        &[
            "crate::project",
            "crate::plan",
            "crate::compose",
            "crate::cli",
            "crate::watch",
        ],
        &[],
    );
    assert!(
        v.is_empty(),
        "the engine imports an upper layer:\n{}",
        v.join("\n")
    );
}

/// The compose layer is a library under the CLI: it never reaches up into it.
#[test]
fn architecture_compose_does_not_import_cli() {
    let v = violations("compose", &["crate::cli", "crate::watch"], &[]);
    assert!(
        v.is_empty(),
        "the compose layer imports the cli:\n{}",
        v.join("\n")
    );
}

#[test]
fn architecture_lower_layers_do_not_import_upward() {
    let v = violations(
        "plan",
        &[
            "crate::engine",
            "crate::compose",
            "crate::cli",
            "crate::watch",
        ],
        &[],
    );
    assert!(
        v.is_empty(),
        "plan imports downward or cli:\n{}",
        v.join("\n")
    );
    let v = violations(
        "project",
        &[
            "crate::plan",
            "crate::engine",
            "crate::compose",
            "crate::cli",
            "crate::watch",
        ],
        &[],
    );
    assert!(
        v.is_empty(),
        "project imports a later layer:\n{}",
        v.join("\n")
    );
}

/// The longest a function outside tests may be without saying why (docs/ARCHITECTURE.md).
const LONG_FN: usize = 120;

/// Every function of `src/` (outside `#[cfg(test)]` modules) longer than [`LONG_FN`] lines
/// with no `// Long: <why>` comment right above it (among its doc comments and attributes),
/// and every `// Long:` comment above a function that is not that long (a stale reason), as
/// `file:line: name (lines)`. rustfmt's layout is assumed: a function ends at the first line
/// that is its indentation plus `}`.
fn long_function_problems() -> Vec<String> {
    let root = src();
    let mut out = Vec::new();
    for f in sources(&root) {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let end = lines
            .iter()
            .position(|l| l.starts_with("#[cfg(test)]"))
            .unwrap_or(lines.len());
        for i in 0..end {
            let l = lines[i];
            let body = l.trim_start();
            let indent = &l[..l.len() - body.len()];
            let head = body
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("const ")
                .trim_start_matches("async ")
                .trim_start_matches("unsafe ");
            let head = if head.starts_with("pub(in ") {
                head.split_once(") ").map_or(head, |(_, h)| h)
            } else {
                head
            };
            if !head.starts_with("fn ") || body.ends_with(';') {
                continue;
            }
            let close = format!("{indent}}}");
            let Some(len) = lines[i..end].iter().position(|x| *x == close) else {
                continue;
            };
            let explained = lines[..i]
                .iter()
                .rev()
                .take_while(|x| {
                    let t = x.trim_start();
                    t.starts_with("//") || t.starts_with("#[")
                })
                .any(|x| x.trim_start().starts_with("// Long:"));
            let name = head[3..].split(['(', '<']).next().unwrap_or("");
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            if len >= LONG_FN && !explained {
                out.push(format!(
                    "src/{rel}:{}: {name} ({} lines) has no `// Long:` reason",
                    i + 1,
                    len + 1
                ));
            } else if len < LONG_FN && explained {
                out.push(format!(
                    "src/{rel}:{}: {name} ({} lines) has a stale `// Long:` reason",
                    i + 1,
                    len + 1
                ));
            }
        }
    }
    out
}

#[test]
fn architecture_long_functions_say_why() {
    let v = long_function_problems();
    assert!(
        v.is_empty(),
        "functions over {LONG_FN} lines need a `// Long: <why>` comment (or a split), and only \
         they:\n{}",
        v.join("\n")
    );
}

/// `util` is shared by every layer and imports none of them.
#[test]
fn architecture_util_imports_nothing_of_tug() {
    let v = violations(
        "util",
        &[
            "crate::project",
            "crate::plan",
            "crate::engine",
            "crate::cli",
            "crate::watch",
            "crate::compose",
        ],
        &[],
    );
    assert!(v.is_empty(), "util imports tug:\n{}", v.join("\n"));
}

/// Helper processes start one way: their names are spelled only in `engine/helpers.rs`, whose
/// registry dispatches them before clap; nothing else (no hidden CLI verb) names one.
#[test]
fn architecture_helpers_are_named_only_in_the_registry() {
    let registry = std::fs::read_to_string(src().join("engine/helpers.rs")).unwrap();
    let names: Vec<String> = registry
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("__"))
        .map(|n| format!("\"{n}\""))
        .collect();
    assert!(names.len() >= 4, "helper names not found: {names:?}");
    let mut out = Vec::new();
    for f in sources(&src()) {
        if f.ends_with("engine/helpers.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            if let Some(name) = names.iter().find(|name| c.contains(name.as_str())) {
                out.push(format!("{}:{}: {name}", f.display(), n + 1));
            }
        }
    }
    assert!(
        out.is_empty(),
        "helper names spelled outside engine::helpers:\n{}",
        out.join("\n")
    );
}

/// The `Result`s in `code` whose error is text (`String`, `&str`), as (byte offset, error
/// type): `Result<T, String>` with any path before `Result` and any `T` (nested generics,
/// tuples), in a function's or closure's return, an alias, a channel; over line breaks.
fn text_errors(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("Result<") {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        // The generic arguments at depth 1, split at their commas.
        let mut depth = 0usize;
        let mut args = vec![String::new()];
        for c in code[i + "Result".len()..].chars() {
            let opens = matches!(c, '<' | '(' | '[');
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                break;
            }
            if c == ',' && depth == 1 {
                args.push(String::new());
            } else if !(opens && depth == 1) {
                args.last_mut().unwrap().push(c);
            }
        }
        // rustfmt ends a type broken over lines with a comma.
        if args.len() > 1 && args.last().is_some_and(|a| a.trim().is_empty()) {
            args.pop();
        }
        if let [_, e] = args.as_slice() {
            let bare: String = e.split_whitespace().collect();
            if matches!(
                bare.as_str(),
                "String" | "std::string::String" | "&str" | "&'staticstr"
            ) {
                out.push((i, e.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn architecture_text_errors_are_read_from_code() {
    let errs = |c: &str| -> Vec<String> { text_errors(c).into_iter().map(|(_, e)| e).collect() };
    assert_eq!(
        errs("fn f(a: &str) -> std::result::Result<Vec<(String, u8)>, String> {"),
        vec!["String"]
    );
    assert_eq!(
        errs("fn f(\n    a: u8,\n) -> Result<\n    BTreeMap<String, u8>,\n    String,\n> {"),
        vec!["String"]
    );
    assert_eq!(
        errs("let n = |i: usize| -> Result<usize, String> {"),
        vec!["String"]
    );
    assert_eq!(
        errs("static S: OnceLock<Result<Schema, &'static str>> = OnceLock::new();"),
        vec!["&'static str"]
    );
    assert!(errs("fn kv(i: &[String]) -> anyhow::Result<BTreeMap<String, String>> {").is_empty());
    assert!(errs("fn f() -> Result<String, ParseError> {").is_empty());
    assert!(errs("fn f() -> MyResult<(), String> {").is_empty());
}

/// Errors are types, not text: no function, closure, alias, static or channel of `src/`
/// has a `Result` whose error is a `String` or a `&str` (one `thiserror` type per module,
/// with variants that carry the data; text is made where an error is shown, or written to
/// another process).
#[test]
fn architecture_errors_are_types_not_text() {
    let root = src();
    let mut out = Vec::new();
    for f in sources(&root) {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        // The code without comments, one text: a signature may span lines.
        let joined: String = text.lines().map(|l| format!("{}\n", code(l))).collect();
        for (at, e) in text_errors(&joined) {
            let line = joined[..at].matches('\n').count() + 1;
            out.push(format!("src/{rel}:{line}: Result<_, {e}>"));
        }
    }
    assert!(
        out.is_empty(),
        "{} Result(s) with a text error (give the module an error type):\n{}",
        out.len(),
        out.join("\n")
    );
}
