//! Output that scripts parse, as docker's clients print it: `--format` Go templates (the
//! subset people write: `{{.Name}}`, `{{json .}}`, `table {{.Name}}\t{{.State}}`, a few
//! functions), docker's tables (`text/tabwriter` with a minimum width of 10 and 3 spaces of
//! padding) and docker's words for durations (`About a minute`) and times.
//!
//! A row is a JSON object: its keys are the template's fields. What a template cannot be
//! (`if`, `range`, pipes, variables, unknown functions or fields) is an error that names it,
//! never a silently wrong line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One value a template can read: the fields of a row, plus its labels for `.Label "k"`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Field name → value, in the order `{{json .}}` prints them.
    pub fields: Map<String, Value>,
    /// Labels, for `{{.Label "name"}}`.
    pub labels: BTreeMap<String, String>,
}

impl Row {
    /// A row from `(field, value)` pairs; `{{json .}}` prints them sorted by name, as Go's
    /// encoding/json prints a map.
    #[must_use]
    pub fn new<I: IntoIterator<Item = (&'static str, Value)>>(fields: I) -> Row {
        let sorted: BTreeMap<&str, Value> = fields.into_iter().collect();
        Row {
            fields: sorted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            labels: BTreeMap::new(),
        }
    }

    /// The row with its labels (for `.Label`).
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Row {
        self.labels = labels;
        self
    }
}

/// An argument of a function call.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.` or `.A.B`: the row, or a field (path) of it.
    Field(Vec<String>),
    /// `"text"`.
    Str(String),
    /// `42`.
    Int(i64),
}

/// One `{{ … }}`.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// `{{.A.B}}` or `{{.}}`.
    Value(Vec<String>),
    /// `{{.Label "k"}}`.
    Label(String),
    /// `{{func arg…}}`.
    Call(String, Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Action),
}

/// A parsed `--format` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// `table …`: a header line, columns aligned.
    table: bool,
    parts: Vec<Part>,
}

const FUNCTIONS: [&str; 8] = [
    "json", "upper", "lower", "title", "truncate", "pad", "join", "split",
];

/// What tug reads in a template, for the errors about what it does not.
const SUBSET: &str = "tug reads fields (.Name), `json .`, `.Label \"k\"` and the functions";

