//! The executor: carries out a [`Plan`] with maximum parallelism and decides nothing.
//!
//! Every node starts as soon as all the nodes it waits for have finished; independent nodes run
//! on their own threads at the same time. A failed node stops its dependents (they are reported
//! as skipped) while unrelated branches finish. A failed `wait for` of a `required: false`
//! dependency is a warning and does not block its dependents.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Error;
use crate::plan::{Node, Op, Plan};

/// The engine operations a plan needs. The compose backend implements it on the real engine;
/// tests implement it with fakes to check ordering and parallelism.
pub trait Backend: Sync {
    /// Carries out one operation.
    ///
    /// # Errors
    /// Whatever the engine reports, kept whole (with its sources) in the [`Outcome`]; the
    /// executor never looks inside.
    fn apply(&self, op: &Op) -> Result<(), Error>;
}

/// What happened to one node, reported while the plan runs (for the user: a failure carries
/// its error's text; the error itself is in the [`Outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node started.
    Started(usize),
    /// The node finished.
    Done(usize, Duration),
    /// The node failed.
    Failed(usize, String),
    /// The node failed but only a warning is due (optional dependency).
    Warned(usize, String),
    /// The node did not run because something it waits for failed.
    Skipped(usize),
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Nodes that failed, with their error.
    pub failed: Vec<(usize, Error)>,
    /// Nodes skipped because of a failure upstream.
    pub skipped: Vec<usize>,
    /// Warnings (failed optional waits), with their error.
    pub warnings: Vec<(usize, Error)>,
}

impl Outcome {
    /// True when every node succeeded (warnings allowed).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Done,
    Failed,
}

