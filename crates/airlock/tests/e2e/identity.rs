//! Machine identities end to end: two issuers that speak the real formats,
//! served over TLS by CAs of their own on 127.0.0.1 (no cluster and no
//! GitHub are reachable here):
//! - a Kubernetes API server's service-account issuer: OIDC discovery and
//!   JWKS that answer only with the gateway's own bearer token (read from a
//!   file that rotates), tokens with the claim layout of projected
//!   service-account tokens (`kubernetes.io.namespace`, …);
//! - GitHub Actions' issuer: tokens with its claim set, keys at a
//!   `jwks_uri` of their own.
//!
//! Access rules match by subject and claims; near misses are refused with
//! 28000 at login.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{self, Gateway};

const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An issuer's signing key, with its `kid`.
struct SigningKey {
    kid: String,
    key: EcdsaKeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "use": "sig",
               "x": b64(&point[1..33]), "y": b64(&point[33..])})
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = self
            .key
            .sign(&SystemRandom::new(), message.as_bytes())
            .unwrap();
        format!("{message}.{}", b64(signature.as_ref()))
    }
}

/// What an issuer fixture serves, changed by the test as it goes.
struct Served {
    /// The discovery document's `issuer` (empty: no discovery served).
    issuer: String,
    jwks: Value,
    /// The bearer token its endpoints require, if any.
    bearer: Option<String>,
    /// Requests refused for a missing or wrong bearer token.
    unauthorized: usize,
}

/// A CA of its own and a TLS server it certifies for 127.0.0.1, serving
/// `/.well-known/openid-configuration` and `/openid/v1/jwks`.
struct IssuerFixture {
    addr: SocketAddr,
    ca_pem: String,
    served: Arc<Mutex<Served>>,
}

impl IssuerFixture {
    async fn start() -> IssuerFixture {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &*ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Served {
            issuer: String::new(),
            jwks: json!({"keys": []}),
            bearer: None,
            unauthorized: 0,
        }));
        let state = Arc::clone(&served);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = answer(tls, addr, &state).await;
                    }
                });
            }
        });
        IssuerFixture {
            addr,
            ca_pem: ca.pem(),
            served,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap());
    }

    fn unauthorized(&self) -> usize {
        self.served.lock().unwrap().unauthorized
    }
}

/// One HTTP/1.1 request on a TLS connection, answered and closed.
async fn answer(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    addr: SocketAddr,
    served: &Mutex<Served>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tls.read(&mut byte).await? == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let authorization = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (status, body) = {
        let mut s = served.lock().unwrap();
        let authorized = s
            .bearer
            .as_ref()
            .is_none_or(|b| authorization == format!("Bearer {b}"));
        if !authorized {
            s.unauthorized += 1;
            ("401 Unauthorized", json!({"error": "unauthorized"}))
        } else if path == "/.well-known/openid-configuration" && !s.issuer.is_empty() {
            (
                "200 OK",
                json!({"issuer": s.issuer, "jwks_uri": format!("https://{addr}/openid/v1/jwks"),
                       "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                       "id_token_signing_alg_values_supported": ["ES256", "RS256"]}),
            )
        } else if path == "/openid/v1/jwks" {
            ("200 OK", s.jwks.clone())
        } else {
            ("404 Not Found", json!({}))
        }
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A projected service-account token's claims, as a Kubernetes API server
/// mints them for `audience`.
fn service_account(issuer: &str, namespace: &str, name: &str) -> Value {
    let t = now();
    json!({
        "aud": ["airlock"],
        "exp": t + 3600,
        "iat": t,
        "iss": issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": "6d1a3c8e-0000-4000-8000-000000000001"},
            "pod": {"name": format!("{name}-7f9c6"), "uid": "6d1a3c8e-0000-4000-8000-000000000002"},
            "serviceaccount": {"name": name, "uid": "6d1a3c8e-0000-4000-8000-000000000003"}
        },
        "nbf": t,
        "sub": format!("system:serviceaccount:{namespace}:{name}")
    })
}

/// A GitHub Actions OIDC token's claims for a job of `repository` on
/// `git_ref` (a push), deploying to `environment` when given.
fn github_actions(repository: &str, git_ref: &str, environment: Option<&str>) -> Value {
    let t = now();
    let sub = match environment {
        Some(env) => format!("repo:{repository}:environment:{env}"),
        None if git_ref.starts_with("refs/pull/") => format!("repo:{repository}:pull_request"),
        None => format!("repo:{repository}:ref:{git_ref}"),
    };
    let (owner, _) = repository.split_once('/').unwrap();
    let mut claims = json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": sub,
        "aud": "airlock",
        "ref": git_ref,
        "sha": "d6e7a5b2c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6",
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": "1000",
        "run_id": "9000000001",
        "run_number": "42",
        "run_attempt": "1",
        "repository_visibility": "private",
        "repository_id": "2000",
        "actor_id": "3000",
        "actor": "octocat",
        "workflow": "migrate",
        "head_ref": "",
        "base_ref": "",
        "event_name": if git_ref.starts_with("refs/pull/") { "pull_request" } else { "push" },
        "ref_protected": "true",
        "ref_type": "branch",
        "workflow_ref": format!("{repository}/.github/workflows/migrate.yml@{git_ref}"),
        "workflow_sha": "d6e7a5b2c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6",
        "job_workflow_ref": format!("{repository}/.github/workflows/migrate.yml@{git_ref}"),
        "job_workflow_sha": "d6e7a5b2c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6",
        "runner_environment": "github-hosted",
        "iss": GITHUB,
        "nbf": t,
        "exp": t + 300,
        "iat": t
    });
    if let Some(env) = environment {
        claims["environment"] = json!(env);
    }
    claims
}

/// Logs in over the wire; `Ok(())` once ready, or the error's SQLSTATE and
/// message.
async fn login(gw: &Gateway, user: &str, token: &str) -> Result<(), (String, String)> {
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    s.write_all(&common::startup_message(&[
        ("user", user),
        ("database", "test"),
    ]))
    .await
    .unwrap();
    let mut sent = false;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), common::read_message(&mut s))
            .await
            .expect("the gateway answers")
            .expect("a message");
        match m.tag {
            b'R' if !sent => {
                s.write_all(&common::password_message(token)).await.unwrap();
                sent = true;
            }
            b'E' => {
                return Err((
                    m.field(b'C').unwrap_or_default(),
                    m.field(b'M').unwrap_or_default(),
                ));
            }
            b'Z' => return Ok(()),
            _ => {}
        }
    }
}

