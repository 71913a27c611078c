//! An immutable view of the configuration, ready for sessions.
//!
//! A [`Snapshot`] is built once per (re)load: secrets resolved, TLS
//! configurations built, access rules compiled. Sessions take an `Arc` of
//! the current one when they start and keep it for their life, so a reload
//! changes what new sessions see and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use airlock_config::{Config, ResolvedSecrets, SessionLifetime, TlsMode};
use airlock_identity::Verifier;
use airlock_pgwire::startup::TlsOffer;
use airlock_policy::{AccessMode, AccessPolicy, AccessRule, Effects, Guardrail, Guardrails};
use airlock_sql::Analyzer;

use crate::catalog::Catalogs;
use crate::mask::Masking;
use crate::tls::{self, TlsError};
use crate::upstream::{Credential, UpstreamTarget, UpstreamTls};

/// Limits that apply to every session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_size: usize,
    pub startup_timeout: Duration,
    /// `limits.message_timeout`.
    pub message_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// `limits.per_principal` and `limits.per_connection`, the statement
    /// rate included.
    pub sessions: airlock_engine::limits::SessionCaps,
}

/// One connection's upstream and role credentials.
pub struct ConnectionRuntime {
    /// Which door serves it: a client of the other door is refused.
    pub protocol: airlock_config::Protocol,
    pub target: UpstreamTarget,
    pub roles: HashMap<String, Credential>,
    pub startup_notice: airlock_config::StartupNotice,
}

/// Everything a new session needs, from one load of the configuration.
pub struct Snapshot {
    pub access: AccessPolicy,
    pub analyzer: Arc<Analyzer>,
    /// The MySQL door's analyzer.
    pub mysql_analyzer: Arc<airlock_sql::mysql::Analyzer>,
    pub guardrails: Arc<Guardrails>,
    pub connections: HashMap<String, ConnectionRuntime>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub tls_offer: TlsOffer,
    /// `tls.mode`, for doors other than PostgreSQL's.
    pub tls_mode: airlock_config::TlsMode,
    pub limits: Limits,
    pub session_lifetime: SessionLifetime,
    pub verifier: Arc<Verifier>,
    pub masking: Arc<Masking>,
    /// Upstream catalogs as masking and row bounds see them; a reload
    /// starts afresh.
    pub catalogs: Arc<Catalogs>,
    /// How much a session recording keeps.
    pub recording: airlock_engine::recording::Limits,
    /// How long a statement is held for approval.
    pub approvals: HoldTimeouts,
    /// The MCP endpoint's settings and caps.
    pub mcp: airlock_config::Mcp,
    /// The identifiers of the issuers whose tokens are accepted (for the
    /// MCP endpoint's protected-resource metadata).
    pub issuers: Vec<String>,
}

pub use airlock_engine::hold::HoldTimeouts;

impl Snapshot {
    /// A session's recording, for any door: this snapshot's limits and
    /// masking, and the masking catalog the session read (an exempt
    /// session reads none; the connection's cached one, when fresh, still
    /// makes its redaction precise).
    pub(crate) fn recording(
        &self,
        journal: std::sync::Arc<airlock_audit::Recorder>,
        session: uuid::Uuid,
        door: airlock_audit::event::Door,
        route: &airlock_policy::Route,
        catalog: Option<&Arc<airlock_policy::masking::SensitiveCatalog>>,
        redactor: airlock_engine::recording::Redactor,
    ) -> airlock_engine::recording::RecordingSession {
        airlock_engine::recording::RecordingSession::new(
            journal,
            session,
            door,
            self.recording,
            Arc::clone(&self.masking),
            catalog
                .cloned()
                .or_else(|| self.catalogs.masking.fresh(&route.connection)),
            route.unmask,
            redactor,
        )
    }
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("masking: the hash key in {0}: {1}")]
    MaskKey(std::path::PathBuf, std::io::Error),
}

