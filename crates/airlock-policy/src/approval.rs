//! Who may decide an approval (SPEC §8): the rules every door and the API
//! apply alike.
//!
//! - An approver is in one of the approval's `approvers` groups.
//! - Nobody decides their own request: not the requester's subject, not the
//!   human the requester acts for, and not another agent acting for either
//!   of them. An agent acting for a human counts as that human, so
//!   `min_approvals` counts distinct humans ([`human`]).
//! - A denial needs a reason. An admin may deny anything, but approves only
//!   as an approver.

use crate::Principal;

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester<'a> {
    pub subject: &'a str,
    pub act: Option<&'a str>,
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
        }
    }
}

/// The human a principal counts as: the one it acts for, else itself.
pub fn human(p: &Principal) -> &str {
    p.act.as_deref().unwrap_or(&p.subject)
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
    let theirs = [Some(requester.subject), requester.act];
    let mine = [Some(voter.subject.as_str()), voter.act.as_deref()];
    if mine
        .iter()
        .flatten()
        .any(|m| theirs.iter().flatten().any(|t| t == m))
    {
        return Err(VoteRefusal::OwnRequest);
    }
    if vote == Vote::Deny && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(VoteRefusal::ReasonRequired);
    }
    let approver = voter.in_any_group(approvers);
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
            token_id: None,
            expires_at: SystemTime::UNIX_EPOCH,
            claims: Default::default(),
        }
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
        for p in [
            who("devin", None, &["dba"]),
            who("alice", None, &["dba"]),
            who("other-agent", Some("alice"), &["dba"]),
            who("devin-2", Some("devin"), &["dba"]),
        ] {
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
        assert_eq!(human(&who("agent", Some("carol"), &[])), "carol");
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
