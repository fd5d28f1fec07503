//! Phase 3: merge several compose files into one, by compose's merge rules.
//!
//! Later files override earlier ones:
//! - mappings merge key by key, recursively;
//! - scalars are replaced;
//! - `command`, `entrypoint` and `healthcheck.test` are replaced as a whole;
//! - mapping-like sequences (`environment`, `labels`, `build.args`, `sysctls`, `extra_hosts`,
//!   `annotations`, ...) are read as mappings (`KEY=VALUE`) and merged by key;
//! - `depends_on` and service `networks` (list or mapping) merge by name;
//! - sequences whose entries have an identity merge by it: `ports` (host ip, published port,
//!   target and protocol), `volumes` and `devices` (target path), `secrets` and `configs`
//!   (target), `env_file` (path), `expose`, `dns`, `cap_add`, ... (the value); an entry of the
//!   later file replaces the earlier one with the same identity, new entries are appended;
//! - other sequences are appended.
//!
//! Two tags change this for one key: `!reset` removes the value inherited from the earlier
//! files (`ports: !reset []`), `!override` replaces it instead of merging
//! (`ports: !override ["8080:80"]`). A `!reset` value left after merging is removed.

use indexmap::IndexMap;

use super::yaml::{MergeTag, Node, Value};

/// Merges `over` into `base` (both whole files).
#[must_use]
pub fn merge_files(base: Node, over: Node) -> Node {
    merge_at(base, over, &mut Vec::new())
}

