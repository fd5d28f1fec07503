//! Phase 2: parse YAML into a tree that remembers where every node came from.
//!
//! YAML is a superset of JSON with anchors (`&name`), aliases (`*name`, a copy of the anchored
//! node), merge keys (`<<: *base` copies the keys of a mapping that are not set explicitly)
//! and tags (`!reset`, `!override`, used by compose's merge rules). Scalars without quotes are
//! typed by the YAML core schema (`true`, `42`, `0x1f`, `1.5`, `null`, `~`); quoted scalars
//! are strings. Like compose (go-yaml), a plain `0755` is an octal integer.
//!
//! The parser (saphyr-parser) gives a stream of events with positions; this module builds a
//! [`Node`] tree from them, expanding aliases and merge keys, and bounds the work: nesting
//! deeper than [`MAX_DEPTH`] or more than [`MAX_NODES`] nodes after alias expansion (the
//! "billion laughs" attack) is an error, not a hang.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::error::{ProjectError, Result};

/// Maximum nesting depth of a document.
pub const MAX_DEPTH: usize = 200;
/// Maximum number of nodes in a document after aliases are expanded.
pub const MAX_NODES: usize = 2_000_000;

/// A position in a compose file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The file (as given or found).
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A merge tag on a node (compose's `!reset` and `!override`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeTag {
    /// `!reset`: remove the value inherited from earlier files.
    Reset,
    /// `!override`: replace the value from earlier files instead of merging.
    Override,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the node starts.
    pub pos: Pos,
    /// `!reset` / `!override`, if present.
    pub tag: Option<MergeTag>,
    /// For a mapping value: where its key is (errors about a key point there).
    pub key_pos: Option<Pos>,
}

/// The value of a node. Mapping keys are strings (`80: x` has the key `"80"`), in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (any quoted scalar, or a plain scalar that is nothing else).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping.
    Map(IndexMap<String, Node>),
}

impl Node {
    /// A node with no merge tag.
    #[must_use]
    pub fn new(value: Value, pos: Pos) -> Node {
        Node {
            value,
            pos,
            tag: None,
            key_pos: None,
        }
    }

    /// The mapping, if this is one.
    #[must_use]
    pub fn as_map(&self) -> Option<&IndexMap<String, Node>> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The mapping, mutably, if this is one.
    pub fn as_map_mut(&mut self) -> Option<&mut IndexMap<String, Node>> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The string, if this is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Child of a mapping.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// The kind of the node, for messages ("a mapping", "a string", ...).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.value.kind()
    }

    /// Converts to JSON, recording the position of every key path in `spans`.
    pub fn to_json(&self, path: &str, spans: &mut Spans) -> serde_json::Value {
        spans.insert(
            path.to_owned(),
            self.key_pos.clone().unwrap_or_else(|| self.pos.clone()),
        );
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => serde_json::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.to_json(&format!("{path}[{i}]"), spans))
                    .collect(),
            ),
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, n)| (k.clone(), n.to_json(&join_path(path, k), spans)))
                    .collect(),
            ),
        }
    }

    /// Builds a node tree from JSON (every node at `pos`).
    #[must_use]
    pub fn from_json(v: &serde_json::Value, pos: &Pos) -> Node {
        let value = match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or_default()),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => {
                Value::Seq(a.iter().map(|x| Node::from_json(x, pos)).collect())
            }
            serde_json::Value::Object(m) => Value::Map(
                m.iter()
                    .map(|(k, x)| (k.clone(), Node::from_json(x, pos)))
                    .collect(),
            ),
        };
        Node::new(value, pos.clone())
    }
}

impl Value {
    /// The kind of the value, for messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Joins a key path and a mapping key (`services` + `web` → `services.web`), quoting a key
/// that is not a plain identifier (`labels["com.example"]`) as
/// [`render_path`](super::validate::render_path) does.
#[must_use]
pub fn join_path(path: &str, key: &str) -> String {
    let mut out = String::with_capacity(path.len() + key.len() + 1);
    out.push_str(path);
    push_key(&mut out, key);
    out
}

/// Appends a mapping key to a key path in place (see [`join_path`]).
pub fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        path.push('[');
        path.push_str(&serde_json::to_string(key).unwrap_or_else(|_| key.to_owned()));
        path.push(']');
        return;
    }
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// Key path → position of the node there.
pub type Spans = HashMap<String, Pos>;

