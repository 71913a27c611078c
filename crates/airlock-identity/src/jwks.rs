//! One issuer's signing keys: discovery, JWKS fetch and the key cache.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{AuthError, IssuerSpec, VerifierOptions};

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
];

/// Whether keys may be fetched from `url`: `https`, or `http` to a loopback
/// address.
pub fn is_allowed_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// A configured issuer and its key cache.
pub(crate) struct Issuer {
    pub(crate) spec: IssuerSpec,
    http: reqwest::Client,
    opts: VerifierOptions,
    /// Read on every verification, replaced whole after a fetch.
    cache: RwLock<Arc<KeySet>>,
    /// Held for the length of a fetch, so that one runs at a time.
    fetch: Arc<tokio::sync::Mutex<FetchState>>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    /// `None` until the first successful fetch.
    fetched_at: Option<SystemTime>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<SystemTime>,
    /// Found by discovery; forgotten when fetching from it fails.
    discovered_jwks_uri: Option<String>,
}

/// A verification key from a JWKS.
pub(crate) struct Key {
    kid: Option<String>,
    /// What its key type and curve allow.
    algorithms: &'static [Algorithm],
    /// The JWK's own `alg`, when it has one.
    pinned: Option<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the discovery document names issuer {0:?}")]
    IssuerMismatch(String),
    #[error("the discovered jwks_uri {0:?} is not https")]
    InsecureUrl(String),
    #[error("cannot read the JWKS bearer token from {0}: {1}")]
    Credential(String, std::io::Error),
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Keys are parsed one by one, so that one odd key does not hide the rest.
#[derive(Deserialize)]
pub(crate) struct JwkSetDocument {
    pub(crate) keys: Vec<serde_json::Value>,
}

impl Issuer {
    pub(crate) fn new(spec: IssuerSpec, http: reqwest::Client, opts: VerifierOptions) -> Self {
        Issuer {
            spec,
            http,
            opts,
            cache: RwLock::default(),
            fetch: Arc::default(),
        }
    }

    /// The key `kid` names (or the only key, for a token without `kid`),
    /// fetching keys when none cached fits.
    pub(crate) async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
        now: SystemTime,
    ) -> Result<Arc<Key>, AuthError> {
        let cached = self.cached();
        if let Some(key) = cached.find(kid, now, self.opts.key_max_age) {
            if cached
                .age(now)
                .is_some_and(|age| age >= self.opts.key_max_age / 2)
            {
                self.refresh_in_background(now);
            }
            return Ok(key);
        }
        let mut state = self.fetch.lock().await;
        // Another task may have fetched while this one waited.
        let cached = self.cached();
        if let Some(key) = cached.find(kid, now, self.opts.key_max_age) {
            return Ok(key);
        }
        let issuer = self.spec.name.clone();
        if !state.may_fetch(now, self.opts.refetch_min_interval) {
            return Err(if cached.is_usable(now, self.opts.key_max_age) {
                AuthError::UnknownKeyId { issuer }
            } else {
                AuthError::JwksUnavailable { issuer }
            });
        }
        match self.fetch(&mut state, now).await {
            Some(keys) => keys
                .find(kid, now, self.opts.key_max_age)
                .ok_or(AuthError::UnknownKeyId { issuer }),
            None => Err(AuthError::JwksUnavailable { issuer }),
        }
    }

