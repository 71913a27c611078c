//! The wire types against what they promise: keys in the order the API has
//! always sent them, optional keys left out exactly where they were, the
//! CLI's `--json` the same bytes as before they were typed, and the OpenAPI
//! document naming the same fields.

use std::collections::BTreeSet;
use std::fmt;

use airlock_audit::event::{Body, Event, SessionStart};
use airlock_store::{ApprovalKind, ApprovalRow, ApprovalStatus, EventRow, VoteKind, VoteRow};
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::approvals::{
    AccessList, AccessRequest, Approval, ApprovalList, ApprovalVote, ApprovalsQuery,
    DecisionRequest, VoteAnswer, VoteResult,
};
use crate::audit::{ErrorBody, SessionEvents, SessionList, SessionsQuery, StoredEvent};

/// Deserializes any JSON, failing where an object's keys are not in
/// strictly ascending order.
struct SortedKeys;

impl<'de> Deserialize<'de> for SortedKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SortedKeys, D::Error> {
        d.deserialize_any(SortedKeys)
    }
}

impl<'de> Visitor<'de> for SortedKeys {
    type Value = SortedKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SortedKeys, A::Error> {
        let mut last: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if let Some(last) = &last
                && *last >= key
            {
                return Err(de::Error::custom(format!("{key:?} after {last:?}")));
            }
            map.next_value::<SortedKeys>()?;
            last = Some(key);
        }
        Ok(SortedKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SortedKeys, A::Error> {
        while seq.next_element::<SortedKeys>()?.is_some() {}
        Ok(SortedKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
    fn visit_unit<E>(self) -> Result<SortedKeys, E> {
        Ok(SortedKeys)
    }
}

/// `value` as the server sends it: keys sorted; it reads back as itself;
/// and the CLI's `--json` of it is what it printed when it read the answer
/// as untyped JSON (whose maps are sorted) and printed that.
#[track_caller]
fn check<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: &T) -> Value {
    let wire = serde_json::to_string(value).unwrap();
    if let Err(e) = serde_json::from_str::<SortedKeys>(&wire) {
        panic!("{e}: {wire}");
    }
    assert_eq!(&serde_json::from_str::<T>(&wire).unwrap(), value, "{wire}");
    let untyped: Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(value).unwrap(),
        serde_json::to_string_pretty(&untyped).unwrap()
    );
    untyped
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn uuid(n: u8) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
}

fn approval_row(status: ApprovalStatus) -> ApprovalRow {
    ApprovalRow {
        id: uuid(1),
        kind: ApprovalKind::Access,
        status,
        requester_issuer: "https://issuer".into(),
        requester_subject: "devin".into(),
        requester_act: Some("alice".into()),
        connection: "orders".into(),
        role: "admin".into(),
        rule: "agents-write-jit".into(),
        approvers: vec!["dba".into()],
        min_approvals: 1,
        approvals: 1,
        detail: r#"{"reason":"fix ticket 42"}"#.into(),
        session_id: Some(uuid(2)),
        gateway: Some(uuid(3)),
        created_ms: 1_714_564_800_000,
        deadline_ms: Some(1_714_564_900_000),
        decided_ms: Some(1_714_564_920_000),
        reason: Some("ok".into()),
        decided_by: Some("bob".into()),
        duration_ms: Some(1_800_000),
        expires_ms: Some(1_714_566_720_000),
        votes: vec![VoteRow {
            voter: "claude".into(),
            human: "bob".into(),
            vote: VoteKind::Approve,
            reason: Some("ok".into()),
            at_ms: 1_714_564_920_000,
        }],
    }
}

/// A row with nothing optional.
fn bare_approval_row() -> ApprovalRow {
    ApprovalRow {
        kind: ApprovalKind::Statement,
        requester_act: None,
        detail: "not json".into(),
        session_id: None,
        gateway: None,
        deadline_ms: None,
        decided_ms: None,
        reason: None,
        decided_by: None,
        duration_ms: None,
        expires_ms: None,
        votes: Vec::new(),
        ..approval_row(ApprovalStatus::Pending)
    }
}

fn event_row(payload: Vec<u8>) -> EventRow {
    EventRow {
        stream: uuid(9),
        seq: 7,
        prev: [1; 32],
        hash: [2; 32],
        payload,
        session_id: Some(uuid(4).to_string()),
        kind: Some("session_start".into()),
        principal: Some("ci-bot".into()),
        connection: Some("app".into()),
        decision: None,
        recorded_at: 1_714_564_800_500,
    }
}

fn session_start() -> Vec<u8> {
    let at = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_564_800);
    Event::at(
        at,
        Body::SessionStart(SessionStart {
            session: uuid(4),
            principal: "ci-bot".into(),
            issuer: "https://issuer".into(),
            groups: vec!["agents".into()],
            act: None,
            act_chain: Vec::new(),
            connection: "app".into(),
            role: "readonly".into(),
            access_rule: "agents".into(),
            mode: "read-only".into(),
            unmask: false,
            client_addr: "10.0.0.5:1".into(),
            application_name: None,
            tls: true,
            door: airlock_audit::event::Door::Postgres,
            grant: None,
        }),
    )
    .encode()
}

