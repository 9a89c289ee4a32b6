//! Plumbing the three Herald services share: configuration from the environment, database
//! connections, migrations on start, the health endpoints, the HTTP edge (the one JSON
//! error shape, limits, panics), authentication, metrics and tracing, and serving with
//! graceful shutdown. (Test support is the `test-support` crate.)
//!
//! Everything a service does differently lives in its own crate; this one only holds what
//! would otherwise be written three times.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod consistency;
pub mod edge;
pub mod health;
pub mod http_error;
pub mod json;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod quota;
pub mod request_context;
pub mod serve;
pub mod telemetry;

pub use app::App;
pub use config::{ConfigError, Settings};
pub use connections::{Connections, StartupError};
pub use metrics::Metrics;
