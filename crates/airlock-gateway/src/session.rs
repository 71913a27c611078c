//! One client session, from accept to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use airlock_config::{SessionLifetime, StartupNotice};
use airlock_identity::Authenticated;
use airlock_pgwire::codec::{self, Notice, Severity, Startup};
use airlock_pgwire::relay::{Inspector, Relay};
use airlock_pgwire::startup::{ClientHandshake, Step, fatal};
use airlock_pgwire::{params, sqlstate};
use airlock_policy::{AccessMode, Route};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, field};

use airlock_audit::event::{SessionEnd, SessionStart};
use airlock_audit::{Body, Event, Recorder};

use crate::Gateway;
use crate::approvals::{Approvals, Decided};
use crate::cancel::{CancelKey, CancelTarget};
use crate::inspect::{HoldOutcome, HoldRequest, PolicyInspector, SessionMasking, SessionPolicy};
use crate::pump::{Pump, PumpEnd, Side};
use crate::record::SessionRecorder;
use crate::snapshot::Snapshot;
use crate::stream::{ClientStream, MaybeTls};
use crate::upstream::{self, ConnectError};
use airlock_audit::event::{from_unix_ms, now_ms, rfc3339_ms};
use airlock_store::ApprovalStatus;

/// Serves one accepted client connection.
pub(crate) async fn serve(gateway: Arc<Gateway>, tcp: TcpStream, peer: SocketAddr, loopback: bool) {
    let id = uuid::Uuid::now_v7();
    let span = tracing::info_span!(
        "session",
        id = %id,
        peer = %peer,
        principal = field::Empty,
        connection = field::Empty,
        role = field::Empty,
    );
    async move {
        let _ = tcp.set_nodelay(true);
        let snapshot = gateway.snapshot();
        // `None` only while the TLS handshake owns the socket.
        let mut client = Some(MaybeTls::Plain(tcp));
        let mut out = BytesMut::new();
        let deadline = tokio::time::Instant::now() + snapshot.limits.startup_timeout;
        let opened = tokio::time::timeout_at(
            deadline,
            open(
                &gateway,
                &snapshot,
                &mut client,
                &mut out,
                loopback,
                id,
                peer,
            ),
        )
        .await;
        let Some(mut client) = client else { return };
        let session = match opened {
            Ok(Some(session)) => session,
            Ok(None) => return finish_early(&mut client, &out).await,
            Err(_) => {
                tracing::info!("startup timed out");
                out.clear();
                fatal(
                    &mut out,
                    sqlstate::PROTOCOL_VIOLATION,
                    "airlock: timed out waiting for the client to authenticate",
                );
                return finish_early(&mut client, &out).await;
            }
        };
        run(&gateway, &snapshot, client, out, session).await;
    }
    .instrument(span)
    .await
}

async fn finish_early(client: &mut ClientStream, out: &[u8]) {
    let _ = client.write_all(out).await;
    let _ = client.shutdown().await;
}

/// An authenticated, routed session with its upstream open.
struct Opened {
    id: uuid::Uuid,
    principal: airlock_policy::Principal,
    route: Route,
    /// Client bytes that arrived behind the password.
    pending: BytesMut,
    parameters: Vec<(String, String)>,
    upstream: crate::stream::UpstreamStream,
    status: u8,
    cancel: CancelKey,
    /// The connection's catalog as masking sees it, for a masked session.
    catalog: Option<Arc<airlock_policy::masking::SensitiveCatalog>>,
    /// The connection's unique keys, for row bounds.
    keys: Option<Arc<airlock_policy::UniqueKeys>>,
    recorder: SessionRecorder,
}

