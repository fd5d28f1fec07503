//! The Dockerfile parser: text → instructions, each with its line, flags, arguments and
//! here-documents, following BuildKit's line rules.
//!
//! - **Parser directives** (`# syntax=…`, `# escape=…`, `# check=…`) are read only from the
//!   comment lines at the very top; the first other line ends them. `escape` picks the
//!   escape character (`\` or `` ` ``).
//! - A line that ends with the escape character (trailing blanks allowed) **continues** on
//!   the next one; the escape and the line break are dropped. Comment lines and blank lines
//!   inside a continuation are skipped.
//! - **Here-documents**: in `RUN`, `COPY` and `ADD`, every `<<WORD`, `<<-WORD`, `<<"WORD"`
//!   or `<<'WORD'` of the instruction line takes the following lines verbatim up to a line
//!   that is `WORD` (with `-`, leading tabs are stripped from body and delimiter); a quoted
//!   delimiter turns expansion of the body off.
//! - **Flags** (`--from=x`, `--mount=…`, `--link`) lead the arguments of `FROM`, `RUN`,
//!   `COPY`, `ADD` and `HEALTHCHECK`.
//! - **Exec form**: arguments that parse as a JSON array of strings.
//!
//! Why not the `parse-dockerfile` crate: it was evaluated (0.1.9) and takes a here-document
//! only when it is the first word of `RUN` (so `RUN python3 <<EOF` is misparsed), only one
//! per instruction, and leaves line continuations in the shell-form text; the rules above
//! are small enough to own.

use std::fmt;

/// A parse error, with the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A `--name=value` flag (`value` is `None` for a bare `--name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Name without the dashes.
    pub name: String,
    /// Raw value (not expanded).
    pub value: Option<String>,
}

/// A here-document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`).
    pub name: String,
    /// The body, each line ending in `\n`.
    pub body: String,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs were stripped.
    pub strip_tabs: bool,
}

/// The arguments after the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// A JSON array of strings (exec form).
    Exec(Vec<String>),
    /// Anything else, continuation lines joined (shell form).
    Shell(String),
}

impl Args {
    /// The text as written back (JSON for the exec form).
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
            Args::Shell(s) => s.clone(),
        }
    }
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-case keyword (`RUN`).
    pub keyword: String,
    /// 1-based line where it starts.
    pub line: usize,
    /// 1-based line where it ends (heredocs included).
    pub end_line: usize,
    /// Leading flags.
    pub flags: Vec<Flag>,
    /// Arguments.
    pub args: Args,
    /// Here-documents, in the order of their markers.
    pub heredocs: Vec<Heredoc>,
    /// The instruction as written on its line(s), continuations joined (for messages and
    /// history).
    pub original: String,
}

impl Instruction {
    /// The value of flag `name` (the last one given), `Some("")` for a bare flag.
    #[must_use]
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| f.value.as_deref().unwrap_or(""))
    }

    /// Every value of a repeatable flag (`--mount`).
    #[must_use]
    pub fn flags_named(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.value.as_deref().unwrap_or(""))
            .collect()
    }
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// `# syntax=` value.
    pub syntax: Option<String>,
    /// The escape character.
    pub escape: char,
    /// Instructions in order.
    pub instructions: Vec<Instruction>,
}

/// Every instruction Docker knows.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn takes_flags(kw: &str) -> bool {
    matches!(kw, "FROM" | "RUN" | "COPY" | "ADD" | "HEALTHCHECK")
}

fn takes_heredocs(kw: &str) -> bool {
    matches!(kw, "RUN" | "COPY" | "ADD")
}

/// Splits `text` into lines without their terminators (`\n` or `\r\n`).
fn lines(text: &str) -> Vec<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut v: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    if text.ends_with('\n') {
        v.pop();
    }
    v
}

fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// Parses a Dockerfile.
// Long: the Dockerfile grammar as one loop over logical lines (directives, continuations,
// comments, here-documents), whose state is shared.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines = lines(text);
    let mut escape = '\\';
    let mut syntax = None;
    let mut i = 0;
    // Directives: only leading comment lines of the form `# key=value`.
    let mut seen = std::collections::HashSet::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        match k.as_str() {
            "escape" | "syntax" | "check" => {
                if !seen.insert(k.clone()) {
                    return Err(ParseError {
                        line: i + 1,
                        message: format!("only one {k} parser directive can be used"),
                    });
                }
                if k == "escape" {
                    escape = match v.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => {
                            return Err(ParseError {
                                line: i + 1,
                                message: format!(
                                    "invalid escape token {v:?} does not match ` or \\"
                                ),
                            });
                        }
                    };
                } else if k == "syntax" {
                    syntax = Some(v);
                }
            }
            _ => break,
        }
        i += 1;
    }
    let mut instructions = Vec::new();
    while i < lines.len() {
        let raw = lines[i];
        let t = raw.trim_start();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        // Join continuation lines.
        let mut logical = String::new();
        let mut cur = t;
        loop {
            let (body, cont) = continuation(cur, escape);
            logical.push_str(body);
            i += 1;
            if !cont {
                break;
            }
            // Skip comments and blank lines inside a continuation.
            while i < lines.len() {
                let n = lines[i].trim_start();
                if n.starts_with('#') || n.is_empty() {
                    i += 1;
                } else {
                    break;
                }
            }
            if i >= lines.len() {
                break;
            }
            cur = lines[i];
        }
        let (word, rest) = match logical.find(char::is_whitespace) {
            Some(p) => (&logical[..p], logical[p..].trim_start()),
            None => (logical.as_str(), ""),
        };
        let keyword = word.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(ParseError {
                line: start + 1,
                message: format!("unknown instruction: {word}"),
            });
        }
        let mut inst = parse_instruction(&keyword, rest, escape, start + 1)?;
        inst.original = logical.trim_end().to_string();
        // Here-documents follow the instruction's last line.
        let effective = if keyword == "ONBUILD" {
            rest.split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase()
        } else {
            keyword.clone()
        };
        if takes_heredocs(&effective) {
            for (name, strip_tabs, expand) in heredoc_markers(rest, escape) {
                let mut body = String::new();
                let mut closed = false;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let cmp = if strip_tabs {
                        l.trim_start_matches('\t')
                    } else {
                        l
                    };
                    if cmp == name {
                        closed = true;
                        break;
                    }
                    body.push_str(cmp);
                    body.push('\n');
                }
                if !closed {
                    return Err(ParseError {
                        line: start + 1,
                        message: format!("unterminated heredoc {name}"),
                    });
                }
                inst.heredocs.push(Heredoc {
                    name,
                    body,
                    expand,
                    strip_tabs,
                });
            }
        }
        inst.end_line = i.max(start + 1);
        instructions.push(inst);
    }
    Ok(Dockerfile {
        syntax,
        escape,
        instructions,
    })
}

/// A line without its continuation marker, and whether it continues.
fn continuation(line: &str, escape: char) -> (&str, bool) {
    // As BuildKit: any escape character at the end continues (even an escaped one).
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(body) => (body, true),
        None => (line, false),
    }
}

/// The here-document markers in an instruction's arguments: (name, strip tabs, expand).
/// As in BuildKit, a marker is a whole word `[fd]<<[-]WORD`, the word optionally quoted.
fn heredoc_markers(rest: &str, escape: char) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for w in raw_words(rest, escape) {
        let w = w.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(m) = w.strip_prefix("<<") else {
            continue;
        };
        if m.starts_with('<') {
            continue;
        }
        let (strip, m) = match m.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, m),
        };
        let quoted = m.len() >= 2
            && ((m.starts_with('"') && m.ends_with('"'))
                || (m.starts_with('\'') && m.ends_with('\'')));
        let name = if quoted { &m[1..m.len() - 1] } else { m };
        if name.is_empty() || name.contains(['"', '\'', '<', '>', '|', '&', ';']) {
            continue;
        }
        out.push((name.to_string(), strip, !quoted));
    }
    out
}

fn parse_instruction(
    keyword: &str,
    rest: &str,
    escape: char,
    line: usize,
) -> Result<Instruction, ParseError> {
    let mut rest = rest;
    let mut flags = Vec::new();
    if takes_flags(keyword) {
        loop {
            let r = rest.trim_start();
            let Some(after) = r.strip_prefix("--") else {
                rest = r;
                break;
            };
            if after.is_empty() || after.starts_with(char::is_whitespace) {
                // `--` alone ends the flags.
                rest = after.trim_start();
                break;
            }
            let (word, tail) = take_word(after, escape);
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (word.clone(), None),
            };
            if name.is_empty() {
                return Err(ParseError {
                    line,
                    message: format!("{keyword}: empty flag name"),
                });
            }
            flags.push(Flag { name, value });
            rest = tail;
        }
    }
    let rest = rest.trim();
    let args = if rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Exec(v),
            Err(_) => Args::Shell(rest.to_string()),
        }
    } else {
        Args::Shell(rest.to_string())
    };
    Ok(Instruction {
        keyword: keyword.to_string(),
        line,
        end_line: line,
        flags,
        args,
        heredocs: Vec::new(),
        original: String::new(),
    })
}

/// Takes one whitespace-separated word from `s`, honouring quotes (which are removed, as
/// BuildKit does for flag values) and the escape character.
fn take_word(s: &str, escape: char) -> (String, &str) {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => out.push(c),
            None if c.is_whitespace() => return (out, &s[i..]),
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == escape => {
                if let Some((_, n)) = it.next() {
                    out.push(n);
                }
            }
            None => out.push(c),
        }
    }
    (out, "")
}

/// Why the arguments of `ENV`, `ARG` or `LABEL` are not name/value pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameValueError {
    /// Nothing after the keyword.
    #[error("requires at least one argument")]
    Missing,
    /// The legacy `KEY value` form with only a key.
    #[error("{0} must have two arguments")]
    NoValue(String),
    /// `=value`.
    #[error("{0:?}: empty key")]
    EmptyKey(String),
    /// A word without `=` where pairs are required.
    #[error("{0:?} is not KEY=VALUE")]
    NotPair(String),
}

