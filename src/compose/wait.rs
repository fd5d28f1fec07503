//! Waiting for a dependency to meet its `depends_on` condition (and for `up --wait`).
//!
//! The supervisor of each container writes its status and health to the container's state
//! file; a wait reads those whenever one of them changes (inotify on the containers'
//! directories) until the condition holds, fails as soon as it cannot hold any more (the
//! container exited, or became unhealthy), or times out. A failure names the service and
//! shows its last log lines.

use std::time::{Duration, Instant};

use super::{Error, Result, Stack, labels};
use crate::engine::container::{HealthStatus, Status, Summary as ContainerSummary, state};
use crate::plan::Condition;

/// Timing of waits.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// The longest time between two looks when no state file changes (a process that dies
    /// with its supervisor writes nothing), or between all looks without inotify.
    pub poll: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(600),
            poll: Duration::from_millis(250),
        }
    }
}

/// How a set of containers stands against a condition.
enum Verdict {
    Met,
    NotYet,
    Failed(String),
}

fn judge(service: &str, condition: Condition, c: &ContainerSummary, has_check: bool) -> Verdict {
    let exited_ok = c.state == Status::Exited && c.exit_code == Some(0);
    let exit_text = || match c.exit_code {
        Some(code) => format!("exited with code {code}"),
        None => "exited".to_string(),
    };
    match condition {
        Condition::ServiceStarted => match c.state {
            Status::Created => Verdict::NotYet,
            _ => Verdict::Met,
        },
        Condition::ServiceCompletedSuccessfully => match c.state {
            Status::Exited | Status::Dead if exited_ok => Verdict::Met,
            Status::Exited | Status::Dead => Verdict::Failed(format!(
                "service {service} didn't complete successfully: {}",
                exit_text()
            )),
            _ => Verdict::NotYet,
        },
        Condition::ServiceHealthy | Condition::Ready => {
            if !has_check {
                if condition == Condition::ServiceHealthy {
                    return Verdict::Failed(format!(
                        "dependency {service} has no healthcheck configured, \
                         but a service_healthy condition waits for it"
                    ));
                }
                return match c.state {
                    Status::Running => Verdict::Met,
                    Status::Exited | Status::Dead if exited_ok => Verdict::Met,
                    Status::Exited | Status::Dead => {
                        Verdict::Failed(format!("container {} {}", c.name, exit_text()))
                    }
                    _ => Verdict::NotYet,
                };
            }
            match (c.state, c.health) {
                (Status::Exited | Status::Dead, _) => {
                    Verdict::Failed(format!("container {} {}", c.name, exit_text()))
                }
                (_, HealthStatus::Healthy) => Verdict::Met,
                (_, HealthStatus::Unhealthy) => {
                    Verdict::Failed(format!("container {} is unhealthy", c.name))
                }
                _ => Verdict::NotYet,
            }
        }
    }
}

impl Stack {
    /// Blocks until every container of `service` meets `condition`.
    ///
    /// # Errors
    /// The condition cannot be met any more, or the wait timed out.
    pub fn wait_for(&self, service: &str, condition: Condition) -> Result<()> {
        let s = self.service_def(service)?;
        let has_check = s.healthcheck.as_ref().is_some_and(|h| {
            !h.disable
                && h.test
                    .as_ref()
                    .is_some_and(|t| t.first().is_some_and(|x| x != "NONE"))
        });
        let deadline = Instant::now() + self.options.wait.timeout;
        let store = self.root.join("containers");
        // Made only once a look finds the condition unmet: closing an inotify instance that
        // watched something costs 10-20 ms (the kernel waits for an RCU grace period), and
        // most dependencies of an `up` are met at the first look.
        let mut watch: Option<Option<state::Watch>> = None;
        let mut watched: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        loop {
            let cs: Vec<ContainerSummary> = self
                .project_containers()?
                .into_iter()
                .filter(|c| {
                    c.labels.get(labels::SERVICE).map(String::as_str) == Some(service)
                        && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                })
                .collect();
            if cs.is_empty() {
                return Err(Error::Dependency(format!(
                    "service {service} has no container to wait for"
                )));
            }
            let mut all_met = true;
            for c in &cs {
                match judge(service, condition, c, has_check) {
                    Verdict::Met => {}
                    Verdict::NotYet => all_met = false,
                    Verdict::Failed(why) => {
                        return Err(Error::Dependency(self.with_logs(&why, c)));
                    }
                }
            }
            if all_met {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Dependency(format!(
                    "service {service}: timed out after {:?} waiting for {}",
                    self.options.wait.timeout,
                    condition.as_str()
                )));
            }
            let watch = watch.get_or_insert_with(|| state::Watch::states(&[&store]));
            // A directory watched only now may have changed since it was read: look again
            // at once rather than wait.
            let mut fresh = false;
            if let Some(w) = &watch {
                for c in &cs {
                    if watched.insert(c.id.clone()) {
                        w.add(&store.join(&c.id));
                        fresh = true;
                    }
                }
            }
            if !fresh {
                let left = deadline.saturating_duration_since(Instant::now());
                let bound = self.options.wait.poll.min(left);
                match &watch {
                    Some(w) => w.wait(bound),
                    None => std::thread::sleep(bound.min(Duration::from_millis(20))),
                }
            }
        }
    }

    fn service_def(&self, name: &str) -> Result<&crate::project::model::Service> {
        self.project
            .services
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no such service: {name}")))
    }

    /// A failure message followed by the container's last log lines.
    fn with_logs(&self, why: &str, c: &ContainerSummary) -> String {
        let lines: Vec<String> = self
            .containers
            .log_path(&c.id)
            .map(|p| crate::engine::container::logs::read_all(&p))
            .unwrap_or_default()
            .into_iter()
            .rev()
            .take(10)
            .map(|r| r.text)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if lines.is_empty() {
            return why.to_string();
        }
        let mut out = format!("{why}; last log lines of {}:", c.name);
        for l in lines {
            out.push_str("\n  ");
            out.push_str(&l);
        }
        out
    }
}