    fn cached(&self) -> Arc<KeySet> {
        Arc::clone(&self.cache.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts a refresh unless one is running or the rate limit forbids it.
    fn refresh_in_background(self: &Arc<Self>, now: SystemTime) {
        let Ok(mut state) = Arc::clone(&self.fetch).try_lock_owned() else {
            return;
        };
        if state.may_fetch(now, self.opts.refetch_min_interval) {
            let issuer = Arc::clone(self);
            tokio::spawn(async move { issuer.fetch(&mut state, now).await });
        }
    }

    /// Fetches the keys and caches them; `None` (logged) on failure.
    async fn fetch(&self, state: &mut FetchState, now: SystemTime) -> Option<Arc<KeySet>> {
        state.last_attempt = Some(now);
        match self.fetch_keys(state).await {
            Ok(keys) => {
                tracing::debug!(issuer = %self.spec.name, keys = keys.len(), "fetched signing keys");
                let keys = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(now),
                });
                *self.cache.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&keys);
                Some(keys)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.spec.name, %error, "cannot fetch signing keys");
                None
            }
        }
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<Vec<Arc<Key>>, FetchError> {
        let uri = match self
            .spec
            .jwks_uri
            .as_ref()
            .or(state.discovered_jwks_uri.as_ref())
        {
            Some(uri) => uri.clone(),
            None => state
                .discovered_jwks_uri
                .insert(self.discover().await?)
                .clone(),
        };
        let jwks: JwkSetDocument = self
            .get(&uri)
            .await
            .inspect_err(|_| state.discovered_jwks_uri = None)?;
        Ok(jwks
            .keys
            .into_iter()
            .filter_map(|jwk| {
                let key = serde_json::from_value(jwk).ok().as_ref().and_then(Key::from_jwk);
                if key.is_none() {
                    tracing::debug!(issuer = %self.spec.name, "ignoring a JWK that cannot verify accepted signatures");
                }
                key.map(Arc::new)
            })
            .collect())
    }

    /// OpenID Connect Discovery 1.0, section 4.
    async fn discover(&self) -> Result<String, FetchError> {
        let base = self
            .spec
            .issuer
            .strip_suffix('/')
            .unwrap_or(&self.spec.issuer);
        let doc: DiscoveryDocument = self
            .get(&format!("{base}/.well-known/openid-configuration"))
            .await?;
        if doc.issuer != self.spec.issuer {
            return Err(FetchError::IssuerMismatch(doc.issuer));
        }
        if !is_allowed_url(&doc.jwks_uri) {
            return Err(FetchError::InsecureUrl(doc.jwks_uri));
        }
        Ok(doc.jwks_uri)
    }

    /// Whether the issuer's bearer credential may go to `url`: the issuer's
    /// own origin, a configured `jwks_uri`'s, or, with a CA of its own
    /// pinned (only hosts that CA certifies answer), any. Never a third
    /// party that a discovery document names.
    fn may_authenticate(&self, url: &str) -> bool {
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_string(),
                    u.host_str().map(str::to_string),
                    u.port_or_known_default(),
                )
            })
        };
        let target = origin(url);
        self.spec.ca_pem.is_some()
            || target.is_some()
                && (target == origin(&self.spec.issuer)
                    || self
                        .spec
                        .jwks_uri
                        .as_deref()
                        .is_some_and(|j| origin(j) == target))
    }

    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let mut request = self.http.get(url);
        let bearer = self
            .spec
            .jwks_bearer
            .as_ref()
            .filter(|_| self.may_authenticate(url));
        if self.spec.jwks_bearer.is_some() && bearer.is_none() {
            tracing::warn!(issuer = %self.spec.name, url, "not sending the JWKS credential to a host other than the issuer's (pin the issuer's `ca` or set `jwks_uri`)");
        }
        match bearer {
            None => {}
            Some(crate::JwksBearer::Token(token)) => request = request.bearer_auth(token),
            // Read at each fetch: a rotated token is used from the next one.
            Some(crate::JwksBearer::File(path)) => {
                let token = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| FetchError::Credential(path.display().to_string(), e))?;
                request = request.bearer_auth(token.trim());
            }
        }
        Ok(request.send().await?.error_for_status()?.json().await?)
    }
}

impl FetchState {
    fn may_fetch(&self, now: SystemTime, min_interval: Duration) -> bool {
        self.last_attempt
            .is_none_or(|last| elapsed(last, now) >= min_interval)
    }
}

impl KeySet {
    fn age(&self, now: SystemTime) -> Option<Duration> {
        self.fetched_at.map(|at| elapsed(at, now))
    }

    fn is_usable(&self, now: SystemTime, max_age: Duration) -> bool {
        self.age(now).is_some_and(|age| age < max_age)
    }

