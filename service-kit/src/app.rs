//! A built service, ready to serve: its listener, router and background tasks.
//!
//! Building and running are separate so tests can build an app on port 0, read the port,
//! and run it in-process (the zero2prod pattern).

use std::future::Future;
use std::net::SocketAddr;

use crate::health::Readiness;
use crate::{Metrics, Settings, StartupError};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A service ready to run.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// An app called `name` serving `router` on `listener`.
    pub fn new(name: &'static str, listener: TcpListener, router: Router) -> Self {
        Self {
            name,
            listener,
            router,
            stop: CancellationToken::new(),
            background: Vec::new(),
        }
    }

    /// Replaces the router with `f(router)`: for wiring that wraps every route, such as
    /// [`crate::metrics::install`].
    pub fn map_router(&mut self, f: impl FnOnce(Router) -> Router) {
        let router = std::mem::take(&mut self.router);
        self.router = f(router);
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The token background work watches: it is cancelled when the app shuts down.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` beside the HTTP server; shutdown cancels [`App::stop_token`] and waits
    /// for it.
    pub fn spawn_background(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.push(tokio::spawn(task));
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops background work and waits for it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr();
        tracing::info!(service = self.name, %addr, "listening");
        let stop = self.stop.clone();
        let server_stop = stop.clone();
        let result = crate::serve::serve(self.listener, self.router, async move {
            tokio::select! {
                _ = shutdown => {},
                _ = server_stop.cancelled() => {},
            }
        })
        .await;
        stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        tracing::info!(service = self.name, "stopped");
        result
    }
}

/// What a service serves besides its own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `GET /openapi.json` too (the API services).
    OpenApi,
    /// Nothing more (the projector serves only health and metrics).
    None,
}

/// The tail every service's `build` ends with, written once: `routes` with the readiness
/// endpoints (and the OpenAPI document), wrapped in the HTTP edge
/// ([`crate::edge::finish`]), bound to `addr`, with `/metrics`, the HTTP metrics and the
/// Pushgateway pusher installed ([`crate::metrics::install`]).
pub async fn assemble(
    name: &'static str,
    routes: Router,
    readiness: Readiness,
    document: Document,
    metrics: &Metrics,
    settings: &Settings,
    addr: SocketAddr,
) -> Result<App, StartupError> {
    let mut router = routes.merge(readiness.router());
    if document == Document::OpenApi {
        router = router.merge(crate::openapi::router());
    }
    let router = crate::edge::finish(router, metrics, settings);
    let listener = crate::serve::bind(addr).await?;
    let mut app = App::new(name, listener, router);
    crate::metrics::install(&mut app, metrics, settings);
    Ok(app)
}
