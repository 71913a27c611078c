//! The test door: a door with no sockets and no database, that drives the
//! engine through what every real door does — judge, deny, hold (approved,
//! denied, timed out, abandoned), mask and record — to show the engine
//! needs no PostgreSQL.
//!
//! Its "server" is one in-memory table, `public.people (id, name, ssn)`,
//! whose result columns it describes by name (as a MySQL ColumnDefinition
//! or an MCP tool result would) and whose rows are JSON values (as an MCP
//! result's are). Its dialect analyzer is airlock-sql's: the engine does not
//! care which. The parts it talks to are real: a journal on disk, a SQLite
//! approvals store, the approvals worker, votes cast through the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_audit::event::{Decision as Recorded, Protocol};
use airlock_audit::ship::StoreSlot;
use airlock_audit::{Body, Event, Recorder};
use airlock_engine::approvals::Approvals;
use airlock_engine::hold::{self, HoldOutcome, HoldRequest, HoldTimeouts, Holder, Trail, Waiting};
use airlock_engine::open::{self, Authorized, Cut};
use airlock_engine::recording::{At, Judgement, Limits, Params, RecordingSession};
use airlock_mask::{Masker, Masking};
use airlock_policy::guardrails::{Action, Guardrail};
use airlock_policy::judge::{self, Ask, DeniedBy, Fetch, Masked, NoFacts, Ruling};
use airlock_policy::masking::{
    CatalogFacts, CatalogRelation, ColumnPattern, FieldOrigin, MaskRule, MaskingPolicy,
    RelationKind, SensitiveCatalog, Strategy,
};
use airlock_policy::{
    AccessMode, Effect, Effects, Estimate, Grant, Guardrails, Principal, Route, Statement,
    StatementKind,
};
use airlock_store::{ApprovalStatus, Store, Vote, VoteKind};
use serde_json::{Value, json};

const PEOPLE: u32 = 1;

fn guardrails() -> Guardrails {
    let rule = |name: &str, effects: &[Effect], action: Action| Guardrail {
        name: name.into(),
        effects: Effects::of(effects),
        statements: vec![],
        where_present: None,
        estimated_rows_over: None,
        action,
        message: Some(format!("{name} says no")),
        hint: None,
        approvers: vec!["dba".into()],
        min_approvals: 1,
    };
    Guardrails::new(vec![
        rule("no-drop", &[Effect::DropDatabase], Action::Deny),
        rule(
            "review-ddl",
            &[Effect::Ddl, Effect::Truncate],
            Action::Approve,
        ),
    ])
}

fn masking() -> Masking {
    let policy = MaskingPolicy {
        rules: vec![MaskRule {
            name: "ssn".into(),
            columns: vec![ColumnPattern::parse("public.people.ssn").unwrap()],
            detect: vec![],
            strategy: Strategy::Redact,
        }],
        deny_predicates: false,
    };
    Masking::new(policy, Masker::new([9; 32]))
}

/// The door's catalog source: its one table, by name.
fn catalog(policy: &MaskingPolicy) -> SensitiveCatalog {
    SensitiveCatalog::build(
        policy,
        CatalogFacts {
            relations: vec![CatalogRelation {
                oid: PEOPLE,
                schema: "public".into(),
                name: "people".into(),
                columns: vec![(1, "id".into()), (2, "name".into()), (3, "ssn".into())],
                generated: vec![],
                kind: RelationKind::User,
            }],
            ..CatalogFacts::default()
        },
    )
}

fn principal() -> Principal {
    Principal {
        issuer_name: "test".into(),
        issuer: "https://issuer.test".into(),
        subject: "agent-7".into(),
        groups: vec!["agents".into()],
        act: Some("ann".into()),
        token_id: None,
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        claims: Default::default(),
        act_chain: vec!["ann".into()],
    }
}

fn route() -> Route {
    Route {
        connection: "app".into(),
        role: "writer".into(),
        rule: "agents".into(),
        mode: AccessMode::ReadWrite,
        schema_only: None,
        budgets: None,
        statement_timeout: None,
        unmask: false,
        role_defaulted: false,
        grant: None,
        writes: None,
    }
}

/// What the door's client gets.
#[derive(Debug, PartialEq)]
enum Answer {
    Rows(Vec<Vec<Value>>),
    Done,
    Refused(String),
}

/// One step of a statement.
enum Step {
    Answered(Answer),
    Held(Box<Held>),
}