/// Parses one compose file: every document in it (several documents are merged by the caller
/// in order). An empty file gives no document.
///
/// # Errors
/// [`ProjectError::Yaml`] with the position of the syntax error, or when the document is too
/// deep, too large, uses an unknown alias or a key that is not a scalar.
pub fn parse(file: &str, text: &str) -> Result<Vec<Node>> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        file: file.clone(),
        anchors: HashMap::new(),
        stack: Vec::new(),
        docs: Vec::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| ProjectError::Yaml {
            pos: Pos {
                file: file.clone(),
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_owned(),
        })?;
        b.event(ev, span)?;
    }
    Ok(b.docs)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
        tag: Option<MergeTag>,
    },
    Map {
        entries: IndexMap<String, Node>,
        merges: Vec<Node>,
        key: Option<(String, Pos)>,
        pos: Pos,
        anchor: usize,
        tag: Option<MergeTag>,
    },
}

struct Builder {
    file: Arc<str>,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    nodes: usize,
}

fn count_nodes(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(m) => 1 + m.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn pos(&self, span: Span) -> Pos {
        Pos {
            file: self.file.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    fn err(&self, pos: Pos, message: impl Into<String>) -> ProjectError {
        ProjectError::Yaml {
            pos,
            message: message.into(),
        }
    }

    fn merge_tag(
        &self,
        tag: Option<&saphyr_parser::Tag>,
        pos: &Pos,
    ) -> Result<(Option<MergeTag>, Option<String>)> {
        let Some(tag) = tag else {
            return Ok((None, None));
        };
        match (tag.handle.as_str(), tag.suffix.as_str()) {
            ("!", "reset") => Ok((Some(MergeTag::Reset), None)),
            ("!", "override") => Ok((Some(MergeTag::Override), None)),
            ("!!" | "tag:yaml.org,2002:", s) => Ok((None, Some(s.to_owned()))),
            (h, s) => Err(self.err(
                pos.clone(),
                format!("unknown tag `{h}{s}` (compose knows `!reset` and `!override`)"),
            )),
        }
    }

    fn event(&mut self, ev: Event<'_>, span: Span) -> Result<()> {
        let pos = self.pos(span);
        match ev {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => Ok(()),
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.err(pos.clone(), "alias to an unknown anchor"))?;
                self.nodes += count_nodes(&node);
                self.check_size(&pos)?;
                self.push(node)
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(c) = text
                    .chars()
                    .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                {
                    return Err(self.err(
                        pos,
                        format!(
                            "control characters are not allowed (found U+{:04X})",
                            u32::from(c)
                        ),
                    ));
                }
                let (mtag, core) = self.merge_tag(tag.as_deref(), &pos)?;
                let value = scalar(&text, style, core.as_deref())
                    .map_err(|m| self.err(pos.clone(), m.to_string()))?;
                let mut node = Node::new(value, pos);
                node.tag = mtag;
                self.nodes += 1;
                self.check_size(&node.pos)?;
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::SequenceStart(anchor, tag) => {
                let (tag, _) = self.merge_tag(tag.as_deref(), &pos)?;
                self.open(Frame::Seq {
                    items: Vec::new(),
                    pos,
                    anchor,
                    tag,
                })
            }
            Event::MappingStart(anchor, tag) => {
                let (tag, _) = self.merge_tag(tag.as_deref(), &pos)?;
                self.open(Frame::Map {
                    entries: IndexMap::new(),
                    merges: Vec::new(),
                    key: None,
                    pos,
                    anchor,
                    tag,
                })
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    pos,
                    anchor,
                    tag,
                }) => self.close(Value::Seq(items), pos, anchor, tag),
                _ => Err(self.err(pos, "unbalanced sequence")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mut entries,
                    merges,
                    pos,
                    anchor,
                    tag,
                    ..
                }) => {
                    // Merge keys: keys set explicitly win, then earlier merged maps win.
                    for m in merges {
                        let sources: Vec<Node> = match m.value {
                            Value::Map(_) => vec![m],
                            Value::Seq(items) => items,
                            _ => {
                                return Err(self.err(
                                    m.pos,
                                    "the merge key `<<` needs a mapping or a list of mappings",
                                ));
                            }
                        };
                        for src in sources {
                            let Value::Map(src_entries) = src.value else {
                                return Err(self.err(
                                    src.pos,
                                    "the merge key `<<` needs a mapping or a list of mappings",
                                ));
                            };
                            for (k, v) in src_entries {
                                entries.entry(k).or_insert(v);
                            }
                        }
                    }
                    self.close(Value::Map(entries), pos, anchor, tag)
                }
                _ => Err(self.err(pos, "unbalanced mapping")),
            },
        }
    }

    fn check_size(&self, pos: &Pos) -> Result<()> {
        if self.nodes > MAX_NODES {
            return Err(self.err(
                pos.clone(),
                format!("document too large: more than {MAX_NODES} nodes after expanding aliases"),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            let pos = match &frame {
                Frame::Seq { pos, .. } | Frame::Map { pos, .. } => pos.clone(),
            };
            return Err(self.err(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.nodes += 1;
        self.stack.push(frame);
        Ok(())
    }

    fn close(
        &mut self,
        value: Value,
        pos: Pos,
        anchor: usize,
        tag: Option<MergeTag>,
    ) -> Result<()> {
        let mut node = Node::new(value, pos);
        node.tag = tag;
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.push(node)
    }

    /// The key path of the node being built (for messages).
    fn current_path(&self) -> String {
        let mut path = String::new();
        for f in &self.stack {
            match f {
                Frame::Map {
                    key: Some((k, _)), ..
                } => push_key(&mut path, k),
                Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
                Frame::Map { .. } => {}
            }
        }
        path
    }

    fn push(&mut self, node: Node) -> Result<()> {
        let key_expected = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        if key_expected
            && matches!(
                node.value,
                Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null
            )
        {
            let path = self.current_path();
            let shown = match &node.value {
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => "null".to_owned(),
            };
            return Err(ProjectError::invalid(
                Some(node.pos),
                path.clone(),
                format!(
                    "non-string key in {}: {shown} (quote it: \"{shown}\")",
                    if path.is_empty() {
                        "the top level"
                    } else {
                        &path
                    }
                ),
            ));
        }
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                merges,
                key,
                ..
            }) => match key.take() {
                None => {
                    let k = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_owned(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(self.err(
                                node.pos,
                                "a mapping key must be a scalar, not a sequence or mapping",
                            ));
                        }
                    };
                    *key = Some((k, node.pos));
                    Ok(())
                }
                Some((k, kpos)) => {
                    if k == "<<" && node.tag.is_none() {
                        merges.push(node);
                        return Ok(());
                    }
                    if entries.contains_key(&k) {
                        return Err(ProjectError::Yaml {
                            pos: kpos,
                            message: format!("duplicate key `{k}`"),
                        });
                    }
                    let mut node = node;
                    node.key_pos = Some(kpos);
                    entries.insert(k, node);
                    Ok(())
                }
            },
        }
    }
}

