//! The configuration file's types. Field docs become descriptions in the JSON Schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::secret::{ConnectionSecrets, ResolvedSecrets, SecretValue, TlsKeyPair};
use crate::{ByteSize, ConfigError, Guardrail, HumanDuration, Secret, SessionLifetime, validate};

/// airlock's configuration: listeners, identity, connections and who may use them.
///
/// Keys the gateway does not implement (such as `listen.mysql`) are unknown keys and rejected,
/// so that nobody believes they are enforced.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[schemars(title = "airlock configuration")]
pub struct Config {
    /// The addresses airlock listens on; at least one is required.
    #[serde(default)]
    pub listen: Listen,
    /// Client-facing TLS. When absent, TLS is disabled, which is only allowed when the PostgreSQL
    /// listener is on a loopback address.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Token issuers and session lifetime.
    #[serde(default)]
    pub identity: Identity,
    /// airlock's own state (such as the dev issuer's key), relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Upstream databases by connection name; clients pick one with `dbname`.
    #[serde(default, deserialize_with = "unique_keys")]
    pub connections: BTreeMap<String, Connection>,
    /// Who may use which connections and roles. Nothing is allowed unless a rule allows it.
    #[serde(default)]
    pub access: Vec<AccessRule>,
    /// Decisions on statements, by effect: deny, hold for approval, or allow. The strictest
    /// matching rule wins.
    #[serde(default)]
    pub guardrails: Vec<Guardrail>,
    /// Functions to treat as `unsafe_function`, in addition to the built-in list (file, server
    /// and admin functions). A trailing `*` matches a prefix.
    #[serde(default)]
    pub unsafe_functions: Vec<String>,
    /// How long statements held for approval wait for a decision.
    #[serde(default)]
    pub approvals: crate::Approvals,
    /// Masking of sensitive values in results, COPY output, errors and notices.
    #[serde(default)]
    pub masking: crate::Masking,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where shipped audit events are kept.
    #[serde(default)]
    pub store: crate::Store,
    /// The local audit journal.
    #[serde(default)]
    pub journal: crate::Journal,
    /// What session recordings keep.
    #[serde(default)]
    pub recording: crate::Recording,
    /// Webhooks that receive approval and access events.
    #[serde(default)]
    pub notifications: crate::Notifications,
    /// Who may use the HTTP API.
    #[serde(default)]
    pub api: crate::Api,
    /// The MCP endpoint for agents.
    #[serde(default)]
    pub mcp: crate::Mcp,
    /// The web console; off without this section.
    #[serde(default)]
    pub console: Option<crate::Console>,
    /// On SIGTERM: how long open sessions may run on (new ones refused, `/readyz` not ready)
    /// before they are ended with a message naming the shutdown.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// The process's own logs.
    #[serde(default)]
    pub log: Log,
}

fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// The process's own logs (on standard error).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Log {
    /// `text` (the default) or `json`: one JSON object per line, for log shippers.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_data_dir() -> PathBuf {
    "airlock-data".into()
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Listen {
    /// PostgreSQL wire protocol listener, such as `127.0.0.1:6432`.
    pub postgres: Option<SocketAddr>,
    /// MySQL/MariaDB wire protocol listener, such as `127.0.0.1:6033`.
    pub mysql: Option<SocketAddr>,
    /// HTTP listener (API, metrics, health, the dev issuer's JWKS), such as `127.0.0.1:8080`.
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClientTls {
    /// Certificate chain (PEM).
    pub cert: Option<Secret>,
    /// Private key (PEM).
    pub key: Option<Secret>,
    /// Whether clients must use TLS. `required` when the `tls` section is present.
    #[serde(default = "tls_required")]
    pub mode: TlsMode,
}

fn tls_required() -> TlsMode {
    TlsMode::Required
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Clients must use TLS.
    Required,
    /// Clients may use TLS; cleartext token passwords are still refused without it.
    Optional,
    /// No TLS; only allowed on loopback listeners.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Identity {
    /// External OIDC issuers whose tokens are accepted.
    pub issuers: Vec<Issuer>,
    /// Enables the built-in dev issuer (`airlock token`), for demos and tests.
    pub dev_issuer: bool,
    /// The audience of dev-issuer tokens.
    pub dev_issuer_audience: String,
    /// Allows the dev issuer on a non-loopback listener. Anyone who can read the data dir can then
    /// mint tokens that the gateway accepts.
    pub allow_dev_issuer_on_non_loopback: bool,
    /// `token`: cut the session when the token expires; `unlimited`; or a duration such as `8h`.
    pub session_lifetime: SessionLifetime,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            issuers: Vec::new(),
            dev_issuer: false,
            dev_issuer_audience: "airlock".into(),
            allow_dev_issuer_on_non_loopback: false,
            session_lifetime: SessionLifetime::Token,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Issuer {
    /// A short name for rules and logs; `dev` is reserved for the dev issuer.
    pub name: String,
    /// The `iss` claim, such as `https://login.example.com/`.
    pub issuer: String,
    /// The required `aud` claim.
    pub audience: String,
    /// The claim holding the principal's groups (a string or an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Where the signing keys are; by default discovered from
    /// `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// The CA bundle (PEM) that signs the issuer's TLS certificates; when set, only it is
    /// trusted for this issuer's discovery and JWKS requests.
    pub ca: Option<Secret>,
    /// Credentials for fetching the issuer's discovery document and JWKS (a Kubernetes API
    /// server usually asks for the gateway's own service-account token).
    pub jwks_auth: Option<JwksAuth>,
}

/// How airlock authenticates to an issuer's discovery and JWKS endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct JwksAuth {
    /// A bearer token, sent as `Authorization: Bearer`. A `{file: …}` is read again at each
    /// fetch, so a rotated token (a projected service-account token) is picked up.
    pub bearer: Secret,
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Connection {
    #[serde(default)]
    pub protocol: Protocol,
    pub upstream: Upstream,
    /// Role profiles by name (the client's `user`): the upstream credential each one uses.
    #[serde(deserialize_with = "unique_keys")]
    pub roles: BTreeMap<String, RoleCredential>,
    /// When a client is told at login, in a NOTICE, which connection, role and rule it got.
    #[serde(default)]
    pub startup_notice: StartupNotice,
}

/// When the login NOTICE naming the route is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartupNotice {
    /// On every login (a person at psql sees what they got).
    #[default]
    Always,
    /// Only when the client's `user` named no role profile it may use, so another role was
    /// chosen for it.
    WhenRoleDefaulted,
    /// Never (scripts and tools that capture notices).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Upstream {
    pub host: String,
    /// The upstream's port: 5432 for `protocol: postgres`, 3306 for `protocol: mysql`.
    pub port: Option<u16>,
    pub database: String,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA bundle (PEM) for `tls: verify-full`; the system roots are used when absent.
    pub ca: Option<Secret>,
}

impl Connection {
    /// The upstream's port, or the protocol's default.
    pub fn port(&self) -> u16 {
        self.upstream.port.unwrap_or(match self.protocol {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
        })
    }
}

/// TLS towards the upstream database, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RoleCredential {
    /// The upstream user name.
    pub user: String,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AccessRule {
    pub name: String,
    /// Principals in any of these groups match. With `subjects` or `claims` too, all must hold.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Globs on the token's `sub` (`*` matches any run of characters): principals with a
    /// matching subject match.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Claim conditions, all of which must hold: a claim path (dots separate levels; a name
    /// that contains dots, such as `kubernetes.io`, matches as written; `\.` is a literal dot)
    /// mapped to a value or a list of values, each a glob. Machine identities (GitHub Actions,
    /// Kubernetes service accounts) are matched this way.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimValues>,
    /// Connection names, or `"*"` for all.
    pub connections: Vec<String>,
    /// Role names; each must exist on at least one of the connections.
    pub roles: Vec<String>,
    #[serde(default)]
    pub mode: AccessMode,
    /// Sessions routed by this rule see result data unmasked (for approvers and DBAs).
    #[serde(default)]
    pub unmask: bool,
    /// With `mode: schema-only`: the fewest rows a group of an aggregate must hold to be
    /// returned (k; default 10, from 2 to 1000000).
    pub min_group_rows: Option<u32>,
    /// What the sessions this rule routes may spend: per session, and per principal over a
    /// window. A statement over a budget is refused before it reaches the database.
    pub budgets: Option<Budgets>,
    /// The ceiling on `statement_timeout` for the sessions this rule routes (1ms to 24h;
    /// PostgreSQL connections only): sessions start with it (or a lower startup value), and a
    /// `SET` above it, or to 0, is refused.
    pub statement_timeout: Option<HumanDuration>,
    /// Just-in-time access: the rule's roles are usable only through an approved, expiring
    /// grant.
    pub jit: Option<crate::Jit>,
}

/// The values a claim condition accepts: one, or any of a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ClaimValues {
    One(String),
    Any(Vec<String>),
}

