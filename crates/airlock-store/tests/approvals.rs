//! Approvals and just-in-time access grants, against SQLite (a temp dir)
//! and PostgreSQL (a throwaway database), as in `store.rs`.

use airlock_store::{
    ApprovalFilter, ApprovalKind, ApprovalRow, ApprovalStatus, NewApproval, Store, StoreError,
    Vote, VoteKind, VoteOutcome, VoteRow,
};
use airlock_testkit::both;
use uuid::Uuid;

both!(
    create_and_read_back,
    invalid_approvals_are_refused,
    one_approval_decides,
    two_humans_are_needed,
    deny_decides_at_once,
    unknown_id_is_not_found,
    vote_after_deadline_times_out,
    finish_is_conditional,
    access_grant_lifecycle,
    heartbeat_and_abandon,
);

both!(
    multi_thread: concurrent_approve_and_deny,
    concurrent_approvals_both_count,
    concurrent_expiry_is_reported_once,
);

/// A pending statement approval needing `min` approvals, created at 100.
fn new(kind: ApprovalKind, min: u32) -> NewApproval {
    NewApproval {
        id: Uuid::now_v7(),
        kind,
        requester_issuer: "https://idp.example".into(),
        requester_subject: "agent-7".into(),
        requester_act: Some("alice".into()),
        connection: "prod".into(),
        role: "writer".into(),
        rule: "writes-need-approval".into(),
        approvers: vec!["dba".into(), "oncall".into()],
        min_approvals: min,
        detail: r#"{"sql":"DELETE FROM t WHERE id = 1","reason":"cleanup"}"#.into(),
        session_id: Some(Uuid::now_v7()),
        gateway: Some(Uuid::now_v7()),
        created_ms: 100,
        deadline_ms: None,
        duration_ms: (kind == ApprovalKind::Access).then_some(60_000),
    }
}

fn vote(human: &str, kind: VoteKind, at_ms: i64) -> Vote {
    Vote {
        voter: format!("{human}@idp"),
        human: human.into(),
        vote: kind,
        reason: Some(format!("{human} says {kind}")),
        at_ms,
    }
}

fn approve(human: &str, at_ms: i64) -> Vote {
    vote(human, VoteKind::Approve, at_ms)
}

fn deny(human: &str, at_ms: i64) -> Vote {
    vote(human, VoteKind::Deny, at_ms)
}

async fn row(store: &Store, id: Uuid) -> ApprovalRow {
    store.approval(id).await.unwrap().expect("approval stored")
}