const APPROVAL_KEYS: &[&str] = &[
    "act",
    "approvals",
    "approvers",
    "connection",
    "created_at",
    "deadline",
    "decided_at",
    "decided_by",
    "detail",
    "duration_seconds",
    "expires_at",
    "id",
    "kind",
    "min_approvals",
    "reason",
    "requester",
    "requester_issuer",
    "role",
    "rule",
    "session",
    "status",
    "votes",
];

#[test]
fn approvals_keep_their_shape() {
    let full = Approval::from_row(&approval_row(ApprovalStatus::Granted));
    let json = check(&full);
    assert_eq!(
        json,
        json!({
            "act": "alice",
            "approvals": 1,
            "approvers": ["dba"],
            "connection": "orders",
            "created_at": "2024-05-01T12:00:00.000Z",
            "deadline": "2024-05-01T12:01:40.000Z",
            "decided_at": "2024-05-01T12:02:00.000Z",
            "decided_by": "bob",
            "detail": {"reason": "fix ticket 42"},
            "duration_seconds": 1800,
            "expires_at": "2024-05-01T12:32:00.000Z",
            "id": uuid(1).to_string(),
            "kind": "access",
            "min_approvals": 1,
            "reason": "ok",
            "requester": "devin",
            "requester_issuer": "https://issuer",
            "role": "admin",
            "rule": "agents-write-jit",
            "session": uuid(2).to_string(),
            "status": "granted",
            "votes": [{"at": "2024-05-01T12:02:00.000Z", "human": "bob", "reason": "ok", "vote": "approve", "voter": "claude"}]
        })
    );
    assert_eq!(full.detail().reason.as_deref(), Some("fix ticket 42"));
    // Every key is sent, null or not.
    let bare = Approval::from_row(&bare_approval_row());
    let json = check(&bare);
    assert_eq!(
        keys(&json),
        APPROVAL_KEYS.iter().map(|k| k.to_string()).collect()
    );
    assert_eq!(json["detail"], Value::Null);
    assert_eq!(json["kind"], "statement");
    assert_eq!(bare.detail(), Default::default());

    check(&ApprovalList {
        approvals: vec![bare.clone()],
    });
    check(&AccessList {
        requests: vec![full.clone(), bare.clone()],
    });
    for result in [
        VoteResult::Approved,
        VoteResult::Denied,
        VoteResult::Counted,
        VoteResult::Granted,
        VoteResult::Revoked,
    ] {
        let json = check(&VoteAnswer {
            approval: full.clone(),
            result,
        });
        assert_eq!(json["result"], result.as_str());
    }
    check(&DecisionRequest::default());
    check(&DecisionRequest {
        reason: Some("no".into()),
    });
    check(&ErrorBody { error: "no".into() });
}

