//! One MySQL client session, from accept to close: the connection phase
//! (token through `mysql_clear_password`), the engine's `authorize`, the
//! upstream login, then commands one at a time: each COM_QUERY is judged
//! (the same judge as every door), recorded before it goes upstream, held
//! when a person must approve it, and its answer streamed back with rows
//! masked by the same plan as every door's.

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_audit::event::{Decision as Recorded, Door, Protocol};
use airlock_engine::hold::{self, HoldOutcome, HoldRequest, Holder, Refusal};
use airlock_engine::open::{self, Authorized, Cut};
use airlock_engine::recording::{At, Judgement, Params, RecordingSession};
use airlock_mywire::codec::{self, Framer, command, status};
use airlock_mywire::errno;
use airlock_mywire::handshake::{ClientHandshake, Greeting, Step, TlsOffer};
use airlock_mywire::response::{Expect, Part, Response};
use airlock_policy::guardrails::Estimate;
use airlock_policy::judge::{self, Ruling};
use airlock_policy::masking::{FieldOrigin, SensitiveCatalog};
use airlock_policy::{AccessMode, Hint, Statement};
use bytes::BytesMut;
use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, field};

use super::mask::RowMask;
use super::upstream::{self, ConnectError};
use crate::Gateway;
use crate::snapshot::Snapshot;
use crate::stream::{ClientStream, MaybeTls, UpstreamStream};

/// The server's default collation when the probe said nothing:
/// utf8mb4_general_ci.
pub(crate) const UTF8MB4: u8 = 45;

/// Serves one accepted client connection.
pub(crate) async fn serve(gateway: Arc<Gateway>, tcp: TcpStream, peer: SocketAddr, loopback: bool) {
    let id = uuid::Uuid::now_v7();
    let span = tracing::info_span!(
        "session",
        door = "mysql",
        id = %id,
        peer = %peer,
        connection = field::Empty,
        role = field::Empty,
    );
    async move {
        let _ = tcp.set_nodelay(true);
        let snapshot = gateway.snapshot();
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
        match opened {
            Ok(Some(session)) => run(&gateway, &snapshot, client, out, session).await,
            Ok(None) => {
                let _ = client.write_all(&out).await;
                let _ = client.shutdown().await;
            }
            Err(_) => {
                tracing::info!("startup timed out");
                let _ = client.shutdown().await;
            }
        }
    }
    .instrument(span)
    .await
}

struct Opened {
    id: uuid::Uuid,
    /// airlock's connection id, as the greeting gave it.
    connection_id: u32,
    upstream_id: u32,
    authorized: Authorized,
    pending: BytesMut,
    upstream: UpstreamStream,
    upstream_input: BytesMut,
    status: u16,
    deprecate_eof: bool,
    masking: Option<Arc<SensitiveCatalog>>,
    recorder: RecordingSession,
    mode: airlock_sql::mysql::Mode,
    /// The session's place under the per-principal and per-connection caps.
    permit: airlock_engine::limits::Permit,
}

/// What decides how the server lexes a statement.
pub(crate) const LEXING: &str = "SELECT @@SESSION.sql_mode, @@SESSION.character_set_client";

/// The lexing mode from [`LEXING`]'s answer; `None` for a character set
/// in which a multi-byte character can end in a backslash or quote byte
/// (the pre-lexer would split strings where the server does not).
pub(crate) fn lexing(rows: &[Vec<Option<String>>]) -> Option<airlock_sql::mysql::Mode> {
    let row = rows.first()?;
    let sql_mode = row.first().cloned().flatten().unwrap_or_default();
    let charset = row.get(1).cloned().flatten().unwrap_or_default();
    airlock_sql::mysql::SAFE_CHARSETS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&charset))
        .then(|| airlock_sql::mysql::Mode::from_sql_mode(&sql_mode))
}

async fn greeting(gateway: &Gateway, snapshot: &Snapshot, id: uuid::Uuid) -> Greeting {
    let (server_version, mysql) = gateway.mysql_version(snapshot).await;
    let mut scramble = [0u8; 20];
    for (i, b) in uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(id.as_bytes())
        .take(20)
        .enumerate()
    {
        // Printable, as servers send it.
        scramble[i] = 0x21 + b % 0x5E;
    }
    Greeting {
        server_version,
        connection_id: (id.as_u128() as u32) & 0x7FFF_FFFF,
        scramble,
        mysql,
        collation: UTF8MB4,
    }
}

async fn open(
    gateway: &Arc<Gateway>,
    snapshot: &Snapshot,
    slot: &mut Option<ClientStream>,
    out: &mut BytesMut,
    loopback: bool,
    id: uuid::Uuid,
    peer: SocketAddr,
) -> Option<Opened> {
    let offer = match (snapshot.tls.is_some(), snapshot.tls_mode) {
        (false, _) | (_, airlock_config::TlsMode::Disabled) => TlsOffer::Disabled,
        (true, airlock_config::TlsMode::Required) => TlsOffer::Required,
        (true, airlock_config::TlsMode::Optional) => TlsOffer::Optional,
    };
    let greeting = greeting(gateway, snapshot, id).await;
    let mut hs = ClientHandshake::start(&greeting, offer, loopback, out);
    let mut input = BytesMut::with_capacity(1024);
    let login = loop {
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
            Step::Authenticate(login) => break login,
            Step::Close => return None,
        }
    };
    let refuse =
        |hs: &mut ClientHandshake, out: &mut BytesMut, code: u16, state: &str, message: &str| {
            hs.refuse(out, code, state, message);
            None
        };
    let policy = open::Policy {
        verifier: &snapshot.verifier,
        access: &snapshot.access,
        lifetime: snapshot.session_lifetime,
        approvals: gateway.approvals().map(|a| &**a),
    };
    // No database: the one MySQL connection, when there is only one (a
    // client such as mysqlslap selects its schema after login).
    let only = || {
        let mut mysql = snapshot
            .connections
            .iter()
            .filter(|(_, c)| c.protocol == airlock_config::Protocol::Mysql);
        match (mysql.next(), mysql.next()) {
            (Some((name, _)), None) => Some(name.clone()),
            _ => None,
        }
    };
    let Some(database) = login.database.clone().or_else(only) else {
        return refuse(
            &mut hs,
            out,
            errno::ACCESS_DENIED,
            "28000",
            "airlock: name the airlock connection as the database",
        );
    };
    let request = open::Request {
        token: &login.token,
        connection: &database,
        role: &login.user,
    };
    let authorized = match open::authorize(&policy, &request, gateway.clock().now()).await {
        Ok(a) => a,
        Err(refused) => {
            gateway.metrics.auth_failure(refused.reason());
            let message = hinted(refused.message(), &refused.hint());
            return refuse(&mut hs, out, errno::ACCESS_DENIED, "28000", &message);
        }
    };
    let route = &authorized.route;
    let span = tracing::Span::current();
    span.record("connection", route.connection.as_str());
    span.record("role", route.role.as_str());
    let conn = &snapshot.connections[&route.connection];
    if conn.protocol != airlock_config::Protocol::Mysql {
        gateway.metrics.auth_failure("wrong_door");
        let message = format!(
            "airlock: connection \"{}\" is a PostgreSQL connection; connect to airlock's PostgreSQL listener",
            route.connection
        );
        let hint = Hint::never(
            "connection",
            "connect with a PostgreSQL client to airlock's PostgreSQL listener",
        );
        let message = hinted(&message, &hint);
        return refuse(&mut hs, out, errno::ACCESS_DENIED, "28000", &message);
    }
    let permit = match gateway.admit(snapshot, &authorized, "mysql") {
        Ok(p) => p,
        Err(exceeded) => {
            let (code, state) = match exceeded {
                airlock_engine::limits::Exceeded::Principal { .. } => {
                    (errno::TOO_MANY_USER_CONNECTIONS, "42000")
                }
                airlock_engine::limits::Exceeded::Connection { .. } => (errno::CON_COUNT, "08004"),
                // Admission spends no statement.
                airlock_engine::limits::Exceeded::Rate { .. }
                | airlock_engine::limits::Exceeded::Budget { .. }
                | airlock_engine::limits::Exceeded::Result { .. } => {
                    (errno::USER_LIMIT_REACHED, "42000")
                }
            };
            let message = hinted(&exceeded.message(), &exceeded.hint());
            return refuse(&mut hs, out, code, state, &message);
        }
    };
    let credential = &conn.roles[&route.role];
    let connected = tokio::time::timeout(
        snapshot.limits.upstream_connect_timeout,
        upstream::connect(
            &conn.target,
            credential,
            login.capabilities,
            login.collation,
        ),
    )
    .await;
    let (mut upstream, ready, mut upstream_input) = match connected {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream login failed");
            let message = match e {
                ConnectError::Login(airlock_mywire::upstream::LoginError::Refused { .. }) => {
                    format!(
                        "airlock: the upstream of connection \"{}\" refused airlock's login for role \"{}\"; an administrator must check the role's credential",
                        route.connection, route.role
                    )
                }
                _ => format!(
                    "airlock: connection \"{}\" is unavailable",
                    route.connection
                ),
            };
            return refuse(&mut hs, out, errno::UNKNOWN_ERROR, "HY000", &message);
        }
        Err(_) => {
            let message = format!(
                "airlock: connection \"{}\" is unavailable (timed out)",
                route.connection
            );
            return refuse(&mut hs, out, errno::UNKNOWN_ERROR, "HY000", &message);
        }
    };
    let deprecate_eof = ready
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let timeout = snapshot.limits.upstream_connect_timeout;
    // Defence in depth: the parser refuses writes, the upstream too.
    if route.mode == AccessMode::ReadOnly {
        let set = upstream::query(
            &mut upstream,
            &mut upstream_input,
            deprecate_eof,
            "SET SESSION TRANSACTION READ ONLY",
        );
        if !matches!(tokio::time::timeout(timeout, set).await, Ok(Ok(_))) {
            return refuse(
                &mut hs,
                out,
                errno::UNKNOWN_ERROR,
                "HY000",
                "airlock: the upstream session could not be made read-only",
            );
        }
    }
    // How the server lexes: its sql_mode and the client's character set.
    let state = upstream::query(&mut upstream, &mut upstream_input, deprecate_eof, LEXING);
    let mode = match tokio::time::timeout(timeout, state).await {
        Ok(Ok(rows)) => lexing(&rows),
        _ => None,
    };
    let Some(mode) = mode else {
        return refuse(
            &mut hs,
            out,
            errno::UNKNOWN_ERROR,
            "HY000",
            "airlock: the session's character set is one airlock cannot lex safely; use utf8mb4, latin1 or ascii",
        );
    };
    let read = read_catalog(
        &mut upstream,
        &mut upstream_input,
        deprecate_eof,
        &snapshot.masking.policy,
    );
    let Ok(masking) = crate::catalog::for_masking(snapshot, route, read).await else {
        let message = format!(
            "airlock: connection \"{}\" cannot be masked: reading its catalog failed",
            route.connection
        );
        return refuse(&mut hs, out, errno::UNKNOWN_ERROR, "HY000", &message);
    };
    let client = open::Client {
        door: Door::Mysql,
        addr: peer.to_string(),
        tls: hs.tls_active(),
        application_name: login
            .attributes
            .iter()
            .find(|(k, _)| k == "program_name")
            .map(|(_, v)| v.as_str()),
    };
    let recorder = match gateway.recorder() {
        Some(r) => open::start(r, &snapshot.masking, id, &authorized, &client)
            .map(|()| Arc::clone(r))
            .ok(),
        None => None,
    };
    let Some(recorder) = recorder else {
        tracing::error!("session refused: it cannot be recorded");
        return refuse(
            &mut hs,
            out,
            errno::UNKNOWN_ERROR,
            "HY000",
            "airlock: the audit journal cannot be written; airlock serves no session it cannot record",
        );
    };
    let recorder = snapshot.recording(
        recorder,
        id,
        Door::Mysql,
        route,
        masking.as_ref(),
        super::value_spans,
    );
    hs.accept(out, ready.status);
    tracing::info!(rule = %route.rule, mode = ?route.mode, "session opened");
    Some(Opened {
        id,
        connection_id: greeting.connection_id,
        upstream_id: ready.connection_id,
        authorized,
        pending: input,
        upstream,
        upstream_input,
        status: ready.status,
        deprecate_eof,
        masking,
        recorder,
        mode,
        permit,
    })
}

