//! Stored events out to other tools (`airlock audit export`): JSON lines,
//! and OCSF for SIEMs.
//!
//! # JSON lines
//!
//! [`jsonl_line`] writes one object per event:
//! `{"stream","seq","prev","hash","recorded_at","event"}`, where `event` is
//! the stored payload itself, byte for byte when it is JSON on one line (as
//! every event is: a reader can recompute the chain hash from the line),
//! and `"payload_b64"` takes its place when the payload is not JSON.
//!
//! # OCSF
//!
//! [`ocsf`] maps one event to the Open Cybersecurity Schema Framework,
//! version [`OCSF_VERSION`], class **Datastore Activity** (`class_uid` 6005,
//! category Application Activity, `category_uid` 6), with the
//! `security_control` profile for decisions. `type_uid` is `class_uid * 100
//! + activity_id`; `time` is the event's `at` in Unix milliseconds.
//!
//! | airlock event | OCSF |
//! |---|---|
//! | every event | `metadata`: `version`, `product` (`airlock`), `uid` (`<stream>:<seq>`), `sequence` (seq), `logged_time` (when the store received it), `original_time` (`at`), `event_code` (the kind), `correlation_uid` (the session id) |
//! | `session_start` | activity 3 *Connect*; `actor.user` (`uid`, `name`: the token subject; `groups`), `actor.session` (`uid`: session id, `issuer`), `actor.app_name` (application_name); `src_endpoint` (`ip`, `port` of the client); `database` (`name`: the connection, `type_id` 1 *Relational*); `policy.name` (the access rule); `action_id`/`disposition_id` 1 *Allowed*; `status_id` 1 *Success* |
//! | `statement` | activity by its first kind: `select`, `show`, `explain`, `copy_out` → 4 *Query*; `insert` → 6 *Create*; `update` → 2 *Update*; `delete`, `truncate` → 7 *Delete*; `merge`, `copy_in` → 5 *Write*; anything else → 99 *Other* (`activity_name` is the kind). `query_info.query_string` (the redacted text), `query_info.uid` (`<session>/<seq>`). Decision: allow → `action_id` 1 *Allowed*, `disposition_id` 1 *Allowed*, `status_id` 1 *Success*; deny → 2 *Denied*, 2 *Blocked*, 2 *Failure*, `severity_id` 3 *Medium*; approve → 1 *Allowed* and 8 *Approved* once released, 2 *Denied* and 25 *Rejected* when refused, 0 *Unknown* and 14 *Delayed* otherwise. `policy.name` is the deciding guardrail; a refusal's SQLSTATE and message are `status_code` and `status_detail` |
//! | `result` | activity by its command tag (`SELECT`/`FETCH`/`SHOW` → Query, `INSERT` → Create, `UPDATE` → Update, `DELETE` → Delete, `MERGE`/`COPY` → Write), 0 *Unknown* without one; `duration` (ms); success → `status_id` 1, `status_code` `00000`; an error → `status_id` 2 *Failure* with its SQLSTATE and message |
//! | `session_end` | activity 99 *Other*, `activity_name` `Disconnect`; `status_detail` is the reason |
//! | `policy_reload` | class **Application Lifecycle** (6002), activity 99 *Other*, `activity_name` `Reload`, `app` (airlock); `status_id` from `ok`, `status_detail` the refusal |
//! | not an event | class **Base Event** (0), activity 0 *Unknown* |
//!
//! Everything else (act, role, mode, unmask, TLS, seq, index, kinds,
//! effects, parameters, rows, tag, sample, approval id, the chain's `prev`
//! and `hash`, the schema version `v`) goes to `unmapped` under its own
//! name. Statements, results and session ends carry only the session id: an
//! [`Ocsf`] mapper fed a stream in order (as the store pages it) remembers
//! each session's start and fills their `actor`, `src_endpoint` and
//! `database` too.

use std::collections::HashMap;
use std::time::SystemTime;

use airlock_store::EventRow;
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::event::{
    Body, Decision, Event, PolicyReload, SessionEnd, SessionStart, Statement, StatementResult, hex,
};

