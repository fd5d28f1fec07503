//! The compose loader and `tug config`, end to end: the API the rest of tug uses, the verb's
//! flags, `--explain`, errors with positions, and the malformed inputs that must fail cleanly.

use std::collections::BTreeMap;
use std::path::Path;

use tug::project::{Graph, LoadOptions, load, load_explained};

use crate::common::{fails, ok, tug};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, text).unwrap();
}

fn opts(dir: &Path, env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        cwd: Some(dir.to_path_buf()),
        environment: Some(
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..LoadOptions::default()
    }
}

#[test]
fn project_load_gives_the_canonical_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My App");
    write(
        &dir,
        "compose.yaml",
        "services:\n  web:\n    image: nginx:${TAG:-1.25}\n    ports: ['127.0.0.1:8080-8081:80-81/udp']\n    volumes: ['./src:/app:ro,z', 'data:/data']\n    depends_on: [db]\n    command: sh -c \"echo hi\"\n    healthcheck: {test: curl -f localhost, interval: 1m30s}\n    deploy: {replicas: 2}\n  db:\n    image: postgres\n    environment: [PGDATA=/x, SECRET]\nvolumes:\n  data:\n",
    );
    let p = load(&opts(&dir, &[("SECRET", "s3")])).unwrap();
    assert_eq!(p.name, "myapp");
    let web = &p.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:1.25"));
    assert_eq!(web.ports.len(), 2);
    assert_eq!(web.ports[1].target, 81);
    assert_eq!(web.ports[1].published.as_deref(), Some("8081"));
    assert_eq!(web.ports[1].protocol(), "udp");
    assert_eq!(web.volumes[0].kind.to_string(), "bind");
    assert_eq!(
        web.volumes[0].source.as_deref(),
        Some(dir.join("src").to_str().unwrap())
    );
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[1].kind.to_string(), "volume");
    assert_eq!(
        web.command.as_deref(),
        Some(&["sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()][..])
    );
    assert_eq!(
        web.healthcheck
            .as_ref()
            .unwrap()
            .interval
            .unwrap()
            .to_string(),
        "1m30s"
    );
    assert_eq!(web.replicas(), 2);
    assert_eq!(web.container_name_for(&p.name, 2), "myapp-web-2");
    assert_eq!(
        web.depends_on["db"].condition.to_string(),
        "service_started"
    );
    assert_eq!(
        p.services["db"].environment["SECRET"].as_deref(),
        Some("s3")
    );
    assert_eq!(p.networks["default"].name.as_deref(), Some("myapp_default"));
    assert_eq!(p.volumes["data"].name.as_deref(), Some("myapp_data"));
    let g = Graph::new(&p).unwrap();
    assert_eq!(g.start_order(), vec!["db", "web"]);
    assert_eq!(g.select(&["web".into()], true).unwrap(), vec!["web"]);
}

#[test]
fn project_hash_matches_docker_compose() {
    // `docker compose config --hash db` (v2.40.3) prints this for the same service.
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  db:\n    image: postgres\n    stop_grace_period: 1s\n",
    );
    let p = load(&opts(tmp.path(), &[])).unwrap();
    assert_eq!(
        p.services["db"].compose_hash(),
        "6b3adc35e6e22f856916eb251bd596a68f977fdc492010b2480f51220a79b437"
    );
    let out = ok(tug(tmp.path())
        .current_dir(tmp.path())
        .args(["config", "--hash", "*"]));
    assert_eq!(
        out,
        "db 6b3adc35e6e22f856916eb251bd596a68f977fdc492010b2480f51220a79b437\n"
    );
}

