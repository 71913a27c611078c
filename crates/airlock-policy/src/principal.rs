//! Who is asking: the identity a verified token maps to.

use std::time::SystemTime;

/// A verified caller. Built by `airlock-identity` from a token's claims; the
/// policy core only reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The configured issuer's name (`identity.issuers[].name`, or `dev` for
    /// the built-in dev issuer).
    pub issuer_name: String,
    /// The token's `iss` claim.
    pub issuer: String,
    /// The token's `sub` claim.
    pub subject: String,
    /// Groups from the issuer's groups claim (a string or an array of strings).
    pub groups: Vec<String>,
    /// `act.sub` (RFC 8693): the party acting (an agent) for the subject
    /// (the human on whose behalf the request is made), when present.
    pub act: Option<String>,
    /// The whole delegation chain (RFC 8693 §4.1, nested `act`): the current
    /// actor first, then each prior actor. Empty without `act`.
    pub act_chain: Vec<String>,
    /// The token's `jti`, when present.
    pub token_id: Option<String>,
    /// The token's `exp`.
    pub expires_at: SystemTime,
    /// Every claim of the token, for `claims` matchers.
    pub claims: crate::claims::Claims,
}

impl Principal {
    /// Whether the principal is a member of `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Every party of the request: the subject and each actor of its chain.
    pub fn parties(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.subject.as_str()).chain(self.act_chain.iter().map(String::as_str))
    }

    /// Whether the principal is in any of `groups`.
    pub fn in_any_group<S: AsRef<str>>(&self, groups: &[S]) -> bool {
        groups.iter().any(|g| self.in_group(g.as_ref()))
    }
}