/// Removes every `!reset` node (and clears the tags) once all files are merged.
pub fn strip_tags(node: &mut Node) {
    node.tag = None;
    match &mut node.value {
        Value::Map(m) => {
            m.retain(|_, v| v.tag != Some(MergeTag::Reset));
            for v in m.values_mut() {
                strip_tags(v);
            }
        }
        Value::Seq(items) => {
            items.retain(|v| v.tag != Some(MergeTag::Reset));
            for v in items {
                strip_tags(v);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    Default,
    Replace,
    AsMapping,
    ByName,
    Unique(Identity),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Identity {
    KeyValue,
    Port,
    Target,
    Mount(&'static str),
    EnvFile,
}

fn matches(pattern: &[&str], path: &[String]) -> bool {
    pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, s)| *p == "*" || p == s)
}

fn rule_for(path: &[String]) -> Rule {
    const REPLACE: &[&[&str]] = &[
        &["services", "*", "command"],
        &["services", "*", "entrypoint"],
        &["services", "*", "healthcheck", "test"],
        &["services", "*", "develop", "watch", "*", "exec", "command"],
        &["services", "*", "post_start", "*", "command"],
        &["services", "*", "pre_stop", "*", "command"],
    ];
    const AS_MAPPING: &[&[&str]] = &[
        &["services", "*", "environment"],
        &["services", "*", "labels"],
        &["services", "*", "annotations"],
        &["services", "*", "sysctls"],
        &["services", "*", "extra_hosts"],
        &["services", "*", "build", "args"],
        &["services", "*", "build", "labels"],
        &["services", "*", "build", "additional_contexts"],
        &["services", "*", "build", "extra_hosts"],
        &["services", "*", "deploy", "labels"],
        &["services", "*", "volumes", "*", "volume", "labels"],
        &["networks", "*", "labels"],
        &["volumes", "*", "labels"],
        &["secrets", "*", "labels"],
        &["configs", "*", "labels"],
    ];
    const BY_NAME: &[&[&str]] = &[
        &["services", "*", "depends_on"],
        &["services", "*", "networks"],
    ];
    const KEY_VALUE: &[&[&str]] = &[
        &["services", "*", "cap_add"],
        &["services", "*", "cap_drop"],
        &["services", "*", "dns"],
        &["services", "*", "dns_opt"],
        &["services", "*", "dns_search"],
        &["services", "*", "expose"],
        &["services", "*", "links"],
        &["services", "*", "profiles"],
        &["services", "*", "tmpfs"],
        &["services", "*", "security_opt"],
        &["services", "*", "group_add"],
        &["services", "*", "external_links"],
        &["services", "*", "label_file"],
        &["services", "*", "build", "tags"],
        &["services", "*", "build", "platforms"],
        &["services", "*", "build", "cache_from"],
        &["services", "*", "build", "cache_to"],
        &["services", "*", "networks", "*", "aliases"],
        &["services", "*", "networks", "*", "link_local_ips"],
    ];
    if REPLACE.iter().any(|p| matches(p, path)) {
        return Rule::Replace;
    }
    if AS_MAPPING.iter().any(|p| matches(p, path)) {
        return Rule::AsMapping;
    }
    if BY_NAME.iter().any(|p| matches(p, path)) {
        return Rule::ByName;
    }
    if KEY_VALUE.iter().any(|p| matches(p, path)) {
        return Rule::Unique(Identity::KeyValue);
    }
    if matches(&["services", "*", "ports"], path) {
        return Rule::Unique(Identity::Port);
    }
    if matches(&["services", "*", "volumes"], path) || matches(&["services", "*", "devices"], path)
    {
        return Rule::Unique(Identity::Target);
    }
    if matches(&["services", "*", "secrets"], path) {
        return Rule::Unique(Identity::Mount("/run/secrets"));
    }
    if matches(&["services", "*", "configs"], path) {
        return Rule::Unique(Identity::Mount(""));
    }
    if matches(&["services", "*", "env_file"], path) {
        return Rule::Unique(Identity::EnvFile);
    }
    Rule::Default
}

fn merge_at(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    match over.tag {
        Some(MergeTag::Reset) => return over,
        Some(MergeTag::Override) => {
            let mut o = over;
            o.tag = None;
            return o;
        }
        None => {}
    }
    match rule_for(path) {
        Rule::Replace => over,
        Rule::AsMapping => {
            let pos = over.pos.clone();
            let b = to_mapping(base);
            let o = to_mapping(over);
            let mut out = b;
            for (k, v) in o {
                out.insert(k, v);
            }
            Node::new(Value::Map(out), pos)
        }
        Rule::ByName => {
            let pos = over.pos.clone();
            let deps = path.last().is_some_and(|k| k == "depends_on");
            let mut out = names_to_mapping(base, deps);
            for (k, v) in names_to_mapping(over, deps) {
                let merged = match out.shift_remove(&k) {
                    Some(b) if matches!(b.value, Value::Map(_)) => {
                        path.push(k.clone());
                        let m = merge_at(b, v, path);
                        path.pop();
                        m
                    }
                    _ => v,
                };
                out.insert(k, merged);
            }
            Node::new(Value::Map(out), pos)
        }
        Rule::Unique(id) => match (as_seq(base.value), as_seq(over.value)) {
            (Value::Seq(b), Value::Seq(o)) => {
                let mut out: Vec<Node> = b;
                for item in o {
                    let key = identity(&item, id);
                    match key
                        .and_then(|k| out.iter().position(|x| identity(x, id) == Some(k.clone())))
                    {
                        Some(i) => {
                            let old = std::mem::replace(
                                &mut out[i],
                                Node::new(Value::Null, item.pos.clone()),
                            );
                            out[i] = if matches!(
                                (&old.value, &item.value),
                                (Value::Map(_), Value::Map(_))
                            ) {
                                merge_maps(old, item, path)
                            } else {
                                item
                            };
                        }
                        None => out.push(item),
                    }
                }
                Node::new(Value::Seq(out), over.pos)
            }
            (_, o) => Node::new(o, over.pos),
        },
        Rule::Default => {
            let Node {
                value: bv,
                pos: bpos,
                tag: btag,
                key_pos: bkey,
            } = base;
            match (bv, over.value) {
                (Value::Map(b), Value::Map(o)) => merge_maps(
                    Node::new(Value::Map(b), bpos),
                    Node::new(Value::Map(o), over.pos),
                    path,
                ),
                (Value::Seq(mut b), Value::Seq(o)) => {
                    b.extend(o);
                    Node::new(Value::Seq(b), over.pos)
                }
                (bv, Value::Null) if path.len() <= 2 => Node {
                    value: bv,
                    pos: bpos,
                    tag: btag,
                    key_pos: bkey,
                },
                (_, ov) => Node::new(ov, over.pos),
            }
        }
    }
}

/// A lone scalar where a list is allowed (`dns: 1.1.1.1`) as a one-item list.
fn as_seq(v: Value) -> Value {
    match v {
        Value::Str(_) | Value::Int(_) => {
            let pos = super::yaml::Pos {
                file: "".into(),
                line: 0,
                col: 0,
            };
            Value::Seq(vec![Node::new(v, pos)])
        }
        other => other,
    }
}

fn merge_maps(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    let pos = over.pos.clone();
    let (Value::Map(mut b), Value::Map(o)) = (base.value, over.value) else {
        return Node::new(Value::Null, pos);
    };
    for (k, v) in o {
        let merged = match b.shift_remove(&k) {
            Some(old) => {
                // Service names and resource names are wildcards in the rule paths.
                path.push(k.clone());
                let m = merge_at(old, v, path);
                path.pop();
                m
            }
            None => {
                if v.tag == Some(MergeTag::Override) {
                    let mut v = v;
                    v.tag = None;
                    v
                } else {
                    v
                }
            }
        };
        // Keep the earlier position of an existing key so the output order stays stable.
        b.insert(k, merged);
    }
    Node::new(Value::Map(b), pos)
}

/// A mapping-like value (`["A=1", "B"]` or `{A: 1}`) as a mapping.
fn to_mapping(n: Node) -> IndexMap<String, Node> {
    match n.value {
        Value::Map(m) => m,
        Value::Seq(items) => {
            let mut out = IndexMap::new();
            for it in items {
                let pos = it.pos.clone();
                match &it.value {
                    Value::Str(s) => {
                        let (k, v) = match s.split_once('=') {
                            Some((k, v)) => (k.to_owned(), Value::Str(v.to_owned())),
                            None => match s.split_once(':') {
                                // extra_hosts also accepts `host:ip`
                                Some((k, v)) if !s.contains('=') && looks_like_host(k) => {
                                    (k.to_owned(), Value::Str(v.to_owned()))
                                }
                                _ => (s.clone(), Value::Null),
                            },
                        };
                        out.insert(k, Node::new(v, pos));
                    }
                    other => {
                        out.insert(scalar_text(other), Node::new(Value::Null, pos));
                    }
                }
            }
            out
        }
        _ => IndexMap::new(),
    }
}

fn looks_like_host(k: &str) -> bool {
    !k.is_empty() && !k.contains(' ')
}

/// `depends_on` / `networks` in list form as a mapping: names to null (networks) or to
/// `{condition: service_started}` (depends_on).
fn names_to_mapping(n: Node, deps: bool) -> IndexMap<String, Node> {
    match n.value {
        Value::Map(m) => m,
        Value::Seq(items) => items
            .into_iter()
            .map(|it| {
                let pos = it.pos.clone();
                let value = if deps {
                    let mut m = IndexMap::new();
                    m.insert(
                        "condition".to_owned(),
                        Node::new(Value::Str("service_started".to_owned()), pos.clone()),
                    );
                    Value::Map(m)
                } else {
                    Value::Null
                };
                (scalar_text(&it.value), Node::new(value, pos))
            })
            .collect(),
        _ => IndexMap::new(),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn identity(n: &Node, id: Identity) -> Option<String> {
    match id {
        Identity::KeyValue => match &n.value {
            Value::Str(s) => Some(s.split_once('=').map_or(s.as_str(), |(k, _)| k).to_owned()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Some(scalar_text(&n.value)),
            _ => None,
        },
        Identity::Port => match &n.value {
            Value::Str(_) | Value::Int(_) => Some(scalar_text(&n.value)),
            Value::Map(m) => {
                let g = |k: &str| m.get(k).map(|v| scalar_text(&v.value)).unwrap_or_default();
                let proto = m
                    .get("protocol")
                    .map_or_else(|| "tcp".to_owned(), |v| scalar_text(&v.value));
                Some(format!(
                    "{}:{}:{}/{proto}",
                    g("host_ip"),
                    g("published"),
                    g("target")
                ))
            }
            _ => None,
        },
        Identity::Target => match &n.value {
            Value::Str(s) => {
                // short syntax: [source:]target[:mode]
                let parts: Vec<&str> = s.split(':').collect();
                Some(match parts.len() {
                    1 => parts[0].to_owned(),
                    _ => parts[1].to_owned(),
                })
            }
            Value::Map(m) => m.get("target").map(|v| scalar_text(&v.value)),
            _ => None,
        },
        Identity::Mount(prefix) => match &n.value {
            Value::Str(s) => Some(if prefix.is_empty() {
                format!("/{s}")
            } else {
                format!("{prefix}/{s}")
            }),
            Value::Map(m) => {
                let source = m
                    .get("source")
                    .map(|v| scalar_text(&v.value))
                    .unwrap_or_default();
                Some(match m.get("target").map(|v| scalar_text(&v.value)) {
                    Some(t) if t.starts_with('/') || prefix.is_empty() => t,
                    Some(t) => format!("{prefix}/{t}"),
                    None if prefix.is_empty() => format!("/{source}"),
                    None => format!("{prefix}/{source}"),
                })
            }
            _ => None,
        },
        Identity::EnvFile => match &n.value {
            Value::Str(s) => Some(s.clone()),
            Value::Map(m) => m.get("path").map(|v| scalar_text(&v.value)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::yaml::parse;

    fn merged(a: &str, b: &str) -> serde_json::Value {
        let a = parse("a.yaml", a).unwrap().remove(0);
        let b = parse("b.yaml", b).unwrap().remove(0);
        let mut m = merge_files(a, b);
        strip_tags(&mut m);
        m.to_json("", &mut Default::default())
    }

    #[test]
    fn merge_mappings_and_scalars() {
        let v = merged(
            "services: {web: {image: a, tty: true, x: {a: 1}}}",
            "services: {web: {image: b, x: {b: 2}}, db: {image: c}}",
        );
        assert_eq!(
            v,
            serde_json::json!({"services": {"web": {"image": "b", "tty": true, "x": {"a": 1, "b": 2}}, "db": {"image": "c"}}})
        );
    }

    #[test]
    fn merge_command_is_replaced_and_env_merges_by_key() {
        let v = merged(
            "services: {w: {command: [a, b], environment: [A=1, B=2], cap_add: [X]}}",
            "services: {w: {command: [c], environment: {B: 3, C: 4}, cap_add: [X, Y]}}",
        );
        assert_eq!(v["services"]["w"]["command"], serde_json::json!(["c"]));
        assert_eq!(
            v["services"]["w"]["environment"],
            serde_json::json!({"A": "1", "B": 3, "C": 4})
        );
        assert_eq!(v["services"]["w"]["cap_add"], serde_json::json!(["X", "Y"]));
    }

    #[test]
    fn merge_ports_and_volumes_by_identity() {
        let v = merged(
            "services: {w: {ports: ['8080:80', '9090:90'], volumes: ['./a:/data', 'v:/x']}}",
            "services: {w: {ports: ['8080:80', '7070:70'], volumes: ['./b:/data']}}",
        );
        assert_eq!(
            v["services"]["w"]["ports"],
            serde_json::json!(["8080:80", "9090:90", "7070:70"])
        );
        assert_eq!(
            v["services"]["w"]["volumes"],
            serde_json::json!(["./b:/data", "v:/x"])
        );
    }

    #[test]
    fn merge_depends_on_list_and_map() {
        let v = merged(
            "services: {w: {depends_on: [db]}}",
            "services: {w: {depends_on: {cache: {condition: service_healthy}}}}",
        );
        assert_eq!(
            v["services"]["w"]["depends_on"],
            serde_json::json!({"db": {"condition": "service_started"}, "cache": {"condition": "service_healthy"}})
        );
    }

    #[test]
    fn merge_reset_and_override_tags() {
        let v = merged(
            "services: {w: {ports: ['80:80'], environment: {A: 1}, labels: {a: b}}}",
            "services: {w: {ports: !reset [], environment: !override {B: 2}}}",
        );
        assert!(v["services"]["w"].get("ports").is_none(), "{v}");
        assert_eq!(
            v["services"]["w"]["environment"],
            serde_json::json!({"B": 2})
        );
        assert_eq!(v["services"]["w"]["labels"], serde_json::json!({"a": "b"}));
    }

    #[test]
    fn merge_string_and_list_forms() {
        let v = merged(
            "services: {w: {dns: 1.1.1.1, env_file: one.env}}",
            "services: {w: {dns: [8.8.8.8], env_file: [two.env]}}",
        );
        assert_eq!(
            v["services"]["w"]["dns"],
            serde_json::json!(["1.1.1.1", "8.8.8.8"])
        );
        assert_eq!(
            v["services"]["w"]["env_file"],
            serde_json::json!(["one.env", "two.env"])
        );
    }

    #[test]
    fn merge_other_sequences_append() {
        let v = merged(
            "services: {w: {x-list: [1]}}",
            "services: {w: {x-list: [2]}}",
        );
        assert_eq!(v["services"]["w"]["x-list"], serde_json::json!([1, 2]));
    }

    mod props {
        use super::*;
        use crate::project::yaml::Pos;
        use proptest::prelude::*;
        use serde_json::{Value as J, json};

        fn node(v: &J) -> Node {
            Node::from_json(
                v,
                &Pos {
                    file: "p.yaml".into(),
                    line: 1,
                    col: 1,
                },
            )
        }

        fn merge_json(a: &J, b: &J) -> J {
            let mut m = merge_files(node(a), node(b));
            strip_tags(&mut m);
            m.to_json("", &mut Default::default())
        }

        fn service() -> impl Strategy<Value = J> {
            (
                proptest::option::of("[a-z]{1,6}"),
                proptest::collection::btree_map("[A-C]", "[a-z0-9]{0,3}", 0..4),
                proptest::collection::vec(1u16..5, 0..4),
                proptest::collection::btree_set("(CHOWN|KILL|NET_ADMIN)", 0..3),
            )
                .prop_map(|(image, env, ports, caps)| {
                    let mut m = serde_json::Map::new();
                    if let Some(i) = image {
                        m.insert("image".into(), json!(i));
                    }
                    if !env.is_empty() {
                        m.insert("environment".into(), json!(env));
                    }
                    let ports: Vec<String> = ports.iter().map(|p| format!("{p}:{p}")).collect();
                    let mut seen = std::collections::BTreeSet::new();
                    let ports: Vec<String> = ports
                        .into_iter()
                        .filter(|p| seen.insert(p.clone()))
                        .collect();
                    if !ports.is_empty() {
                        m.insert("ports".into(), json!(ports));
                    }
                    if !caps.is_empty() {
                        m.insert("cap_add".into(), json!(caps));
                    }
                    json!({"services": {"web": J::Object(m)}})
                })
        }

        proptest! {
            #[test]
            fn merge_with_itself_changes_nothing(a in service()) {
                prop_assert_eq!(merge_json(&a, &a), a);
            }

            #[test]
            fn merge_with_empty_file_changes_nothing(a in service()) {
                prop_assert_eq!(merge_json(&a, &json!({})), a.clone());
                prop_assert_eq!(merge_json(&json!({}), &a), a);
            }

            #[test]
            fn merge_later_file_wins_and_keeps_earlier_keys(a in service(), b in service()) {
                let m = merge_json(&a, &b);
                let (sa, sb, sm) = (&a["services"]["web"], &b["services"]["web"], &m["services"]["web"]);
                // Scalars: the later file wins when it sets one.
                if sb.get("image").is_some() {
                    prop_assert_eq!(&sm["image"], &sb["image"]);
                } else {
                    prop_assert_eq!(sm.get("image"), sa.get("image"));
                }
                // Environment: union of keys, later values win.
                let empty = serde_json::Map::new();
                let ea = sa.get("environment").and_then(J::as_object).unwrap_or(&empty);
                let eb = sb.get("environment").and_then(J::as_object).unwrap_or(&empty);
                for (k, v) in ea.iter().chain(eb.iter()) {
                    let expect = eb.get(k).unwrap_or(v);
                    prop_assert_eq!(&sm["environment"][k], expect);
                }
                // Ports and capabilities: every entry of both files, each once.
                for key in ["ports", "cap_add"] {
                    let mut want: Vec<J> = sa.get(key).and_then(J::as_array).cloned().unwrap_or_default();
                    for p in sb.get(key).and_then(J::as_array).cloned().unwrap_or_default() {
                        if !want.contains(&p) {
                            want.push(p);
                        }
                    }
                    let got = sm.get(key).and_then(J::as_array).cloned().unwrap_or_default();
                    prop_assert_eq!(got, want);
                }
            }

            #[test]
            fn merge_reset_removes_and_override_replaces(a in service(), b in service()) {
                let text_b = format!(
                    "services:\n  web:\n    ports: !reset []\n    environment: !override {}\n",
                    serde_json::to_string(b["services"]["web"].get("environment").unwrap_or(&json!({}))).unwrap()
                );
                let nb = crate::project::yaml::parse("b.yaml", &text_b).unwrap().remove(0);
                let mut m = merge_files(node(&a), nb);
                strip_tags(&mut m);
                let m = m.to_json("", &mut Default::default());
                prop_assert!(m["services"]["web"].get("ports").is_none());
                let env = b["services"]["web"].get("environment").cloned().unwrap_or(json!({}));
                prop_assert_eq!(&m["services"]["web"]["environment"], &env);
            }
        }
    }
}
