//! The console's OpenID Connect login against an issuer that is not the
//! gateway's own: an `identity.issuers` entry (`console.issuer: corp`)
//! whose discovery document, authorization and token endpoints and keys
//! are another server's, with a confidential client (a client secret) and
//! PKCE. No browser: reqwest with redirects off, following them by hand
//! and carrying the cookies as a browser would.
//!
//! The issuer is a small OpenID provider of the test's own ([`Idp`]),
//! signing with its own Ed25519 key, which the gateway fetches through
//! discovery like any issuer's. Another gateway's dev issuer cannot play
//! that part: its discovery document and tokens name `iss: airlock-dev`,
//! which is not a URL (the console finds a named issuer's discovery
//! document at `{iss}/.well-known/openid-configuration`) and which
//! `identity.issuers` refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_console::oidc::challenge;
use airlock_console::session::random_token;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use url::Url;

use crate::common::{Gateway, local_config};

/// The console's client at the issuer.
const CLIENT_ID: &str = "airlock-console";
const CLIENT_SECRET: &str = "console-client-secret";
/// Who is signed in at the issuer.
const SUBJECT: &str = "carol";
const KID: &str = "test-idp-1";

/// A code the issuer handed out and has not yet exchanged.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
}

struct IdpState {
    base: String,
    key: Ed25519KeyPair,
    codes: Mutex<HashMap<String, Grant>>,
    /// What the token endpoint answered, in order: `tokens` or why not.
    exchanges: Mutex<Vec<String>>,
}

/// An OpenID provider where `carol` (group `dba`) is signed in already:
/// `/authorize` answers at once with a code (authorization code flow, PKCE
/// `S256` required); `/token` spends a code once, checks the client secret
/// and the verifier, and returns an ID token for the client (with the
/// request's nonce) and an access token for the gateway (`aud: airlock`).
struct Idp {
    base: String,
    state: Arc<IdpState>,
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwks = json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": KID, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(key.public_key()),
        }] });
        let discovery = json!({
            "issuer": base,
            "jwks_uri": format!("{base}/jwks"),
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
        });
        let state = Arc::new(IdpState {
            base: base.clone(),
            key,
            codes: Mutex::default(),
            exchanges: Mutex::default(),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || std::future::ready(Json(discovery.clone()))),
            )
            .route(
                "/jwks",
                axum::routing::get(move || std::future::ready(Json(jwks.clone()))),
            )
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp { base, state }
    }

    /// What the token endpoint has answered so far.
    fn exchanges(&self) -> Vec<String> {
        self.state.exchanges.lock().unwrap().clone()
    }
}

impl IdpState {
    fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": KID });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(message.as_bytes()));
        format!("{message}.{signature}")
    }

    fn exchange(&self, form: &HashMap<String, String>) -> Result<Value, &'static str> {
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        if field("grant_type") != "authorization_code" {
            return Err("unsupported grant_type");
        }
        // Spent whatever happens next: a code is good for one try.
        let grant = self
            .codes
            .lock()
            .unwrap()
            .remove(field("code"))
            .ok_or("unknown or used code")?;
        if field("client_id") != grant.client_id || field("redirect_uri") != grant.redirect_uri {
            return Err("client_id or redirect_uri differ from the authorization request's");
        }
        if field("client_secret") != CLIENT_SECRET {
            return Err("wrong client_secret");
        }
        if challenge(field("code_verifier")) != grant.challenge {
            return Err("the code_verifier does not match the code_challenge");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |audience: &str| {
            json!({
                "iss": self.base, "sub": SUBJECT, "aud": audience,
                "iat": now, "exp": now + 600, "groups": ["dba"],
            })
        };
        let mut id_token = claims(&grant.client_id);
        id_token["nonce"] = json!(grant.nonce);
        Ok(json!({
            "id_token": self.sign(&id_token),
            "access_token": self.sign(&claims("airlock")),
            "token_type": "Bearer",
            "expires_in": 600,
        }))
    }
}

