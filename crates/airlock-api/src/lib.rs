//! airlock's HTTP listener: health, readiness, Prometheus metrics and the
//! dev issuer's OIDC discovery document and JWKS.
//!
//! Architecture invariant: this is the only crate that knows HTTP routes and
//! JSON response shapes. It makes no decisions: readiness comes from a probe
//! the binary passes in, and metrics from the installed recorder.
#![forbid(unsafe_code)]

use std::sync::Arc;

use airlock_identity::dev::DevIssuer;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Says whether the gateway can serve: configuration loaded (and, as they
/// land, store and journal writable).
pub type ReadinessProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the HTTP handlers need.
#[derive(Clone)]
pub struct ApiState {
    pub metrics: PrometheusHandle,
    pub ready: ReadinessProbe,
    /// The dev issuer and the URL its JWKS is served at, when enabled.
    pub dev_issuer: Option<(Arc<DevIssuer>, String)>,
}

/// The HTTP routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match (state.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn discovery(State(state): State<ApiState>) -> Response {
    match &state.dev_issuer {
        Some((dev, jwks_uri)) => Json(dev.discovery_document(jwks_uri)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn jwks(State(state): State<ApiState>) -> Response {
    match &state.dev_issuer {
        Some((dev, _)) => Json(dev.jwks()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
