//! airlock's configuration file (SPEC §3): its types, loading it from YAML, checking it, resolving
//! the secrets it names, and the JSON Schema that editors validate it with.
//!
//! - Syntax errors, values of the wrong type and unknown keys are reported as
//!   `FILE:LINE:COLUMN: message`. Unknown keys are errors, never warnings: a key that airlock
//!   does not implement (such as `listen.mysql`) is rejected rather than silently
//!   ignored, so nobody believes it is enforced.
//! - Semantic rules (references between sections, listener and TLS safety, limits) are checked
//!   after parsing. Every broken rule is reported, not only the first, as `FILE: KEY: message`.
//! - Secrets are references, `{env: NAME}` or `{file: PATH}`, never inline values. They are read
//!   only when [`Config::resolve_secrets`] or [`check_file`] is called. A relative `file` path
//!   is resolved against the process's working directory.
//!
//! What this crate deliberately does not do: it does no network I/O (it neither fetches JWKS nor
//! contacts upstreams), it does not watch files or own any clock or thread (the binary polls
//! [`Config::watched_files`] and the configuration file, and reloads), and it enforces nothing:
//! it only describes the policy that other crates enforce. Files and environment variables are
//! read only by [`Config::load`], [`Config::resolve_secrets`], [`Secret`]'s `resolve_*` and
//! [`check_file`].
//!
//! [`Config`] and [`ResolvedSecrets`] are plain values without handles or interior mutability: a
//! gateway builds one immutable snapshot from the pair per load and swaps it in whole only if
//! loading succeeded, so a failed reload leaves the previous policy in force and nothing ever
//! mixes two loads.
#![forbid(unsafe_code)]

mod approvals;
mod config;
mod console;
mod error;
mod guardrails;
mod masking;
mod mcp;
mod recording;
mod secret;
mod units;
mod validate;

use std::path::Path;

pub use approvals::{Approvals, Jit, Notifications, Webhook, WebhookEvent, WebhookFormat};
pub use config::{
    AccessMode, AccessRule, BudgetCaps, Budgets, ClaimValues, ClientTls, Config, Connection,
    Identity, Issuer, JwksAuth, Limits, Listen, Log, LogFormat, OnExceed, Protocol, RoleCredential,
    StartupNotice, TlsMode, Upstream, UpstreamTls,
};
pub use console::Console;
pub use error::ConfigError;
pub use guardrails::{Guardrail, GuardrailAction, GuardrailMatch, WhereClause};
pub use masking::{MaskRule, MaskStrategy, Masking, Partial};
pub use mcp::Mcp;
pub use recording::{Api, Journal, JournalFsync, Recording, ResultSample, Store};
pub use secret::{ConnectionSecrets, ResolvedSecrets, Secret, SecretValue, TlsKeyPair};
pub use units::{ByteSize, HumanDuration, SessionLifetime};

