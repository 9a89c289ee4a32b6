//! `embed_migrations!` reads `sql/` when the crate compiles, but Cargo only knows to
//! recompile for files it has seen: without this, a new migration file is silently left out
//! of the binary until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
