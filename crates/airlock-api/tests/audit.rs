//! The audit endpoints over real HTTP, against a real SQLite store.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_api::{ApiState, AuditApi, Authenticate, Caller};
use airlock_audit::StoreSlot;
use airlock_audit::event::{
    Body, Decision, ErrorInfo, Event, Protocol, SessionEnd, SessionStart, Statement,
};
use airlock_store::{EventRow, Store};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::Value;
use uuid::Uuid;

/// Tokens are their caller's rights: `auditor`, `admin`, `nobody`; anything
/// else is refused.
struct FakeAuth;

impl Authenticate for FakeAuth {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, String>> + Send + 'a>> {
        Box::pin(async move {
            let caller = |auditor, admin| Caller {
                subject: token.to_string(),
                principal: airlock_policy::Principal {
                    issuer_name: "test".into(),
                    issuer: "test".into(),
                    subject: token.to_string(),
                    groups: Vec::new(),
                    act: None,
                    token_id: None,
                    expires_at: std::time::SystemTime::UNIX_EPOCH,
                    claims: Default::default(),
                    act_chain: Vec::new(),
                },
                auditor,
                admin,
            };
            match token {
                "auditor" => Ok(caller(true, false)),
                "admin" => Ok(caller(false, true)),
                "nobody" => Ok(caller(false, false)),
                _ => Err("signature does not verify".to_string()),
            }
        })
    }
}

struct Api {
    addr: SocketAddr,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

const T0: u64 = 1_714_564_800_000;

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0 + ms)
}

fn session_id(n: u8) -> Uuid {
    Uuid::parse_str(&format!("01900000-0000-7000-8000-0000000000{n:02x}")).unwrap()
}

fn start(n: u8, principal: &str, connection: &str) -> Body {
    Body::SessionStart(SessionStart {
        session: session_id(n),
        principal: principal.into(),
        issuer: "https://issuer.example".into(),
        groups: vec!["agents".into()],
        act: (n == 1).then(|| "alice@example.com".into()),
        act_chain: Vec::new(),
        connection: connection.into(),
        role: "readonly".into(),
        access_rule: "agents".into(),
        mode: "read-only".into(),
        unmask: false,
        client_addr: "10.0.0.5:51234".into(),
        grant: None,
        application_name: Some("psql".into()),
        tls: true,
        door: airlock_audit::event::Door::Postgres,
    })
}

fn statement(n: u8, seq: u64, decision: Decision) -> Body {
    Body::Statement(Statement {
        session: session_id(n),
        seq,
        protocol: Protocol::Simple,
        text: "select 1".into(),
        truncated: None,
        params: vec![],
        kinds: vec!["select".into()],
        effects: vec!["read".into()],
        decision,
        rule: (decision == Decision::Deny).then(|| "no".into()),
        refusal: (decision == Decision::Deny).then(|| ErrorInfo {
            code: "42501".into(),
            message: "denied".into(),
        }),
        approval: None,
    })
}

/// Rows as the shipper makes them.
fn rows(stream: Uuid, events: Vec<Event>) -> Vec<EventRow> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let index = e.index();
            EventRow {
                stream,
                seq: i as u64 + 1,
                prev: [i as u8; 32],
                hash: [i as u8 + 1; 32],
                payload: e.encode(),
                session_id: index.session.map(|s| s.hyphenated().to_string()),
                kind: Some(index.kind.into()),
                principal: index.principal.map(str::to_owned),
                connection: index.connection.map(str::to_owned),
                decision: index.decision.map(|d| d.name().to_owned()),
                recorded_at: e.at_millis(),
            }
        })
        .collect()
}

