//! Who is calling: turns the OIDC token a client sends as its password into
//! an [`airlock_policy::Principal`], or refuses it with an [`AuthError`].
//!
//! [`Verifier`] checks JWTs against the configured issuers:
//! - The issuer is picked by the token's (as yet unverified) `iss`, matched
//!   exactly against [`IssuerSpec::issuer`]. The signing keys come from the
//!   issuer's JWKS, found by OIDC discovery unless `jwks_uri` is given.
//! - Only RS256/384/512, PS256, ES256/384 and EdDSA are accepted. `none`
//!   and every HMAC algorithm are refused from the header alone, before any
//!   key is looked up. The key must also fit the algorithm (type, curve and
//!   the JWK's own `alg`).
//! - `exp`, `iss`, `aud` and `sub` are required, `nbf` is checked when
//!   present, with [`LEEWAY`] of clock skew either way. The caller passes the
//!   current time to [`Verifier::verify`] and that time alone is used, for
//!   the claims and for the key cache.
//!
//! Key cache, per issuer. Keys are fetched on first use. A token without
//! `kid` is accepted only from an issuer that publishes a single key. An
//! unknown `kid` triggers a refetch, at most once per [`VerifierOptions::refetch_min_interval`].
//! Once keys are half of [`VerifierOptions::key_max_age`] old, a refresh
//! runs in the background while the cached keys go on serving. If refreshes
//! fail, the keys stay usable up to `key_max_age` after the last successful
//! fetch; after that the issuer's tokens are refused (`jwks_unavailable`)
//! until its JWKS can be fetched again. A clock that jumps backwards counts
//! as elapsed time, so it causes a refresh rather than a stuck cache.
//! Verification of a token whose key is cached takes a read lock for the
//! time of an `Arc` clone and does no I/O.
//!
//! Key and discovery URLs must be `https`, or `http` on a loopback address
//! (the dev issuer, tests). Redirects are not followed.
//!
//! [`dev::DevIssuer`] is airlock's own issuer (`airlock-dev`): a signing key
//! in the data directory, used to mint tokens for demos and tests. Its JWKS
//! is served by the gateway and verified like any other issuer's.
//!
//! What it deliberately does not do: it caches no verified tokens (each
//! call checks the signature), parses no configuration (the binary maps the
//! config file to [`IssuerSpec`] and [`VerifierOptions`]) and serves no HTTP
//! (it only hands out the dev issuer's JWKS and discovery documents).
#![forbid(unsafe_code)]

pub mod dev;
mod jwks;
mod verifier;

pub use jwks::is_allowed_url;
#[cfg(feature = "fuzzing")]
pub use verifier::fuzzing;
pub use verifier::{IssuerSpec, JwksBearer, LEEWAY, SetupError, Verifier, VerifierOptions};

use airlock_policy::Principal;

/// Proof that a token was verified: only [`Verifier::verify`] makes one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    principal: Principal,
}

impl Authenticated {
    /// The verified caller.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The verified caller, by value.
    pub fn into_principal(self) -> Principal {
        self.principal
    }
}

/// Why a token was refused. The `Display` text is shown to the database
/// client: it never contains the token, and values taken from the token are
/// shortened and quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted")]
    ForbiddenAlgorithm(String),
    #[error("token issuer {0:?} is not trusted")]
    UnknownIssuer(String),
    #[error("token audience does not include {expected:?}")]
    WrongAudience { expected: String },
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token signing key is not published by issuer {issuer:?}")]
    UnknownKeyId { issuer: String },
    #[error("signing keys of issuer {issuer:?} cannot be fetched; try again later")]
    JwksUnavailable { issuer: String },
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
}

impl AuthError {
    /// A short snake_case label, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::ForbiddenAlgorithm(_) => "forbidden_alg",
            AuthError::UnknownIssuer(_) => "unknown_issuer",
            AuthError::WrongAudience { .. } => "wrong_audience",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKeyId { .. } => "unknown_kid",
            AuthError::JwksUnavailable { .. } => "jwks_unavailable",
            AuthError::MissingClaim(_) => "missing_claim",
        }
    }
}
