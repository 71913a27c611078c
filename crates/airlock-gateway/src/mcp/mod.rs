//! The MCP door: MCP over Streamable HTTP at `/mcp` on the HTTP listener
//! (rmcp's server, stateless: the current protocol revision's
//! `server/discover` and the 2025-11-25 `initialize` handshake both), and
//! the RFC 9728 protected-resource metadata that names the issuers.
//!
//! Before rmcp sees a request the endpoint refuses a token in the URL,
//! a browser `Origin` not in `mcp.allowed_origins`, and a request without a
//! valid bearer token (401 with `WWW-Authenticate: Bearer
//! resource_metadata="…"`); rmcp bounds the body (`mcp.max_request_size`).
//! Each tool call then goes through the engine like a wire door's
//! statement ([`run`]).

mod flags;
mod holds;
mod my;
mod pg;
mod run;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_engine::open;
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

pub use tools::AccessRequests;

use crate::Gateway;

/// The endpoint's path.
pub const PATH: &str = "/mcp";
/// Its protected-resource metadata (RFC 9728 §3: the well-known prefix,
/// then the resource's path).
pub const METADATA: &str = "/.well-known/oauth-protected-resource/mcp";

impl Gateway {
    /// The MCP endpoint's routes, for the HTTP listener. `access` files
    /// the `request_access` tool's requests. Whether the endpoint answers
    /// follows `mcp.enabled` of the configuration in force; the body limit
    /// is the one at start.
    pub fn mcp_router(self: &Arc<Self>, access: Arc<dyn AccessRequests>) -> Router {
        let snapshot = self.snapshot();
        let tools = tools::Tools {
            gateway: Arc::clone(self),
            holds: Arc::default(),
            access,
        };
        // Origin is checked here against the configuration in force; Host
        // is not checked (DNS rebinding gains nothing without a token).
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .disable_allowed_hosts()
            .disable_allowed_origins()
            .with_max_request_body_bytes(
                usize::try_from(snapshot.mcp.max_request_size.0).unwrap_or(usize::MAX),
            );
        let service = StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let endpoint = Router::new()
            .nest_service(PATH, service)
            .layer(middleware::from_fn_with_state(Arc::clone(self), guard));
        Router::new()
            .route(METADATA, get(metadata))
            .route("/.well-known/oauth-protected-resource", get(metadata))
            .with_state(Arc::clone(self))
            .merge(endpoint)
    }
}

/// The URL clients reached this listener by (its `Host`).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// RFC 9728 protected-resource metadata.
async fn metadata(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let snapshot = gateway.snapshot();
    if !snapshot.mcp.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    let base = base_url(&headers);
    Json(json!({
        "resource": format!("{base}{PATH}"),
        "authorization_servers": snapshot.issuers,
        "bearer_methods_supported": ["header"],
        "resource_name": "airlock",
    }))
    .into_response()
}

/// A refusal before rmcp: a JSON body with a message, and the headers.
fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": status.canonical_reason().unwrap_or("error"), "message": message})),
    )
        .into_response()
}

/// A JSON-RPC error without an id, with status 400.
fn rpc_error(code: i64, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Whether a query string carries something a token could hide in.
fn token_in_query(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = name.to_ascii_lowercase();
        matches!(
            name.as_str(),
            "access_token" | "token" | "id_token" | "authorization" | "bearer" | "password"
        ) || value.starts_with("eyJ")
    })
}

/// `scheme://host[:port]` with the scheme's default port dropped, lower
/// case, for comparing origins.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme)
            && let Some(stripped) = origin.strip_suffix(port)
        {
            return stripped.to_string();
        }
    }
    origin
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = normalize_origin(origin);
    allowed.iter().any(|a| normalize_origin(a) == origin)
}

/// Checks a request before rmcp sees it and names its caller.
async fn guard(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let snapshot = gateway.snapshot();
    if !snapshot.mcp.enabled {
        return refuse(
            StatusCode::NOT_FOUND,
            "the MCP endpoint is not enabled (mcp.enabled)",
        );
    }
    if request.uri().query().is_some_and(token_in_query) {
        gateway.metrics.auth_failure("token_in_url");
        return refuse(
            StatusCode::BAD_REQUEST,
            "airlock: tokens are never accepted in a URL; send Authorization: Bearer <token>",
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &snapshot.mcp.allowed_origins));
        if !allowed {
            return refuse(
                StatusCode::FORBIDDEN,
                "airlock: this Origin is not allowed (mcp.allowed_origins)",
            );
        }
    }
    let metadata = format!("{}{METADATA}", base_url(request.headers()));
    let challenge = |error: Option<&str>| {
        let value = match error {
            Some(e) => format!(
                "Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\", error_description=\"{}\"",
                e.replace(['"', '\\'], "'")
            ),
            None => format!("Bearer resource_metadata=\"{metadata}\""),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        gateway.metrics.auth_failure("no_token");
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "airlock: send an OIDC token as Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge(None));
        return r;
    };
    let policy = open::Policy {
        verifier: &snapshot.verifier,
        access: &snapshot.access,
        lifetime: snapshot.session_lifetime,
        approvals: gateway.approvals().map(|a| &**a),
    };
    let principal = match open::verify(&policy, token, gateway.clock().now()).await {
        Ok(p) => p,
        Err(refused) => {
            gateway.metrics.auth_failure(refused.reason());
            let mut r = refuse(StatusCode::UNAUTHORIZED, refused.message());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge(Some(refused.message())));
            return r;
        }
    };
    // The body: bounded, JSON, one message (JSON-RPC batches are not part
    // of MCP since 2025-06-18). rmcp parses it again; these are its
    // refusals as JSON-RPC errors.
    if request.method() == axum::http::Method::POST {
        let (parts, body) = request.into_parts();
        let limit = usize::try_from(snapshot.mcp.max_request_size.0).unwrap_or(usize::MAX);
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "airlock: the request body is larger than mcp.max_request_size",
            );
        };
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(_) => return rpc_error(-32700, "Parse error: the body is not JSON"),
            Ok(serde_json::Value::Array(_)) => {
                return rpc_error(
                    -32600,
                    "Invalid Request: JSON-RPC batches are not supported",
                );
            }
            Ok(_) => {}
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "mcp".to_string(), |c| c.0.to_string());
    request
        .extensions_mut()
        .insert(tools::Caller { principal, addr });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_urls_are_spotted() {
        assert!(token_in_query("access_token=abc"));
        assert!(token_in_query("x=1&Token=abc"));
        assert!(token_in_query("jwt=eyJhbGciOi.x.y"));
        assert!(!token_in_query("x=1&y=2"));
    }

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed("https://app.example.com:443", &allowed));
        assert!(origin_allowed("https://APP.example.com", &allowed));
        assert!(!origin_allowed("http://app.example.com", &allowed));
        assert!(!origin_allowed(
            "https://app.example.com.evil.test",
            &allowed
        ));
        assert!(!origin_allowed("null", &allowed));
        assert!(!origin_allowed("https://app.example.com", &[]));
    }
}
