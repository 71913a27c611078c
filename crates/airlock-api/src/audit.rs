//! The read-only audit endpoints: `GET /api/v1/sessions` and
//! `GET /api/v1/sessions/{id}`.
//!
//! Every request is authenticated by an OIDC bearer token through the
//! binary's [`Authenticate`] (the same issuers as the gateway), then
//! authorized: only callers in an auditor or admin group read sessions.
//! Checks run in that order, before anything else, so an unauthenticated
//! caller learns nothing, not even whether the store is up. Errors are
//! JSON: `{"error": "..."}` ([`ErrorBody`]).
//!
//! The query and answer types here are the endpoints' wire format: the
//! handlers build them and the [`client`](crate::client) reads them.
//! Their fields are in alphabetical order, the order the API has always
//! sent (and `airlock sessions --json` printed) them in; a test checks it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use airlock_audit::StoreSlot;
use airlock_audit::event::{Body, Event, hex};
use airlock_audit::export::{base64, parse_since};
use airlock_store::{EventRow, SessionFilter, Store, StoreError};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ApiState;

/// Sessions listed when the caller gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most sessions one request lists.
pub const MAX_LIMIT: u32 = 1000;

/// Who called, as the binary's authenticator established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// Who the token says the caller is (groups, `act`), for approvals.
    pub principal: airlock_policy::Principal,
    /// In one of `api.auditor_groups`: may read sessions and events.
    pub auditor: bool,
    /// In one of `api.admin_groups`: every API right.
    pub admin: bool,
}

/// Verifies a bearer token. The binary implements it with the identity
/// verifier (signature, issuer, audience, expiry) and maps the token's
/// groups to [`Caller`] rights; `Err` is why the token is refused, shown to
/// the caller (it must not contain the token).
pub trait Authenticate: Send + Sync {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, String>> + Send + 'a>>;
}

/// What the audit endpoints need.
#[derive(Clone)]
pub struct AuditApi {
    /// Without one, every audit request is refused (503): nobody can be
    /// authenticated.
    pub auth: Option<Arc<dyn Authenticate>>,
    /// The event store, once the shipper has connected it.
    pub store: Arc<StoreSlot>,
}

impl AuditApi {
    pub fn new(auth: Option<Arc<dyn Authenticate>>, store: Arc<StoreSlot>) -> AuditApi {
        AuditApi { auth, store }
    }
}

/// The body of every error answer of `/api/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Why, for a person.
    pub error: String,
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

fn unauthorized(message: impl Into<String>, challenge: &'static str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Authenticates and authorizes a reader of sessions, and finds the store.
async fn reader(state: &ApiState, headers: &HeaderMap) -> Result<(Caller, Store), Response> {
    let caller = authenticated(state, headers).await?;
    if !caller.auditor && !caller.admin {
        tracing::info!(subject = %caller.subject, "audit API: caller is neither auditor nor admin");
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not read sessions: that takes a group in api.auditor_groups or \
                 api.admin_groups",
                caller.subject
            ),
        ));
    }
    Ok((caller, store(state)?))
}

/// Authenticates the caller. Authorization comes next, then the store: a
/// caller learns nothing of the store before both.
pub(crate) async fn authenticated(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    let Some(audit) = &state.audit else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit API is not enabled on this gateway",
        ));
    };
    let Some(auth) = &audit.auth else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "API authentication is not configured (no token issuer)",
        ));
    };
    let token = match headers.get(header::AUTHORIZATION).map(HeaderValue::to_str) {
        None => {
            return Err(unauthorized(
                "missing bearer token: send Authorization: Bearer <OIDC token>",
                "Bearer realm=\"airlock\"",
            ));
        }
        Some(Ok(value)) => match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                token.trim()
            }
            _ => {
                return Err(unauthorized(
                    "the Authorization header is not a bearer token",
                    "Bearer realm=\"airlock\", error=\"invalid_request\"",
                ));
            }
        },
        Some(Err(_)) => {
            return Err(unauthorized(
                "the Authorization header is not a bearer token",
                "Bearer realm=\"airlock\", error=\"invalid_request\"",
            ));
        }
    };
    let caller = match auth.authenticate(token).await {
        Ok(caller) => caller,
        Err(why) => {
            tracing::info!(reason = %why, "API: token refused");
            return Err(unauthorized(
                format!("invalid token: {why}"),
                "Bearer realm=\"airlock\", error=\"invalid_token\"",
            ));
        }
    };
    Ok(caller)
}

