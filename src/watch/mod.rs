//! `develop.watch`: file changes sync into running containers or trigger rebuilds.
