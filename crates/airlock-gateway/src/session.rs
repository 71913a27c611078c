//! One client session, from accept to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use airlock_config::SessionLifetime;
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
use crate::cancel::{CancelKey, CancelTarget};
use crate::inspect::{PolicyInspector, SessionMasking, SessionPolicy};
use crate::pump::{Pump, PumpEnd, Side};
use crate::record::SessionRecorder;
use crate::snapshot::Snapshot;
use crate::stream::{ClientStream, MaybeTls};
use crate::upstream::{self, ConnectError};

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
    let route = match snapshot.access.route(&principal, database, user) {
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
    let catalog = if snapshot.masking.is_active() && !route.unmask {
        match snapshot.catalogs.fresh(&route.connection) {
            Some(c) => Some(c),
            None => match tokio::time::timeout(
                snapshot.limits.upstream_connect_timeout,
                crate::catalog::read(&mut upstream, &snapshot.masking.policy),
            )
            .await
            .unwrap_or_else(|_| Err(crate::catalog::CatalogError::TimedOut))
            {
                Ok(c) => {
                    let c = Arc::new(c);
                    snapshot.catalogs.insert(&route.connection, Arc::clone(&c));
                    Some(c)
                }
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
            },
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
            .or_else(|| snapshot.catalogs.fresh(&route.connection)),
        route.unmask,
    );

    let cancel = gateway.cancels.register(CancelTarget {
        host: conn.target.host.clone(),
        port: conn.target.port,
        process_id: ready.backend_key.map_or(0, |k| k.0),
        secret_key: ready.backend_key.map_or(0, |k| k.1),
    });
    welcome(out, &ready, &cancel, &route, &startup, id);
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
        recorder,
    })
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

/// The client's login answer: AuthenticationOk, the upstream's parameters,
/// the gateway's own key, a notice naming the route, ReadyForQuery.
fn welcome(
    out: &mut BytesMut,
    ready: &airlock_pgwire::upstream::UpstreamReady,
    key: &CancelKey,
    route: &Route,
    startup: &Startup,
    id: uuid::Uuid,
) {
    codec::authentication_ok(out);
    for (name, value) in &ready.parameters {
        codec::parameter_status(name, value, out);
    }
    codec::backend_key_data(key.process_id, key.secret_key, out);
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

/// Relays until the session ends, then closes both sides.
async fn run(
    gateway: &Gateway,
    snapshot: &Snapshot,
    client: ClientStream,
    out: BytesMut,
    opened: Opened,
) {
    let _active = gateway.metrics.session_started();
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
        connection: opened.route.connection.clone(),
        recorder: Some(opened.recorder),
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
    let ends_at = match snapshot.session_lifetime {
        SessionLifetime::Token => Some(opened.principal.expires_at),
        SessionLifetime::Unlimited => None,
        SessionLifetime::Fixed(d) => SystemTime::now().checked_add(d),
    };
    let deadline = ends_at.map(|t| {
        let left = t.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let end = tokio::select! {
        end = pump.run() => Some(end),
        _ = sleep_until(deadline) => None,
    };
    // Whether the session ends while the client still expects answers: a
    // statement the upstream is running must then be cancelled, or it would
    // run on (and commit) after the session is gone.
    let reason: &str = match &end {
        None => match snapshot.session_lifetime {
            SessionLifetime::Token => "token expired",
            _ => "session lifetime reached",
        },
        Some(PumpEnd::Terminated) => "client closed",
        Some(PumpEnd::ClientClosed) => "client went away",
        Some(PumpEnd::UpstreamClosed) => "upstream closed",
        Some(PumpEnd::Io(Side::Client, _)) => "client socket error",
        Some(PumpEnd::Io(Side::Upstream, _)) => "upstream socket error",
        Some(PumpEnd::Protocol(Side::Client, _)) => "client protocol violation",
        Some(PumpEnd::Protocol(Side::Upstream, _)) => "upstream protocol violation",
    };
    if let Some(recorder) = gateway.recorder.get() {
        let event = Event::now(Body::SessionEnd(SessionEnd {
            session: opened.id,
            reason: reason.into(),
            statements: pump.inspector().statements_recorded(),
        }));
        if let Err(e) = recorder.record(&event) {
            tracing::error!(error = %e, "a session's end could not be recorded");
        }
    }
    let abandoned = match &end {
        None => {
            let why = match snapshot.session_lifetime {
                SessionLifetime::Token => "your token expired; reconnect with a fresh token",
                _ => "the session reached its configured lifetime (identity.session_lifetime)",
            };
            tracing::info!(reason = why, "session lifetime reached");
            let message = format!("airlock: session ended: {why}");
            fatal(pump.to_client(), sqlstate::INVALID_AUTHORIZATION, &message);
            true
        }
        Some(PumpEnd::Terminated) => {
            tracing::info!("session closed by the client");
            false
        }
        Some(PumpEnd::ClientClosed) => {
            tracing::info!("client went away");
            true
        }
        Some(PumpEnd::UpstreamClosed) => {
            tracing::info!("session closed by the upstream");
            false
        }
        Some(PumpEnd::Io(side, e)) => {
            tracing::info!(?side, error = %e, "session ended by a socket error");
            *side == Side::Client
        }
        Some(PumpEnd::Protocol(side, e)) => {
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
    };
    if abandoned && pump.upstream_busy() {
        let key = &opened.cancel;
        gateway.cancels.cancel(key.process_id, key.secret_key).await;
    }
    pump.close_upstream().await;
    pump.close_client().await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
