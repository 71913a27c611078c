//! The built-in dev issuer, `airlock-dev`: an Ed25519 key of airlock's own,
//! for demos, tests and CI.
//!
//! The key lives in `{data_dir}/dev-issuer-key.p8` (PKCS#8 v2 DER, mode
//! 0600) and is created on first use. Creation writes a private temporary
//! file and hard-links it into place, which fails if the key already exists:
//! of several processes racing, the first link wins and the others read its
//! key. The key id is the key's RFC 7638 thumbprint.
//!
//! Tokens minted here are verified like any other: the gateway serves
//! [`DevIssuer::jwks`] over HTTP and configures the [`Verifier`] with
//! [`DevIssuer::issuer_spec`] pointing at it. `airlock-dev` is not a URL, so
//! its JWKS location is always given, never discovered.
//!
//! [`Verifier`]: crate::Verifier

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::IssuerSpec;

/// The `iss` of dev tokens.
pub const ISSUER: &str = "airlock-dev";
/// The issuer name dev principals carry.
pub const NAME: &str = "dev";
/// Where the HTTP listener serves the dev issuer's keys, its login page
/// and its token endpoint.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const AUTHORIZE_PATH: &str = "/dev/authorize";
pub const TOKEN_PATH: &str = "/dev/token";
/// The key file, in the data directory.
pub const KEY_FILE: &str = "dev-issuer-key.p8";

/// Why the dev issuer's key cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIssuerError {
    #[error("dev issuer key {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("dev issuer key {} is not an Ed25519 PKCS#8 DER key", path.display())]
    InvalidKey { path: PathBuf },
}

/// What a dev token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    pub subject: String,
    pub groups: Vec<String>,
    pub ttl: Duration,
    /// `act.sub` (RFC 8693): the party acting (an agent) for the subject
    /// (the human on whose behalf it acts).
    pub act: Option<String>,
    pub audience: String,
}

/// The dev issuer's signing key.
pub struct DevIssuer {
    key: Ed25519KeyPair,
    kid: String,
}

impl DevIssuer {
    /// Loads the key from `data_dir`, creating the directory and the key if
    /// they do not exist.
    pub fn open_or_create(data_dir: impl AsRef<Path>) -> Result<DevIssuer, DevIssuerError> {
        let data_dir = data_dir.as_ref();
        let path = data_dir.join(KEY_FILE);
        let io_error = |source| DevIssuerError::Io {
            path: path.clone(),
            source,
        };
        let pkcs8 = match fs::read(&path) {
            Ok(pkcs8) => pkcs8,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir).map_err(io_error)?;
                create_key(&path).map_err(io_error)?
            }
            Err(error) => return Err(io_error(error)),
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| DevIssuerError::InvalidKey { path: path.clone() })?;
        let thumbprint_input = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            public_x(&key)
        );
        let kid = URL_SAFE_NO_PAD.encode(digest(&SHA256, thumbprint_input.as_bytes()));
        Ok(DevIssuer { key, kid })
    }

    /// The spec to verify dev tokens with, given where the gateway serves
    /// [`DevIssuer::jwks`].
    pub fn issuer_spec(jwks_uri: impl Into<String>, audience: impl Into<String>) -> IssuerSpec {
        IssuerSpec {
            jwks_uri: Some(jwks_uri.into()),
            ..IssuerSpec::new(NAME, ISSUER, audience)
        }
    }

    /// The key id (RFC 7638 thumbprint) in the tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A signed token (EdDSA), valid from `now` for `ttl`, with a fresh `jti`.
    pub fn mint(&self, request: MintRequest, now: SystemTime) -> String {
        self.mint_with(request, now, None)
    }

    /// An OpenID Connect ID token: [`DevIssuer::mint`]'s claims, for the
    /// client `request.audience`, with the authorization request's `nonce`.
    pub fn mint_id_token(&self, request: MintRequest, nonce: &str, now: SystemTime) -> String {
        self.mint_with(request, now, Some(nonce))
    }

    fn mint_with(&self, request: MintRequest, now: SystemTime, nonce: Option<&str>) -> String {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut claims = json!({
            "iss": ISSUER,
            "sub": request.subject,
            "aud": request.audience,
            "iat": iat,
            "nbf": iat,
            "exp": iat.saturating_add(request.ttl.as_secs()),
            "jti": uuid::Uuid::now_v7().to_string(),
            "groups": request.groups,
        });
        if let Some(act) = request.act {
            claims["act"] = json!({ "sub": act });
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(message.as_bytes()));
        format!("{message}.{signature}")
    }

    /// The public key as a JWK set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": public_x(&self.key),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }] })
    }

    /// An OpenID Connect discovery document for the dev issuer. Its login
    /// endpoints (`/dev/authorize`, `/dev/token`, for the console) are
    /// served next to the JWKS.
    pub fn discovery_document(&self, jwks_uri: &str) -> Value {
        let base = jwks_uri.trim_end_matches(JWKS_PATH);
        json!({
            "issuer": ISSUER,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": format!("{base}{AUTHORIZE_PATH}"),
            "token_endpoint": format!("{base}{TOKEN_PATH}"),
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "groups", "act", "nonce"],
        })
    }
}

fn public_x(key: &Ed25519KeyPair) -> String {
    URL_SAFE_NO_PAD.encode(key.public_key())
}

/// Writes a new key unless `path` exists, and returns the key at `path`.
fn create_key(path: &Path) -> io::Result<Vec<u8>> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| io::Error::other("cannot generate an Ed25519 key"))?;
    let temp = path.with_extension(format!("{}.tmp", uuid::Uuid::now_v7()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let linked = file
        .write_all(pkcs8.as_ref())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&temp, path));
    fs::remove_file(&temp)?;
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(pkcs8.as_ref().to_vec())
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => fs::read(path),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn the_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = DevIssuer::open_or_create(&data_dir).unwrap();
        let second = DevIssuer::open_or_create(&data_dir).unwrap();
        assert_eq!(first.kid(), second.kid());
        assert_eq!(first.jwks(), second.jwks());
        let mode = fs::metadata(data_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(&data_dir).unwrap().count(),
            1,
            "no temporary file is left behind"
        );
    }

    #[test]
    fn racing_first_uses_end_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let racers = 8;
        let barrier = Arc::new(Barrier::new(racers));
        let kids: Vec<String> = (0..racers)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let data_dir = dir.path().to_owned();
                std::thread::spawn(move || {
                    barrier.wait();
                    DevIssuer::open_or_create(data_dir)
                        .unwrap()
                        .kid()
                        .to_owned()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect();
        assert!(kids.iter().all(|kid| *kid == kids[0]), "{kids:?}");
        assert_eq!(
            DevIssuer::open_or_create(dir.path()).unwrap().kid(),
            kids[0]
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        assert!(matches!(
            DevIssuer::open_or_create(dir.path()),
            Err(DevIssuerError::InvalidKey { .. })
        ));
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::open_or_create(dir.path()).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(issuer.jwks()["keys"][0].clone()).unwrap();
        assert_eq!(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
            issuer.kid()
        );
    }
}