/// `airlock policy check FILE`: reads, parses and checks the file and resolves its secrets. A
/// parse error stops there; otherwise every rule violation and then every unresolvable secret is
/// returned. Each error displays as one line.
pub fn check_file(path: impl AsRef<Path>) -> Result<Config, Vec<ConfigError>> {
    let (text, origin) = config::read(path.as_ref())?;
    let (config, mut errors) = parse_and_validate(&text, &origin)?;
    if let Err(secret_errors) = config.resolve_secrets() {
        errors.extend(secret_errors);
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// [`check_file`] on `text` (named `origin` in errors), without resolving
/// secrets: no file or environment is read. Fuzzed (`fuzz/`).
pub fn check_text(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
    match parse_and_validate(text, origin)? {
        (config, errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

fn parse_and_validate(
    text: &str,
    origin: &str,
) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let config = Config::parse(text, origin)?;
    let errors = validate::validate(&config, origin);
    Ok((config, errors))
}

/// The JSON Schema (draft-07, which YAML editors support best) of the configuration file.
pub fn json_schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Config>()
        .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn committed_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/airlock.schema.json");
        let fresh = format!("{:#}\n", json_schema());
        if std::env::var_os("AIRLOCK_BLESS").is_some_and(|v| v == "1") {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &fresh).unwrap();
        }
        let committed = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "{} is out of date with the config types; regenerate it with \
             `AIRLOCK_BLESS=1 cargo test -p airlock-config committed_schema_is_current` \
             and commit the result",
            path.display()
        );
    }

    #[test]
    fn schema_rejects_unknown_keys_and_inline_secrets() {
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["definitions"]["Listen"]["additionalProperties"],
            false
        );
        assert_eq!(
            schema["definitions"]["Approvals"]["properties"]["timeout"]["default"],
            "5m"
        );
        assert_eq!(
            schema["definitions"]["Webhook"]["properties"]["events"]["default"],
            serde_json::json!([
                "approval.requested",
                "approval.decided",
                "access.requested",
                "access.granted",
                "access.expired"
            ])
        );
        assert_eq!(schema["definitions"]["Jit"]["additionalProperties"], false);
        let secret = &schema["definitions"]["Secret"];
        let variants = secret["oneOf"].as_array().unwrap();
        assert!(variants.iter().all(|v| v["type"] == "object"), "{secret:#}");
        assert_eq!(
            schema["definitions"]["Limits"]["properties"]["max_message_size"]["default"],
            "64MiB"
        );
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new() -> Self {
            Files(tempfile::tempdir().unwrap())
        }
        fn write(&self, name: &str, content: &str) -> String {
            let path = self.0.path().join(name);
            fs::write(&path, content).unwrap();
            path.display().to_string()
        }
    }

    #[test]
    fn resolves_every_secret() {
        let files = Files::new();
        let (cert, key, ca, pw) = (
            files.write("tls.crt", "CERT\n"),
            files.write("tls.key", "KEY\n"),
            files.write("ca.pem", "CA\n"),
            files.write("pw", "s3cret\n"),
        );
        let config = files.write(
            "airlock.yaml",
            &format!(
                "listen: {{postgres: 0.0.0.0:6432}}
tls: {{cert: {{file: {cert}}}, key: {{file: {key}}}}}
identity: {{issuers: [{{name: corp, issuer: https://x/, audience: airlock}}]}}
connections:
  orders:
    upstream: {{host: db, database: orders, tls: verify-full, ca: {{file: {ca}}}}}
    roles:
      ro: {{user: ro, password: {{file: {pw}}}}}
      rw: {{user: rw, password: {{env: CARGO_PKG_NAME}}}}
      trust: {{user: trust}}
"
            ),
        );
        let loaded = check_file(&config).unwrap();
        let secrets = loaded.resolve_secrets().unwrap();
        let tls = secrets.tls.as_ref().unwrap();
        assert_eq!(
            (
                tls.cert_pem.expose().as_slice(),
                tls.key_pem.expose().as_slice()
            ),
            (&b"CERT\n"[..], &b"KEY\n"[..])
        );
        let orders = &secrets.connections["orders"];
        assert_eq!(orders.ca_pem.as_ref().unwrap().expose(), b"CA\n");
        let passwords: Vec<(&str, &str)> = orders
            .passwords
            .iter()
            .map(|(role, pw)| (role.as_str(), pw.expose().as_str()))
            .collect();
        assert_eq!(passwords, [("ro", "s3cret"), ("rw", "airlock-config")]);

        let mut want = vec![cert, key, ca, pw];
        want.sort();
        let watched: Vec<String> = loaded
            .watched_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(watched, want);
    }

    /// The approval sections of SPEC §3: approvals, JIT access, and a webhook signed with a key
    /// from the environment.
    #[test]
    fn approvals_jit_and_webhooks_parse_and_resolve() {
        let files = Files::new();
        let key = files.write("hook.key", "k3y\n");
        let config = files.write(
            "airlock.yaml",
            &format!(
                "listen: {{postgres: 127.0.0.1:6432, http: 127.0.0.1:8080}}
identity: {{dev_issuer: true}}
connections:
  orders:
    protocol: postgres
    upstream: {{host: 127.0.0.1, port: 5432, database: orders, tls: prefer}}
    roles:
      readonly: {{user: airlock_ro}}
      admin: {{user: airlock_admin}}
access:
  - name: agents-read
    groups: [ai-agents]
    connections: [orders]
    roles: [readonly]
    mode: read-only
  - name: agents-write-jit
    groups: [ai-agents]
    connections: [orders]
    roles: [admin]
    jit: {{max_duration: 1h, approvers: [dba], min_approvals: 1}}
guardrails:
  - name: review-schema-changes
    match: {{effects: [ddl, truncate]}}
    action: approve
    approvers: [dba]
approvals:
  timeout: 5m
  timeout_in_transaction: 60s
notifications:
  webhooks:
    - url: http://127.0.0.1:9000/hook
      events: [approval.requested, approval.decided, access.requested, access.granted]
      format: json
      secret: {{env: CARGO_PKG_NAME}}
    - url: https://hooks.example.com/airlock
      format: slack
    - url: https://audit.example.com/airlock
      secret: {{file: {key}}}
"
            ),
        );
        let loaded = check_file(&config).unwrap();
        assert_eq!(
            loaded.approvals,
            Approvals {
                timeout: HumanDuration(std::time::Duration::from_secs(300)),
                timeout_in_transaction: HumanDuration(std::time::Duration::from_secs(60)),
            }
        );
        assert_eq!(loaded.access[0].jit, None);
        let jit = loaded.access[1].jit.as_ref().unwrap();
        assert_eq!(
            (
                jit.max_duration.to_string(),
                &jit.approvers[..],
                jit.min_approvals
            ),
            ("1h".to_owned(), &["dba".to_owned()][..], 1)
        );
        assert_eq!(loaded.guardrails[0].min_approvals, None);
        let hooks = &loaded.notifications.webhooks;
        assert_eq!(hooks.len(), 3);
        assert_eq!(hooks[0].events, &WebhookEvent::ALL[..4]);
        assert_eq!(hooks[1].format, WebhookFormat::Slack);
        assert_eq!(hooks[2].events, WebhookEvent::ALL);
        assert_eq!(loaded.watched_files(), [std::path::PathBuf::from(&key)]);

        let secrets = loaded.resolve_secrets().unwrap();
        let keys: Vec<Option<&[u8]>> = secrets
            .webhook_secrets
            .iter()
            .map(|s| s.as_ref().map(|s| s.expose().as_slice()))
            .collect();
        assert_eq!(keys, [Some(&b"airlock-config"[..]), None, Some(b"k3y")]);
    }

    #[test]
    fn unresolvable_webhook_secrets_are_reported_by_key() {
        let files = Files::new();
        let missing = files.0.path().join("missing-key").display().to_string();
        let config = files.write(
            "airlock.yaml",
            &format!(
                "listen: {{http: 127.0.0.1:8080}}
identity: {{dev_issuer: true}}
notifications:
  webhooks:
    - {{url: 'http://127.0.0.1:9000/a', secret: {{env: AIRLOCK_CONFIG_TEST_UNSET}}}}
    - {{url: 'http://127.0.0.1:9000/b'}}
    - {{url: 'http://127.0.0.1:9000/c', secret: {{file: {missing}}}}}
"
            ),
        );
        let errors: Vec<String> = check_file(&config)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(
            errors[0],
            "notifications.webhooks[0].secret: environment variable AIRLOCK_CONFIG_TEST_UNSET is not set"
        );
        assert!(
            errors[1].starts_with(&format!(
                "notifications.webhooks[2].secret: cannot read secret file {missing}: "
            )),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn check_file_reports_rule_and_secret_errors_together() {
        let files = Files::new();
        let missing = files.0.path().join("missing-pw").display().to_string();
        let config = files.write(
            "airlock.yaml",
            &format!(
                "listen: {{postgres: 127.0.0.1:6432}}
identity: {{issuers: [{{name: corp, issuer: https://x/, audience: airlock}}]}}
connections:
  orders:
    upstream: {{host: db, database: orders}}
    roles:
      admin: {{user: a, password: {{env: AIRLOCK_CONFIG_TEST_UNSET}}}}
      ro: {{user: r, password: {{file: {missing}}}}}
access:
  - {{name: x, groups: [g], connections: [ordrs], roles: [ro]}}
"
            ),
        );
        let errors: Vec<String> = check_file(&config)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert_eq!(
            errors[0],
            format!("{config}: access[0].connections[0]: unknown connection \"ordrs\"")
        );
        assert_eq!(
            errors[1],
            "connections.orders.roles.admin.password: environment variable AIRLOCK_CONFIG_TEST_UNSET is not set"
        );
        assert!(
            errors[2].starts_with(&format!(
                "connections.orders.roles.ro.password: cannot read secret file {missing}: "
            )),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn unreadable_or_unparsable_files() {
        let files = Files::new();
        let nowhere = files.0.path().join("nope.yaml");
        let errors = check_file(&nowhere).unwrap_err();
        assert!(
            matches!(&errors[..], [ConfigError::Read { path, .. }] if *path == nowhere),
            "{errors:?}"
        );

        let bad = files.write(
            "bad.yaml",
            "listen: {postgres: 127.0.0.1:6432}\nwebhooks: []\n",
        );
        let errors: Vec<String> = check_file(&bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(&format!("{bad}:2:1: unknown field `webhooks`")),
            "{}",
            errors[0]
        );
    }
}
