//! A typed client of the `/api/v1` endpoints, for the CLI: one method per
//! endpoint, taking and returning the types the handlers themselves use.
//! It owns the paths ([`crate::path`]) and query strings; callers never
//! format a URL or read JSON by hand.
//!
//! It does not word errors for people: [`Error`] says what happened (no
//! answer, an error answer with the API's message, an answer that is not
//! what this version reads), and the caller says what to do about it.

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::{ExplainRequest, Terminated, VerifyStatus};
use crate::approvals::{
    AccessList, AccessRequest, Approval, ApprovalList, ApprovalsQuery, DecisionRequest, VoteAnswer,
};
use crate::audit::{ErrorBody, SessionEvents, SessionList, SessionsQuery};
use crate::path;

/// How long one request may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    /// No answer: refused, timed out ([`TIMEOUT`]), TLS failed…
    #[error("no answer from {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer's body could not be read.
    #[error("reading the answer of {url}")]
    Read {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error answer: its status, and the `error` of its [`ErrorBody`]
    /// (the body's text, trimmed, when it is not one). The message is the
    /// server's text: untrusted.
    #[error("the API answered {status}: {message}")]
    Api { status: u16, message: String },
    /// A success whose body is not JSON.
    #[error("{url} did not answer JSON")]
    NotJson { url: String },
    /// JSON that is not the answer this version expects.
    #[error("{url} answered JSON this airlock version does not read")]
    Shape {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one API server, authenticated by one bearer token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    transport: Transport,
}

/// How requests reach the API: over HTTP (the CLI), or handed to the
/// router of this process (the console, which is a client like any other).
#[derive(Clone)]
enum Transport {
    Http(reqwest::Client),
    Local(axum::Router),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the API at `base` (`http://host:port`, a trailing `/`
    /// is ignored) sending `token`.
    pub fn new(base: &str, token: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(Error::Build)?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            transport: Transport::Http(http),
        })
    }

    /// A client of `router` (this process's [`crate::router`]), sending
    /// `token`: each request is handled in place, authenticated and
    /// authorized exactly as one from the network.
    pub fn local(router: axum::Router, token: &str) -> Client {
        Client {
            base: String::new(),
            token: token.to_string(),
            transport: Transport::Local(router),
        }
    }

    /// The server, as given, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/sessions`: recorded sessions, newest first.
    pub async fn sessions(&self, query: &SessionsQuery) -> Result<SessionList, Error> {
        self.get(path::SESSIONS, None, &query.pairs()).await
    }

    /// `GET /api/v1/sessions/{id}`: a session's events.
    pub async fn session(&self, id: &str) -> Result<SessionEvents, Error> {
        self.get(path::SESSION, Some(id), &[]).await
    }

    /// `GET /api/v1/approvals`: held statements.
    pub async fn approvals(&self, query: &ApprovalsQuery) -> Result<ApprovalList, Error> {
        self.get(path::APPROVALS, None, &query.pairs()).await
    }

    /// `GET /api/v1/approvals/{id}`.
    pub async fn approval(&self, id: &str) -> Result<Approval, Error> {
        self.get(path::APPROVAL, Some(id), &[]).await
    }

    /// `POST /api/v1/approvals/{id}/approve`.
    pub async fn approve(&self, id: &str, body: &DecisionRequest) -> Result<VoteAnswer, Error> {
        self.post(path::APPROVE, Some(id), body).await
    }

    /// `POST /api/v1/approvals/{id}/deny`.
    pub async fn deny(&self, id: &str, body: &DecisionRequest) -> Result<VoteAnswer, Error> {
        self.post(path::DENY, Some(id), body).await
    }

    /// `GET /api/v1/access`: access requests and grants.
    pub async fn access_requests(&self, query: &ApprovalsQuery) -> Result<AccessList, Error> {
        self.get(path::ACCESS, None, &query.pairs()).await
    }

    /// `GET /api/v1/access/{id}`.
    pub async fn access_request(&self, id: &str) -> Result<Approval, Error> {
        self.get(path::ACCESS_REQUEST, Some(id), &[]).await
    }

    /// `POST /api/v1/access/requests`: the request created.
    pub async fn request_access(&self, body: &AccessRequest) -> Result<Approval, Error> {
        self.post(path::ACCESS_REQUESTS, None, body).await
    }

    /// `POST /api/v1/access/{id}/approve`.
    pub async fn approve_access(
        &self,
        id: &str,
        body: &DecisionRequest,
    ) -> Result<VoteAnswer, Error> {
        self.post(path::ACCESS_APPROVE, Some(id), body).await
    }

    /// `POST /api/v1/access/{id}/deny`.
    pub async fn deny_access(&self, id: &str, body: &DecisionRequest) -> Result<VoteAnswer, Error> {
        self.post(path::ACCESS_DENY, Some(id), body).await
    }

    /// `POST /api/v1/access/{id}/revoke`.
    pub async fn revoke_access(
        &self,
        id: &str,
        body: &DecisionRequest,
    ) -> Result<VoteAnswer, Error> {
        self.post(path::ACCESS_REVOKE, Some(id), body).await
    }

    /// `POST /api/v1/sessions/{id}/terminate` (admins; a reason is required).
    pub async fn terminate(&self, id: &str, body: &DecisionRequest) -> Result<Terminated, Error> {
        self.post(path::TERMINATE, Some(id), body).await
    }

    /// `GET /api/v1/policy`: the policy in force.
    pub async fn policy(&self) -> Result<serde_json::Value, Error> {
        self.get(path::POLICY, None, &[]).await
    }

    /// `POST /api/v1/policy/explain`: `airlock policy explain`'s answer.
    pub async fn explain(&self, body: &ExplainRequest) -> Result<serde_json::Value, Error> {
        self.post(path::EXPLAIN, None, body).await
    }

    /// `POST /api/v1/audit/verify`: verifies the trail now.
    pub async fn verify(&self) -> Result<VerifyStatus, Error> {
        self.post(path::VERIFY, None, &serde_json::json!({})).await
    }

    /// `GET /api/v1/audit/status`: the last verification.
    pub async fn audit_status(&self) -> Result<VerifyStatus, Error> {
        self.get(path::AUDIT_STATUS, None, &[]).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        template: &str,
        id: Option<&str>,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        self.send(Method::GET, self.url(template, id, query), None)
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        template: &str,
        id: Option<&str>,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).expect("request bodies serialize");
        self.send(Method::POST, self.url(template, id, &[]), Some(body))
            .await
    }

    /// The URL of `template` with `id` in place of `{id}`, escaped so that
    /// an odd id cannot reach another route.
    fn url(&self, template: &str, id: Option<&str>, query: &[(&str, String)]) -> String {
        debug_assert_eq!(template.contains("{id}"), id.is_some(), "{template}");
        let path = match id {
            Some(id) => template.replace("{id}", &percent_encode(id)),
            None => template.to_string(),
        };
        format!("{}{path}{}", self.base, query_string(query))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let (status, body) = match &self.transport {
            Transport::Http(http) => {
                let mut request = http.request(method, &url).bearer_auth(&self.token);
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = match request.send().await {
                    Ok(r) => r,
                    Err(source) => return Err(Error::Unreachable { url, source }),
                };
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(b) => (status, b),
                    Err(source) => return Err(Error::Read { url, source }),
                }
            }
            Transport::Local(router) => self.local_send(router, method, &url, body).await,
        };
        if !(200..300).contains(&status) {
            let message = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => e.error,
                Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
            };
            return Err(Error::Api { status, message });
        }
        serde_json::from_slice(&body).map_err(|source| {
            if source.is_data() {
                Error::Shape { url, source }
            } else {
                Error::NotJson { url }
            }
        })
    }

    /// Hands a request to this process's router; its answer is read whole
    /// (the API's answers are bounded by their `limit`s).
    async fn local_send(
        &self,
        router: &axum::Router,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, bytes::Bytes) {
        use tower::ServiceExt as _;
        let mut request = axum::http::Request::builder()
            .method(method.as_str())
            .uri(url)
            .header(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if body.is_some() {
            request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
        }
        let request = match request.body(axum::body::Body::from(body.unwrap_or_default())) {
            Ok(r) => r,
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string() }).to_string();
                return (400, bytes::Bytes::from(body));
            }
        };
        let response = match router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        match axum::body::to_bytes(response.into_body(), LOCAL_BODY_LIMIT).await {
            Ok(b) => (status, b),
            Err(e) => (500, bytes::Bytes::from(e.to_string())),
        }
    }
}

