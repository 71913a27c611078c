//! Refusal stand-ins. A refused message is replaced upstream by one the
//! upstream fails to parse or bind (`AIRLOCK_REFUSED_<n>`), so that ordering,
//! the aborted transaction and skip-until-Sync are PostgreSQL's own; the
//! resulting error is recognised by its token on the way back and rewritten
//! into the refusal. Nothing of the refused message reaches the upstream.

use bytes::BytesMut;

use super::{Inspector, Relay, Verdict, cstr};
use crate::codec::{self, Notice, Severity};
use crate::error::ProtocolError;

/// The token a refused message is replaced with, followed by its number.
const REFUSED_TOKEN: &str = "AIRLOCK_REFUSED_";

/// The syntax error PostgreSQL raises for a refusal's stand-in.
const SYNTAX_ERROR: &str = "42601";
/// The error PostgreSQL raises for a refused Bind's stand-in.
const UNDEFINED_STATEMENT: &str = "26000";

/// What replaces a refused message upstream.
pub(super) enum Standin {
    Query,
    Parse(Vec<u8>),
    Bind(Vec<u8>),
    /// An Execute: a Parse of the token into a statement named after it,
    /// which fails before any statement is created or replaced. (An Execute
    /// of a portal that does not exist would do, but a client can declare a
    /// cursor of any name.)
    Execute,
}

impl Standin {
    /// The stand-in of a refused message with tag `tag` and body `body`.
    pub(super) fn of(tag: u8, body: &[u8]) -> Result<Standin, ProtocolError> {
        Ok(match tag {
            b'P' => Standin::Parse(cstr(body)?.to_vec()),
            b'B' => Standin::Bind(cstr(body)?.to_vec()),
            b'E' => Standin::Execute,
            _ => Standin::Query,
        })
    }
}

/// How long refusals wait for their error before being forgotten (their
/// stand-in was skipped because an earlier error aborted the batch).
const MAX_PENDING: usize = 64;

/// A refusal waiting for its stand-in's error to come back.
pub(super) struct Refusal {
    id: u64,
    code: &'static str,
    message: String,
    /// A policy refusal's HINT.
    hint: Option<String>,
    /// What a syntax error adds: position, DETAIL, HINT.
    syntax: Option<Syntax>,
}

/// What a syntax error's ErrorResponse adds to the code and message.
#[derive(Debug, Clone, Copy)]
struct Syntax {
    position: Option<u32>,
    detail: Option<&'static str>,
    hint: Option<&'static str>,
}

impl Refusal {
    /// Writes the ErrorResponse the client gets instead of the stand-in's.
    pub(super) fn write(&self, to_client: &mut BytesMut) {
        let mut notice = Notice::new(Severity::Error, self.code, &self.message);
        notice.hint = self.hint.as_deref();
        if let Some(s) = self.syntax {
            notice.position = s.position;
            notice.detail = s.detail;
            notice.hint = s.hint;
        }
        codec::notice_message(&notice, to_client);
    }
}

impl<I: Inspector> Relay<I> {
    /// Queues the stand-in of a message refused with `refusal` (a
    /// [`Verdict::Refuse`] or [`Verdict::SyntaxError`]): one the upstream
    /// fails with an error naming the refusal's token.
    pub(super) fn refuse(
        &mut self,
        standin: Standin,
        refusal: Verdict,
        to_upstream: &mut BytesMut,
    ) {
        let (code, message, hint, syntax) = match refusal {
            Verdict::SyntaxError {
                code,
                message,
                position,
                detail,
                hint,
            } => {
                let syntax = Syntax {
                    position,
                    detail,
                    hint,
                };
                (code, message, None, Some(syntax))
            }
            Verdict::Refuse {
                code,
                message,
                hint,
            } => (code, message, hint, None),
            _ => unreachable!("only a refusal is refused"),
        };
        self.next_refusal += 1;
        let token = format!("{REFUSED_TOKEN}{}", self.next_refusal);
        match standin {
            // Fails to parse: 42601.
            Standin::Parse(name) => codec::parse(name, &token, to_upstream),
            Standin::Query => codec::query(&token, to_upstream),
            Standin::Execute => codec::parse(&token, &token, to_upstream),
            // Binds a statement that does not exist: 26000.
            Standin::Bind(portal) => bind_standin(&portal, &token, to_upstream),
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Refusal {
            id: self.next_refusal,
            code,
            message,
            hint,
            syntax,
        });
    }

