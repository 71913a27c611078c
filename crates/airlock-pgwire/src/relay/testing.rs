//! Fixtures shared by the relay's tests: message builders, the test
//! inspectors, and [`converse`], which plays a conversation through a
//! masking relay step by step.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::{ClientFlow, Inspector, Plan, Relay, StatementRef, Verdict};
use crate::codec::{self, Notice, Severity};

pub(super) fn msg(tag: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(body.len() as i32 + 4);
    b.extend_from_slice(body);
    b
}

/// Refuses statements containing "drop", records what it saw.
#[derive(Default)]
pub(super) struct NoDrops {
    pub(super) seen: Vec<String>,
    pub(super) params: Vec<(String, String)>,
}

impl Inspector for NoDrops {
    type Mask = ();
    fn query(&mut self, _: u64, sql: &[u8], plan: Plan<'_>) -> Verdict {
        if sql.starts_with(b"delete") {
            return match plan {
                Plan::NotFetched => Verdict::Estimate {
                    statement: String::from_utf8_lossy(sql).into_owned(),
                },
                Plan::Json(j) if j.contains("\"Plan Rows\": 5}") => Verdict::Forward,
                _ => Verdict::Refuse {
                    code: "42501",
                    hint: None,
                    message: format!("too many rows: {plan:?}"),
                },
            };
        }
        self.judge(sql)
    }
    fn parse(&mut self, _: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
        self.judge(sql)
    }
    fn parameter_status(&mut self, name: &str, value: &str) {
        self.params.push((name.into(), value.into()));
    }
}

impl NoDrops {
    fn judge(&mut self, sql: &[u8]) -> Verdict {
        let sql = String::from_utf8_lossy(sql).into_owned();
        self.seen.push(sql.clone());
        if sql.contains("drop") {
            Verdict::Refuse {
                code: "42501",
                hint: Some("leave out the drop".into()),
                message: "no drops".into(),
            }
        } else if sql.starts_with("select count") {
            Verdict::Rewrite {
                sql: format!("{sql} having count(*) >= 10"),
                wait: false,
            }
        } else if sql.starts_with("selec ") {
            Verdict::SyntaxError {
                code: "42601",
                message: "syntax error at or near \"selec\"".into(),
                position: Some(1),
                detail: None,
                hint: Some("a hint"),
            }
        } else {
            Verdict::Forward
        }
    }
}

pub(super) fn relay() -> Relay<NoDrops> {
    Relay::new(NoDrops::default(), 1024, b'I')
}

/// An upstream error; a syntax error at position 1, as a stand-in's.
pub(super) fn error(code: &str, message: &str) -> BytesMut {
    let mut b = BytesMut::new();
    let position = (code == "42601").then_some(1);
    codec::notice_message(
        &Notice::new(Severity::Error, code, message).position(position),
        &mut b,
    );
    b
}

pub(super) fn messages(mut buf: BytesMut) -> Vec<codec::Message> {
    std::iter::from_fn(|| codec::parse_message(&mut buf, 1 << 20).unwrap()).collect()
}

/// Masks the results of statements whose text contains "secret", and of
/// results whose description names a column "secret" (the way a real
/// inspector knows a table's columns); the mask is the statement's id.
/// Scrubs errors and notices showing "123-45-6789", refuses Binds
/// carrying "***", and records every call. Referring to a statement after
/// it was forgotten, or forgetting it twice, fails the test. `plain`
/// turns masking off.
#[derive(Default)]
pub(super) struct Masking {
    pub(super) plain: bool,
    /// (id, text) of every Query and Parse.
    pub(super) seen: Vec<(u64, String)>,
    pub(super) binds: Vec<(u64, Vec<u8>)>,
    pub(super) forgotten: Vec<u64>,
    pub(super) described: Vec<(StatementRef, Vec<u8>)>,
    pub(super) copies: Vec<StatementRef>,
    pub(super) scrubbed: Vec<(Option<StatementRef>, u8)>,
    /// Every observed answer, as the client got it.
    pub(super) observed: Vec<(StatementRef, u8, Vec<u8>)>,
    /// Ends the session at once before the row after this many.
    pub(super) rows_until_end: Option<usize>,
    /// Writes a notice ahead of each masked result's end.
    pub(super) note_result_ends: bool,
}

