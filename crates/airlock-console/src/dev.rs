//! The dev issuer's login, for demos and tests: `GET /dev/authorize` is a
//! page where anyone at the keyboard picks a subject and groups, and
//! `POST /dev/token` exchanges the code for an ID token (for the console's
//! client id, with the nonce) and an access token (for the gateway's
//! dev audience), both signed by the dev issuer.
//!
//! It serves exactly one client, the console configured with `issuer: dev`,
//! and redirects only to that console's callback. It is served only when
//! the dev issuer is, and the dev issuer is refused on a non-loopback
//! listener unless the operator insists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use airlock_identity::dev::{AUTHORIZE_PATH, DevIssuer, MintRequest, TOKEN_PATH};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{DOCTYPE, html};
use serde::Deserialize;
use serde_json::json;

use crate::oidc::challenge;
use crate::session::random_token;

/// How long a code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long the dev issuer's tokens last.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The most codes outstanding.
const MAX_CODES: usize = 1000;
/// Where the login form posts.
const LOGIN_PATH: &str = "/dev/login";

/// The dev issuer's login: its key, and the one client it serves.
pub struct DevLogin {
    issuer: Arc<DevIssuer>,
    /// The audience of access tokens (`identity.dev_issuer_audience`).
    audience: String,
    /// The console's client id and redirect URL, when the console logs in
    /// here.
    client: Option<(String, String)>,
    codes: Mutex<HashMap<String, Code>>,
}

struct Code {
    subject: String,
    groups: Vec<String>,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    issued: Instant,
}

impl DevLogin {
    pub fn new(issuer: Arc<DevIssuer>, audience: String, client: Option<(String, String)>) -> Self {
        DevLogin {
            issuer,
            audience,
            client,
            codes: Mutex::default(),
        }
    }

    fn codes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Code>> {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `/dev/authorize`, `/dev/login` and `/dev/token`.
pub fn router(login: Arc<DevLogin>) -> Router {
    Router::new()
        .route(AUTHORIZE_PATH, get(authorize))
        .route(LOGIN_PATH, post(issue_code))
        .route(TOKEN_PATH, post(token))
        .layer(axum::middleware::map_response(|mut r: Response| async move {
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
                ),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }))
        .with_state(login)
}

/// An authorization request (RFC 6749 4.1.1, RFC 7636 4.3).
#[derive(Debug, Deserialize)]
struct AuthorizeRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

impl AuthorizeRequest {
    /// Why it cannot be served. Never answered with a redirect: the
    /// redirect URI itself may be what is wrong.
    fn check(&self, login: &DevLogin) -> Result<(), String> {
        let Some((client_id, redirect)) = &login.client else {
            return Err("no client logs in with the dev issuer (console.issuer is not dev)".into());
        };
        if self.response_type.as_deref() != Some("code") {
            return Err("response_type must be code".into());
        }
        if self.client_id.as_deref() != Some(client_id) {
            return Err(format!(
                "unknown client_id: the dev issuer serves {client_id:?}"
            ));
        }
        if self.redirect_uri.as_deref() != Some(redirect) {
            return Err(format!("redirect_uri must be {redirect}"));
        }
        if self.code_challenge_method.as_deref() != Some("S256")
            || self.code_challenge.as_deref().is_none_or(str::is_empty)
        {
            return Err("PKCE is required: code_challenge with code_challenge_method S256".into());
        }
        if self.state.as_deref().is_none_or(str::is_empty) {
            return Err("state is required".into());
        }
        Ok(())
    }
}

fn bad_request(why: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "airlock dev issuer" } }
            body { h1 { "Bad authorization request" } p { (why) } }
        }
    };
    (
        StatusCode::BAD_REQUEST,
        axum::response::Html(page.into_string()),
    )
        .into_response()
}