impl ClaimValues {
    pub fn values(&self) -> Vec<String> {
        match self {
            ClaimValues::One(v) => vec![v.clone()],
            ClaimValues::Any(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    /// Only reads: enforced by the parser and by `default_transaction_read_only` upstream.
    ReadOnly,
    /// Reads and writes, subject to the rest of the policy.
    #[default]
    ReadWrite,
    /// Read-only, and no individual row values: the catalog, `EXPLAIN` without `ANALYZE`, and
    /// aggregates over groups of at least `min_group_rows` rows.
    SchemaOnly,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Limits {
    /// The largest protocol message accepted from a client or upstream (1KiB to 1GiB).
    pub max_message_size: ByteSize,
    /// How long a client may take from connecting to being authenticated.
    pub startup_timeout: HumanDuration,
    /// How long a logged-in client may go without completing a message it has begun (a slowloris
    /// trickling or stalling one): over it, the session ends.
    pub message_timeout: HumanDuration,
    /// How long opening an upstream connection may take.
    pub upstream_connect_timeout: HumanDuration,
    /// The most client sessions served at once.
    pub max_sessions: u32,
    /// Caps on each principal (token issuer and subject).
    pub per_principal: PrincipalLimits,
    /// Caps on each connection.
    pub per_connection: ConnectionLimits,
}

/// `access[].budgets`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Budgets {
    /// Caps on each session.
    pub session: BudgetCaps,
    /// Caps on each principal (token issuer and subject), across its sessions under this rule on
    /// every door, counted over `window`.
    pub principal: BudgetCaps,
    /// How long a principal's spending counts, from its first statement, before it starts again
    /// (1s to 30d; default 1h).
    pub window: HumanDuration,
    /// What a spent budget ends: the statement (it is refused and the session goes on), or the
    /// session (the refusal ends it, as a FATAL error).
    pub on_exceed: OnExceed,
    /// The most bytes one statement's result may return to the client (rows as encoded on the
    /// wire; each fetch of a portal or cursor counts alone). A result that reaches it is cut
    /// and the session ends, so that the client and the database cannot part over what ran.
    pub max_result_bytes: Option<ByteSize>,
}

/// `access[].budgets.on_exceed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnExceed {
    /// Refuse the statement; the session goes on.
    #[default]
    Statement,
    /// Refuse the statement and end the session.
    Session,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            session: BudgetCaps::default(),
            principal: BudgetCaps::default(),
            window: HumanDuration(Duration::from_secs(3600)),
            on_exceed: OnExceed::Statement,
            max_result_bytes: None,
        }
    }
}

/// One scope's budget caps; each absent one is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct BudgetCaps {
    /// The most statements (each statement of a message counts, and each execution of a prepared
    /// one).
    pub max_statements: Option<u64>,
    /// The most statements a minute, with bursts of one minute's worth (a token bucket).
    pub statements_per_minute: Option<u32>,
    /// The most result rows returned. Counted as each result ends: the statement after the one
    /// that reached it is refused.
    pub max_rows: Option<u64>,
    /// The most result bytes returned (rows as encoded on the wire), counted as `max_rows`.
    pub max_bytes: Option<ByteSize>,
    /// The most estimated planner cost (PostgreSQL's `EXPLAIN` total cost of each statement
    /// run, summed): each statement's cost is estimated before it runs, and one that would
    /// pass the cap is refused. PostgreSQL connections only; a message may then hold one
    /// statement that runs a plan.
    pub max_cost: Option<u64>,
}

/// `limits.per_principal`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct PrincipalLimits {
    /// The most sessions one principal may have open at once, across every door and connection
    /// (an MCP call counts while it runs). No cap when absent.
    pub max_sessions: Option<u32>,
    /// The most statements one principal may send a second, across every door and session, with
    /// bursts of one second's worth (a token bucket). A statement over it is refused before it
    /// reaches the database. No limit when absent.
    pub statements_per_second: Option<u32>,
}

/// `limits.per_connection`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ConnectionLimits {
    /// The most sessions one connection may have open at once: each holds one upstream
    /// connection, so this caps the long-lived upstream connections airlock opens to it. No cap
    /// when absent.
    pub max_sessions: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: ByteSize(64 * ByteSize::MIB.0),
            startup_timeout: HumanDuration(Duration::from_secs(10)),
            message_timeout: HumanDuration(Duration::from_secs(120)),
            upstream_connect_timeout: HumanDuration(Duration::from_secs(5)),
            max_sessions: 1000,
            per_principal: PrincipalLimits::default(),
            per_connection: ConnectionLimits::default(),
        }
    }
}

impl Config {
    /// Parses and validates `text`. `origin` (usually the file name) prefixes every error.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        let config = Config::parse(text, origin)?;
        let errors = validate::validate(&config, origin);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Reads, parses and validates the file at `path`. Does not resolve secrets.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, Vec<ConfigError>> {
        let (text, origin) = read(path.as_ref())?;
        Config::from_yaml_str(&text, &origin)
    }

    pub(crate) fn parse(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        // serde_yaml reports a type error in the part before a syntax error rather than the
        // syntax error itself; a first pass that accepts any shape surfaces the syntax error.
        let mut config: Config = serde_yaml::from_str::<de::IgnoredAny>(text)
            .and_then(|_| serde_yaml::from_str(text))
            .map_err(|e| vec![ConfigError::parse(origin, &e)])?;
        config.fill_audit_defaults();
        Ok(config)
    }

    /// The journal and the store live under `data_dir` unless placed elsewhere.
    fn fill_audit_defaults(&mut self) {
        if self.journal.dir.as_os_str().is_empty() {
            self.journal.dir = self.data_dir.join("journal");
        }
        if self.store.url.is_empty() {
            self.store.url = format!("sqlite://{}/airlock.db", self.data_dir.display());
        }
    }

