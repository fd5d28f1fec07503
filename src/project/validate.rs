//! Loader phase 5: validate the merged, interpolated document against tug's compose schema.
//!
//! # The schema
//!
//! `schema/compose-spec.json` is a JSON Schema (draft 2020-12) written by this project that
//! describes the whole compose format: the top-level `name`, `services`, `networks`,
//! `volumes`, `secrets`, `configs`, `include` and `models`, every service key, and `x-*`
//! extension keys wherever compose allows them. The obsolete top-level `version:` key is
//! accepted and marked `"deprecated": true`; every deprecated key that is present produces a
//! [`Warning`] rather than an error.
//!
//! Validation runs *after* interpolation, so a value that the user wrote as `${PORT}` reaches
//! the validator as a string even where compose expects a number or a boolean. The schema
//! therefore accepts a string wherever compose accepts one after interpolation (`cpus: "0.5"`,
//! `tty: "true"`), exactly as compose does; converting such strings is the job of the
//! canonical-form phase.
//!
//! # Why a small validator of our own instead of the `jsonschema` crate
//!
//! The schema uses a small, fixed subset of JSON Schema: `type`, `enum`, `const`,
//! `properties`, `patternProperties`, `additionalProperties`, `propertyNames`, `required`,
//! `items`, `uniqueItems`, `minItems`, `maxItems`, `minimum`, `maximum`, `minLength`,
//! `maxLength`, `pattern`, `oneOf`, `anyOf`, `allOf`, `$ref` (local `#/$defs/...` only) and
//! the annotations `deprecated`, `title`, `description`, `default`, `examples`, `$comment`.
//! Interpreting that subset takes a few hundred lines, and owning it buys what a general
//! validator cannot give: errors written for people. An unknown key gets a "did you mean"
//! suggestion from the keys the schema allows at that place; a failed `oneOf` descends into
//! the one alternative whose type matches the value (so `ports[0]: {tagret: 80}` reports the
//! unknown key `tagret`, not "matches none of 3 schemas"); a type mismatch says what was
//! expected in words ("a string or a list of strings"). It also keeps resolvers that could
//! touch the network out of the loader entirely. Tests check the schema itself: it uses only
//! the supported keywords, each keyword's value has the shape the draft 2020-12 meta-schema
//! requires, every `$ref` resolves, every pattern compiles, every required key is an allowed
//! one and every definition is used; it accepts every compose file of the golden corpus that
//! docker compose accepts and rejects the schema-error cases at the right key path
//! (`tests/config_golden.rs`); and a property test feeds it random documents.
//!
//! # Output
//!
//! [`validate`] returns the warnings when the document is valid, or every error it found (in
//! document order). Each error carries its key path as [`PathSegment`]s so that the loader can
//! map it back to a file, line and column; [`render_path`] prints it as
//! `services.web.ports[1]`.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The compose schema, embedded at build time.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/compose-spec.json");

/// Keywords the validator understands. Anything else in the schema is a mistake, and the
/// schema self-test fails on it.
pub const SUPPORTED_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "type",
    "enum",
    "const",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "required",
    "items",
    "uniqueItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "oneOf",
    "anyOf",
    "allOf",
];

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// Renders a key path the way compose users read it: `services.web.ports[1]`. Keys that are
/// not plain identifiers are quoted: `services.web.labels["com.example.tier"]`.
#[must_use]
pub fn render_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSegment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            PathSegment::Key(k) => {
                let plain = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                } else {
                    out.push('[');
                    out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| k.clone()));
                    out.push(']');
                }
            }
        }
    }
    out
}

/// Like [`render_path`], but keys longer than 48 characters are cut short with `…`, so that
/// a message about a huge key stays readable. Use it for display only, never as a lookup key.
#[must_use]
pub fn render_path_short(path: &[PathSegment]) -> String {
    let short: Vec<PathSegment> = path
        .iter()
        .map(|seg| match seg {
            PathSegment::Key(k) if k.chars().count() > 48 => {
                PathSegment::Key(format!("{}…", k.chars().take(48).collect::<String>()))
            }
            other => other.clone(),
        })
        .collect();
    render_path(&short)
}

