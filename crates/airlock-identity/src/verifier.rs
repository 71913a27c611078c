//! Token verification: header, issuer, key, signature, then claims.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_policy::Principal;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::jwks::{Issuer, is_allowed_url};
use crate::{AuthError, Authenticated};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// The signing algorithms a token may use. Everything else, `none` and
/// HMAC included, is refused.
const ACCEPTED_ALGORITHMS: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Longer tokens are refused before they are decoded.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far a value taken from a token is quoted in an error.
const EXCERPT_CHARS: usize = 64;

/// A trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    /// Name used in principals, logs and errors (`identity.issuers[].name`).
    pub name: String,
    /// The `iss` its tokens carry, compared exactly. Also the base URL of
    /// discovery when `jwks_uri` is `None`.
    pub issuer: String,
    /// A value the token's `aud` (string or array) must contain.
    pub audience: String,
    /// The claim holding groups: a top-level claim name, or else a dotted
    /// path into nested objects (`realm_access.roles`). Its value must be a
    /// string or an array of strings; a missing or `null` claim means no
    /// groups, any other value refuses the token as malformed.
    pub groups_claim: String,
    /// Where the JWKS is. `None`: discover it from
    /// `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// A CA bundle (PEM): when set, the only roots trusted for this
    /// issuer's discovery and JWKS requests.
    pub ca_pem: Option<Vec<u8>>,
    /// A bearer credential for those requests.
    pub jwks_bearer: Option<JwksBearer>,
}

/// The bearer token sent with an issuer's discovery and JWKS requests.
#[derive(Clone, PartialEq, Eq)]
pub enum JwksBearer {
    /// Read from this file at each fetch (a projected service-account
    /// token rotates).
    File(std::path::PathBuf),
    /// This token.
    Token(String),
}

impl std::fmt::Debug for JwksBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksBearer::File(path) => write!(f, "File({})", path.display()),
            JwksBearer::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl IssuerSpec {
    /// An issuer found by discovery, with groups in the `groups` claim.
    pub fn new(
        name: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        IssuerSpec {
            name: name.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            groups_claim: "groups".to_owned(),
            jwks_uri: None,
            ca_pem: None,
            jwks_bearer: None,
        }
    }
}

/// Key cache and HTTP settings, shared by all issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Least time between two key fetches for one issuer (default 10 s).
    pub refetch_min_interval: Duration,
    /// Keys older than this, counted from the last successful fetch, are not
    /// used (default 1 h). A background refresh starts at half this age.
    pub key_max_age: Duration,
    /// Timeout of each discovery or JWKS request (default 5 s).
    pub http_timeout: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            refetch_min_interval: Duration::from_secs(10),
            key_max_age: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a [`Verifier`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("issuer {0:?} is configured twice")]
    DuplicateIssuer(String),
    #[error("issuer {name:?}: {url:?} must be an https URL (http only on a loopback address)")]
    InsecureUrl { name: String, url: String },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("issuer {name:?}: its CA bundle holds no PEM certificate")]
    BadCa { name: String },
}

/// Verifies tokens of the configured issuers. Share one behind an `Arc`:
/// calls run concurrently, and each issuer's keys are fetched and cached
/// once for all of them.
pub struct Verifier {
    /// By `iss`.
    issuers: HashMap<String, Arc<Issuer>>,
}

