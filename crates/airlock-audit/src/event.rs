//! The audit event schema, version 2 (SPEC §9, `docs/audit.md`).
//!
//! Version 2 adds the door a session came through (`session_start.door`:
//! `postgres`, `mysql`, `mcp`) and names an error's code generically
//! (`code`: a SQLSTATE, a MySQL error number, a JSON-RPC code). Version 1
//! events still decode (a session without `door` came through the
//! PostgreSQL door; `sqlstate` reads as `code`), and verify unchanged: the
//! journal and the store hash the bytes as written.
//!
//! Every event is one JSON object with `v`, `at` and `kind`; the rest
//! depends on the kind. The bytes [`Event::encode`] produces are what the
//! journal hashes and the store keeps: they are never re-encoded, so field
//! order does not matter to `verify`, only to readers' eyes.
//!
//! A statement is two events: `statement`, appended before it goes
//! upstream (its text, parameters and decision), and `result`, appended when
//! its answer is complete (rows, command tag, error, sample, duration). Both
//! carry the session id and the statement's `seq` within the session; a
//! simple Query with several statements has one `result` per statement
//! (`index`). A statement refused by airlock has no `result`.
//!
//! Values that masking would hide never appear here: texts, parameters,
//! errors and samples are redacted before an event is built (see
//! `docs/audit.md` for the rules).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version written in every event's `v`.
pub const SCHEMA_VERSION: u32 = 2;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// When the gateway recorded it: RFC 3339, UTC, milliseconds.
    pub at: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    SessionStart(SessionStart),
    Statement(Statement),
    Result(StatementResult),
    SessionEnd(SessionEnd),
    PolicyReload(PolicyReload),
    Approval(Approval),
}

/// A client session was authenticated, routed and logged in upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session: Uuid,
    /// The token's subject.
    pub principal: String,
    /// The issuer that vouched for it.
    pub issuer: String,
    pub groups: Vec<String>,
    /// The party acting for the principal (the token's `act.sub`, RFC 8693),
    /// if any. Events before the delegation chain was recorded read the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
    /// The whole delegation chain when it is longer than `act`: the current
    /// actor, then each prior one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub act_chain: Vec<String>,
    pub connection: String,
    pub role: String,
    /// The access rule that granted the route.
    pub access_rule: String,
    /// `read-only` or `read-write`.
    pub mode: String,
    /// Whether the session sees unmasked values (`access[].unmask`).
    pub unmask: bool,
    pub client_addr: String,
    /// The just-in-time grant the session's role came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    pub tls: bool,
    /// The door the session came through (version 2; `postgres` before).
    #[serde(default)]
    pub door: Door,
}

/// The protocol a session came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    #[default]
    Postgres,
    Mysql,
    Mcp,
}

impl Door {
    /// As events and metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            Door::Postgres => "postgres",
            Door::Mysql => "mysql",
            Door::Mcp => "mcp",
        }
    }
}

/// How a statement reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A simple Query message (possibly several statements).
    Simple,
    /// Parse/Bind/Execute: recorded at Bind, with its parameters.
    Extended,
}

/// What the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    Approve,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Approve => "approve",
        }
    }
}

/// A statement, as judged, before it goes upstream (or instead of going,
/// when refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub session: Uuid,
    /// 1 for the session's first statement, then +1 each.
    pub seq: u64,
    pub protocol: Protocol,
    /// The statement text with sensitive literals replaced, cut to
    /// `recording.max_statement_bytes`.
    pub text: String,
    /// Set when `text` was cut: the redacted text's full length and
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
    /// Bind parameters (extended protocol), redacted like literals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Value>,
    /// Statement kinds, in order (`select`, `update`…).
    pub kinds: Vec<String>,
    /// Effects, sorted (`read`, `write`, `ddl`…).
    pub effects: Vec<String>,
    pub decision: Decision,
    /// The guardrail that decided, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For a refusal: the SQLSTATE and message the client got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<ErrorInfo>,
    /// The approval that released it (approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// Where a long text was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    pub bytes: u64,
    pub sha256: String,
}