static K8S_KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::new("k8s-1"));
static K8S_KEY_ROTATED: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::new("k8s-2"));
static GH_KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::new("gh-1"));

#[tokio::test(flavor = "multi_thread")]
async fn service_account_and_github_actions_tokens_are_matched_by_claims() {
    let cluster = IssuerFixture::start().await;
    let github = IssuerFixture::start().await;
    let other_ca = IssuerFixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let sa_token = write("jwks-token", "gateway-sa-token-1\n");
    let cluster_ca = write("cluster-ca.pem", &cluster.ca_pem);
    let github_ca = write("github-ca.pem", &github.ca_pem);
    let wrong_ca = write("wrong-ca.pem", &other_ca.ca_pem);
    cluster.set(|s| {
        s.issuer = cluster.url();
        s.jwks = json!({"keys": [K8S_KEY.jwk()]});
        s.bearer = Some("gateway-sa-token-1".into());
    });
    github.set(|s| s.jwks = json!({"keys": [GH_KEY.jwk()]}));

    let yaml = format!(
        r#"listen:
  postgres: 127.0.0.1:0
  http: 127.0.0.1:0
identity:
  dev_issuer: true
  issuers:
    - name: cluster
      issuer: {cluster}
      audience: airlock
      ca: {{file: {cluster_ca}}}
      jwks_auth: {{bearer: {{file: {sa_token}}}}}
    - name: github
      issuer: {GITHUB}
      audience: airlock
      jwks_uri: {github_url}/openid/v1/jwks
      ca: {{file: {github_ca}}}
    - name: mismatched
      issuer: https://mismatched.example
      audience: airlock
      jwks_uri: {github_url}/openid/v1/jwks
      ca: {{file: {wrong_ca}}}
connections:
  test:
    upstream: {{host: 127.0.0.1, port: {port}, database: test, tls: disable}}
    roles:
      readonly: {{user: postgres}}
      admin: {{user: postgres}}
      migrator: {{user: postgres}}
access:
  - name: agents-in-cluster
    subjects: ["system:serviceaccount:agents:*"]
    claims: {{kubernetes.io.namespace: agents, kubernetes.io.serviceaccount.name: [devin, cody]}}
    connections: [test]
    roles: [readonly]
    mode: read-only
  - name: ci-migrations
    claims: {{iss: {GITHUB}, repository: acme/app, ref: refs/heads/main, environment: production}}
    connections: [test]
    roles: [admin]
  - name: ci-jit
    claims: {{iss: {GITHUB}, repository: acme/app}}
    connections: [test]
    roles: [migrator]
    jit: {{max_duration: 1h, approvers: [dba], preapprove: {{ref: refs/heads/main, environment: production}}}}
"#,
        cluster = cluster.url(),
        github_url = github.url(),
        port = common::LOCAL_PG_PORT,
    );
    let gw = Gateway::start(&yaml).await;
    let clock = gw.manual_clock();

    // A service account of the namespace: in, read-only.
    let devin = K8S_KEY.sign(&service_account(&cluster.url(), "agents", "devin"));
    assert_eq!(login(&gw, "readonly", &devin).await, Ok(()));
    assert_eq!(cluster.unauthorized(), 0, "the gateway sent its own token");
    // Near misses: another namespace, another account, a role not granted.
    for (token, user) in [
        (
            service_account(&cluster.url(), "default", "devin"),
            "readonly",
        ),
        (
            service_account(&cluster.url(), "agents", "mallory"),
            "readonly",
        ),
        (service_account(&cluster.url(), "agents", "devin"), "admin"),
    ] {
        let (code, message) = login(&gw, user, &K8S_KEY.sign(&token)).await.unwrap_err();
        assert_eq!(code, "28000", "{token}: {message}");
    }
    // A claim of the wrong type (an array where a name was expected).
    let mut odd = service_account(&cluster.url(), "agents", "devin");
    odd["kubernetes.io"]["namespace"] = json!({"name": "agents"});
    let refused = login(&gw, "readonly", &K8S_KEY.sign(&odd)).await;
    assert_eq!(refused.unwrap_err().0, "28000");

    // The CI job of main deploying to production: in, as admin.
    let main = GH_KEY.sign(&github_actions(
        "acme/app",
        "refs/heads/main",
        Some("production"),
    ));
    assert_eq!(login(&gw, "admin", &main).await, Ok(()));
    for claims in [
        github_actions("acme/app2", "refs/heads/main", Some("production")),
        github_actions("acme/app", "refs/heads/dev", Some("production")),
        github_actions("acme/app", "refs/pull/7/merge", None),
        github_actions("acme/app", "refs/heads/main", None),
    ] {
        let (code, message) = login(&gw, "admin", &GH_KEY.sign(&claims))
            .await
            .unwrap_err();
        assert_eq!(code, "28000", "{claims}: {message}");
    }
    // A token of another issuer that names the same claims is not GitHub's.
    let mut forged = github_actions("acme/app", "refs/heads/main", Some("production"));
    forged["iss"] = json!(cluster.url());
    let (code, _) = login(&gw, "admin", &K8S_KEY.sign(&forged))
        .await
        .unwrap_err();
    assert_eq!(code, "28000");

    // Keys behind a CA other than the configured one: fail closed.
    let mut mismatched = github_actions("acme/app", "refs/heads/main", Some("production"));
    mismatched["iss"] = json!("https://mismatched.example");
    let (code, message) = login(&gw, "admin", &GH_KEY.sign(&mismatched))
        .await
        .unwrap_err();
    assert_eq!(code, "28000");
    assert!(message.contains("cannot be fetched"), "{message}");

    // Just-in-time: main deploying to production is pre-approved (granted
    // at once, by the policy); another branch waits for a person.
    let request = |token: &str, timeout: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args([
                "access", "request", "test", "--role", "migrator", "--for", "10m",
            ])
            .args(["--reason", "migrate", "--wait", "--timeout", timeout])
            .args(["--server", &format!("http://{}", gw.http)])
            .env("AIRLOCK_TOKEN", token)
            .output()
            .unwrap()
    };
    let main_job = GH_KEY.sign(&github_actions(
        "acme/app",
        "refs/heads/main",
        Some("production"),
    ));
    let out = request(&main_job, "10s");
    assert!(
        out.status.success(),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(
        common::stdout(&out).contains("granted: "),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(login(&gw, "migrator", &main_job).await, Ok(()));
    let dev_job = GH_KEY.sign(&github_actions(
        "acme/app",
        "refs/heads/dev",
        Some("production"),
    ));
    let out = request(&dev_job, "1s");
    assert_eq!(out.status.code(), Some(1), "{}", common::stdout(&out));
    assert!(
        common::stdout(&out).contains("still pending"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(
        login(&gw, "migrator", &dev_job).await.unwrap_err().0,
        "28000"
    );

    // The gateway's own token rotates: the next fetch (a new signing key)
    // sends the new one, and only it is accepted from then on.
    std::fs::write(dir.path().join("jwks-token"), "gateway-sa-token-2\n").unwrap();
    cluster.set(|s| {
        s.bearer = Some("gateway-sa-token-2".into());
        s.jwks = json!({"keys": [K8S_KEY.jwk(), K8S_KEY_ROTATED.jwk()]});
    });
    clock.advance(Duration::from_secs(11));
    let rotated = K8S_KEY_ROTATED.sign(&service_account(&cluster.url(), "agents", "cody"));
    assert_eq!(login(&gw, "readonly", &rotated).await, Ok(()));
    assert_eq!(cluster.unauthorized(), 0, "the rotated token was sent");
    gw.stop().await;
}