async fn create_and_read_back(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let mut a = new(ApprovalKind::Statement, 2);
    a.deadline_ms = Some(5_000);
    store.create_approval(&a).await.unwrap();
    let mut b = new(ApprovalKind::Access, 1);
    b.created_ms = 200;
    b.requester_act = None;
    b.session_id = None;
    b.gateway = None;
    b.approvers = vec![];
    store.create_approval(&b).await.unwrap();

    let got = row(&store, a.id).await;
    assert_eq!(
        got,
        ApprovalRow {
            id: a.id,
            kind: ApprovalKind::Statement,
            status: ApprovalStatus::Pending,
            requester_issuer: a.requester_issuer.clone(),
            requester_subject: a.requester_subject.clone(),
            requester_act: Some("alice".into()),
            connection: "prod".into(),
            role: "writer".into(),
            rule: "writes-need-approval".into(),
            approvers: vec!["dba".into(), "oncall".into()],
            min_approvals: 2,
            approvals: 0,
            detail: a.detail.clone(),
            session_id: a.session_id,
            gateway: a.gateway,
            created_ms: 100,
            deadline_ms: Some(5_000),
            decided_ms: None,
            reason: None,
            decided_by: None,
            duration_ms: None,
            expires_ms: None,
            votes: vec![],
        }
    );
    let got = row(&store, b.id).await;
    assert_eq!(got.kind, ApprovalKind::Access);
    assert_eq!(got.approvers, Vec::<String>::new());
    assert_eq!(got.duration_ms, Some(60_000));
    assert_eq!(
        (got.requester_act, got.session_id, got.gateway),
        (None, None, None)
    );

    // The same id again is refused.
    assert!(store.create_approval(&a).await.is_err());

    // Listing: newest first, filtered, limited, with votes.
    store.vote(a.id, &approve("bob", 300)).await.unwrap();
    let all = store.approvals(&ApprovalFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [b.id, a.id]);
    assert_eq!(all[1].votes.len(), 1);
    let statements = store
        .approvals(&ApprovalFilter {
            kind: Some(ApprovalKind::Statement),
            ..ApprovalFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].id, a.id);
    let approved = store
        .approvals(&ApprovalFilter {
            status: Some(ApprovalStatus::Approved),
            ..ApprovalFilter::default()
        })
        .await
        .unwrap();
    assert!(approved.is_empty());
    let one = store
        .approvals(&ApprovalFilter {
            limit: 1,
            ..ApprovalFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, b.id);

    // Polling many at once; unknown ids are left out.
    let mut statuses = store.statuses(&[a.id, Uuid::now_v7(), b.id]).await.unwrap();
    statuses.sort_by_key(|s| s.0);
    assert_eq!(
        statuses,
        [
            (a.id, ApprovalStatus::Pending, None, None),
            (b.id, ApprovalStatus::Pending, None, None),
        ]
    );
    assert!(store.statuses(&[]).await.unwrap().is_empty());
}

async fn invalid_approvals_are_refused(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let zero = new(ApprovalKind::Statement, 0);
    assert!(matches!(
        store.create_approval(&zero).await,
        Err(StoreError::Invalid(_))
    ));
    let mut forever = new(ApprovalKind::Access, 1);
    forever.duration_ms = None;
    assert!(matches!(
        store.create_approval(&forever).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.approval(zero.id).await.unwrap().is_none());
    assert!(store.approval(forever.id).await.unwrap().is_none());
}

async fn one_approval_decides(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let a = new(ApprovalKind::Statement, 1);
    store.create_approval(&a).await.unwrap();
    assert_eq!(
        store.vote(a.id, &approve("bob", 1_000)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Approved)
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::Approved);
    assert_eq!(got.approvals, 1);
    assert_eq!(got.decided_ms, Some(1_000));
    assert_eq!(got.decided_by.as_deref(), Some("bob@idp"));
    assert_eq!(got.reason.as_deref(), Some("bob says approve"));
    assert_eq!(got.expires_ms, None);
    assert_eq!(
        got.votes,
        [VoteRow {
            voter: "bob@idp".into(),
            human: "bob".into(),
            vote: VoteKind::Approve,
            reason: Some("bob says approve".into()),
            at_ms: 1_000,
        }]
    );
    // Decided: further votes are refused and not recorded.
    assert_eq!(
        store.vote(a.id, &approve("carol", 1_100)).await.unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::Approved)
    );
    assert_eq!(
        store.vote(a.id, &approve("bob", 1_200)).await.unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::Approved)
    );
    assert_eq!(row(&store, a.id).await, got);
}

async fn two_humans_are_needed(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let a = new(ApprovalKind::Statement, 2);
    store.create_approval(&a).await.unwrap();
    assert_eq!(
        store.vote(a.id, &approve("bob", 1_000)).await.unwrap(),
        VoteOutcome::Counted {
            approvals: 1,
            needed: 2
        }
    );
    let counted = row(&store, a.id).await;
    assert_eq!(counted.status, ApprovalStatus::Pending);
    assert_eq!(counted.approvals, 1);
    assert_eq!((counted.decided_ms, counted.decided_by), (None, None));

    // Bob again, even under another identity or changing his mind: no.
    assert_eq!(
        store.vote(a.id, &approve("bob", 1_100)).await.unwrap(),
        VoteOutcome::Duplicate
    );
    let mut other_identity = approve("bob", 1_150);
    other_identity.voter = "bob-agent".into();
    assert_eq!(
        store.vote(a.id, &other_identity).await.unwrap(),
        VoteOutcome::Duplicate
    );
    assert_eq!(
        store.vote(a.id, &deny("bob", 1_200)).await.unwrap(),
        VoteOutcome::Duplicate
    );
    let still = row(&store, a.id).await;
    assert_eq!(still.status, ApprovalStatus::Pending);
    assert_eq!(still.approvals, 1);
    assert_eq!(still.votes.len(), 1);

    assert_eq!(
        store.vote(a.id, &approve("carol", 1_300)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Approved)
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::Approved);
    assert_eq!(got.approvals, 2);
    assert_eq!(got.decided_ms, Some(1_300));
    assert_eq!(got.decided_by.as_deref(), Some("carol@idp"));
    assert_eq!(
        got.votes
            .iter()
            .map(|v| v.human.as_str())
            .collect::<Vec<_>>(),
        ["bob", "carol"]
    );
}