impl Truncated {
    /// `text` cut to at most `max` bytes (at a character boundary), with
    /// what was cut when it was.
    pub fn cut(mut text: String, max: usize) -> (String, Option<Truncated>) {
        if text.len() <= max {
            return (text, None);
        }
        let truncated = Truncated {
            bytes: text.len() as u64,
            sha256: sha256_hex(text.as_bytes()),
        };
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        (text, Some(truncated))
    }
}

/// An error sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The door's own code: a SQLSTATE, a MySQL error number, a JSON-RPC
    /// error code (`sqlstate` in version 1).
    #[serde(alias = "sqlstate")]
    pub code: String,
    pub message: String,
}

/// One value: a parameter or a result cell. JSON `null`, a string, or
/// `{"hex": "…"}` for bytes that are not UTF-8 (binary format, or text in
/// another encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Text(String),
    Bytes { hex: String },
}

impl Value {
    /// `bytes` as text when it is UTF-8, as hex otherwise.
    pub fn from_bytes(bytes: Option<&[u8]>) -> Value {
        match bytes {
            None => Value::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::Text(s.to_string()),
                Err(_) => Value::Bytes { hex: hex(b) },
            },
        }
    }

    /// Bytes the value takes in a sample's budget.
    pub fn weight(&self) -> usize {
        match self {
            Value::Null => 4,
            Value::Text(s) => s.len() + 2,
            Value::Bytes { hex } => hex.len() + 10,
        }
    }
}

/// How one statement (one `index` of a simple Query) ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementResult {
    pub session: Uuid,
    /// The `seq` of its `statement` event.
    pub seq: u64,
    /// Which statement of a multi-statement simple Query (0 for the first).
    #[serde(default)]
    pub index: u32,
    /// From the statement event's append to the last answer, microseconds.
    pub duration_us: u64,
    /// Rows returned to the client.
    pub rows: u64,
    /// The command tag (`SELECT 3`, `UPDATE 0`), absent on error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Whether a portal suspended at its row limit (more Executes follow).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// The upstream error, scrubbed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The first rows as the client saw them (masked), within
    /// `recording.result_sample`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    /// Values that read like instructions to an agent, flagged to the
    /// client unchanged (`masking.flag_planted_instructions`, MCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

/// A value of a result flagged as planted instructions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Its row, from 1, in the result (in one fetch, for a portal or
    /// cursor read in pages).
    pub row: u64,
    pub column: String,
    /// `instruction`, `tool_call` or `hidden_unicode`.
    pub kind: String,
}

/// The first rows of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Rows were left out (over `max_rows` or `max_bytes`), or values are
    /// withheld (an unmasked session's values are never recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why values are missing, when they are withheld rather than cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

/// An approval or a just-in-time grant changed: a statement held, a vote,
/// a decision, a grant given, revoked or expired. A held statement's events
/// carry its session; a grant's carry none (it is recorded where it was
/// decided), except its use by a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: Uuid,
    /// `statement` (a held statement) or `access` (a JIT access request).
    pub request: String,
    /// `requested`, `vote`, `approved`, `denied`, `timed_out`, `cancelled`,
    /// `abandoned`; for access also `granted`, `revoked`, `expired`, `used`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Uuid>,
    /// The held statement's `seq`, when its statement event came first
    /// (extended protocol: recorded at Bind, held at Execute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The guardrail (statement) or access rule (access).
    pub rule: String,
    pub connection: String,
    pub role: String,
    /// Who asked, and the human they act for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
    /// Who voted or decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approver groups and how many distinct approvers are needed
    /// (`requested`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_approvals: Option<u32>,
    /// The planner's row estimate shown to approvers (UPDATE/DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
    /// When the hold times out, or the grant ends: RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Approval {
    /// An event about a stored approval or access request: who asked, for
    /// what, under which rule, and (for `requested`) who may decide.
    pub fn of_row(row: &airlock_store::ApprovalRow, action: &str) -> Approval {
        let requested = action == "requested";
        Approval {
            id: row.id,
            request: row.kind.as_str().into(),
            action: action.into(),
            session: row.session_id,
            rule: row.rule.clone(),
            connection: row.connection.clone(),
            role: row.role.clone(),
            requester: Some(row.requester_subject.clone()),
            act: row.requester_act.clone(),
            approvers: if requested {
                row.approvers.clone()
            } else {
                Vec::new()
            },
            min_approvals: requested.then_some(row.min_approvals),
            until: row.expires_ms.map(rfc3339_ms),
            ..Approval::default()
        }
    }
}