/// The store, once connected.
pub(crate) fn store(state: &ApiState) -> Result<Store, Response> {
    match state.audit.as_ref().and_then(|a| a.store.get()) {
        Some(store) => Ok(store.clone()),
        None => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit store unavailable",
        )),
    }
}

pub(crate) fn store_error(e: &StoreError) -> Response {
    tracing::error!(error = %e, "audit API: store query failed");
    // A query the database refused is most likely the database being
    // down or unreachable: the caller may retry.
    match e {
        StoreError::Timeout(_) | StoreError::Db(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "audit store unavailable")
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit store query failed",
        ),
    }
}

/// The query of `GET /api/v1/sessions`. Unknown parameters are refused, so
/// a misspelt filter cannot silently widen an audit query. Values are the
/// query string's text (an empty one is no filter): the server says why
/// one is wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    /// Only this principal (the token subject).
    pub principal: Option<String>,
    /// Only this connection.
    pub connection: Option<String>,
    /// A duration (`1h`) before now, or an RFC 3339 time.
    pub since: Option<String>,
    /// `allow`, `deny` or `approve`.
    pub decision: Option<String>,
    /// 1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when absent.
    pub limit: Option<String>,
}

impl SessionsQuery {
    /// The query string's parameters, in this order.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let SessionsQuery {
            principal,
            connection,
            since,
            decision,
            limit,
        } = self;
        [
            ("principal", principal),
            ("connection", connection),
            ("since", since),
            ("decision", decision),
            ("limit", limit),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.clone()?)))
        .collect()
    }
}

/// The answer of `GET /api/v1/sessions`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionSummary>,
}

/// One session of the list, from its `session_start` event. When that
/// event is not readable as this version's schema, only what the store's
/// columns say is there: the fields marked "absent" below are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The access rule that routed it (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_rule: Option<String>,
    /// The human the principal acts for.
    pub act: Option<String>,
    /// The client's `application_name`, null without one (absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub application_name: Option<Option<String>>,
    /// The client's address and port (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    pub connection: Option<String>,
    /// The principal's groups (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// The session id.
    pub id: Option<String>,
    /// Open on the gateway that answered (absent when it cannot tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    /// `read-only` or `read-write` (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The token subject.
    pub principal: Option<String>,
    /// The role profile (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The `session_start` event's place in its stream.
    pub seq: u64,
    /// RFC 3339, milliseconds.
    pub started_at: String,
    /// The journal stream of the `session_start` event.
    pub stream: Uuid,
    /// Whether the client used TLS (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// A field that may be absent, null or a value: `Some(None)` is null.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The answer of `GET /api/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvents {
    /// Every event of the session, in journal order.
    pub events: Vec<StoredEvent>,
    pub id: Uuid,
}

/// One event as the store keeps it: its place in the hash chain and the
/// event itself. `airlock audit export`'s JSON lines are the same objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The payload, when it is JSON: an event of the schema
    /// ([`StoredEvent::decode`]), or of another version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
    /// `SHA-256(prev || seq || payload)`, hex.
    pub hash: String,
    /// The payload in base64, instead of `event` when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// The previous event's hash, hex.
    pub prev: String,
    /// When the store received it, Unix milliseconds.
    pub recorded_at: i64,
    pub seq: u64,
    pub stream: Uuid,
}

impl StoredEvent {
    pub(crate) fn from_row(row: &EventRow) -> StoredEvent {
        let event: Option<Value> = serde_json::from_slice(&row.payload).ok();
        StoredEvent {
            payload_b64: event.is_none().then(|| base64(&row.payload)),
            event,
            hash: hex(&row.hash),
            prev: hex(&row.prev),
            recorded_at: row.recorded_at,
            seq: row.seq,
            stream: row.stream,
        }
    }

