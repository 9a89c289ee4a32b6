//! Herald's read side: message reads and time-bucketed statistics over TimescaleDB.

pub mod stats;

use service_kit::health::Readiness;
use service_kit::{App, Connections, Metrics, Settings, StartupError};

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "query-service";

/// Migrates, connects and binds; the returned [`App`] serves when run.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let conns = Connections::open(&settings, SERVICE).await?;
    // Query latency is `herald_http_request_duration_seconds` by route; query-specific
    // metrics register on this registry as the endpoints land.
    let metrics = Metrics::new(SERVICE);
    let router = axum::Router::new()
        .merge(Readiness::standard(&conns, settings.health_timeout).router())
        .fallback(service_kit::http_error::route_not_found);
    let listener = service_kit::serve::bind(settings.query_addr).await?;
    let mut app = App::new(SERVICE, listener, router);
    service_kit::metrics::install(&mut app, &metrics, &settings);
    Ok(app)
}