/// A session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session: Uuid,
    /// `client closed`, `token expired`, `upstream closed`…
    pub reason: String,
    /// Statements recorded in the session.
    pub statements: u64,
}

/// A configuration reload was attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReload {
    pub ok: bool,
    /// Why it was refused (the old policy stays in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SHA-256 of the configuration file as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
}

/// The columns the store indexes an event by, for listing and filtering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index<'a> {
    pub kind: &'static str,
    pub session: Option<Uuid>,
    pub principal: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub decision: Option<Decision>,
}

impl Event {
    /// An event recorded now.
    pub fn now(body: Body) -> Event {
        Event::at(SystemTime::now(), body)
    }

    pub fn at(at: SystemTime, body: Body) -> Event {
        Event {
            v: SCHEMA_VERSION,
            at: humantime::format_rfc3339_millis(at).to_string(),
            body,
        }
    }

    /// The bytes the journal hashes: compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).expect("events serialize")
    }

    /// Reads an event's bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// `at` as Unix milliseconds (0 if it does not parse).
    pub fn at_millis(&self) -> i64 {
        humantime::parse_rfc3339(&self.at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Every kind this schema version writes.
    pub const KINDS: &'static [&'static str] = &[
        "session_start",
        "statement",
        "result",
        "session_end",
        "policy_reload",
        "approval",
    ];

    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::SessionStart(_) => "session_start",
            Body::Statement(_) => "statement",
            Body::Result(_) => "result",
            Body::SessionEnd(_) => "session_end",
            Body::PolicyReload(_) => "policy_reload",
            Body::Approval(_) => "approval",
        }
    }

    /// The session the event belongs to, if any.
    pub fn session(&self) -> Option<Uuid> {
        match &self.body {
            Body::SessionStart(e) => Some(e.session),
            Body::Statement(e) => Some(e.session),
            Body::Result(e) => Some(e.session),
            Body::SessionEnd(e) => Some(e.session),
            Body::PolicyReload(_) => None,
            Body::Approval(e) => e.session,
        }
    }

    /// What the store indexes.
    pub fn index(&self) -> Index<'_> {
        let mut index = Index {
            kind: self.kind(),
            session: self.session(),
            ..Index::default()
        };
        match &self.body {
            Body::SessionStart(e) => {
                index.principal = Some(&e.principal);
                index.connection = Some(&e.connection);
            }
            Body::Statement(e) => index.decision = Some(e.decision),
            _ => {}
        }
        index
    }
}

/// The index fields of an event, read without decoding the whole event
/// (the shipper reads every event it ships).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexFields {
    pub at: String,
    pub kind: String,
    #[serde(default)]
    pub session: Option<Uuid>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub decision: Option<Decision>,
}

impl IndexFields {
    /// Reads them from an event's bytes.
    pub fn decode(bytes: &[u8]) -> Result<IndexFields, serde_json::Error> {
        let mut fields: IndexFields = serde_json::from_slice(bytes)?;
        // Only session starts carry who and where; a statement's decision.
        if fields.kind != "session_start" {
            fields.principal = None;
            fields.connection = None;
        }
        if fields.kind != "statement" {
            fields.decision = None;
        }
        Ok(fields)
    }