/// A place in the document where the schema is not satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SchemaError {
    /// Key path of the offending value (for an unknown key: the path of that key).
    pub path: Vec<PathSegment>,
    /// What was expected, in words (`expected a string or a list of strings, found a mapping`).
    pub message: String,
    /// For an unknown key or an unknown enum value: the closest allowed one.
    pub suggestion: Option<String>,
}

impl SchemaError {
    fn render(&self) -> String {
        let mut s = String::new();
        let p = render_path_short(&self.path);
        if p.is_empty() {
            s.push_str("(top level)");
        } else {
            s.push_str(&p);
        }
        s.push_str(": ");
        s.push_str(&self.message);
        if let Some(sugg) = &self.suggestion {
            s.push_str(", did you mean `");
            s.push_str(sugg);
            s.push_str("`?");
        }
        s
    }
}

/// Something valid but worth telling the user, such as the obsolete `version:` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Key path of the key the warning is about.
    pub path: Vec<PathSegment>,
    /// The warning text, without the path.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", render_path_short(&self.path), self.message)
    }
}

/// Validates a compose document (after merging and interpolation) against the schema.
///
/// # Errors
///
/// Every place where the document does not satisfy the schema, in document order.
pub fn validate(doc: &Value) -> Result<Vec<Warning>, Vec<SchemaError>> {
    let schema = match compiled() {
        Ok(s) => s,
        Err(e) => {
            return Err(vec![SchemaError {
                path: Vec::new(),
                message: format!("tug's built-in compose schema is broken: {e}"),
                suggestion: None,
            }]);
        }
    };
    let mut out = Outcome::default();
    let mut path = Vec::new();
    schema.check(&schema.root, doc, &mut path, &mut out);
    if out.errors.is_empty() {
        Ok(out.warnings)
    } else {
        Err(out.errors)
    }
}

/// What is wrong with a schema text (for the embedded one: a bug in tug, caught by tests).
#[derive(Debug, thiserror::Error)]
pub enum SchemaTextError {
    /// The text is not JSON.
    #[error("schema is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A `pattern` or `patternProperties` key is not a regex.
    #[error("bad pattern `{pattern}`: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: Box<regex::Error>,
    },
}

/// The parsed schema with every pattern compiled once.
pub struct CompiledSchema {
    root: Value,
    regexes: HashMap<String, Regex>,
}

/// Returns the embedded schema, parsed and with its patterns compiled (once per process).
///
/// # Errors
///
/// A description of what is wrong with the embedded schema (a bug in tug, caught by tests).
pub fn compiled() -> Result<&'static CompiledSchema, &'static SchemaTextError> {
    static SCHEMA: OnceLock<Result<CompiledSchema, SchemaTextError>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| CompiledSchema::new(SCHEMA_TEXT))
        .as_ref()
}

#[derive(Default)]
struct Outcome {
    errors: Vec<SchemaError>,
    warnings: Vec<Warning>,
}

impl Outcome {
    fn error(&mut self, path: &[PathSegment], message: String, suggestion: Option<String>) {
        self.errors.push(SchemaError {
            path: path.to_vec(),
            message,
            suggestion,
        });
    }
}

impl CompiledSchema {
    /// Parses a schema text and compiles its patterns.
    ///
    /// # Errors
    ///
    /// Invalid JSON, or a `pattern`/`patternProperties` key that is not a valid regex.
    pub fn new(text: &str) -> Result<Self, SchemaTextError> {
        let root: Value = serde_json::from_str(text).map_err(SchemaTextError::Json)?;
        let mut regexes = HashMap::new();
        collect_patterns(&root, &mut regexes)?;
        Ok(Self { root, regexes })
    }