/// A scalar its `!!` tag does not fit (the message of a [`ProjectError::Yaml`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TagError {
    /// The scalar is not of the tag's type (`!!int abc`).
    #[error("`{text}` is not {kind}")]
    Mismatch {
        /// The scalar.
        text: String,
        /// `a boolean`, `an integer`, `a number`.
        kind: &'static str,
    },
    /// A core tag the schema does not have.
    #[error("unsupported tag `!!{0}`")]
    Unsupported(String),
}

/// Types a scalar by the core schema (plain style only) or its explicit `!!` tag.
fn scalar(
    text: &str,
    style: ScalarStyle,
    core_tag: Option<&str>,
) -> std::result::Result<Value, TagError> {
    let mismatch = |kind| TagError::Mismatch {
        text: text.to_owned(),
        kind,
    };
    if let Some(tag) = core_tag {
        return match tag {
            "str" => Ok(Value::Str(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => match plain_scalar(text) {
                Value::Bool(b) => Ok(Value::Bool(b)),
                _ => Err(mismatch("a boolean")),
            },
            "int" => match plain_scalar(text) {
                Value::Int(i) => Ok(Value::Int(i)),
                _ => Err(mismatch("an integer")),
            },
            "float" => match plain_scalar(text) {
                Value::Int(i) =>
                {
                    #[allow(clippy::cast_precision_loss)]
                    Ok(Value::Float(i as f64))
                }
                Value::Float(f) => Ok(Value::Float(f)),
                _ => Err(mismatch("a number")),
            },
            other => Err(TagError::Unsupported(other.to_owned())),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_owned()));
    }
    Ok(plain_scalar(text))
}

/// The core-schema type of a plain scalar.
#[must_use]
pub fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let (neg, digits) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let int = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        i64::from_str_radix(digits, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Value::Int(if neg { -i } else { i });
    }
    // An integer beyond i64 keeps its digits (compose reads it as an unsigned integer).
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Value::Str(text.to_owned());
    }
    if is_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