    /// `at` as Unix milliseconds (0 if it does not parse).
    pub fn at_millis(&self) -> i64 {
        humantime::parse_rfc3339(&self.at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// SHA-256 of `bytes`, lowercase hex.
/// Unix milliseconds, the store's time unit.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Unix milliseconds as RFC 3339, UTC, milliseconds (as events write `at`).
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Event {
        Event::at(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            Body::Statement(Statement {
                session: Uuid::nil(),
                seq: 7,
                protocol: Protocol::Extended,
                text: "select $1".into(),
                truncated: None,
                params: vec![
                    Value::Null,
                    Value::Text("a".into()),
                    Value::from_bytes(Some(&[0xff, 0x00])),
                ],
                kinds: vec!["select".into()],
                effects: vec!["read".into()],
                decision: Decision::Allow,
                rule: None,
                refusal: None,
                approval: None,
            }),
        )
    }

    #[test]
    fn round_trips_and_reads_like_the_docs() {
        let e = statement();
        let bytes = e.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"v":2,"at":"2023-11-14T22:13:20.123Z","kind":"statement","#),
            "{text}"
        );
        assert!(
            text.contains(r#""params":[null,"a",{"hex":"ff00"}]"#),
            "{text}"
        );
        assert!(!text.contains("refusal"), "{text}");
        assert_eq!(Event::decode(&bytes).unwrap(), e);
        assert_eq!(e.at_millis(), 1_700_000_000_123);
        assert_eq!(e.index().decision, Some(Decision::Allow));
        let fields = IndexFields::decode(&bytes).unwrap();
        assert_eq!(fields.kind, "statement");
        assert_eq!(fields.session, Some(Uuid::nil()));
        assert_eq!(fields.decision, Some(Decision::Allow));
        assert_eq!(fields.at_millis(), 1_700_000_000_123);
        assert_eq!(e.index().kind, "statement");
    }

    #[test]
    fn long_texts_are_cut_at_a_character() {
        let (short, none) = Truncated::cut("abc".into(), 3);
        assert_eq!((short.as_str(), none), ("abc", None));
        let (cut, t) = Truncated::cut("aé".repeat(3), 4);
        assert_eq!(cut, "aéa");
        let t = t.unwrap();
        assert_eq!(t.bytes, 9);
        assert_eq!(t.sha256.len(), 64);
    }

    #[test]
    fn version_1_events_still_decode() {
        let start = br#"{"v":1,"at":"x","kind":"session_start","session":"00000000-0000-0000-0000-000000000000","principal":"p","issuer":"i","groups":[],"connection":"c","role":"r","access_rule":"a","mode":"read-only","unmask":false,"client_addr":"1.2.3.4:5","tls":false}"#;
        let Body::SessionStart(s) = Event::decode(start).unwrap().body else {
            panic!("not a session start");
        };
        assert_eq!(
            s.door,
            Door::Postgres,
            "v1 sessions came through the PostgreSQL door"
        );
        let refused = br#"{"v":1,"at":"x","kind":"statement","session":"00000000-0000-0000-0000-000000000000","seq":1,"protocol":"simple","text":"drop table t","params":[],"kinds":["ddl"],"effects":["ddl"],"decision":"deny","rule":"r","refusal":{"sqlstate":"42501","message":"no"}}"#;
        let Body::Statement(s) = Event::decode(refused).unwrap().body else {
            panic!("not a statement");
        };
        assert_eq!(s.refusal.unwrap().code, "42501", "sqlstate reads as code");
    }

    #[test]
    fn unknown_kinds_do_not_decode() {
        assert!(Event::decode(br#"{"v":1,"at":"x","kind":"nope"}"#).is_err());
        assert!(Event::decode(b"not json").is_err());
    }
}

#[cfg(test)]
mod approval_tests {
    use super::*;

    #[test]
    fn approval_events_round_trip() {
        let e = Event::now(Body::Approval(Approval {
            id: Uuid::nil(),
            request: "statement".into(),
            action: "requested".into(),
            session: Some(Uuid::nil()),
            seq: None,
            rule: "r".into(),
            connection: "c".into(),
            role: "x".into(),
            requester: Some("devin".into()),
            act: None,
            by: None,
            reason: None,
            approvers: vec!["dba".into()],
            min_approvals: Some(1),
            estimate: Some(3),
            until: None,
        }));
        let bytes = e.encode();
        assert_eq!(
            Event::decode(&bytes).unwrap(),
            e,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            Event::KINDS.contains(&e.kind()),
            "the shipper knows the kind"
        );
        let fields = IndexFields::decode(&bytes).unwrap();
        assert_eq!(
            (fields.kind.as_str(), fields.session),
            ("approval", Some(Uuid::nil()))
        );
    }
}
