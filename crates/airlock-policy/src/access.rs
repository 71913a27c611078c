//! Access routing: which connection and role profile a principal gets.
//!
//! Rules are checked in the order the policy file lists them, and the first
//! rule that grants the principal the requested connection and role decides
//! the route (and so its mode). A rule matches a principal when all of its
//! matchers hold: one of its `groups` (when it names groups), a `subjects`
//! glob on `sub` (when it names subjects), and every `claims` condition
//! ([`crate::claims`]). Machine identities (GitHub Actions, Kubernetes
//! service accounts) carry no groups and are matched by subject and claims.
//!
//! Role choice (SPEC §5): `user` names a role profile. When it names a
//! profile the principal may use on that connection, that profile is used.
//! When it names a profile that exists on the connection but is not granted
//! to the principal, the login is refused: asking for `admin` and silently
//! getting `readonly` would hide a misconfiguration. When it names no profile
//! of the connection at all (psql's default `user` is the OS user name), the
//! principal's first allowed role is used, and the startup notice says so.
//!
//! Just-in-time access: a rule with `jit` grants its roles only through a
//! live grant (an approved access request, kept in the store). The caller
//! passes the principal's live grants; a role reachable only through a JIT
//! rule without one is refused with a message saying how to request it.
//! A rule without `jit` that grants the same role wins (it needs no grant).

use std::collections::BTreeMap;
use std::fmt;

use crate::Principal;

/// The fewest rows an aggregate's group must hold on a schema-only route
/// whose rule does not say.
pub const DEFAULT_MIN_GROUP_ROWS: u32 = 10;

/// What a session (or a principal, over a window) may spend under an
/// access rule (SPEC §14); `None` is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    pub max_statements: Option<u64>,
    pub statements_per_minute: Option<u32>,
    pub max_rows: Option<u64>,
    pub max_bytes: Option<u64>,
    /// Estimated planner cost.
    pub max_cost: Option<u64>,
}

impl Caps {
    pub fn is_empty(&self) -> bool {
        *self == Caps::default()
    }
}

/// An access rule's budgets: per session, and per principal over a window
/// shared by all its sessions under the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub session: Caps,
    pub principal: Caps,
    /// How long a principal's spending counts before it starts again.
    pub window: std::time::Duration,
    /// A spent budget ends the session, not only the statement.
    pub ends_session: bool,
    /// The most bytes one result (one fetch) may return; reaching it cuts
    /// the result and ends the session.
    pub max_result_bytes: Option<u64>,
}

/// How a route may use its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    ReadOnly,
    ReadWrite,
}

impl AccessMode {
    /// The name used in policy files and output.
    pub fn name(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "read-only",
            AccessMode::ReadWrite => "read-write",
        }
    }
}

/// One access rule, as the policy file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub name: String,
    pub groups: Vec<String>,
    /// Globs on `sub` (`*` any run of characters).
    pub subjects: Vec<String>,
    /// Conditions on the token's other claims, all of which must hold.
    pub claims: Vec<crate::claims::ClaimMatcher>,
    /// Connection names, or `*` for every connection.
    pub connections: Vec<String>,
    pub roles: Vec<String>,
    pub mode: AccessMode,
    /// Sessions routed by this rule see result data unmasked.
    pub unmask: bool,
    /// Schema-only access (`mode` is then read-only): no individual row
    /// values, aggregates over groups of at least this many rows.
    pub schema_only: Option<u32>,
    /// What the sessions it routes may spend.
    pub budgets: Option<Budgets>,
    /// The ceiling on the statement timeout of the sessions it routes.
    pub statement_timeout: Option<std::time::Duration>,
    /// Its roles are usable only through a grant.
    pub jit: Option<JitRule>,
}

/// How a JIT access rule's grants are approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRule {
    pub max_duration: std::time::Duration,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// Requests of principals whose claims all match are granted by the
    /// policy at once (none: never).
    pub preapprove: Vec<crate::claims::ClaimMatcher>,
}

