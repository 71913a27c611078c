//! Opening a session, for any door: the credential the door read → a
//! verified principal → a route (with the principal's live just-in-time
//! grants) → when the session must end → the session-start event.
//!
//! A door supplies what its client sent (the token, and the connection and
//! role it asked for) and the time; between [`authorize`] and [`start`] it
//! logs in upstream and reads what its catalog source offers.

use std::sync::Arc;
use std::time::SystemTime;

use airlock_audit::event::{SessionEnd, SessionStart, from_unix_ms};
use airlock_audit::{Body, Event, RecordError, Recorder};
use airlock_config::SessionLifetime;
use airlock_identity::Verifier;
use airlock_policy::{AccessPolicy, Grant, Hint, Principal, Route};

use crate::approvals::Approvals;

/// What a door's client asked for.
pub struct Request<'a> {
    /// The OIDC token, read from the password field (or a bearer header).
    pub token: &'a str,
    /// The connection (PostgreSQL: `dbname`).
    pub connection: &'a str,
    /// The role profile (PostgreSQL: `user`); empty for the default.
    pub role: &'a str,
}

/// Why a session is not opened. Every variant is the client's to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No token, or one that does not verify: `reason` names it for the
    /// `airlock_auth_failures_total` metric.
    Token {
        reason: &'static str,
        message: String,
    },
    /// No access rule routes the principal there: the message, and what
    /// the principal may do instead.
    NoRoute(String, Hint),
}

impl Refused {
    /// The client's message.
    pub fn message(&self) -> &str {
        match self {
            Refused::Token { message, .. } | Refused::NoRoute(message, _) => message,
        }
    }

    /// What the client could do instead.
    pub fn hint(&self) -> Hint {
        match self {
            Refused::Token {
                reason: "no_token", ..
            } => Hint::never(
                "token",
                "send an OIDC token from a trusted issuer as the password",
            ),
            Refused::Token { .. } => Hint::never(
                "token",
                "get a fresh token from a trusted issuer for this audience, and connect with it",
            ),
            Refused::NoRoute(_, hint) => hint.clone(),
        }
    }

    /// The metric's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Token { reason, .. } => reason,
            Refused::NoRoute(..) => "no_access",
        }
    }
}

/// A verified, routed session.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub principal: Principal,
    pub route: Route,
}

/// What an [`authorize`] needs of the engine's configuration.
pub struct Policy<'a> {
    pub verifier: &'a Verifier,
    pub access: &'a AccessPolicy,
    pub lifetime: SessionLifetime,
    pub approvals: Option<&'a Approvals>,
}

/// Verifies the token and routes its principal at `now`.
pub async fn authorize(
    policy: &Policy<'_>,
    request: &Request<'_>,
    now: SystemTime,
) -> Result<Authorized, Refused> {
    let principal = verify(policy, request.token, now).await?;
    route(policy, principal, request.connection, request.role, now).await
}

/// Verifies a token at `now`: the principal it names, or why not. A door
/// that authenticates once and routes per request (MCP) calls this, then
/// [`route`] for each request.
pub async fn verify(
    policy: &Policy<'_>,
    token: &str,
    now: SystemTime,
) -> Result<Principal, Refused> {
    if token.is_empty() {
        return Err(Refused::Token {
            reason: "no_token",
            message: "airlock: no token: send an OIDC token as the password".into(),
        });
    }
    let principal = match policy.verifier.verify(token, now).await {
        Ok(a) => a.into_principal(),
        Err(e) => {
            tracing::info!(reason = e.reason(), "token refused");
            return Err(Refused::Token {
                reason: e.reason(),
                message: format!("airlock: {e}"),
            });
        }
    };
    // Verification allows clock skew past `exp`, but a session that lives
    // as long as its token would be cut the moment it opened.
    if policy.lifetime == SessionLifetime::Token && principal.expires_at <= now {
        return Err(Refused::Token {
            reason: "expired",
            message: "airlock: token has expired".into(),
        });
    }
    tracing::Span::current().record("principal", principal.subject.as_str());
    Ok(principal)
}

/// Routes a verified principal to `connection` as `role` at `now` (with
/// its live just-in-time grants).
pub async fn route(
    policy: &Policy<'_>,
    principal: Principal,
    connection: &str,
    role: &str,
    now: SystemTime,
) -> Result<Authorized, Refused> {
    let grants = if policy.access.needs_grants(&principal, connection) {
        live_grants(policy.approvals, &principal, connection, now).await
    } else {
        Vec::new()
    };
    match policy.access.route(&principal, connection, role, &grants) {
        Ok(route) => Ok(Authorized { principal, route }),
        Err(e) => {
            tracing::info!(error = %e, "no route");
            Err(Refused::NoRoute(format!("airlock: {e}"), e.hint()))
        }
    }
}

/// Every route the principal may take at `now` (its live just-in-time
/// grants included): each connection with each role it may use there.
pub async fn routes(policy: &Policy<'_>, principal: &Principal, now: SystemTime) -> Vec<Route> {
    let mut routes = Vec::new();
    for connection in policy.access.connection_names() {
        let grants = if policy.access.needs_grants(principal, connection) {
            live_grants(policy.approvals, principal, connection, now).await
        } else {
            Vec::new()
        };
        routes.extend(
            policy
                .access
                .allowed_roles(principal, connection, &grants)
                .iter()
                .filter_map(|role| {
                    policy
                        .access
                        .route(principal, connection, role, &grants)
                        .ok()
                }),
        );
    }
    routes
}