fn is_float(s: &str) -> bool {
    // [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one digit before the exponent
    let b = s.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut d = parse("t.yaml", text).unwrap();
        assert_eq!(d.len(), 1);
        d.remove(0)
    }

    #[test]
    fn yaml_scalars_follow_the_core_schema() {
        let n = one(
            "a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 0755\ng: 0x10\nh: hello\ni:\nj: 1e3\nk: \"true\"\n",
        );
        let m = n.as_map().unwrap();
        assert_eq!(m["a"].value, Value::Int(1));
        assert_eq!(m["b"].value, Value::Str("1".into()));
        assert_eq!(m["c"].value, Value::Bool(true));
        assert_eq!(m["d"].value, Value::Null);
        assert_eq!(m["e"].value, Value::Float(1.5));
        assert_eq!(m["f"].value, Value::Int(493));
        assert_eq!(m["g"].value, Value::Int(16));
        assert_eq!(m["h"].value, Value::Str("hello".into()));
        assert_eq!(m["i"].value, Value::Null);
        assert_eq!(m["j"].value, Value::Float(1000.0));
        assert_eq!(m["k"].value, Value::Str("true".into()));
    }

    #[test]
    fn yaml_positions_are_one_based() {
        let n = one("services:\n  web:\n    image: nginx\n");
        let img = n
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("image")
            .unwrap();
        assert_eq!((img.pos.line, img.pos.col), (3, 12));
        assert_eq!(img.key_pos.as_ref().map(|p| (p.line, p.col)), Some((3, 5)));
        let mut spans = Spans::new();
        n.to_json("", &mut spans);
        assert_eq!(spans["services.web.image"].line, 3);
    }

    #[test]
    fn yaml_anchors_aliases_and_merge_keys() {
        let n = one(
            "base: &b\n  image: x\n  env: 1\nother: &o\n  env: 3\n  tty: true\nweb:\n  <<: [*b, *o]\n  env: 2\ncopy: *b\n",
        );
        let web = n.get("web").unwrap().as_map().unwrap();
        assert_eq!(web["image"].value, Value::Str("x".into()));
        assert_eq!(web["env"].value, Value::Int(2));
        assert_eq!(web["tty"].value, Value::Bool(true));
        assert_eq!(
            n.get("copy").unwrap().get("env").unwrap().value,
            Value::Int(1)
        );
    }

    #[test]
    fn yaml_merge_tags_are_kept() {
        let n = one("ports: !reset []\nimage: !override x\n");
        assert_eq!(n.get("ports").unwrap().tag, Some(MergeTag::Reset));
        assert_eq!(n.get("image").unwrap().tag, Some(MergeTag::Override));
    }

    #[test]
    fn yaml_errors_name_the_position() {
        let e = parse("f.yaml", "a: [1, 2\nb: 3\n").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:"), "{e}");
        let e = parse("f.yaml", "a: 1\na: 2\n").unwrap_err().to_string();
        assert!(
            e.contains("duplicate key `a`") && e.contains("f.yaml:2:1"),
            "{e}"
        );
        let e = parse("f.yaml", "a: *nope\n").unwrap_err().to_string();
        assert!(e.contains("f.yaml:1"), "{e}");
        let e = parse("f.yaml", "a: !custom x\n").unwrap_err().to_string();
        assert!(e.contains("unknown tag"), "{e}");
    }

    /// go-yaml (compose's reader) accepts flow collections and quoted scalars whose lines
    /// start at any column; the patched scanner (vendor/saphyr-parser/PATCHES.md) does too,
    /// and block indentation is still checked, with positions.
    #[test]
    fn yaml_flow_collections_and_quoted_scalars_at_any_column() {
        let text = "s:\n  w:\n    c: [\n      \"sh\", \"-c\",\n    ]\n    e: {\nA: 1,\n  }\n    q: \"a\n  b\"\n    p: [\nx,\n y ]\n    after: 2\n";
        let docs = parse("f.yaml", text).unwrap();
        let mut spans = Spans::new();
        let v = docs[0].to_json("", &mut spans);
        assert_eq!(
            v,
            serde_json::json!({"s": {"w": {"c": ["sh", "-c"], "e": {"A": 1}, "q": "a b", "p": ["x", "y"], "after": 2}}})
        );
        // Positions after a flow collection that closes at a low column are still right.
        assert_eq!(
            spans.get("s.w.after").map(|p| (p.line, p.col)),
            Some((14, 5))
        );
        // Block indentation errors stay errors, with their position.
        let e = parse("f.yaml", "a:\n    b: 1\n  c: 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml:3:"), "{e}");
        let e = parse("f.yaml", "a: [1, 2\nb: 3\n").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:"), "{e}");
    }

    #[test]
    fn yaml_deep_nesting_and_alias_bombs_are_errors() {
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let e = parse("f.yaml", &deep).unwrap_err().to_string();
        assert!(
            e.contains("nesting deeper") || e.contains("recursion limit"),
            "{e}"
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            bomb.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let e = parse("f.yaml", &bomb).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn yaml_several_documents_and_empty_files() {
        assert!(parse("f.yaml", "").unwrap().is_empty());
        assert_eq!(parse("f.yaml", "a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