impl Snapshot {
    /// Builds a snapshot from a validated configuration and its secrets.
    pub fn build(
        config: &Config,
        secrets: &ResolvedSecrets,
        verifier: Arc<Verifier>,
    ) -> Result<Snapshot, BuildError> {
        let tls = match &secrets.tls {
            Some(pair) if config.tls_mode() != TlsMode::Disabled => Some(tls::acceptor(
                pair.cert_pem.expose(),
                pair.key_pem.expose(),
            )?),
            _ => None,
        };
        let tls_offer = match config.tls_mode() {
            TlsMode::Required => TlsOffer::Required,
            TlsMode::Optional => TlsOffer::Optional,
            TlsMode::Disabled => TlsOffer::Disabled,
        };
        let mut connections = HashMap::new();
        for (name, conn) in &config.connections {
            let conn_secrets = secrets.connections.get(name);
            let up = &conn.upstream;
            let tls = match up.tls {
                airlock_config::UpstreamTls::Disable => UpstreamTls::Disable,
                airlock_config::UpstreamTls::Prefer => {
                    UpstreamTls::Prefer(tls::encrypting_connector()?)
                }
                airlock_config::UpstreamTls::Require => {
                    UpstreamTls::Require(tls::encrypting_connector()?)
                }
                airlock_config::UpstreamTls::VerifyFull => {
                    UpstreamTls::VerifyFull(tls::verifying_connector(
                        conn_secrets
                            .and_then(|s| s.ca_pem.as_ref())
                            .map(|ca| ca.expose().as_slice()),
                    )?)
                }
            };
            let roles = conn
                .roles
                .iter()
                .map(|(role, cred)| {
                    let password = conn_secrets
                        .and_then(|s| s.passwords.get(role))
                        .map(|p| p.expose().clone());
                    (
                        role.clone(),
                        Credential {
                            user: cred.user.clone(),
                            password,
                        },
                    )
                })
                .collect();
            let target = UpstreamTarget {
                host: up.host.clone(),
                port: conn.port(),
                database: up.database.clone(),
                tls,
            };
            connections.insert(
                name.clone(),
                ConnectionRuntime {
                    protocol: conn.protocol,
                    target,
                    roles,
                    startup_notice: conn.startup_notice,
                },
            );
        }
        let masking_policy = masking_policy(config);
        // The key is only needed (and only created) for the hash strategy.
        let masker = if masking_policy
            .rules
            .iter()
            .any(|r| r.strategy == airlock_policy::masking::Strategy::Hash)
        {
            airlock_mask::Masker::load_or_create(&config.data_dir)
                .map_err(|e| BuildError::MaskKey(config.data_dir.clone(), e))?
        } else {
            airlock_mask::Masker::new([0; 32])
        };
        Ok(Snapshot {
            masking: Arc::new(
                Masking::new(masking_policy, masker)
                    .flagging_planted(config.masking.flag_planted_instructions),
            ),
            catalogs: Arc::default(),
            access: access_policy(config),
            analyzer: Arc::new(Analyzer::new(&config.unsafe_functions)),
            mysql_analyzer: Arc::new(airlock_sql::mysql::Analyzer::new(&config.unsafe_functions)),
            guardrails: Arc::new(guardrails(config)),
            connections,
            tls,
            tls_offer,
            tls_mode: config.tls_mode(),
            limits: Limits {
                max_message_size: usize::try_from(config.limits.max_message_size.0)
                    .unwrap_or(usize::MAX),
                startup_timeout: config.limits.startup_timeout.0,
                message_timeout: config.limits.message_timeout.0,
                upstream_connect_timeout: config.limits.upstream_connect_timeout.0,
                sessions: airlock_engine::limits::SessionCaps {
                    per_principal: config.limits.per_principal.max_sessions,
                    per_connection: config.limits.per_connection.max_sessions,
                    statements_per_second: config.limits.per_principal.statements_per_second,
                },
            },
            session_lifetime: config.identity.session_lifetime,
            recording: airlock_engine::recording::Limits {
                sample_rows: config.recording.result_sample.max_rows as usize,
                sample_bytes: usize::try_from(config.recording.result_sample.max_bytes.0)
                    .unwrap_or(usize::MAX),
                max_text: usize::try_from(config.recording.max_statement_bytes.0)
                    .unwrap_or(usize::MAX),
            },
            approvals: HoldTimeouts {
                idle: config.approvals.timeout.0,
                in_transaction: config.approvals.timeout_in_transaction.0,
            },
            mcp: config.mcp.clone(),
            issuers: config
                .identity
                .issuers
                .iter()
                .map(|i| i.issuer.clone())
                .chain(
                    config
                        .identity
                        .dev_issuer
                        .then(|| airlock_identity::dev::ISSUER.to_string()),
                )
                .collect(),
            verifier,
        })
    }
}

/// Claim conditions as the policy core matches them.
fn claim_matchers(
    claims: &BTreeMap<String, airlock_config::ClaimValues>,
) -> Vec<airlock_policy::claims::ClaimMatcher> {
    claims
        .iter()
        .map(|(path, values)| airlock_policy::claims::ClaimMatcher::new(path, values.values()))
        .collect()
}

fn caps(c: &airlock_config::BudgetCaps) -> airlock_policy::access::Caps {
    airlock_policy::access::Caps {
        max_statements: c.max_statements,
        statements_per_minute: c.statements_per_minute,
        max_rows: c.max_rows,
        max_bytes: c.max_bytes.map(|b| b.0),
        max_cost: c.max_cost,
    }
}