/// A `--format` template that cannot be parsed or rendered. Messages start with
/// `template: `, as Go's do.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("template: unclosed action in {body:?}")]
    Unclosed {
        /// The template.
        body: String,
    },
    /// `}}` without its `{{`.
    #[error("template: unexpected \"}}}}\" in {body:?}")]
    UnexpectedClose {
        /// The template.
        body: String,
    },
    /// A `"` that is not closed.
    #[error("template: unterminated string")]
    UnterminatedString,
    /// `{{}}`.
    #[error("template: empty action {{{{}}}}")]
    EmptyAction,
    /// Pipes, variables or parentheses.
    #[error("template: {{{{{action}}}}} is not supported: {} {}", SUBSET, FUNCTIONS.join(", "))]
    Construct {
        /// The action's text.
        action: String,
    },
    /// A control keyword (`if`, `range`, …).
    #[error("template: `{keyword}` is not supported: {} {}", SUBSET, FUNCTIONS.join(", "))]
    Keyword {
        /// The keyword.
        keyword: String,
    },
    /// A field followed by arguments (other than `.Label "k"`).
    #[error("template: {{{{{action}}}}} is not supported")]
    Action {
        /// The action's text.
        action: String,
    },
    /// A function tug does not have.
    #[error("template: function {name:?} is not supported (supported: {})", FUNCTIONS.join(", "))]
    UnknownFunction {
        /// The function's name.
        name: String,
    },
    /// An argument that is not a field, a string or a number.
    #[error("template: {arg:?} is not supported here (expected .Field, \"text\" or a number)")]
    Argument {
        /// The argument as written.
        arg: String,
    },
    /// A field the row does not have.
    #[error("template: can't evaluate field {field} (no such field)")]
    NoField {
        /// The field's name.
        field: String,
    },
    /// A function called with the wrong number of arguments.
    #[error("template: {function} takes {expected} argument(s), got {got}")]
    Arity {
        /// The function.
        function: String,
        /// How many it takes.
        expected: usize,
        /// How many it was given.
        got: usize,
    },
    /// A function's argument that must be a number.
    #[error("template: {function} needs a number as argument {position}")]
    NotANumber {
        /// The function.
        function: String,
        /// 1-based.
        position: usize,
    },
    /// `join` of something that is not a list.
    #[error("template: join needs a list")]
    NotAList,
    /// `json` of a value JSON cannot hold.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Template {
    /// Parses a format: `table`, `json` and the empty string are docker's keywords (the
    /// default table, one JSON object per line); anything else is a Go template, with a
    /// leading `table ` for a table with a header. `\t` and `\n` written as two characters
    /// mean a tab and a newline, as docker reads them. `default` is the verb's table.
    ///
    /// # Errors
    /// A construct outside the supported subset, named.
    pub fn parse(format: &str, default: &str) -> Result<Template, TemplateError> {
        let f = match format.trim() {
            "" | "table" => default,
            "json" => "{{json .}}",
            other => other,
        };
        let (table, body) = match f.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with([' ', '\t']) => (true, rest),
            _ => (false, f),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        Ok(Template {
            table,
            parts: parse_parts(&body)?,
        })
    }

    /// Whether this is a table (a header line, aligned columns).
    #[must_use]
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Renders rows: a table with its header (from `headers`, field name → column title)
    /// aligned as docker aligns it, or one line per row.
    ///
    /// # Errors
    /// A field the rows do not have, or a function used wrongly.
    pub fn render(&self, rows: &[Row], headers: &[(&str, &str)]) -> Result<String, TemplateError> {
        self.render_min(rows, headers, 10)
    }

    /// [`Template::render`] with another minimum column width for tables (docker compose's
    /// own listings use 20).
    ///
    /// # Errors
    /// As [`Template::render`].
    pub fn render_min(
        &self,
        rows: &[Row],
        headers: &[(&str, &str)],
        min_width: usize,
    ) -> Result<String, TemplateError> {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.header(headers));
        }
        for r in rows {
            lines.push(self.render_row(r)?);
        }
        if self.table {
            Ok(tabulate_min(&lines, min_width))
        } else {
            let mut out = String::new();
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
            Ok(out)
        }
    }

    fn header(&self, headers: &[(&str, &str)]) -> String {
        let title = |path: &[String]| -> String {
            let name = path.last().map_or("", String::as_str);
            headers
                .iter()
                .find(|(f, _)| *f == name)
                .map_or_else(|| name.to_uppercase(), |(_, h)| (*h).to_owned())
        };
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(Action::Value(path)) => out.push_str(&title(path)),
                Part::Action(Action::Label(k)) => out.push_str(&k.to_uppercase()),
                Part::Action(Action::Call(_, args)) => {
                    if let Some(Arg::Field(path)) = args.first() {
                        out.push_str(&title(path));
                    }
                }
            }
        }
        out
    }

    fn render_row(&self, row: &Row) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(a) => out.push_str(&text(&eval(a, row)?)),
            }
        }
        Ok(out)
    }
}

/// A value as Go's template prints it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".to_owned(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(text).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{}", text(v))).collect();
            format!("map[{}]", inner.join(" "))
        }
        other => other.to_string(),
    }
}

fn lookup(path: &[String], row: &Row) -> Result<Value, TemplateError> {
    if path.is_empty() {
        return Ok(Value::Object(row.fields.clone()));
    }
    let mut cur = row
        .fields
        .get(&path[0])
        .ok_or_else(|| TemplateError::NoField {
            field: path[0].clone(),
        })?;
    for p in &path[1..] {
        cur = cur
            .get(p)
            .ok_or_else(|| TemplateError::NoField { field: p.clone() })?;
    }
    Ok(cur.clone())
}