async fn deny_decides_at_once(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let a = new(ApprovalKind::Statement, 2);
    store.create_approval(&a).await.unwrap();
    assert!(matches!(
        store.vote(a.id, &approve("bob", 1_000)).await.unwrap(),
        VoteOutcome::Counted { .. }
    ));
    assert_eq!(
        store.vote(a.id, &deny("carol", 1_100)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Denied)
    );
    assert_eq!(
        store.vote(a.id, &approve("dave", 1_200)).await.unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::Denied)
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::Denied);
    assert_eq!(got.approvals, 1);
    assert_eq!(got.decided_ms, Some(1_100));
    assert_eq!(got.decided_by.as_deref(), Some("carol@idp"));
    assert_eq!(got.reason.as_deref(), Some("carol says deny"));
    assert_eq!(got.votes.len(), 2);
    assert_eq!(got.votes[1].vote, VoteKind::Deny);

    // A deny on an access request denies it too.
    let b = new(ApprovalKind::Access, 1);
    store.create_approval(&b).await.unwrap();
    assert_eq!(
        store.vote(b.id, &deny("carol", 1_000)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Denied)
    );
    assert_eq!(row(&store, b.id).await.expires_ms, None);
}

async fn unknown_id_is_not_found(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let id = Uuid::now_v7();
    assert_eq!(
        store.vote(id, &approve("bob", 1_000)).await.unwrap(),
        VoteOutcome::NotFound
    );
    assert_eq!(
        store.vote(id, &deny("bob", 1_000)).await.unwrap(),
        VoteOutcome::NotFound
    );
    assert!(store.approval(id).await.unwrap().is_none());
    assert!(store.statuses(&[id]).await.unwrap().is_empty());
    assert!(
        store
            .finish(id, ApprovalStatus::Cancelled, None, 1_000)
            .await
            .is_err()
    );
    assert!(store.revoke(id, "admin", "why", 1_000).await.is_err());
}

async fn vote_after_deadline_times_out(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let mut a = new(ApprovalKind::Statement, 1);
    a.deadline_ms = Some(5_000);
    store.create_approval(&a).await.unwrap();
    // At the deadline is too late.
    assert_eq!(
        store.vote(a.id, &approve("bob", 5_000)).await.unwrap(),
        VoteOutcome::Expired
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::TimedOut);
    assert_eq!(got.decided_ms, Some(5_000));
    assert_eq!(got.approvals, 0);
    assert!(got.votes.is_empty());
    // Then it is simply decided.
    assert_eq!(
        store.vote(a.id, &deny("carol", 6_000)).await.unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::TimedOut)
    );

    // Just before the deadline is in time.
    let mut b = new(ApprovalKind::Statement, 1);
    b.deadline_ms = Some(5_000);
    store.create_approval(&b).await.unwrap();
    assert_eq!(
        store.vote(b.id, &approve("bob", 4_999)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Approved)
    );

    // An access request past its deadline is refused but stays pending
    // (it has no timed_out status); its owner cancels it.
    let mut c = new(ApprovalKind::Access, 1);
    c.deadline_ms = Some(5_000);
    store.create_approval(&c).await.unwrap();
    assert_eq!(
        store.vote(c.id, &deny("bob", 7_000)).await.unwrap(),
        VoteOutcome::Expired
    );
    assert_eq!(row(&store, c.id).await.status, ApprovalStatus::Pending);
    assert_eq!(
        store
            .finish(c.id, ApprovalStatus::Cancelled, Some("too late"), 7_100)
            .await
            .unwrap(),
        ApprovalStatus::Cancelled
    );
}