/// A statement waiting for approval.
struct Held {
    waiting: Waiting,
    id: u64,
    statements: Vec<Statement>,
    text: String,
}

struct Door {
    analyzer: airlock_sql::Analyzer,
    guardrails: Guardrails,
    masking: Arc<Masking>,
    catalog: SensitiveCatalog,
    approvals: Arc<Approvals>,
    recording: RecordingSession,
    trail: Trail,
    principal: Principal,
    route: Route,
    timeouts: HoldTimeouts,
    table: Vec<Vec<Value>>,
    next_id: u64,
}

struct Harness {
    door: Door,
    store: Store,
    recorder: Arc<Recorder>,
    journal: tempfile::TempDir,
    _db: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn harness(timeout: Duration) -> Harness {
    let journal = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("store.db").display());
    let store = Store::connect(&url).await.unwrap();
    let slot = Arc::new(StoreSlot::new());
    slot.set(store.clone());
    let recorder = Recorder::open(journal.path(), Default::default());
    let approvals = Approvals::new(
        slot,
        airlock_notify::Notifier::disabled(),
        Some(Arc::clone(&recorder)),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&approvals).run(async {
        let _ = stopped.await;
    }));
    let masking = Arc::new(masking());
    let catalog = catalog(&masking.policy);
    let session = uuid::Uuid::now_v7();
    let authorized = Authorized {
        principal: principal(),
        route: route(),
    };
    let client = open::Client {
        door: airlock_audit::event::Door::Mcp,
        addr: "in-memory".into(),
        tls: false,
        application_name: Some("test door"),
    };
    open::start(&recorder, &masking, session, &authorized, &client).unwrap();
    let recording = RecordingSession::new(
        Arc::clone(&recorder),
        session,
        airlock_audit::event::Door::Mcp,
        Limits {
            sample_rows: 10,
            sample_bytes: 4096,
            max_text: 4096,
        },
        Arc::clone(&masking),
        Some(Arc::new(catalog.clone())),
        false,
        airlock_sql::literals::value_spans,
    );
    let trail = recording.trail();
    Harness {
        door: Door {
            analyzer: airlock_sql::Analyzer::new(&[] as &[String]),
            guardrails: guardrails(),
            masking,
            catalog,
            approvals,
            recording,
            trail,
            principal: authorized.principal,
            route: authorized.route,
            timeouts: HoldTimeouts {
                idle: timeout,
                in_transaction: timeout,
            },
            table: vec![vec![json!(1), json!("Ann"), json!("123-45-6789")]],
            next_id: 1,
        },
        store,
        recorder,
        journal,
        _db: db,
        stop: Some(stop),
    }
}

