//! Phase 10: the dependency graph of the enabled services.
//!
//! An edge goes from a service to each service it depends on (`depends_on`, which after
//! normalisation also holds the implicit dependencies of `links`, `network_mode: service:`
//! and `volumes_from`). Start order is a topological order (dependencies first, ties in file
//! order); stop order is its reverse. A command that names services touches them and,
//! unless `--no-deps`, everything they depend on, transitively.

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

    /// Services in start order: every service after its dependencies, ties in file order.
    #[must_use]
    pub fn start_order(&self) -> Vec<String> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // Kahn's algorithm; the ready set is a min-heap on file position.
        let n = self.graph.node_count();
        let mut missing: Vec<usize> = (0..n)
            .map(|i| {
                self.graph
                    .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|i| missing[*i] == 0).map(Reverse).collect();
        let mut out = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            out.push(self.graph[NodeIndex::new(i)].clone());
            for dependent in self
                .graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            {
                let d = dependent.index();
                missing[d] -= 1;
                if missing[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        out
    }

    /// Services in stop order (dependents first).
    #[must_use]
    pub fn stop_order(&self) -> Vec<String> {
        let mut v = self.start_order();
        v.reverse();
        v
    }

    /// Direct dependencies of a service.
    #[must_use]
    pub fn dependencies(&self, service: &str) -> Vec<String> {
        self.index
            .get(service)
            .map(|&i| {
                self.deps(i)
                    .into_iter()
                    .rev()
                    .map(|d| self.graph[d].clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Services that depend directly on `service`.
    #[must_use]
    pub fn dependents(&self, service: &str) -> Vec<String> {
        let Some(&i) = self.index.get(service) else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .graph
            .neighbors_directed(i, Direction::Incoming)
            .map(|d| self.graph[d].clone())
            .collect();
        v.sort_by_key(|s| self.order.iter().position(|o| o == s));
        v
    }

    /// The services a command touches, in start order: `named` (all services when empty)
    /// plus, unless `no_deps`, their transitive dependencies.
    ///
    /// # Errors
    /// A named service that is not an enabled service of the project.
    pub fn select(&self, named: &[String], no_deps: bool) -> Result<Vec<String>> {
        if named.is_empty() {
            return Ok(self.start_order());
        }
        let mut set = BTreeSet::new();
        let mut todo: Vec<String> = Vec::new();
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
            todo.push(n.clone());
        }
        while let Some(n) = todo.pop() {
            if !set.insert(n.clone()) || no_deps {
                continue;
            }
            todo.extend(self.dependencies(&n));
        }
        Ok(self
            .start_order()
            .into_iter()
            .filter(|s| set.contains(s))
            .collect())
    }

    /// Services in start order grouped by level: each group depends only on earlier groups
    /// (services of one group can be started in parallel).
    #[must_use]
    pub fn levels(&self) -> Vec<Vec<String>> {
        let mut level: HashMap<String, usize> = HashMap::new();
        for s in self.start_order() {
            let l = self
                .dependencies(&s)
                .iter()
                .map(|d| level.get(d).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            level.insert(s, l);
        }
        let max = level.values().copied().max().map_or(0, |m| m + 1);
        let mut out = vec![Vec::new(); max];
        for s in self.start_order() {
            out[level[&s]].push(s);
        }
        out
    }
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
    fn graph_start_and_stop_order() {
        let p = project(&[
            ("web", &["api", "cache"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cache", &[]),
        ]);
        let g = Graph::new(&p).unwrap();
        assert_eq!(g.start_order(), vec!["db", "api", "cache", "web"]);
        assert_eq!(g.stop_order(), vec!["web", "cache", "api", "db"]);
        assert_eq!(
            g.levels(),
            vec![vec!["db", "cache"], vec!["api"], vec!["web"]]
        );
        assert_eq!(g.dependents("db"), vec!["api"]);
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
            vec!["db", "api", "web"]
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
