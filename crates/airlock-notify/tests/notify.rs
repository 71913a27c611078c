//! The notifier against real HTTP servers (axum on 127.0.0.1:0).

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_notify::{
    Format, Notification, Notifier, Retry, Stats, Webhook, event, header, verify,
};
use axum::Router;
use axum::body::Bytes;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// One request the test server received.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// Starts a server that records every request and answers with
/// `respond(hit, n)`, `n` counting the requests to that path from 1. A 3xx
/// answer comes with `Location: /target`.
async fn serve<F, Fut>(respond: F) -> (String, Hits)
where
    F: Fn(Hit, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = StatusCode> + Send + 'static,
{
    let hits: Hits = Arc::default();
    let recorded = hits.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let hits = recorded.clone();
        let respond = respond.clone();
        async move {
            let hit = Hit {
                path: uri.path().to_owned(),
                headers,
                body: body.to_vec(),
            };
            let n = {
                let mut hits = hits.lock().unwrap();
                hits.push(hit.clone());
                hits.iter().filter(|h| h.path == hit.path).count()
            };
            let status = respond(hit, n).await;
            let mut headers = HeaderMap::new();
            if status.is_redirection() {
                headers.insert(LOCATION, "/target".parse().unwrap());
            }
            (status, headers).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

async fn ok(_: Hit, _: usize) -> StatusCode {
    StatusCode::OK
}

fn hook(url: String, events: &[&str]) -> Webhook {
    Webhook {
        url,
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        format: Format::Json,
        secret: None,
        timeout: Duration::from_secs(5),
    }
}

fn note(event: &'static str) -> Notification {
    Notification {
        event,
        data: json!({"request": 7, "by": "alice", "tables": ["orders"]}),
        summary: format!("alice: {event}"),
    }
}

fn fast_retry(attempts: u32) -> Retry {
    Retry {
        attempts,
        base: Duration::from_millis(10),
    }
}

/// Polls `cond` until it holds (a generous cap so a broken notifier fails
/// the test instead of hanging it; no test depends on how quickly).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn until_stats(n: &Notifier, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
    eventually(what, || cond(&n.stats())).await;
    n.stats()
}

fn hits(h: &Hits) -> Vec<Hit> {
    h.lock().unwrap().clone()
}

#[tokio::test]
async fn json_delivery_is_shaped_signed_and_verifiable() {
    let (base, got) = serve(ok).await;
    let secret = b"correct horse battery staple".to_vec();
    let signed = Webhook {
        secret: Some(secret.clone()),
        ..hook(format!("{base}/signed"), &[event::APPROVAL_REQUESTED])
    };
    let plain = hook(format!("{base}/plain"), &[event::APPROVAL_REQUESTED]);
    let notifier = Notifier::start(vec![signed, plain], Retry::default());

    let n = note(event::APPROVAL_REQUESTED);
    let data = n.data.clone();
    notifier.send(n);
    let stats = until_stats(&notifier, "two deliveries", |s| s.delivered == 2).await;
    assert_eq!(
        stats,
        Stats {
            queued: 2,
            delivered: 2,
            failed: 0,
            retries: 0,
            dropped: 0,
            attempts: 2
        }
    );

    let all = hits(&got);
    let hit = all.iter().find(|h| h.path == "/signed").unwrap();
    let body = hit.json();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 4, "{body}");
    assert_eq!(body["event"], "approval.requested");
    assert_eq!(body["data"], data);
    let delivery = body["delivery"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(delivery).unwrap().get_version(),
        Some(uuid::Version::Random)
    );
    let at = body["at"].as_str().unwrap();
    assert!(at.ends_with('Z'), "{at}");
    let at = humantime::parse_rfc3339(at).unwrap();
    let age = SystemTime::now().duration_since(at).unwrap();
    assert!(age < Duration::from_secs(600), "{age:?}");

    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(
        hit.header("user-agent"),
        format!("airlock/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(hit.header(header::EVENT), "approval.requested");
    assert_eq!(hit.header(header::DELIVERY), delivery);
    let ts: u64 = hit.header(header::TIMESTAMP).parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts <= now && now - ts < 600, "{ts} vs {now}");

    let sig = hit.header(header::SIGNATURE);
    let hex = sig.strip_prefix("sha256=").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{sig}"
    );
    assert_eq!(sig, airlock_notify::sign(&secret, ts, &hit.body));
    assert!(verify(&secret, ts, &hit.body, sig));
    assert!(!verify(b"wrong secret", ts, &hit.body, sig));
    assert!(!verify(&secret, ts + 1, &hit.body, sig));
    let mut tampered = hit.body.clone();
    tampered.push(b' ');
    assert!(!verify(&secret, ts, &tampered, sig));

    // Without a secret: the same shape, no signature, its own delivery id.
    let plain = all.iter().find(|h| h.path == "/plain").unwrap();
    assert!(plain.headers.get(header::SIGNATURE).is_none());
    assert_eq!(plain.json()["event"], "approval.requested");
    assert_ne!(plain.header(header::DELIVERY), delivery);
    assert_eq!(plain.json()["delivery"], plain.header(header::DELIVERY));
}

#[tokio::test]
async fn slack_format_is_just_the_summary() {
    let (base, got) = serve(ok).await;
    let notifier = Notifier::start(
        vec![Webhook {
            format: Format::Slack,
            ..hook(base, &[event::ACCESS_GRANTED])
        }],
        Retry::default(),
    );
    notifier.send(Notification {
        event: event::ACCESS_GRANTED,
        data: json!({"grant": 1}),
        summary: "alice was granted read on orders for 1h".into(),
    });
    until_stats(&notifier, "delivery", |s| s.delivered == 1).await;
    let hit = &hits(&got)[0];
    assert_eq!(
        hit.json(),
        json!({"text": "alice was granted read on orders for 1h"})
    );
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header(header::EVENT), "access.granted");
}