#[test]
fn a_held_statements_detail_reads_typed() {
    let mut a = Approval::from_row(&bare_approval_row());
    a.detail = json!({
        "statement": "DELETE FROM t WHERE id = $1",
        "parameters": ["1", null, {"hex": "ff"}],
        "kinds": ["delete"],
        "effects": ["write"],
        "estimated_rows": null,
        "in_transaction": false,
        "timeout_seconds": 300,
        "unknown": 1
    });
    let d = a.detail();
    assert_eq!(d.statement.as_deref(), Some("DELETE FROM t WHERE id = $1"));
    assert_eq!(d.parameters.as_ref().map(Vec::len), Some(3));
    assert_eq!(d.kinds, Some(vec!["delete".to_string()]));
    assert_eq!(d.estimated_rows, None);
    assert_eq!(d.in_transaction, Some(false));
    assert_eq!(d.timeout_seconds, Some(300));
    // A field of another type reads as none; the rest still read.
    a.detail["kinds"] = json!("delete");
    let d = a.detail();
    assert_eq!(d.kinds, None);
    assert_eq!(d.effects, Some(vec!["write".to_string()]));
}

#[test]
fn sessions_keep_their_shape() {
    let started = crate::audit::session_summary(&event_row(session_start()));
    let json = check(&started);
    assert_eq!(
        json,
        json!({
            "access_rule": "agents",
            "act": null,
            "application_name": null,
            "client_addr": "10.0.0.5:1",
            "connection": "app",
            "groups": ["agents"],
            "id": uuid(4).to_string(),
            "mode": "read-only",
            "principal": "ci-bot",
            "role": "readonly",
            "seq": 7,
            "started_at": "2024-05-01T12:00:00.000Z",
            "stream": uuid(9).to_string(),
            "tls": true
        })
    );
    // A session start of another schema: what the store's columns say,
    // and nothing more.
    let unread = crate::audit::session_summary(&event_row(b"{\"v\":2}".to_vec()));
    let json = check(&unread);
    assert_eq!(
        json,
        json!({
            "act": null,
            "connection": "app",
            "id": uuid(4).to_string(),
            "principal": "ci-bot",
            "seq": 7,
            "started_at": "2024-05-01T12:00:00.500Z",
            "stream": uuid(9).to_string()
        })
    );
    let mut named = started.clone();
    named.application_name = Some(Some("psql".into()));
    assert_eq!(check(&named)["application_name"], "psql");
    check(&SessionList {
        sessions: vec![started, unread],
    });

    let event = StoredEvent::from_row(&event_row(session_start()));
    assert!(event.decode().is_some());
    let json = check(&event);
    assert_eq!(
        keys(&json),
        ["event", "hash", "prev", "recorded_at", "seq", "stream"]
            .map(String::from)
            .into()
    );
    let opaque = StoredEvent::from_row(&event_row(vec![0xff, 0x00, b'x']));
    assert_eq!(opaque.payload_b64.as_deref(), Some("/wB4"));
    assert_eq!(opaque.decode(), None);
    check(&SessionEvents {
        events: vec![event, opaque],
        id: uuid(4),
    });
}

/// `audit export`'s JSON lines are the API's stored events.
#[test]
fn export_lines_are_stored_events() {
    for payload in [
        session_start(),
        b"{\n \"a\": 1\n}\n".to_vec(),
        vec![0xff, 0x00, b'x'],
    ] {
        let row = event_row(payload);
        let mut line = Vec::new();
        airlock_audit::export::jsonl_line(&row, &mut line);
        let read: StoredEvent = serde_json::from_slice(&line).unwrap();
        assert_eq!(read, StoredEvent::from_row(&row));
    }
}