    /// The schema document.
    #[must_use]
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Resolves a local reference `#/$defs/name` (or any `#/a/b` JSON pointer).
    #[must_use]
    pub fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// Follows `$ref` chains (a schema that is only a `$ref` plus annotations).
    fn deref<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => match self.resolve(r) {
                    Some(s) => schema = s,
                    None => return schema,
                },
                None => return schema,
            }
        }
        schema
    }

    #[allow(clippy::too_many_lines)]
    fn check(&self, schema: &Value, inst: &Value, path: &mut Vec<PathSegment>, out: &mut Outcome) {
        let s = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.error(path, "no value is allowed here".to_string(), None);
                return;
            }
            Value::Object(s) => s,
            _ => return,
        };

        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) => self.check(target, inst, path, out),
                None => out.error(path, format!("schema reference {r} does not resolve"), None),
            }
        }

        if let Some(ty) = s.get("type")
            && !type_matches(ty, inst)
        {
            out.error(
                path,
                format!(
                    "expected {}, found {}",
                    describe_types(ty, s),
                    describe_value(inst)
                ),
                None,
            );
            return;
        }

        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|a| json_eq(a, inst))
        {
            let names: Vec<String> = allowed.iter().map(short_value).collect();
            let suggestion = inst.as_str().and_then(|v| {
                closest(v, allowed.iter().filter_map(Value::as_str)).map(str::to_string)
            });
            out.error(
                path,
                format!(
                    "expected one of {}, found {}",
                    names.join(", "),
                    short_value(inst)
                ),
                suggestion,
            );
        }
        if let Some(c) = s.get("const")
            && !json_eq(c, inst)
        {
            out.error(
                path,
                format!("expected {}, found {}", short_value(c), short_value(inst)),
                None,
            );
        }

        match inst {
            Value::Object(map) => self.check_object(s, map, path, out),
            Value::Array(items) => self.check_array(s, items, path, out),
            Value::String(text) => self.check_string(s, text, path, out),
            Value::Number(n) => {
                if let Some(v) = n.as_f64() {
                    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                        && v < min
                    {
                        out.error(path, format!("must be at least {min}, found {n}"), None);
                    }
                    if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                        && v > max
                    {
                        out.error(path, format!("must be at most {max}, found {n}"), None);
                    }
                }
            }
            Value::Bool(_) | Value::Null => {}
        }

        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, inst, path, out);
            }
        }
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
            self.check_alternatives(alts, false, inst, path, out);
        }
        if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
            self.check_alternatives(alts, true, inst, path, out);
        }
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        map: &Map<String, Value>,
        path: &mut Vec<PathSegment>,
        out: &mut Outcome,
    ) {
        let props = s.get("properties").and_then(Value::as_object);
        let patterns = s.get("patternProperties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");

        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    out.error(path, format!("missing required key `{key}`"), None);
                }
            }
        }

        for (key, value) in map {
            path.push(PathSegment::Key(key.clone()));
            if let Some(names) = s.get("propertyNames") {
                let mut scratch = Outcome::default();
                self.check(names, &Value::String(key.clone()), path, &mut scratch);
                if !scratch.errors.is_empty() {
                    let hint = self
                        .deref(names)
                        .get("description")
                        .and_then(Value::as_str)
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    out.error(
                        path,
                        format!("{} is not a valid name{hint}", quote_key(key)),
                        None,
                    );
                    path.pop();
                    continue;
                }
            }
            let mut matched = false;
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                matched = true;
                if sub.get("deprecated").and_then(Value::as_bool) == Some(true) {
                    let why = sub
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("it is obsolete");
                    out.warnings.push(Warning {
                        path: path.clone(),
                        message: format!("{} is obsolete: {why}", quote_key(key)),
                    });
                }
                self.check(sub, value, path, out);
            }
            if let Some(patterns) = patterns {
                for (pat, sub) in patterns {
                    if self.regexes.get(pat).is_some_and(|re| re.is_match(key)) {
                        matched = true;
                        self.check(sub, value, path, out);
                    }
                }
            }
            if !matched {
                match additional {
                    Some(Value::Bool(false)) => {
                        let suggestion = props
                            .and_then(|p| closest(key, p.keys().map(String::as_str)))
                            .map(str::to_string);
                        let message = if props.is_some() {
                            format!("unknown key {}", quote_key(key))
                        } else {
                            format!("{} is not allowed here", quote_key(key))
                        };
                        out.error(path, message, suggestion);
                    }
                    Some(sub) => self.check(sub, value, path, out),
                    None => {}
                }
            }
            path.pop();
        }
    }

    fn check_array(
        &self,
        s: &Map<String, Value>,
        items: &[Value],
        path: &mut Vec<PathSegment>,
        out: &mut Outcome,
    ) {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.error(path, format!("expected at least {min} item(s)"), None);
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.error(path, format!("expected at most {max} item(s)"), None);
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                path.push(PathSegment::Index(i));
                self.check(item_schema, item, path, out);
                path.pop();
            }
        }
        if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            for (i, item) in items.iter().enumerate() {
                if let Some(first) = items[..i].iter().position(|prev| json_eq(prev, item)) {
                    path.push(PathSegment::Index(i));
                    out.error(
                        path,
                        format!(
                            "duplicate item {} (same as item {first}); items must be unique",
                            short_value(item)
                        ),
                        None,
                    );
                    path.pop();
                }
            }
        }
    }

    fn check_string(
        &self,
        s: &Map<String, Value>,
        text: &str,
        path: &mut [PathSegment],
        out: &mut Outcome,
    ) {
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.error(path, format!("expected at least {min} character(s)"), None);
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.error(path, format!("expected at most {max} character(s)"), None);
        }
        if let Some(pat) = s.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.regexes.get(pat)
            && !re.is_match(text)
        {
            let what = s
                .get("description")
                .and_then(Value::as_str)
                .map_or_else(|| format!("text matching `{pat}`"), str::to_string);
            out.error(
                path,
                format!(
                    "expected {what}, found {}",
                    short_value(&Value::String(text.into()))
                ),
                None,
            );
        }
    }

    /// `oneOf` (exactly one alternative) or `anyOf` (at least one). When none matches, the
    /// error descends into the single alternative whose type fits the value, if there is one;
    /// otherwise it lists what the alternatives accept.
    fn check_alternatives(
        &self,
        alts: &[Value],
        exactly_one: bool,
        inst: &Value,
        path: &mut Vec<PathSegment>,
        out: &mut Outcome,
    ) {
        let mut passing = Vec::new();
        for (i, alt) in alts.iter().enumerate() {
            // An alternative whose declared type does not fit cannot pass: skip the work.
            if !self.type_fits(alt, inst) {
                continue;
            }
            let mut trial = Outcome::default();
            self.check(alt, inst, path, &mut trial);
            if trial.errors.is_empty() {
                passing.push((i, trial));
            }
        }
        if passing.is_empty() {
            let fitting: Vec<&Value> = alts
                .iter()
                .filter(|alt| self.type_fits(alt, inst))
                .collect();
            if let [only] = fitting.as_slice() {
                self.check(only, inst, path, out);
            } else if fitting.len() > 1 {
                // Several forms of the same type (e.g. "a mapping with `driver`" and "a
                // mapping with `capabilities`"): say why each one failed.
                let mut reasons: Vec<String> = Vec::new();
                for alt in fitting {
                    let mut trial = Outcome::default();
                    self.check(alt, inst, path, &mut trial);
                    if let Some(first) = trial.errors.first() {
                        let mut r = render_relative(path, first);
                        if let Some(s) = &first.suggestion {
                            r.push_str(&format!(" (did you mean `{s}`?)"));
                        }
                        if !reasons.contains(&r) {
                            reasons.push(r);
                        }
                    }
                }
                out.error(
                    path,
                    format!(
                        "matches none of the allowed forms: {}",
                        reasons.join("; or ")
                    ),
                    None,
                );
            } else {
                let mut kinds: Vec<String> = Vec::new();
                for alt in alts {
                    let d = self.describe_schema(alt);
                    if !kinds.contains(&d) {
                        kinds.push(d);
                    }
                }
                out.error(
                    path,
                    format!(
                        "expected {}, found {}",
                        join_or(&kinds),
                        describe_value(inst)
                    ),
                    None,
                );
            }
            return;
        }
        if exactly_one && passing.len() > 1 {
            out.error(
                path,
                "ambiguous value: it matches more than one of the allowed forms".to_string(),
                None,
            );
            return;
        }
        let (_, trial) = passing.swap_remove(0);
        out.warnings.extend(trial.warnings);
    }

    /// True when the alternative's declared type (if any) admits the value's JSON type.
    fn type_fits(&self, alt: &Value, inst: &Value) -> bool {
        let alt = self.deref(alt);
        match alt.get("type") {
            Some(ty) => type_matches(ty, inst),
            None => match alt.get("oneOf").or_else(|| alt.get("anyOf")) {
                Some(Value::Array(inner)) => inner.iter().any(|a| self.type_fits(a, inst)),
                _ => true,
            },
        }
    }

    /// A few words for what a schema accepts: "a string", "a list of strings", "a mapping".
    fn describe_schema(&self, schema: &Value) -> String {
        let schema = self.deref(schema);
        let Some(s) = schema.as_object() else {
            return "any value".to_string();
        };
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = allowed.iter().map(short_value).collect();
            return format!("one of {}", names.join(", "));
        }
        if let Some(ty) = s.get("type") {
            let mut d = describe_types(ty, s);
            if ty.as_str() == Some("array")
                && let Some(items) = s.get("items")
            {
                let inner = self.describe_schema(items);
                if let Some(rest) = inner
                    .strip_prefix("a ")
                    .or_else(|| inner.strip_prefix("an "))
                {
                    d = format!("a list of {}", plural(rest));
                }
            }
            return d;
        }
        if let Some(Value::Array(alts)) = s.get("oneOf").or_else(|| s.get("anyOf")) {
            let mut kinds: Vec<String> = Vec::new();
            for alt in alts {
                let d = self.describe_schema(alt);
                if !kinds.contains(&d) {
                    kinds.push(d);
                }
            }
            return join_or(&kinds);
        }
        "any value".to_string()
    }
}