/// The policy core's view of the `access` section.
pub fn access_policy(config: &Config) -> AccessPolicy {
    let rules = config
        .access
        .iter()
        .map(|r| AccessRule {
            name: r.name.clone(),
            groups: r.groups.clone(),
            subjects: r.subjects.clone(),
            claims: claim_matchers(&r.claims),
            connections: r.connections.clone(),
            roles: r.roles.clone(),
            mode: match r.mode {
                airlock_config::AccessMode::ReadOnly | airlock_config::AccessMode::SchemaOnly => {
                    AccessMode::ReadOnly
                }
                airlock_config::AccessMode::ReadWrite => AccessMode::ReadWrite,
            },
            statement_timeout: r.statement_timeout.map(|t| t.0),
            budgets: r.budgets.as_ref().map(|b| airlock_policy::access::Budgets {
                session: caps(&b.session),
                principal: caps(&b.principal),
                window: b.window.0,
                ends_session: b.on_exceed == airlock_config::OnExceed::Session,
                max_result_bytes: b.max_result_bytes.map(|m| m.0),
            }),
            schema_only: (r.mode == airlock_config::AccessMode::SchemaOnly).then(|| {
                r.min_group_rows
                    .unwrap_or(airlock_policy::access::DEFAULT_MIN_GROUP_ROWS)
            }),
            unmask: r.unmask,
            jit: r.jit.as_ref().map(|j| airlock_policy::JitRule {
                max_duration: j.max_duration.0,
                approvers: j.approvers.clone(),
                min_approvals: j.min_approvals,
                preapprove: claim_matchers(&j.preapprove),
            }),
        })
        .collect();
    let connections: BTreeMap<String, Vec<String>> = config
        .connections
        .iter()
        .map(|(name, c)| (name.clone(), c.roles.keys().cloned().collect()))
        .collect();
    AccessPolicy::new(rules, connections)
}

/// The policy core's view of the `guardrails` section. Names were validated
/// with the configuration.
pub fn guardrails(config: &Config) -> Guardrails {
    use airlock_config::{GuardrailAction, WhereClause};
    use airlock_policy::{Action, Effect, StatementKind};
    let rules = config
        .guardrails
        .iter()
        .map(|g| Guardrail {
            name: g.name.clone(),
            effects: g
                .matches
                .effects
                .iter()
                .filter_map(|e| Effect::from_name(e))
                .fold(Effects::EMPTY, Effects::with),
            statements: g
                .matches
                .statements
                .iter()
                .filter_map(|k| StatementKind::from_name(k))
                .collect(),
            where_present: g.matches.where_clause.map(|w| w == WhereClause::Present),
            estimated_rows_over: g.matches.estimated_rows_over,
            action: match g.action {
                GuardrailAction::Allow => Action::Allow,
                GuardrailAction::Approve => Action::Approve,
                GuardrailAction::ReviewCommit => Action::Review,
                GuardrailAction::Deny => Action::Deny,
            },
            message: g.message.clone(),
            hint: g.hint.clone(),
            approvers: g.approvers.clone(),
            min_approvals: g.min_approvals.unwrap_or(1),
        })
        .collect();
    Guardrails::new(rules)
}

/// The policy core's view of the `masking` section. Patterns and detector
/// names were validated with the configuration.
pub fn masking_policy(config: &Config) -> airlock_policy::masking::MaskingPolicy {
    use airlock_config::MaskStrategy;
    use airlock_policy::masking::{ColumnPattern, Detector, MaskRule, MaskingPolicy, Strategy};
    MaskingPolicy {
        rules: config
            .masking
            .rules
            .iter()
            .map(|r| MaskRule {
                name: r.name.clone(),
                columns: r
                    .columns
                    .iter()
                    .filter_map(|c| ColumnPattern::parse(c).ok())
                    .collect(),
                detect: r
                    .detect
                    .iter()
                    .filter_map(|d| Detector::from_name(d))
                    .collect(),
                strategy: match r.strategy {
                    MaskStrategy::Redact => Strategy::Redact,
                    MaskStrategy::Partial(p) => Strategy::Partial {
                        keep_first: p.keep_first,
                        keep_last: p.keep_last,
                    },
                    MaskStrategy::Email => Strategy::Email,
                    MaskStrategy::Hash => Strategy::Hash,
                    MaskStrategy::Null => Strategy::Null,
                },
            })
            .collect(),
        deny_predicates: config.masking.deny_predicates,
    }
}
