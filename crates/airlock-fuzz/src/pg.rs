//! The PostgreSQL door's codec and machines: the client's startup, the
//! upstream login, and the ready-phase relay fed by both sides.

use std::sync::Arc;

use airlock_pgwire::codec;
use airlock_pgwire::relay::{Inspector, Plan, Relay, StatementRef, Verdict};
use airlock_pgwire::startup::{ClientHandshake, Step, TlsOffer};
use airlock_pgwire::upstream::UpstreamLogin;
use bytes::{BufMut, BytesMut};

use crate::{Chunks, Side};

/// A handshake never loops on the same bytes: steps per chunk are bounded.
const STEPS_PER_CHUNK: usize = 8;

/// The client's side of startup: SSLRequest, GSSENCRequest, CancelRequest,
/// StartupMessage, the password message, in any order and cut anywhere.
pub fn startup(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let offer =
        [TlsOffer::Disabled, TlsOffer::Optional, TlsOffer::Required][usize::from(first % 3)];
    let mut handshake = ClientHandshake::new(offer, first & 4 != 0);
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    for (_, chunk) in Chunks(rest) {
        input.extend_from_slice(chunk);
        for _ in 0..STEPS_PER_CHUNK {
            match handshake.handle(&mut input, &mut out) {
                Step::NeedMore => break,
                Step::StartTls => handshake.tls_established(),
                Step::Cancel { .. } | Step::Authenticate { .. } | Step::Close => {
                    startup_answers(&mut out);
                    return;
                }
            }
        }
        startup_answers(&mut out);
    }
}