    /// The event, if it is one of this version's schema.
    pub fn decode(&self) -> Option<Event> {
        Event::deserialize(self.event.as_ref()?).ok()
    }
}

pub(crate) async fn list_sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Response {
    let (caller, store) = match reader(&state, &headers).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let filter = match filter(q, SystemTime::now()) {
        Ok(f) => f,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let rows = match store.sessions(&filter).await {
        Ok(rows) => rows,
        Err(e) => return store_error(&e),
    };
    tracing::info!(subject = %caller.subject, sessions = rows.len(), "audit API: sessions listed");
    let live = state.gateway.as_ref().map(crate::admin::GatewayApi::live);
    let sessions = rows
        .iter()
        .map(|row| {
            let mut summary = session_summary(row);
            if let Some(live) = &live {
                let id = summary
                    .id
                    .as_deref()
                    .and_then(|id| Uuid::try_parse(id).ok());
                summary.live = Some(id.is_some_and(|id| live.contains(&id)));
            }
            summary
        })
        .collect();
    Json(SessionList { sessions }).into_response()
}

/// The store filter of a list query.
pub(crate) fn filter(q: SessionsQuery, now: SystemTime) -> Result<SessionFilter, String> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let since_ms = match nonempty(q.since) {
        Some(s) => Some(parse_since(&s, now).map_err(|e| format!("since: {e}"))?),
        None => None,
    };
    let decision = nonempty(q.decision);
    if let Some(d) = &decision
        && !matches!(d.as_str(), "allow" | "deny" | "approve")
    {
        return Err(format!(
            "decision: {d:?} is not one of allow, deny, approve"
        ));
    }
    let limit = match nonempty(q.limit) {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "limit: {l:?} is not a number from 1 to {MAX_LIMIT}"
                ));
            }
        },
    };
    Ok(SessionFilter {
        principal: nonempty(q.principal),
        connection: nonempty(q.connection),
        since_ms,
        decision,
        limit,
    })
}

/// One line of the session list, from the session's `session_start` row.
pub(crate) fn session_summary(row: &EventRow) -> SessionSummary {
    match Event::decode(&row.payload) {
        Ok(Event {
            at,
            body: Body::SessionStart(s),
            ..
        }) => SessionSummary {
            access_rule: Some(s.access_rule),
            act: s.act,
            application_name: Some(s.application_name),
            client_addr: Some(s.client_addr),
            connection: Some(s.connection),
            groups: Some(s.groups),
            id: Some(s.session.hyphenated().to_string()),
            live: None,
            mode: Some(s.mode),
            principal: Some(s.principal),
            role: Some(s.role),
            seq: row.seq,
            started_at: at,
            stream: row.stream,
            tls: Some(s.tls),
        },
        // Not readable as this schema's session start: what the store's
        // columns say.
        _ => SessionSummary {
            access_rule: None,
            act: None,
            application_name: None,
            client_addr: None,
            connection: row.connection.clone(),
            groups: None,
            id: row.session_id.clone(),
            live: None,
            mode: None,
            principal: row.principal.clone(),
            role: None,
            seq: row.seq,
            started_at: airlock_audit::event::rfc3339_ms(row.recorded_at),
            stream: row.stream,
            tls: None,
        },
    }
}

pub(crate) async fn show_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (caller, store) = match reader(&state, &headers).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Ok(id) = Uuid::try_parse(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a session id (a UUID)"),
        );
    };
    let rows = match store.session_events(&id.hyphenated().to_string()).await {
        Ok(rows) => rows,
        Err(e) => return store_error(&e),
    };
    if rows.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("session {id} not found"));
    }
    tracing::info!(subject = %caller.subject, session = %id, "audit API: session read");
    let events = rows.iter().map(StoredEvent::from_row).collect();
    Json(SessionEvents { events, id }).into_response()
}
