//! The console's OpenID Connect login: authorization code with PKCE (RFC
//! 7636, `S256`) and a `nonce`, against the issuer's discovery document.
//!
//! 1. `GET /console/login?next=…` makes a `state`, a code verifier and a
//!    nonce, seals them (with `next`, for ten minutes) into the login
//!    cookie, and redirects to the issuer.
//! 2. `GET /console/callback?code=…&state=…` needs the login cookie to
//!    open, be fresh and hold that `state`; it exchanges the code with the
//!    verifier, checks the ID token's `nonce`, and has the API's
//!    authenticator verify the token (the ID token, else the access token)
//!    as it verifies every API token. Only then is a session made.
//!
//! `next` is only ever a path under `/console`: a login cannot be made to
//! end on another site.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::session::{self, COOKIE, LOGIN_COOKIE, random_token, set_cookie};
use crate::{State, pages};

/// How long a login may take at the issuer.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long the issuer's discovery document is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// What the login cookie's contents are bound to.
const LOGIN_AAD: &[u8] = b"airlock console login v1";

/// A login in progress: kept in the browser, in the login cookie, sealed
/// (AES-256-GCM under a key of this process) so that the server keeps no
/// state per login and nobody can read or forge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    state: String,
    verifier: String,
    nonce: String,
    next: String,
    /// Unix seconds after which the login is void.
    expires: u64,
}

/// Seals and opens login cookies.
pub struct Logins {
    key: LessSafeKey,
}

impl Default for Logins {
    fn default() -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("a 256-bit key");
        Logins {
            key: LessSafeKey::new(key),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Logins {
    /// A new login returning to `next`, and its sealed cookie value.
    fn begin(&self, next: String) -> (Pending, String) {
        let pending = Pending {
            state: random_token(),
            verifier: random_token(),
            nonce: random_token(),
            next,
            expires: unix_now() + LOGIN_TTL.as_secs(),
        };
        let mut sealed = serde_json::to_vec(&pending).expect("a login serializes");
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source works");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(LOGIN_AAD),
                &mut sealed,
            )
            .expect("sealing works");
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        (pending, URL_SAFE_NO_PAD.encode(value))
    }

    /// The login a cookie value seals, if it is one of ours, unexpired,
    /// and for `state`.
    fn finish(&self, cookie: Option<&str>, state: &str) -> Result<Pending, &'static str> {
        let mut bytes = cookie
            .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or("this browser has no login in progress: start again")?;
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| "a bad login cookie")?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(LOGIN_AAD), &mut sealed)
            .map_err(|_| "the login cookie is not one of this gateway's: start again")?;
        let pending: Pending = serde_json::from_slice(plain).map_err(|_| "a bad login cookie")?;
        if pending.expires <= unix_now() {
            return Err("the login took too long: start again");
        }
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            pending.state.as_bytes(),
            state.as_bytes(),
        );
        if same.is_err() {
            return Err("the state does not match this browser's login: start again");
        }
        Ok(pending)
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
pub(crate) struct Endpoints {
    authorization: String,
    token: String,
}

/// The discovery document's endpoints, kept for [`DISCOVERY_TTL`].
#[derive(Default)]
pub struct Discovery {
    cached: Mutex<Option<(Instant, Arc<Endpoints>)>>,
}