#[test]
fn project_explain_names_every_source() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        ".env",
        "# comment\nFROM_FILE=f\nBOTH=file\nEMPTY=\n",
    );
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  web:\n    image: \"x:${FROM_FILE}-${BOTH}-${NONE:-dflt}-${SHELL_ONLY}\"\n    environment:\n      E: ${EMPTY:-d}\n      B: ${BOTH}\n  dbg:\n    image: y\n    profiles: [debug]\n  tool:\n    image: z\n    profiles: [tools]\n",
    );
    let out = ok(tug(tmp.path())
        .current_dir(tmp.path())
        .env("BOTH", "shell")
        .env("SHELL_ONLY", "s")
        .args(["--profile", "debug", "config", "--explain"]));
    assert!(
        out.contains("FROM_FILE=\"f\"  (set in ") && out.contains(".env:2)"),
        "{out}"
    );
    assert!(
        out.contains("BOTH=\"shell\"  (set in the shell environment)"),
        "{out}"
    );
    // Set but empty is not "not set".
    assert!(
        out.contains("EMPTY=\"\"  (set but empty in ") && out.contains(".env:4)"),
        "{out}"
    );
    assert!(out.contains("NONE  (not set)"), "{out}");
    assert!(
        out.contains(
            "compose.yaml:3:12 services.web.image: the default value from the file: \"dflt\""
        ),
        "{out}"
    );
    // One entry per variable, listing each use.
    assert_eq!(out.matches("BOTH=").count(), 1, "{out}");
    assert!(
        out.contains("compose.yaml:3:12 services.web.image: its value")
            && out.contains("compose.yaml:6:10 services.web.environment.B: its value"),
        "{out}"
    );
    assert!(out.contains("web: enabled: no profiles"), "{out}");
    assert!(
        out.contains("dbg: enabled: profile `debug` is active"),
        "{out}"
    );
    assert!(
        out.contains("tool: disabled: none of its profiles (tools) is active"),
        "{out}"
    );
    // The same as JSON.
    let js: serde_json::Value = serde_json::from_str(&ok(tug(tmp.path())
        .current_dir(tmp.path())
        .env("BOTH", "shell")
        .env("SHELL_ONLY", "s")
        .args(["config", "--explain", "--format", "json"])))
    .unwrap();
    let both = js["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "BOTH")
        .unwrap();
    assert_eq!(both["state"], "set");
    assert_eq!(both["source"], "the shell environment");
    assert_eq!(both["uses"].as_array().unwrap().len(), 2);
    let empty = js["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "EMPTY")
        .unwrap();
    assert_eq!(empty["state"], "set but empty");
    assert_eq!(empty["uses"][0]["result"], "default");
    assert_eq!(js["services"][2]["enabled"], false);
    let loaded = load_explained(&opts(tmp.path(), &[])).unwrap();
    assert_eq!(loaded.project.services.len(), 1);
    assert_eq!(loaded.enablement.len(), 3);
}

#[test]
fn project_config_lists_and_output_file() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  b:\n    build: .\n    networks: [n1]\n    volumes: [v1:/x]\n  a:\n    image: alpine\n    profiles: [p1]\n    networks: [n1]\nnetworks:\n  n1: {}\nvolumes:\n  v1: {}\n",
    );
    let run = |args: &[&str]| ok(tug(tmp.path()).current_dir(tmp.path()).args(args));
    assert_eq!(run(&["config", "--services"]), "b\n");
    assert_eq!(run(&["--profile", "p1", "config", "--services"]), "a\nb\n");
    assert_eq!(run(&["config", "--volumes"]), "v1\n");
    assert_eq!(run(&["config", "--networks"]), "n1\n");
    assert_eq!(run(&["config", "--profiles"]), "p1\n");
    let dir_name =
        tug::project::normalize::normalize_name(&tmp.path().file_name().unwrap().to_string_lossy());
    let images = run(&["config", "--images"]);
    assert_eq!(images, format!("{dir_name}-b\n"));
    assert!(run(&["config", "-q"]).is_empty());
    let out = tmp.path().join("out.json");
    run(&["config", "--format", "json", "-o", out.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["services"]["b"]["build"]["dockerfile"], "Dockerfile");
}

#[test]
fn project_yaml_output_reads_back_as_the_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  web:\n    image: \"nginx\"\n    environment: {A: '1', B: 'true', C: '', D: 'multi\n\n      line', E: 'a: b', F: '$$x'}\n    labels: [x=y]\n    ports: ['8080:80']\n    command: [\"echo\", \"#not a comment\", \"- dash\"]\n",
    );
    let run = |args: &[&str]| ok(tug(tmp.path()).current_dir(tmp.path()).args(args));
    let mut json: serde_json::Value =
        serde_json::from_str(&run(&["config", "--format", "json"])).unwrap();
    // The YAML form leaves out what JSON prints as null or empty, as compose does.
    let web = json["services"]["web"].as_object_mut().unwrap();
    web.shift_remove("entrypoint");
    json["networks"]["default"]
        .as_object_mut()
        .unwrap()
        .shift_remove("ipam");
    let yaml = run(&["config"]);
    let back = tug::project::yaml::parse("out.yaml", &yaml)
        .unwrap()
        .remove(0);
    let back = back.to_json("", &mut Default::default());
    assert_eq!(back, json, "{yaml}");
}