    /// The client-facing TLS mode; `disabled` when there is no `tls` section.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map_or(TlsMode::Disabled, |tls| tls.mode)
    }

    /// Reads every secret the configuration names: role passwords, the store password and
    /// webhook signing keys (as text, without one trailing newline), the client TLS key pair and
    /// upstream CA bundles (as bytes). Reports every secret that cannot be read, each
    /// with the key that names it.
    pub fn resolve_secrets(&self) -> Result<ResolvedSecrets, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let tls = self.tls.as_ref().and_then(|tls| {
            let (cert, key) = (tls.cert.as_ref()?, tls.key.as_ref()?);
            let cert_pem = keep(&mut errors, "tls.cert".into(), cert.resolve_bytes());
            let key_pem = keep(&mut errors, "tls.key".into(), key.resolve_bytes());
            Some(TlsKeyPair {
                cert_pem: cert_pem?,
                key_pem: key_pem?,
            })
        });
        let connections = self
            .connections
            .iter()
            .map(|(name, connection)| {
                let ca_pem = connection.upstream.ca.as_ref().and_then(|ca| {
                    let key = format!("connections.{name}.upstream.ca");
                    keep(&mut errors, key, ca.resolve_bytes())
                });
                let passwords = connection
                    .roles
                    .iter()
                    .filter_map(|(role, credential)| {
                        let key = format!("connections.{name}.roles.{role}.password");
                        let password = keep(
                            &mut errors,
                            key,
                            credential.password.as_ref()?.resolve_string(),
                        )?;
                        Some((role.clone(), password))
                    })
                    .collect();
                (name.clone(), ConnectionSecrets { ca_pem, passwords })
            })
            .collect();
        for issuer in &self.identity.issuers {
            let key = format!("identity.issuers.{}", issuer.name);
            if let Some(ca) = &issuer.ca {
                keep(&mut errors, format!("{key}.ca"), ca.resolve_bytes());
            }
            if let Some(auth) = &issuer.jwks_auth {
                keep(
                    &mut errors,
                    format!("{key}.jwks_auth.bearer"),
                    auth.bearer.resolve_string(),
                );
            }
        }
        let store_password = self
            .store
            .password
            .as_ref()
            .and_then(|p| keep(&mut errors, "store.password".into(), p.resolve_string()));
        let webhook_secrets = self
            .notifications
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, hook)| {
                let key = format!("notifications.webhooks[{i}].secret");
                let secret = keep(&mut errors, key, hook.secret.as_ref()?.resolve_string())?;
                Some(SecretValue::new(secret.expose().as_bytes().to_vec()))
            })
            .collect();
        if errors.is_empty() {
            Ok(ResolvedSecrets {
                tls,
                connections,
                store_password,
                webhook_secrets,
            })
        } else {
            Err(errors)
        }
    }

    /// The files that secrets are read from, sorted and without duplicates, for the binary to
    /// watch for changes (the configuration file itself is not included).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let tls = self.tls.iter().flat_map(|t| [&t.cert, &t.key]).flatten();
        let upstreams = self.connections.values().flat_map(|c| {
            c.upstream
                .ca
                .iter()
                .chain(c.roles.values().filter_map(|r| r.password.as_ref()))
        });
        let webhooks = self
            .notifications
            .webhooks
            .iter()
            .filter_map(|w| w.secret.as_ref());
        // An issuer's CA; not its `jwks_auth` token, which is read at each
        // fetch (a projected token rotates every hour).
        let issuers = self.identity.issuers.iter().filter_map(|i| i.ca.as_ref());
        let files: BTreeSet<&Path> = tls
            .chain(upstreams)
            .chain(webhooks)
            .chain(issuers)
            .filter_map(Secret::file)
            .collect();
        files.into_iter().map(Path::to_path_buf).collect()
    }
}

/// Keeps a resolved secret, or records why it could not be resolved under the key naming it.
fn keep<T>(
    errors: &mut Vec<ConfigError>,
    key: String,
    result: Result<T, ConfigError>,
) -> Option<T> {
    result
        .map_err(|error| {
            errors.push(ConfigError::Secret {
                key,
                error: Box::new(error),
            })
        })
        .ok()
}

pub(crate) fn read(path: &Path) -> Result<(String, String), Vec<ConfigError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text, path.display().to_string())),
        Err(error) => Err(vec![ConfigError::Read {
            path: path.to_owned(),
            error,
        }]),
    }
}