/// `GET /authorize`: carol is signed in; back to the client with a code.
async fn authorize(
    State(idp): State<Arc<IdpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| q.get(name).cloned().unwrap_or_default();
    let well_formed = field("response_type") == "code"
        && field("client_id") == CLIENT_ID
        && field("code_challenge_method") == "S256"
        && !field("code_challenge").is_empty()
        && !field("state").is_empty();
    let mut back = match Url::parse(&field("redirect_uri")) {
        Ok(url) if well_formed => url,
        _ => return (StatusCode::BAD_REQUEST, "bad authorization request").into_response(),
    };
    let code = random_token();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &field("state"));
    idp.codes.lock().unwrap().insert(
        code,
        Grant {
            client_id: field("client_id"),
            redirect_uri: field("redirect_uri"),
            challenge: field("code_challenge"),
            nonce: field("nonce"),
        },
    );
    Redirect::to(back.as_str()).into_response()
}

/// `POST /token`.
async fn token(State(idp): State<Arc<IdpState>>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let answer = idp.exchange(&form);
    let outcome = match &answer {
        Ok(_) => "tokens".to_string(),
        Err(why) => (*why).to_string(),
    };
    idp.exchanges.lock().unwrap().push(outcome);
    match answer {
        Ok(tokens) => Json(tokens).into_response(),
        Err(why) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response(),
    }
}

/// The machine's PostgreSQL setup, with the issuer `corp` instead of the
/// dev issuer, and the console logging in there as a confidential client.
fn config(issuer: &str, secret: &std::path::Path) -> String {
    let yaml = local_config(&format!(
        "console:\n  issuer: corp\n  client_id: {CLIENT_ID}\n  client_secret: {{file: \"{}\"}}\n",
        secret.display()
    ));
    let identity = format!(
        "identity:\n  issuers:\n    - {{name: corp, issuer: \"{issuer}\", audience: airlock}}\n"
    );
    let replaced = yaml.replacen("identity:\n  dev_issuer: true\n", &identity, 1);
    assert_ne!(
        replaced, yaml,
        "local_config's identity section changed shape"
    );
    replaced
}

/// Query parameter `name` of `url`.
fn param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
        .into_owned()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// The `name=value` a response sets for cookie `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|c| c.split_once('=').is_some_and(|(k, _)| k == name))
        .map(str::to_string)
}

/// A callback refused: `400`, no session, and the page says `why`.
async fn refused(r: reqwest::Response, why: &str) {
    assert_eq!(r.status(), 400);
    assert_eq!(set_cookie(&r, "airlock_console"), None);
    let body = r.text().await.unwrap();
    assert!(body.contains(why), "{why:?} not in {body}");
}

async fn get(http: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    http.get(url).header("cookie", cookie).send().await.unwrap()
}

/// A login begun at `url` (`/console/login…`): the browser's login cookie
/// and the authorization request it is sent to.
async fn begin(http: &reqwest::Client, url: &str) -> (String, Url) {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303, "{url}");
    let cookie = set_cookie(&r, "airlock_login").expect("a login cookie");
    (cookie, Url::parse(&location(&r)).unwrap())
}

/// The browser at the issuer: where it is sent back to (the callback).
async fn at_issuer(http: &reqwest::Client, authorize: &Url) -> Url {
    let r = http.get(authorize.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 303, "{authorize}: {:?}", r.text().await);
    Url::parse(&location(&r)).unwrap()
}

