//! One client session, from accept to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use airlock_config::StartupNotice;
use airlock_engine::hold::{self, HoldOutcome, Holder, Waiting};
use airlock_engine::open::{self, Authorized, Cut};
use airlock_engine::recording::RecordingSession;
use airlock_pgwire::codec::{self, Notice, Severity, Startup};
use airlock_pgwire::relay::{Inspector, Relay};
use airlock_pgwire::startup::{ClientHandshake, Step, fatal, fatal_hinted};
use airlock_pgwire::{params, sqlstate};
use airlock_policy::{AccessMode, Route, judge};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, field};

use crate::Gateway;
use crate::cancel::{CancelKey, CancelTarget};
use crate::inspect::{PolicyInspector, SessionMasking, SessionPolicy};
use crate::lifetime::{cut_at, told};
use crate::pump::{Pump, PumpEnd, Side};
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
    authorized: Authorized,
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
    recorder: RecordingSession,
    /// The session's place under the per-principal and per-connection caps.
    permit: airlock_engine::limits::Permit,
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

    let user = startup.param("user").unwrap_or_default();
    let database = startup.param("database").unwrap_or(user);
    let policy = open::Policy {
        verifier: &snapshot.verifier,
        access: &snapshot.access,
        lifetime: snapshot.session_lifetime,
        approvals: gateway.approvals().map(|a| &**a),
    };
    let request = open::Request {
        token: &token,
        connection: database,
        role: user,
    };
    let authorized = match open::authorize(&policy, &request, gateway.clock().now()).await {
        Ok(a) => a,
        Err(refused) => {
            gateway.metrics.auth_failure(refused.reason());
            let hint = refused.hint().to_json();
            fatal_hinted(
                out,
                sqlstate::INVALID_AUTHORIZATION,
                refused.message(),
                &hint,
            );
            return None;
        }
    };
    drop(token);
    let route = &authorized.route;
    let span = tracing::Span::current();
    span.record("connection", route.connection.as_str());
    span.record("role", route.role.as_str());

    let conn = &snapshot.connections[&route.connection];
    if conn.protocol != airlock_config::Protocol::Postgres {
        gateway.metrics.auth_failure("wrong_door");
        let hint = airlock_policy::Hint::never(
            "connection",
            "connect with a MySQL client to airlock's MySQL listener",
        );
        fatal_hinted(
            out,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "airlock: connection \"{}\" is a MySQL connection; connect to airlock's MySQL listener",
                route.connection
            ),
            &hint.to_json(),
        );
        return None;
    }
    let permit = match gateway.admit(snapshot, &authorized, "postgres") {
        Ok(p) => p,
        Err(exceeded) => {
            let hint = exceeded.hint().to_json();
            fatal_hinted(
                out,
                sqlstate::TOO_MANY_CONNECTIONS,
                &exceeded.message(),
                &hint,
            );
            return None;
        }
    };
    let credential = &conn.roles[&route.role];
    let mut settings = params::check(&startup).unwrap_or_default();
    // As for SET: pg_catalog first, or a user function could shadow a
    // built-in the analyzer trusts; and within the access rule's ceiling
    // on statement_timeout, every one the client gave (PostgreSQL applies
    // them in order).
    let refusal = settings.iter().find_map(|(name, value)| {
        let harmless = !name.eq_ignore_ascii_case("search_path")
            || airlock_sql::pg::harmless_search_path(value);
        let why = "pg_catalog must come first or not be named";
        judge::setting(route.mode, name, value, harmless, why).or_else(|| {
            let ceiling = route
                .statement_timeout
                .filter(|_| name.eq_ignore_ascii_case("statement_timeout"))?;
            judge::timeout_refusal(ceiling, airlock_sql::pg::timeout_change(value))
        })
    });
    if let Some(denial) = refusal {
        tracing::info!(rule = ?denial.rule(), "session refused by a startup parameter");
        let hint = denial.hint.to_json();
        fatal_hinted(
            out,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            &denial.message,
            &hint,
        );
        return None;
    }
    // The session starts with the ceiling unless it gave a (lower) value
    // of its own, which RESET goes back to; the judge keeps every SET
    // within it.
    if let Some(ceiling) = route.statement_timeout
        && !settings
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("statement_timeout"))
    {
        settings.push((
            "statement_timeout".into(),
            format!("{}ms", ceiling.as_millis()),
        ));
    }
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
            upstream_failed(out, route, &e);
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
    // refused. A read-write session whose guardrails use row estimates reads
    // the unique keys that spare it most of them (without them it fetches
    // estimates); an upstream left mid-answer refuses the session.
    let read = crate::catalog::read(&mut upstream, &snapshot.masking.policy);
    let Ok(catalog) = crate::catalog::for_masking(snapshot, route, read).await else {
        fatal(
            out,
            sqlstate::SYSTEM_ERROR,
            &format!(
                "airlock: connection \"{}\" cannot be masked: reading its catalog failed",
                route.connection
            ),
        );
        return None;
    };
    let read = crate::catalog::read_keys(&mut upstream);
    let Ok(keys) = crate::catalog::for_bounds(snapshot, route, read).await else {
        fatal(
            out,
            sqlstate::SYSTEM_ERROR,
            &format!(
                "airlock: connection \"{}\" is unavailable: reading its catalog failed",
                route.connection
            ),
        );
        return None;
    };

    // Nothing runs unrecorded: the session's start is journaled before its
    // first statement can be.
    let client = open::Client {
        door: airlock_audit::event::Door::Postgres,
        addr: peer.to_string(),
        tls: matches!(slot, Some(MaybeTls::Tls(_))),
        application_name: startup.param("application_name"),
    };
    let recorder = match gateway.recorder.get() {
        Some(recorder) => open::start(recorder, &snapshot.masking, id, &authorized, &client)
            .map(|()| Arc::clone(recorder))
            .map_err(|e| e.to_string()),
        None => Err("the gateway has no recorder".into()),
    };
    let recorder = match recorder {
        Ok(r) => r,
        Err(why) => {
            tracing::error!(error = %why, "session refused: it cannot be recorded");
            fatal_hinted(
                out,
                sqlstate::SYSTEM_ERROR,
                "airlock: the audit journal cannot be written; airlock serves no session it cannot record",
                &airlock_engine::hold::unrecorded_hint().to_json(),
            );
            return None;
        }
    };
    let recorder = snapshot.recording(
        recorder,
        id,
        airlock_audit::event::Door::Postgres,
        route,
        catalog.as_ref(),
        airlock_sql::literals::value_spans,
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
        route,
        &startup,
        id,
        conn.startup_notice,
    );
    tracing::info!(rule = %route.rule, mode = ?route.mode, "session opened");
    Some(Opened {
        id,
        authorized,
        pending: input,
        parameters: ready.parameters,
        upstream,
        status: ready.status,
        cancel,
        catalog,
        keys,
        recorder,
        permit,
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
    let mode = match route.schema_only {
        Some(_) => "schema-only",
        None => route.mode.name(),
    };
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
    let _active = gateway.metrics.session_started("postgres");
    let approvals = gateway.approvals().cloned();
    let (principal, route) = (&opened.authorized.principal, &opened.authorized.route);
    let trail = opened.recorder.trail();
    let mut inspector = PolicyInspector::new(SessionPolicy {
        analyzer: Arc::clone(&snapshot.analyzer),
        guardrails: Arc::clone(&snapshot.guardrails),
        mode: route.mode,
        access_rule: route.rule.clone(),
        writes: route.writes.clone(),
        schema_only: route.schema_only,
        statement_timeout: route.statement_timeout,
        masking: opened.catalog.map(|catalog| SessionMasking {
            masking: Arc::clone(&snapshot.masking),
            catalog,
        }),
        catalogs: Arc::clone(&snapshot.catalogs),
        keys: opened.keys,
        connection: route.connection.clone(),
        recorder: Some(opened.recorder),
        approvals: approvals.is_some(),
        budget: opened.permit.budget(),
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
    pump.set_message_timeout(snapshot.limits.message_timeout);
    let clock = gateway.clock();
    let deadline = open::deadline(&opened.authorized, snapshot.session_lifetime, clock.now());
    // A revocation comes from the approvals worker.
    let mut revoked = match (&route.grant, &approvals) {
        (Some(g), Some(a)) => g.id.parse().ok().map(|id| a.watch_grant(id)),
        _ => None,
    };

    let mut terminate = gateway.terminate.subscribe();
    let mut tracked = gateway.track(opened.id);
    let mut waiting: Option<Waiting> = None;
    let end: Result<PumpEnd, Cut> = loop {
        tokio::select! {
            end = pump.run() => match end {
                PumpEnd::Idle => {
                    if let Err(e) = refresh_catalog(snapshot, route, &mut pump).await {
                        tracing::warn!(error = %e, "reading the catalog again failed");
                        break Ok(PumpEnd::Io(Side::Upstream, std::io::Error::other(e.to_string())));
                    }
                }
                PumpEnd::Held => {
                    let request = pump.inspector_mut().take_hold_request();
                    let in_transaction = pump.in_transaction();
                    let begun = match (request, &approvals) {
                        (Some(request), Some(a)) => {
                            let holder = Holder { approvals: a, principal, route, trail: Some(&trail) };
                            hold::begin(&holder, snapshot.approvals, request, in_transaction).await
                        }
                        // The judge holds nothing without approvals.
                        (request, _) => Err(HoldOutcome::Unavailable {
                            approval: None,
                            rule: request.map(|r| r.rule).unwrap_or_default(),
                            what: "approvals are not configured",
                        }),
                    };
                    match begun {
                        Ok(w) => {
                            let text = hold::held_notice(&w);
                            let notice = Notice::new(Severity::Notice, "00000", &text);
                            codec::notice_message(&notice, pump.client_out());
                            waiting = Some(w);
                        }
                        Err(outcome) => {
                            pump.inspector_mut().decide_hold(outcome);
                            if let Err(end) = pump.release() {
                                break Ok(end);
                            }
                        }
                    }
                }
                end => break Ok(end),
            },
            wait = hold_ended(&mut waiting) => {
                let w = waiting.take().expect("a hold ended");
                let a = approvals.as_ref().expect("holds need approvals");
                let holder = Holder { approvals: a, principal, route, trail: Some(&trail) };
                let outcome = hold::end(&holder, w, wait).await;
                pump.inspector_mut().decide_hold(outcome);
                if let Err(end) = pump.release() {
                    break Ok(end);
                }
            }
            why = cut_at(&*clock, &deadline, &mut terminate) => break Err(why),
            why = told(&mut revoked) => break Err(Cut::Grant(why)),
            why = told(&mut tracked.ended) => break Err(Cut::Terminated(why)),
        }
    };
    // No longer live: an administrator cannot end it now.
    drop(tracked);
    let ending = match &end {
        Ok(PumpEnd::Ended) => pump.inspector_mut().take_ending(),
        _ => None,
    };
    if let (Some(w), Some(a)) = (waiting, &approvals) {
        let why = match &end {
            Err(_) => "the session was cut",
            Ok(PumpEnd::Stalled) => "the client stalled mid-message",
            Ok(PumpEnd::Ended) => "the session reached a limit",
            Ok(_) => "the client disconnected",
        };
        let holder = Holder {
            approvals: a,
            principal,
            route,
            trail: Some(&trail),
        };
        hold::cancel(&holder, w, why).await;
    }
    let reason: String = match &end {
        Err(cut) => cut.reason(),
        Ok(PumpEnd::Terminated) => "client closed".into(),
        Ok(PumpEnd::ClientClosed) => "client went away".into(),
        Ok(PumpEnd::UpstreamClosed) => "upstream closed".into(),
        Ok(PumpEnd::Io(Side::Client, _)) => "client socket error".into(),
        Ok(PumpEnd::Io(Side::Upstream, _)) => "upstream socket error".into(),
        Ok(PumpEnd::Protocol(Side::Client, _)) => "client protocol violation".into(),
        Ok(PumpEnd::Protocol(Side::Upstream, _)) => "upstream protocol violation".into(),
        Ok(PumpEnd::Stalled) => "client stalled mid-message".into(),
        Ok(PumpEnd::Ended) => ending
            .as_ref()
            .map_or("a limit was reached", |e| e.rule())
            .into(),
        Ok(PumpEnd::Held | PumpEnd::Idle) => unreachable!("neither ends the session"),
    };
    if let Some(recorder) = gateway.recorder.get() {
        open::end(
            recorder,
            opened.id,
            reason,
            pump.inspector().statements_recorded(),
        );
    }
    // Whether the session ends while the client still expects answers: a
    // statement the upstream is running must then be cancelled, or it would
    // run on (and commit) after the session is gone.
    let abandoned = match &end {
        Err(cut) => {
            tracing::info!(reason = %cut.reason(), "session cut");
            let code = match cut {
                Cut::Shutdown | Cut::Terminated(_) => sqlstate::ADMIN_SHUTDOWN,
                _ => sqlstate::INVALID_AUTHORIZATION,
            };
            fatal(pump.client_out(), code, &cut.message());
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
            fatal(pump.client_out(), e.sqlstate(), &message);
            *side == Side::Client
        }
        Ok(PumpEnd::Stalled) => {
            tracing::info!("the client stalled mid-message");
            let message = format!(
                "airlock: session ended: a message stayed incomplete for {:?} (limits.message_timeout)",
                snapshot.limits.message_timeout
            );
            fatal(pump.client_out(), sqlstate::IDLE_SESSION_TIMEOUT, &message);
            true
        }
        Ok(PumpEnd::Ended) => {
            if let Some(e) = &ending {
                tracing::info!(limit = e.rule(), "session ended by a limit");
                let message = e.message();
                fatal_hinted(
                    pump.client_out(),
                    sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    &message,
                    &e.hint().to_json(),
                );
            }
            true
        }
        Ok(PumpEnd::Held | PumpEnd::Idle) => false,
    };
    if abandoned && pump.upstream_busy() {
        let key = &opened.cancel;
        gateway.cancels.cancel(key.process_id, key.secret_key).await;
    }
    pump.close_upstream().await;
    // A client that reads nothing more does not keep the session.
    let _ = tokio::time::timeout(crate::CLOSE_TIMEOUT, pump.close_client()).await;
}

/// Resolves when the held statement is decided or its time is up; never
/// without one.
async fn hold_ended(waiting: &mut Option<Waiting>) -> hold::Wait {
    match waiting {
        Some(w) => w.decided().await,
        None => std::future::pending().await,
    }
}
