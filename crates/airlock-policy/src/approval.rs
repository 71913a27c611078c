//! Who may decide an approval (SPEC §8): the rules every door and the API
//! apply alike.
//!
//! - An approver is in one of the approval's `approvers` groups.
//! - Nobody decides their own request: no party of the requester's token
//!   (its subject, on whose behalf it asks, and every actor of its RFC 8693
//!   delegation chain) may vote, whichever part of the voter's own chain
//!   names them. A principal counts as its subject (RFC 8693: `sub` is the
//!   party on whose behalf an actor acts), so `min_approvals` counts
//!   distinct subjects ([`human`]).
//! - A denial needs a reason. An admin may deny anything, but approves only
//!   as an approver.

use crate::Principal;

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester<'a> {
    pub subject: &'a str,
    /// The actors of its delegation chain, as stored ([`encode_actors`]).
    pub act: Option<&'a str>,
}

/// A delegation chain as one stored value: the actor itself for a chain of
/// one (as events and rows always held it), a JSON array for a longer one.
pub fn encode_actors(chain: &[String]) -> Option<String> {
    match chain {
        [] => None,
        // One that could read as a JSON array is stored as one.
        [one] if !one.starts_with('[') => Some(one.clone()),
        many => Some(serde_json::Value::from(many.to_vec()).to_string()),
    }
}

/// The actors of a stored chain ([`encode_actors`]).
pub fn decode_actors(stored: Option<&str>) -> Vec<String> {
    match stored {
        None => Vec::new(),
        Some(s) if s.starts_with('[') => {
            serde_json::from_str(s).unwrap_or_else(|_| vec![s.to_string()])
        }
        Some(s) => vec![s.to_string()],
    }
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    Deny,
}

/// Why a vote is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteRefusal {
    /// The voter is (or acts for) the requester.
    OwnRequest,
    /// The voter is in none of the approver groups.
    NotAnApprover { approvers: Vec<String> },
    /// A denial without a reason.
    ReasonRequired,
    /// The voter's token acts for someone else (`act`): an agent does not
    /// decide for a person.
    Delegated,
}

impl std::fmt::Display for VoteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VoteRefusal::OwnRequest => {
                write!(
                    f,
                    "you cannot decide a request you made or that was made for you"
                )
            }
            VoteRefusal::NotAnApprover { approvers } => write!(
                f,
                "you are not an approver of this request: that takes one of the groups {}",
                approvers.join(", ")
            ),
            VoteRefusal::ReasonRequired => write!(f, "a denial needs a reason"),
            VoteRefusal::Delegated => write!(
                f,
                "a token that acts for someone else (an act claim) cannot decide requests; approvers vote with their own token"
            ),
        }
    }
}

/// Whether `p` is one of `approvers`: each entry a group name, or
/// `subject:<glob>` (a glob on `sub`), or `claim:<path>=<glob>` (a claim
/// condition, as an access rule's `claims`). Machine identities and
/// principals without groups can so be approvers.
pub fn is_approver(p: &Principal, approvers: &[String]) -> bool {
    approvers.iter().any(|a| {
        if let Some(glob) = a.strip_prefix("subject:") {
            crate::claims::glob(glob, &p.subject)
        } else if let Some(claim) = a.strip_prefix("claim:") {
            claim.split_once('=').is_some_and(|(path, value)| {
                crate::claims::ClaimMatcher::new(path, vec![value.to_string()]).matches(&p.claims)
            })
        } else {
            p.in_group(a)
        }
    })
}

/// Whether an approvers entry is well formed; the problem otherwise.
pub fn check_approver(entry: &str) -> Result<(), String> {
    if let Some(glob) = entry.strip_prefix("subject:") {
        return if glob.is_empty() {
            Err("subject: needs a glob, such as subject:alice@example.com".into())
        } else {
            Ok(())
        };
    }
    if let Some(claim) = entry.strip_prefix("claim:") {
        return match claim.split_once('=') {
            Some((path, value))
                if crate::claims::ClaimPath::parse(path).is_some() && !value.is_empty() =>
            {
                Ok(())
            }
            _ => Err("claim: needs path=value, such as claim:team=dba".into()),
        };
    }
    if entry.is_empty() {
        return Err("an empty group name".into());
    }
    Ok(())
}

/// Who a principal counts as among approvers: its subject, the party on
/// whose behalf it acts.
pub fn human(p: &Principal) -> &str {
    &p.subject
}