/// Deserializes a map in which a repeated key is an error at that key (a plain `BTreeMap` would
/// silently keep the last one, hiding a duplicated connection or role).
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Entries<V>(PhantomData<V>);
    struct NewKey<'a, V>(&'a BTreeMap<String, V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some(key) = map.next_key_seed(NewKey(&entries))? {
                let value = map.next_value()?;
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }
    impl<'de, V> DeserializeSeed<'de> for NewKey<'_, V> {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<V> Visitor<'_> for NewKey<'_, V> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a name")
        }
        fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
            if self.0.contains_key(key) {
                Err(E::custom(format!("duplicate key {key:?}")))
            } else {
                Ok(key.to_owned())
            }
        }
    }
    d.deserialize_map(Entries(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessMode, Protocol, SessionLifetime, TlsMode, UpstreamTls};

    const FULL: &str = r#"# like SPEC §3
listen:
  postgres: 127.0.0.1:6432
  http: 127.0.0.1:8080
tls:
  cert: {file: certs/tls.crt}
  key: {file: certs/tls.key}
  mode: optional
identity:
  issuers:
    - name: corp
      issuer: https://login.example.com/
      audience: airlock
      groups_claim: roles
      jwks_uri: https://login.example.com/keys
    - name: ci
      issuer: https://token.actions.githubusercontent.com
      audience: airlock
      jwks_auth: {bearer: {file: /run/secrets/jwks-token}}
  dev_issuer: true
  dev_issuer_audience: airlock-test
  session_lifetime: 8h
data_dir: /var/lib/airlock
connections:
  orders:
    protocol: postgres
    upstream: {host: db.internal, port: 5433, database: orders, tls: verify-full, ca: {file: ca.pem}}
    roles:
      readonly: {user: airlock_ro, password: {env: ORDERS_RO_PASSWORD}}
      admin:    {user: airlock_admin, password: {file: /run/secrets/orders-admin}}
  billing:
    upstream: {host: 127.0.0.1, database: billing}
    roles:
      readonly: {user: billing_ro}
access:
  - name: agents-read
    groups: [ai-agents]
    connections: [orders]
    roles: [readonly]
    mode: read-only
  - name: dba
    subjects: [alice@example.com]
    claims: {kubernetes.io.namespace: [ops, dba]}
    connections: ["*"]
    roles: [readonly, admin]
  - name: agents-write-jit
    groups: [ai-agents]
    connections: [orders]
    roles: [admin]
    jit: {max_duration: 1h, approvers: [dba], min_approvals: 1}
guardrails:
  - name: review-schema-changes
    match: {effects: [ddl, truncate]}
    action: approve
    approvers: [dba]
    min_approvals: 2
approvals:
  timeout: 5m
  timeout_in_transaction: 60s
limits:
  max_message_size: 16MiB
  startup_timeout: 30s
  upstream_connect_timeout: 1500ms
  max_sessions: 50
  per_principal: {max_sessions: 5, statements_per_second: 20}
store:
  url: postgres://airlock@db.internal/airlock
  password: {env: AIRLOCK_STORE_PASSWORD}
journal:
  fsync: always
recording:
  result_sample: {max_rows: 10, max_bytes: 4KiB}
  retention: 90d
notifications:
  webhooks:
    - url: http://127.0.0.1:9000/hook
      events: [approval.requested, approval.decided, access.requested, access.granted]
      format: json
      secret: {env: WEBHOOK_SECRET}
    - url: https://hooks.slack.com/services/T0/B0/X
      format: slack
      secret: {file: /run/secrets/slack-hook}
      timeout: 10s
api:
  auditor_groups: [security]
mcp:
  enabled: true
  max_rows: 500
  max_bytes: 256KiB
  statement_timeout: 10s
  allowed_origins: ["https://app.example.com"]
shutdown_grace: 45s
log: {format: json}
"#;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn full_example() {
        let config = Config::from_yaml_str(FULL, "full.yaml").unwrap();
        let want = Config {
            listen: Listen {
                mysql: None,
                postgres: Some("127.0.0.1:6432".parse().unwrap()),
                http: Some("127.0.0.1:8080".parse().unwrap()),
            },
            tls: Some(ClientTls {
                cert: Some(Secret::File("certs/tls.crt".into())),
                key: Some(Secret::File("certs/tls.key".into())),
                mode: TlsMode::Optional,
            }),
            identity: Identity {
                issuers: vec![
                    Issuer {
                        name: "corp".into(),
                        issuer: "https://login.example.com/".into(),
                        audience: "airlock".into(),
                        groups_claim: "roles".into(),
                        jwks_uri: Some("https://login.example.com/keys".into()),
                        ca: None,
                        jwks_auth: None,
                    },
                    Issuer {
                        name: "ci".into(),
                        issuer: "https://token.actions.githubusercontent.com".into(),
                        audience: "airlock".into(),
                        groups_claim: "groups".into(),
                        jwks_uri: None,
                        ca: None,
                        jwks_auth: Some(crate::JwksAuth {
                            bearer: Secret::File("/run/secrets/jwks-token".into()),
                        }),
                    },
                ],
                dev_issuer: true,
                dev_issuer_audience: "airlock-test".into(),
                allow_dev_issuer_on_non_loopback: false,
                session_lifetime: SessionLifetime::Fixed(Duration::from_secs(8 * 3600)),
            },
            data_dir: "/var/lib/airlock".into(),
            connections: BTreeMap::from([
                (
                    "orders".into(),
                    Connection {
                        protocol: Protocol::Postgres,
                        upstream: Upstream {
                            host: "db.internal".into(),
                            port: Some(5433),
                            database: "orders".into(),
                            tls: UpstreamTls::VerifyFull,
                            ca: Some(Secret::File("ca.pem".into())),
                        },
                        roles: BTreeMap::from([
                            (
                                "readonly".into(),
                                RoleCredential {
                                    user: "airlock_ro".into(),
                                    password: Some(Secret::Env("ORDERS_RO_PASSWORD".into())),
                                },
                            ),
                            (
                                "admin".into(),
                                RoleCredential {
                                    user: "airlock_admin".into(),
                                    password: Some(Secret::File(
                                        "/run/secrets/orders-admin".into(),
                                    )),
                                },
                            ),
                        ]),
                        startup_notice: StartupNotice::Always,
                    },
                ),
                (
                    "billing".into(),
                    Connection {
                        protocol: Protocol::Postgres,
                        upstream: Upstream {
                            host: "127.0.0.1".into(),
                            port: None,
                            database: "billing".into(),
                            tls: UpstreamTls::Prefer,
                            ca: None,
                        },
                        roles: BTreeMap::from([(
                            "readonly".into(),
                            RoleCredential {
                                user: "billing_ro".into(),
                                password: None,
                            },
                        )]),
                        startup_notice: StartupNotice::Always,
                    },
                ),
            ]),
            access: vec![
                AccessRule {
                    name: "agents-read".into(),
                    groups: strings(&["ai-agents"]),
                    subjects: vec![],
                    claims: BTreeMap::new(),
                    connections: strings(&["orders"]),
                    roles: strings(&["readonly"]),
                    mode: AccessMode::ReadOnly,
                    unmask: false,
                    min_group_rows: None,
                    budgets: None,
                    statement_timeout: None,
                    jit: None,
                },
                AccessRule {
                    name: "dba".into(),
                    groups: vec![],
                    subjects: strings(&["alice@example.com"]),
                    claims: [(
                        "kubernetes.io.namespace".to_string(),
                        crate::ClaimValues::Any(strings(&["ops", "dba"])),
                    )]
                    .into(),
                    connections: strings(&["*"]),
                    roles: strings(&["readonly", "admin"]),
                    mode: AccessMode::ReadWrite,
                    unmask: false,
                    min_group_rows: None,
                    budgets: None,
                    statement_timeout: None,
                    jit: None,
                },
                AccessRule {
                    name: "agents-write-jit".into(),
                    groups: strings(&["ai-agents"]),
                    subjects: vec![],
                    claims: BTreeMap::new(),
                    connections: strings(&["orders"]),
                    roles: strings(&["admin"]),
                    mode: AccessMode::ReadWrite,
                    unmask: false,
                    min_group_rows: None,
                    budgets: None,
                    statement_timeout: None,
                    jit: Some(crate::Jit {
                        max_duration: HumanDuration(Duration::from_secs(3600)),
                        approvers: strings(&["dba"]),
                        min_approvals: 1,
                        preapprove: BTreeMap::new(),
                    }),
                },
            ],
            guardrails: vec![Guardrail {
                name: "review-schema-changes".into(),
                matches: crate::GuardrailMatch {
                    effects: strings(&["ddl", "truncate"]),
                    ..Default::default()
                },
                action: crate::GuardrailAction::Approve,
                message: None,
                hint: None,
                approvers: strings(&["dba"]),
                min_approvals: Some(2),
            }],
            unsafe_functions: Vec::new(),
            approvals: crate::Approvals {
                timeout: HumanDuration(Duration::from_secs(300)),
                timeout_in_transaction: HumanDuration(Duration::from_secs(60)),
            },
            masking: Default::default(),
            limits: Limits {
                max_message_size: ByteSize(16 << 20),
                startup_timeout: HumanDuration(Duration::from_secs(30)),
                message_timeout: HumanDuration(Duration::from_secs(120)),
                upstream_connect_timeout: HumanDuration(Duration::from_millis(1500)),
                max_sessions: 50,
                per_principal: PrincipalLimits {
                    max_sessions: Some(5),
                    statements_per_second: Some(20),
                },
                per_connection: ConnectionLimits::default(),
            },
            store: crate::Store {
                url: "postgres://airlock@db.internal/airlock".into(),
                password: Some(Secret::Env("AIRLOCK_STORE_PASSWORD".into())),
            },
            journal: crate::Journal {
                dir: "/var/lib/airlock/journal".into(),
                fsync: crate::JournalFsync::Always,
            },
            recording: crate::Recording {
                result_sample: crate::ResultSample {
                    max_rows: 10,
                    max_bytes: ByteSize(4 << 10),
                },
                max_statement_bytes: ByteSize(64 << 10),
                retention: Some(HumanDuration(Duration::from_secs(90 * 86400))),
            },
            notifications: crate::Notifications {
                webhooks: vec![
                    crate::Webhook {
                        url: "http://127.0.0.1:9000/hook".into(),
                        events: vec![
                            crate::WebhookEvent::ApprovalRequested,
                            crate::WebhookEvent::ApprovalDecided,
                            crate::WebhookEvent::AccessRequested,
                            crate::WebhookEvent::AccessGranted,
                        ],
                        format: crate::WebhookFormat::Json,
                        secret: Some(Secret::Env("WEBHOOK_SECRET".into())),
                        timeout: HumanDuration(Duration::from_secs(5)),
                    },
                    crate::Webhook {
                        url: "https://hooks.slack.com/services/T0/B0/X".into(),
                        events: crate::WebhookEvent::ALL.to_vec(),
                        format: crate::WebhookFormat::Slack,
                        secret: Some(Secret::File("/run/secrets/slack-hook".into())),
                        timeout: HumanDuration(Duration::from_secs(10)),
                    },
                ],
            },
            api: crate::Api {
                admin_groups: vec![],
                auditor_groups: strings(&["security"]),
            },
            mcp: crate::Mcp {
                enabled: true,
                max_rows: 500,
                max_bytes: crate::ByteSize(256 * 1024),
                statement_timeout: crate::HumanDuration(Duration::from_secs(10)),
                allowed_origins: strings(&["https://app.example.com"]),
                ..crate::Mcp::default()
            },
            console: None,
            shutdown_grace: HumanDuration(Duration::from_secs(45)),
            log: Log {
                format: LogFormat::Json,
            },
        };
        assert_eq!(config, want);
        assert_eq!(config.tls_mode(), TlsMode::Optional);
        let watched = [
            "/run/secrets/orders-admin",
            "/run/secrets/slack-hook",
            "ca.pem",
            "certs/tls.crt",
            "certs/tls.key",
        ];
        assert_eq!(config.watched_files(), watched.map(PathBuf::from));
    }

    #[test]
    fn defaults() {
        let yaml = "listen: {postgres: 127.0.0.1:6432}
identity: {issuers: [{name: corp, issuer: https://x/, audience: airlock}]}
";
        let config = Config::from_yaml_str(yaml, "min.yaml").unwrap();
        assert_eq!(config.tls, None);
        assert_eq!(config.tls_mode(), TlsMode::Disabled);
        assert_eq!(config.identity.issuers[0].groups_claim, "groups");
        assert_eq!(
            (
                config.identity.dev_issuer,
                config.identity.dev_issuer_audience.as_str()
            ),
            (false, "airlock")
        );
        assert!(!config.identity.allow_dev_issuer_on_non_loopback);
        assert_eq!(config.identity.session_lifetime, SessionLifetime::Token);
        assert_eq!(config.data_dir, PathBuf::from("airlock-data"));
        assert_eq!(config.journal.dir, PathBuf::from("airlock-data/journal"));
        assert_eq!(config.store.url, "sqlite://airlock-data/airlock.db");
        assert_eq!(
            config.journal.fsync,
            crate::JournalFsync::Interval(Duration::from_millis(100))
        );
        assert_eq!(config.recording.result_sample.max_rows, 100);
        assert!(config.connections.is_empty() && config.access.is_empty());
        assert_eq!(config.approvals, crate::Approvals::default());
        assert_eq!(
            config.approvals.timeout,
            HumanDuration(Duration::from_secs(300))
        );
        assert_eq!(
            config.approvals.timeout_in_transaction,
            HumanDuration(Duration::from_secs(60))
        );
        assert!(config.notifications.webhooks.is_empty());
        assert_eq!(
            config.limits,
            Limits {
                max_message_size: ByteSize(64 << 20),
                startup_timeout: HumanDuration(Duration::from_secs(10)),
                message_timeout: HumanDuration(Duration::from_secs(120)),
                upstream_connect_timeout: HumanDuration(Duration::from_secs(5)),
                max_sessions: 1000,
                per_principal: PrincipalLimits::default(),
                per_connection: ConnectionLimits::default(),
            }
        );

        let with_tls = format!("{yaml}tls: {{cert: {{env: C}}, key: {{env: K}}}}\n");
        assert_eq!(
            Config::from_yaml_str(&with_tls, "t.yaml")
                .unwrap()
                .tls_mode(),
            TlsMode::Required
        );
    }

    #[test]
    fn parse_errors_are_located() {
        // Each message must start with the expected text (humantime adds a list of units).
        let listen = "listen:\n  postgres: 127.0.0.1:6432\n";
        let conn = "connections:\n  orders:\n    upstream: {host: h, database: d}\n    roles:\n";
        for (yaml, want) in [
            (
                format!("{listen}webhooks:\n  - url: http://x/\n"),
                "t.yaml:3:1: unknown field `webhooks`, expected one of `listen`, `tls`, `identity`, `data_dir`, `connections`, `access`, `guardrails`, `unsafe_functions`, `approvals`, `masking`, `limits`, `store`, `journal`, `recording`, `notifications`, `api`",
            ),
            (
                format!("{listen}approvals:\n  timeout: 5m\n  timout_in_transaction: 1m\n"),
                "t.yaml:5:3: approvals: unknown field `timout_in_transaction`, expected `timeout` or `timeout_in_transaction`",
            ),
            (
                format!("{listen}approvals:\n  timeout: soon\n"),
                "t.yaml:4:12: approvals.timeout: invalid duration \"soon\"",
            ),
            (
                format!(
                    "{conn}      ro: {{user: u}}\naccess:\n  - {{name: a, groups: [g], connections: [orders], roles: [ro], jit: {{max_duration: 1h, approvers: [dba], min_approval: 2}}}}\n"
                ),
                "t.yaml:7:106: access[0].jit: unknown field `min_approval`, expected one of `max_duration`, `approvers`, `min_approvals`",
            ),
            (
                format!(
                    "{conn}      ro: {{user: u}}\naccess:\n  - {{name: a, groups: [g], connections: [orders], roles: [ro], jit: {{approvers: [dba]}}}}\n"
                ),
                "t.yaml:7:69: access[0].jit: missing field `max_duration`",
            ),
            (
                format!(
                    "{conn}      ro: {{user: u}}\naccess:\n  - {{name: a, groups: [g], connections: [orders], roles: [ro], jit: {{max_duration: 1h}}}}\n"
                ),
                "t.yaml:7:69: access[0].jit: missing field `approvers`",
            ),
            (
                format!(
                    "{listen}guardrails:\n  - {{name: g, match: {{effects: [ddl]}}, action: approve, approvers: [dba], min_approvals: -1}}\n"
                ),
                "t.yaml:4:90: guardrails[0].min_approvals: invalid type: integer `-1`, expected u32",
            ),
            (
                format!(
                    "{listen}notifications:\n  webhooks:\n    - url: http://x/\n      secret: hunter2\n"
                ),
                "t.yaml:6:15: notifications.webhooks[0].secret: a secret is never written inline; use {env: NAME} or {file: PATH}",
            ),
            (
                format!(
                    "{listen}notifications:\n  webhooks:\n    - url: http://x/\n      events: [approval.requested, approval.granted]\n"
                ),
                "t.yaml:6:36: notifications.webhooks[0].events[1]: unknown variant `approval.granted`, expected one of `approval.requested`, `approval.decided`, `access.requested`, `access.granted`, `access.expired`",
            ),
            (
                format!(
                    "{listen}notifications:\n  webhooks:\n    - url: http://x/\n      format: teams\n"
                ),
                "t.yaml:6:15: notifications.webhooks[0].format: unknown variant `teams`, expected `json` or `slack`",
            ),
            (
                format!(
                    "{listen}notifications:\n  webhooks:\n    - {{events: [access.granted]}}\n"
                ),
                "t.yaml:5:7: notifications.webhooks[0]: missing field `url`",
            ),
            (
                format!("{listen}notifications:\n  webhook:\n    - url: http://x/\n"),
                "t.yaml:4:3: notifications: unknown field `webhook`, expected `webhooks`",
            ),
            (
                format!("{listen}  redis: 127.0.0.1:6379\n"),
                "t.yaml:3:3: listen: unknown field `redis`, expected one of `postgres`, `mysql`, `http`",
            ),
            (
                format!("{conn}      ro: {{user: u, password: hunter2}}\n"),
                "t.yaml:5:31: connections.orders.roles.ro.password: a secret is never written inline; use {env: NAME} or {file: PATH}",
            ),
            (
                format!("{conn}      ro: {{user: u, pasword: {{env: X}}}}\n"),
                "t.yaml:5:21: connections.orders.roles.ro: unknown field `pasword`, expected `user` or `password`",
            ),
            (
                format!("{conn}      ro: {{user: u}}\n      ro: {{user: v}}\n"),
                "t.yaml:6:7: connections.orders.roles: duplicate key \"ro\"",
            ),
            (
                format!("{listen}limits:\n  startup_timeout: 10 parsecs\n"),
                "t.yaml:4:20: limits.startup_timeout: invalid duration \"10 parsecs\": unknown time unit \"parsecs\"",
            ),
            (
                format!("{listen}limits: {{max_message_size: 64XB}}\n"),
                "t.yaml:3:28: limits.max_message_size: invalid size \"64XB\": unknown unit \"XB\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)",
            ),
            (
                format!("{listen}tls: {{mode: sometimes}}\n"),
                "t.yaml:3:13: tls.mode: unknown variant `sometimes`, expected one of `required`, `optional`, `disabled`",
            ),
            (
                // serde reports a repeated struct field at the start of its mapping.
                format!("{conn}      ro: {{user: u}}\n    upstream: {{host: h, database: d}}\n"),
                "t.yaml:3:5: connections.orders: duplicate field `upstream`",
            ),
            (
                "listen: {postgres: localhost}\n".to_owned(),
                "t.yaml:1:20: listen.postgres: invalid socket address syntax",
            ),
            (
                "listen:\n  postgres: a: b\n".to_owned(),
                "t.yaml:2:14: mapping values are not allowed in this context",
            ),
            (
                format!("{listen}---\n{listen}"),
                "t.yaml:1:1: deserializing from YAML containing more than one document is not supported",
            ),
        ] {
            let errors = Config::from_yaml_str(&yaml, "t.yaml").unwrap_err();
            let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(
                got.len() == 1 && got[0].starts_with(want),
                "\n{yaml}\n{got:#?}\nwant {want}"
            );
        }
    }
}
