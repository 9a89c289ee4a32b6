//! Herald's write side: accepts commands over HTTP and appends events to the event store.

use service_kit::health::Readiness;
use service_kit::{App, Connections, Settings, StartupError};

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "command-service";

/// Migrates, connects and binds; the returned [`App`] serves when run.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let conns = Connections::open(&settings, SERVICE).await?;
    let router = axum::Router::new()
        .merge(Readiness::standard(&conns, settings.health_timeout).router())
        .fallback(service_kit::http_error::route_not_found);
    let listener = service_kit::serve::bind(settings.command_addr).await?;
    Ok(App::new(SERVICE, listener, router))
}
