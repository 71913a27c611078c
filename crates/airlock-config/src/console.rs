//! The `console` section: the web console on the HTTP listener.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{HumanDuration, Secret};

/// The web console (`/console` on the HTTP listener) for approvers, auditors and admins. People
/// log in with OpenID Connect (authorization code with PKCE) at `issuer`; what they may do is
/// what the HTTP API lets their token do (`api.auditor_groups`, `api.admin_groups`, approvers).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Console {
    /// The name of an `identity.issuers` entry, or `dev` for the dev issuer's login page (demos
    /// and tests only).
    pub issuer: String,
    /// The console's OAuth client id at the issuer.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The client secret, for a confidential client (a public client uses PKCE alone).
    pub client_secret: Option<Secret>,
    /// The redirect URI registered at the issuer, ending in `/console/callback`: by default
    /// `http://<listen.http>/console/callback`. An `https` URL (TLS at a proxy in front) makes
    /// the session cookie `Secure`.
    pub redirect_url: Option<String>,
    /// The longest a console login lasts; it also ends when its token expires.
    #[serde(default = "default_session_ttl")]
    pub session_ttl: HumanDuration,
}

fn default_client_id() -> String {
    "airlock-console".into()
}

fn default_session_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(8 * 3600))
}