/// Reads the masking catalog. `information_schema` reports an error when a
/// table it lists is dropped while it is read (other sessions' DDL): a
/// refused read is tried again, up to three times in all.
pub(crate) async fn read_catalog(
    upstream: &mut UpstreamStream,
    input: &mut BytesMut,
    deprecate_eof: bool,
    policy: &airlock_policy::masking::MaskingPolicy,
) -> Result<SensitiveCatalog, crate::catalog::CatalogError> {
    let mut attempt = 1;
    loop {
        match read_catalog_once(upstream, input, deprecate_eof, policy).await {
            Err(crate::catalog::CatalogError::Refused(code)) if attempt < 3 => {
                tracing::debug!(code, attempt, "catalog read refused; reading again");
                attempt += 1;
            }
            read => return read,
        }
    }
}

async fn read_catalog_once(
    upstream: &mut UpstreamStream,
    input: &mut BytesMut,
    deprecate_eof: bool,
    policy: &airlock_policy::masking::MaskingPolicy,
) -> Result<SensitiveCatalog, crate::catalog::CatalogError> {
    use crate::catalog::CatalogError;
    let mut rows = Vec::new();
    for sql in [
        super::catalog::columns(),
        super::catalog::views(),
        super::catalog::routines(),
    ] {
        let r = upstream::query(upstream, input, deprecate_eof, &sql)
            .await
            .map_err(|e| match e {
                upstream::QueryError::Io(e) => CatalogError::Io(e),
                upstream::QueryError::Refused(code) => CatalogError::Refused(code.to_string()),
                upstream::QueryError::Malformed(m) => CatalogError::Malformed(m),
            })?;
        rows.push(r);
    }
    let routines = rows.pop().unwrap_or_default();
    let views = rows.pop().unwrap_or_default();
    let columns = rows.pop().unwrap_or_default();
    let facts = super::catalog::facts(columns, views, routines)
        .map_err(|_| CatalogError::Malformed("catalog rows"))?;
    Ok(SensitiveCatalog::build(policy, facts))
}

/// A refusal's message with its hint: MySQL's ERR packet has no field
/// for one, so it ends the message, after ` HINT: `. Clients keep 511
/// bytes of a message (libmysqlclient's MYSQL_ERRMSG_SIZE): the message is
/// shortened so that the hint, which agents parse, stays whole.
pub(super) fn hinted(message: &str, hint: &Hint) -> String {
    const KEPT: usize = 511;
    // The hint leaves the message at least this much.
    const MESSAGE: usize = 120;
    let hint = format!(" HINT: {}", hint.to_json_within(KEPT - MESSAGE - 7));
    let room = KEPT.saturating_sub(hint.len());
    if message.len() <= room {
        return format!("{message}{hint}");
    }
    let mut end = room.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…{hint}", &message[..end])
}

/// The hint of a database other than the connection's.
fn other_database_hint(connection: &str) -> Hint {
    Hint::never(
        "connection",
        format!(
            "connection \"{connection}\" reaches one database; reach another through the airlock connection named for it (the database name at login)"
        ),
    )
}

/// The judge's answer as the door applies it.
enum Judged {
    Allow,
    Refuse {
        code: u16,
        decision: Recorded,
        rule: Option<String>,
        message: String,
        hint: Hint,
    },
    Hold(HoldRequest),
    /// Runs in the client's transaction, whose COMMIT rule `rule` reviews.
    Review {
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
    },
}

/// A refusal by commit review's rule `rule`.
fn review_refusal(rule: &str, d: judge::Denial) -> Judged {
    Judged::Refuse {
        code: errno::SPECIFIC_ACCESS_DENIED,
        decision: Recorded::Approve,
        rule: Some(rule.to_string()),
        message: d.message,
        hint: d.hint,
    }
}

/// What a text query does to commit review.
enum ReviewStep {
    None,
    /// A reviewed statement begins the transaction's review.
    Begin(super::review::Pending),
    /// A reviewed statement in the transaction under review.
    Reviewed,
    /// The pending review's COMMIT, held.
    Commit,
}

/// A statement the client prepared, by the upstream's statement id.
struct Prepared {
    /// The message id its recording uses.
    id: u64,
    text: Arc<str>,
    statements: Arc<[Statement]>,
    params: u16,
    /// The parameter types last bound.
    types: Vec<(u8, bool)>,
    /// Each execution is held with this request.
    hold: Option<HoldRequest>,
    /// The cursor its last execution opened, with the mask of its rows
    /// (`Some(None)`: nothing to mask).
    cursor: Option<Option<Arc<RowMask>>>,
}

/// Prepared statements airlock keeps per session (MySQL's own default
/// limit for the whole server is 16,382).
const MAX_PREPARED: usize = 1024;

/// Bytes a held client may send ahead of its answer before airlock takes it
/// for a misbehaving client and ends the session.
const MAX_AHEAD: usize = 1 << 20;