/// `GET /dev/authorize`: the page to pick who to be.
async fn authorize(
    State(login): State<Arc<DevLogin>>,
    Query(q): Query<AuthorizeRequest>,
) -> Response {
    if let Err(why) = q.check(&login) {
        return bad_request(&why);
    }
    let hidden = [
        ("response_type", &q.response_type),
        ("client_id", &q.client_id),
        ("redirect_uri", &q.redirect_uri),
        ("state", &q.state),
        ("nonce", &q.nonce),
        ("code_challenge", &q.code_challenge),
        ("code_challenge_method", &q.code_challenge_method),
    ];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "airlock dev issuer: log in" }
                link rel="stylesheet" href="/console/static/console.css";
                link rel="icon" href="/console/static/favicon.svg";
            }
            body {
                main class="narrow" {
                    h1 { "airlock dev issuer" }
                    p class="warn" {
                        "For demos and tests only: anyone who reaches this page can be anyone. "
                        "It is served only on a loopback listener."
                    }
                    form method="post" action=(LOGIN_PATH) {
                        @for (name, value) in hidden {
                            input type="hidden" name=(name) value=(value.as_deref().unwrap_or(""));
                        }
                        label for="subject" { "Subject (sub)" }
                        input id="subject" name="subject" required value="dba@example.com";
                        label for="groups" { "Groups, comma-separated" }
                        input id="groups" name="groups" value="dba";
                        button id="login" type="submit" { "Log in" }
                    }
                }
            }
        }
    };
    axum::response::Html(page.into_string()).into_response()
}

/// The login form: who, and the authorization request again.
#[derive(Debug, Deserialize)]
struct LoginForm {
    subject: String,
    #[serde(default)]
    groups: String,
    #[serde(flatten)]
    request: AuthorizeRequest,
}

/// `POST /dev/login`: issues a code and returns to the client.
async fn issue_code(State(login): State<Arc<DevLogin>>, Form(form): Form<LoginForm>) -> Response {
    let request = form.request;
    if let Err(why) = request.check(&login) {
        return bad_request(&why);
    }
    let subject = form.subject.trim().to_string();
    if subject.is_empty() {
        return bad_request("a subject is required");
    }
    let groups = form
        .groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    let r = request;
    let code = random_token();
    let redirect_uri = r.redirect_uri.unwrap_or_default();
    let mut url = match url::Url::parse(&redirect_uri) {
        Ok(u) => u,
        Err(e) => return bad_request(&format!("redirect_uri: {e}")),
    };
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", r.state.as_deref().unwrap_or(""));
    {
        let mut codes = login.codes();
        codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_CODES {
            return bad_request("too many logins in progress; try again in a minute");
        }
        codes.insert(
            code,
            Code {
                subject,
                groups,
                client_id: r.client_id.unwrap_or_default(),
                redirect_uri,
                challenge: r.code_challenge.unwrap_or_default(),
                nonce: r.nonce.unwrap_or_default(),
                issued: Instant::now(),
            },
        );
    }
    Redirect::to(url.as_str()).into_response()
}

/// A token request (RFC 6749 4.1.3, RFC 7636 4.5).
#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
}

fn token_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /dev/token`: a code, once, for its tokens.
async fn token(State(login): State<Arc<DevLogin>>, Form(t): Form<TokenRequest>) -> Response {
    if t.grant_type.as_deref() != Some("authorization_code") {
        return token_error("unsupported_grant_type", "only authorization_code");
    }
    // Taken out whatever happens next: a code is good for one try.
    let Some(code) = t.code.as_deref().and_then(|c| login.codes().remove(c)) else {
        return token_error("invalid_grant", "unknown or used code");
    };
    if code.issued.elapsed() >= CODE_TTL {
        return token_error("invalid_grant", "the code expired");
    }
    if t.client_id.as_deref() != Some(&code.client_id)
        || t.redirect_uri.as_deref() != Some(&code.redirect_uri)
    {
        return token_error(
            "invalid_grant",
            "client_id or redirect_uri differ from the authorization request's",
        );
    }
    let verifier_ok = t.code_verifier.as_deref().is_some_and(|v| {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            challenge(v).as_bytes(),
            code.challenge.as_bytes(),
        )
        .is_ok()
    });
    if !verifier_ok {
        return token_error(
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    let now = SystemTime::now();
    let request = |audience: &str| MintRequest {
        subject: code.subject.clone(),
        groups: code.groups.clone(),
        ttl: TOKEN_TTL,
        act: None,
        audience: audience.to_string(),
    };
    let id_token = login
        .issuer
        .mint_id_token(request(&code.client_id), &code.nonce, now);
    let access_token = login.issuer.mint(request(&login.audience), now);
    Json(json!({
        "access_token": access_token,
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL.as_secs(),
    }))
    .into_response()
}