impl Door {
    fn session(&self) -> judge::Session<'_> {
        judge::Session {
            guardrails: &self.guardrails,
            mode: self.route.mode,
            access_rule: &self.route.rule,
            writes: self.route.writes.as_ref(),
            schema_only: self.route.schema_only,
            statement_timeout: self.route.statement_timeout,
            costed: false,
            approvals: true,
            masking: Some(Masked {
                policy: &self.masking.policy,
                catalog: &self.catalog,
            }),
            keys: None,
        }
    }

    fn holder(&self) -> Holder<'_> {
        Holder {
            approvals: &self.approvals,
            principal: &self.principal,
            route: &self.route,
            trail: Some(&self.trail),
        }
    }

    /// The client sends one statement.
    async fn query(&mut self, sql: &str) -> Step {
        let id = self.next_id;
        self.next_id += 1;
        let statements = self.analyzer.analyze(sql).to_vec();
        let ask = Ask {
            fetch: Fetch::Never,
            ..Ask::message(&statements, Estimate::NotFetched)
        };
        let ruling = judge::judge(&self.session(), &ask, &NoFacts);
        match ruling {
            Ruling::Allow { .. } => Step::Answered(self.run(id, sql, &statements, None)),
            Ruling::Review { .. } => unreachable!("this door does not ask for commit review"),
            Ruling::Deny(denial) => {
                let judgement = Judgement {
                    decision: Recorded::Deny,
                    rule: denial.rule(),
                    refusal: Some(("denied", &denial.message)),
                    approval: None,
                };
                self.recording
                    .statement(
                        id,
                        Protocol::Simple,
                        sql,
                        &statements,
                        &Params::None,
                        judgement,
                    )
                    .unwrap();
                Step::Answered(Answer::Refused(denial.message))
            }
            Ruling::Approve {
                rule,
                approvers,
                min_approvals,
                estimate,
            } => {
                let (text, params) = self.recording.redacted(sql, &statements, &Params::None);
                let request = HoldRequest::new(
                    rule,
                    approvers,
                    min_approvals,
                    estimate,
                    &statements,
                    text,
                    params,
                );
                match hold::begin(&self.holder(), self.timeouts, request, false).await {
                    Ok(waiting) => Step::Held(Box::new(Held {
                        waiting,
                        id,
                        statements,
                        text: sql.into(),
                    })),
                    Err(outcome) => Step::Answered(refused(&outcome)),
                }
            }
            Ruling::NeedsEstimate { .. } => unreachable!("the door fetches no estimates"),
        }
    }

    /// The held statement's wait ends; it runs if approved.
    async fn settle(&mut self, mut held: Held) -> (HoldOutcome, Answer) {
        let wait = held.waiting.decided().await;
        let outcome = hold::end(&self.holder(), held.waiting, wait).await;
        let answer = match outcome {
            HoldOutcome::Approved { approval } => {
                self.run(held.id, &held.text, &held.statements, Some(approval))
            }
            ref refused_outcome => refused(refused_outcome),
        };
        (outcome, answer)
    }

    /// Records and "runs" an allowed statement: a SELECT reads the table,
    /// described by name and masked by the engine's plan; anything else
    /// completes.
    fn run(
        &mut self,
        id: u64,
        sql: &str,
        statements: &[Statement],
        approval: Option<uuid::Uuid>,
    ) -> Answer {
        let judgement = Judgement {
            decision: if approval.is_some() {
                Recorded::Approve
            } else {
                Recorded::Allow
            },
            rule: None,
            refusal: None,
            approval,
        };
        if let Err(e) = self.recording.statement(
            id,
            Protocol::Simple,
            sql,
            statements,
            &Params::None,
            judgement,
        ) {
            return Answer::Refused(e.to_string());
        }
        let at = At { id, index: 0 };
        let [s] = statements else {
            self.recording.complete(at, Some("OK".into()), false);
            return Answer::Done;
        };
        if s.kind != StatementKind::Select {
            self.recording.complete(at, Some("OK".into()), false);
            return Answer::Done;
        }
        let columns = ["id", "name", "ssn"];
        let origins: Vec<FieldOrigin> = columns
            .iter()
            .map(|c| FieldOrigin::Named {
                schema: "public".into(),
                table: "people".into(),
                column: (*c).into(),
            })
            .collect();
        let plan = self
            .masking
            .policy
            .plan(&self.catalog, &s.lineage, &origins);
        self.recording
            .columns(id, columns.iter().map(|c| c.to_string()).collect());
        let mut rows = self.table.clone();
        for row in &mut rows {
            self.masking.mask_json_row(&plan, row);
            let values: Vec<String> = row.iter().map(Value::to_string).collect();
            self.recording
                .row(at, values.iter().map(|v| Some(v.as_bytes())));
        }
        self.recording
            .complete(at, Some(format!("SELECT {}", rows.len())), false);
        Answer::Rows(rows)
    }
}

fn refused(outcome: &HoldOutcome) -> Answer {
    let (_, message) = outcome.refusal().expect("not approved");
    Answer::Refused(message)
}

impl Harness {
    async fn vote(&self, id: uuid::Uuid, vote: VoteKind) -> airlock_store::VoteOutcome {
        let outcome = self
            .store
            .vote(
                id,
                &Vote {
                    voter: "bob".into(),
                    human: "bob".into(),
                    vote,
                    reason: Some("checked".into()),
                    at_ms: airlock_audit::event::now_ms(),
                },
            )
            .await
            .unwrap();
        self.door.approvals.nudge();
        outcome
    }

    /// Every event journaled so far.
    fn events(&self) -> Vec<Event> {
        self.recorder.flush();
        airlock_journal::Reader::open(self.journal.path())
            .unwrap()
            .map(|r| Event::decode(&r.unwrap().payload).unwrap())
            .collect()
    }