/// The principal's live grants on `connection`. A store that cannot be
/// asked grants nothing: JIT roles are refused, others unaffected.
async fn live_grants(
    approvals: Option<&Approvals>,
    principal: &Principal,
    connection: &str,
    now: SystemTime,
) -> Vec<Grant> {
    let Some(store) = approvals.and_then(|a| a.store()) else {
        tracing::warn!("just-in-time grants cannot be checked: no approvals store");
        return Vec::new();
    };
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match store
        .active_grants(&principal.issuer, &principal.subject, connection, now_ms)
        .await
    {
        Ok(rows) => rows
            .into_iter()
            .map(|row| Grant {
                id: row.id.to_string(),
                connection: row.connection,
                role: row.role,
                expires_at: from_unix_ms(row.expires_ms.unwrap_or(0)),
                by_policy: row
                    .decided_by
                    .as_deref()
                    .is_some_and(|by| by.starts_with(airlock_policy::access::POLICY_VOTER)),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "just-in-time grants cannot be checked");
            Vec::new()
        }
    }
}

/// When a session must end, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    pub at: SystemTime,
    pub why: Cut,
}

/// Why airlock cuts a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The token expired.
    TokenExpired,
    /// The configured lifetime ended.
    Lifetime,
    /// The session's just-in-time grant expired or was revoked: why.
    Grant(String),
    /// The gateway is shutting down and its grace period is over.
    Shutdown,
    /// An administrator ended it: who, and why (the whole message).
    Terminated(String),
}

impl Cut {
    /// How the session-end event names it.
    pub fn reason(&self) -> String {
        match self {
            Cut::TokenExpired => "token expired".into(),
            Cut::Lifetime => "session lifetime reached".into(),
            Cut::Grant(why) => why.clone(),
            Cut::Shutdown => "gateway shutting down".into(),
            Cut::Terminated(why) => why.clone(),
        }
    }

    /// The client's message.
    pub fn message(&self) -> String {
        let why = match self {
            Cut::TokenExpired => "your token expired; reconnect with a fresh token",
            Cut::Lifetime => {
                "the session reached its configured lifetime (identity.session_lifetime)"
            }
            Cut::Grant(why) => why,
            Cut::Shutdown => "the gateway is shutting down; reconnect (to another replica)",
            Cut::Terminated(why) => why,
        };
        format!("airlock: session ended: {why}")
    }
}

/// The session's end: its lifetime's or its grant's, whichever comes first
/// (`None`: it may run forever). Revocation comes from the approvals worker
/// ([`Approvals::watch_grant`]).
pub fn deadline(
    authorized: &Authorized,
    lifetime: SessionLifetime,
    now: SystemTime,
) -> Option<Deadline> {
    let life = match lifetime {
        SessionLifetime::Token => Some(Deadline {
            at: authorized.principal.expires_at,
            why: Cut::TokenExpired,
        }),
        SessionLifetime::Unlimited => None,
        SessionLifetime::Fixed(d) => now.checked_add(d).map(|at| Deadline {
            at,
            why: Cut::Lifetime,
        }),
    };
    let grant = authorized.route.grant.as_ref().map(|g| Deadline {
        at: g.expires_at,
        why: Cut::Grant(format!("your just-in-time grant {} expired", g.id)),
    });
    match (life, grant) {
        (Some(l), Some(g)) => Some(if g.at <= l.at { g } else { l }),
        (l, g) => l.or(g),
    }
}

/// What a door knows of its client, for the session-start event.
pub struct Client<'a> {
    pub door: airlock_audit::event::Door,
    pub addr: String,
    pub tls: bool,
    /// A client-chosen name (PostgreSQL's `application_name`).
    pub application_name: Option<&'a str>,
}

/// Journals the session's start: nothing runs unrecorded, so a session
/// whose start cannot be recorded is refused.
pub fn start(
    recorder: &Recorder,
    masking: &airlock_mask::Masking,
    session: uuid::Uuid,
    authorized: &Authorized,
    client: &Client<'_>,
) -> Result<(), RecordError> {
    let (principal, route) = (&authorized.principal, &authorized.route);
    let event = Event::now(Body::SessionStart(SessionStart {
        session,
        principal: principal.subject.clone(),
        issuer: principal.issuer.clone(),
        groups: principal.groups.clone(),
        act: principal.act.clone(),
        act_chain: if principal.act_chain.len() > 1 {
            principal.act_chain.clone()
        } else {
            Vec::new()
        },
        connection: route.connection.clone(),
        role: route.role.clone(),
        access_rule: route.rule.clone(),
        mode: route.mode.name().into(),
        unmask: route.unmask,
        client_addr: client.addr.clone(),
        grant: route.grant.as_ref().map(|g| g.id.clone()),
        // A client-chosen string: the detectors see it like any text.
        application_name: client
            .application_name
            .map(|a| masking.detect_in(a).into_owned()),
        tls: client.tls,
        door: client.door,
    }));
    recorder.record(&event).map(drop)
}

/// Journals the session's end (a failure is logged: the session is over).
pub fn end(recorder: &Arc<Recorder>, session: uuid::Uuid, reason: String, statements: u64) {
    let event = Event::now(Body::SessionEnd(SessionEnd {
        session,
        reason,
        statements,
    }));
    if let Err(e) = recorder.record(&event) {
        tracing::error!(error = %e, "a session's end could not be recorded");
    }
}