/// The statement id of a COM_STMT_* packet.
fn statement_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(payload.get(1..5)?.try_into().ok()?))
}

/// What the answer to a command established.
#[derive(Default)]
struct Answer {
    /// COM_STMT_PREPARE: the statement id and its parameter count.
    prepared: Option<(u32, u16)>,
    /// COM_STMT_EXECUTE opened a cursor, to be fetched with this mask.
    cursor: Option<Option<Arc<RowMask>>>,
    /// Under commit review: the rows each statement changed (its OK's
    /// affected rows, or its `RETURNING` result's rows), by its index in
    /// the text.
    affected: Vec<(usize, u64)>,
}

/// How a session ended.
enum End {
    Quit,
    ClientGone,
    UpstreamGone,
    Protocol(&'static str),
    Cut(Cut),
    /// A limit that ends the session was reached; its ERR is written.
    Limit(airlock_engine::limits::Exceeded),
    /// The client began a packet and did not finish it within
    /// `limits.message_timeout`.
    Stalled,
}

struct Session<'a> {
    gateway: &'a Gateway,
    snapshot: &'a Snapshot,
    client: ClientStream,
    upstream: UpstreamStream,
    client_in: BytesMut,
    upstream_in: BytesMut,
    out: BytesMut,
    framer: Framer,
    deprecate_eof: bool,
    status: u16,
    masking: Option<Arc<SensitiveCatalog>>,
    recorder: RecordingSession,
    authorized: &'a Authorized,
    next_id: u64,
    mode: airlock_sql::mysql::Mode,
    prepared: std::collections::HashMap<u32, Prepared>,
    /// SQL-level prepared statements (`PREPARE s FROM '…'`).
    sql_state: airlock_sql::SessionState,
    /// Says why, when an administrator ends the session.
    ended: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The principal's statement budget (`statements_per_second`).
    budget: Option<airlock_engine::limits::Budget>,
    /// A refusal under a limit that ends the session was given.
    ending: Option<airlock_engine::limits::Exceeded>,
    /// Commit review: the open transaction's COMMIT is held for review.
    review: Option<super::review::Pending>,
    /// The upstream's last answer was an error, whose packet carries no
    /// status: `status` may be out of date (an error can end the
    /// transaction: a deadlock rolls it back, a failed DDL commits it).
    status_stale: bool,
}