#[tokio::test]
async fn webhooks_only_get_the_events_they_subscribe_to() {
    let (base, got) = serve(ok).await;
    let notifier = Notifier::start(
        vec![
            hook(
                format!("{base}/approvals"),
                &[event::APPROVAL_REQUESTED, event::APPROVAL_DECIDED],
            ),
            hook(format!("{base}/access"), &[event::ACCESS_GRANTED]),
            hook(format!("{base}/all"), &event::ALL),
        ],
        Retry::default(),
    );
    notifier.send(note(event::APPROVAL_REQUESTED));
    notifier.send(note(event::ACCESS_GRANTED));
    notifier.send(note(event::ACCESS_EXPIRED));
    // 2 + 2 + 1 deliveries; nobody but /all wants access.expired.
    let stats = until_stats(&notifier, "five deliveries", |s| s.delivered == 5).await;
    assert_eq!((stats.queued, stats.dropped, stats.failed), (5, 0, 0));

    let mut seen: Vec<(String, String)> = hits(&got)
        .iter()
        .map(|h| (h.path.clone(), h.header(header::EVENT).to_owned()))
        .collect();
    seen.sort();
    let expect = [
        ("/access", "access.granted"),
        ("/all", "access.expired"),
        ("/all", "access.granted"),
        ("/all", "approval.requested"),
        ("/approvals", "approval.requested"),
    ];
    assert_eq!(
        seen,
        expect.map(|(p, e)| (p.to_owned(), e.to_owned())).to_vec()
    );

    // approval.decided: /approvals and /all.
    notifier.send(note(event::APPROVAL_DECIDED));
    let stats = until_stats(&notifier, "approval.decided", |s| s.delivered == 7).await;
    assert_eq!((stats.queued, stats.failed), (7, 0));
    let decided: Vec<String> = hits(&got)
        .iter()
        .filter(|h| h.header(header::EVENT) == "approval.decided")
        .map(|h| h.path.clone())
        .collect();
    assert_eq!(decided.len(), 2);
    assert!(decided.contains(&"/approvals".to_owned()) && decided.contains(&"/all".to_owned()));

    // An event no webhook wants is not even queued.
    let quiet = Notifier::start(
        vec![hook(format!("{base}/x"), &[event::ACCESS_REQUESTED])],
        Retry::default(),
    );
    quiet.send(note(event::APPROVAL_DECIDED));
    assert_eq!(quiet.stats(), Stats::default());
    assert!(hits(&got).iter().all(|h| h.path != "/x"));
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let (base, got) = serve(|_, n| async move {
        if n <= 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    })
    .await;
    let notifier = Notifier::start(
        vec![Webhook {
            secret: Some(b"k".to_vec()),
            ..hook(base, &[event::APPROVAL_DECIDED])
        }],
        Retry {
            attempts: 5,
            base: Duration::from_millis(50),
        },
    );
    notifier.send(note(event::APPROVAL_DECIDED));
    let stats = until_stats(&notifier, "delivery", |s| s.delivered == 1).await;
    assert_eq!(
        stats,
        Stats {
            queued: 1,
            delivered: 1,
            failed: 0,
            retries: 2,
            dropped: 0,
            attempts: 3
        }
    );
    let all = hits(&got);
    assert_eq!(all.len(), 3);
    let id = all[0].header(header::DELIVERY);
    for h in &all {
        assert_eq!(h.header(header::DELIVERY), id);
        assert_eq!(h.json()["delivery"], id);
        // Each attempt is signed with its own timestamp.
        let ts: u64 = h.header(header::TIMESTAMP).parse().unwrap();
        assert!(verify(b"k", ts, &h.body, h.header(header::SIGNATURE)));
    }
    // The body is identical across attempts.
    assert!(all.iter().all(|h| h.body == all[0].body));
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let (base, got) = serve(|_, n| async move {
        if n == 1 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::NO_CONTENT
        }
    })
    .await;
    let notifier = Notifier::start(vec![hook(base, &[event::ACCESS_REQUESTED])], fast_retry(3));
    notifier.send(note(event::ACCESS_REQUESTED));
    let stats = until_stats(&notifier, "delivery", |s| s.delivered == 1).await;
    assert_eq!((stats.retries, stats.attempts, stats.failed), (1, 2, 0));
    assert_eq!(hits(&got).len(), 2);
}

