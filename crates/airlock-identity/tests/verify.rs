//! Verification end to end: real signed tokens, keys served over HTTP by a
//! fake OIDC provider on 127.0.0.1.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_identity::dev::{self, DevIssuer, MintRequest};
use airlock_identity::{AuthError, IssuerSpec, SetupError, Verifier, VerifierOptions};
use airlock_policy::Principal;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The tests' "now", in seconds since the epoch.
const T0: u64 = 1_700_000_000;
const AUDIENCE: &str = "airlock";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exactly this header and these claims.
fn jwt(header: Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(message.as_bytes());
    format!("{message}.{}", b64(signature))
}

static RSA: LazyLock<RsaKeyPair> =
    LazyLock::new(|| RsaKeyPair::generate(KeySize::Rsa2048).unwrap());
static EC: LazyLock<EcdsaKeyPair> =
    LazyLock::new(|| EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap());

fn rsa_jwk() -> Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(RSA.public_key());
    json!({ "kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(public.n), "e": b64(public.e) })
}

fn ec_jwk() -> Value {
    let point = EC.public_key().as_ref();
    json!({ "kty": "EC", "kid": "ec-2", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]) })
}

fn rs256(message: &[u8]) -> Vec<u8> {
    let mut signature = vec![0; RSA.public_modulus_len()];
    RSA.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut signature,
    )
    .unwrap();
    signature
}