fn arg_value(a: &Arg, row: &Row) -> Result<Value, TemplateError> {
    match a {
        Arg::Field(p) => lookup(p, row),
        Arg::Str(s) => Ok(Value::String(s.clone())),
        Arg::Int(n) => Ok(Value::from(*n)),
    }
}

fn eval(action: &Action, row: &Row) -> Result<Value, TemplateError> {
    match action {
        Action::Value(path) => lookup(path, row),
        Action::Label(k) => Ok(Value::String(
            row.labels.get(k).cloned().unwrap_or_default(),
        )),
        Action::Call(name, args) => {
            let vals: Vec<Value> = args
                .iter()
                .map(|a| arg_value(a, row))
                .collect::<Result<_, _>>()?;
            let s = |i: usize| vals.get(i).map(text).unwrap_or_default();
            let n = |i: usize| -> Result<usize, TemplateError> {
                vals.get(i)
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| TemplateError::NotANumber {
                        function: name.clone(),
                        position: i + 1,
                    })
            };
            let want = |k: usize| -> Result<(), TemplateError> {
                if vals.len() == k {
                    Ok(())
                } else {
                    Err(TemplateError::Arity {
                        function: name.clone(),
                        expected: k,
                        got: vals.len(),
                    })
                }
            };
            match name.as_str() {
                "json" => {
                    want(1)?;
                    Ok(Value::String(serde_json::to_string(&vals[0])?))
                }
                "upper" => want(1).map(|()| Value::String(s(0).to_uppercase())),
                "lower" => want(1).map(|()| Value::String(s(0).to_lowercase())),
                "title" => {
                    want(1)?;
                    let mut out = String::new();
                    let mut start = true;
                    for c in s(0).chars() {
                        if start {
                            out.extend(c.to_uppercase());
                        } else {
                            out.push(c);
                        }
                        start = !c.is_alphanumeric();
                    }
                    Ok(Value::String(out))
                }
                "truncate" => {
                    want(2)?;
                    Ok(Value::String(s(0).chars().take(n(1)?).collect()))
                }
                "pad" => {
                    want(3)?;
                    Ok(Value::String(format!(
                        "{}{}{}",
                        " ".repeat(n(1)?),
                        s(0),
                        " ".repeat(n(2)?)
                    )))
                }
                "join" => {
                    want(2)?;
                    let items = vals[0].as_array().ok_or(TemplateError::NotAList)?;
                    let parts: Vec<String> = items.iter().map(text).collect();
                    Ok(Value::String(parts.join(&s(1))))
                }
                "split" => {
                    want(2)?;
                    Ok(Value::Array(
                        s(0).split(&s(1))
                            .map(|p| Value::String(p.to_owned()))
                            .collect(),
                    ))
                }
                other => Err(TemplateError::UnknownFunction {
                    name: other.to_owned(),
                }),
            }
        }
    }
}

fn parse_parts(body: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
            body: body.to_owned(),
        })?;
        let mut inner = &after[..close];
        // `{{- x -}}` trims the text around the action.
        let trim_left = inner.starts_with('-') && inner[1..].starts_with([' ', '\t']);
        let trim_right = inner.ends_with('-') && inner[..inner.len() - 1].ends_with([' ', '\t']);
        if trim_left {
            inner = &inner[1..];
            if let Some(Part::Text(t)) = parts.last_mut() {
                *t = t.trim_end().to_owned();
            }
        }
        if trim_right {
            inner = &inner[..inner.len() - 1];
        }
        parts.push(Part::Action(parse_action(inner.trim())?));
        rest = &after[close + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    if rest.contains("}}") {
        return Err(TemplateError::UnexpectedClose {
            body: body.to_owned(),
        });
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn tokens(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut t = String::from("\"");
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some('n') => t.push('\n'),
                        Some('t') => t.push('\t'),
                        Some(o) => t.push(o),
                        None => return Err(TemplateError::UnterminatedString),
                    },
                    Some('"') => break,
                    Some(o) => t.push(o),
                    None => return Err(TemplateError::UnterminatedString),
                }
            }
            out.push(t);
        } else {
            let mut t = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                t.push(c);
                chars.next();
            }
            out.push(t);
        }
    }
    Ok(out)
}

