//! The console's OpenID Connect login: authorization code with PKCE (RFC
//! 7636, `S256`) and a `nonce`, against the issuer's discovery document.
//!
//! 1. `GET /console/login?next=…` makes a `state`, a code verifier and a
//!    nonce, keeps them server-side under the `state` (ten minutes, once),
//!    sets the login cookie to the `state`, and redirects to the issuer.
//! 2. `GET /console/callback?code=…&state=…` needs the `state` to be the
//!    login cookie's and a login in progress, exchanges the code with the
//!    verifier, checks the ID token's `nonce`, and has the API's
//!    authenticator verify the token (the ID token, else the access token)
//!    as it verifies every API token. Only then is a session made.
//!
//! `next` is only ever a path under `/console`: a login cannot be made to
//! end on another site.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::session::{self, COOKIE, LOGIN_COOKIE, random_token, set_cookie};
use crate::{State, pages};

/// How long a login may take at the issuer.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The most logins in progress at once (oldest dropped first).
const MAX_LOGINS: usize = 10_000;

/// A login in progress.
struct Pending {
    verifier: String,
    nonce: String,
    next: String,
    began: Instant,
}

/// Logins in progress, by `state`.
#[derive(Default)]
pub struct Logins {
    map: Mutex<HashMap<String, Pending>>,
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, next: String) -> (String, Pending) {
        let state = random_token();
        let pending = Pending {
            verifier: random_token(),
            nonce: random_token(),
            next,
            began: Instant::now(),
        };
        let kept = Pending {
            verifier: pending.verifier.clone(),
            nonce: pending.nonce.clone(),
            next: pending.next.clone(),
            began: pending.began,
        };
        let mut map = self.lock();
        map.retain(|_, p| p.began.elapsed() < LOGIN_TTL);
        if map.len() >= MAX_LOGINS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.began)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(state.clone(), kept);
        (state, pending)
    }

    /// The login `state` names, once.
    fn finish(&self, state: &str) -> Option<Pending> {
        self.lock()
            .remove(state)
            .filter(|p| p.began.elapsed() < LOGIN_TTL)
    }
}

/// The RFC 7636 `S256` challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// Where a login may return to: a path under `/console`, nothing else (no
/// scheme, no `//host`, no backslash, no control characters).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/console/approvals".to_string(),
    }
}

/// The issuer's endpoints, from its discovery document.
struct Endpoints {
    authorization: String,
    token: String,
}