/// Runs the handshake, verifies the token, routes and opens the upstream.
/// On `None` a FATAL (or nothing, for a cancel) is in `out`.
async fn open(
    gateway: &Arc<Gateway>,
    snapshot: &Snapshot,
    slot: &mut Option<ClientStream>,
    out: &mut BytesMut,
    loopback: bool,
    id: uuid::Uuid,
    peer: SocketAddr,
) -> Option<Opened> {
    let mut hs = ClientHandshake::new(snapshot.tls_offer, loopback);
    let mut input = BytesMut::with_capacity(1024);
    let (startup, token) = loop {
        let client = slot.as_mut()?;
        match hs.handle(&mut input, out) {
            Step::NeedMore => {
                if !out.is_empty() {
                    client.write_all(out).await.ok()?;
                    out.clear();
                }
                if client.read_buf(&mut input).await.ok()? == 0 {
                    return None;
                }
            }
            Step::StartTls => {
                client.write_all(out).await.ok()?;
                out.clear();
                let acceptor = snapshot.tls.as_ref()?;
                let Some(MaybeTls::Plain(tcp)) = slot.take() else {
                    return None;
                };
                match acceptor.accept(tcp).await {
                    Ok(tls) => *slot = Some(MaybeTls::Tls(Box::new(tls))),
                    Err(e) => {
                        tracing::info!(error = %e, "client TLS handshake failed");
                        return None;
                    }
                }
                hs.tls_established();
            }
            Step::Cancel {
                process_id,
                secret_key,
            } => {
                gateway.cancels.cancel(process_id, secret_key).await;
                return None;
            }
            Step::Authenticate { startup, token } => break (startup, token),
            Step::Close => return None,
        }
    };

    let principal = match authenticate(gateway, snapshot, &token).await {
        Ok(a) => a.into_principal(),
        Err(message) => {
            fatal(out, sqlstate::INVALID_AUTHORIZATION, &message);
            return None;
        }
    };
    // Verification allows clock skew past `exp`, but a session that lives
    // as long as its token would be cut the moment it opened.
    if snapshot.session_lifetime == SessionLifetime::Token
        && principal.expires_at <= SystemTime::now()
    {
        gateway.metrics.auth_failure("expired");
        fatal(
            out,
            sqlstate::INVALID_AUTHORIZATION,
            "airlock: token has expired",
        );
        return None;
    }
    drop(token);
    let span = tracing::Span::current();
    span.record("principal", principal.subject.as_str());

    let user = startup.param("user").unwrap_or_default();
    let database = startup.param("database").unwrap_or(user);
    let grants = if snapshot.access.needs_grants(&principal, database) {
        live_grants(gateway, &principal, database).await
    } else {
        Vec::new()
    };
    let route = match snapshot.access.route(&principal, database, user, &grants) {
        Ok(route) => route,
        Err(e) => {
            tracing::info!(error = %e, "no route");
            gateway.metrics.auth_failure("no_access");
            fatal(
                out,
                sqlstate::INVALID_AUTHORIZATION,
                &format!("airlock: {e}"),
            );
            return None;
        }
    };
    span.record("connection", route.connection.as_str());
    span.record("role", route.role.as_str());

    let conn = &snapshot.connections[&route.connection];
    let credential = &conn.roles[&route.role];
    let mut settings = params::check(&startup).unwrap_or_default();
    if route.mode == AccessMode::ReadOnly {
        // As for SET: pg_catalog first, or a user function could shadow a
        // built-in the analyzer trusts.
        if let Some((_, path)) = settings.iter().find(|(n, v)| {
            n.eq_ignore_ascii_case("search_path") && !airlock_sql::pg::harmless_search_path(v)
        }) {
            tracing::info!("session refused: a search_path that does not search pg_catalog first");
            fatal(
                out,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                &format!(
                    "airlock: startup parameter \"search_path\" = \"{path}\" is not allowed on a read-only route: pg_catalog must come first or not be named"
                ),
            );
            return None;
        }
        settings.push(("default_transaction_read_only".into(), "on".into()));
    }
    let started = Instant::now();
    let connected = tokio::time::timeout(
        snapshot.limits.upstream_connect_timeout,
        upstream::connect(&conn.target, credential, &settings),
    )
    .await;
    let (mut upstream, ready) = match connected {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            upstream_failed(out, &route, &e);
            return None;
        }
        Err(_) => {
            tracing::warn!("upstream login timed out");
            fatal(
                out,
                sqlstate::CONNECTION_FAILURE,
                &format!(
                    "airlock: connection \"{}\" is unavailable (timed out)",
                    route.connection
                ),
            );
            return None;
        }
    };
    gateway.metrics.upstream_login(started.elapsed());

    // A masked session needs the upstream's catalog before its first
    // statement; without it nothing could be masked, so the session is
    // refused.
    let timeout = snapshot.limits.upstream_connect_timeout;
    let catalog = if snapshot.masking.is_active() && !route.unmask {
        let read = crate::catalog::read(&mut upstream, &snapshot.masking.policy);
        match snapshot
            .catalogs
            .masking
            .get_or_read(&route.connection, timeout, read)
            .await
        {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the upstream catalog for masking");
                fatal(
                    out,
                    sqlstate::SYSTEM_ERROR,
                    &format!(
                        "airlock: connection \"{}\" cannot be masked: reading its catalog failed",
                        route.connection
                    ),
                );
                return None;
            }
        }
    } else {
        None
    };

    // A read-write session whose guardrails use row estimates reads the
    // unique keys that spare it most of them. Without them it fetches
    // estimates as before; an upstream left mid-answer refuses the session.
    let keys = if snapshot.guardrails.use_estimates() && route.mode != AccessMode::ReadOnly {
        let read = crate::catalog::read_keys(&mut upstream);
        match snapshot
            .catalogs
            .keys
            .get_or_read(&route.connection, timeout, read)
            .await
        {
            Ok(k) => Some(k),
            Err(e @ crate::catalog::CatalogError::Refused(_)) => {
                tracing::warn!(error = %e, "cannot read the upstream's unique keys; estimates are fetched");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the upstream's unique keys");
                fatal(
                    out,
                    sqlstate::SYSTEM_ERROR,
                    &format!(
                        "airlock: connection \"{}\" is unavailable: reading its catalog failed",
                        route.connection
                    ),
                );
                return None;
            }
        }
    } else {
        None
    };

    // Nothing runs unrecorded: the session's start is journaled before its
    // first statement can be.
    let recorder = match record_start(
        gateway, snapshot, slot, &principal, &route, &startup, id, peer,
    ) {
        Ok(r) => r,
        Err(why) => {
            tracing::error!(error = %why, "session refused: it cannot be recorded");
            fatal(
                out,
                sqlstate::SYSTEM_ERROR,
                "airlock: the audit journal cannot be written; airlock serves no session it cannot record",
            );
            return None;
        }
    };
    let recorder = SessionRecorder::new(
        recorder,
        id,
        snapshot.recording,
        Arc::clone(&snapshot.masking),
        // An exempt session reads no catalog; a cached one makes its
        // redaction precise.
        catalog
            .clone()
            .or_else(|| snapshot.catalogs.masking.fresh(&route.connection)),
        route.unmask,
    );

    let cancel = gateway.cancels.register(CancelTarget {
        host: conn.target.host.clone(),
        port: conn.target.port,
        process_id: ready.backend_key.map_or(0, |k| k.0),
        secret_key: ready.backend_key.map_or(0, |k| k.1),
    });
    welcome(
        out,
        &ready,
        &cancel,
        &route,
        &startup,
        id,
        conn.startup_notice,
    );
    tracing::info!(rule = %route.rule, mode = ?route.mode, "session opened");
    Some(Opened {
        id,
        principal,
        route,
        pending: input,
        parameters: ready.parameters,
        upstream,
        status: ready.status,
        cancel,
        catalog,
        keys,
        recorder,
    })
}