/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.5.0";

/// Parses a `--since`/`since=` bound into Unix milliseconds: a duration
/// before `now` (`90s`, `15m`, `1h`, `7d`, `1h 30m`), an RFC 3339 time
/// (`2024-05-01T12:00:00Z`, fractions allowed; `T` or a space, `Z`
/// optional: UTC), or a date (`2024-05-01`, midnight UTC).
pub fn parse_since(text: &str, now: SystemTime) -> Result<i64, String> {
    let text = text.trim();
    let at = if let Ok(d) = humantime::parse_duration(text) {
        now.checked_sub(d)
            .ok_or_else(|| format!("{text:?} reaches before 1970"))?
    } else if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        t
    } else if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")) {
        t
    } else {
        return Err(format!(
            "{text:?} is neither a duration (such as 1h or 30m) nor an RFC 3339 time \
             (such as 2024-05-01T12:00:00Z)"
        ));
    };
    Ok(match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    })
}

/// Appends `row` as one line of JSON (newline included) to `out`.
pub fn jsonl_line(row: &EventRow, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"stream\":\"");
    out.extend_from_slice(row.stream.hyphenated().to_string().as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(row.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(hex(&row.prev).as_bytes());
    out.extend_from_slice(b"\",\"hash\":\"");
    out.extend_from_slice(hex(&row.hash).as_bytes());
    out.extend_from_slice(b"\",\"recorded_at\":");
    out.extend_from_slice(row.recorded_at.to_string().as_bytes());
    let payload = &row.payload;
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend_from_slice(b",\"event\":");
        let one_line = payload.trim_ascii().len() == payload.len()
            && !payload.contains(&b'\n')
            && !payload.contains(&b'\r');
        if one_line {
            // The stored bytes themselves: the line proves the hash.
            out.extend_from_slice(payload);
        } else {
            // Valid JSON with spaces around or lines in it: the same value,
            // compact.
            let value: Json = serde_json::from_slice(payload).expect("checked above");
            serde_json::to_writer(&mut *out, &value).expect("writing to a Vec");
        }
    } else {
        out.extend_from_slice(b",\"payload_b64\":\"");
        out.extend_from_slice(base64(&row.payload).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

/// `row` as one OCSF event, without session context (see [`Ocsf`]).
pub fn ocsf(row: &EventRow) -> Json {
    Ocsf::new().map(row)
}

/// Maps events to OCSF, remembering each session's start so that the
/// session's later events name their actor, source and database.
///
/// Memory is bounded: a session is forgotten at its end, and everything is
/// forgotten past [`Ocsf::MAX_SESSIONS`] open sessions (later events of
/// those sessions then map without context).
#[derive(Debug, Default)]
pub struct Ocsf {
    sessions: HashMap<Uuid, SessionStart>,
}

impl Ocsf {
    /// Open sessions remembered at most.
    pub const MAX_SESSIONS: usize = 100_000;

    pub fn new() -> Ocsf {
        Ocsf::default()
    }

    /// Notes what `row` tells the events after it (a session started or
    /// ended) without mapping it: for events left out of an export.
    pub fn remember(&mut self, row: &EventRow) {
        if let Ok(event) = Event::decode(&row.payload) {
            match &event.body {
                Body::SessionStart(s) => self.start(s),
                Body::SessionEnd(s) => {
                    self.sessions.remove(&s.session);
                }
                _ => {}
            }
        }
    }

    fn start(&mut self, s: &SessionStart) {
        if self.sessions.len() >= Self::MAX_SESSIONS {
            self.sessions.clear();
        }
        self.sessions.insert(s.session, s.clone());
    }

    /// Maps one event (feed a stream's events in seq order).
    pub fn map(&mut self, row: &EventRow) -> Json {
        let Ok(event) = Event::decode(&row.payload) else {
            return not_an_event(row);
        };
        match &event.body {
            Body::SessionStart(s) => {
                self.start(s);
                session_start(row, &event, s)
            }
            Body::Statement(s) => statement(row, &event, s, self.sessions.get(&s.session)),
            Body::Result(r) => result(row, &event, r, self.sessions.get(&r.session)),
            Body::SessionEnd(s) => {
                let start = self.sessions.remove(&s.session);
                session_end(row, &event, s, start.as_ref())
            }
            Body::PolicyReload(p) => policy_reload(row, &event, p),
            Body::Approval(a) => approval(row, &event, a),
        }
    }
}

const DATASTORE: (u32, &str) = (6005, "Datastore Activity");
const LIFECYCLE: (u32, &str) = (6002, "Application Lifecycle");

fn product() -> Json {
    json!({
        "name": "airlock",
        "vendor_name": "airlock",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The attributes every event has.
fn base(
    row: &EventRow,
    event: &Event,
    (class_uid, class_name): (u32, &str),
    (activity_id, activity_name): (u32, &str),
) -> Map<String, Json> {
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": product(),
        "uid": format!("{}:{}", row.stream.hyphenated(), row.seq),
        "sequence": row.seq,
        "logged_time": row.recorded_at,
        "original_time": event.at,
        "event_code": event.kind(),
    });
    if let Some(session) = event.session() {
        metadata["correlation_uid"] = json!(session.hyphenated().to_string());
    }
    if class_uid == DATASTORE.0 {
        metadata["profiles"] = json!(["security_control"]);
    }
    let mut o = Map::new();
    o.insert("class_uid".into(), json!(class_uid));
    o.insert("class_name".into(), json!(class_name));
    o.insert("category_uid".into(), json!(6));
    o.insert("category_name".into(), json!("Application Activity"));
    o.insert("activity_id".into(), json!(activity_id));
    o.insert("activity_name".into(), json!(activity_name));
    o.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    o.insert(
        "type_name".into(),
        json!(format!("{class_name}: {activity_name}")),
    );
    o.insert("time".into(), json!(event.at_millis()));
    set_severity(&mut o, 1);
    o.insert("metadata".into(), metadata);
    o
}

fn set_severity(o: &mut Map<String, Json>, id: u32) {
    let name = match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Unknown",
    };
    o.insert("severity_id".into(), json!(id));
    o.insert("severity".into(), json!(name));
}

fn set_status(o: &mut Map<String, Json>, ok: bool) {
    o.insert("status_id".into(), json!(if ok { 1 } else { 2 }));
    o.insert(
        "status".into(),
        json!(if ok { "Success" } else { "Failure" }),
    );
}

fn set_disposition(o: &mut Map<String, Json>, action: u32, disposition: u32) {
    let action_name = match action {
        1 => "Allowed",
        2 => "Denied",
        _ => "Unknown",
    };
    let disposition_name = match disposition {
        1 => "Allowed",
        2 => "Blocked",
        8 => "Approved",
        14 => "Delayed",
        25 => "Rejected",
        _ => "Unknown",
    };
    o.insert("action_id".into(), json!(action));
    o.insert("action".into(), json!(action_name));
    o.insert("disposition_id".into(), json!(disposition));
    o.insert("disposition".into(), json!(disposition_name));
}

/// `unmapped`, with what every event leaves over: the chain and `v`.
fn unmapped(row: &EventRow, event: &Event) -> Map<String, Json> {
    let mut u = Map::new();
    u.insert("v".into(), json!(event.v));
    u.insert("prev".into(), json!(hex(&row.prev)));
    u.insert("hash".into(), json!(hex(&row.hash)));
    u
}

/// What a session's start says about every event of the session.
fn session_context(o: &mut Map<String, Json>, session: Uuid, start: Option<&SessionStart>) {
    let mut session_obj = json!({ "uid": session.hyphenated().to_string() });
    let Some(s) = start else {
        o.insert("actor".into(), json!({ "session": session_obj }));
        o.insert("type_id".into(), json!(1));
        o.insert("type".into(), json!("Database"));
        return;
    };
    session_obj["issuer"] = json!(s.issuer);
    let groups: Vec<Json> = s.groups.iter().map(|g| json!({ "name": g })).collect();
    let mut actor = json!({
        "user": { "uid": s.principal, "name": s.principal, "groups": groups },
        "session": session_obj,
    });
    if let Some(app) = &s.application_name {
        actor["app_name"] = json!(app);
    }
    o.insert("actor".into(), actor);
    o.insert("src_endpoint".into(), endpoint(&s.client_addr));
    o.insert(
        "database".into(),
        json!({ "name": s.connection, "type": "Relational", "type_id": 1 }),
    );
    o.insert("type_id".into(), json!(1));
    o.insert("type".into(), json!("Database"));
}

/// `ip:port` (or `[v6]:port`) as a network endpoint; anything else (a Unix
/// socket) by name.
fn endpoint(addr: &str) -> Json {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({ "ip": a.ip().to_string(), "port": a.port() }),
        Err(_) => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => json!({ "ip": ip.to_string() }),
            Err(_) => json!({ "name": addr }),
        },
    }
}

fn session_start(row: &EventRow, event: &Event, s: &SessionStart) -> Json {
    let mut o = base(row, event, DATASTORE, (3, "Connect"));
    session_context(&mut o, s.session, Some(s));
    set_status(&mut o, true);
    set_disposition(&mut o, 1, 1);
    o.insert("policy".into(), json!({ "name": s.access_rule }));
    o.insert(
        "message".into(),
        json!(format!(
            "{} connected to {} as {}",
            s.principal, s.connection, s.role
        )),
    );
    let mut u = unmapped(row, event);
    if let Some(act) = &s.act {
        u.insert("act".into(), json!(act));
    }
    if !s.act_chain.is_empty() {
        u.insert("act_chain".into(), json!(s.act_chain));
    }
    u.insert("role".into(), json!(s.role));
    u.insert("mode".into(), json!(s.mode));
    u.insert("unmask".into(), json!(s.unmask));
    u.insert("tls".into(), json!(s.tls));
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

/// The activity of a statement kind.
fn kind_activity(kind: &str) -> (u32, String) {
    match kind {
        "select" | "show" | "explain" | "copy_out" => (4, "Query".into()),
        "insert" => (6, "Create".into()),
        "update" => (2, "Update".into()),
        "delete" | "truncate" => (7, "Delete".into()),
        "merge" | "copy_in" => (5, "Write".into()),
        other => (99, other.to_string()),
    }
}

/// The activity of a command tag.
fn tag_activity(tag: &str) -> (u32, String) {
    let word = tag.split(' ').next().unwrap_or("");
    match word {
        "SELECT" | "FETCH" | "SHOW" => (4, "Query".into()),
        "INSERT" => (6, "Create".into()),
        "UPDATE" => (2, "Update".into()),
        "DELETE" => (7, "Delete".into()),
        "MERGE" | "COPY" => (5, "Write".into()),
        "" => (0, "Unknown".into()),
        other => (99, other.to_ascii_lowercase()),
    }
}

fn statement(row: &EventRow, event: &Event, s: &Statement, start: Option<&SessionStart>) -> Json {
    let (activity_id, activity_name) = s
        .kinds
        .first()
        .map_or((0, "Unknown".to_string()), |k| kind_activity(k));
    let mut o = base(row, event, DATASTORE, (activity_id, &activity_name));
    session_context(&mut o, s.session, start);
    o.insert(
        "query_info".into(),
        json!({
            "query_string": s.text,
            "uid": format!("{}/{}", s.session.hyphenated(), s.seq),
        }),
    );
    let (action, disposition, ok) = match (s.decision, &s.approval, &s.refusal) {
        (Decision::Allow, _, _) => (1, 1, true),
        (Decision::Deny, _, _) => (2, 2, false),
        (Decision::Approve, _, Some(_)) => (2, 25, false),
        (Decision::Approve, Some(_), None) => (1, 8, true),
        (Decision::Approve, None, None) => (0, 14, true),
    };
    set_disposition(&mut o, action, disposition);
    set_status(&mut o, ok);
    if s.decision == Decision::Deny {
        set_severity(&mut o, 3);
    }
    if let Some(rule) = &s.rule {
        o.insert("policy".into(), json!({ "name": rule }));
    }
    if let Some(r) = &s.refusal {
        o.insert("status_code".into(), json!(r.code));
        o.insert("status_detail".into(), json!(r.message));
    }
    let verb = match s.decision {
        Decision::Allow => "allowed",
        Decision::Deny => "denied",
        Decision::Approve => "held for approval",
    };
    let mut message = format!("statement {verb}");
    if let Some(rule) = &s.rule {
        message.push_str(&format!(" by rule {rule:?}"));
    }
    o.insert("message".into(), json!(message));
    let mut u = unmapped(row, event);
    u.insert("seq".into(), json!(s.seq));
    u.insert("protocol".into(), json!(s.protocol));
    u.insert("kinds".into(), json!(s.kinds));
    u.insert("effects".into(), json!(s.effects));
    if !s.params.is_empty() {
        u.insert("params".into(), json!(s.params));
    }
    if let Some(t) = &s.truncated {
        u.insert("truncated".into(), json!(t));
    }
    if let Some(a) = &s.approval {
        u.insert("approval".into(), json!(a));
    }
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

fn result(
    row: &EventRow,
    event: &Event,
    r: &StatementResult,
    start: Option<&SessionStart>,
) -> Json {
    let (activity_id, activity_name) = tag_activity(r.tag.as_deref().unwrap_or(""));
    let mut o = base(row, event, DATASTORE, (activity_id, &activity_name));
    session_context(&mut o, r.session, start);
    o.insert("duration".into(), json!(r.duration_us / 1000));
    match &r.error {
        Some(e) => {
            set_status(&mut o, false);
            o.insert("status_code".into(), json!(e.code));
            o.insert("status_detail".into(), json!(e.message));
            o.insert("message".into(), json!(e.message));
        }
        None => {
            set_status(&mut o, true);
            o.insert("status_code".into(), json!("00000"));
            if let Some(tag) = &r.tag {
                o.insert("message".into(), json!(tag));
            }
        }
    }
    let mut u = unmapped(row, event);
    u.insert("seq".into(), json!(r.seq));
    u.insert("index".into(), json!(r.index));
    u.insert("rows".into(), json!(r.rows));
    u.insert("duration_us".into(), json!(r.duration_us));
    if let Some(tag) = &r.tag {
        u.insert("tag".into(), json!(tag));
    }
    if r.suspended {
        u.insert("suspended".into(), json!(true));
    }
    if let Some(sample) = &r.sample {
        u.insert("sample".into(), json!(sample));
    }
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

fn session_end(
    row: &EventRow,
    event: &Event,
    s: &SessionEnd,
    start: Option<&SessionStart>,
) -> Json {
    let mut o = base(row, event, DATASTORE, (99, "Disconnect"));
    session_context(&mut o, s.session, start);
    set_status(&mut o, true);
    o.insert("status_detail".into(), json!(s.reason));
    o.insert(
        "message".into(),
        json!(format!("session ended: {}", s.reason)),
    );
    let mut u = unmapped(row, event);
    u.insert("statements".into(), json!(s.statements));
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

fn policy_reload(row: &EventRow, event: &Event, p: &PolicyReload) -> Json {
    let mut o = base(row, event, LIFECYCLE, (99, "Reload"));
    o.insert("app".into(), product());
    set_status(&mut o, p.ok);
    if let Some(e) = &p.error {
        o.insert("status_detail".into(), json!(e));
    }
    o.insert(
        "message".into(),
        json!(if p.ok {
            "configuration reloaded"
        } else {
            "configuration reload refused"
        }),
    );
    let mut u = unmapped(row, event);
    if let Some(sha) = &p.config_sha256 {
        u.insert("config_sha256".into(), json!(sha));
    }
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

/// An approval or grant event: Datastore Activity "Other", with the
/// approval in `unmapped` (OCSF has no class for a held statement).
fn approval(row: &EventRow, event: &Event, a: &crate::event::Approval) -> Json {
    let mut o = base(row, event, DATASTORE, (99, "Other"));
    o.insert("app".into(), product());
    let ok = !matches!(
        a.action.as_str(),
        "denied" | "timed_out" | "cancelled" | "abandoned"
    );
    set_status(&mut o, ok);
    let mut message = format!("{} {} {}", a.request, a.id, a.action);
    if let Some(by) = &a.by {
        message.push_str(&format!(" by {by}"));
    }
    o.insert("message".into(), json!(message));
    let mut u = unmapped(row, event);
    u.insert(
        "approval".into(),
        serde_json::to_value(a).unwrap_or(Json::Null),
    );
    o.insert("unmapped".into(), Json::Object(u));
    Json::Object(o)
}

/// A payload that is not an event of this schema version.
fn not_an_event(row: &EventRow) -> Json {
    let mut u = Map::new();
    u.insert("prev".into(), json!(hex(&row.prev)));
    u.insert("hash".into(), json!(hex(&row.hash)));
    match serde_json::from_slice::<Json>(&row.payload) {
        Ok(v) => u.insert("event".into(), v),
        Err(_) => u.insert("payload_b64".into(), json!(base64(&row.payload))),
    };
    json!({
        "class_uid": 0,
        "class_name": "Base Event",
        "category_uid": 0,
        "category_name": "Uncategorized",
        "activity_id": 0,
        "activity_name": "Unknown",
        "type_uid": 0,
        "type_name": "Base Event: Unknown",
        "severity_id": 1,
        "severity": "Informational",
        "time": row.recorded_at,
        "metadata": {
            "version": OCSF_VERSION,
            "product": product(),
            "uid": format!("{}:{}", row.stream.hyphenated(), row.seq),
            "sequence": row.seq,
            "logged_time": row.recorded_at,
        },
        "unmapped": u,
    })
}

/// Standard base64 with padding (a stored payload that is not JSON, as
/// `payload_b64`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::event::{ErrorInfo, Protocol, Sample, Value};

    fn session() -> Uuid {
        Uuid::parse_str("01900000-0000-7000-8000-000000000001").unwrap()
    }

    fn stream() -> Uuid {
        Uuid::parse_str("01900000-0000-7000-8000-0000000000ff").unwrap()
    }

    fn row(seq: u64, payload: Vec<u8>) -> EventRow {
        EventRow {
            stream: stream(),
            seq,
            prev: [1; 32],
            hash: [2; 32],
            payload,
            session_id: Some(session().to_string()),
            kind: None,
            principal: None,
            connection: None,
            decision: None,
            recorded_at: 1_700_000_000_500,
        }
    }

    fn event(body: Body) -> Event {
        Event::at(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body,
        )
    }

    fn start() -> SessionStart {
        SessionStart {
            session: session(),
            principal: "ci-bot".into(),
            issuer: "https://issuer.example".into(),
            groups: vec!["agents".into()],
            act: Some("alice".into()),
            act_chain: Vec::new(),
            connection: "app".into(),
            role: "readonly".into(),
            access_rule: "agents".into(),
            mode: "read-only".into(),
            unmask: false,
            client_addr: "[::1]:5433".into(),
            grant: None,
            application_name: Some("psql".into()),
            tls: false,
            door: crate::event::Door::Postgres,
        }
    }

    fn statement(decision: Decision) -> Statement {
        Statement {
            session: session(),
            seq: 3,
            protocol: Protocol::Extended,
            text: "delete from t where id = $1".into(),
            truncated: None,
            params: vec![Value::Text("7".into())],
            kinds: vec!["delete".into()],
            effects: vec!["write".into()],
            decision,
            rule: Some("no-deletes".into()),
            refusal: (decision == Decision::Deny).then(|| ErrorInfo {
                code: "42501".into(),
                message: "denied".into(),
            }),
            approval: None,
        }
    }

    #[test]
    fn jsonl_keeps_the_payload_bytes() {
        let e = event(Body::SessionEnd(SessionEnd {
            session: session(),
            reason: "client closed".into(),
            statements: 2,
        }));
        let payload = e.encode();
        let mut out = Vec::new();
        jsonl_line(&row(9, payload.clone()), &mut out);
        let line = String::from_utf8(out).unwrap();
        let expected = format!(
            "{{\"stream\":\"{}\",\"seq\":9,\"prev\":\"{}\",\"hash\":\"{}\",\"recorded_at\":1700000000500,\"event\":{}}}\n",
            stream(),
            "01".repeat(32),
            "02".repeat(32),
            std::str::from_utf8(&payload).unwrap()
        );
        assert_eq!(line, expected);
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"]["reason"], "client closed");
    }

    #[test]
    fn jsonl_handles_multiline_and_non_json_payloads() {
        let mut out = Vec::new();
        jsonl_line(&row(1, b"{\n \"a\": 1\n}\n".to_vec()), &mut out);
        jsonl_line(&row(2, vec![0xff, 0x00, b'x']), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(",\"event\":{\"a\":1}}"), "{}", lines[0]);
        assert!(
            lines[1].ends_with(",\"payload_b64\":\"/wB4\"}"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn since_takes_durations_times_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        assert_eq!(parse_since("1h", now), Ok(1_714_561_200_000));
        assert_eq!(parse_since(" 90s ", now), Ok(1_714_564_710_000));
        assert_eq!(
            parse_since("2024-05-01T12:00:00Z", now),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_since("2024-05-01T12:00:00.250Z", now),
            Ok(1_714_564_800_250)
        );
        assert_eq!(
            parse_since("2024-05-01 12:00:00", now),
            Ok(1_714_564_800_000)
        );
        assert_eq!(parse_since("2024-05-01", now), Ok(1_714_521_600_000));
        let err = parse_since("yesterday", now).unwrap_err();
        assert!(err.contains("neither a duration"), "{err}");
        assert!(parse_since("", now).is_err());
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn session_start_is_a_connect() {
        let v = ocsf(&row(1, event(Body::SessionStart(start())).encode()));
        assert_eq!(v["class_uid"], 6005);
        assert_eq!(v["class_name"], "Datastore Activity");
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 3);
        assert_eq!(v["type_uid"], 600503);
        assert_eq!(v["time"], 1_700_000_000_123i64);
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["disposition_id"], 1);
        assert_eq!(v["actor"]["user"]["uid"], "ci-bot");
        assert_eq!(v["actor"]["user"]["groups"][0]["name"], "agents");
        assert_eq!(v["actor"]["session"]["uid"], session().to_string());
        assert_eq!(v["actor"]["app_name"], "psql");
        assert_eq!(v["src_endpoint"], json!({"ip": "::1", "port": 5433}));
        assert_eq!(v["database"]["name"], "app");
        assert_eq!(v["policy"]["name"], "agents");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["metadata"]["product"]["name"], "airlock");
        assert_eq!(v["metadata"]["uid"], format!("{}:1", stream()));
        assert_eq!(v["metadata"]["logged_time"], 1_700_000_000_500i64);
        assert_eq!(v["metadata"]["correlation_uid"], session().to_string());
        assert_eq!(v["unmapped"]["act"], "alice");
        assert_eq!(v["unmapped"]["role"], "readonly");
        assert_eq!(v["unmapped"]["tls"], false);
        assert_eq!(v["unmapped"]["hash"], "02".repeat(32));
    }

    #[test]
    fn statements_carry_query_and_decision_and_session_context() {
        let mut mapper = Ocsf::new();
        mapper.map(&row(1, event(Body::SessionStart(start())).encode()));
        let denied = mapper.map(&row(
            2,
            event(Body::Statement(statement(Decision::Deny))).encode(),
        ));
        assert_eq!(denied["activity_id"], 7);
        assert_eq!(denied["type_uid"], 600507);
        assert_eq!(
            denied["query_info"]["query_string"],
            "delete from t where id = $1"
        );
        assert_eq!(denied["query_info"]["uid"], format!("{}/3", session()));
        assert_eq!(denied["action_id"], 2);
        assert_eq!(denied["disposition_id"], 2);
        assert_eq!(denied["disposition"], "Blocked");
        assert_eq!(denied["status_id"], 2);
        assert_eq!(denied["status_code"], "42501");
        assert_eq!(denied["severity_id"], 3);
        assert_eq!(denied["policy"]["name"], "no-deletes");
        assert_eq!(denied["actor"]["user"]["name"], "ci-bot");
        assert_eq!(denied["unmapped"]["params"], json!(["7"]));
        assert_eq!(denied["unmapped"]["kinds"], json!(["delete"]));

        let mut held = statement(Decision::Approve);
        held.approval = Some("apr-1".into());
        held.kinds = vec!["ddl".into()];
        let approved = mapper.map(&row(3, event(Body::Statement(held)).encode()));
        assert_eq!(approved["disposition_id"], 8);
        assert_eq!(approved["action_id"], 1);
        assert_eq!(approved["activity_id"], 99);
        assert_eq!(approved["activity_name"], "ddl");
        assert_eq!(approved["type_uid"], 600599);
        assert_eq!(approved["unmapped"]["approval"], "apr-1");

        // Remembered without being mapped.
        let mut later = Ocsf::new();
        later.remember(&row(1, event(Body::SessionStart(start())).encode()));
        let v = later.map(&row(
            2,
            event(Body::Statement(statement(Decision::Allow))).encode(),
        ));
        assert_eq!(v["actor"]["user"]["uid"], "ci-bot");

        // Without the start, only the session id is known.
        let alone = ocsf(&row(
            2,
            event(Body::Statement(statement(Decision::Allow))).encode(),
        ));
        assert_eq!(
            alone["actor"],
            json!({"session": {"uid": session().to_string()}})
        );
        assert!(alone.get("src_endpoint").is_none());
        assert_eq!(alone["disposition_id"], 1);
        assert_eq!(alone["status_id"], 1);
    }

    #[test]
    fn results_session_ends_and_reloads() {
        let mut mapper = Ocsf::new();
        mapper.map(&row(1, event(Body::SessionStart(start())).encode()));
        let r = StatementResult {
            session: session(),
            seq: 3,
            index: 0,
            duration_us: 2_500,
            rows: 2,
            tag: Some("SELECT 2".into()),
            suspended: false,
            error: None,
            flags: Vec::new(),
            sample: Some(Sample {
                columns: vec!["a".into()],
                rows: vec![vec![Value::Null], vec![Value::Text("x".into())]],
                truncated: false,
                withheld: None,
            }),
        };
        let v = mapper.map(&row(2, event(Body::Result(r.clone())).encode()));
        assert_eq!(v["activity_id"], 4);
        assert_eq!(v["duration"], 2);
        assert_eq!(v["status_code"], "00000");
        assert_eq!(v["unmapped"]["rows"], 2);
        assert_eq!(v["unmapped"]["sample"]["rows"], json!([[null], ["x"]]));
        assert_eq!(v["database"]["name"], "app");

        let failed = StatementResult {
            tag: None,
            flags: Vec::new(),
            sample: None,
            error: Some(ErrorInfo {
                code: "57014".into(),
                message: "canceling statement".into(),
            }),
            ..r
        };
        let v = mapper.map(&row(3, event(Body::Result(failed)).encode()));
        assert_eq!(v["activity_id"], 0);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_code"], "57014");

        let end = event(Body::SessionEnd(SessionEnd {
            session: session(),
            reason: "token expired".into(),
            statements: 1,
        }));
        let v = mapper.map(&row(4, end.encode()));
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "Disconnect");
        assert_eq!(v["status_detail"], "token expired");
        assert_eq!(v["actor"]["user"]["uid"], "ci-bot");
        assert!(mapper.sessions.is_empty());

        let reload = event(Body::PolicyReload(PolicyReload {
            ok: false,
            error: Some("bad yaml".into()),
            config_sha256: Some("ab".into()),
        }));
        let v = ocsf(&row(5, reload.encode()));
        assert_eq!(v["class_uid"], 6002);
        assert_eq!(v["type_uid"], 600299);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["app"]["name"], "airlock");
        assert!(v["metadata"].get("correlation_uid").is_none());

        let v = ocsf(&row(6, b"{\"kind\":\"approval\"}".to_vec()));
        assert_eq!(v["class_uid"], 0);
        assert_eq!(v["unmapped"]["event"]["kind"], "approval");
    }
}