/// Whether `voter` may cast `vote` on a request by `requester` whose
/// approvers are `approvers`; `admin` for a caller in an admin group.
pub fn check_vote(
    requester: &Requester<'_>,
    voter: &Principal,
    approvers: &[String],
    vote: Vote,
    reason: Option<&str>,
    admin: bool,
) -> Result<(), VoteRefusal> {
    // Approvals are people's decisions, recorded as theirs: a token an
    // agent holds for a person does not vote.
    if !voter.act_chain.is_empty() {
        return Err(VoteRefusal::Delegated);
    }
    let actors = decode_actors(requester.act);
    let theirs: Vec<&str> = std::iter::once(requester.subject)
        .chain(actors.iter().map(String::as_str))
        .collect();
    if voter.parties().any(|m| theirs.contains(&m)) {
        return Err(VoteRefusal::OwnRequest);
    }
    if vote == Vote::Deny && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(VoteRefusal::ReasonRequired);
    }
    let approver = is_approver(voter, approvers);
    if !(approver || (vote == Vote::Deny && admin)) {
        return Err(VoteRefusal::NotAnApprover {
            approvers: approvers.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn who(sub: &str, act: Option<&str>, groups: &[&str]) -> Principal {
        Principal {
            issuer_name: "dev".into(),
            issuer: "airlock-dev".into(),
            subject: sub.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            act: act.map(Into::into),
            act_chain: act.map(|a| vec![a.to_string()]).unwrap_or_default(),
            token_id: None,
            expires_at: SystemTime::UNIX_EPOCH,
            claims: Default::default(),
        }
    }

    #[test]
    fn every_party_of_a_delegation_chain_is_excluded() {
        let dba = vec!["dba".to_string()];
        let chain = encode_actors(&["devin".into(), "planner".into()]);
        assert_eq!(chain.as_deref(), Some(r#"["devin","planner"]"#));
        assert_eq!(decode_actors(chain.as_deref()), ["devin", "planner"]);
        assert_eq!(decode_actors(Some("devin")), ["devin"], "rows of one actor");
        let req = Requester {
            subject: "alice",
            act: chain.as_deref(),
        };
        for p in [
            who("alice", None, &["dba"]),
            who("devin", None, &["dba"]),
            who("planner", None, &["dba"]),
        ] {
            assert_eq!(
                check_vote(&req, &p, &dba, Vote::Approve, None, false),
                Err(VoteRefusal::OwnRequest),
                "{p:?}"
            );
        }
        // A token an agent holds for a person never votes, whoever it names.
        let mut chain = who("carol", Some("x"), &["dba"]);
        chain.act_chain = vec!["x".into(), "planner".into()];
        for p in [who("carol", Some("agent"), &["dba"]), chain] {
            for (vote, reason) in [(Vote::Approve, None), (Vote::Deny, Some("no"))] {
                assert_eq!(
                    check_vote(&req, &p, &dba, vote, reason, true),
                    Err(VoteRefusal::Delegated),
                    "{p:?}"
                );
            }
        }
        // An actor that looks like a stored chain is stored as one.
        let odd = encode_actors(&["[]".into()]);
        assert_eq!(decode_actors(odd.as_deref()), ["[]"]);
        assert_eq!(
            check_vote(
                &req,
                &who("bob", None, &["dba"]),
                &dba,
                Vote::Approve,
                None,
                false
            ),
            Ok(())
        );
    }

    #[test]
    fn approvers_are_groups_subject_globs_or_claims() {
        let mut p = who("alice@example.com", None, &["ops"]);
        p.claims = crate::claims::Claims::new(
            serde_json::json!({"team": "dba", "kubernetes.io": {"namespace": "platform"}})
                .as_object()
                .unwrap()
                .clone(),
        );
        let yes =
            |a: &[&str]| is_approver(&p, &a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(yes(&["ops"]));
        assert!(yes(&["subject:*@example.com"]));
        assert!(yes(&["claim:team=dba"]));
        assert!(yes(&["claim:kubernetes.io.namespace=plat*"]));
        assert!(!yes(&["dba"]));
        assert!(!yes(&["subject:bob@*"]));
        assert!(!yes(&["claim:team=sre", "claim:missing=*"]));
        assert!(!yes(&["claim:team"]), "a malformed entry matches nobody");
        assert!(check_approver("claim:team").is_err());
        assert!(check_approver("claim:a..b=x").is_err());
        assert!(check_approver("subject:").is_err());
        assert!(check_approver("claim:team=dba").is_ok());
        assert!(check_approver("dba").is_ok());
    }

    #[test]
    fn nobody_decides_their_own_request() {
        let dba = vec!["dba".to_string()];
        let req = Requester {
            subject: "devin",
            act: Some("alice"),
        };
        let check = |p: &Principal, vote, reason| check_vote(&req, p, &dba, vote, reason, false);
        assert_eq!(
            check(&who("bob", None, &["dba"]), Vote::Approve, None),
            Ok(())
        );
        for p in [who("devin", None, &["dba"]), who("alice", None, &["dba"])] {
            assert_eq!(
                check(&p, Vote::Approve, None),
                Err(VoteRefusal::OwnRequest),
                "{p:?}"
            );
            assert_eq!(
                check(&p, Vote::Deny, Some("no")),
                Err(VoteRefusal::OwnRequest)
            );
        }
        // RFC 8693: the subject is who the actor acts for.
        assert_eq!(human(&who("carol", Some("agent"), &[])), "carol");
        assert_eq!(human(&who("carol", None, &[])), "carol");
    }

    #[test]
    fn approvers_approve_admins_deny_denials_need_reasons() {
        let dba = vec!["dba".to_string()];
        let req = Requester {
            subject: "devin",
            act: None,
        };
        let outsider = who("eve", None, &["interns"]);
        let admin = who("root", None, &["platform"]);
        assert!(matches!(
            check_vote(&req, &outsider, &dba, Vote::Approve, None, false),
            Err(VoteRefusal::NotAnApprover { .. })
        ));
        assert!(matches!(
            check_vote(&req, &admin, &dba, Vote::Approve, None, true),
            Err(VoteRefusal::NotAnApprover { .. })
        ));
        assert_eq!(
            check_vote(&req, &admin, &dba, Vote::Deny, Some("not now"), true),
            Ok(())
        );
        let bob = who("bob", None, &["dba"]);
        for reason in [None, Some(""), Some("  ")] {
            assert_eq!(
                check_vote(&req, &bob, &dba, Vote::Deny, reason, false),
                Err(VoteRefusal::ReasonRequired)
            );
        }
    }
}