#[tokio::test]
async fn an_unreachable_endpoint_never_holds_up_send() {
    // A port nothing listens on: bind one, then let it go.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let attempts = 3;
    let notifier = Notifier::start(
        vec![hook(
            format!("http://{dead}/hook"),
            &[event::ACCESS_EXPIRED],
        )],
        fast_retry(attempts),
    );
    // `send` is a plain function returning `()`, not a future: there is
    // nothing for the data path to await.
    let send: fn(&Notifier, Notification) = Notifier::send;
    let n = 1000u64;
    for _ in 0..n {
        send(&notifier, note(event::ACCESS_EXPIRED));
    }
    assert_eq!(notifier.stats().queued, n);
    let stats = until_stats(&notifier, "all deliveries to give up", |s| s.failed == n).await;
    assert_eq!(
        stats,
        Stats {
            queued: n,
            delivered: 0,
            failed: n,
            retries: n * u64::from(attempts - 1),
            dropped: 0,
            attempts: n * u64::from(attempts),
        }
    );
}

#[tokio::test]
async fn a_slow_endpoint_times_out_without_delaying_a_healthy_one() {
    // The notifier's counters when the healthy delivery arrived.
    let notifier_cell: Arc<OnceLock<Notifier>> = Arc::default();
    let seen_at_healthy: Arc<OnceLock<Stats>> = Arc::default();
    let (cell, seen) = (notifier_cell.clone(), seen_at_healthy.clone());
    let (base, got) = serve(move |hit, _| {
        let (cell, seen) = (cell.clone(), seen.clone());
        async move {
            if hit.path == "/slow" {
                // Far longer than the webhook's timeout.
                tokio::time::sleep(Duration::from_secs(60)).await;
            } else {
                let notifier = cell.get().expect("notifier set before sending");
                let _ = seen.set(notifier.stats());
            }
            StatusCode::OK
        }
    })
    .await;
    let attempts = 3;
    let notifier = Notifier::start(
        vec![
            Webhook {
                timeout: Duration::from_millis(300),
                ..hook(format!("{base}/slow"), &[event::APPROVAL_REQUESTED])
            },
            hook(format!("{base}/healthy"), &[event::APPROVAL_REQUESTED]),
        ],
        fast_retry(attempts),
    );
    notifier_cell.set(notifier.clone()).unwrap();
    notifier.send(note(event::APPROVAL_REQUESTED));

    let stats = until_stats(&notifier, "the slow delivery to give up", |s| s.failed == 1).await;
    assert_eq!(
        stats,
        Stats {
            queued: 2,
            delivered: 1,
            failed: 1,
            retries: u64::from(attempts - 1),
            dropped: 0,
            attempts: u64::from(attempts) + 1,
        }
    );
    // The healthy endpoint got its delivery while the slow one was still
    // being tried: nothing had failed yet.
    let at_healthy = *seen_at_healthy.get().expect("healthy endpoint was called");
    assert_eq!(at_healthy.failed, 0, "{at_healthy:?}");
    assert!(at_healthy.attempts < u64::from(attempts), "{at_healthy:?}");

    let all = hits(&got);
    assert_eq!(
        all.iter().filter(|h| h.path == "/slow").count(),
        attempts as usize
    );
    assert_eq!(all.iter().filter(|h| h.path == "/healthy").count(), 1);
    // The healthy request arrived before the slow endpoint's last attempt.
    let healthy_pos = all.iter().position(|h| h.path == "/healthy").unwrap();
    let last_slow_pos = all.iter().rposition(|h| h.path == "/slow").unwrap();
    assert!(
        healthy_pos < last_slow_pos,
        "{:?}",
        all.iter().map(|h| &h.path).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn client_errors_other_than_429_are_not_retried() {
    let (base, got) = serve(|_, _| async { StatusCode::NOT_FOUND }).await;
    let notifier = Notifier::start(vec![hook(base, &[event::ACCESS_GRANTED])], fast_retry(5));
    notifier.send(note(event::ACCESS_GRANTED));
    let stats = until_stats(&notifier, "failure", |s| s.failed == 1).await;
    assert_eq!(
        stats,
        Stats {
            queued: 1,
            delivered: 0,
            failed: 1,
            retries: 0,
            dropped: 0,
            attempts: 1
        }
    );
    // A later notification is another single attempt: the first was not
    // retried behind our back.
    notifier.send(note(event::ACCESS_GRANTED));
    let stats = until_stats(&notifier, "second failure", |s| s.failed == 2).await;
    assert_eq!((stats.attempts, stats.retries), (2, 0));
    assert_eq!(hits(&got).len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, got) = serve(|hit, _| async move {
        if hit.path == "/moved" {
            StatusCode::TEMPORARY_REDIRECT
        } else {
            StatusCode::OK
        }
    })
    .await;
    // `serve` adds `Location: /target` to 3xx answers.
    let notifier = Notifier::start(
        vec![Webhook {
            secret: Some(b"k".to_vec()),
            ..hook(format!("{base}/moved"), &[event::APPROVAL_DECIDED])
        }],
        fast_retry(3),
    );
    notifier.send(note(event::APPROVAL_DECIDED));
    let stats = until_stats(&notifier, "failure", |s| s.failed == 1).await;
    assert_eq!((stats.attempts, stats.retries, stats.delivered), (1, 0, 0));
    let all = hits(&got);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].path, "/moved");
}

// A current-thread runtime (the default) cannot run the delivery worker while
// the test's synchronous loop of sends runs, so exactly `capacity`
// deliveries fit in the queue and the rest are dropped.
#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (base, got) = serve(|_, _| async {
        // Never answers within the test.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        StatusCode::OK
    })
    .await;
    let capacity = 8;
    let notifier = Notifier::start_with_capacity(
        vec![Webhook {
            timeout: Duration::from_secs(3600),
            ..hook(base, &[event::ACCESS_REQUESTED])
        }],
        Retry::default(),
        capacity,
    );
    let sent = 100u64;
    for _ in 0..sent {
        notifier.send(note(event::ACCESS_REQUESTED));
    }
    let stats = notifier.stats();
    assert_eq!(stats.queued, capacity as u64);
    assert_eq!(stats.dropped, sent - capacity as u64);

    // The queued ones go out (and hang on the blocked endpoint); nothing is
    // delivered, nothing more is dropped.
    eventually("queued deliveries to reach the endpoint", || {
        hits(&got).len() == capacity
    })
    .await;
    let stats = notifier.stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.dropped),
        (0, 0, sent - capacity as u64)
    );
}