impl Verifier {
    /// Checks the issuers (unique names and `iss`, acceptable URLs) without
    /// any network access: keys are fetched on first use.
    pub fn new(issuers: Vec<IssuerSpec>, opts: VerifierOptions) -> Result<Self, SetupError> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(opts.http_timeout)
                .connect_timeout(opts.http_timeout)
                .redirect(reqwest::redirect::Policy::none())
        };
        let shared = builder().build()?;
        let mut names = HashSet::new();
        let mut by_iss = HashMap::new();
        for spec in issuers {
            let url = spec.jwks_uri.as_deref().unwrap_or(&spec.issuer);
            if !is_allowed_url(url) {
                return Err(SetupError::InsecureUrl {
                    url: url.to_owned(),
                    name: spec.name,
                });
            }
            if !names.insert(spec.name.clone()) {
                return Err(SetupError::DuplicateIssuer(spec.name));
            }
            // An issuer with a CA of its own trusts only that CA.
            let http = match &spec.ca_pem {
                None => shared.clone(),
                Some(pem) => {
                    let certs = reqwest::Certificate::from_pem_bundle(pem)
                        .ok()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| SetupError::BadCa {
                            name: spec.name.clone(),
                        })?;
                    builder().tls_certs_only(certs).build()?
                }
            };
            match by_iss.entry(spec.issuer.clone()) {
                Entry::Occupied(_) => return Err(SetupError::DuplicateIssuer(spec.issuer)),
                Entry::Vacant(slot) => {
                    slot.insert(Arc::new(Issuer::new(spec, http, opts)));
                }
            }
        }
        Ok(Verifier { issuers: by_iss })
    }

    /// Verifies `token` as of `now`, the only clock consulted: for `exp` and
    /// `nbf`, and for the age of cached keys.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<Authenticated, AuthError> {
        let token = Token::parse(token)?;
        let iss = str_claim(&token.claims, "iss")?.ok_or(AuthError::MissingClaim("iss"))?;
        let issuer = self
            .issuers
            .get(iss)
            .ok_or_else(|| AuthError::UnknownIssuer(excerpt(iss)))?;
        let key = issuer.key(token.kid.as_deref(), now).await?;
        key.verify(token.alg, token.message.as_bytes(), token.signature)?;
        let principal = principal(&issuer.spec, &token.claims, now)?;
        Ok(Authenticated { principal })
    }
}

/// A JWS compact token, split and decoded but not verified.
struct Token<'a> {
    /// `header.payload`, what the signature covers.
    message: &'a str,
    signature: &'a str,
    alg: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

impl<'a> Token<'a> {
    fn parse(token: &'a str) -> Result<Self, AuthError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let not_jwt = || {
            AuthError::Malformed("expected a JWT: three base64url parts separated by dots".into())
        };
        let (message, signature) = token.rsplit_once('.').ok_or_else(not_jwt)?;
        let (header, payload) = message
            .split_once('.')
            .filter(|(_, payload)| !payload.contains('.'))
            .ok_or_else(not_jwt)?;
        let header: Header = decode_part(header, "header")?;
        let alg = header
            .alg
            .parse()
            .ok()
            .filter(|alg| ACCEPTED_ALGORITHMS.contains(alg))
            .ok_or_else(|| AuthError::ForbiddenAlgorithm(excerpt(&header.alg)))?;
        Ok(Token {
            message,
            signature,
            alg,
            kid: header.kid,
            claims: decode_part(payload, "payload")?,
        })
    }
}

fn decode_part<T: DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| AuthError::Malformed(format!("the {what} is not base64url-encoded JSON")))
}

/// The principal of a token whose signature has been verified.
fn principal(
    spec: &IssuerSpec,
    claims: &Map<String, Value>,
    now: SystemTime,
) -> Result<Principal, AuthError> {
    let expires_at = time_claim(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    let aud = claims.get("aud").ok_or(AuthError::MissingClaim("aud"))?;
    let subject = str_claim(claims, "sub")?.ok_or(AuthError::MissingClaim("sub"))?;
    let audience_ok = match aud {
        Value::String(aud) => *aud == spec.audience,
        Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(&spec.audience)),
        _ => return Err(invalid_claim("aud", "a string or an array of strings")),
    };
    if !audience_ok {
        return Err(AuthError::WrongAudience {
            expected: spec.audience.clone(),
        });
    }
    if now
        .duration_since(expires_at)
        .is_ok_and(|past| past >= LEEWAY)
    {
        return Err(AuthError::Expired);
    }
    if time_claim(claims, "nbf")?
        .is_some_and(|nbf| nbf.duration_since(now).is_ok_and(|ahead| ahead > LEEWAY))
    {
        return Err(AuthError::NotYetValid);
    }
    let act_chain = actors(claims.get("act"))?;
    Ok(Principal {
        issuer_name: spec.name.clone(),
        issuer: spec.issuer.clone(),
        subject: subject.to_owned(),
        groups: groups(claims, &spec.groups_claim)?,
        act: act_chain.first().cloned(),
        act_chain,
        token_id: str_claim(claims, "jti")?.map(str::to_owned),
        expires_at,
        claims: airlock_policy::claims::Claims::new(claims.clone()),
    })
}