/// The largest answer a local client reads (a session's events included).
const LOCAL_BODY_LIMIT: usize = 256 << 20;

/// RFC 3986 percent-encoding of everything but unreserved characters: safe
/// in a path segment and in a query value.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?name=value&…`, encoded; empty without parameters.
fn query_string(query: &[(&str, String)]) -> String {
    let mut q = String::new();
    for (i, (name, value)) in query.iter().enumerate() {
        q.push(if i == 0 { '?' } else { '&' });
        q.push_str(&percent_encode(name));
        q.push('=');
        q.push_str(&percent_encode(value));
    }
    q
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Json;
    use axum::Router;
    use axum::extract::{Path, Query};
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::ApiState;

    async fn serve(router: Router) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Client::new(&base, "t").unwrap()
    }

    #[test]
    fn urls_escape_ids_and_query_values() {
        let client = Client::new("http://gw:8080/", "t").unwrap();
        assert_eq!(client.base(), "http://gw:8080");
        assert_eq!(
            client.url(path::APPROVE, Some("6f1c-1"), &[]),
            "http://gw:8080/api/v1/approvals/6f1c-1/approve"
        );
        assert_eq!(
            client.url(path::ACCESS_DENY, Some("../requests"), &[]),
            "http://gw:8080/api/v1/access/..%2Frequests/deny"
        );
        assert_eq!(
            client.url(path::SESSION, Some("../x?y"), &[]),
            "http://gw:8080/api/v1/sessions/..%2Fx%3Fy"
        );
        assert_eq!(query_string(&[]), "");
        assert_eq!(
            query_string(&[
                ("principal", "a b&c=d".into()),
                ("since", "2024-05-01T12:00:00+02:00".into())
            ]),
            "?principal=a%20b%26c%3Dd&since=2024-05-01T12%3A00%3A00%2B02%3A00"
        );
    }

    /// Every field of a query reaches the server as the handler reads it.
    #[test]
    fn queries_round_trip_through_the_url() {
        let sessions = SessionsQuery {
            principal: Some("a b&c=d".into()),
            connection: Some("app/1".into()),
            since: Some("2024-05-01T12:00:00+02:00".into()),
            decision: Some("deny".into()),
            limit: Some("5".into()),
        };
        let uri: Uri = format!("/x{}", query_string(&sessions.pairs()))
            .parse()
            .unwrap();
        assert_eq!(
            Query::<SessionsQuery>::try_from_uri(&uri).unwrap().0,
            sessions
        );
        let approvals = ApprovalsQuery {
            status: Some("all".into()),
            limit: Some(7),
        };
        let uri: Uri = format!("/x{}", query_string(&approvals.pairs()))
            .parse()
            .unwrap();
        assert_eq!(
            Query::<ApprovalsQuery>::try_from_uri(&uri).unwrap().0,
            approvals
        );
        assert!(SessionsQuery::default().pairs().is_empty());
        assert!(ApprovalsQuery::default().pairs().is_empty());
    }

    /// Each method's method and path is a route of the real router: with
    /// nothing enabled, every one answers 503, not 404 or 405.
    #[tokio::test]
    async fn every_method_reaches_a_route() {
        let state = ApiState {
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            ready: Arc::new(|| Ok(())),
            dev_issuer: None,
            audit: None,
            approvals: None,
            gateway: None,
        };
        // Over HTTP, and handed to the router in place (the console's way).
        let router = crate::router(state);
        let clients = [serve(router.clone()).await, Client::local(router, "token")];
        for client in clients {
            let id = "00000000-0000-0000-0000-000000000000";
            let why = DecisionRequest::default();
            let answers = [
                client.sessions(&SessionsQuery::default()).await.err(),
                client.session(id).await.err(),
                client.approvals(&ApprovalsQuery::default()).await.err(),
                client.approval(id).await.err(),
                client.approve(id, &why).await.err(),
                client.deny(id, &why).await.err(),
                client
                    .access_requests(&ApprovalsQuery::default())
                    .await
                    .err(),
                client.access_request(id).await.err(),
                client.request_access(&AccessRequest::default()).await.err(),
                client.approve_access(id, &why).await.err(),
                client.deny_access(id, &why).await.err(),
                client.revoke_access(id, &why).await.err(),
                client.terminate(id, &why).await.err(),
                client.policy().await.err(),
                client
                    .explain(&crate::ExplainRequest::default())
                    .await
                    .err(),
                client.verify().await.err(),
                client.audit_status().await.err(),
            ];
            for (i, answer) in answers.into_iter().enumerate() {
                match answer {
                    Some(Error::Api { status: 503, .. }) => {}
                    other => panic!("{client:?} method {i}: {other:?}"),
                }
            }
        }
    }

    fn canned(id: &str) -> Response {
        match id {
            "ok" => Json(serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000001",
                "events": [{
                    "stream": "00000000-0000-0000-0000-000000000002",
                    "seq": 1,
                    "prev": "00",
                    "hash": "01",
                    "recorded_at": 5,
                    "payload_b64": "AA=="
                }]
            }))
            .into_response(),
            "teapot" => (
                StatusCode::IM_A_TEAPOT,
                Json(ErrorBody {
                    error: "short and stout".into(),
                }),
            )
                .into_response(),
            "text" => (StatusCode::BAD_GATEWAY, " bad gateway \n").into_response(),
            "html" => (StatusCode::OK, "<html>").into_response(),
            "shape" => Json(serde_json::json!({ "id": 5 })).into_response(),
            other => (
                StatusCode::NOT_FOUND,
                Json(ErrorBody {
                    error: format!("got {other}"),
                }),
            )
                .into_response(),
        }
    }

    #[tokio::test]
    async fn answers_and_errors_are_typed() {
        let router = Router::new().route(
            path::SESSION,
            get(|Path(id): Path<String>| async move { canned(&id) }),
        );
        let client = serve(router).await;
        let events = client.session("ok").await.unwrap();
        assert_eq!(events.events[0].seq, 1);
        assert_eq!(events.events[0].payload_b64.as_deref(), Some("AA=="));
        assert_eq!(events.events[0].decode(), None);

        let api = |e: Error| match e {
            Error::Api { status, message } => (status, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            api(client.session("teapot").await.unwrap_err()),
            (418, "short and stout".to_string())
        );
        assert_eq!(
            api(client.session("text").await.unwrap_err()),
            (502, "bad gateway".to_string())
        );
        // The id stays one path segment, and arrives as it was.
        assert_eq!(
            api(client.session("../x?y#z").await.unwrap_err()),
            (404, "got ../x?y#z".to_string())
        );
        let base = client.base().to_string();
        match client.session("html").await.unwrap_err() {
            Error::NotJson { url } => assert_eq!(url, format!("{base}/api/v1/sessions/html")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            client.session("shape").await.unwrap_err(),
            Error::Shape { .. }
        ));
    }

    #[tokio::test]
    async fn no_server_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(&format!("http://{addr}"), "t").unwrap();
        assert!(matches!(
            client.session("x").await.unwrap_err(),
            Error::Unreachable { .. }
        ));
    }
}
