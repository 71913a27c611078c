//! What the gateway itself answers: ending a live session
//! (`POST /api/v1/sessions/{id}/terminate`, admins), the policy in force
//! (`GET /api/v1/policy`), `policy explain` over HTTP
//! (`POST /api/v1/policy/explain`), and the audit trail's verification
//! (`POST /api/v1/audit/verify` runs it, `GET /api/v1/audit/status` says
//! what the last run found). Reading the policy, explaining and verifying
//! take an auditor or an admin.
//!
//! The answers come from [`GatewayHooks`], which the binary implements with
//! the gateway, the judge and the verifier: this module decides who may ask,
//! never what the answer is.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use airlock_audit::event::{now_ms, rfc3339_ms};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ApiState;
use crate::approvals::DecisionRequest;
use crate::audit::{Caller, authenticated, error};

/// What the gateway answers for these endpoints.
pub trait GatewayHooks: Send + Sync {
    /// The sessions open on this gateway now.
    fn live_sessions(&self) -> Vec<Uuid>;
    /// Ends live session `id`; its client is told `why`. False when no such
    /// session is open here.
    fn terminate(&self, id: Uuid, why: String) -> bool;
    /// The policy in force, without secrets.
    fn policy(&self) -> Value;
    /// `airlock policy explain`'s JSON answer; `Err` says why it cannot
    /// (an unknown connection, no route for the groups given).
    fn explain(&self, request: &ExplainRequest) -> Result<Value, String>;
    /// Verifies the journal and the store: `Ok` lines say what was
    /// checked, `Err` what is broken or why the check could not finish.
    fn verify(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>>;
}

/// The gateway endpoints' hooks, and the last verification's outcome.
#[derive(Clone)]
pub struct GatewayApi {
    pub hooks: Arc<dyn GatewayHooks>,
    last_verify: Arc<Mutex<Option<VerifyStatus>>>,
    /// One verification at a time: it reads the whole journal and store.
    verifying: Arc<tokio::sync::Mutex<()>>,
}

impl GatewayApi {
    pub fn new(hooks: Arc<dyn GatewayHooks>) -> GatewayApi {
        GatewayApi {
            hooks,
            last_verify: Arc::default(),
            verifying: Arc::default(),
        }
    }

    /// The sessions open on this gateway.
    pub(crate) fn live(&self) -> std::collections::HashSet<Uuid> {
        self.hooks.live_sessions().into_iter().collect()
    }
}

/// The body of `POST /api/v1/policy/explain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The airlock connection.
    pub connection: String,
    /// The principal's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The role profile; the principal's first allowed one when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// The SQL, one or more statements.
    pub sql: String,
    /// The token subject (`explain` when absent).
    #[serde(default)]
    pub subject: Option<String>,
}

/// The answer of `POST /api/v1/sessions/{id}/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub id: Uuid,
    /// What the client was told, and the session's end records.
    pub reason: String,
}

/// The answer of the audit verification endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyStatus {
    /// When it ran, RFC 3339; null when it never has.
    pub checked_at: Option<String>,
    /// What was checked, or what is broken.
    pub lines: Vec<String>,
    /// Every hash chain intact; null when it never ran.
    pub ok: Option<bool>,
}

fn gateway(state: &ApiState) -> Result<GatewayApi, Response> {
    state.gateway.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway endpoints are not enabled here",
        )
    })
}

/// An auditor or an admin.
async fn reader(state: &ApiState, headers: &HeaderMap, what: &str) -> Result<Caller, Response> {
    let caller = authenticated(state, headers).await?;
    if caller.auditor || caller.admin {
        return Ok(caller);
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!(
            "{} may not {what}: that takes a group in api.auditor_groups or api.admin_groups",
            caller.subject
        ),
    ))
}

/// `POST /api/v1/sessions/{id}/terminate`: admins only, with a reason.
pub(crate) async fn terminate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Response {
    let caller = match authenticated(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !caller.admin {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not end sessions: that takes a group in api.admin_groups",
                caller.subject
            ),
        );
    }
    let api = match gateway(&state) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let reason = match crate::approvals::body(body) {
        Ok(d) => d
            .reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()),
        Err(r) => return r,
    };
    let Some(reason) = reason else {
        return error(
            StatusCode::BAD_REQUEST,
            "a reason is required to end a session",
        );
    };
    let Ok(id) = Uuid::try_parse(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a session id (a UUID)"),
        );
    };
    let why = format!(
        "an administrator ({}) ended this session: {reason}",
        caller.subject
    );
    if !api.hooks.terminate(id, why.clone()) {
        return error(
            StatusCode::NOT_FOUND,
            format!("session {id} is not open on this gateway"),
        );
    }
    tracing::warn!(session = %id, by = %caller.subject, %reason, "session terminated by an administrator");
    Json(Terminated { id, reason: why }).into_response()
}

/// `GET /api/v1/policy`.
pub(crate) async fn policy(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = reader(&state, &headers, "read the policy").await {
        return r;
    }
    match gateway(&state) {
        Ok(api) => Json(api.hooks.policy()).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/v1/policy/explain`.
pub(crate) async fn explain(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<ExplainRequest>, JsonRejection>,
) -> Response {
    if let Err(r) = reader(&state, &headers, "explain the policy").await {
        return r;
    }
    let api = match gateway(&state) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match api.hooks.explain(&request) {
        Ok(report) => Json(report).into_response(),
        Err(why) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
    }
}

/// `POST /api/v1/audit/verify`: verifies now.
pub(crate) async fn verify(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = reader(&state, &headers, "verify the audit trail").await {
        return r;
    }
    let api = match gateway(&state) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Ok(_running) = api.verifying.try_lock() else {
        return error(
            StatusCode::CONFLICT,
            "a verification is running; its outcome will be at /api/v1/audit/status",
        );
    };
    let (ok, lines) = match api.hooks.verify().await {
        Ok(lines) => (true, lines),
        Err(why) => (false, vec![why]),
    };
    let status = VerifyStatus {
        checked_at: Some(rfc3339_ms(now_ms())),
        lines,
        ok: Some(ok),
    };
    *api.last_verify.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
    Json(status).into_response()
}

/// `GET /api/v1/audit/status`: the last verification's outcome.
pub(crate) async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = reader(&state, &headers, "read the audit status").await {
        return r;
    }
    let api = match gateway(&state) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let last = api
        .last_verify
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(last.unwrap_or(VerifyStatus {
        checked_at: None,
        lines: Vec::new(),
        ok: None,
    }))
    .into_response()
}