/// Runs the plan on the backend, reporting events to `on_event` (called on the calling
/// thread, in the order events happen). `max_parallel` bounds how many nodes run at once
/// (0 means no bound).
pub fn execute(
    plan: &Plan,
    backend: &dyn Backend,
    max_parallel: usize,
    mut on_event: impl FnMut(&Node, &Event),
) -> Outcome {
    let n = plan.nodes.len();
    let mut status = vec![Status::Waiting; n];
    let mut outcome = Outcome::default();
    let limit = if max_parallel == 0 {
        usize::MAX
    } else {
        max_parallel
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Duration, Error>)>();
        let mut running = 0usize;
        loop {
            // Skip nodes whose prerequisites failed, start the ready ones.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in 0..n {
                    if status[i] != Status::Waiting {
                        continue;
                    }
                    let node = &plan.nodes[i];
                    if node.after.iter().any(|&a| status[a] == Status::Failed) {
                        status[i] = Status::Failed;
                        outcome.skipped.push(i);
                        on_event(node, &Event::Skipped(i));
                        progressed = true;
                        continue;
                    }
                    if running < limit && node.after.iter().all(|&a| status[a] == Status::Done) {
                        status[i] = Status::Running;
                        running += 1;
                        on_event(node, &Event::Started(i));
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let t = Instant::now();
                            let r = backend.apply(&node.op).map(|()| t.elapsed());
                            let _ = tx.send((i, r));
                        });
                    }
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            running -= 1;
            let node = &plan.nodes[i];
            match result {
                Ok(d) => {
                    status[i] = Status::Done;
                    on_event(node, &Event::Done(i, d));
                }
                Err(e) => {
                    if let Op::WaitFor {
                        required: false, ..
                    } = node.op
                    {
                        status[i] = Status::Done;
                        on_event(node, &Event::Warned(i, e.to_string()));
                        outcome.warnings.push((i, e));
                    } else {
                        status[i] = Status::Failed;
                        on_event(node, &Event::Failed(i, e.to_string()));
                        outcome.failed.push((i, e));
                    }
                }
            }
        }
    });
    outcome
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::plan::Condition;

    /// A fake engine: every op sleeps a little and is logged with start/end times.
    struct Fake {
        log: Mutex<Vec<(String, Instant, Instant)>>,
        fail: Vec<String>,
        delay: Duration,
    }

    impl Backend for Fake {
        fn apply(&self, op: &Op) -> Result<(), Error> {
            let start = Instant::now();
            std::thread::sleep(self.delay);
            let name = op.to_string();
            self.log
                .lock()
                .unwrap()
                .push((name.clone(), start, Instant::now()));
            if self.fail.contains(&name) {
                Err(Error::Io(name, std::io::Error::other("broke")))
            } else {
                Ok(())
            }
        }
    }

    fn create(name: &str) -> Op {
        Op::CreateContainer {
            service: name.into(),
            number: 1,
            name: name.into(),
        }
    }

    fn wait(service: &str, required: bool) -> Op {
        Op::WaitFor {
            service: service.into(),
            condition: Condition::ServiceStarted,
            required,
        }
    }

    fn fake(fail: &[&str]) -> Fake {
        Fake {
            log: Mutex::new(Vec::new()),
            fail: fail.iter().map(ToString::to_string).collect(),
            delay: Duration::from_millis(50),
        }
    }

    #[test]
    fn independent_nodes_run_in_parallel_and_order_holds() {
        let mut plan = Plan::default();
        let a = plan.push(create("a"), "t", vec![]);
        let b = plan.push(create("b"), "t", vec![]);
        let c = plan.push(create("c"), "t", vec![]);
        plan.push(create("d"), "t", vec![a, b, c]);
        let f = fake(&[]);
        let out = execute(&plan, &f, 0, |_, _| {});
        assert!(out.ok());
        let log = f.log.lock().unwrap();
        let times: HashMap<&str, (Instant, Instant)> =
            log.iter().map(|(n, s, e)| (n.as_str(), (*s, *e))).collect();
        let d = times["create container d"];
        for x in ["a", "b", "c"] {
            let t = times[format!("create container {x}").as_str()];
            assert!(t.1 <= d.0, "d started before {x} finished");
            // a, b and c overlap: each started before any of them ended.
            assert!(t.0 < times["create container a"].1);
        }
    }

    #[test]
    fn a_failure_skips_dependents_but_not_unrelated_work() {
        let mut plan = Plan::default();
        let a = plan.push(create("a"), "t", vec![]);
        let b = plan.push(create("b"), "t", vec![a]);
        let _c = plan.push(create("c"), "t", vec![b]);
        let _d = plan.push(create("d"), "t", vec![]);
        let f = fake(&["create container a"]);
        let mut events = Vec::new();
        let out = execute(&plan, &f, 0, |_, e| events.push(e.clone()));
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.skipped, vec![1, 2]);
        let ran: Vec<String> = f.log.lock().unwrap().iter().map(|x| x.0.clone()).collect();
        assert!(ran.contains(&"create container d".to_string()));
        assert!(!ran.contains(&"create container b".to_string()));
        assert!(events.contains(&Event::Skipped(2)));
    }

    #[test]
    fn optional_wait_failure_is_a_warning() {
        let mut plan = Plan::default();
        let w = plan.push(wait("metrics", false), "t", vec![]);
        plan.push(create("api"), "t", vec![w]);
        let f = fake(&["wait for metrics (service_started) [optional]"]);
        let out = execute(&plan, &f, 0, |_, _| {});
        assert!(out.ok(), "{out:?}");
        assert_eq!(out.warnings.len(), 1);
        assert_eq!(f.log.lock().unwrap().len(), 2);
    }

    #[test]
    fn parallelism_bound_is_respected() {
        let mut plan = Plan::default();
        for i in 0..6 {
            plan.push(create(&format!("c{i}")), "t", vec![]);
        }
        let f = fake(&[]);
        let out = execute(&plan, &f, 2, |_, _| {});
        assert!(out.ok());
        let log = f.log.lock().unwrap();
        for (name, s, _) in log.iter() {
            let overlapping = log.iter().filter(|(_, s2, e2)| s2 <= s && s < e2).count();
            assert!(overlapping <= 2, "{name}: {overlapping} ran at once");
        }
    }
}