    /// The key for `kid` if the set is usable. Without a `kid`, only a set
    /// of one key has an answer.
    fn find(&self, kid: Option<&str>, now: SystemTime, max_age: Duration) -> Option<Arc<Key>> {
        if !self.is_usable(now, max_age) {
            return None;
        }
        match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
        .cloned()
    }
}

impl Key {
    /// A key usable with an accepted algorithm, or `None` (encryption keys,
    /// HMAC secrets, other curves).
    pub(crate) fn from_jwk(jwk: &Jwk) -> Option<Key> {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|usage| *usage != PublicKeyUse::Signature)
        {
            return None;
        }
        let (decoding, algorithms): (_, &'static [Algorithm]) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => (
                DecodingKey::from_rsa_components(&rsa.n, &rsa.e),
                RSA_ALGORITHMS,
            ),
            AlgorithmParameters::EllipticCurve(ec) => (
                DecodingKey::from_ec_components(&ec.x, &ec.y),
                match ec.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => return None,
                },
            ),
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                (DecodingKey::from_ed_components(&okp.x), &[Algorithm::EdDSA])
            }
            _ => return None,
        };
        let pinned = jwk
            .common
            .key_algorithm
            .map(Algorithm::try_from)
            .transpose()
            .ok()?;
        Some(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            pinned,
            decoding: decoding.ok()?,
        })
    }

    /// Checks the signature over `message`. The key must fit `alg`: a token
    /// cannot make an RSA key verify an ECDSA signature, say.
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &str,
    ) -> Result<(), AuthError> {
        if !self.algorithms.contains(&alg) || self.pinned.is_some_and(|pinned| pinned != alg) {
            return Err(AuthError::ForbiddenAlgorithm(format!("{alg:?}")));
        }
        match jsonwebtoken::crypto::verify(signature, message, &self.decoding, alg) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(AuthError::BadSignature),
        }
    }
}

/// Time between two readings of the caller's clock. A clock that went back
/// counts as time elapsed.
fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since)
        .unwrap_or_else(|back| back.duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_endpoints_travel_over_tls_or_stay_on_this_machine() {
        for ok in [
            "https://idp.example/keys",
            "http://127.0.0.1:9/token",
            "http://localhost/t",
            "http://[::1]:80/t",
        ] {
            assert!(is_allowed_url(ok), "{ok}");
        }
        for bad in [
            "http://idp.example/token",
            "http://127.0.0.1.evil.example/t",
            "ftp://127.0.0.1/t",
            "not a url",
        ] {
            assert!(!is_allowed_url(bad), "{bad}");
        }
    }

    fn issuer(jwks_uri: Option<&str>, ca: bool) -> Issuer {
        let spec = IssuerSpec {
            jwks_uri: jwks_uri.map(Into::into),
            ca_pem: ca.then(|| b"pem".to_vec()),
            jwks_bearer: Some(crate::JwksBearer::Token("t".into())),
            ..IssuerSpec::new("k8s", "https://kubernetes.default.svc:443", "airlock")
        };
        Issuer::new(spec, reqwest::Client::new(), VerifierOptions::default())
    }

    #[test]
    fn the_jwks_credential_goes_to_the_issuers_own_hosts_only() {
        let plain = issuer(None, false);
        assert!(plain.may_authenticate("https://kubernetes.default.svc/openid/v1/jwks"));
        // A discovery document naming another host does not get it.
        assert!(!plain.may_authenticate("https://collector.example.net/jwks"));
        assert!(!plain.may_authenticate("https://kubernetes.default.svc:8443/jwks"));
        assert!(!plain.may_authenticate("http://kubernetes.default.svc/openid/v1/jwks"));
        // A configured jwks_uri's host does.
        let configured = issuer(Some("https://10.0.0.1:6443/openid/v1/jwks"), false);
        assert!(configured.may_authenticate("https://10.0.0.1:6443/openid/v1/jwks"));
        assert!(!configured.may_authenticate("https://10.0.0.2:6443/openid/v1/jwks"));
        // With the issuer's CA pinned only hosts it certifies answer.
        assert!(issuer(None, true).may_authenticate("https://10.0.0.1:6443/openid/v1/jwks"));
    }
}
