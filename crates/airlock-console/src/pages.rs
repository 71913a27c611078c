//! The pages. Each asks the API for its data with the session's token
//! ([`Client::local`]) and renders it with maud, which escapes every value.
//! A page without a login redirects to it; a fragment or event stream
//! answers 401. Every POST checks the session's CSRF token first (403).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_api::approvals::{Approval, ApprovalsQuery, DecisionRequest};
use airlock_api::audit::SessionsQuery;
use airlock_api::client::Error as ApiError;
use airlock_api::{AccessRequest, Client, ExplainRequest};
use airlock_policy::approval::{Requester, Vote, check_vote};
use axum::extract::{Path, Query};
use axum::http::Uri as OriginalUri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::highlight;
use crate::session::Session;
use crate::{Console, State};

/// How often the live queue looks for a change.
const POLL: Duration = Duration::from_millis(250);

/// The session, or the answer for a request without one: the login page
/// for a page (coming back to it after), 401 for a fragment or a stream.
fn login(
    console: &Console,
    headers: &HeaderMap,
    uri: &OriginalUri,
    page: bool,
) -> Result<Arc<Session>, Response> {
    if let Some(s) = console.sessions.get(headers) {
        return Ok(s);
    }
    if !page {
        return Err((StatusCode::UNAUTHORIZED, "log in at /console/login\n").into_response());
    }
    let next = uri.path_and_query().map_or("/console", |p| p.as_str());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    Err(Redirect::to(&format!("/console/login?{query}")).into_response())
}

/// A page's login: its handler runs only with one (else the login page).
pub(crate) struct Page(Arc<Session>);

/// A fragment's or stream's login: its handler runs only with one (else
/// 401).
pub(crate) struct Fragment(Arc<Session>);

impl axum::extract::FromRequestParts<Arc<Console>> for Page {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        login(console, &parts.headers, &parts.uri, true).map(Page)
    }
}

impl axum::extract::FromRequestParts<Arc<Console>> for Fragment {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        login(console, &parts.headers, &parts.uri, false).map(Fragment)
    }
}

/// The session of a POST whose form carries the right CSRF token.
fn poster(
    console: &Console,
    headers: &HeaderMap,
    uri: &OriginalUri,
    csrf: Option<&str>,
) -> Result<Arc<Session>, Response> {
    let s = login(console, headers, uri, true)?;
    if !s.csrf_ok(csrf) {
        tracing::info!(subject = %s.caller.subject, path = %uri.path(), "console: CSRF token missing or wrong");
        return Err(forbidden_csrf());
    }
    Ok(s)
}

fn client(console: &Console, s: &Session) -> Client {
    Client::local(console.api.clone(), &s.token)
}

/// 403 for a state-changing request without this session's CSRF token.
pub(crate) fn forbidden_csrf() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token is missing or wrong. Reload the page and try again.",
    )
}

/// A page that says what went wrong, without the navigation.
pub(crate) fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main class="narrow" {
                    h1 { (title) }
                    p class="problem" { (detail) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    };
    (status, axum::response::Html(page.into_string())).into_response()
}

/// An API error as a page: an expired token logs the person out.
fn api_problem(console: &Console, headers: &HeaderMap, e: ApiError) -> Response {
    match e {
        ApiError::Api { status: 401, .. } => {
            console.sessions.remove(headers);
            Redirect::to("/console/login").into_response()
        }
        ApiError::Api { status, message } => problem(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            match status {
                403 => "Not allowed",
                404 => "Not found",
                409 => "Already decided",
                _ => "The request failed",
            },
            &message,
        ),
        other => problem(
            StatusCode::BAD_GATEWAY,
            "The request failed",
            &other.to_string(),
        ),
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · airlock" }
            link rel="stylesheet" href="/console/static/console.css";
            link rel="icon" href="/console/static/favicon.svg";
            script src="/console/static/console.js" defer {}
        }
    }
}