fn es256(message: &[u8]) -> Vec<u8> {
    EC.sign(&SystemRandom::new(), message)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A fake OpenID provider: discovery and JWKS under `/realm/`.
struct Idp {
    base: String,
    state: Arc<IdpState>,
}

#[derive(Default)]
struct IdpState {
    discovery: Mutex<Value>,
    jwks: Mutex<Value>,
    jwks_hits: AtomicUsize,
    down: AtomicBool,
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState::default());
        let app = Router::new()
            .route(
                "/realm/.well-known/openid-configuration",
                get(|State(idp): State<Arc<IdpState>>| async move {
                    Json(idp.discovery.lock().unwrap().clone())
                }),
            )
            .route(
                "/realm/certs",
                get(|State(idp): State<Arc<IdpState>>| async move {
                    idp.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    if idp.down.load(Ordering::SeqCst) {
                        Err(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok(Json(idp.jwks.lock().unwrap().clone()))
                    }
                }),
            )
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp { base, state }
    }

    /// With a trailing slash, which discovery must drop.
    fn issuer(&self) -> String {
        format!("{}/realm/", self.base)
    }

    fn jwks_uri(&self) -> String {
        format!("{}/realm/certs", self.base)
    }

    fn serve_keys(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    fn serve_discovery(&self, issuer: &str) {
        *self.state.discovery.lock().unwrap() = json!({
            "issuer": issuer,
            "jwks_uri": self.jwks_uri(),
            "authorization_endpoint": format!("{}/realm/auth", self.base),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// An external issuer `corp`, found by discovery, signing with RS256 `rsa-1`.
struct Corp {
    idp: Idp,
    verifier: Verifier,
}

impl Corp {
    async fn start() -> Corp {
        Corp::with_groups_claim("groups").await
    }

    async fn with_groups_claim(groups_claim: &str) -> Corp {
        let idp = Idp::start().await;
        idp.serve_discovery(&idp.issuer());
        idp.serve_keys(json!({ "keys": [rsa_jwk()] }));
        let spec = IssuerSpec {
            groups_claim: groups_claim.to_owned(),
            ..IssuerSpec::new("corp", idp.issuer(), AUDIENCE)
        };
        let verifier = Verifier::new(vec![spec], VerifierOptions::default()).unwrap();
        Corp { idp, verifier }
    }

    /// Valid claims, changed by `changes`: a `null` removes the claim.
    fn claims(&self, changes: Value) -> Value {
        let mut claims = json!({
            "iss": self.idp.issuer(),
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": T0,
            "exp": T0 + 300,
            "jti": "token-1",
        });
        let object = claims.as_object_mut().unwrap();
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => object.remove(name),
                value => object.insert(name.clone(), value.clone()),
            };
        }
        claims
    }

    fn token(&self, changes: Value) -> String {
        jwt(
            json!({ "alg": "RS256", "kid": "rsa-1" }),
            &self.claims(changes),
            rs256,
        )
    }

    async fn accept(&self, token: &str, now: SystemTime) -> Principal {
        self.verifier
            .verify(token, now)
            .await
            .unwrap()
            .into_principal()
    }

    async fn refuse(&self, token: &str, now: SystemTime) -> AuthError {
        refuse(&self.verifier, token, now).await
    }
}

/// The refusal, checked not to echo the token back to the client.
async fn refuse(verifier: &Verifier, token: &str, now: SystemTime) -> AuthError {
    let error = verifier.verify(token, now).await.unwrap_err();
    let shown = error.to_string();
    assert!(
        token
            .split('.')
            .all(|part| part.len() < 8 || !shown.contains(part)),
        "{shown}"
    );
    error
}

#[tokio::test]
async fn a_dev_token_verifies_through_the_served_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevIssuer::open_or_create(dir.path()).unwrap();
    let idp = Idp::start().await;
    idp.serve_keys(dev.jwks());
    let verifier = Verifier::new(
        vec![DevIssuer::issuer_spec(idp.jwks_uri(), AUDIENCE)],
        VerifierOptions::default(),
    )
    .unwrap();
    let mint = MintRequest {
        subject: "devin".into(),
        groups: vec!["ai-agents".into(), "ci".into()],
        ttl: Duration::from_secs(15 * 60),
        act: Some("alice".into()),
        audience: AUDIENCE.into(),
    };
    let token = dev.mint(mint, at(T0));

    let authenticated = verifier.verify(&token, at(T0 + 5)).await.unwrap();
    let principal = authenticated.principal();
    assert_eq!(principal.issuer_name, dev::NAME);
    assert_eq!(principal.issuer, "airlock-dev");
    assert_eq!(principal.subject, "devin");
    assert_eq!(principal.groups, ["ai-agents", "ci"]);
    assert_eq!(principal.act.as_deref(), Some("alice"));
    assert_eq!(principal.expires_at, at(T0 + 15 * 60));
    assert!(principal.token_id.is_some());

    assert_eq!(
        refuse(&verifier, &token, at(T0 + 16 * 60)).await,
        AuthError::Expired
    );
    assert_eq!(idp.jwks_hits(), 1);
    assert_eq!(
        dev.discovery_document(&idp.jwks_uri())["issuer"],
        "airlock-dev"
    );
}

#[tokio::test]
async fn an_rs256_token_verifies_with_discovered_keys() {
    let corp = Corp::start().await;
    let token = corp.token(json!({ "aud": ["other", AUDIENCE], "groups": ["dba", "ops"] }));
    let principal = corp.accept(&token, at(T0)).await;
    // Every claim is kept, for `claims` matchers.
    assert_eq!(
        principal.claims.0.get("aud"),
        Some(&json!(["other", AUDIENCE]))
    );
    assert_eq!(principal.claims.0.get("sub"), Some(&json!("alice")));
    assert_eq!(
        principal,
        Principal {
            claims: principal.claims.clone(),
            act_chain: Vec::new(),
            issuer_name: "corp".into(),
            issuer: corp.idp.issuer(),
            subject: "alice".into(),
            groups: vec!["dba".into(), "ops".into()],
            act: None,
            token_id: Some("token-1".into()),
            expires_at: at(T0 + 300),
        }
    );
    corp.accept(&token, at(T0 + 1)).await;
    assert_eq!(corp.idp.jwks_hits(), 1, "keys are cached");
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let corp = Corp::start().await;
    let valid = corp.token(json!({}));
    let (header, rest) = valid.split_once('.').unwrap();
    for token in [
        String::new(),
        "not-a-jwt".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.e30.sig".into(),
        format!("{header}.!!!.sig"),
        format!("{header}.{}.sig", b64("[1, 2]")),
        format!("{}.{rest}", b64("{}")),
        "a".repeat(20_000),
    ] {
        let error = corp.refuse(&token, at(T0)).await;
        assert!(
            matches!(error, AuthError::Malformed(_)),
            "{token:.40}: {error:?}"
        );
        assert_eq!(error.reason(), "malformed");
    }
    assert_eq!(corp.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn expiry_allows_sixty_seconds_of_skew() {
    let corp = Corp::start().await;
    let token = corp.token(json!({ "exp": T0 - 30 }));
    assert_eq!(corp.accept(&token, at(T0)).await.expires_at, at(T0 - 30));
    let token = corp.token(json!({ "exp": T0 - 61 }));
    let error = corp.refuse(&token, at(T0)).await;
    assert_eq!(error, AuthError::Expired);
    assert_eq!(error.reason(), "expired");
}

#[tokio::test]
async fn not_before_allows_sixty_seconds_of_skew() {
    let corp = Corp::start().await;
    corp.accept(&corp.token(json!({ "nbf": T0 + 30 })), at(T0))
        .await;
    let error = corp
        .refuse(&corp.token(json!({ "nbf": T0 + 120 })), at(T0))
        .await;
    assert_eq!(error, AuthError::NotYetValid);
    assert_eq!(error.reason(), "not_yet_valid");
}

#[tokio::test]
async fn an_unknown_issuer_is_refused() {
    let corp = Corp::start().await;
    let error = corp
        .refuse(
            &corp.token(json!({ "iss": "https://evil.example/" })),
            at(T0),
        )
        .await;
    assert_eq!(
        error,
        AuthError::UnknownIssuer("https://evil.example/".into())
    );
    assert_eq!(error.reason(), "unknown_issuer");
    let issuer_without_slash = corp.idp.issuer().trim_end_matches('/').to_owned();
    let error = corp
        .refuse(&corp.token(json!({ "iss": issuer_without_slash })), at(T0))
        .await;
    assert_eq!(error.reason(), "unknown_issuer", "issuers match exactly");
    assert_eq!(corp.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let corp = Corp::start().await;
    for aud in [json!("other"), json!(["other", "airlock-dev"])] {
        let error = corp
            .refuse(&corp.token(json!({ "aud": aud })), at(T0))
            .await;
        assert_eq!(
            error,
            AuthError::WrongAudience {
                expected: AUDIENCE.into()
            }
        );
        assert_eq!(error.reason(), "wrong_audience");
    }
}

#[tokio::test]
async fn alg_none_is_refused_before_any_key_lookup() {
    let corp = Corp::start().await;
    let claims = corp.claims(json!({}));
    for alg in ["none", "None", "NONE"] {
        let token = jwt(json!({ "alg": alg, "kid": "rsa-1" }), &claims, |_| {
            Vec::new()
        });
        let error = corp.refuse(&token, at(T0)).await;
        assert_eq!(error, AuthError::ForbiddenAlgorithm(alg.into()));
        assert_eq!(error.reason(), "forbidden_alg");
    }
    assert_eq!(corp.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    let corp = Corp::start().await;
    let public_key = RSA.public_key().as_ref().to_vec();
    let jwk = rsa_jwk().to_string();
    for (alg, hmac) in [
        ("HS256", aws_lc_rs::hmac::HMAC_SHA256),
        ("HS512", aws_lc_rs::hmac::HMAC_SHA512),
    ] {
        for secret in [public_key.as_slice(), jwk.as_bytes()] {
            let token = jwt(
                json!({ "alg": alg, "kid": "rsa-1" }),
                &corp.claims(json!({})),
                |message| {
                    aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(hmac, secret), message)
                        .as_ref()
                        .to_vec()
                },
            );
            assert_eq!(
                corp.refuse(&token, at(T0)).await,
                AuthError::ForbiddenAlgorithm(alg.into())
            );
        }
    }
    assert_eq!(corp.idp.jwks_hits(), 0, "refused before any key lookup");
}

#[tokio::test]
async fn a_key_of_another_type_than_the_alg_is_refused() {
    let corp = Corp::start().await;
    let token = jwt(
        json!({ "alg": "ES256", "kid": "rsa-1" }),
        &corp.claims(json!({})),
        es256,
    );
    assert_eq!(
        corp.refuse(&token, at(T0)).await,
        AuthError::ForbiddenAlgorithm("ES256".into())
    );
    let token = jwt(
        json!({ "alg": "PS256", "kid": "rsa-1" }),
        &corp.claims(json!({})),
        rs256,
    );
    assert_eq!(
        corp.refuse(&token, at(T0)).await,
        AuthError::ForbiddenAlgorithm("PS256".into()),
        "the JWK pins RS256"
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let corp = Corp::start().await;
    let token = corp.token(json!({}));
    let (message, signature) = token.rsplit_once('.').unwrap();
    let (header, _) = message.split_once('.').unwrap();
    let forged_claims = b64(corp.claims(json!({ "sub": "root" })).to_string());
    let forged = format!("{header}.{forged_claims}.{signature}");
    let error = corp.refuse(&forged, at(T0)).await;
    assert_eq!(error, AuthError::BadSignature);
    assert_eq!(error.reason(), "bad_signature");
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let corp = Corp::start().await;
    corp.accept(&corp.token(json!({})), at(T0)).await;
    assert_eq!(corp.idp.jwks_hits(), 1);

    let unknown = jwt(
        json!({ "alg": "RS256", "kid": "rsa-9" }),
        &corp.claims(json!({})),
        rs256,
    );
    let error = corp.refuse(&unknown, at(T0 + 11)).await;
    assert_eq!(
        error,
        AuthError::UnknownKeyId {
            issuer: "corp".into()
        }
    );
    assert_eq!(error.reason(), "unknown_kid");
    assert_eq!(corp.idp.jwks_hits(), 2, "an unknown kid refetches");
    for later in [12, 15, 20] {
        assert_eq!(
            corp.refuse(&unknown, at(T0 + later)).await.reason(),
            "unknown_kid"
        );
    }
    assert_eq!(corp.idp.jwks_hits(), 2, "within 10 s, no second refetch");
    corp.refuse(&unknown, at(T0 + 21)).await;
    assert_eq!(corp.idp.jwks_hits(), 3);
}

#[tokio::test]
async fn a_rotated_key_verifies_after_a_refetch() {
    let corp = Corp::start().await;
    let old = corp.token(json!({}));
    corp.accept(&old, at(T0)).await;
    corp.idp.serve_keys(json!({ "keys": [ec_jwk()] }));
    let new = jwt(
        json!({ "alg": "ES256", "kid": "ec-2" }),
        &corp.claims(json!({ "sub": "bob" })),
        es256,
    );
    assert_eq!(corp.accept(&new, at(T0 + 11)).await.subject, "bob");
    assert_eq!(corp.idp.jwks_hits(), 2);
    assert_eq!(
        corp.refuse(&old, at(T0 + 12)).await.reason(),
        "unknown_kid",
        "the old key is gone"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_fails_closed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks_uri = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let dev = DevIssuer::open_or_create(dir.path()).unwrap();
    let verifier = Verifier::new(
        vec![DevIssuer::issuer_spec(jwks_uri, AUDIENCE)],
        VerifierOptions::default(),
    )
    .unwrap();
    let token = dev.mint(
        MintRequest {
            subject: "devin".into(),
            groups: vec![],
            ttl: Duration::from_secs(60),
            act: None,
            audience: AUDIENCE.into(),
        },
        at(T0),
    );
    let error = refuse(&verifier, &token, at(T0)).await;
    assert_eq!(
        error,
        AuthError::JwksUnavailable {
            issuer: "dev".into()
        }
    );
    assert_eq!(error.reason(), "jwks_unavailable");
    assert_eq!(
        refuse(&verifier, &token, at(T0 + 1)).await.reason(),
        "jwks_unavailable"
    );
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let corp = Corp::start().await;
    corp.idp.serve_discovery("https://evil.example/realm/");
    assert_eq!(
        corp.refuse(&corp.token(json!({})), at(T0)).await.reason(),
        "jwks_unavailable"
    );
    assert_eq!(corp.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn cached_keys_outlive_failed_refreshes_up_to_their_max_age() {
    let corp = Corp::start().await;
    let token = corp.token(json!({ "exp": T0 + 7200 }));
    corp.accept(&token, at(T0)).await;
    corp.idp.set_down(true);
    // Past half the max age: served from the cache, refreshed in the background.
    corp.accept(&token, at(T0 + 31 * 60)).await;
    // Past the max age: the failed refresh leaves nothing usable.
    assert_eq!(
        corp.refuse(&token, at(T0 + 61 * 60)).await.reason(),
        "jwks_unavailable"
    );
    assert_eq!(corp.idp.jwks_hits(), 3);
    corp.idp.set_down(false);
    corp.accept(&token, at(T0 + 62 * 60)).await;
    assert_eq!(corp.idp.jwks_hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_uses_fetch_the_keys_once() {
    let corp = Arc::new(Corp::start().await);
    let token = Arc::new(corp.token(json!({})));
    let verifications: Vec<_> = (0..16)
        .map(|_| {
            let (corp, token) = (Arc::clone(&corp), Arc::clone(&token));
            tokio::spawn(async move { corp.verifier.verify(&token, at(T0)).await })
        })
        .collect();
    for verification in verifications {
        verification.await.unwrap().unwrap();
    }
    assert_eq!(corp.idp.jwks_hits(), 1);
}

#[tokio::test]
async fn groups_come_from_a_string_an_array_or_a_nested_path() {
    let corp = &Corp::start().await;
    let groups = |changes| async move { corp.accept(&corp.token(changes), at(T0)).await.groups };
    assert_eq!(groups(json!({ "groups": "dba" })).await, ["dba"]);
    assert_eq!(
        groups(json!({ "groups": ["dba", "ops"] })).await,
        ["dba", "ops"]
    );
    assert!(groups(json!({})).await.is_empty());
    for invalid in [json!(7), json!(["dba", 7]), json!({ "dba": true })] {
        let error = corp
            .refuse(&corp.token(json!({ "groups": invalid })), at(T0))
            .await;
        assert!(matches!(error, AuthError::Malformed(_)), "{error:?}");
    }

    let keycloak = Corp::with_groups_claim("realm_access.roles").await;
    let token = keycloak
        .token(json!({ "realm_access": { "roles": ["admin", "dba"] }, "groups": ["ignored"] }));
    assert_eq!(
        keycloak.accept(&token, at(T0)).await.groups,
        ["admin", "dba"]
    );
    let token = keycloak.token(json!({ "realm_access": { "other": [] } }));
    assert!(keycloak.accept(&token, at(T0)).await.groups.is_empty());

    let auth0 = Corp::with_groups_claim("https://example.com/groups").await;
    let token = auth0.token(json!({ "https://example.com/groups": ["dba"] }));
    assert_eq!(
        auth0.accept(&token, at(T0)).await.groups,
        ["dba"],
        "a dotted claim name matches first"
    );
}

#[tokio::test]
async fn act_sub_names_the_human_behind_an_agent() {
    let corp = Corp::start().await;
    let token = corp.token(json!({ "sub": "agent-7", "act": { "sub": "alice" } }));
    let principal = corp.accept(&token, at(T0)).await;
    assert_eq!(
        (principal.subject.as_str(), principal.act.as_deref()),
        ("agent-7", Some("alice"))
    );
    let error = corp
        .refuse(&corp.token(json!({ "act": "alice" })), at(T0))
        .await;
    assert!(matches!(error, AuthError::Malformed(_)), "{error:?}");
}

#[tokio::test]
async fn required_claims_must_be_present() {
    let corp = Corp::start().await;
    for claim in ["exp", "aud", "sub"] {
        let error = corp
            .refuse(&corp.token(json!({ claim: null })), at(T0))
            .await;
        assert_eq!(error, AuthError::MissingClaim(claim));
        assert_eq!(error.reason(), "missing_claim");
    }
    assert_eq!(
        corp.refuse(&corp.token(json!({ "iss": null })), at(T0))
            .await,
        AuthError::MissingClaim("iss")
    );
    let error = corp
        .refuse(&corp.token(json!({ "exp": "tomorrow" })), at(T0))
        .await;
    assert!(matches!(error, AuthError::Malformed(_)), "{error:?}");
}

#[test]
fn setup_refuses_plain_http_and_duplicates() {
    let insecure = IssuerSpec::new("corp", "http://login.example.com", AUDIENCE);
    assert!(matches!(
        Verifier::new(vec![insecure], VerifierOptions::default()),
        Err(SetupError::InsecureUrl { .. })
    ));
    let loopback = IssuerSpec::new("local", "http://127.0.0.1:9/", AUDIENCE);
    let ipv6 = IssuerSpec::new("local6", "http://[::1]:9/", AUDIENCE);
    let https = IssuerSpec::new("corp", "https://login.example.com", AUDIENCE);
    Verifier::new(
        vec![loopback, ipv6, https.clone()],
        VerifierOptions::default(),
    )
    .unwrap();
    let twin = IssuerSpec::new("corp-2", "https://login.example.com", AUDIENCE);
    assert!(matches!(
        Verifier::new(vec![https, twin], VerifierOptions::default()),
        Err(SetupError::DuplicateIssuer(_))
    ));
}

#[tokio::test]
async fn a_nested_act_claim_is_the_whole_delegation_chain() {
    let corp = Corp::start().await;
    // RFC 8693 §4.1: alice's request, made by agent-2, which agent-1 asked.
    let token = corp.token(json!({
        "act": {"sub": "agent-2", "act": {"sub": "agent-1"}}
    }));
    let p = corp.accept(&token, at(T0)).await;
    assert_eq!(p.subject, "alice");
    assert_eq!(p.act.as_deref(), Some("agent-2"));
    assert_eq!(p.act_chain, ["agent-2", "agent-1"]);
    assert_eq!(
        p.parties().collect::<Vec<_>>(),
        ["alice", "agent-2", "agent-1"]
    );
    // A malformed link anywhere, or a chain too long, refuses the token.
    let mut deep = json!({"sub": "a0"});
    for i in 1..10 {
        deep = json!({"sub": format!("a{i}"), "act": deep});
    }
    for act in [
        json!({"sub": "a", "act": {"name": "b"}}),
        json!("agent"),
        deep,
    ] {
        let token = corp.token(json!({ "act": act }));
        assert!(
            matches!(corp.refuse(&token, at(T0)).await, AuthError::Malformed(_)),
            "{act}"
        );
    }
}