async fn discover(console: &crate::Console) -> Result<Endpoints, String> {
    let url = &console.settings.discovery_url;
    let doc: serde_json::Value = console
        .http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("fetching {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    let field = |name: &str| {
        doc[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{url} names no {name}"))
    };
    Ok(Endpoints {
        authorization: field("authorization_endpoint")?,
        token: field("token_endpoint")?,
    })
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /console/login`.
pub(crate) async fn login(
    axum::extract::State(console): State,
    Query(q): Query<LoginQuery>,
) -> Response {
    let endpoints = match discover(&console).await {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(error = %why, "console login: the issuer's discovery failed");
            return pages::problem(
                StatusCode::BAD_GATEWAY,
                "The identity provider cannot be reached",
                &why,
            );
        }
    };
    let (state, pending) = console.logins.begin(safe_next(q.next.as_deref()));
    let s = &console.settings;
    let mut url = match url::Url::parse(&endpoints.authorization) {
        Ok(u) => u,
        Err(e) => {
            return pages::problem(
                StatusCode::BAD_GATEWAY,
                "The identity provider's authorization endpoint is not a URL",
                &e.to_string(),
            );
        }
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &s.redirect_url)
        .append_pair("scope", "openid profile email groups")
        .append_pair("state", &state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256");
    (
        [(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &state, LOGIN_TTL.as_secs(), s.secure()),
        )],
        Redirect::to(url.as_str()),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the token endpoint answers.
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// `GET /console/callback`.
pub(crate) async fn callback(
    axum::extract::State(console): State,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let refuse = |why: &str| {
        tracing::info!(why, "console login refused");
        pages::problem(StatusCode::BAD_REQUEST, "Login failed", why)
    };
    if let Some(error) = &q.error {
        let detail = q.error_description.as_deref().unwrap_or("");
        return refuse(&format!("the identity provider said {error}: {detail}"));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return refuse("the callback carries no code and state");
    };
    // The state must be this browser's login (no login CSRF) and one in
    // progress (no replay).
    if session::cookie(&headers, LOGIN_COOKIE) != Some(state.as_str()) {
        return refuse("the state does not match this browser's login: start again");
    }
    let Some(pending) = console.logins.finish(state) else {
        return refuse("no login in progress with this state (expired or already used)");
    };
    let endpoints = match discover(&console).await {
        Ok(e) => e,
        Err(why) => return pages::problem(StatusCode::BAD_GATEWAY, "Login failed", &why),
    };
    let answer = match exchange(&console, &endpoints, code, &pending.verifier).await {
        Ok(a) => a,
        Err(why) => return refuse(&why),
    };
    let Some(id_token) = &answer.id_token else {
        return refuse("the token endpoint returned no ID token");
    };
    // Received straight from the token endpoint: the nonce ties it to this
    // login (OIDC Core 3.1.3.7); its signature is checked below.
    if claim(id_token, "nonce").as_deref() != Some(pending.nonce.as_str()) {
        return refuse("the ID token's nonce is not this login's");
    }
    let mut why_not = Vec::new();
    let mut chosen = None;
    for token in [Some(id_token), answer.access_token.as_ref()]
        .into_iter()
        .flatten()
    {
        match console.auth.authenticate(token).await {
            Ok(caller) => {
                chosen = Some((token.clone(), caller));
                break;
            }
            Err(why) => why_not.push(why),
        }
    }
    let Some((token, caller)) = chosen else {
        return refuse(&format!(
            "the gateway does not accept the issuer's tokens: {}",
            why_not.join("; ")
        ));
    };
    if caller.principal.issuer_name.is_empty() {
        return refuse("the token names no issuer");
    }
    let expires = caller
        .principal
        .expires_at
        .min(SystemTime::now() + console.settings.session_ttl);
    tracing::info!(subject = %caller.subject, "console login");
    let id = console.sessions.create(caller, token, expires);
    let max_age = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    let secure = console.settings.secure();
    let mut response = Redirect::to(&pending.next).into_response();
    let h = response.headers_mut();
    for cookie in [
        set_cookie(COOKIE, &id, max_age, secure),
        set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = cookie.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn exchange(
    console: &crate::Console,
    endpoints: &Endpoints,
    code: &str,
    verifier: &str,
) -> Result<TokenAnswer, String> {
    let s = &console.settings;
    // The serializer is not `Send`: it is done with before the request.
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &s.redirect_url)
            .append_pair("client_id", &s.client_id)
            .append_pair("code_verifier", verifier);
        if let Some(secret) = &s.client_secret {
            form.append_pair("client_secret", secret);
        }
        form.finish()
    };
    let response = console
        .http
        .post(&endpoints.token)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the token endpoint did not answer: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the token endpoint's answer: {e}"))?;
    if !status.is_success() {
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(format!(
            "the token endpoint refused the code ({status}): {}",
            error["error"].as_str().unwrap_or("no error code")
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the token endpoint's answer: {e}"))
}

/// A string claim of a JWT, read without checking its signature.
fn claim(jwt: &str, name: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims[name].as_str().map(str::to_string)
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /console/logout`.
pub(crate) async fn logout(
    axum::extract::State(console): State,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Some(s) = console.sessions.get(&headers) {
        if !s.csrf_ok(form.csrf.as_deref()) {
            return pages::forbidden_csrf();
        }
        console.sessions.remove(&headers);
        tracing::info!(subject = %s.caller.subject, "console logout");
    }
    (
        [(
            header::SET_COOKIE,
            set_cookie(COOKIE, "", 0, console.settings.secure()),
        )],
        Redirect::to("/console/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_under_the_console() {
        for good in [
            "/console",
            "/console/sessions?principal=a",
            "/console/approvals/1",
        ] {
            assert_eq!(safe_next(Some(good)), good);
        }
        for bad in [
            "https://evil.example/console",
            "//evil.example/console",
            "/console//evil.example",
            "/console\\@evil.example",
            "/consolex",
            "/api/v1/sessions",
            "javascript:alert(1)",
            "/console/\r\nSet-Cookie: a=b",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console/approvals", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/console/approvals");
    }

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_login_state_is_used_once() {
        let logins = Logins::default();
        let (state, pending) = logins.begin("/console".into());
        assert!(logins.finish("forged").is_none());
        let found = logins.finish(&state).expect("the login");
        assert_eq!(found.verifier, pending.verifier);
        assert!(logins.finish(&state).is_none(), "a state is good once");
    }
}
