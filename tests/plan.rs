//! Golden tests of reconcile: hand-written desired and observed states (no containers) and the
//! printed plan expected for them. Cases live in tests/fixtures/plan/cases.yaml.

use std::path::PathBuf;

use serde::Deserialize;
use tug::plan::{self, Desired, DownOptions, Observed, UpOptions};

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    verb: String,
    #[serde(default)]
    options: serde_json::Value,
    desired: Desired,
    observed: Observed,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan")
}

fn options<T: serde::de::DeserializeOwned + Default>(v: &serde_json::Value) -> T {
    if v.is_null() {
        T::default()
    } else {
        serde_json::from_value(v.clone()).expect("options")
    }
}

fn render(case: &Case) -> (String, &'static str) {
    let result = match case.verb.as_str() {
        "up" => plan::plan_up(
            &case.desired,
            &case.observed,
            &options::<UpOptions>(&case.options),
        ),
        "down" => plan::plan_down(
            &case.desired,
            &case.observed,
            &options::<DownOptions>(&case.options),
        ),
        other => panic!("case {}: unknown verb {other}", case.name),
    };
    match result {
        Ok(p) => {
            // Every dependency points backwards: the plan is a DAG in topological order.
            for (i, n) in p.nodes.iter().enumerate() {
                assert!(
                    n.after.iter().all(|&a| a < i),
                    "{}: node {i} not topological",
                    case.name
                );
            }
            (p.to_string(), "plan")
        }
        Err(e) => (format!("error: {e}\n"), "err"),
    }
}

#[test]
fn plan_golden_cases() {
    let text = std::fs::read_to_string(fixtures().join("cases.yaml")).unwrap();
    let file: File = serde_saphyr::from_str(&text).expect("cases.yaml parses");
    assert!(file.cases.len() >= 20, "at least 20 golden cases");
    let update = std::env::var_os("TUG_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for case in &file.cases {
        assert!(
            seen.insert(case.name.clone()),
            "duplicate case {}",
            case.name
        );
        let (got, ext) = render(case);
        let path = fixtures().join(format!("{}.{ext}", case.name));
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{}:\n--- expected ({})\n{want}--- got\n{got}",
                case.name,
                path.display()
            )),
            Err(_) => failures.push(format!(
                "{}: missing {}\n--- got\n{got}",
                case.name,
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} plan(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn plan_up_is_idempotent_after_applying_fresh_plan() {
    // Applying the fresh plan by hand (every created container running with the desired hash)
    // must leave nothing to do.
    let text = std::fs::read_to_string(fixtures().join("cases.yaml")).unwrap();
    let file: File = serde_saphyr::from_str(&text).unwrap();
    let case = file.cases.iter().find(|c| c.name == "up_fresh").unwrap();
    let p = plan::plan_up(&case.desired, &case.observed, &UpOptions::default()).unwrap();
    let mut observed = Observed::default();
    for n in &p.nodes {
        match &n.op {
            plan::Op::CreateNetwork { name, .. } => observed.networks.push(name.clone()),
            plan::Op::CreateVolume { name, .. } => observed.volumes.push(name.clone()),
            plan::Op::CreateContainer {
                service,
                number,
                name,
            } => {
                let s = case.desired.service(service).unwrap();
                observed.containers.push(plan::ObservedContainer {
                    id: String::new(),
                    name: name.clone(),
                    service: service.clone(),
                    number: *number,
                    hash: s.hash.clone(),
                    image_id: s.image_id.clone(),
                    state: plan::RunState::Running,
                    exit_code: None,
                    oneoff: false,
                });
            }
            _ => {}
        }
    }
    let again = plan::plan_up(&case.desired, &observed, &UpOptions::default()).unwrap();
    assert!(again.is_empty(), "second up is not a no-op:\n{again}");
}