impl JitRule {
    /// Whether `p`'s requests are granted at once.
    pub fn preapproves(&self, p: &Principal) -> bool {
        !self.preapprove.is_empty() && self.preapprove.iter().all(|c| c.matches(&p.claims))
    }
}

/// How a grant the policy made (`jit.preapprove`) names its decider:
/// `policy:<access rule>`.
pub const POLICY_VOTER: &str = "policy:";

/// A live grant of one role on one connection to the principal at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub connection: String,
    pub role: String,
    pub expires_at: std::time::SystemTime,
    /// Made by the policy (`jit.preapprove`), not by approvers.
    pub by_policy: bool,
}

impl AccessRule {
    /// Whether the rule's matchers all hold for `p`: a group it names (if
    /// it names any), a subject glob (if any), and every claim condition.
    /// A rule with no matcher matches nobody.
    pub fn matches(&self, p: &Principal) -> bool {
        let any = !self.groups.is_empty() || !self.subjects.is_empty() || !self.claims.is_empty();
        any && (self.groups.is_empty() || p.in_any_group(&self.groups))
            && (self.subjects.is_empty()
                || self
                    .subjects
                    .iter()
                    .any(|s| crate::claims::glob(s, &p.subject)))
            && self.claims.iter().all(|c| c.matches(&p.claims))
    }

    fn covers(&self, connection: &str) -> bool {
        self.connections.iter().any(|c| c == "*" || c == connection)
    }

    /// The grant that lets `role` be used through this rule: `Ok(None)`
    /// for a rule that needs none, `Err(())` when it needs one and there is
    /// none.
    ///
    /// A grant the policy made (`jit.preapprove`) serves only a principal
    /// that still matches the pre-approval: another principal with the same
    /// subject (a GitHub Actions job of another branch in the same
    /// environment) does not inherit it.
    fn grant_for<'g>(
        &self,
        p: &Principal,
        connection: &str,
        role: &str,
        grants: &'g [Grant],
    ) -> Result<Option<&'g Grant>, ()> {
        let Some(jit) = &self.jit else {
            return Ok(None);
        };
        grants
            .iter()
            .filter(|g| g.connection == connection && g.role == role)
            .filter(|g| !g.by_policy || jit.preapproves(p))
            .max_by_key(|g| g.expires_at)
            .map(Some)
            .ok_or(())
    }
}

/// The compiled access section: rules plus the role profiles of each
/// connection.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    rules: Vec<AccessRule>,
    /// Connection name → its role profile names.
    connections: BTreeMap<String, Vec<String>>,
}

/// Where a session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub connection: String,
    pub role: String,
    /// The access rule that granted the route.
    pub rule: String,
    pub mode: AccessMode,
    /// Schema-only access: the fewest rows an aggregate's group must hold.
    pub schema_only: Option<u32>,
    /// The access rule's budgets.
    pub budgets: Option<Budgets>,
    /// The access rule's ceiling on the statement timeout.
    pub statement_timeout: Option<std::time::Duration>,
    /// Whether the session is exempt from masking.
    pub unmask: bool,
    /// Whether the role is the principal's first allowed one because the
    /// requested `user` named no role profile.
    pub role_defaulted: bool,
    /// The JIT grant the route uses: the session ends when it does.
    pub grant: Option<Grant>,
    /// On a read-only route: how the principal could get writes on the
    /// same connection, for the hint of a refused write.
    pub writes: Option<Writes>,
}

/// How a principal on a read-only route can get writes on its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes {
    /// A read-write role profile it may use now (another `user`).
    Role(String),
    /// A read-write role it may request just in time.
    Request {
        connection: String,
        role: String,
        max: std::time::Duration,
    },
}