fn field_path(t: &str) -> Option<Vec<String>> {
    if t == "." {
        return Some(Vec::new());
    }
    let rest = t.strip_prefix('.')?;
    let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
    path.iter()
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then_some(path)
}

fn parse_arg(t: &str) -> Result<Arg, TemplateError> {
    if let Some(s) = t.strip_prefix('"') {
        return Ok(Arg::Str(s.to_owned()));
    }
    if let Ok(n) = t.parse::<i64>() {
        return Ok(Arg::Int(n));
    }
    field_path(t)
        .map(Arg::Field)
        .ok_or_else(|| TemplateError::Argument { arg: t.to_owned() })
}

fn parse_action(inner: &str) -> Result<Action, TemplateError> {
    if inner.contains('|') || inner.contains('$') || inner.contains('(') {
        return Err(TemplateError::Construct {
            action: inner.to_owned(),
        });
    }
    let toks = tokens(inner)?;
    let Some(first) = toks.first() else {
        return Err(TemplateError::EmptyAction);
    };
    if let Some(path) = field_path(first) {
        if toks.len() == 1 {
            return Ok(Action::Value(path));
        }
        if path == ["Label"] && toks.len() == 2 && toks[1].starts_with('"') {
            return Ok(Action::Label(toks[1][1..].to_owned()));
        }
        return Err(TemplateError::Action {
            action: inner.to_owned(),
        });
    }
    if [
        "if", "range", "with", "else", "end", "define", "template", "block",
    ]
    .contains(&first.as_str())
    {
        return Err(TemplateError::Keyword {
            keyword: first.clone(),
        });
    }
    if !FUNCTIONS.contains(&first.as_str()) {
        return Err(TemplateError::UnknownFunction {
            name: first.clone(),
        });
    }
    let args = toks[1..]
        .iter()
        .map(|t| parse_arg(t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Action::Call(first.clone(), args))
}

/// Aligns tab-separated cells as docker's tables are aligned (Go's `text/tabwriter`, minimum
/// width 10, padding 3): every column as wide as its widest cell plus 3, at least 10; the
/// text after a line's last tab is not aligned.
#[must_use]
pub fn tabulate(lines: &[String]) -> String {
    tabulate_min(lines, 10)
}

/// [`tabulate`] with another minimum column width (docker compose's own listings use 20).
#[must_use]
pub fn tabulate_min(lines: &[String], min: usize) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count() + 3).max(min);
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A duration as docker words it (`go-units.HumanDuration`): "Less than a second",
/// "About a minute", "3 hours", "2 weeks".
#[must_use]
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    // Hours round to the nearest, as docker rounds them.
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// Seconds from an RFC 3339 time to now (0 when it cannot be read).
#[must_use]
pub fn seconds_since(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>()
        .map(|t| jiff::Timestamp::now().duration_since(t).as_secs())
        .unwrap_or(0)
}

/// A time as Go's `time.Time.String()` prints it in the local zone (docker's `CreatedAt`):
/// `2024-06-01 10:00:00 +0000 UTC`.
#[must_use]
pub fn go_time(rfc3339: &str) -> String {
    let Ok(t) = rfc3339.parse::<jiff::Timestamp>() else {
        return rfc3339.to_owned();
    };
    let z = t.to_zoned(jiff::tz::TimeZone::system());
    let mut out = z.strftime("%Y-%m-%d %H:%M:%S %z").to_string();
    let abbrev = z.time_zone().to_offset_info(t).abbreviation().to_owned();
    let _ = write!(out, " {abbrev}");
    out
}