/// An error's message prefixed with its path below `base` (`ports[0].target: ...`).
fn render_relative(base: &[PathSegment], err: &SchemaError) -> String {
    let rest = err.path.get(base.len()..).unwrap_or_default();
    if rest.is_empty() {
        err.message.clone()
    } else {
        let mut p = render_path(rest);
        if p.starts_with('.') {
            p.remove(0);
        }
        format!("{p}: {}", err.message)
    }
}

fn plural(noun: &str) -> String {
    match noun {
        "mapping" | "string" | "number" | "boolean" | "integer" | "list" => format!("{noun}s"),
        other => other.to_string(),
    }
}

fn collect_patterns(
    schema: &Value,
    out: &mut HashMap<String, Regex>,
) -> Result<(), SchemaTextError> {
    match schema {
        Value::Object(map) => {
            if let Some(p) = map.get("pattern").and_then(Value::as_str) {
                compile_into(p, out)?;
            }
            if let Some(pp) = map.get("patternProperties").and_then(Value::as_object) {
                for p in pp.keys() {
                    compile_into(p, out)?;
                }
            }
            for (k, v) in map {
                // `properties` and `$defs` map names to schemas; everything else that holds
                // objects or arrays holds schemas too (or plain data we can walk harmlessly).
                if matches!(k.as_str(), "enum" | "const" | "default" | "examples") {
                    continue;
                }
                collect_patterns(v, out)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| collect_patterns(v, out)),
        _ => Ok(()),
    }
}

fn compile_into(pattern: &str, out: &mut HashMap<String, Regex>) -> Result<(), SchemaTextError> {
    if !out.contains_key(pattern) {
        let re = Regex::new(pattern).map_err(|e| SchemaTextError::Pattern {
            pattern: pattern.to_string(),
            source: Box::new(e),
        })?;
        out.insert(pattern.to_string(), re);
    }
    Ok(())
}

fn type_matches(ty: &Value, inst: &Value) -> bool {
    match ty {
        Value::String(t) => one_type_matches(t, inst),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .any(|t| one_type_matches(t, inst)),
        _ => true,
    }
}

fn one_type_matches(t: &str, inst: &Value) -> bool {
    match t {
        "object" => inst.is_object(),
        "array" => inst.is_array(),
        "string" => inst.is_string(),
        "boolean" => inst.is_boolean(),
        "null" => inst.is_null(),
        "number" => inst.is_number(),
        "integer" => match inst {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => false,
    }
}

fn type_word(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "boolean" => "a boolean",
        "null" => "null",
        "number" => "a number",
        "integer" => "an integer",
        _ => "a value",
    }
}

/// Words for a `type` keyword. A string alternative next to a number or a boolean is how the
/// schema admits interpolated values, so it is worded as such.
fn describe_types(ty: &Value, s: &Map<String, Value>) -> String {
    let types: Vec<&str> = match ty {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let scalar_with_string = types.contains(&"string")
        && types
            .iter()
            .any(|t| matches!(*t, "integer" | "number" | "boolean"));
    let mut words: Vec<String> = Vec::new();
    for t in &types {
        if scalar_with_string && *t == "string" {
            continue;
        }
        if *t == "array"
            && let Some(Value::Object(items)) = s.get("items")
            && let Some(Value::String(it)) = items.get("type")
        {
            let w = type_word(it);
            let noun = w.trim_start_matches("an ").trim_start_matches("a ");
            words.push(format!("a list of {}", plural(noun)));
            continue;
        }
        words.push(type_word(t).to_string());
    }
    let mut d = join_or(&words);
    if scalar_with_string {
        d.push_str(" (or a string holding one)");
    }
    d
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => format!("the string {}", short_value(v)),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// A key quoted for a message, cut short when long.
fn quote_key(key: &str) -> String {
    short_value(&Value::String(key.to_string()))
}

/// A value quoted for a message, cut short when long.
fn short_value(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => return "a list".to_string(),
        Value::Object(_) => return "a mapping".to_string(),
        other => other.to_string(),
    };
    let mut cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("`{cut}`")
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The allowed name closest to `wrong`, if it is close enough to be a likely typo.
fn closest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_l = wrong.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for cand in candidates {
        let score = strsim::jaro_winkler(&wrong_l, &cand.to_ascii_lowercase());
        let close = score >= 0.82
            || strsim::damerau_levenshtein(&wrong_l, &cand.to_ascii_lowercase()) <= 2
                && cand.len() > 3;
        if close && best.is_none_or(|(_, b)| score > b) {
            best = Some((cand, score));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(doc: &Value) -> Vec<String> {
        match validate(doc) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn validate_schema_parses_and_patterns_compile() {
        let s = compiled().expect("embedded schema");
        assert!(s.root().get("$defs").is_some());
    }

    #[test]
    fn validate_schema_is_well_formed_and_uses_only_supported_keywords() {
        fn walk(s: &CompiledSchema, node: &Value, at: &str, problems: &mut Vec<String>) {
            let Value::Object(map) = node else {
                if !node.is_boolean() {
                    problems.push(format!("{at}: a schema must be an object or a boolean"));
                }
                return;
            };
            for (k, v) in map {
                if !SUPPORTED_KEYWORDS.contains(&k.as_str()) {
                    problems.push(format!("{at}: unsupported keyword `{k}`"));
                    continue;
                }
                let here = format!("{at}/{k}");
                match k.as_str() {
                    "$ref" => {
                        let r = v.as_str().unwrap_or_default();
                        if !r.starts_with("#/$defs/") || s.resolve(r).is_none() {
                            problems.push(format!("{here}: unresolvable reference {r}"));
                        }
                    }
                    "properties" | "patternProperties" | "$defs" => {
                        for (name, sub) in v.as_object().into_iter().flatten() {
                            walk(s, sub, &format!("{here}/{name}"), problems);
                        }
                    }
                    "items" | "additionalProperties" | "propertyNames" => {
                        walk(s, v, &here, problems);
                    }
                    "oneOf" | "anyOf" | "allOf" => {
                        for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                            walk(s, sub, &format!("{here}/{i}"), problems);
                        }
                    }
                    "type" => {
                        let names: Vec<&str> = match v {
                            Value::String(t) => vec![t.as_str()],
                            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                            _ => vec!["?"],
                        };
                        for t in names {
                            if !matches!(
                                t,
                                "object"
                                    | "array"
                                    | "string"
                                    | "number"
                                    | "integer"
                                    | "boolean"
                                    | "null"
                            ) {
                                problems.push(format!("{here}: unknown type `{t}`"));
                            }
                        }
                    }
                    "required" => {
                        let names: Vec<&str> = v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        if names.len() != v.as_array().map_or(0, Vec::len) {
                            problems.push(format!("{here}: must be a list of strings"));
                        }
                        // A required key that the object does not allow is a typo.
                        let props = map.get("properties").and_then(Value::as_object);
                        if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                            for n in names {
                                if !props.is_some_and(|p| p.contains_key(n)) {
                                    problems.push(format!("{here}: `{n}` is not a property"));
                                }
                            }
                        }
                    }
                    "enum" => {
                        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
                        if items.is_empty() {
                            problems.push(format!("{here}: must be a non-empty list"));
                        }
                        for (i, a) in items.iter().enumerate() {
                            if items[..i].contains(a) {
                                problems.push(format!("{here}: duplicate value {a}"));
                            }
                        }
                    }
                    "minimum" | "maximum" if !v.is_number() => {
                        problems.push(format!("{here}: must be a number"));
                    }
                    "minItems" | "maxItems" | "minLength" | "maxLength" if !v.is_u64() => {
                        problems.push(format!("{here}: must be a non-negative integer"));
                    }
                    "uniqueItems" | "deprecated" if !v.is_boolean() => {
                        problems.push(format!("{here}: must be a boolean"));
                    }
                    "pattern" | "title" | "description" | "$comment" | "$id" | "$schema"
                        if !v.is_string() =>
                    {
                        problems.push(format!("{here}: must be a string"));
                    }
                    _ => {}
                }
            }
        }
        let s = compiled().expect("embedded schema");
        let mut problems = Vec::new();
        walk(s, s.root(), "#", &mut problems);
        assert_eq!(
            s.root().get("$schema").and_then(Value::as_str),
            Some("https://json-schema.org/draft/2020-12/schema")
        );
        // Every definition is used somewhere.
        for name in s.root()["$defs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let needle = format!("\"#/$defs/{name}\"");
            if !SCHEMA_TEXT.contains(&needle) {
                problems.push(format!("#/$defs/{name}: never referenced"));
            }
        }
        assert!(
            problems.is_empty(),
            "schema problems:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn validate_accepts_a_plain_project() {
        let doc = json!({
            "name": "demo",
            "services": {
                "web": {
                    "image": "nginx",
                    "ports": ["8080:80", 443, {"target": 81, "published": "8081"}],
                    "depends_on": ["db"],
                    "x-custom": {"anything": [1, 2]}
                },
                "db": {"image": "postgres", "environment": {"A": 1, "B": null}}
            },
            "x-top": 3
        });
        assert_eq!(errors(&doc), Vec::<String>::new());
    }

    #[test]
    fn validate_warns_about_version() {
        let doc = json!({"version": "3.8", "services": {"a": {"image": "x"}}});
        let warnings = validate(&doc).expect("valid");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].path, vec![PathSegment::Key("version".into())]);
        assert!(
            warnings[0].to_string().contains("obsolete"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn validate_unknown_key_suggests_the_closest() {
        let doc = json!({"services": {"web": {"image": "x", "depnds_on": ["db"]}}});
        let errs = validate(&doc).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(render_path(&errs[0].path), "services.web.depnds_on");
        assert_eq!(errs[0].suggestion.as_deref(), Some("depends_on"));
        assert_eq!(
            errs[0].to_string(),
            "services.web.depnds_on: unknown key `depnds_on`, did you mean `depends_on`?"
        );
    }

    #[test]
    fn validate_wrong_type_names_path_and_expectation() {
        let doc = json!({"services": {"web": {"image": "x", "ports": ["80", ["nested"]]}}});
        let errs = validate(&doc).unwrap_err();
        assert_eq!(render_path(&errs[0].path), "services.web.ports[1]");
        assert!(errs[0].message.contains("expected"), "{}", errs[0]);
        assert!(errs[0].message.contains("found a list"), "{}", errs[0]);
    }

    #[test]
    fn validate_descends_into_the_fitting_alternative() {
        let doc = json!({"services": {"web": {"image": "x", "ports": [{"tagret": 80}]}}});
        let errs = validate(&doc).unwrap_err();
        assert_eq!(render_path(&errs[0].path), "services.web.ports[0].tagret");
        assert_eq!(errs[0].suggestion.as_deref(), Some("target"));
    }

    #[test]
    fn validate_enum_suggests_close_value() {
        let doc = json!({"services": {"web": {"image": "x",
            "depends_on": {"db": {"condition": "service_healty"}}}}});
        let errs = validate(&doc).unwrap_err();
        assert_eq!(
            render_path(&errs[0].path),
            "services.web.depends_on.db.condition"
        );
        assert_eq!(errs[0].suggestion.as_deref(), Some("service_healthy"));
    }

    #[test]
    fn validate_rejects_bad_names_and_unknown_top_level() {
        let doc = json!({"services": {"my web": {"image": "x"}}, "servces": {}});
        let errs: Vec<String> = errors(&doc);
        assert!(
            errs.iter().any(|e| e.contains("services[\"my web\"]")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("did you mean `services`")),
            "{errs:?}"
        );
    }

    #[test]
    fn validate_huge_keys_are_cut_short_in_messages() {
        let huge = "x y".repeat(100_000);
        let doc = json!({"services": {huge.clone(): {"image": "x"}}});
        let errs = validate(&doc).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.len() < 400, "message too long: {} bytes", text.len());
        assert_eq!(errs[0].path[1], PathSegment::Key(huge));
    }

    #[test]
    fn validate_render_path_quotes_odd_keys() {
        let p = vec![
            PathSegment::Key("services".into()),
            PathSegment::Key("web".into()),
            PathSegment::Key("labels".into()),
            PathSegment::Key("com.example.x".into()),
            PathSegment::Index(2),
        ];
        assert_eq!(render_path(&p), "services.web.labels[\"com.example.x\"][2]");
    }

    #[test]
    fn validate_interpolated_strings_pass_where_numbers_expected() {
        let doc = json!({"services": {"web": {"image": "x", "cpus": "0.5", "tty": "true",
            "scale": "2", "mem_limit": "1g"}}});
        assert_eq!(errors(&doc), Vec::<String>::new());
    }
}

#[cfg(test)]
mod proptests {
    use super::{PathSegment, validate};
    use proptest::prelude::*;
    use serde_json::Value;

    /// Keys that lead deep into the schema, plus a few that do not exist.
    const KEYS: &[&str] = &[
        "services",
        "web",
        "image",
        "ports",
        "volumes",
        "environment",
        "depends_on",
        "condition",
        "deploy",
        "resources",
        "limits",
        "cpus",
        "healthcheck",
        "test",
        "build",
        "context",
        "networks",
        "aliases",
        "secrets",
        "source",
        "target",
        "x-ext",
        "ulimits",
        "nofile",
        "soft",
        "hard",
        "type",
        "bind",
        "name",
        "version",
        "bogus",
        "my key",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z0-9:/._ -]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 96, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                    Value::Object(kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    fn resolve<'a>(doc: &'a Value, path: &[PathSegment]) -> Option<&'a Value> {
        path.iter().try_fold(doc, |v, seg| match seg {
            PathSegment::Key(k) => v.get(k),
            PathSegment::Index(i) => v.get(*i),
        })
    }

    proptest! {
        /// Whatever the document, validation returns (no panic), and every error and warning
        /// points at a node that exists, so the loader can always locate it in the file.
        #[test]
        fn validate_never_panics_and_paths_resolve(services in json_value(), top in json_value()) {
            let mut doc = serde_json::json!({"services": services});
            if let Value::Object(extra) = top {
                for (k, v) in extra {
                    doc[k] = v;
                }
            }
            match validate(&doc) {
                Ok(warnings) => {
                    for w in warnings {
                        prop_assert!(resolve(&doc, &w.path).is_some(), "warning path {w}");
                    }
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in errors {
                        prop_assert!(resolve(&doc, &e.path).is_some(), "error path {e}");
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }
        }
    }
}