/// The delegation chain of an `act` claim (RFC 8693 §4.1): the current
/// actor, then each prior one (`act` nested in `act`), at most [`MAX_ACTORS`].
fn actors(act: Option<&Value>) -> Result<Vec<String>, AuthError> {
    let mut chain = Vec::new();
    let mut at = act;
    while let Some(act) = at {
        if chain.len() == MAX_ACTORS {
            return Err(invalid_claim(
                "act",
                "a delegation chain of at most 8 actors",
            ));
        }
        let sub = act
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_claim("act", "an object with a string \"sub\""))?;
        chain.push(sub.to_owned());
        at = act.get("act");
    }
    Ok(chain)
}

/// The longest delegation chain accepted.
const MAX_ACTORS: usize = 8;

fn groups(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, AuthError> {
    let value = claims.get(claim).or_else(|| {
        let mut path = claim.split('.');
        let top = claims.get(path.next()?)?;
        path.try_fold(top, |value, step| value.get(step))
    });
    let invalid = || invalid_claim(claim, "a string or an array of strings");
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(group)) => Ok(vec![group.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

fn str_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Result<Option<&'c str>, AuthError> {
    claims
        .get(name)
        .map(|value| {
            value
                .as_str()
                .ok_or_else(|| invalid_claim(name, "a string"))
        })
        .transpose()
}

/// A NumericDate claim (seconds since the epoch, possibly fractional).
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<SystemTime>, AuthError> {
    claims
        .get(name)
        .map(|value| {
            value
                .as_f64()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .and_then(|since_epoch| UNIX_EPOCH.checked_add(since_epoch))
                .ok_or_else(|| invalid_claim(name, "a time in seconds since the epoch"))
        })
        .transpose()
}

fn invalid_claim(name: &str, expected: &str) -> AuthError {
    AuthError::Malformed(format!("claim {name:?} must be {expected}"))
}

/// The start of an untrusted value, to quote in an error.
fn excerpt(value: &str) -> String {
    value.chars().take(EXCERPT_CHARS).collect()
}

/// What the fuzz targets drive: everything a token and an issuer's JWKS
/// reach without a network.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::time::SystemTime;

    use super::{IssuerSpec, Token, principal, str_claim};
    use crate::AuthError;
    use crate::jwks::{JwkSetDocument, Key};

    /// Reads `jwks` as a JWKS document the way a fetch does (odd keys
    /// skipped), decodes `token`, checks its signature against every key
    /// read, and checks its claims against `spec` as of `now` whether or
    /// not a key accepted it. Returns whether some key accepted the
    /// signature, and the claims' verdict.
    pub fn token(
        jwks: &[u8],
        token: &str,
        spec: &IssuerSpec,
        now: SystemTime,
    ) -> Result<(bool, airlock_policy::Principal), AuthError> {
        let keys: Vec<Key> = serde_json::from_slice::<JwkSetDocument>(jwks)
            .map(|doc| doc.keys)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|jwk| serde_json::from_value(jwk).ok())
            .filter_map(|jwk| Key::from_jwk(&jwk))
            .collect();
        let token = Token::parse(token)?;
        str_claim(&token.claims, "iss")?;
        let signed = keys
            .iter()
            .filter(|key| {
                key.verify(token.alg, token.message.as_bytes(), token.signature)
                    .is_ok()
            })
            .count()
            > 0;
        Ok((signed, principal(spec, &token.claims, now)?))
    }
}