/// The principal's live grants on `connection`. A store that cannot be
/// asked grants nothing: JIT roles are refused, others unaffected.
async fn live_grants(
    gateway: &Gateway,
    principal: &airlock_policy::Principal,
    connection: &str,
) -> Vec<airlock_policy::Grant> {
    let Some(store) = gateway.approvals().and_then(|a| a.store()) else {
        tracing::warn!("just-in-time grants cannot be checked: no approvals store");
        return Vec::new();
    };
    match store
        .active_grants(&principal.issuer, &principal.subject, connection, now_ms())
        .await
    {
        Ok(rows) => rows
            .into_iter()
            .map(|row| airlock_policy::Grant {
                id: row.id.to_string(),
                connection: row.connection,
                role: row.role,
                expires_at: from_unix_ms(row.expires_ms.unwrap_or(0)),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "just-in-time grants cannot be checked");
            Vec::new()
        }
    }
}

/// Journals the session's start; the recorder to use from then on.
#[allow(clippy::too_many_arguments)]
fn record_start(
    gateway: &Gateway,
    snapshot: &Snapshot,
    slot: &Option<ClientStream>,
    principal: &airlock_policy::Principal,
    route: &Route,
    startup: &Startup,
    id: uuid::Uuid,
    peer: SocketAddr,
) -> Result<Arc<Recorder>, String> {
    let recorder = gateway
        .recorder
        .get()
        .ok_or("the gateway has no recorder")?;
    // A client-chosen string: the detectors see it like any text.
    let application_name = startup
        .param("application_name")
        .map(|a| snapshot.masking.detect_in(a).into_owned());
    let event = Event::now(Body::SessionStart(SessionStart {
        session: id,
        principal: principal.subject.clone(),
        issuer: principal.issuer.clone(),
        groups: principal.groups.clone(),
        act: principal.act.clone(),
        connection: route.connection.clone(),
        role: route.role.clone(),
        access_rule: route.rule.clone(),
        mode: route.mode.name().into(),
        unmask: route.unmask,
        client_addr: peer.to_string(),
        grant: route.grant.as_ref().map(|g| g.id.clone()),
        application_name,
        tls: matches!(slot, Some(MaybeTls::Tls(_))),
    }));
    recorder.record(&event).map_err(|e| e.to_string())?;
    Ok(Arc::clone(recorder))
}