/// The schema `name`'s properties.
fn documented(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let schema = &doc["components"]["schemas"][name];
    let required = schema["required"]
        .as_array()
        .map(|r| r.iter().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (keys(&schema["properties"]), required)
}

/// The keys `full` sends are the schema's properties, and the required
/// ones are sent even by `bare`.
#[track_caller]
fn matches_schema(doc: &Value, name: &str, full: &impl Serialize, bare: &impl Serialize) {
    let (properties, required) = documented(doc, name);
    assert_eq!(
        keys(&serde_json::to_value(full).unwrap()),
        properties,
        "{name}"
    );
    let sent = keys(&serde_json::to_value(bare).unwrap());
    assert!(required.is_subset(&sent), "{name}: {required:?} {sent:?}");
}

#[test]
fn the_openapi_document_names_the_wire_fields() {
    let doc = crate::openapi::document();
    let mut full = Approval::from_row(&approval_row(ApprovalStatus::Granted));
    full.context = Some(vec!["select 1".into()]);
    let bare = Approval::from_row(&bare_approval_row());
    matches_schema(&doc, "Approval", &full, &bare);
    matches_schema(&doc, "ApprovalVote", &full.votes[0], &full.votes[0]);
    let mut started = crate::audit::session_summary(&event_row(session_start()));
    started.live = Some(true);
    let unread = crate::audit::session_summary(&event_row(b"{}".to_vec()));
    matches_schema(&doc, "SessionSummary", &started, &unread);
    let mut both = StoredEvent::from_row(&event_row(session_start()));
    let opaque = StoredEvent::from_row(&event_row(vec![0xff]));
    both.payload_b64.clone_from(&opaque.payload_b64);
    matches_schema(&doc, "StoredEvent", &both, &opaque);
    matches_schema(
        &doc,
        "Error",
        &ErrorBody { error: "x".into() },
        &ErrorBody { error: "x".into() },
    );
    let answer = VoteAnswer {
        approval: full,
        result: VoteResult::Granted,
    };
    matches_schema(&doc, "VoteAnswer", &answer, &answer);
    let results: BTreeSet<String> =
        doc["components"]["schemas"]["VoteAnswer"]["properties"]["result"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
    assert_eq!(
        results,
        ["approved", "denied", "counted", "granted", "revoked"]
            .map(String::from)
            .into()
    );
    let kinds: BTreeSet<&str> = doc["components"]["schemas"]["StoredEvent"]["properties"]["event"]
        ["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds, Event::KINDS.iter().copied().collect());

    // Request bodies and query parameters.
    let paths = &doc["paths"];
    let body =
        |path: &str| &paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let access = AccessRequest::default();
    assert_eq!(
        keys(&body(crate::path::ACCESS_REQUESTS)["properties"]),
        keys(&serde_json::to_value(&access).unwrap())
    );
    for path in [
        crate::path::APPROVE,
        crate::path::DENY,
        crate::path::ACCESS_APPROVE,
        crate::path::ACCESS_DENY,
        crate::path::ACCESS_REVOKE,
    ] {
        assert_eq!(
            keys(&body(path)["properties"]),
            keys(&serde_json::to_value(DecisionRequest::default()).unwrap()),
            "{path}"
        );
    }
    let parameters = |path: &str| -> BTreeSet<String> {
        paths[path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let sessions = SessionsQuery {
        principal: Some(String::new()),
        connection: Some(String::new()),
        since: Some(String::new()),
        decision: Some(String::new()),
        limit: Some(String::new()),
    };
    assert_eq!(
        parameters(crate::path::SESSIONS),
        sessions
            .pairs()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect()
    );
    let approvals = ApprovalsQuery {
        status: Some(String::new()),
        limit: Some(1),
    };
    for path in [crate::path::APPROVALS, crate::path::ACCESS] {
        assert_eq!(
            parameters(path),
            approvals
                .pairs()
                .into_iter()
                .map(|(k, _)| k.to_string())
                .collect(),
            "{path}"
        );
    }
}

#[test]
fn a_vote_is_a_wire_type_too() {
    let vote = ApprovalVote {
        at: "2024-05-01T12:02:00.000Z".into(),
        human: "bob".into(),
        reason: None,
        vote: "deny".into(),
        voter: "bob".into(),
    };
    assert_eq!(check(&vote)["reason"], Value::Null);
}