impl Masking {
    fn live(&self, id: u64) {
        assert!(
            !self.forgotten.contains(&id),
            "statement {id} referred to after it was forgotten"
        );
    }

    fn decide(&self, at: StatementRef, fields: &[u8]) -> Option<Arc<u64>> {
        self.live(at.id);
        let text = self
            .seen
            .iter()
            .find(|(id, _)| *id == at.id)
            .and_then(|(_, sql)| sql.split(';').nth(at.index))
            .unwrap_or_default();
        let secret = text.contains("secret") || fields.windows(7).any(|w| w == b"secret\0");
        secret.then(|| Arc::new(at.id))
    }

    pub(super) fn described_at(&self) -> Vec<(u64, usize)> {
        self.described
            .iter()
            .map(|(at, _)| (at.id, at.index))
            .collect()
    }

    pub(super) fn bound(&self) -> Vec<u64> {
        self.binds.iter().map(|(id, _)| *id).collect()
    }
}

impl Inspector for Masking {
    type Mask = u64;
    fn query(&mut self, id: u64, sql: &[u8], _: Plan<'_>) -> Verdict {
        self.seen
            .push((id, String::from_utf8_lossy(sql).into_owned()));
        Verdict::Forward
    }
    fn parse(&mut self, id: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
        self.seen
            .push((id, String::from_utf8_lossy(sql).into_owned()));
        Verdict::Forward
    }
    fn bind(&mut self, id: Option<u64>, body: &[u8], _: Plan<'_>) -> Verdict {
        if let Some(id) = id {
            self.live(id);
        }
        self.binds.push((id.unwrap_or(0), body.to_vec()));
        if body.windows(3).any(|w| w == b"***") {
            Verdict::Refuse {
                code: "42501",
                hint: None,
                message: "airlock: a masked value cannot be bound".into(),
            }
        } else {
            Verdict::Forward
        }
    }
    fn forget(&mut self, id: u64) {
        assert!(
            !self.forgotten.contains(&id),
            "statement {id} forgotten twice"
        );
        self.forgotten.push(id);
    }
    fn parameter_status(&mut self, _: &str, _: &str) {}
    fn masks(&self) -> bool {
        !self.plain
    }
    fn records(&self) -> bool {
        true
    }
    fn observe(&mut self, at: StatementRef, tag: u8, body: &[u8]) {
        self.live(at.id);
        self.observed.push((at, tag, body.to_vec()));
    }
    fn ending(&self) -> Option<super::Ending> {
        let admitted = self.observed.iter().filter(|o| o.1 == b'D').count();
        self.rows_until_end
            .filter(|n| admitted >= *n)
            .map(|_| super::Ending::Now)
    }
    fn admit(&mut self, _: StatementRef, tag: u8, _: usize) -> bool {
        tag != b'D' || self.ending().is_none()
    }
    fn notes_result_ends(&self) -> bool {
        self.note_result_ends
    }
    fn result_end(&mut self, at: Option<StatementRef>, out: &mut BytesMut) {
        let id = at.map_or(0, |at| at.id);
        out.extend_from_slice(&notice("01000", &format!("end of masked result {id}")));
    }
    fn describe(&mut self, at: StatementRef, fields: &[u8]) -> Option<Arc<u64>> {
        self.described.push((at, fields.to_vec()));
        self.decide(at, fields)
    }
    fn copy_out(&mut self, at: StatementRef, _: &[u8]) -> Option<Arc<u64>> {
        self.copies.push(at);
        self.decide(at, b"")
    }
    fn mask_row(&mut self, _: &u64, body: &[u8], out: &mut BytesMut) {
        let count = i16::from_be_bytes([body[0], body[1]]) as usize;
        out.extend_from_slice(&row(&vec!["***"; count]));
    }
    fn mask_copy(&mut self, _: &u64, _: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&msg(b'd', b"***\n"));
    }
    fn scrub(
        &mut self,
        at: Option<StatementRef>,
        tag: u8,
        body: &[u8],
        out: &mut BytesMut,
    ) -> bool {
        if let Some(at) = at {
            self.live(at.id);
        }
        self.scrubbed.push((at, tag));
        let fields = codec::notice_fields(body);
        let field = |c: u8| {
            fields
                .iter()
                .find(|(f, _)| *f == c)
                .map(|(_, v)| v.as_str())
        };
        if !matches!(tag, b'E' | b'N') || !field(b'M').is_some_and(|m| m.contains("123-45-6789")) {
            return false;
        }
        let severity = if tag == b'E' {
            Severity::Error
        } else {
            Severity::Notice
        };
        let code = field(b'C').unwrap_or("XX000");
        codec::notice_message(&Notice::new(severity, code, "[scrubbed]"), out);
        true
    }
}