/// Splits `KEY=VALUE KEY2="v 2"` (or the legacy `KEY value with spaces` when `legacy` is
/// allowed and the first word has no `=`) into raw (unexpanded) pairs; values keep their
/// quotes for the expansion step. `ARG NAME` without `=` gives `(NAME, None)`.
pub fn name_values(
    rest: &str,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, Option<String>)>, NameValueError> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(NameValueError::Missing);
    }
    let words = raw_words(rest, escape);
    if legacy && !words[0].contains('=') {
        let (k, v) = match rest.find(char::is_whitespace) {
            Some(p) => (&rest[..p], rest[p..].trim_start()),
            None => return Err(NameValueError::NoValue(rest.to_string())),
        };
        return Ok(vec![(k.to_string(), Some(v.to_string()))]);
    }
    let mut out = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), Some(v.to_string()))),
            Some(_) => return Err(NameValueError::EmptyKey(w)),
            None if legacy => return Err(NameValueError::NotPair(w)),
            None => out.push((w, None)),
        }
    }
    Ok(out)
}

/// Splits on unquoted blanks, keeping quotes and escapes as written.
pub fn raw_words(s: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                } else if c == escape
                    && q == '"'
                    && let Some(n) = it.next()
                {
                    cur.push(n);
                }
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => {
                cur.push(c);
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if c == escape
                    && let Some(n) = it.next()
                {
                    cur.push(n);
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_directives_continuations_comments() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM busybox AS base\nRUN echo a `\n  # a comment\n\n  && echo b\nENV A=1 \\\n",
        )
        .unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.instructions.len(), 3);
        assert_eq!(
            df.instructions[1].args,
            Args::Shell("echo a   && echo b".into())
        );
        assert_eq!(df.instructions[1].line, 5);
        // `\` is not the escape character here.
        assert_eq!(df.instructions[2].args, Args::Shell("A=1 \\".into()));
        // A directive after the first instruction is a comment.
        let df = parse("FROM x\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert_eq!(df.instructions[1].args, Args::Shell("a  b".into()));
        assert!(parse("# escape=x\nFROM a").is_err());
        let e = parse("FROM a\nBOGUS x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown instruction"));
    }

    #[test]
    fn dockerfile_flags_exec_form() {
        let df = parse(
            "FROM --platform=linux/amd64 a AS b\nCOPY --from=b --chown=1:2 [\"x y\", \"/d/\"]\nRUN --mount=type=cache,target=/c --network=none make\nCMD [\"a\", \"b\"]\nCMD [broken\n",
        )
        .unwrap();
        let i = &df.instructions;
        assert_eq!(i[0].flag("platform"), Some("linux/amd64"));
        assert_eq!(i[0].args, Args::Shell("a AS b".into()));
        assert_eq!(i[1].flag("from"), Some("b"));
        assert_eq!(i[1].flag("chown"), Some("1:2"));
        assert_eq!(i[1].args, Args::Exec(vec!["x y".into(), "/d/".into()]));
        assert_eq!(i[2].flags_named("mount"), vec!["type=cache,target=/c"]);
        assert_eq!(i[2].flag("network"), Some("none"));
        assert_eq!(i[2].args, Args::Shell("make".into()));
        assert_eq!(i[3].args, Args::Exec(vec!["a".into(), "b".into()]));
        assert_eq!(i[4].args, Args::Shell("[broken".into()));
    }

    #[test]
    fn dockerfile_heredocs() {
        let df = parse(
            "FROM a\nRUN <<EOF\necho hi\n  FROM x\nEOF\nRUN python3 <<-'PY' && cat <<B2\n\tprint(1)\n\tPY\nb $X\nB2\nCOPY <<one.txt /one.txt\nhello\none.txt\nRUN echo <<<notheredoc\n",
        )
        .unwrap();
        let i = &df.instructions;
        assert_eq!(i.len(), 5);
        assert_eq!(i[1].heredocs[0].body, "echo hi\n  FROM x\n");
        assert!(i[1].heredocs[0].expand);
        assert_eq!(i[2].heredocs.len(), 2);
        assert_eq!(i[2].heredocs[0].name, "PY");
        assert_eq!(i[2].heredocs[0].body, "print(1)\n");
        assert!(!i[2].heredocs[0].expand);
        assert_eq!(i[2].heredocs[1].body, "b $X\n");
        assert_eq!(i[3].heredocs[0].name, "one.txt");
        assert_eq!(i[3].line, 11);
        assert!(i[4].heredocs.is_empty());
        assert!(parse("FROM a\nRUN <<EOF\nno end\n").is_err());
    }

    #[test]
    fn dockerfile_name_values() {
        assert_eq!(
            name_values(r#"A=1 B="two words" C=a\ b"#, '\\', true).unwrap(),
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("\"two words\"".into())),
                ("C".into(), Some("a\\ b".into())),
            ]
        );
        assert_eq!(
            name_values("A b c", '\\', true).unwrap(),
            vec![("A".into(), Some("b c".into()))]
        );
        assert_eq!(
            name_values("NAME V=1", '\\', false).unwrap(),
            vec![("NAME".into(), None), ("V".into(), Some("1".into()))]
        );
        assert!(name_values("", '\\', true).is_err());
    }
}