    fn approval_actions(&self, id: uuid::Uuid) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.body {
                Body::Approval(a) if a.id == id => Some(a.action),
                _ => None,
            })
            .collect()
    }

    async fn finish(mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

async fn held(h: &mut Harness, sql: &str) -> Box<Held> {
    match h.door.query(sql).await {
        Step::Held(held) => held,
        Step::Answered(a) => panic!("{sql}: not held: {a:?}"),
    }
}

#[tokio::test]
async fn allowed_reads_are_masked_by_name_and_recorded() {
    let mut h = harness(Duration::from_secs(5)).await;
    let Step::Answered(answer) = h.door.query("SELECT id, name, ssn FROM people").await else {
        panic!("held");
    };
    assert_eq!(
        answer,
        Answer::Rows(vec![vec![
            json!(1),
            json!("Ann"),
            json!(airlock_mask::PLACEHOLDER)
        ]])
    );
    let events = h.events();
    assert!(
        matches!(events[0].body, Body::SessionStart(_)),
        "{events:?}"
    );
    let Body::Statement(s) = &events[1].body else {
        panic!("{events:?}")
    };
    assert_eq!(s.decision, Recorded::Allow);
    let Body::Result(r) = &events[2].body else {
        panic!("{events:?}")
    };
    assert_eq!(r.rows, 1);
    let sample = r.sample.as_ref().unwrap();
    assert_eq!(sample.columns, ["id", "name", "ssn"]);
    let recorded = serde_json::to_string(&sample.rows).unwrap();
    assert!(!recorded.contains("123-45-6789"), "{recorded}");
    h.finish().await;
}

#[tokio::test]
async fn denied_statements_are_refused_and_recorded_with_their_rule() {
    let mut h = harness(Duration::from_secs(5)).await;
    let Step::Answered(Answer::Refused(message)) = h.door.query("DROP DATABASE app").await else {
        panic!("not refused");
    };
    assert_eq!(
        message,
        "airlock: statement denied by rule \"no-drop\": no-drop says no"
    );
    let events = h.events();
    let Body::Statement(s) = &events.last().unwrap().body else {
        panic!("{events:?}")
    };
    assert_eq!(
        (s.decision, s.rule.as_deref()),
        (Recorded::Deny, Some("no-drop"))
    );
    // Text the analyzer cannot classify is denied by `unknown`.
    let Step::Answered(Answer::Refused(message)) = h.door.query("SELEC 1").await else {
        panic!("not refused");
    };
    assert!(message.contains("rule \"unknown\""), "{message}");
    h.finish().await;
}

#[tokio::test]
async fn a_hold_approved_runs_the_statement() {
    let mut h = harness(Duration::from_secs(30)).await;
    let held = held(&mut h, "TRUNCATE people").await;
    let id = held.waiting.id;
    let row = h.store.approval(id).await.unwrap().unwrap();
    assert_eq!(row.status, ApprovalStatus::Pending);
    assert_eq!(row.requester_subject, "agent-7");
    h.vote(id, VoteKind::Approve).await;
    let (outcome, answer) = h.door.settle(*held).await;
    assert_eq!(outcome, HoldOutcome::Approved { approval: id });
    assert_eq!(answer, Answer::Done);
    assert_eq!(h.approval_actions(id), ["requested", "approved"]);
    let events = h.events();
    let statement = events
        .iter()
        .find_map(|e| match &e.body {
            Body::Statement(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(statement.approval, Some(id.to_string()));
    h.finish().await;
}

#[tokio::test]
async fn a_hold_denied_is_refused_with_who_and_why() {
    let mut h = harness(Duration::from_secs(30)).await;
    let held = held(&mut h, "CREATE TABLE t (x int)").await;
    let id = held.waiting.id;
    h.vote(id, VoteKind::Deny).await;
    let (outcome, answer) = h.door.settle(*held).await;
    assert!(
        matches!(outcome, HoldOutcome::Denied { by: Some(ref by), .. } if by == "bob"),
        "{outcome:?}"
    );
    assert_eq!(
        answer,
        Answer::Refused(format!(
            "airlock: statement not run: approval {id} was denied by bob: checked"
        ))
    );
    assert_eq!(h.approval_actions(id), ["requested", "denied"]);
    h.finish().await;
}

#[tokio::test]
async fn a_hold_nobody_decides_times_out_and_a_late_approval_changes_nothing() {
    let mut h = harness(Duration::from_millis(300)).await;
    let held = held(&mut h, "TRUNCATE people").await;
    let id = held.waiting.id;
    let (outcome, answer) = h.door.settle(*held).await;
    assert!(
        matches!(outcome, HoldOutcome::TimedOut { .. }),
        "{outcome:?}"
    );
    let Answer::Refused(message) = answer else {
        panic!("ran")
    };
    assert!(message.contains("timed out"), "{message}");
    // The approval arrives after the timeout.
    let late = h.vote(id, VoteKind::Approve).await;
    assert!(
        !matches!(late, airlock_store::VoteOutcome::Decided(_)),
        "{late:?}"
    );
    let row = h.store.approval(id).await.unwrap().unwrap();
    assert_eq!(row.status, ApprovalStatus::TimedOut);
    assert_eq!(h.approval_actions(id), ["requested", "timed_out"]);
    h.finish().await;
}

#[tokio::test]
async fn a_hold_whose_door_goes_away_is_cancelled() {
    let mut h = harness(Duration::from_secs(30)).await;
    let held = held(&mut h, "TRUNCATE people").await;
    let id = held.waiting.id;
    hold::cancel(&h.door.holder(), held.waiting, "the client disconnected").await;
    let row = h.store.approval(id).await.unwrap().unwrap();
    assert_eq!(row.status, ApprovalStatus::Cancelled);
    assert_eq!(h.approval_actions(id), ["requested", "cancelled"]);
    // Nothing can approve it now.
    let late = h.vote(id, VoteKind::Approve).await;
    assert!(
        !matches!(late, airlock_store::VoteOutcome::Decided(_)),
        "{late:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_recording_failure_in_the_middle_of_a_hold_keeps_the_statement_from_running() {
    let mut h = harness(Duration::from_secs(30)).await;
    let held = held(&mut h, "TRUNCATE people").await;
    let id = held.waiting.id;
    h.vote(id, VoteKind::Approve).await;
    // The journal breaks while the statement waits: its approval cannot be
    // recorded, so it does not run.
    let broken = tempfile::NamedTempFile::new().unwrap();
    h.door.trail = Trail {
        recorder: Recorder::open(&broken.path().join("journal"), Default::default()),
        session: h.door.trail.session,
    };
    let (outcome, answer) = h.door.settle(*held).await;
    assert_eq!(outcome, HoldOutcome::Unrecorded { approval: Some(id) });
    assert_eq!(answer, Answer::Refused(hold::UNRECORDED.into()));
    h.finish().await;
}

#[tokio::test]
async fn the_judge_on_an_empty_message_and_on_what_masking_cannot_make_safe() {
    let h = harness(Duration::from_secs(5)).await;
    let session = h.door.session();
    let empty = judge::judge(&session, &Ask::message(&[], Estimate::NotFetched), &NoFacts);
    assert_eq!(
        empty,
        Ruling::Allow {
            estimate_at_execution: None
        }
    );
    // SQL airlock cannot see into may read masked columns.
    let statements = h
        .door
        .analyzer
        .analyze("DO $$ BEGIN PERFORM 1; END $$")
        .to_vec();
    let Ruling::Deny(denial) = judge::judge(
        &session,
        &Ask::message(&statements, Estimate::NotFetched),
        &NoFacts,
    ) else {
        panic!("allowed");
    };
    assert_eq!(denial.by, DeniedBy::Masking);
    h.finish().await;
}

#[test]
fn a_session_ends_with_its_token_lifetime_or_grant_whichever_comes_first() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut authorized = Authorized {
        principal: principal(),
        route: route(),
    };
    authorized.principal.expires_at = now + Duration::from_secs(600);
    let token = open::deadline(&authorized, airlock_config::SessionLifetime::Token, now).unwrap();
    assert_eq!(
        (token.at, token.why),
        (now + Duration::from_secs(600), Cut::TokenExpired)
    );
    let fixed = open::deadline(
        &authorized,
        airlock_config::SessionLifetime::Fixed(Duration::from_secs(60)),
        now,
    )
    .unwrap();
    assert_eq!(
        (fixed.at, fixed.why),
        (now + Duration::from_secs(60), Cut::Lifetime)
    );
    authorized.route.grant = Some(Grant {
        id: "g1".into(),
        connection: "app".into(),
        role: "writer".into(),
        expires_at: now + Duration::from_secs(30),
        by_policy: false,
    });
    let grant = open::deadline(&authorized, airlock_config::SessionLifetime::Token, now).unwrap();
    assert_eq!(grant.at, now + Duration::from_secs(30));
    assert_eq!(
        grant.why.message(),
        "airlock: session ended: your just-in-time grant g1 expired"
    );
    assert_eq!(
        open::deadline(&authorized, airlock_config::SessionLifetime::Unlimited, now).map(|d| d.at),
        Some(now + Duration::from_secs(30))
    );
}