#[test]
fn project_compose_env_vars_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "one.yaml",
        "services:\n  a:\n    image: x\n  p:\n    image: y\n    profiles: [dev]\n",
    );
    write(
        tmp.path(),
        "two.yaml",
        "services:\n  a:\n    environment: ['V=${V}']\n",
    );
    write(tmp.path(), "vars.env", "V=from-env-file\n");
    let out = ok(tug(tmp.path())
        .current_dir(tmp.path())
        .env("COMPOSE_FILE", "one.yaml:two.yaml")
        .env("COMPOSE_PROJECT_NAME", "fromenv")
        .env("COMPOSE_PROFILES", "dev")
        .env("COMPOSE_ENV_FILES", "vars.env")
        .args(["config", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "fromenv");
    assert_eq!(v["services"]["a"]["environment"]["V"], "from-env-file");
    assert!(v["services"].get("p").is_some(), "{out}");
}

#[test]
fn project_errors_name_file_line_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "services:\n  web:\n    image: x\n    depnds_on: [db]\n",
            &[
                "compose.yaml:4:5",
                "services.web.depnds_on",
                "did you mean `depends_on`?",
            ],
        ),
        (
            "services:\n  web:\n    image: ${DB:?set DB first}\n",
            &["compose.yaml:3:12", "services.web.image", "set DB first"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: ['80:80:80:80']\n",
            &["compose.yaml:4:", "services.web.ports[0]", "80:80:80:80"],
        ),
        (
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n",
            &["a -> b -> c -> a"],
        ),
        (
            "services:\n  a: {image: x, volumes: ['data:/d']}\n",
            &["undefined volume `data`", "services.a.volumes[0]"],
        ),
        (
            "services:\n  a:\n    image: x\n    tty: [1]\n",
            &["compose.yaml:4:5", "services.a.tty"],
        ),
        ("services: [\n", &["compose.yaml:"]),
    ];
    for (text, fragments) in cases {
        write(tmp.path(), "compose.yaml", text);
        let err = fails(tug(tmp.path()).current_dir(tmp.path()).arg("config"));
        for f in *fragments {
            assert!(err.contains(f), "{text}\nmissing `{f}` in:\n{err}");
        }
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
}

#[test]
fn project_hostile_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"services:\n  a:\n    image: \xff\xfe\n".to_vec(),
        format!("a: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        b"a: &a [*a]\n".to_vec(),
        b"services: !!binary aGVsbG8=\n".to_vec(),
        b"\0\0\0".to_vec(),
        b"services:\n  a:\n    <<: 3\n".to_vec(),
        b"services:\n  ? [a]\n  : x\n".to_vec(),
        b"- just\n- a list\n".to_vec(),
        b"services:\n  a:\n    image: x\n    ports: ['99999:1']\n".to_vec(),
        b"services:\n  a:\n    image: x\n    mem_limit: 12zb\n".to_vec(),
        b"services:\n  a:\n    image: x\n    stop_grace_period: forever\n".to_vec(),
        b"include: [self.yaml]\n".to_vec(),
    ];
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for c in 'b'..='j' {
        bomb.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = c;
    }
    inputs.push(bomb.into_bytes());
    let mut huge = String::from("services:\n");
    for i in 0..20_000 {
        huge.push_str(&format!("  s{i}:\n    image: x\n    unknown_key_{i}: 1\n"));
    }
    inputs.push(huge.into_bytes());
    write(tmp.path(), "self.yaml", "include: [self.yaml]\n");
    for input in inputs {
        std::fs::write(tmp.path().join("compose.yaml"), &input).unwrap();
        let out = crate::common::run(tug(tmp.path()).current_dir(tmp.path()).arg("config"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.len() < 200_000,
            "error output too long: {} bytes",
            stderr.len()
        );
    }
}
