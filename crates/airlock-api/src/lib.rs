//! airlock's HTTP listener: health, readiness, Prometheus metrics, the
//! dev issuer's OIDC discovery document and JWKS, and under `/api/v1` the
//! read-only audit endpoints ([`audit`]), approvals and just-in-time access
//! ([`approvals`]) and their OpenAPI document ([`openapi`]); and
//! [`client`], the typed client the CLI calls them with.
//!
//! Architecture invariant: this is the only crate that knows HTTP routes and
//! JSON request and response shapes. The handlers and the client share the
//! paths ([`path`]) and the wire types, so the two cannot drift. It makes no
//! decisions: readiness comes from a probe the binary passes in, and
//! metrics from the installed recorder.
#![forbid(unsafe_code)]
// Handlers' helpers return the error response itself (`Result<_, Response>`),
// built once, on the error path: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod client;
pub mod openapi;
#[cfg(test)]
mod wire_tests;

use std::sync::Arc;

use airlock_identity::dev::DevIssuer;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

pub use admin::{ExplainRequest, GatewayApi, GatewayHooks, Terminated, VerifyStatus};
pub use approvals::{
    AccessRefused, AccessRequest, ApprovalHooks, ApprovalsApi, JitTerms, file_access_request,
};
pub use audit::{AuditApi, Authenticate, Caller, ErrorBody};
pub use client::Client;

/// The `/api/v1` paths the router serves and the [`client`] requests;
/// `{id}` is the one path parameter.
pub mod path {
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    pub const SESSIONS: &str = "/api/v1/sessions";
    pub const SESSION: &str = "/api/v1/sessions/{id}";
    pub const APPROVALS: &str = "/api/v1/approvals";
    pub const APPROVAL: &str = "/api/v1/approvals/{id}";
    pub const APPROVE: &str = "/api/v1/approvals/{id}/approve";
    pub const DENY: &str = "/api/v1/approvals/{id}/deny";
    pub const ACCESS: &str = "/api/v1/access";
    pub const ACCESS_REQUESTS: &str = "/api/v1/access/requests";
    pub const ACCESS_REQUEST: &str = "/api/v1/access/{id}";
    pub const ACCESS_APPROVE: &str = "/api/v1/access/{id}/approve";
    pub const ACCESS_DENY: &str = "/api/v1/access/{id}/deny";
    pub const ACCESS_REVOKE: &str = "/api/v1/access/{id}/revoke";
    pub const TERMINATE: &str = "/api/v1/sessions/{id}/terminate";
    pub const POLICY: &str = "/api/v1/policy";
    pub const EXPLAIN: &str = "/api/v1/policy/explain";
    pub const VERIFY: &str = "/api/v1/audit/verify";
    pub const AUDIT_STATUS: &str = "/api/v1/audit/status";
}

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
    /// The audit endpoints' authenticator and store. Without it they
    /// answer 503.
    pub audit: Option<AuditApi>,
    /// The approvals and access endpoints (authenticated like the audit
    /// ones). Without it they answer 503.
    pub approvals: Option<ApprovalsApi>,
    /// Session termination, the policy, explain and verification
    /// (authenticated like the audit ones). Without it they answer 503.
    pub gateway: Option<GatewayApi>,
}

/// The HTTP routes.
pub fn router(state: ApiState) -> Router {
    routes()
        .router
        .fallback(|| async { audit::error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// The router under construction, and the paths it serves (which the
/// OpenAPI document must list: a test checks).
struct Routes {
    router: Router<ApiState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn get<H: Handler<T, ApiState>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, get(handler));
        self
    }

    fn post<H: Handler<T, ApiState>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, post(handler));
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        paths: Vec::new(),
    }
    .get("/healthz", || async { "ok\n" })
    .get("/readyz", readyz)
    .get("/metrics", metrics)
    .get("/.well-known/openid-configuration", discovery)
    .get("/.well-known/jwks.json", jwks)
    .get(path::OPENAPI, || async { Json(openapi::document()) })
    .get(path::SESSIONS, audit::list_sessions)
    .get(path::SESSION, audit::show_session)
    .get(path::APPROVALS, approvals::list::<false>)
    .get(path::APPROVAL, approvals::show::<false>)
    .post(path::APPROVE, approvals::vote::<false, true>)
    .post(path::DENY, approvals::vote::<false, false>)
    .get(path::ACCESS, approvals::list::<true>)
    .post(path::ACCESS_REQUESTS, approvals::request_access)
    .get(path::ACCESS_REQUEST, approvals::show::<true>)
    .post(path::ACCESS_APPROVE, approvals::vote::<true, true>)
    .post(path::ACCESS_DENY, approvals::vote::<true, false>)
    .post(path::ACCESS_REVOKE, approvals::revoke_access)
    .post(path::TERMINATE, admin::terminate)
    .get(path::POLICY, admin::policy)
    .post(path::EXPLAIN, admin::explain)
    .post(path::VERIFY, admin::verify)
    .get(path::AUDIT_STATUS, admin::status)
}

/// Serves `app` (the API's [`router`], merged with the MCP endpoint's
/// and the console's) on `listener` until `shutdown` completes. Handlers
/// can read the peer's address (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc = openapi::document();
        // It survives a round trip through text, as clients read it.
        let doc: serde_json::Value =
            serde_json::from_str(&serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut served = routes().paths;
        served.sort_unstable();
        let mut documented_sorted = documented.clone();
        documented_sorted.sort_unstable();
        assert_eq!(served, documented_sorted);
        for path in documented {
            let ops = doc["paths"][path].as_object().unwrap();
            assert_eq!(ops.len(), 1, "{path}: one method per path");
            let (method, op) = ops.iter().next().unwrap();
            assert!(method == "get" || method == "post", "{path}");
            assert!(op["operationId"].is_string(), "{path}");
            assert!(
                op["responses"]["200"].is_object() || op["responses"]["201"].is_object(),
                "{path}"
            );
        }
        // Every reference resolves.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/").skip(1) {
            let pointer = format!("/{}", &piece[..piece.find('"').unwrap()]);
            assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
        }
    }
}