async fn discover(console: &crate::Console) -> Result<Arc<Endpoints>, String> {
    {
        let cached = console
            .discovery
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, endpoints)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(Arc::clone(endpoints));
        }
    }
    let s = &console.settings;
    let url = &s.discovery_url;
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
    if doc["issuer"].as_str() != Some(s.issuer.as_str()) {
        return Err(format!(
            "{url} is the discovery document of {}, not of {}",
            doc["issuer"], s.issuer
        ));
    }
    // Endpoints over TLS, or on this machine when the discovery document
    // is too (the dev issuer, an issuer on loopback): the code, its
    // verifier and the client secret never cross a network in the clear.
    let tls_only = url.starts_with("https://");
    let field = |name: &str| {
        let value = doc[name]
            .as_str()
            .ok_or_else(|| format!("{url} names no {name}"))?;
        let tls = value.starts_with("https://");
        if (tls_only && !tls) || !airlock_identity::is_allowed_url(value) {
            return Err(format!(
                "{url}: {name} {value:?} is neither https nor http on this machine"
            ));
        }
        Ok(value.to_string())
    };
    let endpoints = Arc::new(Endpoints {
        authorization: field("authorization_endpoint")?,
        token: field("token_endpoint")?,
    });
    *console
        .discovery
        .cached
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some((Instant::now(), Arc::clone(&endpoints)));
    Ok(endpoints)
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
    let (pending, cookie) = console.logins.begin(safe_next(q.next.as_deref()));
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
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256");
    (
        [(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &cookie, LOGIN_TTL.as_secs(), s.secure()),
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
        // Anyone can craft this URL: only a well-formed error code is shown.
        tracing::info!(error, description = ?q.error_description, "the identity provider refused a console login");
        let code = if !error.is_empty()
            && error.len() <= 64
            && error
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            error.as_str()
        } else {
            "an unreadable error"
        };
        return refuse(&format!("the identity provider refused the login ({code})"));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return refuse("the callback carries no code and state");
    };
    // The state must be this browser's login in progress (no login CSRF);
    // the code is good once at the issuer (no replay).
    let pending = match console
        .logins
        .finish(session::cookie(&headers, LOGIN_COOKIE), state)
    {
        Ok(p) => p,
        Err(why) => return refuse(why),
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
    // Received straight from the token endpoint discovery named: its
    // claims say whose login it is (OIDC Core 3.1.3.7), whichever token
    // then becomes the session's; a signature is checked below.
    let s = &console.settings;
    if let Err(why) = id_token_claims(id_token, s, &pending.nonce, SystemTime::now()) {
        return refuse(why);
    }
    let mut why_not = Vec::new();
    let mut chosen = None;
    for token in [Some(id_token), answer.access_token.as_ref()]
        .into_iter()
        .flatten()
    {
        match console.auth.authenticate(token).await {
            // Only the console's issuer logs people in here, though the
            // API trusts others.
            Ok(caller) if caller.principal.issuer != s.issuer => {
                why_not.push(format!("a token of {}", caller.principal.issuer));
            }
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
fn claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The checks a client makes of an ID token it got from the token
/// endpoint (OIDC Core 3.1.3.7): this issuer's, for this client, not
/// expired, and for this login (its nonce).
fn id_token_claims(
    id_token: &str,
    s: &crate::Settings,
    nonce: &str,
    now: SystemTime,
) -> Result<(), &'static str> {
    let c = claims(id_token).ok_or("the ID token cannot be read")?;
    if c["iss"].as_str() != Some(s.issuer.as_str()) {
        return Err("the ID token is not the issuer's");
    }
    let for_us = match &c["aud"] {
        serde_json::Value::String(a) => *a == s.client_id,
        serde_json::Value::Array(a) => a.iter().any(|a| a.as_str() == Some(&s.client_id)),
        _ => false,
    };
    if !for_us {
        return Err("the ID token is not for this console's client");
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if c["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("the ID token has expired");
    }
    if c["nonce"].as_str() != Some(nonce) {
        return Err("the ID token's nonce is not this login's");
    }
    Ok(())
}

/// `POST /console/logout`.
pub(crate) async fn logout(
    axum::extract::State(console): State,
    headers: HeaderMap,
    axum::Form(form): axum::Form<pages::CsrfOnly>,
) -> Response {
    // Only the login's own page may end it: a cross-site POST (no cookie
    // under SameSite=Lax) or a forged one changes nothing.
    let Some(s) = console.sessions.get(&headers) else {
        return pages::forbidden_csrf();
    };
    if !s.csrf_ok(form.csrf.as_deref()) {
        return pages::forbidden_csrf();
    }
    console.sessions.remove(&headers);
    tracing::info!(subject = %s.caller.subject, "console logout");
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
    fn an_id_token_must_be_the_issuers_for_this_client_unexpired_and_this_logins() {
        let s = crate::Settings {
            issuer: "https://idp.example".into(),
            discovery_url: String::new(),
            client_id: "console".into(),
            client_secret: None,
            redirect_url: String::new(),
            session_ttl: Duration::from_secs(60),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let token = |claims: serde_json::Value| {
            format!("h.{}.s", URL_SAFE_NO_PAD.encode(claims.to_string()))
        };
        let good = serde_json::json!({"iss": "https://idp.example", "aud": "console", "exp": 1_001, "nonce": "n"});
        assert_eq!(id_token_claims(&token(good.clone()), &s, "n", now), Ok(()));
        let mut listed = good.clone();
        listed["aud"] = serde_json::json!(["api", "console"]);
        assert_eq!(id_token_claims(&token(listed), &s, "n", now), Ok(()));
        for (key, value, why) in [
            (
                "iss",
                serde_json::json!("https://other.example"),
                "not the issuer's",
            ),
            (
                "aud",
                serde_json::json!("someone-else"),
                "not for this console",
            ),
            ("aud", serde_json::json!(null), "not for this console"),
            ("exp", serde_json::json!(1_000), "expired"),
            ("exp", serde_json::json!(null), "expired"),
            ("nonce", serde_json::json!("m"), "nonce"),
        ] {
            let mut bad = good.clone();
            bad[key] = value;
            let got = id_token_claims(&token(bad), &s, "n", now).unwrap_err();
            assert!(got.contains(why), "{key}: {got}");
        }
        assert!(id_token_claims("not a jwt", &s, "n", now).is_err());
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
    fn a_login_lives_in_a_sealed_cookie_for_its_state() {
        let logins = Logins::default();
        let (pending, cookie) = logins.begin("/console".into());
        let found = logins
            .finish(Some(&cookie), &pending.state)
            .expect("the login");
        assert_eq!(found, pending);
        // Another state, no cookie, a forged or altered one, or one sealed by
        // another process: no login.
        assert!(logins.finish(Some(&cookie), "forged").is_err());
        assert!(logins.finish(None, &pending.state).is_err());
        assert!(logins.finish(Some("forged"), &pending.state).is_err());
        let mut altered = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        *altered.last_mut().unwrap() ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(altered);
        assert!(logins.finish(Some(&altered), &pending.state).is_err());
        assert!(
            Logins::default()
                .finish(Some(&cookie), &pending.state)
                .is_err()
        );
        // The verifier is not readable in the cookie.
        assert!(!cookie.contains(&pending.verifier));
    }
}
