//! The web console at `/console`: server-rendered pages for approvers,
//! auditors and admins, with a little JavaScript (the live approvals queue
//! over Server-Sent Events, countdowns) and no build step. Its assets are
//! compiled into the binary.
//!
//! The console is a client of the HTTP API like the CLI: a person logs in
//! with OpenID Connect (authorization code with PKCE, [`oidc`]), the
//! console keeps the token the issuer returned in a server-side session
//! ([`session`]), and every page asks the API's own router for its data
//! with that token ([`airlock_api::Client::local`]). What a person may see
//! or do is therefore exactly what the API lets their token see or do; the
//! console only hides buttons the API would refuse.
//!
//! Architecture invariants: the console decides nothing the API decides;
//! every value it shows is escaped by the template engine (maud); no page
//! runs inline script (the Content-Security-Policy forbids it); every
//! state-changing request carries the session's CSRF token.
#![forbid(unsafe_code)]
// Handlers' helpers return the error response itself (`Result<_, Response>`).
#![allow(clippy::result_large_err)]

pub mod dev;
mod highlight;
pub mod oidc;
mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use airlock_api::Authenticate;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// The console's settings, resolved from the `console` section.
#[derive(Clone)]
pub struct Settings {
    /// The issuer's `iss`, which its discovery document must name.
    pub issuer: String,
    /// The issuer's discovery document.
    pub discovery_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The redirect URI registered at the issuer (`…/console/callback`).
    pub redirect_url: String,
    /// The longest a login lasts (its token's expiry comes first).
    pub session_ttl: Duration,
}

impl Settings {
    /// The session cookie is `Secure` when the console is reached over TLS
    /// (its redirect URL is `https`).
    fn secure(&self) -> bool {
        self.redirect_url.starts_with("https://")
    }
}

/// What the console's handlers share.
pub(crate) struct Console {
    pub(crate) settings: Settings,
    /// The API's router: every page's data comes from it.
    pub(crate) api: Router,
    /// Checks the tokens the issuer hands back, as the API checks them.
    pub(crate) auth: Arc<dyn Authenticate>,
    pub(crate) http: reqwest::Client,
    pub(crate) logins: oidc::Logins,
    pub(crate) discovery: oidc::Discovery,
    pub(crate) sessions: session::Sessions,
}

pub(crate) type State = axum::extract::State<Arc<Console>>;

/// How long the console waits for the issuer (discovery, token exchange).
const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);

/// The console's routes, and `/` redirecting to it. `api` is the API's
/// router; `auth` the API's authenticator.
pub fn router(settings: Settings, api: Router, auth: Arc<dyn Authenticate>) -> Router {
    let http = reqwest::Client::builder()
        .timeout(ISSUER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client builds");
    let console = Arc::new(Console {
        settings,
        api,
        auth,
        http,
        logins: oidc::Logins::default(),
        discovery: oidc::Discovery::default(),
        sessions: session::Sessions::default(),
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route("/console/login", get(oidc::login))
        .route("/console/callback", get(oidc::callback))
        .route("/console/logout", post(oidc::logout))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/static/favicon.svg", get(favicon))
        .route("/console/approvals", get(pages::approvals))
        .route("/console/approvals/queue", get(pages::queue))
        .route("/console/events", get(pages::events))
        .route("/console/approvals/{id}", get(pages::approval))
        .route("/console/approvals/{id}/{verb}", post(pages::vote))
        .route(
            "/console/access",
            get(pages::access).post(pages::request_access),
        )
        .route("/console/access/{id}/{verb}", post(pages::access_vote))
        .route("/console/sessions", get(pages::sessions))
        .route("/console/sessions/{id}", get(pages::replay))
        .route("/console/sessions/{id}/terminate", post(pages::terminate))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/verify", post(pages::verify))
        .route("/console/policy", get(pages::policy).post(pages::explain))
        .layer(axum::middleware::map_response(headers))
        .with_state(console)
}

/// What no page may do: run inline or foreign script, be framed, send the
/// URL (with a login's code in it) to another site, or be cached.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    )
}

async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("../assets/favicon.svg"))
}