pub(super) fn masking() -> Relay<Masking> {
    Relay::new(Masking::default(), 1 << 16, b'I')
}

pub(super) fn cat(parts: &[BytesMut]) -> BytesMut {
    let mut b = BytesMut::new();
    for p in parts {
        b.extend_from_slice(p);
    }
    b
}

pub(super) fn query_msg(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::query(sql, &mut b);
    b
}

pub(super) fn parse_msg(name: &str, sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::parse(name, sql, &mut b);
    b
}

pub(super) fn bind_msg(portal: &str, statement: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::bind(portal, statement, &mut b);
    b
}

/// A Bind with one text parameter.
pub(super) fn bind_with(portal: &str, statement: &str, value: &str) -> BytesMut {
    let mut b = BytesMut::new();
    for name in [portal, statement] {
        b.extend_from_slice(name.as_bytes());
        b.put_u8(0);
    }
    b.put_i16(0);
    b.put_i16(1);
    b.put_i32(value.len() as i32);
    b.extend_from_slice(value.as_bytes());
    b.put_i16(0);
    msg(b'B', &b)
}

pub(super) fn execute_msg(portal: &str, max_rows: i32) -> BytesMut {
    let mut b = BytesMut::new();
    b.extend_from_slice(portal.as_bytes());
    b.put_u8(0);
    b.put_i32(max_rows);
    msg(b'E', &b)
}

pub(super) fn describe_msg(kind: u8, name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::describe(kind, name, &mut b);
    b
}

pub(super) fn close_msg(kind: u8, name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::close(kind, name, &mut b);
    b
}

pub(super) fn sync_msg() -> BytesMut {
    msg(b'S', b"")
}

pub(super) fn parse_complete() -> BytesMut {
    msg(b'1', b"")
}

pub(super) fn bind_complete() -> BytesMut {
    msg(b'2', b"")
}

pub(super) fn close_complete() -> BytesMut {
    msg(b'3', b"")
}

pub(super) fn suspended() -> BytesMut {
    msg(b's', b"")
}

pub(super) fn complete(tag: &str) -> BytesMut {
    msg(b'C', format!("{tag}\0").as_bytes())
}

pub(super) fn ready(status: u8) -> BytesMut {
    msg(b'Z', &[status])
}

pub(super) fn notice(code: &str, message: &str) -> BytesMut {
    let mut b = BytesMut::new();
    codec::notice_message(&Notice::new(Severity::Notice, code, message), &mut b);
    b
}

/// A RowDescription of text columns of table 16384.
pub(super) fn row_description(names: &[&str]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(names.len() as i16);
    for (i, name) in names.iter().enumerate() {
        b.extend_from_slice(name.as_bytes());
        b.put_u8(0);
        b.put_i32(16384);
        b.put_i16(i as i16 + 1);
        b.put_i32(25);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i16(0);
    }
    msg(b'T', &b)
}

pub(super) fn row(values: &[&str]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(values.len() as i16);
    for v in values {
        b.put_i32(v.len() as i32);
        b.extend_from_slice(v.as_bytes());
    }
    msg(b'D', &b)
}

pub(super) fn body(m: &BytesMut) -> Vec<u8> {
    m[5..].to_vec()
}

/// Hands the client's messages to the relay, which must take them all;
/// returns what it sends upstream.
pub(super) fn send<I: Inspector>(relay: &mut Relay<I>, parts: &[BytesMut]) -> BytesMut {
    let mut input = cat(parts);
    let mut out = BytesMut::new();
    assert_eq!(
        relay.handle_client(&mut input, &mut out).unwrap(),
        ClientFlow::Continue
    );
    assert!(input.is_empty(), "every message was relayed");
    out
}