impl Writes {
    /// The hint of a write refused on the read-only route (`None`: no way
    /// to writes exists for the principal).
    pub fn hint(writes: Option<&Writes>) -> crate::hint::Hint {
        use crate::hint::{Hint, access_request};
        match writes {
            Some(Writes::Role(role)) => Hint::never(
                "read-only",
                format!("this role profile is read-only; use role profile \"{role}\" to write"),
            ),
            Some(Writes::Request {
                connection,
                role,
                max,
            }) => Hint::never(
                "read-only",
                format!("this role profile is read-only; request write access to role \"{role}\" just in time, then reconnect as it"),
            )
            .with_command(access_request(connection, role, *max)),
            None => Hint::never(
                "read-only",
                "only reads are allowed to you on this connection; no role you could use or request writes",
            ),
        }
    }
}

/// Why a principal gets no route. Displays as the message the client sees:
/// it lists what the principal may use and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No rule grants the principal the connection (or it does not exist:
    /// the two are indistinguishable to the client on purpose).
    NoAccess {
        connection: String,
        allowed: Vec<(String, Vec<String>)>,
    },
    /// The connection is granted, but not the requested role profile.
    RoleNotAllowed {
        connection: String,
        role: String,
        allowed_roles: Vec<String>,
    },
    /// The role is granted just in time, and the principal holds no live
    /// grant of it.
    NeedsGrant {
        connection: String,
        role: String,
        /// The longest grant its rule allows.
        max: std::time::Duration,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NoAccess {
                connection,
                allowed,
            } => {
                write!(f, "no access rule grants you connection \"{connection}\"")?;
                if allowed.is_empty() {
                    write!(f, "; you may use no connection")
                } else {
                    let list: Vec<String> = allowed
                        .iter()
                        .map(|(c, roles)| format!("{c} (roles: {})", roles.join(", ")))
                        .collect();
                    write!(f, "; you may use: {}", list.join("; "))
                }
            }
            RouteError::RoleNotAllowed {
                connection,
                role,
                allowed_roles,
            } => write!(
                f,
                "role \"{role}\" on connection \"{connection}\" is not granted to you; you may use: {}",
                allowed_roles.join(", ")
            ),
            RouteError::NeedsGrant {
                connection,
                role,
                max,
            } => write!(
                f,
                "role \"{role}\" on connection \"{connection}\" needs a just-in-time grant, and you hold none; request one with: {}",
                crate::hint::access_request(connection, role, *max)
            ),
        }
    }
}

impl std::error::Error for RouteError {}

impl RouteError {
    /// What the principal may do instead.
    pub fn hint(&self) -> crate::hint::Hint {
        use crate::hint::{Hint, access_request};
        match self {
            RouteError::NoAccess { allowed, .. } if allowed.is_empty() => Hint::never(
                "access",
                "no access rule grants you any connection; ask an administrator for one",
            ),
            RouteError::NoAccess { allowed, .. } => {
                let names: Vec<&str> = allowed.iter().map(|(c, _)| c.as_str()).collect();
                Hint::never(
                    "access",
                    format!("use a connection you may use: {}", names.join(", ")),
                )
            }
            RouteError::RoleNotAllowed { allowed_roles, .. } => Hint::never(
                "access",
                format!(
                    "use a role profile you may use on this connection: {}",
                    allowed_roles.join(", ")
                ),
            ),
            RouteError::NeedsGrant {
                connection,
                role,
                max,
            } => Hint::never(
                "access",
                "request the role just in time, and connect again once the grant is approved",
            )
            .with_command(access_request(connection, role, *max)),
        }
    }
}

impl AccessPolicy {
    /// `connections` maps each connection name to its role profile names.
    pub fn new(rules: Vec<AccessRule>, connections: BTreeMap<String, Vec<String>>) -> Self {
        AccessPolicy { rules, connections }
    }