async fn run(
    gateway: &Gateway,
    snapshot: &Snapshot,
    client: ClientStream,
    out: BytesMut,
    opened: Opened,
) {
    let _active = gateway.metrics.session_started("mysql");
    // Held until the session ends.
    let budget = opened.permit.budget();
    let _permit = opened.permit;
    let authorized = &opened.authorized;
    let conn = &snapshot.connections[&authorized.route.connection];
    let _registered = gateway.mysql_sessions.register(
        opened.connection_id,
        super::Registered {
            owner: super::owner(&authorized.principal),
            target: conn.target.clone(),
            credential: conn.roles[&authorized.route.role].clone(),
            upstream_id: opened.upstream_id,
        },
    );
    let mut tracked = gateway.track(opened.id);
    let mut s = Session {
        gateway,
        snapshot,
        client,
        upstream: opened.upstream,
        client_in: opened.pending,
        upstream_in: opened.upstream_input,
        out,
        framer: Framer::new(snapshot.limits.max_message_size),
        deprecate_eof: opened.deprecate_eof,
        status: opened.status,
        masking: opened.masking,
        recorder: opened.recorder,
        authorized,
        next_id: 1,
        mode: opened.mode,
        prepared: std::collections::HashMap::new(),
        sql_state: airlock_sql::SessionState::default(),
        ended: tracked.ended.take(),
        budget,
        ending: None,
        review: None,
        status_stale: false,
    };
    let clock = gateway.clock();
    let deadline = open::deadline(authorized, snapshot.session_lifetime, clock.now());
    let approvals = gateway.approvals().cloned();
    let mut revoked = match (&authorized.route.grant, &approvals) {
        (Some(g), Some(a)) => g.id.parse().ok().map(|id| a.watch_grant(id)),
        _ => None,
    };
    let mut terminate = gateway.terminate.subscribe();
    // While a packet is incomplete: when it must be complete by, and the
    // bytes read when that was set. (The client is read only here, between
    // commands: only that time counts.) A packet still arriving steadily
    // (a large one over a slow link) is not stalling.
    let mut stall: Option<(tokio::time::Instant, u64)> = None;
    let mut read_total: u64 = 0;
    let end = loop {
        if let Err(e) = s.flush().await {
            break e;
        }
        let packet = match s.framer.next(&mut s.client_in) {
            Ok(Some(p)) => {
                stall = None;
                p
            }
            Ok(None) => {
                if s.client_in.is_empty() {
                    stall = None;
                } else if stall.is_none_or(|(_, at)| read_total - at >= crate::pump::STALL_PROGRESS)
                {
                    let by = tokio::time::Instant::now() + snapshot.limits.message_timeout;
                    stall = Some((by, read_total));
                }
                let stalled = async {
                    match stall {
                        Some((by, _)) => tokio::time::sleep_until(by).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    read = s.client.read_buf(&mut s.client_in) => match read {
                        Ok(0) | Err(_) => break End::ClientGone,
                        Ok(n) => {
                            read_total += n as u64;
                            continue;
                        }
                    },
                    () = stalled => break End::Stalled,
                    why = crate::lifetime::cut_at(&*clock, &deadline, &mut terminate) => break End::Cut(why),
                    why = crate::lifetime::told(&mut revoked) => break End::Cut(Cut::Grant(why)),
                    why = crate::lifetime::told(&mut s.ended) => break End::Cut(Cut::Terminated(why)),
                }
            }
            Err(_) => break End::Protocol("a malformed or oversized packet"),
        };
        match s.command(packet, approvals.as_deref()).await {
            Ok(()) => {}
            Err(end) => break end,
        }
        if let Some(exceeded) = s.ending.take() {
            break End::Limit(exceeded);
        }
    };
    // No longer live: an administrator cannot end it now.
    drop(tracked);
    let reason = match &end {
        End::Quit => "client closed".to_string(),
        End::ClientGone => "client went away".into(),
        End::UpstreamGone => "upstream closed".into(),
        End::Protocol(_) => "protocol violation".into(),
        End::Cut(cut) => cut.reason(),
        End::Limit(exceeded) => exceeded.rule().into(),
        End::Stalled => "client stalled mid-message".into(),
    };
    if let Some(recorder) = gateway.recorder() {
        open::end(recorder, opened.id, reason, s.recorder.statements());
    }
    match &end {
        End::Cut(cut) => {
            tracing::info!(reason = %cut.reason(), "session cut");
            let (code, state) = match cut {
                Cut::Shutdown => (errno::SERVER_SHUTDOWN, "08S01"),
                _ => (errno::CONNECTION_KILLED, "70100"),
            };
            codec::err(&mut s.out, &mut 0, code, state, &cut.message());
        }
        End::Stalled => {
            tracing::info!("the client stalled mid-message");
            let message = format!(
                "airlock: session ended: a packet stayed incomplete for {:?} (limits.message_timeout)",
                snapshot.limits.message_timeout
            );
            codec::err(
                &mut s.out,
                &mut 0,
                errno::NET_READ_INTERRUPTED,
                "08S01",
                &message,
            );
        }
        End::Protocol(why) => {
            tracing::warn!(why, "protocol violation");
            codec::err(
                &mut s.out,
                &mut 0,
                errno::HANDSHAKE_ERROR,
                "08S01",
                &format!("airlock: {why}"),
            );
        }
        _ => {}
    }
    // A client that reads nothing more does not keep the session.
    let _ = tokio::time::timeout(crate::CLOSE_TIMEOUT, async {
        let _ = s.client.write_all(&s.out).await;
        let _ = s.upstream.shutdown().await;
        let _ = s.client.shutdown().await;
    })
    .await;
}

impl Session<'_> {
    async fn flush(&mut self) -> Result<(), End> {
        if !self.out.is_empty() {
            self.client
                .write_all(&self.out)
                .await
                .map_err(|_| End::ClientGone)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Refuses the command at hand with an ERR (sequence id 1: the
    /// answer's first packet).
    fn refuse(&mut self, code: u16, sqlstate: &str, message: &str) {
        codec::err(&mut self.out, &mut 1, code, sqlstate, message);
    }

    async fn command(
        &mut self,
        packet: codec::Packet,
        approvals: Option<&airlock_engine::approvals::Approvals>,
    ) -> Result<(), End> {
        let Some(&cmd) = packet.payload.first() else {
            return Err(End::Protocol("an empty command"));
        };
        let expect = match cmd {
            command::QUIT => return Err(End::Quit),
            command::QUERY => return self.query(packet, approvals).await,
            command::STMT_PREPARE => return self.prepare(packet, approvals).await,
            command::STMT_EXECUTE => return self.execute(packet, approvals).await,
            command::STMT_FETCH => return self.fetch(packet).await,
            command::PING | command::SET_OPTION => Expect::Status,
            command::STMT_RESET | command::STMT_SEND_LONG_DATA | command::STMT_CLOSE => {
                let known =
                    statement_id(&packet.payload).is_some_and(|id| self.prepared.contains_key(&id));
                if cmd == command::STMT_CLOSE
                    && let Some(id) = statement_id(&packet.payload)
                {
                    self.prepared.remove(&id);
                }
                if cmd == command::STMT_RESET && !known {
                    self.refuse(
                        errno::UNKNOWN_STMT_HANDLER,
                        "HY000",
                        "Unknown prepared statement handler given to mysqld_stmt_reset",
                    );
                    return Ok(());
                }
                if cmd != command::STMT_RESET {
                    // No answer is owed: sent on only for statements
                    // airlock knows (an unknown one fails at execution).
                    if known {
                        self.send_upstream(&packet.payload).await?;
                    }
                    return Ok(());
                }
                Expect::Status
            }
            command::INIT_DB => {
                let db = String::from_utf8_lossy(&packet.payload[1..]).into_owned();
                let target = &self.snapshot.connections[&self.authorized.route.connection].target;
                if db != target.database && db != self.authorized.route.connection {
                    let connection = &self.authorized.route.connection;
                    let message = format!(
                        "airlock: access denied to database '{db}': connection \"{connection}\" grants only its own database",
                    );
                    let message = hinted(&message, &other_database_hint(connection));
                    self.refuse(errno::DBACCESS_DENIED, "42000", &message);
                    return Ok(());
                }
                // The connection's name stands for its upstream database.
                let mut payload = vec![command::INIT_DB];
                payload.extend_from_slice(target.database.as_bytes());
                self.forward_raw(&payload, Expect::Status, None, None)
                    .await?;
                return Ok(());
            }
            command::RESET_CONNECTION => {
                self.forward_raw(&packet.payload, Expect::Status, None, None)
                    .await?;
                // The upstream forgot its prepared statements and session
                // settings: so does airlock, and read-only is set again.
                self.prepared.clear();
                self.sql_state = airlock_sql::SessionState::default();
                // It rolled the transaction back.
                self.review = None;
                if self.authorized.route.mode == AccessMode::ReadOnly {
                    upstream::query(
                        &mut self.upstream,
                        &mut self.upstream_in,
                        self.deprecate_eof,
                        "SET SESSION TRANSACTION READ ONLY",
                    )
                    .await
                    .map_err(|_| End::UpstreamGone)?;
                }
                return self.reread_lexing().await;
            }
            command::CHANGE_USER => {
                self.refuse(errno::UNKNOWN_COM, "08S01", "airlock: COM_CHANGE_USER is refused: open a new connection with the other role and a token");
                return Ok(());
            }
            command::FIELD_LIST => {
                self.refuse(
                    errno::UNKNOWN_COM,
                    "08S01",
                    "airlock: COM_FIELD_LIST is refused: use SHOW COLUMNS",
                );
                return Ok(());
            }
            other => {
                let message = format!(
                    "airlock: command 0x{other:02x} is not relayed (replication and administration commands are refused)"
                );
                self.refuse(errno::UNKNOWN_COM, "08S01", &message);
                return Ok(());
            }
        };
        self.forward_raw(&packet.payload, expect, None, None)
            .await?;
        Ok(())
    }

    /// Judges a statement text: the one judge, then the door's own check
    /// of `USE` against the route.
    /// SQL-level `PREPARE`/`EXECUTE` are resolved against the session's
    /// prepared statements; the state they leave is returned, to keep once
    /// the statement runs.
    /// `fetch`: whether a rule's row estimate is fetched now (`EXPLAIN` on
    /// the session's upstream, for a message run as sent) or never (a
    /// prepared statement's parameters are not known: a missing estimate
    /// counts as over the threshold).
    async fn judge(
        &mut self,
        text: &str,
        approvals: bool,
        fetch: judge::Fetch,
    ) -> (Arc<[Statement]>, Judged, Option<airlock_sql::SessionState>) {
        // Only a text query can run in the client's transaction with its
        // COMMIT held (a prepared statement is judged at its preparation).
        let reviewable = fetch == judge::Fetch::Now;
        let analyzed =
            airlock_sql::cache::analyze_mysql(&self.snapshot.mysql_analyzer, text, self.mode);
        let needs_session = analyzed.iter().any(|s| {
            use airlock_policy::StatementKind as K;
            matches!(s.kind, K::Prepare | K::Execute | K::Deallocate)
                || s.nested.contains(&K::Execute)
        });
        let (statements, state) = if needs_session {
            let mut state = self.sql_state.clone();
            (
                airlock_sql::resolve(&analyzed, &mut state).into(),
                Some(state),
            )
        } else {
            (analyzed, None)
        };
        let route = &self.authorized.route;
        // `USE db` is harmless only for the route's own database.
        let database = &self.snapshot.connections[&route.connection].target.database;
        if let Some(other) = statements
            .iter()
            .filter(|s| s.kind == airlock_policy::StatementKind::SetConfig)
            .filter_map(|s| s.name.as_deref())
            .find(|db| *db != database.as_str())
        {
            let message = format!(
                "airlock: access denied to database '{other}': connection \"{}\" grants only its own database",
                route.connection
            );
            return (
                statements,
                Judged::Refuse {
                    code: errno::DBACCESS_DENIED,
                    decision: Recorded::Deny,
                    rule: None,
                    message,
                    hint: other_database_hint(&route.connection),
                },
                None,
            );
        }
        let mut estimate = Estimate::NotFetched;
        let ruling = loop {
            let session = judge::Session {
                guardrails: &self.snapshot.guardrails,
                mode: self.authorized.route.mode,
                access_rule: &self.authorized.route.rule,
                writes: self.authorized.route.writes.as_ref(),
                // MySQL statements are never aggregates of the schema-only
                // form (only the catalog passes): nothing to rewrite.
                schema_only: self.authorized.route.schema_only,
                // PostgreSQL's setting (the config refuses a ceiling on a
                // rule that reaches MySQL).
                statement_timeout: None,
                // Likewise `max_cost`.
                costed: false,
                approvals,
                masking: self.masking.as_deref().map(|catalog| judge::Masked {
                    policy: &self.snapshot.masking.policy,
                    catalog,
                }),
                keys: None,
            };
            // One estimate is fetched at most.
            let ask = judge::Ask {
                fetch: if estimate == Estimate::NotFetched {
                    fetch
                } else {
                    judge::Fetch::Never
                },
                can_review: reviewable,
                ..judge::Ask::message(&statements, estimate)
            };
            match judge::judge(&session, &ask, &judge::NoFacts) {
                Ruling::NeedsEstimate { index } => {
                    let span = statements.get(index).map_or((0, 0), |s| s.span);
                    estimate = match text.get(span.0..span.1) {
                        Some(sql) => self.explain_rows(sql).await,
                        None => Estimate::Unavailable,
                    };
                }
                ruling => break ruling,
            }
        };
        let judged = match ruling {
            Ruling::Allow { .. } | Ruling::NeedsEstimate { .. } => Judged::Allow,
            Ruling::Review {
                rule,
                approvers,
                min_approvals,
            } => Judged::Review {
                rule,
                approvers,
                min_approvals,
            },
            Ruling::Deny(d) => {
                let (decision, rule) = airlock_engine::recording::denied_by(&d.by);
                let rule = rule.map(str::to_string);
                tracing::info!(rule = ?d.rule(), "statement denied");
                Judged::Refuse {
                    code: errno::SPECIFIC_ACCESS_DENIED,
                    decision,
                    rule,
                    message: d.message,
                    hint: d.hint,
                }
            }
            Ruling::Approve {
                rule,
                approvers,
                min_approvals,
                estimate,
            } => {
                let (redacted, _) = self.recorder.redacted(text, &statements, &Params::None);
                Judged::Hold(HoldRequest::new(
                    rule,
                    approvers,
                    min_approvals,
                    estimate,
                    &statements,
                    redacted,
                    Vec::new(),
                ))
            }
        };
        (statements, judged, state)
    }

    /// The upstream's row estimate for `sql`: the largest `rows` of its
    /// `EXPLAIN` (run on the session's own connection, inside its
    /// transaction; nothing runs). Unavailable when the upstream cannot
    /// explain it, which counts as over every threshold.
    async fn explain_rows(&mut self, sql: &str) -> Estimate {
        let explained = upstream::query_named(
            &mut self.upstream,
            &mut self.upstream_in,
            self.deprecate_eof,
            &format!("EXPLAIN {sql}"),
        )
        .await;
        let Ok((names, rows)) = explained else {
            return Estimate::Unavailable;
        };
        let Some(at) = names.iter().position(|n| n.eq_ignore_ascii_case("rows")) else {
            return Estimate::Unavailable;
        };
        rows.iter()
            .map(|r| {
                r.get(at)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .try_fold(0u64, |max, v| v.map(|v| max.max(v)))
            .map_or(Estimate::Unavailable, Estimate::Rows)
    }

    /// Settles a judged statement before it runs: refused (recorded, ERR
    /// sent), or held until decided, then recorded. `Ok(false)` when it
    /// must not run.
    async fn settle(
        &mut self,
        id: u64,
        text: &str,
        statements: &[Statement],
        judged: Judged,
        params: &Params<'_>,
        approvals: Option<&airlock_engine::approvals::Approvals>,
    ) -> Result<bool, End> {
        // Only a text query is reviewed, and it is settled before.
        let judged = match judged {
            Judged::Review { rule, .. } => review_refusal(&rule, judge::unreviewable(&rule)),
            judged => judged,
        };
        let (decision, rule, approval) = match judged {
            Judged::Allow => (Recorded::Allow, None, None),
            Judged::Review { .. } => unreachable!("made a refusal above"),
            Judged::Refuse {
                code,
                decision,
                rule,
                message,
                hint,
            } => {
                self.record(
                    id,
                    text,
                    statements,
                    params,
                    decision,
                    rule.as_deref(),
                    Some((code, &message)),
                    None,
                );
                self.refuse(code, "42000", &hinted(&message, &hint));
                return Ok(false);
            }
            Judged::Hold(request) => {
                let Some(approvals) = approvals else {
                    unreachable!("the judge holds nothing without approvals")
                };
                let rule = request.rule.clone();
                let outcome = self.hold(approvals, request).await?;
                let approval = outcome.approval();
                if let Some((class, message)) = outcome.refusal() {
                    let hint = outcome.hint().expect("a refused hold has a hint");
                    let (code, state) = match class {
                        Refusal::Policy => (errno::SPECIFIC_ACCESS_DENIED, "42000"),
                        Refusal::System => (errno::UNKNOWN_ERROR, "HY000"),
                    };
                    self.record(
                        id,
                        text,
                        statements,
                        params,
                        Recorded::Approve,
                        Some(&rule),
                        Some((code, &message)),
                        approval,
                    );
                    self.refuse(code, state, &hinted(&message, &hint));
                    return Ok(false);
                }
                (Recorded::Approve, Some(rule), approval)
            }
        };
        if !self.record(
            id,
            text,
            statements,
            params,
            decision,
            rule.as_deref(),
            None,
            approval,
        ) {
            let message = hinted(
                "airlock: the audit journal cannot be written; the statement was not run",
                &airlock_engine::hold::unrecorded_hint(),
            );
            self.refuse(errno::UNKNOWN_ERROR, "HY000", &message);
            return Ok(false);
        }
        Ok(true)
    }

    /// The upstream's status read again when its last answer was an error
    /// (which carries none): commit review must know whether a transaction
    /// is open. A review whose transaction is gone ends.
    async fn fresh_status(&mut self) -> Result<(), End> {
        if self.status_stale {
            self.status = upstream::status(
                &mut self.upstream,
                &mut self.upstream_in,
                self.deprecate_eof,
            )
            .await
            .map_err(|_| End::UpstreamGone)?;
            self.status_stale = false;
        }
        if self.status & status::IN_TRANS == 0 {
            self.review = None;
        }
        Ok(())
    }

    /// A reviewed message's writes are held back only on transactional
    /// tables: a refusal when one it names is not InnoDB (MyISAM, MEMORY,
    /// Aria and the like keep a write the moment it runs, whatever the
    /// COMMIT), or cannot be looked up (a view).
    async fn transactional(&mut self, statements: &[Statement], rule: &str) -> Result<Judged, End> {
        let database = self.snapshot.connections[&self.authorized.route.connection]
            .target
            .database
            .clone();
        let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
        for s in statements
            .iter()
            .filter(|s| s.effects.contains(airlock_policy::Effect::Write))
        {
            for r in &s.relations {
                let sql = format!(
                    "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    quote(r.schema.as_deref().unwrap_or(&database)),
                    quote(&r.name)
                );
                let rows = upstream::query(
                    &mut self.upstream,
                    &mut self.upstream_in,
                    self.deprecate_eof,
                    &sql,
                )
                .await
                .map_err(|_| End::UpstreamGone)?;
                let engine = rows.first().and_then(|row| row.first().cloned().flatten());
                if !engine
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("innodb"))
                {
                    let d = airlock_policy::review::untransactional(
                        rule,
                        &r.to_string(),
                        engine.as_deref(),
                    );
                    return Ok(review_refusal(rule, d));
                }
            }
        }
        Ok(Judged::Allow)
    }

    /// A pending review counts what a message that ran wrote (its text as
    /// recorded), and ends with its transaction.
    fn measured(&mut self, text: &str, statements: &[Statement], answer: &Answer) {
        let Some(pending) = self.review.as_mut() else {
            return;
        };
        let mut wrote = false;
        for (index, rows) in &answer.affected {
            if let Some(s) = statements.get(*index) {
                wrote |= pending.ran(s, *rows);
            }
        }
        if wrote {
            let (redacted, _) = self.recorder.redacted(text, statements, &Params::None);
            if let Some(pending) = self.review.as_mut() {
                pending.shown(redacted);
            }
        }
        // The transaction ended (a COMMIT, a ROLLBACK): so did its review.
        // After an error, the next command reads the status first.
        if !self.status_stale && self.status & status::IN_TRANS == 0 {
            self.review = None;
        }
    }

    /// Commit review's part in a text query's judgement. A statement a
    /// rule reviews may run only inside a transaction that nothing after it
    /// in the message ends (its review then begins, or goes on). While a
    /// review is pending, a COMMIT sent alone is held with the measured
    /// effect, and what would commit the transaction otherwise is refused.
    fn reviewed(
        &self,
        text: &str,
        statements: &Arc<[Statement]>,
        judged: Judged,
    ) -> (Judged, ReviewStep) {
        use airlock_policy::review::{self, AtCommit};
        let refuse = review_refusal;
        if let Some(p) = &self.review {
            match review::at_commit_mysql(statements, &p.rule) {
                AtCommit::Pass => {}
                AtCommit::Refuse(d) => return (refuse(&p.rule, d), ReviewStep::None),
                AtCommit::Hold => {
                    return match judged {
                        Judged::Allow => {
                            let (redacted, _) =
                                self.recorder.redacted(text, statements, &Params::None);
                            let mut request = HoldRequest::new(
                                p.rule.clone(),
                                p.approvers.clone(),
                                p.min_approvals,
                                None,
                                statements,
                                redacted,
                                Vec::new(),
                            );
                            request.effect = Some(p.effect());
                            (Judged::Hold(request), ReviewStep::Commit)
                        }
                        // One COMMIT, one approval.
                        Judged::Hold(r) => (
                            refuse(&r.rule, review::another(&p.rule, &r.rule)),
                            ReviewStep::None,
                        ),
                        other => (other, ReviewStep::None),
                    };
                }
            }
        }
        let Judged::Review {
            rule,
            approvers,
            min_approvals,
        } = judged
        else {
            return (judged, ReviewStep::None);
        };
        if let Some(p) = self.review.as_ref().filter(|p| p.rule != rule) {
            return (
                refuse(&rule, review::another(&p.rule, &rule)),
                ReviewStep::None,
            );
        }
        let in_block = self.status & status::IN_TRANS != 0 || self.status & status::AUTOCOMMIT == 0;
        if let Some(d) = review::placement(statements, in_block, &rule) {
            return (refuse(&rule, d), ReviewStep::None);
        }
        // Nothing in it may commit the transaction but a BEGIN ahead of
        // its first write (which commits only what came before).
        let first = statements
            .iter()
            .position(|s| s.effects.contains(airlock_policy::Effect::Write))
            .unwrap_or(statements.len());
        let rest: Vec<Statement> = statements
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                *i >= first || s.transaction != Some(airlock_policy::Transaction::Begin)
            })
            .map(|(_, s)| s.clone())
            .collect();
        if let AtCommit::Refuse(d) = review::at_commit_mysql(&rest, &rule) {
            return (refuse(&rule, d), ReviewStep::None);
        }
        let step = match self.review {
            Some(_) => ReviewStep::Reviewed,
            None => ReviewStep::Begin(super::review::Pending::new(rule, approvers, min_approvals)),
        };
        (Judged::Allow, step)
    }

    /// The refusal of a message of `statements` over the principal's
    /// budget (a COM_QUERY's statements, one execution), or `None`.
    fn over_budget(&mut self, statements: usize) -> Option<Judged> {
        let exceeded = crate::over_budget(self.budget.as_ref(), statements, "mysql")?;
        if exceeded.ends_session() {
            self.ending = Some(exceeded.clone());
        }
        Some(Judged::Refuse {
            code: errno::USER_LIMIT_REACHED,
            decision: Recorded::Deny,
            rule: Some(exceeded.rule().into()),
            message: exceeded.message(),
            hint: exceeded.hint(),
        })
    }

    async fn query(
        &mut self,
        packet: codec::Packet,
        approvals: Option<&airlock_engine::approvals::Approvals>,
    ) -> Result<(), End> {
        let Some((id, text)) = self.statement_text(&packet.payload[1..]) else {
            return Ok(());
        };
        let (statements, judged, state) = self
            .judge(&text, approvals.is_some(), judge::Fetch::Now)
            .await;
        let judged = self.over_budget(statements.len()).unwrap_or(judged);
        if matches!(judged, Judged::Review { .. }) || self.review.is_some() {
            self.fresh_status().await?;
        }
        let (judged, step) = self.reviewed(&text, &statements, judged);
        // A reviewed message: under the rule of the review it begins or
        // goes on with.
        let reviewing = match &step {
            ReviewStep::Begin(p) => Some(p.rule.clone()),
            ReviewStep::Reviewed => self.review.as_ref().map(|p| p.rule.clone()),
            _ => None,
        };
        let judged = match (reviewing, judged) {
            (Some(rule), Judged::Allow) => self.transactional(&statements, &rule).await?,
            (_, judged) => judged,
        };
        let commit = matches!(step, ReviewStep::Commit);
        // `KILL` is judged like any statement; once allowed (and
        // recorded), the door carries it out itself.
        let kill = match &statements[..] {
            [one] => airlock_sql::mysql::kill_target(one),
            _ => None,
        };
        if !self
            .settle(id, &text, &statements, judged, &Params::None, approvals)
            .await?
        {
            if commit {
                // The held COMMIT was not approved: nothing of it commits,
                // and its locks go now.
                self.review = None;
                upstream::query(
                    &mut self.upstream,
                    &mut self.upstream_in,
                    self.deprecate_eof,
                    "ROLLBACK",
                )
                .await
                .map_err(|_| End::UpstreamGone)?;
                self.status &= !status::IN_TRANS;
            }
            return Ok(());
        }
        if let Some(target) = kill {
            return self.kill(target).await;
        }
        if let Some(state) = state {
            self.sql_state = state;
        }
        if let ReviewStep::Begin(pending) = step {
            self.review = Some(pending);
        }
        let answer = self
            .forward_raw(
                &packet.payload,
                Expect::Results { binary: false },
                Some((id, &statements)),
                None,
            )
            .await?;
        self.measured(&text, &statements, &answer);
        self.follow_lexing(&text, &statements).await
    }

    /// An allowed `KILL [QUERY|CONNECTION] <id>`: ids are airlock's, and
    /// only the principal's own sessions can be reached (others' are
    /// unknown, as MySQL tells a user without the privilege); the
    /// upstream's own KILL runs on a connection of the session's role.
    /// Never sent on as written.
    async fn kill(&mut self, target: airlock_sql::mysql::KillTarget) -> Result<(), End> {
        let (n, what) = match target {
            airlock_sql::mysql::KillTarget::Query(n) => (n, "QUERY"),
            airlock_sql::mysql::KillTarget::Connection(n) => (n, "CONNECTION"),
        };
        let owner = super::owner(&self.authorized.principal);
        let found = u32::try_from(n)
            .ok()
            .and_then(|n| self.gateway.mysql_sessions.owned(n, &owner));
        let Some(session) = found else {
            self.refuse(
                errno::NO_SUCH_THREAD,
                "HY000",
                &format!("Unknown thread id: {n}"),
            );
            return Ok(());
        };
        let killed = tokio::time::timeout(
            self.snapshot.limits.upstream_connect_timeout,
            upstream::kill(
                &session.target,
                &session.credential,
                what,
                session.upstream_id,
            ),
        )
        .await;
        match killed {
            Ok(Ok(_)) => codec::ok(
                &mut self.out,
                &mut 1,
                codec::OkInfo {
                    status: self.status,
                    ..Default::default()
                },
            ),
            _ => self.refuse(
                errno::UNKNOWN_ERROR,
                "HY000",
                "airlock: the query could not be killed upstream",
            ),
        }
        Ok(())
    }

    /// A new message id and the statement's text, or `None` (refused)
    /// when it is not UTF-8.
    fn statement_text(&mut self, bytes: &[u8]) -> Option<(u64, String)> {
        let id = self.next_id;
        self.next_id += 1;
        match std::str::from_utf8(bytes) {
            Ok(t) => Some((id, t.to_owned())),
            Err(_) => {
                self.refuse(
                    errno::INVALID_CHARACTER_STRING,
                    "HY000",
                    "airlock: the statement is not valid UTF-8, so airlock cannot classify it",
                );
                None
            }
        }
    }

    /// After statements that may have changed how the server lexes, reads
    /// the session's state again; a character set airlock cannot lex ends
    /// the session.
    async fn follow_lexing(&mut self, text: &str, statements: &[Statement]) -> Result<(), End> {
        // Only a SET (or what airlock cannot read) changes the lexing state:
        // nothing else is lexed again.
        let follow = statements
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    airlock_policy::StatementKind::SetConfig
                        | airlock_policy::StatementKind::Unknown
                )
            })
            .any(|s| {
                let t = airlock_sql::mysql::tracked(
                    text.get(s.span.0..s.span.1).unwrap_or(text),
                    self.mode,
                );
                t.sql_mode || t.charset
            });
        if !follow {
            return Ok(());
        }
        self.reread_lexing().await
    }

    /// Reads the session's `sql_mode` and character set again; a character
    /// set airlock cannot lex ends the session.
    async fn reread_lexing(&mut self) -> Result<(), End> {
        let rows = upstream::query(
            &mut self.upstream,
            &mut self.upstream_in,
            self.deprecate_eof,
            LEXING,
        )
        .await
        .map_err(|_| End::UpstreamGone)?;
        self.mode = lexing(&rows).ok_or(End::Protocol(
            "the session switched to a character set airlock cannot lex safely",
        ))?;
        Ok(())
    }

    /// COM_STMT_PREPARE: judged like a query; a refused one never reaches
    /// the upstream; one that needs approval is held at each execution.
    async fn prepare(
        &mut self,
        packet: codec::Packet,
        approvals: Option<&airlock_engine::approvals::Approvals>,
    ) -> Result<(), End> {
        let Some((id, text)) = self.statement_text(&packet.payload[1..]) else {
            return Ok(());
        };
        let (statements, judged, _) = self
            .judge(&text, approvals.is_some(), judge::Fetch::Never)
            .await;
        let hold = match judged {
            Judged::Refuse { .. } | Judged::Review { .. } => {
                self.settle(id, &text, &statements, judged, &Params::None, approvals)
                    .await?;
                return Ok(());
            }
            Judged::Hold(request) => Some(request),
            Judged::Allow => None,
        };
        let answer = self
            .forward_raw(&packet.payload, Expect::Prepare, None, None)
            .await?;
        if let Some((statement, params)) = answer.prepared {
            if self.prepared.len() >= MAX_PREPARED && !self.prepared.contains_key(&statement) {
                // Bounded: the oldest statement airlock knows is forgotten
                // (and refused from then on).
                let oldest = self
                    .prepared
                    .iter()
                    .min_by_key(|(_, p)| p.id)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.prepared.remove(&k);
                }
            }
            self.prepared.insert(
                statement,
                Prepared {
                    id,
                    text: Arc::from(text),
                    statements,
                    params,
                    types: Vec::new(),
                    hold,
                    cursor: None,
                },
            );
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE of a statement airlock saw prepared: its
    /// parameters read and recorded, held if its rule says so, its binary
    /// rows masked.
    async fn execute(
        &mut self,
        packet: codec::Packet,
        approvals: Option<&airlock_engine::approvals::Approvals>,
    ) -> Result<(), End> {
        let Some(statement) = statement_id(&packet.payload) else {
            return Err(End::Protocol("a malformed COM_STMT_EXECUTE"));
        };
        let Some(p) = self.prepared.get_mut(&statement) else {
            self.refuse(
                errno::UNKNOWN_STMT_HANDLER,
                "HY000",
                &format!(
                    "Unknown prepared statement handler ({statement}) given to mysqld_stmt_execute"
                ),
            );
            return Ok(());
        };
        let Some(values) = super::binary::execute_params(&packet.payload, p.params, &mut p.types)
        else {
            self.refuse(
                errno::WRONG_ARGUMENTS,
                "HY000",
                "Incorrect arguments to mysqld_stmt_execute",
            );
            return Ok(());
        };
        let (text, statements, hold, id) = (
            Arc::clone(&p.text),
            Arc::clone(&p.statements),
            p.hold.clone(),
            p.id,
        );
        let params = Params::Values(
            values
                .iter()
                .map(|v| airlock_engine::recording::Param {
                    value: v.value,
                    binary: !v.text,
                })
                .collect(),
        );
        if self.review.is_some() {
            self.fresh_status().await?;
        }
        // A prepared COMMIT, or what would commit, while a review is
        // pending: its COMMIT must come as a text query to be held.
        let pending = self.review.as_ref().and_then(|p| {
            match airlock_policy::review::at_commit_mysql(&statements, &p.rule) {
                airlock_policy::review::AtCommit::Pass => None,
                airlock_policy::review::AtCommit::Hold => Some(airlock_policy::review::unmeasured(
                    &p.rule,
                    "it was sent as a prepared statement",
                )),
                airlock_policy::review::AtCommit::Refuse(d) => Some(d),
            }
            .map(|d| review_refusal(&p.rule, d))
        });
        let judged = match (pending.or_else(|| self.over_budget(1)), hold) {
            (Some(refused), _) => refused,
            (None, Some(mut request)) => {
                request.params = self.recorder.redacted(&text, &statements, &params).1;
                Judged::Hold(request)
            }
            (None, None) => Judged::Allow,
        };
        if !self
            .settle(id, &text, &statements, judged, &params, approvals)
            .await?
        {
            return Ok(());
        }
        drop(values);
        let answer = self
            .forward_raw(
                &packet.payload,
                Expect::Results { binary: true },
                Some((id, &statements)),
                None,
            )
            .await?;
        self.measured(&text, &statements, &answer);
        if let Some(p) = self.prepared.get_mut(&statement) {
            p.cursor = answer.cursor;
        }
        Ok(())
    }

    /// COM_STMT_FETCH: rows of an open cursor, masked as its execution's.
    async fn fetch(&mut self, packet: codec::Packet) -> Result<(), End> {
        let Some(statement) = statement_id(&packet.payload) else {
            return Err(End::Protocol("a malformed COM_STMT_FETCH"));
        };
        let Some(p) = self.prepared.get(&statement) else {
            self.refuse(
                errno::UNKNOWN_STMT_HANDLER,
                "HY000",
                &format!(
                    "Unknown prepared statement handler ({statement}) given to mysqld_stmt_fetch"
                ),
            );
            return Ok(());
        };
        let (id, statements) = (p.id, Arc::clone(&p.statements));
        // No cursor airlock saw opened: nothing to fetch that it can mask.
        let Some(cursor) = p.cursor.clone() else {
            self.refuse(
                errno::UNKNOWN_STMT_HANDLER,
                "HY000",
                "airlock: the statement has no open cursor",
            );
            return Ok(());
        };
        // More rows of a result already begun: a spent rows or bytes budget
        // refuses them too.
        if let Some(exceeded) = crate::results_spent(self.budget.as_ref(), "mysql") {
            let message = hinted(&exceeded.message(), &exceeded.hint());
            self.refuse(errno::USER_LIMIT_REACHED, "42000", &message);
            if exceeded.ends_session() {
                self.ending = Some(exceeded);
            }
            return Ok(());
        }
        self.forward_raw(
            &packet.payload,
            Expect::Fetch,
            Some((id, &statements)),
            Some(cursor),
        )
        .await?;
        Ok(())
    }

    /// Records a statement event; false when it could not be written.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        id: u64,
        text: &str,
        statements: &[Statement],
        params: &Params<'_>,
        decision: Recorded,
        rule: Option<&str>,
        refusal: Option<(u16, &str)>,
        approval: Option<uuid::Uuid>,
    ) -> bool {
        // The error number the client got.
        let code = refusal
            .map(|(code, _)| code.to_string())
            .unwrap_or_default();
        let judgement = Judgement {
            decision: if refusal.is_some() && decision == Recorded::Allow {
                Recorded::Deny
            } else {
                decision
            },
            rule,
            refusal: refusal.map(|(_, m)| (code.as_str(), m)),
            approval,
        };
        self.recorder
            .statement(
                id,
                if matches!(params, Params::None) {
                    Protocol::Simple
                } else {
                    Protocol::Extended
                },
                text,
                statements,
                params,
                judgement,
            )
            .is_ok()
    }

    /// Holds the statement until it is decided, the client goes away or
    /// the session is cut.
    async fn hold(
        &mut self,
        approvals: &airlock_engine::approvals::Approvals,
        request: HoldRequest,
    ) -> Result<HoldOutcome, End> {
        let trail = self.recorder.trail();
        let holder = Holder {
            approvals,
            principal: &self.authorized.principal,
            route: &self.authorized.route,
            trail: Some(&trail),
        };
        let in_transaction = self.status & status::IN_TRANS != 0;
        let mut waiting =
            match hold::begin(&holder, self.snapshot.approvals, request, in_transaction).await {
                Ok(w) => w,
                Err(outcome) => return Ok(outcome),
            };
        tracing::info!("{}", hold::held_notice(&waiting));
        let mut terminate = self.gateway.terminate.subscribe();
        loop {
            tokio::select! {
                wait = waiting.decided() => return Ok(hold::end(&holder, waiting, wait).await),
                // The gateway shuts down: the hold ends with the session.
                _ = crate::lifetime::terminated(&mut terminate) => {
                    hold::cancel(&holder, waiting, "the gateway is shutting down").await;
                    return Err(End::Cut(Cut::Shutdown));
                }
                // An administrator ends the session: so ends the hold.
                why = crate::lifetime::told(&mut self.ended) => {
                    hold::cancel(&holder, waiting, "an administrator ended the session").await;
                    return Err(End::Cut(Cut::Terminated(why)));
                }
                // Watching for a disconnect; bytes a client sends ahead
                // are kept for after the answer.
                read = self.client.read_buf(&mut self.client_in) => match read {
                    Ok(n) if n > 0 && self.client_in.len() <= MAX_AHEAD => {}
                    _ => {
                        hold::cancel(&holder, waiting, "the client disconnected").await;
                        return Err(End::ClientGone);
                    }
                },
            }
        }
    }

    /// Sends `payload` upstream as a command and relays the answer.
    /// Sends a command upstream. An upstream that went away (one that
    /// closes on a packet over its `max_allowed_packet`, say) leaves the
    /// client an error, not a silent close.
    async fn send_upstream(&mut self, payload: &[u8]) -> Result<(), End> {
        let mut up = BytesMut::with_capacity(payload.len() + 4);
        codec::write(&mut up, &mut 0, payload);
        if self.upstream.write_all(&up).await.is_err() {
            self.refuse_midway(&mut 1);
            let _ = self.flush().await;
            return Err(End::UpstreamGone);
        }
        Ok(())
    }

    /// Sends `payload` upstream as a command and relays the answer: rows
    /// masked with the plan of their result's columns (or, for a cursor's
    /// FETCH, with `cursor`), errors scrubbed, every result recorded.
    async fn forward_raw(
        &mut self,
        payload: &[u8],
        expect: Expect,
        judged: Option<(u64, &[Statement])>,
        cursor: Option<Option<Arc<RowMask>>>,
    ) -> Result<Answer, End> {
        self.send_upstream(payload).await?;
        let binary = matches!(expect, Expect::Results { binary: true } | Expect::Fetch);
        let mut answer = Answer::default();
        let mut response = Response::new(self.deprecate_eof);
        response.expect(expect);
        let framer = Framer::new(self.snapshot.limits.max_message_size);
        let mut seq: u8 = 1;
        let mut index = 0usize;
        let mut origins: Vec<FieldOrigin> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut types: Vec<(u8, u16)> = Vec::new();
        let mut planned = cursor.is_some();
        let mut mask: Option<Arc<RowMask>> = cursor.flatten();
        let mut scratch = BytesMut::new();
        // With budgets on rows or bytes, or a result cap: what this answer
        // returned, counted however it ends, each row checked first.
        let mut tally = airlock_engine::limits::Tally::new(self.budget.as_ref());
        let mut result_rows = 0u64;
        while !response.done() {
            let packet = loop {
                match framer.next(&mut self.upstream_in) {
                    Ok(Some(p)) => break p,
                    Ok(None) => {
                        // Pass on what is ready before waiting for more.
                        self.flush().await?;
                        match self.upstream.read_buf(&mut self.upstream_in).await {
                            Ok(0) | Err(_) => {
                                self.refuse_midway(&mut seq);
                                let _ = self.flush().await;
                                return Err(End::UpstreamGone);
                            }
                            Ok(_) => {}
                        }
                    }
                    Err(_) => return Err(End::Protocol("the upstream sent a malformed packet")),
                }
            };
            let part = response
                .next(&packet.payload)
                .map_err(|e| End::Protocol(e.0))?;
            let at = judged.map(|(id, _)| At { id, index });
            match part {
                Part::ColumnCount(n) => {
                    result_rows = 0;
                    origins.clear();
                    names.clear();
                    types.clear();
                    mask = None;
                    planned = false;
                    origins.reserve(n.min(4096) as usize);
                }
                Part::Column(_) => {
                    let column = mysql_common::packets::Column::deserialize(
                        (),
                        &mut mysql_common::io::ParseBuf(&packet.payload),
                    );
                    let (origin, name, ty) = match &column {
                        Ok(c) => (
                            FieldOrigin::Named {
                                schema: c.schema_str().into_owned(),
                                table: c.org_table_str().into_owned(),
                                column: c.org_name_str().to_lowercase(),
                            },
                            c.name_str().into_owned(),
                            (c.column_type() as u8, c.character_set()),
                        ),
                        // Unreadable: masked whole.
                        Err(_) => (
                            FieldOrigin::Named {
                                schema: String::new(),
                                table: "?".into(),
                                column: String::new(),
                            },
                            "?".into(),
                            (0, 63),
                        ),
                    };
                    origins.push(origin);
                    names.push(name);
                    types.push(ty);
                }
                Part::ColumnsEnd | Part::Row | Part::ResultEnd(_)
                    if !planned && !origins.is_empty() =>
                {
                    planned = true;
                    mask = self.plan(judged.map(|(_, s)| s), index, &origins, &types);
                    if let Some(id) = judged.map(|(id, _)| id) {
                        self.recorder
                            .columns(id, Arc::from(std::mem::take(&mut names)));
                    }
                }
                _ => {}
            }
            match part {
                Part::Row => {
                    let row = match &mask {
                        Some(m) => {
                            scratch.clear();
                            if binary {
                                m.binary_row(&packet.payload, &mut scratch);
                            } else {
                                m.text_row(&packet.payload, &mut scratch);
                            }
                            &scratch[..]
                        }
                        None => &packet.payload[..],
                    };
                    if let Some(exceeded) = tally.as_mut().and_then(|t| t.row(row.len()).err()) {
                        // The result is cut before this row, and the
                        // session ends: the upstream's statement is
                        // abandoned with its connection. The recording
                        // says why the result ends there.
                        crate::metrics::Metrics.limit_refusal("mysql", exceeded.limit());
                        if let Some(at) = at {
                            self.recorder.error(
                                at,
                                errno::USER_LIMIT_REACHED.to_string(),
                                exceeded.message(),
                            );
                        }
                        let message = hinted(&exceeded.message(), &exceeded.hint());
                        codec::err(
                            &mut self.out,
                            &mut seq,
                            errno::USER_LIMIT_REACHED,
                            "42000",
                            &message,
                        );
                        return Err(End::Limit(exceeded));
                    }
                    if let Some(at) = at {
                        if binary {
                            let values = super::binary::row_values(row, &types).unwrap_or_default();
                            self.recorder.row(at, values.into_iter());
                        } else {
                            let mut b = row;
                            let values = std::iter::from_fn(|| {
                                if b.is_empty() {
                                    None
                                } else {
                                    codec::text_value(&mut b).ok()
                                }
                            });
                            self.recorder.row(at, values);
                        }
                    }
                    codec::write(&mut self.out, &mut seq, row);
                    result_rows += 1;
                }
                Part::Err => {
                    self.status_stale = true;
                    let e = codec::err_info(&packet.payload);
                    let (code, state, message) = match e {
                        Some(e) => (
                            e.code,
                            String::from_utf8_lossy(&e.sqlstate).into_owned(),
                            String::from_utf8_lossy(&e.message).into_owned(),
                        ),
                        None => (errno::UNKNOWN_ERROR, "HY000".into(), "error".into()),
                    };
                    let message = self.scrub(&message);
                    if let Some(at) = at {
                        self.recorder.error(at, code.to_string(), message.clone());
                    }
                    codec::err(&mut self.out, &mut seq, code, &state, &message);
                }
                Part::Prepared {
                    statement, params, ..
                } => {
                    answer.prepared = Some((statement, params));
                    codec::write(&mut self.out, &mut seq, &packet.payload);
                }
                Part::Ok(info) | Part::ResultEnd(info) => {
                    self.status = info.status;
                    self.status_stale = false;
                    // Under review, a write's rows: its OK's count, or
                    // those its `RETURNING` returned.
                    if self.review.is_some() {
                        answer.affected.push(match part {
                            Part::Ok(_) => (index, info.affected_rows),
                            _ => (index, result_rows),
                        });
                    }
                    result_rows = 0;
                    // Each result of a multi-statement text counts alone.
                    if let Some(t) = tally.as_mut() {
                        t.end();
                    }
                    if matches!(part, Part::ResultEnd(_))
                        && info.status & status::CURSOR_EXISTS != 0
                    {
                        answer.cursor = Some(mask.clone());
                    }
                    if let Some(at) = at {
                        let tag = match part {
                            Part::Ok(_) => Some(format!("OK {}", info.affected_rows)),
                            _ => None,
                        };
                        self.recorder.complete(at, tag, false);
                    }
                    index += 1;
                    codec::write(&mut self.out, &mut seq, &packet.payload);
                }
                _ => codec::write(&mut self.out, &mut seq, &packet.payload),
            }
        }
        Ok(answer)
    }

    /// The upstream went away mid-answer: the client gets an error rather
    /// than a truncated result.
    fn refuse_midway(&mut self, seq: &mut u8) {
        codec::err(
            &mut self.out,
            seq,
            errno::UNKNOWN_ERROR,
            "HY000",
            "airlock: the upstream connection was lost during the statement",
        );
    }

    fn scrub(&self, message: &str) -> String {
        self.masking
            .as_ref()
            .and_then(|catalog| super::mask::scrub(&self.snapshot.masking, catalog, message))
            .unwrap_or_else(|| message.to_owned())
    }

    fn plan(
        &self,
        statements: Option<&[Statement]>,
        index: usize,
        origins: &[FieldOrigin],
        types: &[(u8, u16)],
    ) -> Option<Arc<RowMask>> {
        let catalog = self.masking.as_ref()?;
        let lineage = statements
            .and_then(|s| s.get(index))
            .map(|s| std::borrow::Cow::Borrowed(&s.lineage))
            .unwrap_or_else(|| std::borrow::Cow::Owned(airlock_policy::lineage::Lineage::opaque()));
        let plan = self
            .snapshot
            .masking
            .policy
            .plan(catalog, &lineage, origins);
        // SHOW output quotes values it read elsewhere (SHOW WARNINGS after
        // `CAST(ssn AS UNSIGNED)`, SHOW PROCESSLIST's statement texts):
        // scrubbed like an error message.
        let show = statements
            .and_then(|s| s.get(index))
            .is_some_and(|s| s.kind == airlock_policy::StatementKind::Show);
        let scrub = (show && catalog.any_sensitive).then(|| Arc::clone(catalog));
        RowMask::new(&self.snapshot.masking, plan, types, scrub).map(Arc::new)
    }
}

use mysql_common::proto::MyDeserialize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hinted_message_fits_what_clients_keep_with_its_hint_whole() {
        let command = r#"airlock access request shop --role admin --for 30m --reason "<why>""#;
        let long_hint = Hint::never("access", "x".repeat(2000)).with_command(command.into());
        let long_message = "é".repeat(400);
        for (message, hint) in [
            ("short", &long_hint),
            (long_message.as_str(), &long_hint),
            (long_message.as_str(), &Hint::never("r", "fine")),
        ] {
            let m = hinted(message, hint);
            assert!(m.len() <= 511, "{}", m.len());
            let (said, json) = m.split_once(" HINT: ").expect("a hint");
            assert!(message.starts_with(said.trim_end_matches('…')), "{said}");
            let v: serde_json::Value = serde_json::from_str(json).expect("whole JSON");
            assert_eq!(v["rule"], hint.rule.as_str());
            assert_eq!(v["command"].as_str(), hint.command.as_deref());
        }
    }
}
