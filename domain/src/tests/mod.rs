//! Tests of the aggregate as a whole; each rule's own unit tests live next to it in
//! `rules.rs`.

mod aggregate;
mod properties;
mod support;
mod transitions;
