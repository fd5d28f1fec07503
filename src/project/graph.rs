//! The dependency graph of the enabled services (checked by phase 12, [`super::checks`]).
//!
//! An edge goes from a service to each service it depends on (`depends_on`, which after
//! normalisation also holds the implicit dependencies of `links`, `network_mode: service:`
//! and `volumes_from`). The loader builds it to refuse cycles and dependencies on unknown
//! services. [`start_order`] (dependencies first, ties in file order) and [`select`] (the
//! named services and, unless `--no-deps`, everything they depend on) are the one ordering
//! and selection of services: `plan` orders and selects with them too.

use std::collections::{BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use super::error::{ProjectError, Result};
use super::model::Project;

/// The dependency graph.
#[derive(Debug, Clone)]
pub struct Graph {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
}

impl Graph {
    /// Builds the graph of the project's enabled services.
    ///
    /// # Errors
    /// A dependency on an unknown service, or a cycle (the error prints the cycle).
    pub fn new(project: &Project) -> Result<Graph> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let order: Vec<String> = project.services.keys().cloned().collect();
        for name in &order {
            index.insert(name.clone(), graph.add_node(name.clone()));
        }
        for (name, s) in &project.services {
            for (dep, d) in &s.depends_on {
                if !d.required && project.disabled_services.contains_key(dep) {
                    continue;
                }
                let Some(&to) = index.get(dep) else {
                    return Err(ProjectError::invalid(
                        None,
                        format!("services.{name}.depends_on"),
                        format!("service `{name}` depends on undefined service `{dep}`"),
                    ));
                };
                graph.add_edge(index[name], to, ());
            }
        }
        let g = Graph {
            graph,
            index,
            order,
        };
        if let Some(cycle) = g.find_cycle() {
            return Err(ProjectError::Cycle { cycle });
        }
        Ok(g)
    }

    /// A cycle, as the list of services with the first repeated at the end.
    fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours; the stack of the current path gives the cycle.
        let n = self.graph.node_count();
        let mut colour = vec![0u8; n]; // 0 white, 1 grey, 2 black
        for name in &self.order {
            let start = self.index[name];
            if colour[start.index()] != 0 {
                continue;
            }
            let mut path: Vec<NodeIndex> = Vec::new();
            let mut stack: Vec<(NodeIndex, Vec<NodeIndex>)> = Vec::new();
            colour[start.index()] = 1;
            path.push(start);
            stack.push((start, self.deps(start)));
            while let Some((node, pending)) = stack.last_mut() {
                if let Some(next) = pending.pop() {
                    match colour[next.index()] {
                        0 => {
                            colour[next.index()] = 1;
                            path.push(next);
                            let d = self.deps(next);
                            stack.push((next, d));
                        }
                        1 => {
                            let at = path.iter().position(|x| *x == next).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path[at..].iter().map(|i| self.graph[*i].clone()).collect();
                            cycle.push(self.graph[next].clone());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                } else {
                    colour[node.index()] = 2;
                    path.pop();
                    stack.pop();
                }
            }
        }
        None
    }

    /// Dependencies of a node in reverse file order (so popping yields file order).
    fn deps(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut d: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(n, Direction::Outgoing)
            .collect();
        d.sort_by_key(|i| std::cmp::Reverse(self.position(*i)));
        d
    }

    /// Nodes are added in file order, so a node's index is its file position.
    fn position(&self, n: NodeIndex) -> usize {
        let _ = self;
        n.index()
    }

    /// The project's services with their dependencies, in file order (for [`start_order`]
    /// and [`select`]).
    fn edges(&self) -> Vec<(&str, Vec<&str>)> {
        self.order
            .iter()
            .map(|n| {
                let deps = self
                    .deps(self.index[n])
                    .into_iter()
                    .rev()
                    .map(|d| self.graph[d].as_str())
                    .collect();
                (n.as_str(), deps)
            })
            .collect()
    }

    /// Services in start order (see [`start_order`]).
    #[must_use]
    pub fn start_order(&self) -> Vec<String> {
        start_order(&self.edges())
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The services a command touches (see [`select`]), in file order.
    ///
    /// # Errors
    /// A named service that is not an enabled service of the project.
    pub fn select(&self, named: &[String], no_deps: bool) -> Result<Vec<String>> {
        for n in named {
            if !self.index.contains_key(n) {
                return Err(ProjectError::invalid(
                    None,
                    "",
                    format!(
                        "no such service: {n}{}",
                        super::profiles::suggest(n, self.order.iter())
                    ),
                ));
            }
        }
        Ok(select(&self.edges(), named, no_deps))
    }
}

/// Services in start order: every service after those it comes after (`services`: each
/// service with the services it depends on, in file order; names not in the list are
/// ignored). Each pass over the file order takes every service that is ready, so ties keep
/// file order; a cycle (which the loader refuses) degrades to file order. This is the one
/// ordering of services: reconcile (`plan`) and the loader's graph use it.
#[must_use]
pub fn start_order<'a>(services: &[(&'a str, Vec<&'a str>)]) -> Vec<&'a str> {
    let listed: BTreeSet<&str> = services.iter().map(|(n, _)| *n).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < services.len() {
        let before = out.len();
        for (name, after) in services {
            if done.contains(name) {
                continue;
            }
            if after
                .iter()
                .all(|d| !listed.contains(d) || done.contains(d))
            {
                done.insert(name);
                out.push(*name);
            }
        }
        if out.len() == before {
            for (name, _) in services {
                if done.insert(name) {
                    out.push(*name);
                }
            }
        }
    }
    out
}

/// The services an operation on `named` touches, in file order: the named ones plus, unless
/// `no_deps`, what they depend on, transitively (dependencies not in `services` are
/// ignored). Empty `named` means every service. The one selection of services: reconcile
/// (`plan`) and `config SERVICE…` use it; callers check the names first.
#[must_use]
pub fn select(services: &[(&str, Vec<&str>)], named: &[String], no_deps: bool) -> Vec<String> {
    if named.is_empty() {
        return services.iter().map(|(n, _)| (*n).to_owned()).collect();
    }
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = named.iter().map(String::as_str).collect();
    while let Some(n) = stack.pop() {
        if !wanted.insert(n) || no_deps {
            continue;
        }
        if let Some((_, deps)) = services.iter().find(|(s, _)| *s == n) {
            stack.extend(
                deps.iter()
                    .filter(|d| services.iter().any(|(s, _)| s == *d)),
            );
        }
    }
    services
        .iter()
        .filter(|(n, _)| wanted.contains(n))
        .map(|(n, _)| (*n).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::model::{Dependency, Service};

    fn project(edges: &[(&str, &[&str])]) -> Project {
        let mut p = Project::default();
        for (name, deps) in edges {
            let mut s = Service {
                name: (*name).to_owned(),
                ..Service::default()
            };
            for d in *deps {
                s.depends_on.insert((*d).to_owned(), Dependency::default());
            }
            p.services.insert((*name).to_owned(), s);
        }
        p
    }

    #[test]
    fn graph_start_order() {
        let p = project(&[
            ("web", &["api", "cache"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cache", &[]),
        ]);
        let g = Graph::new(&p).unwrap();
        assert_eq!(g.start_order(), vec!["db", "cache", "api", "web"]);
        // A pass over the file order takes each service that is ready.
        let p = project(&[("a", &["b"]), ("b", &[]), ("c", &[])]);
        assert_eq!(Graph::new(&p).unwrap().start_order(), vec!["b", "c", "a"]);
    }

    #[test]
    fn graph_select_with_and_without_deps() {
        let p = project(&[
            ("web", &["api"]),
            ("api", &["db"]),
            ("db", &[]),
            ("other", &[]),
        ]);
        let g = Graph::new(&p).unwrap();
        assert_eq!(
            g.select(&["web".into()], false).unwrap(),
            vec!["web", "api", "db"]
        );
        assert_eq!(g.select(&["web".into()], true).unwrap(), vec!["web"]);
        assert_eq!(g.select(&[], false).unwrap().len(), 4);
        assert!(g.select(&["nope".into()], false).is_err());
    }

    #[test]
    fn graph_cycles_print_their_path() {
        let p = project(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        let e = Graph::new(&p).unwrap_err().to_string();
        assert!(e.contains("a -> b -> c -> a"), "{e}");
        let p = project(&[("a", &["a"])]);
        assert!(Graph::new(&p).unwrap_err().to_string().contains("a -> a"));
    }
}