    /// The rules that match `p` on `connection` and name an existing role,
    /// in file order, with each role they name.
    fn candidates<'a>(
        &'a self,
        p: &'a Principal,
        connection: &'a str,
    ) -> impl Iterator<Item = (&'a AccessRule, &'a String)> + 'a {
        let existing = self.connections.get(connection);
        self.rules
            .iter()
            .filter(move |r| r.matches(p) && r.covers(connection))
            .flat_map(|r| r.roles.iter().map(move |role| (r, role)))
            .filter(move |(_, role)| existing.is_some_and(|e| e.contains(role)))
    }

    /// The roles `p` may use on `connection` now (JIT roles only through a
    /// live grant), in rule order, without duplicates. Empty when the
    /// connection does not exist.
    pub fn allowed_roles(&self, p: &Principal, connection: &str, grants: &[Grant]) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for (rule, role) in self.candidates(p, connection) {
            if rule.grant_for(p, connection, role, grants).is_ok() && !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        roles
    }

    /// The names of every connection, in order.
    pub fn connection_names(&self) -> impl Iterator<Item = &str> {
        self.connections.keys().map(String::as_str)
    }

    /// Every connection `p` may use now, with its roles.
    pub fn allowed(&self, p: &Principal, grants: &[Grant]) -> Vec<(String, Vec<String>)> {
        self.connections
            .keys()
            .map(|c| (c.clone(), self.allowed_roles(p, c, grants)))
            .filter(|(_, roles)| !roles.is_empty())
            .collect()
    }

    /// Whether routing `p` to `connection` may depend on its grants (a JIT
    /// rule matches): only then need they be looked up.
    pub fn needs_grants(&self, p: &Principal, connection: &str) -> bool {
        self.candidates(p, connection)
            .any(|(rule, _)| rule.jit.is_some())
    }

    /// The JIT rule under which `p` may request `role` on `connection`: the
    /// first matching rule with `jit` naming it.
    pub fn jit_rule<'a>(
        &'a self,
        p: &'a Principal,
        connection: &'a str,
        role: &str,
    ) -> Option<&'a AccessRule> {
        self.candidates(p, connection)
            .find(|(rule, r)| rule.jit.is_some() && *r == role)
            .map(|(rule, _)| rule)
    }

    /// Picks the route for `p` asking for `connection` as `requested_role`,
    /// given the principal's live grants.
    pub fn route(
        &self,
        p: &Principal,
        connection: &str,
        requested_role: &str,
        grants: &[Grant],
    ) -> Result<Route, RouteError> {
        let allowed_roles = self.allowed_roles(p, connection, grants);
        // The longest grant of the requested role, if it is a JIT one.
        let requested_jit = || {
            self.candidates(p, connection)
                .filter(|(_, role)| *role == requested_role)
                .find_map(|(rule, _)| Some(rule.jit.as_ref()?.max_duration))
        };
        let needs_grant = |max| RouteError::NeedsGrant {
            connection: connection.to_string(),
            role: requested_role.to_string(),
            max,
        };
        let Some(first) = allowed_roles.first() else {
            if let Some(max) = requested_jit() {
                return Err(needs_grant(max));
            }
            return Err(RouteError::NoAccess {
                connection: connection.to_string(),
                allowed: self.allowed(p, grants),
            });
        };
        let (role, role_defaulted) = if allowed_roles.iter().any(|r| r == requested_role) {
            (requested_role, false)
        } else if let Some(max) = requested_jit() {
            return Err(needs_grant(max));
        } else if self.connections[connection]
            .iter()
            .any(|r| r == requested_role)
        {
            return Err(RouteError::RoleNotAllowed {
                connection: connection.to_string(),
                role: requested_role.to_string(),
                allowed_roles,
            });
        } else {
            (first.as_str(), true)
        };
        let (rule, grant) = self
            .rule_for(p, connection, role, grants)
            .expect("an allowed role comes from a matching rule");
        let writes = match rule.mode {
            AccessMode::ReadOnly => self.writes(p, connection, role, grants),
            AccessMode::ReadWrite => None,
        };
        Ok(Route {
            connection: connection.to_string(),
            role: role.to_string(),
            rule: rule.name.clone(),
            mode: rule.mode,
            schema_only: rule.schema_only,
            budgets: rule.budgets,
            statement_timeout: rule.statement_timeout,
            unmask: rule.unmask,
            role_defaulted,
            grant: grant.cloned(),
            writes,
        })
    }

    /// The rule that routes `p` to `role` on `connection` with `grants`
    /// (the first matching rule naming the role that it may use), and the
    /// grant it uses.
    fn rule_for<'a, 'g>(
        &'a self,
        p: &'a Principal,
        connection: &'a str,
        role: &str,
        grants: &'g [Grant],
    ) -> Option<(&'a AccessRule, Option<&'g Grant>)> {
        self.candidates(p, connection)
            .filter(|(_, r)| *r == role)
            .find_map(|(rule, _)| Some((rule, rule.grant_for(p, connection, role, grants).ok()?)))
    }

    /// How `p`, routed read-only as `current`, could write on
    /// `connection`: a role that routes read-write now first, else a role
    /// that a grant would route read-write (its first rule is a read-write
    /// JIT rule). (Asking for `current` again routes the same way.)
    fn writes(
        &self,
        p: &Principal,
        connection: &str,
        current: &str,
        grants: &[Grant],
    ) -> Option<Writes> {
        let mut roles: Vec<&str> = Vec::new();
        for (_, role) in self.candidates(p, connection) {
            if role != current && !roles.contains(&role.as_str()) {
                roles.push(role);
            }
        }
        let now = roles.iter().find(|role| {
            self.rule_for(p, connection, role, grants)
                .is_some_and(|(rule, _)| rule.mode == AccessMode::ReadWrite)
        });
        if let Some(role) = now {
            return Some(Writes::Role(role.to_string()));
        }
        // With a grant of the role, its first rule would route it.
        roles.iter().find_map(|role| {
            let (rule, _) = self
                .candidates(p, connection)
                .find(|(_, r)| r.as_str() == *role)?;
            let jit = rule
                .jit
                .as_ref()
                .filter(|_| rule.mode == AccessMode::ReadWrite)?;
            Some(Writes::Request {
                connection: connection.to_string(),
                role: role.to_string(),
                max: jit.max_duration,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn principal(sub: &str, groups: &[&str]) -> Principal {
        Principal {
            issuer_name: "dev".into(),
            issuer: "airlock-dev".into(),
            subject: sub.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            act: None,
            token_id: None,
            expires_at: SystemTime::UNIX_EPOCH,
            claims: Default::default(),
            act_chain: Vec::new(),
        }
    }

    fn rule(
        name: &str,
        groups: &[&str],
        conns: &[&str],
        roles: &[&str],
        mode: AccessMode,
    ) -> AccessRule {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect();
        AccessRule {
            name: name.into(),
            groups: v(groups),
            subjects: vec![],
            claims: vec![],
            connections: v(conns),
            roles: v(roles),
            mode,
            schema_only: None,
            budgets: None,
            statement_timeout: None,
            unmask: false,
            jit: None,
        }
    }

    fn policy() -> AccessPolicy {
        let mut conns = BTreeMap::new();
        conns.insert(
            "orders".to_string(),
            vec!["readonly".to_string(), "admin".to_string()],
        );
        conns.insert("billing".to_string(), vec!["readonly".to_string()]);
        conns.insert("secret".to_string(), vec!["admin".to_string()]);
        let mut ci = rule(
            "ci",
            &[],
            &["billing"],
            &["readonly"],
            AccessMode::ReadWrite,
        );
        ci.subjects = vec!["repo:acme/app".into()];
        AccessPolicy::new(
            vec![
                rule(
                    "agents-read",
                    &["ai-agents"],
                    &["orders"],
                    &["readonly"],
                    AccessMode::ReadOnly,
                ),
                rule(
                    "dba",
                    &["dba"],
                    &["*"],
                    &["readonly", "admin"],
                    AccessMode::ReadWrite,
                ),
                ci,
            ],
            conns,
        )
    }

    /// Who asks, for which connection and role; the route's role, rule,
    /// mode and whether the role was defaulted, or the error text.
    type Case<'a> = (
        &'a Principal,
        &'a str,
        &'a str,
        Result<(&'a str, &'a str, AccessMode, bool), &'a str>,
    );

    #[test]
    fn every_matcher_of_a_rule_must_hold() {
        use crate::claims::{ClaimMatcher, ClaimPath, Claims};
        let claim = |path: &str, accepts: &[&str]| ClaimMatcher {
            name: path.into(),
            path: ClaimPath::parse(path).unwrap(),
            accepts: accepts.iter().map(|s| s.to_string()).collect(),
        };
        let mut ci = rule("ci", &[], &["orders"], &["admin"], AccessMode::ReadWrite);
        ci.subjects = vec!["repo:acme/app:*".into()];
        ci.claims = vec![
            claim("repository", &["acme/app"]),
            claim("ref", &["refs/heads/main"]),
        ];
        let gh = |sub: &str, claims: serde_json::Value| Principal {
            claims: Claims::new(claims.as_object().unwrap().clone()),
            ..principal(sub, &[])
        };
        let main = gh(
            "repo:acme/app:ref:refs/heads/main",
            serde_json::json!({"repository": "acme/app", "ref": "refs/heads/main"}),
        );
        assert!(ci.matches(&main));
        for near_miss in [
            gh(
                "repo:acme/app:ref:refs/heads/dev",
                serde_json::json!({"repository": "acme/app", "ref": "refs/heads/dev"}),
            ),
            gh(
                "repo:acme/app:pull_request",
                serde_json::json!({"repository": "acme/app", "ref": "refs/pull/7/merge"}),
            ),
            gh(
                "repo:acme/app2:ref:refs/heads/main",
                serde_json::json!({"repository": "acme/app2", "ref": "refs/heads/main"}),
            ),
            // The subject matches, a claim is missing.
            gh(
                "repo:acme/app:ref:refs/heads/main",
                serde_json::json!({"repository": "acme/app"}),
            ),
            // The claim has the wrong type.
            gh(
                "repo:acme/app:ref:refs/heads/main",
                serde_json::json!({"repository": "acme/app", "ref": {"name": "refs/heads/main"}}),
            ),
        ] {
            assert!(!ci.matches(&near_miss), "{near_miss:?}");
        }
        // Groups and subjects together: both must hold.
        let mut both = rule(
            "both",
            &["dba"],
            &["orders"],
            &["admin"],
            AccessMode::ReadWrite,
        );
        both.subjects = vec!["alice".into()];
        assert!(both.matches(&principal("alice", &["dba"])));
        assert!(!both.matches(&principal("bob", &["dba"])));
        assert!(!both.matches(&principal("alice", &["ai-agents"])));
        // No matcher: nobody.
        let none = rule("none", &[], &["orders"], &["admin"], AccessMode::ReadWrite);
        assert!(!none.matches(&principal("alice", &["dba"])));
    }

    #[test]
    fn routes() {
        let p = policy();
        let agent = principal("devin", &["ai-agents"]);
        let dba = principal("alice", &["dba"]);
        let both = principal("bob", &["ai-agents", "dba"]);
        let ci = principal("repo:acme/app", &[]);
        let cases: &[Case] = &[
            (
                &agent,
                "orders",
                "readonly",
                Ok(("readonly", "agents-read", AccessMode::ReadOnly, false)),
            ),
            (
                &agent,
                "orders",
                "root",
                Ok(("readonly", "agents-read", AccessMode::ReadOnly, true)),
            ),
            (
                &agent,
                "orders",
                "admin",
                Err(
                    "role \"admin\" on connection \"orders\" is not granted to you; you may use: readonly",
                ),
            ),
            (
                &agent,
                "billing",
                "readonly",
                Err(
                    "no access rule grants you connection \"billing\"; you may use: orders (roles: readonly)",
                ),
            ),
            (
                &agent,
                "nope",
                "readonly",
                Err(
                    "no access rule grants you connection \"nope\"; you may use: orders (roles: readonly)",
                ),
            ),
            (
                &dba,
                "secret",
                "admin",
                Ok(("admin", "dba", AccessMode::ReadWrite, false)),
            ),
            (
                &dba,
                "orders",
                "postgres",
                Ok(("readonly", "dba", AccessMode::ReadWrite, true)),
            ),
            // The first rule in file order decides the mode.
            (
                &both,
                "orders",
                "readonly",
                Ok(("readonly", "agents-read", AccessMode::ReadOnly, false)),
            ),
            (
                &both,
                "orders",
                "admin",
                Ok(("admin", "dba", AccessMode::ReadWrite, false)),
            ),
            (
                &ci,
                "billing",
                "x",
                Ok(("readonly", "ci", AccessMode::ReadWrite, true)),
            ),
            (
                &principal("eve", &["interns"]),
                "orders",
                "readonly",
                Err("no access rule grants you connection \"orders\"; you may use no connection"),
            ),
        ];
        for (who, conn, role, want) in cases {
            let got = p.route(who, conn, role, &[]);
            match (want, got) {
                (Ok((r, rule, mode, defaulted)), Ok(route)) => {
                    assert_eq!(
                        (
                            route.role.as_str(),
                            route.rule.as_str(),
                            route.mode,
                            route.role_defaulted
                        ),
                        (*r, *rule, *mode, *defaulted),
                        "{} {conn} {role}",
                        who.subject
                    );
                    assert_eq!(route.connection, *conn);
                }
                (Err(msg), Err(e)) => {
                    assert_eq!(e.to_string(), *msg, "{} {conn} {role}", who.subject)
                }
                (want, got) => panic!("{} {conn} {role}: want {want:?}, got {got:?}", who.subject),
            }
        }
    }

    #[test]
    fn error_lists_only_the_principals_connections() {
        let err = policy()
            .route(&principal("devin", &["ai-agents"]), "secret", "admin", &[])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("billing"));
        assert!(err.contains("orders"));
    }

    /// A hint may only name a role that would really route read-write:
    /// one whose first usable rule is read-only does not, even if a later
    /// rule lists it read-write.
    #[test]
    fn writes_names_only_roles_that_route_read_write() {
        let conns = BTreeMap::from([(
            "orders".to_string(),
            vec!["readonly".to_string(), "writer".to_string()],
        )]);
        let devin = principal("devin", &["ai-agents"]);
        let ro = rule(
            "agents-read",
            &["ai-agents"],
            &["orders"],
            &["readonly", "writer"],
            AccessMode::ReadOnly,
        );
        let rw = rule(
            "agents-write",
            &["ai-agents"],
            &["orders"],
            &["writer"],
            AccessMode::ReadWrite,
        );
        let shadowed = AccessPolicy::new(vec![ro.clone(), rw.clone()], conns.clone());
        let route = shadowed.route(&devin, "orders", "readonly", &[]).unwrap();
        assert_eq!(route.writes, None);
        let first = AccessPolicy::new(vec![rw, ro], conns);
        let route = first.route(&devin, "orders", "readonly", &[]).unwrap();
        assert_eq!(route.writes, Some(Writes::Role("writer".into())));
    }

    fn jit_policy() -> AccessPolicy {
        let mut jit = rule(
            "agents-write-jit",
            &["ai-agents"],
            &["orders"],
            &["admin"],
            AccessMode::ReadWrite,
        );
        jit.jit = Some(JitRule {
            max_duration: std::time::Duration::from_secs(3600),
            approvers: vec!["dba".into()],
            min_approvals: 1,
            preapprove: vec![],
        });
        let read = rule(
            "agents-read",
            &["ai-agents"],
            &["orders"],
            &["readonly"],
            AccessMode::ReadOnly,
        );
        let dba = rule("dba", &["dba"], &["*"], &["admin"], AccessMode::ReadWrite);
        let mut conns = BTreeMap::new();
        conns.insert(
            "orders".to_string(),
            vec!["readonly".to_string(), "admin".to_string()],
        );
        AccessPolicy::new(vec![jit, read, dba], conns)
    }

    fn grant(id: &str, connection: &str, role: &str, secs: u64) -> Grant {
        Grant {
            id: id.into(),
            connection: connection.into(),
            role: role.into(),
            expires_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            by_policy: false,
        }
    }

    #[test]
    fn a_jit_role_needs_a_live_grant() {
        let p = jit_policy();
        let devin = principal("devin", &["ai-agents"]);
        assert!(p.needs_grants(&devin, "orders"));
        assert!(!p.needs_grants(&principal("bob", &["dba"]), "orders"));
        let err = p.route(&devin, "orders", "admin", &[]).unwrap_err();
        assert_eq!(
            err,
            RouteError::NeedsGrant {
                connection: "orders".into(),
                role: "admin".into(),
                max: std::time::Duration::from_secs(3600),
            }
        );
        assert!(
            err.to_string()
                .contains("airlock access request orders --role admin")
        );
        assert_eq!(
            err.hint().command.as_deref(),
            Some("airlock access request orders --role admin --for 30m --reason \"<why>\"")
        );
        // Without a grant the JIT role is not the default either.
        let route = p.route(&devin, "orders", "postgres", &[]).unwrap();
        assert_eq!((route.role.as_str(), &route.grant), ("readonly", &None));
        // Its read-only route says how to get writes: request them.
        assert_eq!(
            route.writes,
            Some(Writes::Request {
                connection: "orders".into(),
                role: "admin".into(),
                max: std::time::Duration::from_secs(3600),
            })
        );
        // With a grant, the writable role is there to connect as.
        let granted = [grant("g1", "orders", "admin", 4_000_000_000)];
        let route = p.route(&devin, "orders", "readonly", &granted).unwrap();
        assert_eq!(route.writes, Some(Writes::Role("admin".into())));
        // A read-write route needs none.
        let bob = principal("bob", &["dba"]);
        assert_eq!(p.route(&bob, "orders", "admin", &[]).unwrap().writes, None);
        // A grant of another role or connection does not count.
        let other = [
            grant("g0", "orders", "readonly", 10),
            grant("g1", "billing", "admin", 10),
        ];
        assert!(p.route(&devin, "orders", "admin", &other).is_err());
        // With one, the latest-ending grant is used.
        let grants = [
            grant("g1", "orders", "admin", 10),
            grant("g2", "orders", "admin", 20),
        ];
        let route = p.route(&devin, "orders", "admin", &grants).unwrap();
        assert_eq!(route.rule, "agents-write-jit");
        assert_eq!(route.grant.unwrap().id, "g2");
        // A standing rule needs no grant.
        let route = p
            .route(&principal("bob", &["dba"]), "orders", "admin", &[])
            .unwrap();
        assert_eq!((route.rule.as_str(), route.grant), ("dba", None));
        assert_eq!(
            p.jit_rule(&devin, "orders", "admin")
                .map(|r| r.name.as_str()),
            Some("agents-write-jit")
        );
        assert!(p.jit_rule(&devin, "orders", "readonly").is_none());
        assert!(
            p.jit_rule(&principal("bob", &["dba"]), "orders", "admin")
                .is_none()
        );
    }
}