    /// The refusal an upstream ErrorResponse answers, if it is one: a
    /// syntax error (the stand-in of a Query, Parse or Execute) or an
    /// unknown prepared statement (a Bind's) whose message names a pending
    /// refusal's token. The token is looked for anywhere in the message,
    /// so that it is found whatever language the upstream's `lc_messages`
    /// speaks and however it quotes it.
    pub(super) fn take_refusal(&mut self, body: &[u8]) -> Option<Refusal> {
        let fields = codec::notice_fields(body);
        let field = |c: u8| {
            fields
                .iter()
                .find(|(f, _)| *f == c)
                .map(|(_, v)| v.as_str())
        };
        match field(b'C')? {
            // A stand-in's text is its token alone: the error is at 1, and
            // an error raised at run time (a client's own `to_tsquery` of
            // the token's text) has no position.
            SYNTAX_ERROR if field(b'P') == Some("1") => {}
            UNDEFINED_STATEMENT => {}
            _ => return None,
        }
        let message = field(b'M')?;
        let (_, rest) = message.split_once(REFUSED_TOKEN)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id: u64 = rest[..digits].parse().ok()?;
        let at = self.pending.iter().position(|r| r.id == id)?;
        self.pending.remove(at)
    }
}

/// A refused Bind's stand-in: binds portal `portal` to statement `token`,
/// which does not exist (26000). The client could have created a statement
/// of that name itself (`PREPARE "AIRLOCK_REFUSED_1"`), so the message also
/// contradicts itself, two parameter formats for no parameter, and fails
/// anyway (08P01, checked once the statement is found).
fn bind_standin(portal: &[u8], token: &str, out: &mut BytesMut) {
    let mut body = Vec::with_capacity(portal.len() + token.len() + 12);
    for name in [portal, token.as_bytes()] {
        body.extend_from_slice(name);
        body.push(0);
    }
    // Two parameter formats (text), no parameter, no result format.
    for n in [2i16, 0, 0, 0, 0] {
        body.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(b"B");
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::super::testing::*;
    use crate::codec::{self, Notice, Severity};

    #[test]
    fn a_refused_message_is_replaced_by_its_standin() {
        let cases = [
            (
                "a Query, among others",
                vec![
                    msg(b'Q', b"select 1\0"),
                    msg(b'Q', b"drop table t\0"),
                    msg(b'Q', b"select 2\0"),
                ],
                vec![
                    msg(b'Q', b"select 1\0"),
                    msg(b'Q', b"AIRLOCK_REFUSED_1\0"),
                    msg(b'Q', b"select 2\0"),
                ],
            ),
            (
                // The rest of the batch goes on; the upstream skips it after
                // the error.
                "a Parse keeps its statement name",
                vec![
                    msg(b'P', b"s1\0drop table t\0\0\x01\0\0\0\x17"),
                    msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
                    msg(b'S', b""),
                ],
                vec![
                    msg(b'P', b"s1\0AIRLOCK_REFUSED_1\0\0\0"),
                    msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
                    msg(b'S', b""),
                ],
            ),
            (
                "a FunctionCall becomes a Query",
                vec![msg(b'F', b"\0\0\x04\xd2\0\0\0\0\0\0")],
                vec![msg(b'Q', b"AIRLOCK_REFUSED_1\0")],
            ),
        ];
        for (case, client, upstream) in cases {
            let mut relay = relay();
            assert_eq!(
                send(&mut relay, &client),
                cat(&upstream),
                "{case}: the refused text never goes upstream"
            );
        }
    }

    #[test]
    fn a_rewritten_message_goes_upstream_with_its_new_text_only() {
        let client = [
            msg(b'Q', b"select 1\0"),
            msg(b'Q', b"select count(*) from t\0"),
            // A Parse keeps its name and parameter types.
            msg(
                b'P',
                b"s1\0select count(*) from t where a = $1\0\0\x01\0\0\0\x17",
            ),
            msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
            msg(b'S', b""),
        ];
        let upstream = [
            msg(b'Q', b"select 1\0"),
            msg(b'Q', b"select count(*) from t having count(*) >= 10\0"),
            msg(
                b'P',
                b"s1\0select count(*) from t where a = $1 having count(*) >= 10\0\0\x01\0\0\0\x17",
            ),
            msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
            msg(b'S', b""),
        ];
        let mut relay = relay();
        assert_eq!(send(&mut relay, &client), cat(&upstream));
    }

    #[test]
    fn a_refusals_error_is_rewritten_in_order_with_the_other_answers() {
        let mut relay = relay();
        send(
            &mut relay,
            &[
                msg(b'Q', b"select 1\0"),
                msg(b'Q', b"drop table t\0"),
                msg(b'Q', b"select 2\0"),
            ],
        );
        // The upstream answers the first query, fails the stand-in, answers
        // the third.
        let got = answer(
            &mut relay,
            &[
                msg(b'C', b"SELECT 1\0"),
                msg(b'Z', b"I"),
                error("42601", "syntax error at or near \"AIRLOCK_REFUSED_1\""),
                msg(b'Z', b"I"),
                msg(b'C', b"SELECT 1\0"),
            ],
        );
        let got = messages(got);
        let tags: Vec<u8> = got.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"CZEZC");
        let fields = codec::notice_fields(&got[2].body);
        assert!(fields.contains(&(b'C', "42501".into())));
        assert!(fields.contains(&(b'M', "no drops".into())));
    }

    /// What the client gets for an upstream error after a refused Query.
    enum Gets {
        /// The refusal, with these fields among others.
        Refusal(&'static [(u8, &'static str)]),
        /// The upstream's error, as it is.
        Untouched,
    }

    #[test]
    fn an_upstream_error_is_the_refusal_only_when_it_names_its_token() {
        const NO_DROPS: Gets = Gets::Refusal(&[
            (b'C', "42501"),
            (b'M', "no drops"),
            (b'H', "leave out the drop"),
        ]);
        let mut at_runtime = BytesMut::new();
        codec::notice_message(
            &Notice::new(
                Severity::Error,
                "42601",
                "syntax error in tsquery: \"AIRLOCK_REFUSED_1 &\"",
            ),
            &mut at_runtime,
        );
        let cases = [
            (
                "in English",
                "drop table t",
                error("42601", "syntax error at or near \"AIRLOCK_REFUSED_1\""),
                NO_DROPS,
            ),
            (
                "in French",
                "drop table t",
                error(
                    "42601",
                    "erreur de syntaxe sur ou près de « AIRLOCK_REFUSED_1 »",
                ),
                NO_DROPS,
            ),
            (
                "in German",
                "drop table t",
                error("42601", "Syntaxfehler bei »AIRLOCK_REFUSED_1«"),
                NO_DROPS,
            ),
            (
                "the token alone",
                "drop table t",
                error("42601", "AIRLOCK_REFUSED_1"),
                NO_DROPS,
            ),
            (
                "a syntax error refused carries its position and hint",
                "selec 1",
                error("42601", "x AIRLOCK_REFUSED_1 x"),
                Gets::Refusal(&[
                    (b'C', "42601"),
                    (b'M', "syntax error at or near \"selec\""),
                    (b'P', "1"),
                    (b'H', "a hint"),
                ]),
            ),
            (
                "another refusal's number is not this one's",
                "drop table t",
                error("42601", "near AIRLOCK_REFUSED_12"),
                Gets::Untouched,
            ),
            (
                // A function's, at run time.
                "a syntax error elsewhere than at the stand-in's first character",
                "drop x",
                at_runtime,
                Gets::Untouched,
            ),
            (
                "an aborted transaction",
                "drop x",
                error(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                ),
                Gets::Untouched,
            ),
            (
                "no pending refusal's token",
                "drop x",
                error("42601", "syntax error at or near \"AIRLOCK_REFUSED_99\""),
                Gets::Untouched,
            ),
            (
                "neither a syntax error nor an unknown statement",
                "drop x",
                error(
                    "22P02",
                    "invalid input syntax for type integer: \"AIRLOCK_REFUSED_1\"",
                ),
                Gets::Untouched,
            ),
        ];
        for (case, sql, upstream_error, gets) in cases {
            let mut relay = relay();
            assert_eq!(
                send(&mut relay, &[query_msg(sql)]),
                msg(b'Q', b"AIRLOCK_REFUSED_1\0"),
                "{case}"
            );
            let got = answer(&mut relay, &[upstream_error.clone(), ready(b'I')]);
            match gets {
                Gets::Refusal(expected) => {
                    let fields = codec::notice_fields(&messages(got)[0].body);
                    for (code, value) in expected {
                        assert!(
                            fields.contains(&(*code, value.to_string())),
                            "{case}: {fields:?}"
                        );
                    }
                }
                Gets::Untouched => {
                    assert_eq!(got, cat(&[upstream_error, ready(b'I')]), "{case}");
                }
            }
        }
    }

    #[test]
    fn a_refused_bind_is_replaced_and_its_error_rewritten() {
        let refused = bind_with("p", "s1", "***");
        // Fails whether or not the client created a statement of that name:
        // two parameter formats for no parameter.
        let standin = |portal: &str, token: &str| {
            let mut body = format!("{portal}\0{token}\0").into_bytes();
            body.extend_from_slice(b"\0\x02\0\0\0\0\0\0\0\0");
            msg(b'B', &body)
        };
        let missing = error("26000", "prepared statement \"nope\" does not exist");
        converse(
            "a refused Bind",
            &mut masking(),
            &[
                sent_as_is(vec![
                    parse_msg("s1", "update t set secret = $1"),
                    sync_msg(),
                ]),
                answered_as_is(vec![parse_complete(), ready(b'I')]),
                Step::Send(
                    vec![refused.clone(), execute_msg("p", 0), sync_msg()],
                    vec![
                        standin("p", "AIRLOCK_REFUSED_1"),
                        describe_msg(b'P', "p"),
                        execute_msg("p", 0),
                        sync_msg(),
                    ],
                ),
                Step::Binds(vec![(1, refused)]),
                Step::Answer(
                    vec![
                        error(
                            "26000",
                            "prepared statement \"AIRLOCK_REFUSED_1\" does not exist",
                        ),
                        ready(b'I'),
                    ],
                    vec![
                        error("42501", "airlock: a masked value cannot be bound"),
                        ready(b'I'),
                    ],
                ),
                // While another refusal waits (its stand-in skipped behind an
                // error), an unrelated 26000 passes untouched.
                Step::Send(
                    vec![
                        bind_msg("q", "nope"),
                        bind_with("r", "s1", "***"),
                        sync_msg(),
                    ],
                    vec![
                        bind_msg("q", "nope"),
                        standin("r", "AIRLOCK_REFUSED_2"),
                        sync_msg(),
                    ],
                ),
                answered_as_is(vec![missing, ready(b'I')]),
                // The statement is still usable.
                Step::Send(
                    vec![bind_with("p", "s1", "x"), execute_msg("p", 0), sync_msg()],
                    vec![
                        bind_with("p", "s1", "x"),
                        describe_msg(b'P', "p"),
                        execute_msg("p", 0),
                        sync_msg(),
                    ],
                ),
                Step::Answer(
                    vec![
                        bind_complete(),
                        msg(b'n', b""),
                        complete("UPDATE 1"),
                        ready(b'I'),
                    ],
                    vec![bind_complete(), complete("UPDATE 1"), ready(b'I')],
                ),
                // The Bind of "nope", which no Parse created, was judged too
                // (as 0).
                Step::Bound(vec![1, 0, 1, 1]),
            ],
        );
    }
}
