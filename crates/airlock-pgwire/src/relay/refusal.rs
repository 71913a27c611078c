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
        let (code, message, syntax) = match refusal {
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
                (code, message, Some(syntax))
            }
            Verdict::Refuse { code, message } => (code, message, None),
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