async fn finish_is_conditional(url: &str) {
    let store = Store::connect(url).await.unwrap();
    // A timeout that lost the race to an approval learns of the approval.
    let a = new(ApprovalKind::Statement, 1);
    store.create_approval(&a).await.unwrap();
    store.vote(a.id, &approve("bob", 1_000)).await.unwrap();
    assert_eq!(
        store
            .finish(a.id, ApprovalStatus::TimedOut, Some("deadline"), 1_001)
            .await
            .unwrap(),
        ApprovalStatus::Approved
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::Approved);
    assert_eq!(got.decided_ms, Some(1_000));
    assert_eq!(got.reason.as_deref(), Some("bob says approve"));

    // A pending one is finished, once.
    let b = new(ApprovalKind::Statement, 1);
    store.create_approval(&b).await.unwrap();
    assert_eq!(
        store
            .finish(
                b.id,
                ApprovalStatus::Cancelled,
                Some("client went away"),
                2_000
            )
            .await
            .unwrap(),
        ApprovalStatus::Cancelled
    );
    assert_eq!(
        store
            .finish(b.id, ApprovalStatus::TimedOut, None, 2_500)
            .await
            .unwrap(),
        ApprovalStatus::Cancelled
    );
    let got = row(&store, b.id).await;
    assert_eq!(got.decided_ms, Some(2_000));
    assert_eq!(got.reason.as_deref(), Some("client went away"));
    assert_eq!(
        store.vote(b.id, &approve("bob", 2_600)).await.unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::Cancelled)
    );
    assert_eq!(
        store.statuses(&[b.id]).await.unwrap(),
        [(
            b.id,
            ApprovalStatus::Cancelled,
            Some("client went away".into()),
            None
        )]
    );

    // Back to pending is no transition.
    let c = new(ApprovalKind::Statement, 1);
    store.create_approval(&c).await.unwrap();
    assert!(matches!(
        store
            .finish(c.id, ApprovalStatus::Pending, None, 3_000)
            .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn access_grant_lifecycle(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let a = new(ApprovalKind::Access, 1);
    store.create_approval(&a).await.unwrap();
    let active = |now| {
        let store = store.clone();
        async move {
            store
                .active_grants("https://idp.example", "agent-7", "prod", now)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(active(1_000).await.is_empty());
    assert_eq!(
        store.vote(a.id, &approve("bob", 1_000)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Granted)
    );
    let got = row(&store, a.id).await;
    assert_eq!(got.status, ApprovalStatus::Granted);
    assert_eq!(got.expires_ms, Some(61_000));
    assert_eq!(got.decided_by.as_deref(), Some("bob@idp"));
    assert!(!got.status.is_final());

    assert_eq!(active(1_000).await, [a.id]);
    assert_eq!(active(60_999).await, [a.id]);
    assert!(active(61_000).await.is_empty());
    // Someone else's, or another connection's, grants are not these.
    assert!(
        store
            .active_grants("https://idp.example", "agent-8", "prod", 2_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .active_grants("https://idp.example", "agent-7", "staging", 2_000)
            .await
            .unwrap()
            .is_empty()
    );

    // Expiry: not before its time, then exactly once.
    assert!(store.expire_grants(60_999).await.unwrap().is_empty());
    let expired = store.expire_grants(61_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, a.id);
    assert_eq!(expired[0].status, ApprovalStatus::Expired);
    assert_eq!(expired[0].votes.len(), 1);
    assert!(store.expire_grants(61_000).await.unwrap().is_empty());
    assert!(store.expire_grants(99_000).await.unwrap().is_empty());
    assert_eq!(row(&store, a.id).await.status, ApprovalStatus::Expired);
    assert_eq!(row(&store, a.id).await.decided_ms, Some(1_000));
    assert!(ApprovalStatus::Expired.is_final());
    // An expired grant cannot be revoked.
    assert_eq!(
        store.revoke(a.id, "admin", "oops", 62_000).await.unwrap(),
        ApprovalStatus::Expired
    );

    // Revocation ends a grant early, once; a pending request is no grant.
    let b = new(ApprovalKind::Access, 2);
    store.create_approval(&b).await.unwrap();
    assert_eq!(
        store.revoke(b.id, "admin", "no", 2_000).await.unwrap(),
        ApprovalStatus::Pending
    );
    store.vote(b.id, &approve("bob", 2_000)).await.unwrap();
    assert_eq!(
        store.vote(b.id, &approve("carol", 3_000)).await.unwrap(),
        VoteOutcome::Decided(ApprovalStatus::Granted)
    );
    assert_eq!(row(&store, b.id).await.expires_ms, Some(63_000));
    assert_eq!(active(4_000).await, [b.id]);
    assert_eq!(
        store
            .revoke(b.id, "admin", "incident over", 5_000)
            .await
            .unwrap(),
        ApprovalStatus::Revoked
    );
    assert_eq!(
        store.revoke(b.id, "other", "again", 6_000).await.unwrap(),
        ApprovalStatus::Revoked
    );
    let got = row(&store, b.id).await;
    assert_eq!(got.status, ApprovalStatus::Revoked);
    assert_eq!(got.decided_by.as_deref(), Some("admin"));
    assert_eq!(got.reason.as_deref(), Some("incident over"));
    assert_eq!(got.decided_ms, Some(5_000));
    assert_eq!(got.expires_ms, Some(5_000));
    assert!(active(5_500).await.is_empty());
    // A revoked grant does not expire later.
    assert!(store.expire_grants(99_000).await.unwrap().is_empty());
}

async fn heartbeat_and_abandon(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (live, stale, silent) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    store.heartbeat(live, 1_000).await.unwrap();
    store.heartbeat(stale, 1_000).await.unwrap();
    store.heartbeat(live, 10_000).await.unwrap();
    // A heartbeat never moves back.
    store.heartbeat(live, 9_000).await.unwrap();

    let held_by = |gateway: Option<Uuid>, created_ms: i64| {
        let mut a = new(ApprovalKind::Statement, 1);
        a.gateway = gateway;
        a.created_ms = created_ms;
        a
    };
    let on_live = held_by(Some(live), 500);
    let on_stale = held_by(Some(stale), 500);
    let on_silent = held_by(Some(silent), 500);
    let on_nobody = held_by(None, 500);
    let fresh = held_by(Some(silent), 11_000);
    let mut access = new(ApprovalKind::Access, 1);
    access.gateway = Some(silent);
    let decided = held_by(Some(stale), 500);
    for a in [
        &on_live, &on_stale, &on_silent, &on_nobody, &fresh, &access, &decided,
    ] {
        store.create_approval(a).await.unwrap();
    }
    store.vote(decided.id, &approve("bob", 600)).await.unwrap();

    // Heartbeats after 12_000 - 5_000 are alive.
    let mut abandoned = store.abandon_stale(12_000, 5_000).await.unwrap();
    abandoned.sort();
    let mut expected = vec![on_stale.id, on_silent.id];
    expected.sort();
    assert_eq!(abandoned, expected);
    assert!(store.abandon_stale(12_000, 5_000).await.unwrap().is_empty());
    for (id, status) in [
        (on_live.id, ApprovalStatus::Pending),
        (on_stale.id, ApprovalStatus::Abandoned),
        (on_silent.id, ApprovalStatus::Abandoned),
        (on_nobody.id, ApprovalStatus::Pending),
        (fresh.id, ApprovalStatus::Pending),
        (access.id, ApprovalStatus::Pending),
        (decided.id, ApprovalStatus::Approved),
    ] {
        assert_eq!(row(&store, id).await.status, status, "{id}");
    }
    let got = row(&store, on_stale.id).await;
    assert_eq!(got.decided_ms, Some(12_000));
    assert!(got.reason.is_some());
    assert_eq!(
        store
            .vote(on_stale.id, &approve("bob", 12_100))
            .await
            .unwrap(),
        VoteOutcome::NotPending(ApprovalStatus::Abandoned)
    );

    // A clean shutdown abandons what the gateway holds.
    assert_eq!(
        store.abandon_gateway(live, 13_000).await.unwrap(),
        [on_live.id]
    );
    assert!(
        store
            .abandon_gateway(live, 13_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        row(&store, on_live.id).await.status,
        ApprovalStatus::Abandoned
    );

    // Once the fresh one is old enough, its silent gateway abandons it too.
    assert_eq!(
        store.abandon_stale(16_000, 5_000).await.unwrap(),
        [fresh.id]
    );
    assert_eq!(row(&store, access.id).await.status, ApprovalStatus::Pending);
}

async fn concurrent_approve_and_deny(url: &str) {
    let store = Store::connect(url).await.unwrap();
    for round in 0..20 {
        let a = new(ApprovalKind::Statement, 1);
        store.create_approval(&a).await.unwrap();
        let (s1, s2) = (store.clone(), store.clone());
        let yes = tokio::spawn(async move { s1.vote(a.id, &approve("bob", 1_000)).await });
        let no = tokio::spawn(async move { s2.vote(a.id, &deny("carol", 1_000)).await });
        let (yes, no) = (yes.await.unwrap().unwrap(), no.await.unwrap().unwrap());
        let winner = match (yes, no) {
            (VoteOutcome::Decided(ApprovalStatus::Approved), VoteOutcome::NotPending(s)) => {
                assert_eq!(s, ApprovalStatus::Approved, "round {round}");
                ApprovalStatus::Approved
            }
            (VoteOutcome::NotPending(s), VoteOutcome::Decided(ApprovalStatus::Denied)) => {
                assert_eq!(s, ApprovalStatus::Denied, "round {round}");
                ApprovalStatus::Denied
            }
            other => panic!("round {round}: {other:?}"),
        };
        let got = row(&store, a.id).await;
        assert_eq!(got.status, winner, "round {round}");
        assert_eq!(got.votes.len(), 1, "round {round}");
        let expected_vote = if winner == ApprovalStatus::Approved {
            VoteKind::Approve
        } else {
            VoteKind::Deny
        };
        assert_eq!(got.votes[0].vote, expected_vote, "round {round}");
        assert_eq!(
            got.approvals,
            u32::from(winner == ApprovalStatus::Approved),
            "round {round}"
        );
    }
}

async fn concurrent_approvals_both_count(url: &str) {
    let store = Store::connect(url).await.unwrap();
    for round in 0..20 {
        let a = new(ApprovalKind::Statement, 2);
        store.create_approval(&a).await.unwrap();
        let (s1, s2) = (store.clone(), store.clone());
        let bob = tokio::spawn(async move { s1.vote(a.id, &approve("bob", 1_000)).await });
        let carol = tokio::spawn(async move { s2.vote(a.id, &approve("carol", 1_000)).await });
        let mut outcomes = [bob.await.unwrap().unwrap(), carol.await.unwrap().unwrap()];
        outcomes.sort_by_key(|o| matches!(o, VoteOutcome::Decided(_)));
        assert_eq!(
            outcomes,
            [
                VoteOutcome::Counted {
                    approvals: 1,
                    needed: 2
                },
                VoteOutcome::Decided(ApprovalStatus::Approved)
            ],
            "round {round}"
        );
        let got = row(&store, a.id).await;
        assert_eq!(got.status, ApprovalStatus::Approved, "round {round}");
        assert_eq!(got.approvals, 2, "round {round}");
        assert_eq!(got.votes.len(), 2, "round {round}");
    }
}

async fn concurrent_expiry_is_reported_once(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let a = new(ApprovalKind::Access, 1);
        store.create_approval(&a).await.unwrap();
        store.vote(a.id, &approve("bob", 1_000)).await.unwrap();
        ids.push(a.id);
    }
    // Two "replicas" (pools) expiring at once.
    let other = Store::connect(url).await.unwrap();
    let (s1, s2) = (store.clone(), other.clone());
    let one = tokio::spawn(async move { s1.expire_grants(61_000).await });
    let two = tokio::spawn(async move { s2.expire_grants(61_000).await });
    let (one, two) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
    let mut reported: Vec<Uuid> = one.iter().chain(&two).map(|r| r.id).collect();
    reported.sort();
    ids.sort();
    assert_eq!(reported, ids);
    assert!(
        one.iter()
            .chain(&two)
            .all(|r| r.status == ApprovalStatus::Expired)
    );
}
