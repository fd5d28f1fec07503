//! Desired vs observed state: reconcile a project with what the engine reports and produce a
//! plan — a DAG of operations, each with its cause. Pure data, no I/O.