async fn authenticate(
    gateway: &Gateway,
    snapshot: &Snapshot,
    token: &str,
) -> Result<Authenticated, String> {
    if token.is_empty() {
        gateway.metrics.auth_failure("no_token");
        return Err("airlock: no token: send an OIDC token as the password".into());
    }
    snapshot
        .verifier
        .verify(token, SystemTime::now())
        .await
        .map_err(|e| {
            tracing::info!(reason = e.reason(), "token refused");
            gateway.metrics.auth_failure(e.reason());
            format!("airlock: {e}")
        })
}

fn upstream_failed(out: &mut BytesMut, route: &Route, e: &ConnectError) {
    // The error's Display holds no credential and no upstream message text.
    tracing::warn!(error = %e, "upstream login failed");
    let message = match e {
        ConnectError::Login(_) => format!(
            "airlock: the upstream of connection \"{}\" refused airlock's login for role \"{}\"; an administrator must check the role's credential",
            route.connection, route.role
        ),
        _ => format!(
            "airlock: connection \"{}\" is unavailable",
            route.connection
        ),
    };
    fatal(out, e.sqlstate(), &message);
}

/// Reads the masking catalog again on the session's idle upstream, for a
/// masked session that created or met a relation its catalog does not know,
/// and shares it with the connection's next sessions. A catalog the
/// upstream refuses to give leaves the session's as it was (a relation it
/// does not know stays masked whole); an upstream left mid-answer ends the
/// session.
async fn refresh_catalog<C>(
    snapshot: &Snapshot,
    route: &Route,
    pump: &mut Pump<C, crate::stream::UpstreamStream, PolicyInspector>,
) -> Result<(), crate::catalog::CatalogError>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let read = tokio::time::timeout(
        snapshot.limits.upstream_connect_timeout,
        crate::catalog::read(&mut pump.upstream, &snapshot.masking.policy),
    )
    .await
    .unwrap_or(Err(crate::catalog::CatalogError::TimedOut));
    match read {
        Ok(catalog) => {
            let catalog = Arc::new(catalog);
            snapshot
                .catalogs
                .masking
                .insert(&route.connection, Arc::clone(&catalog));
            pump.inspector_mut().catalog_read(Some(catalog));
            tracing::debug!(took = ?started.elapsed(), "catalog read again");
            Ok(())
        }
        Err(e @ crate::catalog::CatalogError::Refused(_)) => {
            tracing::warn!(error = %e, "the upstream refused the catalog; unknown relations stay masked whole");
            pump.inspector_mut().catalog_read(None);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The client's login answer: AuthenticationOk, the upstream's parameters,
/// the gateway's own key, a notice naming the route, ReadyForQuery.
fn welcome(
    out: &mut BytesMut,
    ready: &airlock_pgwire::upstream::UpstreamReady,
    key: &CancelKey,
    route: &Route,
    startup: &Startup,
    id: uuid::Uuid,
    notice: StartupNotice,
) {
    codec::authentication_ok(out);
    for (name, value) in &ready.parameters {
        codec::parameter_status(name, value, out);
    }
    codec::backend_key_data(key.process_id, key.secret_key, out);
    let wanted = match notice {
        StartupNotice::Always => true,
        StartupNotice::WhenRoleDefaulted => route.role_defaulted,
        StartupNotice::Never => false,
    };
    if !wanted {
        codec::ready_for_query(ready.status, out);
        return;
    }
    let mode = route.mode.name();
    let mut message = format!(
        "airlock: connection \"{}\" as role \"{}\" ({mode}, rule \"{}\"), session {id}",
        route.connection, route.role, route.rule
    );
    if route.role_defaulted {
        let user = startup.param("user").unwrap_or_default();
        message.push_str(&format!(
            "; user \"{user}\" names no role profile, so your first allowed role is used"
        ));
    }
    codec::notice_message(&Notice::new(Severity::Notice, "00000", &message), out);
    codec::ready_for_query(ready.status, out);
}

/// Why a session was cut by airlock.
enum Cut {
    /// The token expired or the configured lifetime ended.
    Lifetime,
    /// The session's JIT grant expired or was revoked: why.
    Grant(String),
}

/// A statement held for approval, as the session waits for it.
struct Waiting {
    id: uuid::Uuid,
    decided: tokio::sync::oneshot::Receiver<Decided>,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    in_transaction: bool,
    request: HoldRequest,
}

/// Relays until the session ends, then closes both sides.
async fn run(
    gateway: &Gateway,
    snapshot: &Snapshot,
    client: ClientStream,
    out: BytesMut,
    opened: Opened,
) {
    let _active = gateway.metrics.session_started();
    let approvals = gateway.approvals().cloned();
    let mut inspector = PolicyInspector::new(SessionPolicy {
        analyzer: Arc::clone(&snapshot.analyzer),
        guardrails: Arc::clone(&snapshot.guardrails),
        mode: opened.route.mode,
        access_rule: opened.route.rule.clone(),
        masking: opened.catalog.map(|catalog| SessionMasking {
            masking: Arc::clone(&snapshot.masking),
            catalog,
        }),
        catalogs: Arc::clone(&snapshot.catalogs),
        keys: opened.keys,
        connection: opened.route.connection.clone(),
        recorder: Some(opened.recorder),
        approvals: approvals.is_some(),
    });
    for (name, value) in &opened.parameters {
        inspector.parameter_status(name, value);
    }
    let relay = Relay::new(inspector, snapshot.limits.max_message_size, opened.status);
    let mut pump = Pump::new(
        client,
        opened.upstream,
        relay,
        gateway.metrics.byte_counters(),
        opened.pending,
        out,
    );
    let lifetime_ends = match snapshot.session_lifetime {
        SessionLifetime::Token => Some(opened.principal.expires_at),
        SessionLifetime::Unlimited => None,
        SessionLifetime::Fixed(d) => SystemTime::now().checked_add(d),
    };
    let grant = opened.route.grant.as_ref();
    // The session ends with its grant, timed here; a revocation comes from
    // the approvals worker.
    let grant_ends = grant.map(|g| g.expires_at);
    let mut revoked = match (grant, &approvals) {
        (Some(g), Some(a)) => g.id.parse().ok().map(|id| a.watch_grant(id)),
        _ => None,
    };
    let ends_at = match (lifetime_ends, grant_ends) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let grant_first = grant_ends.is_some() && grant_ends == ends_at;
    let deadline = ends_at.map(|t| {
        let left = t.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + left
    });

    let mut waiting: Option<Waiting> = None;
    let end: Result<PumpEnd, Cut> = loop {
        tokio::select! {
            end = pump.run() => match end {
                PumpEnd::Idle => {
                    if let Err(e) = refresh_catalog(snapshot, &opened.route, &mut pump).await {
                        tracing::warn!(error = %e, "reading the catalog again failed");
                        break Ok(PumpEnd::Io(Side::Upstream, std::io::Error::other(e.to_string())));
                    }
                }
                PumpEnd::Held => {
                    let request = pump.inspector_mut().take_hold_request();
                    let in_transaction = pump.in_transaction();
                    match (request, &approvals) {
                        (Some(request), Some(a)) => {
                            match begin_hold(a, snapshot, &opened.principal, &opened.route, &mut pump, request, in_transaction).await {
                                Ok(w) => waiting = Some(w),
                                Err(outcome) => {
                                    pump.inspector_mut().decide_hold(outcome);
                                    if let Err(end) = pump.release() {
                                        break Ok(end);
                                    }
                                }
                            }
                        }
                        _ => {
                            pump.inspector_mut().decide_hold(HoldOutcome::Refused {
                                approval: None,
                                code: sqlstate::INSUFFICIENT_PRIVILEGE,
                                message: "airlock: approval required, but approvals are not configured; the statement was not run".into(),
                            });
                            if let Err(end) = pump.release() {
                                break Ok(end);
                            }
                        }
                    }
                }
                end => break Ok(end),
            },
            decided = hold_ended(&mut waiting) => {
                let w = waiting.take().expect("a hold ended");
                let a = approvals.as_ref().expect("holds need approvals");
                let outcome = end_hold(a, &opened.route, &mut pump, w, decided).await;
                pump.inspector_mut().decide_hold(outcome);
                if let Err(end) = pump.release() {
                    break Ok(end);
                }
            }
            _ = sleep_until(deadline) => break Err(if grant_first {
                Cut::Grant(format!(
                    "your just-in-time grant {} expired",
                    grant.map_or("", |g| g.id.as_str())
                ))
            } else {
                Cut::Lifetime
            }),
            why = grant_revoked(&mut revoked) => break Err(Cut::Grant(why)),
        }
    };
    if let (Some(w), Some(a)) = (waiting, &approvals) {
        let why = match &end {
            Err(_) => "the session was cut",
            Ok(_) => "the client disconnected",
        };
        cancel_hold(a, &opened.route, &pump, &w, why).await;
    }
    // Whether the session ends while the client still expects answers: a
    // statement the upstream is running must then be cancelled, or it would
    // run on (and commit) after the session is gone.
    let reason: String = match &end {
        Err(Cut::Lifetime) => match snapshot.session_lifetime {
            SessionLifetime::Token => "token expired".into(),
            _ => "session lifetime reached".into(),
        },
        Err(Cut::Grant(why)) => why.clone(),
        Ok(PumpEnd::Terminated) => "client closed".into(),
        Ok(PumpEnd::ClientClosed) => "client went away".into(),
        Ok(PumpEnd::UpstreamClosed) => "upstream closed".into(),
        Ok(PumpEnd::Io(Side::Client, _)) => "client socket error".into(),
        Ok(PumpEnd::Io(Side::Upstream, _)) => "upstream socket error".into(),
        Ok(PumpEnd::Protocol(Side::Client, _)) => "client protocol violation".into(),
        Ok(PumpEnd::Protocol(Side::Upstream, _)) => "upstream protocol violation".into(),
        Ok(PumpEnd::Held | PumpEnd::Idle) => unreachable!("neither ends the session"),
    };
    if let Some(recorder) = gateway.recorder.get() {
        let event = Event::now(Body::SessionEnd(SessionEnd {
            session: opened.id,
            reason,
            statements: pump.inspector().statements_recorded(),
        }));
        if let Err(e) = recorder.record(&event) {
            tracing::error!(error = %e, "a session's end could not be recorded");
        }
    }
    let abandoned = match &end {
        Err(Cut::Lifetime) => {
            let why = match snapshot.session_lifetime {
                SessionLifetime::Token => "your token expired; reconnect with a fresh token",
                _ => "the session reached its configured lifetime (identity.session_lifetime)",
            };
            tracing::info!(reason = why, "session lifetime reached");
            let message = format!("airlock: session ended: {why}");
            fatal(pump.to_client(), sqlstate::INVALID_AUTHORIZATION, &message);
            true
        }
        Err(Cut::Grant(why)) => {
            tracing::info!(reason = %why, "session cut: its grant ended");
            let message = format!("airlock: session ended: {why}");
            fatal(pump.to_client(), sqlstate::INVALID_AUTHORIZATION, &message);
            true
        }
        Ok(PumpEnd::Terminated) => {
            tracing::info!("session closed by the client");
            false
        }
        Ok(PumpEnd::ClientClosed) => {
            tracing::info!("client went away");
            true
        }
        Ok(PumpEnd::UpstreamClosed) => {
            tracing::info!("session closed by the upstream");
            false
        }
        Ok(PumpEnd::Io(side, e)) => {
            tracing::info!(?side, error = %e, "session ended by a socket error");
            *side == Side::Client
        }
        Ok(PumpEnd::Protocol(side, e)) => {
            tracing::warn!(?side, error = %e, "protocol violation");
            let message = match side {
                Side::Client => format!("airlock: {e}"),
                Side::Upstream => {
                    format!("airlock: the upstream sent an unacceptable message: {e}")
                }
            };
            fatal(pump.to_client(), e.sqlstate(), &message);
            *side == Side::Client
        }
        Ok(PumpEnd::Held | PumpEnd::Idle) => false,
    };
    if abandoned && pump.upstream_busy() {
        let key = &opened.cancel;
        gateway.cancels.cancel(key.process_id, key.secret_key).await;
    }
    pump.close_upstream().await;
    pump.close_client().await;
}

type SessionPump = Pump<ClientStream, crate::stream::UpstreamStream, PolicyInspector>;

/// Resolves when the held statement is decided or its time is up
/// (`Err`); never without one.
async fn hold_ended(
    waiting: &mut Option<Waiting>,
) -> Result<Result<Decided, tokio::sync::oneshot::error::RecvError>, tokio::time::error::Elapsed> {
    match waiting {
        Some(w) => tokio::time::timeout_at(w.deadline, &mut w.decided).await,
        None => std::future::pending().await,
    }
}

/// Resolves with why, when the session's grant is revoked.
async fn grant_revoked(watch: &mut Option<tokio::sync::watch::Receiver<Option<String>>>) -> String {
    if let Some(rx) = watch {
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending().await
}

/// An approval event of this session's held statement.
fn approval_event(
    route: &Route,
    principal: Option<&airlock_policy::Principal>,
    id: uuid::Uuid,
    action: &str,
    request: &HoldRequest,
) -> airlock_audit::event::Approval {
    airlock_audit::event::Approval {
        id,
        request: "statement".into(),
        action: action.into(),
        seq: request.seq,
        rule: request.rule.clone(),
        connection: route.connection.clone(),
        role: route.role.clone(),
        requester: principal.map(|p| p.subject.clone()),
        act: principal.and_then(|p| p.act.clone()),
        ..Default::default()
    }
}

/// Creates the approval of a held statement, tells the client, and starts
/// waiting; `Err` is the outcome when it cannot be held (nothing runs).
#[allow(clippy::too_many_arguments)]
async fn begin_hold(
    approvals: &Approvals,
    snapshot: &Snapshot,
    principal: &airlock_policy::Principal,
    route: &Route,
    pump: &mut SessionPump,
    request: HoldRequest,
    in_transaction: bool,
) -> Result<Waiting, HoldOutcome> {
    let id = uuid::Uuid::new_v4();
    let unavailable = |what: &str| HoldOutcome::Refused {
        approval: Some(id),
        code: sqlstate::SYSTEM_ERROR,
        message: format!(
            "airlock: approval required (rule \"{}\"), but {what}; the statement was not run",
            request.rule
        ),
    };
    let Some(store) = approvals.store() else {
        tracing::warn!("statement needs approval, but the store is not connected");
        return Err(unavailable("the approvals store is unavailable"));
    };
    let timeout = if in_transaction {
        snapshot.approvals.in_transaction
    } else {
        snapshot.approvals.idle
    };
    let created = now_ms();
    let deadline_ms = created + timeout.as_millis() as i64;
    let session = pump.inspector().session();
    let mut event = approval_event(route, Some(principal), id, "requested", &request);
    event.approvers = request.approvers.clone();
    event.min_approvals = Some(request.min_approvals);
    event.estimate = request.estimate;
    event.until = Some(rfc3339_ms(deadline_ms));
    // Journaled before anyone can act on it.
    if let Err(e) = pump.inspector().record_approval(event) {
        tracing::error!(error = %e, "a hold cannot be recorded");
        return Err(HoldOutcome::Refused {
            approval: None,
            code: sqlstate::SYSTEM_ERROR,
            message: "airlock: the statement was not run because airlock cannot record it; airlock runs nothing it does not record".into(),
        });
    }
    let detail = serde_json::json!({
        "statement": request.text,
        "parameters": request.params,
        "kinds": request.kinds,
        "effects": request.effects,
        "estimated_rows": request.estimate,
        "in_transaction": in_transaction,
        "timeout_seconds": timeout.as_secs(),
    });
    let row = airlock_store::NewApproval {
        id,
        kind: airlock_store::ApprovalKind::Statement,
        requester_issuer: principal.issuer.clone(),
        requester_subject: principal.subject.clone(),
        requester_act: principal.act.clone(),
        connection: route.connection.clone(),
        role: route.role.clone(),
        rule: request.rule.clone(),
        approvers: request.approvers.clone(),
        min_approvals: request.min_approvals,
        detail: detail.to_string(),
        session_id: session,
        gateway: Some(approvals.gateway),
        created_ms: created,
        deadline_ms: Some(deadline_ms),
        duration_ms: None,
    };
    if let Err(e) = store.create_approval(&row).await {
        tracing::warn!(error = %e, "an approval could not be stored");
        let mut cancelled = approval_event(route, None, id, "cancelled", &request);
        cancelled.reason = Some("the approvals store is unavailable".into());
        let _ = pump.inspector().record_approval(cancelled);
        return Err(unavailable("the approvals store is unavailable"));
    }
    tracing::info!(approval = %id, rule = %request.rule, in_transaction, "statement held for approval");
    codec::notice_message(
        &Notice::new(
            Severity::Notice,
            "00000",
            &format!(
                "airlock: statement held for approval {id} (rule {}); approve with: airlock approvals approve {id}",
                request.rule
            ),
        ),
        pump.to_client(),
    );
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.requested",
        data: serde_json::json!({
            "id": id,
            "rule": request.rule,
            "connection": route.connection,
            "role": route.role,
            "requester": principal.subject,
            "act": principal.act,
            "approvers": request.approvers,
            "min_approvals": request.min_approvals,
            "statement": request.text,
            "kinds": request.kinds,
            "estimated_rows": request.estimate,
            "session": session,
            "deadline": rfc3339_ms(deadline_ms),
        }),
        summary: format!(
            "airlock: {}{} asks to run a statement on {} (rule {}): approve with `airlock approvals approve {id}`",
            principal.subject,
            principal
                .act
                .as_deref()
                .map(|a| format!(" (for {a})"))
                .unwrap_or_default(),
            route.connection,
            request.rule
        ),
    });
    Ok(Waiting {
        id,
        decided: approvals.wait(id),
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        in_transaction,
        request,
    })
}

/// Settles a hold that was decided or timed out: the outcome the held
/// message gets.
async fn end_hold(
    approvals: &Approvals,
    route: &Route,
    pump: &mut SessionPump,
    w: Waiting,
    decided: Result<
        Result<Decided, tokio::sync::oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
) -> HoldOutcome {
    let id = w.id;
    let decided = match decided {
        Ok(Ok(d)) => d,
        // Timed out (or the worker is gone): time it out in the store,
        // unless a decision won the race.
        _ => {
            let reason = format!(
                "nobody decided within {} ({})",
                humantime::format_duration(w.timeout),
                if w.in_transaction {
                    "approvals.timeout_in_transaction"
                } else {
                    "approvals.timeout"
                }
            );
            approvals
                .finish(id, ApprovalStatus::TimedOut, &reason)
                .await
        }
    };
    let mut event = approval_event(route, None, id, decided.status.as_str(), &w.request);
    event.by = decided.by.clone();
    event.reason = decided.reason.clone();
    let recorded = pump.inspector().record_approval(event);
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.decided",
        data: serde_json::json!({
            "id": id,
            "status": decided.status.as_str(),
            "by": decided.by,
            "reason": decided.reason,
            "rule": w.request.rule,
            "connection": route.connection,
        }),
        summary: format!(
            "airlock: approval {id} {}{}",
            decided.status.as_str().replace('_', " "),
            decided
                .by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default()
        ),
    });
    tracing::info!(approval = %id, status = decided.status.as_str(), "hold ended");
    let because = decided
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match decided.status {
        ApprovalStatus::Approved => match recorded {
            Ok(()) => HoldOutcome::Approved { approval: id },
            Err(e) => {
                tracing::error!(error = %e, "an approval cannot be recorded");
                HoldOutcome::Refused {
                    approval: Some(id),
                    code: sqlstate::SYSTEM_ERROR,
                    message: "airlock: the statement was not run because airlock cannot record it; airlock runs nothing it does not record".into(),
                }
            }
        },
        ApprovalStatus::Denied => HoldOutcome::Refused {
            approval: Some(id),
            code: sqlstate::INSUFFICIENT_PRIVILEGE,
            message: format!(
                "airlock: statement not run: approval {id} was denied by {}{because}",
                decided.by.as_deref().unwrap_or("an approver")
            ),
        },
        ApprovalStatus::TimedOut => HoldOutcome::Refused {
            approval: Some(id),
            code: sqlstate::INSUFFICIENT_PRIVILEGE,
            message: format!("airlock: statement not run: approval {id} timed out{because}"),
        },
        other => HoldOutcome::Refused {
            approval: Some(id),
            code: sqlstate::INSUFFICIENT_PRIVILEGE,
            message: format!(
                "airlock: statement not run: approval {id} is {}{because}",
                other.as_str().replace('_', " ")
            ),
        },
    }
}

/// Marks a hold whose session ended cancelled.
async fn cancel_hold(
    approvals: &Approvals,
    route: &Route,
    pump: &SessionPump,
    w: &Waiting,
    why: &str,
) {
    // A decision may have won the race: the event says how it ended.
    let decided = approvals.finish(w.id, ApprovalStatus::Cancelled, why).await;
    let status = decided.status.as_str();
    tracing::info!(approval = %w.id, status, "held statement's session ended");
    let mut event = approval_event(route, None, w.id, status, &w.request);
    event.by = decided.by;
    event.reason = decided.reason.clone();
    let _ = pump.inspector().record_approval(event);
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.decided",
        data: serde_json::json!({"id": w.id, "status": status, "reason": decided.reason}),
        summary: format!(
            "airlock: approval {} {}: {why}",
            w.id,
            status.replace('_', " ")
        ),
    });
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