const TABS: &[(&str, &str, &str)] = &[
    ("approvals", "/console/approvals", "Approvals"),
    ("access", "/console/access", "Access"),
    ("sessions", "/console/sessions", "Sessions"),
    ("audit", "/console/audit", "Audit"),
    ("policy", "/console/policy", "Policy"),
];

fn layout(s: &Session, title: &str, tab: &str, body: Markup) -> Response {
    let c = &s.caller;
    let mut roles = Vec::new();
    if c.admin {
        roles.push("admin");
    }
    if c.auditor {
        roles.push("auditor");
    }
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    nav aria-label="Console" {
                        span class="brand" { "airlock" }
                        @for (id, href, name) in TABS {
                            @if *id == tab {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                    div class="who" {
                        span id="whoami" { (c.subject) }
                        @if !roles.is_empty() { " (" (roles.join(", ")) ")" }
                        form method="post" action="/console/logout" class="inline" {
                            (csrf(s))
                            button type="submit" class="link" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    axum::response::Html(page.into_string()).into_response()
}

fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

fn sql(text: &str) -> Markup {
    html! {
        pre class="sql" {
            code {
                @for (class, piece) in highlight::tokens(text) {
                    @if class.css().is_empty() { (piece) } @else { span class=(class.css()) { (piece) } }
                }
            }
        }
    }
}

/// "3m 20s" from a duration, to the second.
fn span_text(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// How long ago an RFC 3339 time was.
fn ago(at: &str) -> Markup {
    let text = humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| at.to_string(), |d| format!("{} ago", span_text(d)));
    html! { time datetime=(at) data-since=(at) title=(at) { (text) } }
}

/// How long until an RFC 3339 time.
fn left(at: Option<&str>) -> Markup {
    let Some(at) = at else {
        return html! { "—" };
    };
    let text = humantime::parse_rfc3339_weak(at)
        .ok()
        .map(|t| match t.duration_since(SystemTime::now()) {
            Ok(d) => span_text(d),
            Err(_) => "expired".into(),
        })
        .unwrap_or_else(|| at.to_string());
    html! { time datetime=(at) data-until=(at) title=(at) { (text) } }
}

fn who(subject: &str, act: Option<&str>) -> Markup {
    html! {
        span class="principal" { (subject) }
        @if let Some(act) = act { br; small { "via " (act) } }
    }
}

/// Whether the API would take `s`'s vote on `a` (the buttons are shown
/// only then; the API checks again).
fn may_vote(s: &Session, a: &Approval) -> bool {
    a.status == "pending"
        && check_vote(
            &Requester {
                subject: &a.requester,
                act: a.act.as_deref(),
            },
            &s.caller.principal,
            &a.approvers,
            Vote::Approve,
            Some("-"),
            s.caller.admin,
        )
        .is_ok()
}

/// Held statements waiting: as many as the API gives (its visibility
/// filter comes after its limit).
fn pending() -> ApprovalsQuery {
    ApprovalsQuery {
        status: Some("pending".into()),
        limit: Some(1000),
    }
}

/// Whether `s` is who made request `a`.
fn requested(s: &Session, a: &Approval) -> bool {
    a.requester == s.caller.principal.subject && a.requester_issuer == s.caller.principal.issuer
}

// ---- approvals -------------------------------------------------------

fn queue_table(list: &[Approval]) -> Markup {
    html! {
        @if list.is_empty() {
            p class="empty" id="queue-empty" { "Nothing is waiting for a decision." }
        } @else {
            table class="queue" {
                thead { tr { th { "Requester" } th { "Connection · role" } th { "Rule" } th { "Statement" } th { "Votes" } th { "Age" } th { "Time left" } } }
                tbody {
                    @for a in list {
                        @let d = a.detail();
                        tr data-approval=(a.id) {
                            td { (who(&a.requester, a.act.as_deref())) }
                            td { (a.connection) " · " (a.role) }
                            td { (a.rule) }
                            td class="stmt" {
                                a href={ "/console/approvals/" (a.id) } {
                                    (d.statement.as_deref().map(|t| truncate(t, 120)).unwrap_or_default())
                                }
                            }
                            td { (a.approvals) " of " (a.min_approvals) }
                            td { (ago(&a.created_at)) }
                            td { (left(a.deadline.as_deref())) }
                        }
                    }
                }
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `GET /console/approvals`: the live queue.
pub(crate) async fn approvals(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
) -> Response {
    let list = match client(&console, &s).approvals(&pending()).await {
        Ok(l) => l.approvals,
        Err(e) => return api_problem(&console, &headers, e),
    };
    layout(
        &s,
        "Approvals",
        "approvals",
        html! {
            h1 { "Held statements" }
            p class="hint" { "Statements waiting for a decision that you may see. The list updates by itself." }
            div id="queue" data-live="/console/approvals/queue" aria-live="polite" { (queue_table(&list)) }
        },
    )
}

/// `GET /console/approvals/queue`: the queue alone, for the live update.
pub(crate) async fn queue(axum::extract::State(console): State, Fragment(s): Fragment) -> Response {
    match client(&console, &s).approvals(&pending()).await {
        Ok(l) => axum::response::Html(queue_table(&l.approvals).into_string()).into_response(),
        Err(ApiError::Api { status, message }) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// `GET /console/events`: an `approvals` event whenever the held
/// statements the person may see change (and once at the start).
pub(crate) async fn events(
    axum::extract::State(console): State,
    Fragment(s): Fragment,
) -> Response {
    let Some(open) = s.stream() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many live queues open for this login\n",
        )
            .into_response();
    };
    let client = client(&console, &s);
    // Ends when the login does (logout, expiry) or the API refuses it.
    let stream = futures_util::stream::unfold(
        (client, None::<String>, open),
        |(client, last, open)| async move {
            loop {
                if !open.session().live() {
                    return None;
                }
                let now = match client.approvals(&pending()).await {
                    Ok(l) => l
                        .approvals
                        .iter()
                        .map(|a| format!("{}:{}:{}", a.id, a.approvals, a.votes.len()))
                        .collect::<Vec<_>>()
                        .join(","),
                    Err(ApiError::Api {
                        status: 401 | 403, ..
                    }) => return None,
                    Err(_) => String::from("unavailable"),
                };
                if last.as_ref() != Some(&now) {
                    let event = Event::default().event("approvals").data("changed");
                    return Some((Ok::<_, Infallible>(event), (client, Some(now), open)));
                }
                tokio::time::sleep(POLL).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /console/approvals/{id}`.
pub(crate) async fn approval(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
    Path(id): Path<String>,
) -> Response {
    let a = match client(&console, &s).approval(&id).await {
        Ok(a) => a,
        Err(e) => return api_problem(&console, &headers, e),
    };
    let d = a.detail();
    let voting = may_vote(&s, &a);
    let own = requested(&s, &a);
    layout(
        &s,
        "Held statement",
        "approvals",
        html! {
            h1 { "Held statement" }
            dl class="facts" {
                dt { "Status" } dd id="status" class={ "status " (a.status) } { (a.status) }
                dt { "Requester" } dd id="requester" { (who(&a.requester, a.act.as_deref())) }
                dt { "Connection · role" } dd { (a.connection) " · " (a.role) }
                dt { "Rule" } dd id="rule" { (a.rule) }
                dt { "Kinds" } dd id="kinds" { (d.kinds.as_deref().unwrap_or_default().join(", ")) }
                dt { "Effects" } dd id="effects" { (d.effects.as_deref().unwrap_or_default().join(", ")) }
                dt { "Planner estimate" } dd id="estimate" {
                    @match d.estimated_rows { Some(n) => { (n) " rows" } None => "none" }
                }
                dt { "In a transaction" } dd { @if d.in_transaction == Some(true) { "yes" } @else { "no" } }
                dt { "Held since" } dd { (ago(&a.created_at)) }
                dt { "Time left" } dd { (left(a.deadline.as_deref())) }
                dt { "Votes" } dd id="votes" { (a.approvals) " of " (a.min_approvals) " approvals from " (a.approvers.join(", ")) }
            }
            h2 { "Statement" }
            div id="statement" { (sql(d.statement.as_deref().unwrap_or(""))) }
            @if let Some(effect) = &d.effect {
                h2 { "Measured effect" }
                p { "The transaction ran; its COMMIT waits for this decision. Denied, the COMMIT is refused and nothing is committed." }
                table id="effect" {
                    thead { tr { th { "Table" } th { "Inserted" } th { "Updated" } th { "Deleted" } } }
                    tbody {
                        @for t in &effect.tables {
                            tr { td { (t.table) } td { (t.inserted) } td { (t.updated) } td { (t.deleted) } }
                        }
                    }
                }
                @if !effect.baseline { p class="empty" { "Counts may include earlier writes of the session not yet flushed to the statistics." } }
                @if !effect.sample_complete { p class="empty" { "The sample is incomplete: rows written under a savepoint, or beyond 8 tables, are not shown." } }
                @for w in &effect.rows_before {
                    h3 { "Rows of " (w.table) " before the reviewed statements (masked sample)" }
                    ul class="sample before" {
                        @for row in &w.rows { li { code { (serde_json::Value::Object(row.clone())) } } }
                    }
                }
                @for w in &effect.written_rows {
                    h3 { "Rows written to " (w.table) " (masked sample)" }
                    @if w.rows.is_empty() {
                        p class="empty" { "None left: deleted rows are counted above." }
                    } @else {
                        ul class="sample" {
                            @for row in &w.rows { li { code { (serde_json::Value::Object(row.clone())) } } }
                        }
                    }
                    @if w.more { p class="empty" { "More rows were written than shown." } }
                }
            }
            @if let Some(params) = &d.parameters {
                @if !params.is_empty() {
                    p { "Parameters: " code { (serde_json::to_string(params).unwrap_or_default()) } }
                }
            }
            @if !a.votes.is_empty() {
                h2 { "Votes" }
                ul id="vote-list" {
                    @for v in &a.votes {
                        li { strong { (v.vote) } " by " (v.voter) " " (ago(&v.at)) @if let Some(r) = &v.reason { ": " q { (r) } } }
                    }
                }
            }
            @if let Some(reason) = &a.reason { p { "Decision reason: " q id="decision-reason" { (reason) } } }
            h2 { "Earlier in this session" }
            @match &a.context {
                Some(context) if !context.is_empty() => {
                    ol id="context" { @for text in context { li { (sql(text)) } } }
                }
                _ => { p class="empty" { "No earlier statements recorded yet." } }
            }
            @if voting {
                section class="decide" aria-label="Decision" {
                    form method="post" action={ "/console/approvals/" (a.id) "/approve" } {
                        (csrf(&s))
                        label for="approve-reason" { "Reason (optional)" }
                        input id="approve-reason" name="reason";
                        button id="approve" type="submit" class="approve" { "Approve" }
                    }
                    form method="post" action={ "/console/approvals/" (a.id) "/deny" } {
                        (csrf(&s))
                        label for="deny-reason" { "Reason (required to deny)" }
                        input id="deny-reason" name="reason" required;
                        button id="deny" type="submit" class="deny" { "Deny" }
                    }
                }
            } @else if a.status == "pending" {
                p class="hint" id="no-vote" {
                    @if own { "You asked for this statement: someone else must decide." }
                    @else { "You may not decide on this statement." }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct ReasonForm {
    csrf: Option<String>,
    reason: Option<String>,
}

impl ReasonForm {
    fn decision(&self) -> DecisionRequest {
        DecisionRequest {
            reason: self.reason.clone().filter(|r| !r.trim().is_empty()),
        }
    }
}

/// `POST /console/approvals/{id}/approve` and `…/deny`.
pub(crate) async fn vote(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    Path((id, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<ReasonForm>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = client(&console, &s);
    let answer = match verb.as_str() {
        "approve" => c.approve(&id, &form.decision()).await,
        "deny" => c.deny(&id, &form.decision()).await,
        _ => return problem(StatusCode::NOT_FOUND, "Not found", "no such action"),
    };
    match answer {
        Ok(_) => Redirect::to(&format!("/console/approvals/{id}")).into_response(),
        Err(e) => api_problem(&console, &headers, e),
    }
}

// ---- access ----------------------------------------------------------

/// `GET /console/access`: request a role; requests and live grants.
pub(crate) async fn access(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
) -> Response {
    let list = match client(&console, &s)
        .access_requests(&ApprovalsQuery {
            status: Some("open".into()),
            limit: Some(1000),
        })
        .await
    {
        Ok(l) => l.requests,
        Err(e) => return api_problem(&console, &headers, e),
    };
    layout(
        &s,
        "Access",
        "access",
        html! {
            h1 { "Just-in-time access" }
            form method="post" action="/console/access" class="request" {
                (csrf(&s))
                label for="connection" { "Connection" } input id="connection" name="connection" required;
                label for="role" { "Role" } input id="role" name="role" required;
                label for="duration" { "For" } input id="duration" name="duration" required value="30m";
                label for="reason" { "Reason" } input id="reason" name="reason" required;
                button id="request" type="submit" { "Request access" }
            }
            h2 { "Requests and grants" }
            @if list.is_empty() {
                p class="empty" { "No open requests or live grants." }
            } @else {
                table id="grants" {
                    thead { tr { th { "Requester" } th { "Connection · role" } th { "For" } th { "Reason" } th { "Status" } th { "Time left" } th { "Votes" } th {} } }
                    tbody {
                        @for a in &list {
                            tr data-request=(a.id) {
                                td { (who(&a.requester, a.act.as_deref())) }
                                td { (a.connection) " · " (a.role) }
                                td { (a.duration_seconds.map(|d| span_text(Duration::from_secs(d.max(0) as u64))).unwrap_or_default()) }
                                td { (a.detail().reason.unwrap_or_default()) }
                                td class={ "status " (a.status) } { (a.status) }
                                td { @if a.status == "granted" { (left(a.expires_at.as_deref())) } @else { "—" } }
                                td { (a.approvals) " of " (a.min_approvals) }
                                td class="actions" {
                                    @if may_vote(&s, a) {
                                        form method="post" action={ "/console/access/" (a.id) "/approve" } class="inline" {
                                            (csrf(&s)) button type="submit" class="approve" { "Approve" }
                                        }
                                        form method="post" action={ "/console/access/" (a.id) "/deny" } class="inline" {
                                            (csrf(&s)) input name="reason" required placeholder="reason" aria-label="Reason to deny";
                                            button type="submit" class="deny" { "Deny" }
                                        }
                                    }
                                    @if a.status == "granted" && (s.caller.admin || requested(&s, a) || airlock_policy::approval::is_approver(&s.caller.principal, &a.approvers)) {
                                        form method="post" action={ "/console/access/" (a.id) "/revoke" } class="inline" {
                                            (csrf(&s)) input name="reason" required placeholder="reason" aria-label="Reason to revoke";
                                            button type="submit" class="deny" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct AccessForm {
    csrf: Option<String>,
    connection: String,
    role: String,
    duration: String,
    reason: String,
}

/// `POST /console/access`: files a request.
pub(crate) async fn request_access(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    axum::Form(form): axum::Form<AccessForm>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let request = AccessRequest {
        connection: form.connection,
        role: form.role,
        duration: form.duration,
        reason: form.reason,
    };
    match client(&console, &s).request_access(&request).await {
        Ok(_) => Redirect::to("/console/access").into_response(),
        Err(e) => api_problem(&console, &headers, e),
    }
}

/// `POST /console/access/{id}/approve`, `…/deny`, `…/revoke`.
pub(crate) async fn access_vote(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    Path((id, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<ReasonForm>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = client(&console, &s);
    let answer = match verb.as_str() {
        "approve" => c.approve_access(&id, &form.decision()).await,
        "deny" => c.deny_access(&id, &form.decision()).await,
        "revoke" => c.revoke_access(&id, &form.decision()).await,
        _ => return problem(StatusCode::NOT_FOUND, "Not found", "no such action"),
    };
    match answer {
        Ok(_) => Redirect::to("/console/access").into_response(),
        Err(e) => api_problem(&console, &headers, e),
    }
}

// ---- sessions and audit ----------------------------------------------

/// `GET /console/sessions`: recorded sessions, filtered.
pub(crate) async fn sessions(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
    Query(q): Query<SessionsQuery>,
) -> Response {
    let list = match client(&console, &s).sessions(&q).await {
        Ok(l) => l.sessions,
        Err(e) => return api_problem(&console, &headers, e),
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let decision = value(&q.decision);
    layout(
        &s,
        "Sessions",
        "sessions",
        html! {
            h1 { "Sessions" }
            form method="get" action="/console/sessions" class="filters" {
                label for="f-principal" { "Principal" } input id="f-principal" name="principal" value=(value(&q.principal));
                label for="f-connection" { "Connection" } input id="f-connection" name="connection" value=(value(&q.connection));
                label for="f-decision" { "Decision" }
                select id="f-decision" name="decision" {
                    @for (v, name) in [("", "any"), ("allow", "allow"), ("deny", "deny"), ("approve", "approve")] {
                        option value=(v) selected[decision == v] { (name) }
                    }
                }
                label for="f-since" { "Since" } input id="f-since" name="since" placeholder="1h or 2026-12-01T00:00:00Z" value=(value(&q.since));
                button type="submit" { "Filter" }
            }
            @if list.is_empty() {
                p class="empty" { "No sessions match." }
            } @else {
                table id="sessions" {
                    thead { tr { th { "Started" } th { "Principal" } th { "Connection · role" } th { "Client" } th { "On this gateway" } } }
                    tbody {
                        @for row in &list {
                            tr {
                                td { @if let Some(id) = &row.id { a href={ "/console/sessions/" (id) } { (row.started_at) } } @else { (row.started_at) } }
                                td { (who(row.principal.as_deref().unwrap_or("?"), row.act.as_deref())) }
                                td { (row.connection.as_deref().unwrap_or("?")) " · " (row.role.as_deref().unwrap_or("?")) }
                                td { (row.client_addr.as_deref().unwrap_or("")) @if let Some(Some(app)) = &row.application_name { " (" (app) ")" } }
                                td { @match row.live { Some(true) => { span class="live" { "live" } } Some(false) => { "not open here" } None => { "unknown" } } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `GET /console/sessions/{id}`: the replay, as the CLI prints it.
pub(crate) async fn replay(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
    Path(id): Path<String>,
) -> Response {
    let events = match client(&console, &s).session(&id).await {
        Ok(e) => e,
        Err(e) => return api_problem(&console, &headers, e),
    };
    let decoded: Vec<airlock_audit::Event> =
        events.events.iter().filter_map(|e| e.decode()).collect();
    let ended = decoded
        .iter()
        .any(|e| matches!(e.body, airlock_audit::Body::SessionEnd(_)));
    let mut transcript = String::new();
    if airlock_audit::replay::transcript(&decoded, &mut transcript).is_err() {
        transcript = "the transcript could not be written".into();
    }
    layout(
        &s,
        "Session replay",
        "sessions",
        html! {
            h1 { "Session " code { (events.id) } }
            p { (decoded.len()) " events; " @if ended { "ended." } @else { span class="live" { "no end recorded: live, or its gateway stopped" } } }
            pre id="transcript" class="transcript" { (transcript) }
            @if s.caller.admin && !ended {
                form method="post" action={ "/console/sessions/" (events.id) "/terminate" } class="decide" {
                    (csrf(&s))
                    label for="terminate-reason" { "Reason (required)" }
                    input id="terminate-reason" name="reason" required;
                    button id="terminate" type="submit" class="deny" { "End this session" }
                }
            }
        },
    )
}

/// `POST /console/sessions/{id}/terminate`: admins end a live session.
pub(crate) async fn terminate(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ReasonForm>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match client(&console, &s).terminate(&id, &form.decision()).await {
        Ok(_) => Redirect::to(&format!("/console/sessions/{id}")).into_response(),
        Err(e) => api_problem(&console, &headers, e),
    }
}

/// `GET /console/audit`: the last verification, and a button to run one.
pub(crate) async fn audit(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
) -> Response {
    let status = match client(&console, &s).audit_status().await {
        Ok(st) => st,
        Err(e) => return api_problem(&console, &headers, e),
    };
    layout(
        &s,
        "Audit",
        "audit",
        html! {
            h1 { "Audit trail" }
            p id="verify-status" {
                @match status.ok {
                    Some(true) => { span class="ok" { "Intact" } }
                    Some(false) => { span class="broken" { "Broken" } }
                    None => { "Not verified since the gateway started." }
                }
                @if let Some(at) = &status.checked_at { " · last checked " (ago(at)) }
            }
            @if !status.lines.is_empty() { pre id="verify-lines" { @for l in &status.lines { (l) "\n" } } }
            form method="post" action="/console/audit/verify" {
                (csrf(&s))
                button id="verify" type="submit" { "Verify now" }
            }
        },
    )
}

/// A form that carries nothing but the CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    pub(crate) csrf: Option<String>,
}

/// `POST /console/audit/verify`.
pub(crate) async fn verify(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match client(&console, &s).verify().await {
        Ok(_) => Redirect::to("/console/audit").into_response(),
        Err(e) => api_problem(&console, &headers, e),
    }
}

// ---- policy ----------------------------------------------------------

#[derive(Deserialize, Default)]
pub(crate) struct ExplainForm {
    csrf: Option<String>,
    connection: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    role: String,
    sql: String,
}

/// `GET /console/policy`: the policy in force, and the playground.
pub(crate) async fn policy(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Page(s): Page,
) -> Response {
    policy_page(&console, &headers, &s, &ExplainForm::default(), None).await
}

/// `POST /console/policy`: explains the form's SQL.
pub(crate) async fn explain(
    axum::extract::State(console): State,
    headers: HeaderMap,
    uri: OriginalUri,
    axum::Form(form): axum::Form<ExplainForm>,
) -> Response {
    let s = match poster(&console, &headers, &uri, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let request = ExplainRequest {
        connection: form.connection.clone(),
        groups: form
            .groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        role: Some(form.role.trim().to_string()).filter(|r| !r.is_empty()),
        sql: form.sql.clone(),
        subject: None,
    };
    let answer = match client(&console, &s).explain(&request).await {
        Ok(report) => Ok(report),
        Err(ApiError::Api {
            status: 422,
            message,
        }) => Err(message),
        Err(e) => return api_problem(&console, &headers, e),
    };
    policy_page(&console, &headers, &s, &form, Some(answer)).await
}

async fn policy_page(
    console: &Console,
    headers: &HeaderMap,
    s: &Session,
    form: &ExplainForm,
    answer: Option<Result<Value, String>>,
) -> Response {
    let policy = match client(console, s).policy().await {
        Ok(p) => p,
        Err(e) => return api_problem(console, headers, e),
    };
    let list = |key: &str| policy[key].as_array().cloned().unwrap_or_default();
    let connections = list("connections");
    layout(
        s,
        "Policy",
        "policy",
        html! {
            h1 { "Policy" }
            section aria-labelledby="playground" {
                h2 id="playground" { "Explain playground" }
                form method="post" action="/console/policy" class="explain" {
                    (csrf(s))
                    label for="x-connection" { "Connection" }
                    select id="x-connection" name="connection" {
                        @for c in &connections {
                            @let name = c["name"].as_str().unwrap_or("");
                            option value=(name) selected[name == form.connection] { (name) }
                        }
                    }
                    label for="x-groups" { "Groups, comma-separated" } input id="x-groups" name="groups" value=(form.groups);
                    label for="x-role" { "Role (optional)" } input id="x-role" name="role" value=(form.role);
                    label for="x-sql" { "SQL" } textarea id="x-sql" name="sql" rows="4" required { (form.sql) }
                    button id="explain" type="submit" { "Explain" }
                }
                @match &answer {
                    Some(Ok(report)) => { (explained(report)) }
                    Some(Err(why)) => { p id="explain-error" class="problem" { (why) } }
                    None => {}
                }
            }
            h2 { "Connections" }
            table id="policy-connections" {
                thead { tr { th { "Name" } th { "Protocol" } th { "Upstream" } th { "Roles" } } }
                tbody { @for c in &connections { tr { td { (str_of(&c["name"])) } td { (str_of(&c["protocol"])) } td { (str_of(&c["upstream"])) } td { (strings(&c["roles"])) } } } }
            }
            h2 { "Access rules" }
            table id="policy-access" {
                thead { tr { th { "Rule" } th { "Who" } th { "Connections" } th { "Roles" } th { "Mode" } th { "Just in time" } } }
                tbody {
                    @for r in list("access") {
                        tr {
                            td { (str_of(&r["name"])) }
                            td { (strings(&r["groups"])) @if !strings(&r["subjects"]).is_empty() { " · subjects " (strings(&r["subjects"])) } @if !r["claims"].is_null() && r["claims"] != serde_json::json!({}) { " · claims " code { (r["claims"].to_string()) } } }
                            td { (strings(&r["connections"])) }
                            td { (strings(&r["roles"])) }
                            td { (str_of(&r["mode"])) @if r["unmask"] == true { " · unmasked" } }
                            td { @if r["jit"].is_null() { "—" } @else { "up to " (str_of(&r["jit"]["max_duration"])) ", approvers " (strings(&r["jit"]["approvers"])) } }
                        }
                    }
                }
            }
            h2 { "Masking rules" }
            table id="policy-masking" {
                thead { tr { th { "Rule" } th { "Columns" } th { "Detectors" } th { "Strategy" } } }
                tbody { @for r in list("masking") { tr { td { (str_of(&r["name"])) } td { (strings(&r["columns"])) } td { (strings(&r["detect"])) } td { (str_of(&r["strategy"])) } } } }
            }
            h2 { "Guardrails" }
            table id="policy-guardrails" {
                thead { tr { th { "Rule" } th { "Match" } th { "Action" } th { "Approvers" } } }
                tbody { @for r in list("guardrails") { tr { td { (str_of(&r["name"])) } td { (str_of(&r["match"])) } td { (str_of(&r["action"])) } td { (strings(&r["approvers"])) } } } }
            }
        },
    )
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// `policy explain`'s JSON answer, as a table.
fn explained(report: &Value) -> Markup {
    let decision = &report["decision"];
    html! {
        div id="explain-result" {
            p { "Route: " (str_of(&report["route"]["connection"])) " as " (str_of(&report["route"]["role"])) " (rule " (str_of(&report["route"]["access_rule"])) ", " (str_of(&report["route"]["mode"])) ")" }
            p { "Decision: " strong id="explain-decision" { (str_of(&decision["action"])) } @if !decision["message"].is_null() { " · " (str_of(&decision["message"])) } }
            table {
                thead { tr { th { "Statement" } th { "Kind" } th { "Effects" } th { "Rules" } th { "Decision" } } }
                tbody {
                    @for st in report["statements"].as_array().cloned().unwrap_or_default() {
                        tr class="explained" {
                            td { (sql(st["text"].as_str().unwrap_or(""))) }
                            td class="kind" { (str_of(&st["kind"])) @if !strings(&st["nested"]).is_empty() { " (" (strings(&st["nested"])) ")" } }
                            td class="effects" { (strings(&st["effects"])) }
                            td { @for m in st["matched_rules"].as_array().cloned().unwrap_or_default() { (str_of(&m["rule"])) ": " (str_of(&m["action"])) br; } }
                            td { (str_of(&st["decision"]["action"])) @if !st["decision"]["rule"].is_null() { " (" (str_of(&st["decision"]["rule"])) ")" } }
                        }
                    }
                }
            }
        }
    }
}
