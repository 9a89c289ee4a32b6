//! Nothing to link: this package exists for its tests, which check the repository's files
//! that are not code: `tests/deployment.rs` the deployment files, `tests/architecture.rs`
//! `docs/architecture.md` against the crate graph.