/// `s` cut to `n` characters, the last one replaced by `…` when cut (docker's `Ellipsis`).
#[must_use]
pub fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A string quoted as Go's `strconv.Quote` quotes it (printable characters kept).
#[must_use]
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Row {
        Row::new([
            ("Name", json!("p-web-1")),
            ("State", json!("running")),
            ("ExitCode", json!(0)),
            (
                "Publishers",
                json!([{"URL": "0.0.0.0", "PublishedPort": 8080}]),
            ),
        ])
        .with_labels(BTreeMap::from([("a.b".to_owned(), "x".to_owned())]))
    }

    #[test]
    fn templates_read_fields_json_labels_and_tables() {
        let r = row();
        let t = Template::parse("{{.Name}} {{.State}}", "").unwrap();
        assert_eq!(
            t.render(std::slice::from_ref(&r), &[]).unwrap(),
            "p-web-1 running\n"
        );
        let t = Template::parse("json", "").unwrap();
        assert_eq!(
            t.render(std::slice::from_ref(&r), &[]).unwrap(),
            "{\"ExitCode\":0,\"Name\":\"p-web-1\",\"Publishers\":[{\"URL\":\"0.0.0.0\",\"PublishedPort\":8080}],\"State\":\"running\"}\n"
        );
        let t = Template::parse("{{json .Publishers}}", "").unwrap();
        assert!(
            t.render(std::slice::from_ref(&r), &[])
                .unwrap()
                .starts_with("[{")
        );
        let t = Template::parse("{{.Label \"a.b\"}}|{{upper .State}}", "").unwrap();
        assert_eq!(
            t.render(std::slice::from_ref(&r), &[]).unwrap(),
            "x|RUNNING\n"
        );
        let t = Template::parse("table {{.Name}}\\t{{.State}}", "").unwrap();
        assert_eq!(
            t.render(
                std::slice::from_ref(&r),
                &[("Name", "NAME"), ("State", "STATE")]
            )
            .unwrap(),
            "NAME      STATE\np-web-1   running\n"
        );
        assert_eq!(
            Template::parse("{{ .Name -}} ! {{- .State }}", "")
                .unwrap()
                .render(&[r], &[])
                .unwrap(),
            "p-web-1!running\n"
        );
    }

    #[test]
    fn templates_outside_the_subset_are_clear_errors() {
        for bad in [
            "{{if .Name}}x{{end}}",
            "{{range .Publishers}}{{.URL}}{{end}}",
            "{{.Name | upper}}",
            "{{printf \"%s\" .Name}}",
            "{{.Name",
        ] {
            let e = Template::parse(bad, "").unwrap_err().to_string();
            assert!(e.starts_with("template:"), "{bad}: {e}");
        }
        let t = Template::parse("{{.Nope}}", "").unwrap();
        let e = t.render(&[row()], &[]).unwrap_err();
        assert!(
            matches!(&e, TemplateError::NoField { field } if field == "Nope"),
            "{e}"
        );
    }

    #[test]
    fn tables_align_as_docker_s_tabwriter() {
        let lines = vec!["A\tLONGER HEADER\tC".to_owned(), "xyz\t1\t".to_owned()];
        assert_eq!(
            tabulate(&lines),
            "A         LONGER HEADER   C\nxyz       1               \n"
        );
    }

    #[test]
    fn durations_times_and_quotes_in_docker_s_words() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(119), "About a minute");
        assert_eq!(human_duration(120), "2 minutes");
        assert_eq!(human_duration(3599), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5399), "About an hour");
        assert_eq!(human_duration(5400), "2 hours");
        assert_eq!(human_duration(47 * 3600), "47 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(15 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
        assert_eq!(
            ellipsis("docker-entrypoint.sh nginx", 20),
            "docker-entrypoint.s…"
        );
        assert_eq!(ellipsis("short", 20), "short");
        assert_eq!(go_quote("a \"b\"\t…"), "\"a \\\"b\\\"\\t…\"");
        let t = go_time("2024-06-01T10:00:00Z");
        assert!(t.contains(':') && t.len() >= 25, "{t}");
    }
}