/// A login at another issuer, by discovery, with PKCE, a client secret
/// and a nonce, ends with a session that loads a page; a callback with
/// another state never reaches the issuer; a used code replayed with the
/// browser's own login cookie is refused by the issuer, so no second
/// session; a code injected into another login fails its PKCE check at the
/// issuer; an ID token carrying another nonce is refused although the
/// issuer signed it.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_logs_in_at_another_issuer_and_refuses_state_replay_and_nonce() {
    let idp = Idp::start().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let gw = Gateway::start(&config(&idp.base, &secret)).await;
    let console = format!("http://{}", gw.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A page without a login sends the browser to the login, which sends
    // it to the issuer's authorization endpoint, found by discovery.
    let r = http
        .get(format!("{console}/console/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let login = location(&r);
    assert!(login.starts_with("/console/login?next="), "{login}");
    let (login_cookie, authorize) = begin(&http, &format!("{console}{login}")).await;
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/authorize?", idp.base)),
        "{authorize}"
    );
    let q: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{console}/console/callback"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q["nonce"].is_empty() && !q["state"].is_empty(), "{q:?}");
    let callback = at_issuer(&http, &authorize).await;
    assert!(
        callback.as_str().starts_with(&q["redirect_uri"]),
        "{callback}"
    );
    let code = param(&callback, "code");

    // This browser's login cookie, another state: refused before the code
    // is exchanged (the issuer has seen no exchange).
    let forged = format!("{console}/console/callback?code={code}&state=forged");
    refused(
        get(&http, &forged, &login_cookie).await,
        "state does not match",
    )
    .await;
    assert!(idp.exchanges().is_empty(), "{:?}", idp.exchanges());

    // The right one: the code is exchanged (with the secret and the
    // verifier), the gateway verifies the issuer's token, and the browser
    // is logged in and sent where it was going.
    let r = get(&http, callback.as_str(), &login_cookie).await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(location(&r), "/console/approvals");
    assert_eq!(
        set_cookie(&r, "airlock_login").as_deref(),
        Some("airlock_login="),
        "the login cookie is cleared"
    );
    let session = set_cookie(&r, "airlock_console").expect("a session cookie");
    assert_eq!(idp.exchanges(), ["tokens"]);
    let page = get(&http, &format!("{console}/console/approvals"), &session).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains(&format!("<span id=\"whoami\">{SUBJECT}</span>")),
        "{body}"
    );

    // The same callback again, with the login cookie it was made for (a
    // stolen URL and cookie): the console sends the same verifier, and the
    // issuer refuses the spent code.
    let r = get(&http, callback.as_str(), &login_cookie).await;
    refused(r, "the token endpoint refused the code").await;
    assert_eq!(idp.exchanges(), ["tokens", "unknown or used code"]);

    // A code injected into another login (obtained by login A, delivered
    // with login B's cookie and state): the console sends B's verifier,
    // which is not the code's challenge, and the issuer refuses it.
    let (_, authorize_a) = begin(&http, &format!("{console}/console/login")).await;
    let code_a = param(&at_issuer(&http, &authorize_a).await, "code");
    let (cookie_b, authorize_b) = begin(&http, &format!("{console}/console/login")).await;
    let state_b = param(&authorize_b, "state");
    let injected = format!("{console}/console/callback?code={code_a}&state={state_b}");
    refused(
        get(&http, &injected, &cookie_b).await,
        "the token endpoint refused the code",
    )
    .await;
    assert_eq!(
        idp.exchanges(),
        [
            "tokens",
            "unknown or used code",
            "the code_verifier does not match the code_challenge"
        ]
    );

    // A login whose authorization request's nonce was changed on its way:
    // state and verifier are right and the issuer signs an ID token, but
    // for another nonce.
    let (login_cookie, mut authorize) = begin(&http, &format!("{console}/console/login")).await;
    let pairs: Vec<(String, String)> = authorize
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "tampered".to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    authorize.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = at_issuer(&http, &authorize).await;
    let r = get(&http, callback.as_str(), &login_cookie).await;
    refused(r, "the ID token's nonce is not this login's").await;
    assert_eq!(
        idp.exchanges(),
        [
            "tokens",
            "unknown or used code",
            "the code_verifier does not match the code_challenge",
            "tokens"
        ]
    );
    gw.stop().await;
}