/// airlock logging in upstream: whatever the server answers, with or
/// without a password to offer (cleartext, MD5, SCRAM).
pub fn upstream_login(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let password = (first & 1 == 0).then(|| "s3cret".to_string());
    let mut out = BytesMut::new();
    let settings = [("application_name".to_string(), "fuzz".to_string())];
    let mut login = UpstreamLogin::start(
        "airlock",
        "orders",
        password,
        "fuzznonce0123456789".to_string(),
        &settings,
        &mut out,
    );
    let mut input = BytesMut::new();
    for (_, chunk) in Chunks(rest) {
        input.extend_from_slice(chunk);
        match login.handle(&mut input, &mut out) {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// The ready phase: client and upstream bytes interleaved as the input
/// says, a hold approved as soon as it is taken. Both directions must only
/// ever carry whole messages.
pub fn relay(data: &[u8]) {
    let mut relay = Relay::new(Judge::default(), 1 << 16, b'I');
    let mut from_client = BytesMut::new();
    let mut from_upstream = BytesMut::new();
    let mut to_client = BytesMut::new();
    let mut to_upstream = BytesMut::new();
    for (side, chunk) in Chunks(data) {
        let judged = match side {
            Side::Client => {
                from_client.extend_from_slice(chunk);
                relay.handle_client(&mut from_client, &mut to_upstream)
            }
            Side::Upstream => {
                from_upstream.extend_from_slice(chunk);
                match relay.handle_upstream(&mut from_upstream, &mut to_client, &mut to_upstream) {
                    Ok(true) => relay.handle_client(&mut from_client, &mut to_upstream),
                    Ok(false) => Ok(airlock_pgwire::relay::ClientFlow::Continue),
                    Err(e) => Err(e),
                }
            }
        };
        let Ok(flow) = judged else { return };
        if relay.take_new_hold() {
            relay.release_hold();
            if relay
                .handle_client(&mut from_client, &mut to_upstream)
                .is_err()
            {
                return;
            }
        }
        whole_messages(&mut to_client, "relay to the client");
        whole_messages(&mut to_upstream, "relay to the upstream");
        if flow == airlock_pgwire::relay::ClientFlow::Terminate {
            return;
        }
    }
}

/// Asserts `out` is whole messages, and empties it.
fn whole_messages(out: &mut BytesMut, what: &str) {
    assert!(
        parses_whole(out),
        "{what} is not whole messages: {:?}",
        &out[..]
    );
    out.clear();
}

/// The startup's answers: whole messages, after at most the two one-byte
/// answers to an SSLRequest and a GSSENCRequest (each is answered once).
fn startup_answers(out: &mut BytesMut) {
    let single = out
        .iter()
        .take(2)
        .take_while(|b| matches!(b, b'N' | b'S'))
        .count();
    assert!(
        (0..=single).any(|skip| parses_whole(&out[skip..])),
        "the startup's answer is not whole messages: {:?}",
        &out[..]
    );
    out.clear();
}

fn parses_whole(bytes: &[u8]) -> bool {
    let mut rest = BytesMut::from(bytes);
    while !rest.is_empty() {
        if !matches!(codec::parse_message(&mut rest, usize::MAX), Ok(Some(_))) {
            return false;
        }
    }
    true
}

/// An inspector whose verdicts the statement's text picks, so that every
/// path of the relay (refusals, syntax errors, plan fetches, lookups,
/// holds, masking) is reachable from the input.
#[derive(Default)]
struct Judge {
    describes: u64,
}

impl Judge {
    fn verdict(sql: &[u8], plan: Plan<'_>) -> Verdict {
        let pick = sql.first().copied().unwrap_or(0) % 8;
        match (pick, plan) {
            (1, _) => Verdict::Refuse {
                code: "42501",
                hint: None,
                message: "refused".into(),
            },
            (2, _) => Verdict::SyntaxError {
                code: "42601",
                message: "syntax error".into(),
                position: Some(u32::from(sql.len() as u8)),
                detail: None,
                hint: Some("a hint"),
            },
            (3, Plan::NotFetched) => Verdict::Estimate {
                statement: String::from_utf8_lossy(sql).into_owned(),
            },
            (4, _) => Verdict::Hold,
            (5, Plan::NotFetched) => Verdict::Lookup {
                sql: "select 1".into(),
            },
            (6, _) => Verdict::ForwardAndWait,
            _ => Verdict::Forward,
        }
    }
}

impl Inspector for Judge {
    type Mask = ();

    fn query(&mut self, _: u64, sql: &[u8], plan: Plan<'_>) -> Verdict {
        Judge::verdict(sql, plan)
    }

    fn parse(&mut self, _: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
        Judge::verdict(sql, Plan::Unavailable)
    }

    fn bind(&mut self, _: Option<u64>, body: &[u8], plan: Plan<'_>) -> Verdict {
        match (body.last().copied().unwrap_or(0) % 5, plan) {
            (1, _) => Verdict::Refuse {
                code: "42501",
                hint: None,
                message: "refused".into(),
            },
            (2, Plan::NotFetched) => Verdict::EstimateBound {
                statement: "select $1".into(),
                param_types: codec::parse_types(body).unwrap_or_default().to_vec(),
            },
            _ => {
                let _ = codec::bind_parameters(body).map(|p| p.len());
                Verdict::Forward
            }
        }
    }

    fn parameter_status(&mut self, _: &str, _: &str) {}

    fn masks(&self) -> bool {
        true
    }

    fn describe(&mut self, _: StatementRef, _: &[u8]) -> Option<Arc<()>> {
        self.describes += 1;
        self.describes.is_multiple_of(2).then(|| Arc::new(()))
    }

    fn copy_out(&mut self, _: StatementRef, _: &[u8]) -> Option<Arc<()>> {
        Some(Arc::new(()))
    }

    fn mask_row(&mut self, _: &(), body: &[u8], out: &mut BytesMut) {
        let mut row = BytesMut::new();
        let values: Vec<_> = codec::data_row_values(body).collect();
        row.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(v) => {
                    row.put_i32(v.len() as i32);
                    row.put_slice(&v.iter().map(|_| b'*').collect::<Vec<_>>());
                }
                None => row.put_i32(-1),
            }
        }
        message(b'D', &row, out);
    }

    fn mask_copy(&mut self, _: &(), body: &[u8], out: &mut BytesMut) {
        message(b'd', body, out);
    }

    fn scrub(&mut self, _: Option<StatementRef>, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
        let fields = codec::notice_fields(body);
        if fields.len() % 2 == 1 {
            message(tag, body, out);
            return true;
        }
        false
    }

    fn records(&self) -> bool {
        true
    }
}

fn message(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}
