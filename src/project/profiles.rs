//! Phase 6c: profiles decide which services are enabled.
//!
//! A service without `profiles` is always enabled. A service with profiles is enabled when
//! one of them is active (`--profile`, `COMPOSE_PROFILES`; `*` activates all), or when it is
//! named on the command line (`tug up debug-tools`). Disabled services move to
//! [`Project::disabled_services`]; an enabled service that requires a disabled one is an error
//! (as in compose, a dependency is not enabled implicitly). A `required: false` dependency on
//! a disabled service stays in the model (compose prints it) and is skipped by the graph and
//! the plan.

use indexmap::IndexMap;

use super::error::{ProjectError, Result};
use super::model::Project;

/// Why a service is enabled or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It has no profiles.
    NoProfiles,
    /// This active profile enables it.
    Profile(String),
    /// It was named on the command line.
    Named,
    /// None of its profiles is active.
    Inactive(Vec<String>),
}

/// One service's enablement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enablement {
    /// The service.
    pub service: String,
    /// Enabled?
    pub enabled: bool,
    /// Why.
    pub reason: Reason,
}

/// Splits services into enabled and disabled and returns why, in file order.
///
/// # Errors
/// A service named on the command line that does not exist; an enabled service that
/// requires a disabled one.
pub fn select(
    project: &mut Project,
    profiles: &[String],
    named: &[String],
) -> Result<Vec<Enablement>> {
    for n in named {
        if !project.services.contains_key(n) {
            return Err(ProjectError::invalid(
                None,
                "",
                format!(
                    "no such service: {n}{}",
                    suggest(n, project.services.keys())
                ),
            ));
        }
    }
    let all = profiles.iter().any(|p| p == "*");
    let mut out = Vec::new();
    let services = std::mem::take(&mut project.services);
    let mut enabled = IndexMap::new();
    for (name, s) in services {
        let reason = if named.contains(&name) {
            Reason::Named
        } else if s.profiles.is_empty() {
            Reason::NoProfiles
        } else if let Some(p) = s.profiles.iter().find(|p| all || profiles.contains(p)) {
            Reason::Profile(p.clone())
        } else {
            Reason::Inactive(s.profiles.clone())
        };
        let on = !matches!(reason, Reason::Inactive(_));
        out.push(Enablement {
            service: name.clone(),
            enabled: on,
            reason,
        });
        if on {
            enabled.insert(name, s);
        } else {
            project.disabled_services.insert(name, s);
        }
    }
    project.services = enabled;
    // Dependencies on disabled services.
    let enabled_names: std::collections::HashSet<String> =
        project.services.keys().cloned().collect();
    for (name, s) in &project.services {
        for (dep, d) in &s.depends_on {
            if enabled_names.contains(dep) {
                continue;
            }
            // An optional dependency on a disabled service stays in the model, as compose
            // keeps it; nothing waits for it.
            if !d.required && project.disabled_services.contains_key(dep) {
                continue;
            }
            if project.disabled_services.contains_key(dep) {
                return Err(ProjectError::invalid(
                    None,
                    format!("services.{name}.depends_on"),
                    format!(
                        "service `{name}` depends on `{dep}`, which is disabled: enable one of its profiles ({}) or name it on the command line",
                        project.disabled_services[dep].profiles.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `, did you mean `x`?` when a known name is close to `name`.
pub fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let limit = (name.chars().count() / 3).max(1);
    let best = known
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!(", did you mean `{k}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::model::{Dependency, Service};

    fn svc(profiles: &[&str]) -> Service {
        Service {
            profiles: profiles.iter().map(|s| (*s).to_owned()).collect(),
            ..Service::default()
        }
    }

    #[test]
    fn profiles_enable_and_name() {
        let mut p = Project::default();
        p.services.insert("web".into(), svc(&[]));
        p.services.insert("dbg".into(), svc(&["debug"]));
        p.services.insert("tool".into(), svc(&["tools"]));
        let e = select(&mut p.clone(), &[], &[]).unwrap();
        assert_eq!(e.iter().filter(|x| x.enabled).count(), 1);
        let mut q = p.clone();
        let e = select(&mut q, &["debug".into()], &["tool".into()]).unwrap();
        assert_eq!(e[1].reason, Reason::Profile("debug".into()));
        assert_eq!(e[2].reason, Reason::Named);
        assert_eq!(q.services.len(), 3);
        let mut r = p.clone();
        select(&mut r, &["*".into()], &[]).unwrap();
        assert_eq!(r.services.len(), 3);
        let err = select(&mut p.clone(), &[], &["wbe".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `web`"), "{err}");
    }

    #[test]
    fn profiles_disabled_dependency_is_an_error_unless_optional() {
        let mut p = Project::default();
        let mut web = svc(&[]);
        web.depends_on.insert("db".into(), Dependency::default());
        p.services.insert("web".into(), web.clone());
        p.services.insert("db".into(), svc(&["data"]));
        let e = select(&mut p.clone(), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("disabled"), "{e}");
        web.depends_on.get_mut("db").unwrap().required = false;
        p.services.insert("web".into(), web);
        let mut q = p.clone();
        select(&mut q, &[], &[]).unwrap();
        // Kept, as compose keeps it; the graph skips it.
        assert!(!q.services["web"].depends_on["db"].required);
        let g = crate::project::Graph::new(&q).unwrap();
        assert_eq!(g.start_order(), vec!["web".to_string()]);
    }
}