/// Three sessions: 1 (ci-bot on app, one denial), 2 (dba on app), 3
/// (ci-bot on billing), started in that order.
async fn seeded_store(dir: &std::path::Path) -> Store {
    let store = Store::connect(&format!("sqlite://{}/airlock.db?mode=rwc", dir.display()))
        .await
        .unwrap();
    let stream = Uuid::parse_str("01900000-0000-7000-8000-0000000000aa").unwrap();
    let events = vec![
        Event::at(at(0), start(1, "ci-bot", "app")),
        Event::at(at(1), statement(1, 1, Decision::Allow)),
        Event::at(at(2), statement(1, 2, Decision::Deny)),
        Event::at(
            at(3),
            Body::SessionEnd(SessionEnd {
                session: session_id(1),
                reason: "client closed".into(),
                statements: 2,
            }),
        ),
        Event::at(at(10_000), start(2, "dba", "app")),
        Event::at(at(10_001), statement(2, 1, Decision::Allow)),
        Event::at(at(20_000), start(3, "ci-bot", "billing")),
    ];
    store.insert_events(&rows(stream, events)).await.unwrap();
    store
}

async fn serve(audit: Option<AuditApi>, dir: tempfile::TempDir) -> Api {
    let state = ApiState {
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        ready: Arc::new(|| Ok(())),
        dev_issuer: None,
        audit,
        approvals: None,
        gateway: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(airlock_api::serve(
        listener,
        airlock_api::router(state),
        std::future::pending(),
    ));
    Api {
        addr,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn api_with_store() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let slot = Arc::new(StoreSlot::new());
    slot.set(seeded_store(dir.path()).await);
    serve(Some(AuditApi::new(Some(Arc::new(FakeAuth)), slot)), dir).await
}

impl Api {
    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.get(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        (status, headers, json)
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        let (status, _, body) = self
            .get(&format!("/api/v1/sessions{query}"), Some("auditor"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn id(n: u8) -> String {
    session_id(n).to_string()
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let api = api_with_store().await;
    for path in ["/api/v1/sessions", &format!("/api/v1/sessions/{}", id(1))] {
        let (status, headers, body) = api.get(path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"airlock\"");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("missing bearer token"),
            "{body}"
        );

        let (status, headers, body) = api.get(path, Some("forged")).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(
            headers["www-authenticate"],
            "Bearer realm=\"airlock\", error=\"invalid_token\""
        );
        assert_eq!(body["error"], "invalid token: signature does not verify");

        let (status, _, body) = api.get(path, Some("nobody")).await;
        assert_eq!(status, 403, "{path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("api.auditor_groups"),
            "{body}"
        );

        assert_eq!(api.get(path, Some("auditor")).await.0, 200, "{path}");
        assert_eq!(api.get(path, Some("admin")).await.0, 200, "{path}");
    }
    // Not a bearer token at all.
    let response = api
        .client
        .get(format!("http://{}/api/v1/sessions", api.addr))
        .basic_auth("auditor", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn sessions_list_newest_first_with_filters() {
    let api = api_with_store().await;
    assert_eq!(api.ids("").await, [id(3), id(2), id(1)]);
    assert_eq!(api.ids("?principal=ci-bot").await, [id(3), id(1)]);
    assert_eq!(api.ids("?connection=app").await, [id(2), id(1)]);
    assert_eq!(api.ids("?principal=ci-bot&connection=app").await, [id(1)]);
    assert_eq!(api.ids("?decision=deny").await, [id(1)]);
    assert_eq!(api.ids("?limit=2").await, [id(3), id(2)]);
    assert_eq!(api.ids("?since=2024-05-01T12:00:10Z").await, [id(3), id(2)]);
    assert_eq!(api.ids("?since=1h").await, Vec::<String>::new());
    assert_eq!(api.ids("?principal=").await.len(), 3);

    let (_, _, body) = api
        .get(
            "/api/v1/sessions?principal=ci-bot&connection=app",
            Some("admin"),
        )
        .await;
    let s = &body["sessions"][0];
    assert_eq!(s["principal"], "ci-bot");
    assert_eq!(s["act"], "alice@example.com");
    assert_eq!(s["connection"], "app");
    assert_eq!(s["role"], "readonly");
    assert_eq!(s["client_addr"], "10.0.0.5:51234");
    assert_eq!(s["application_name"], "psql");
    assert_eq!(s["tls"], true);
    assert_eq!(s["started_at"], "2024-05-01T12:00:00.000Z");
    assert_eq!(s["stream"], "01900000-0000-7000-8000-0000000000aa");
    assert_eq!(s["seq"], 1);
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_queries_are_400_with_a_reason() {
    let api = api_with_store().await;
    for (query, needle) in [
        ("?decision=maybe", "decision"),
        ("?limit=0", "limit"),
        ("?limit=5000", "limit"),
        ("?limit=x", "limit"),
        ("?since=yesterday", "since"),
        ("?principle=ci-bot", "principle"),
    ] {
        let (status, _, body) = api
            .get(&format!("/api/v1/sessions{query}"), Some("auditor"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    let (status, _, body) = api
        .get("/api/v1/sessions/not-a-uuid", Some("auditor"))
        .await;
    assert_eq!(status, 400, "{body}");
    // Authentication comes first.
    assert_eq!(api.get("/api/v1/sessions?limit=x", None).await.0, 401);
}

#[tokio::test]
async fn a_session_is_its_events_in_order() {
    let api = api_with_store().await;
    let (status, _, body) = api
        .get(
            &format!("/api/v1/sessions/{}", id(1).to_uppercase()),
            Some("auditor"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id(1));
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "statement", "statement", "session_end"]
    );
    let first = &events[0];
    assert_eq!(first["stream"], "01900000-0000-7000-8000-0000000000aa");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], "00".repeat(32));
    assert_eq!(first["hash"], "01".repeat(32));
    assert_eq!(first["recorded_at"], T0);
    assert_eq!(events[2]["event"]["decision"], "deny");
    // Every event decodes back to the schema.
    for e in events {
        let event: Event = serde_json::from_value(e["event"].clone()).unwrap();
        assert_eq!(event.session(), Some(session_id(1)));
    }

    let missing = Uuid::nil().to_string();
    let (status, _, body) = api
        .get(&format!("/api/v1/sessions/{missing}"), Some("auditor"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], format!("session {missing} not found"));
}

#[tokio::test]
async fn without_store_or_authenticator_it_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let api = serve(
        Some(AuditApi::new(
            Some(Arc::new(FakeAuth)),
            Arc::new(StoreSlot::new()),
        )),
        dir,
    )
    .await;
    let (status, _, body) = api.get("/api/v1/sessions", Some("auditor")).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"error": "audit store unavailable"})
    );
    // Still 401 first: the store's state is nobody else's business.
    assert_eq!(api.get("/api/v1/sessions", None).await.0, 401);
    assert_eq!(api.get("/api/v1/sessions", Some("nobody")).await.0, 403);

    let dir = tempfile::tempdir().unwrap();
    let slot = Arc::new(StoreSlot::new());
    slot.set(seeded_store(dir.path()).await);
    let api = serve(Some(AuditApi::new(None, slot)), dir).await;
    let (status, _, body) = api.get("/api/v1/sessions", Some("auditor")).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("authentication is not configured")
    );

    let api = serve(None, tempfile::tempdir().unwrap()).await;
    assert_eq!(api.get("/api/v1/sessions", Some("auditor")).await.0, 503);
    // The rest of the listener is unaffected.
    let (status, _, doc) = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let (status, _, body) = api.get("/api/v1/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no such endpoint");
}

#[tokio::test]
async fn a_closed_store_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path()).await;
    let slot = Arc::new(StoreSlot::new());
    slot.set(store.clone());
    let api = serve(Some(AuditApi::new(Some(Arc::new(FakeAuth)), slot)), dir).await;
    store.close().await;
    let (status, _, body) = api.get("/api/v1/sessions", Some("auditor")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "audit store unavailable");
}