/// Hands the upstream's messages to the relay; returns what the client
/// gets.
pub(super) fn answer<I: Inspector>(relay: &mut Relay<I>, parts: &[BytesMut]) -> BytesMut {
    let mut input = cat(parts);
    let mut to_client = BytesMut::new();
    let mut to_upstream = BytesMut::new();
    relay
        .handle_upstream(&mut input, &mut to_client, &mut to_upstream)
        .unwrap();
    assert!(input.is_empty());
    assert!(to_upstream.is_empty());
    to_client
}

/// One step of a conversation through a relay with the [`Masking`]
/// inspector, and what the inspector must have noted so far.
pub(super) enum Step {
    /// The client sends the first messages; the upstream gets the second.
    Send(Vec<BytesMut>, Vec<BytesMut>),
    /// The upstream answers the first messages; the client gets the second.
    Answer(Vec<BytesMut>, Vec<BytesMut>),
    /// Every Query and Parse the inspector saw: (id, text).
    Seen(Vec<(u64, &'static str)>),
    /// Every Bind the inspector judged, as (statement id, whole message).
    Binds(Vec<(u64, BytesMut)>),
    /// The statement ids of every Bind judged.
    Bound(Vec<u64>),
    /// Every RowDescription the inspector was asked about (whole message).
    Described(Vec<(StatementRef, BytesMut)>),
    /// Where every RowDescription the inspector was asked about belonged.
    DescribedAt(Vec<(u64, usize)>),
    /// Every CopyOutResponse the inspector was asked about.
    Copies(Vec<StatementRef>),
    /// Every error, notice and status the inspector was shown to scrub.
    Scrubbed(Vec<(Option<StatementRef>, u8)>),
    /// The statements forgotten, in order.
    Forgotten(Vec<u64>),
    /// The upstream owes nothing ([`Relay::busy`] is false).
    Idle,
}

/// A client sends `messages` and the upstream gets them as they are.
pub(super) fn sent_as_is(messages: Vec<BytesMut>) -> Step {
    Step::Send(messages.clone(), messages)
}

/// The upstream answers `messages` and the client gets them as they are.
pub(super) fn answered_as_is(messages: Vec<BytesMut>) -> Step {
    Step::Answer(messages.clone(), messages)
}

/// Plays conversation `case` through `relay`, checking every step.
#[track_caller]
pub(super) fn converse(case: &str, relay: &mut Relay<Masking>, steps: &[Step]) {
    for (n, step) in steps.iter().enumerate() {
        let at = format!("{case}, step {n}");
        let i = relay.inspector();
        match step {
            Step::Send(parts, expected) => {
                assert_eq!(send(relay, parts), cat(expected), "{at}: the upstream gets");
            }
            Step::Answer(parts, expected) => {
                assert_eq!(answer(relay, parts), cat(expected), "{at}: the client gets");
            }
            Step::Seen(seen) => {
                let seen: Vec<(u64, String)> = seen
                    .iter()
                    .map(|(id, sql)| (*id, sql.to_string()))
                    .collect();
                assert_eq!(i.seen, seen, "{at}: seen");
            }
            Step::Binds(binds) => {
                let binds: Vec<(u64, Vec<u8>)> =
                    binds.iter().map(|(id, m)| (*id, body(m))).collect();
                assert_eq!(i.binds, binds, "{at}: binds");
            }
            Step::Bound(ids) => assert_eq!(&i.bound(), ids, "{at}: bound"),
            Step::Described(described) => {
                let described: Vec<(StatementRef, Vec<u8>)> =
                    described.iter().map(|(at, m)| (*at, body(m))).collect();
                assert_eq!(i.described, described, "{at}: described");
            }
            Step::DescribedAt(at_) => assert_eq!(&i.described_at(), at_, "{at}: described at"),
            Step::Copies(copies) => assert_eq!(&i.copies, copies, "{at}: copies"),
            Step::Scrubbed(scrubbed) => assert_eq!(&i.scrubbed, scrubbed, "{at}: scrubbed"),
            Step::Forgotten(ids) => assert_eq!(&i.forgotten, ids, "{at}: forgotten"),
            Step::Idle => assert!(!relay.busy(), "{at}: busy"),
        }
    }
}
