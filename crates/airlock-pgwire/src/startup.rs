//! The client-facing handshake: from the first byte to the token.
//!
//! [`ClientHandshake`] answers SSLRequest and GSSENCRequest, recognizes
//! CancelRequest, checks the StartupMessage, asks for a cleartext password
//! and hands the token to the driver. It never sees a socket: the driver feeds
//! it bytes with [`ClientHandshake::handle`] and acts on the returned [`Step`].

use bytes::BytesMut;

use crate::codec::{self, Notice, Severity, Startup, StartupPacket};
use crate::error::ProtocolError;
use crate::sqlstate;

/// The largest PasswordMessage accepted. Tokens with many groups run to a few
/// kilobytes; this leaves ample room and still bounds memory before the
/// client has authenticated.
pub const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// How the listener offers TLS to clients (`tls.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOffer {
    /// No TLS; SSLRequest is answered `N`.
    Disabled,
    /// TLS if the client asks; plaintext only on a loopback listener.
    Optional,
    /// Every client must use TLS.
    Required,
}

/// What the driver must do after [`ClientHandshake::handle`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Read more bytes and call `handle` again.
    NeedMore,
    /// Flush the output (it holds the `S` answer), run the TLS handshake on
    /// the socket, then call [`ClientHandshake::tls_established`].
    StartTls,
    /// Route the cancel to the session that owns the key; then close without
    /// a reply, as PostgreSQL does.
    Cancel { process_id: i32, secret_key: i32 },
    /// Verify `token` and, on success, open the upstream session for
    /// `startup`. On failure write a FATAL with [`fatal`] and close.
    Authenticate { startup: Startup, token: String },
    /// A FATAL error has been written to the output: flush it and close.
    Close,
}

#[derive(Debug)]
enum State {
    ExpectStartup,
    ExpectPassword(Startup),
    Done,
}

/// The client side of the startup phase, as a state machine.
#[derive(Debug)]
pub struct ClientHandshake {
    state: State,
    offer: TlsOffer,
    loopback: bool,
    tls_active: bool,
    /// An SSLRequest, or a GSSENCRequest, was answered: as PostgreSQL, each
    /// is answered once (negotiation cannot go on for ever).
    ssl_asked: bool,
    gss_asked: bool,
}

impl ClientHandshake {
    /// `loopback` says whether the listener accepts only loopback peers,
    /// which is where a token may travel without TLS.
    pub fn new(offer: TlsOffer, loopback: bool) -> Self {
        ClientHandshake {
            state: State::ExpectStartup,
            offer,
            loopback,
            tls_active: false,
            ssl_asked: false,
            gss_asked: false,
        }
    }

    /// The TLS handshake asked for by [`Step::StartTls`] has completed.
    pub fn tls_established(&mut self) {
        self.tls_active = true;
    }

    /// Consumes what it can of `input`, writes answers to `out`.
    pub fn handle(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Step {
        match self.step(input, out) {
            Ok(step) => step,
            Err(e) => {
                self.state = State::Done;
                fatal(out, e.sqlstate(), &e.to_string());
                Step::Close
            }
        }
    }

    fn step(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Step, ProtocolError> {
        loop {
            match &self.state {
                State::ExpectStartup => {
                    let Some(packet) = codec::parse_startup(input)? else {
                        return Ok(Step::NeedMore);
                    };
                    match packet {
                        StartupPacket::SslRequest => {
                            if self.tls_active {
                                return Err(ProtocolError::Malformed("SSLRequest inside TLS"));
                            }
                            if std::mem::replace(&mut self.ssl_asked, true) {
                                return Err(ProtocolError::Malformed("SSLRequest sent twice"));
                            }
                            if self.offer == TlsOffer::Disabled {
                                out.extend_from_slice(b"N");
                                continue;
                            }
                            if !input.is_empty() {
                                // Bytes sent before the TLS handshake could be
                                // injected by a man in the middle (CVE-2021-23214).
                                return Err(ProtocolError::Malformed(
                                    "data received after SSLRequest before the TLS handshake",
                                ));
                            }
                            out.extend_from_slice(b"S");
                            return Ok(Step::StartTls);
                        }
                        StartupPacket::GssEncRequest => {
                            if std::mem::replace(&mut self.gss_asked, true) {
                                return Err(ProtocolError::Malformed("GSSENCRequest sent twice"));
                            }
                            out.extend_from_slice(b"N");
                        }
                        StartupPacket::Cancel {
                            process_id,
                            secret_key,
                        } => {
                            self.state = State::Done;
                            return Ok(Step::Cancel {
                                process_id,
                                secret_key,
                            });
                        }
                        StartupPacket::Startup(startup) => match self.on_startup(startup, out)? {
                            Step::NeedMore => {}
                            step => return Ok(step),
                        },
                    }
                }
                State::ExpectPassword(_) => {
                    let Some(msg) = codec::parse_message(input, MAX_PASSWORD_MESSAGE)? else {
                        return Ok(Step::NeedMore);
                    };
                    if msg.tag != b'p' {
                        return Err(ProtocolError::UnexpectedMessage {
                            tag: msg.tag,
                            context: "expected a password message",
                        });
                    }
                    let mut body = msg.body;
                    let token = codec::read_cstr(&mut body)?;
                    let State::ExpectPassword(startup) =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!()
                    };
                    return Ok(Step::Authenticate { startup, token });
                }
                State::Done => {
                    return Err(ProtocolError::Malformed(
                        "message after the handshake ended",
                    ));
                }
            }
        }
    }

    fn on_startup(&mut self, startup: Startup, out: &mut BytesMut) -> Result<Step, ProtocolError> {
        if startup.major != 3 {
            return Ok(self.refuse(
                out,
                sqlstate::FEATURE_NOT_SUPPORTED,
                &format!(
                    "unsupported frontend protocol {}.{}: airlock supports 3.0",
                    startup.major, startup.minor
                ),
            ));
        }
        let unrecognized: Vec<&str> = startup
            .params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
            .collect();
        if startup.minor > 0 || !unrecognized.is_empty() {
            codec::negotiate_protocol_version(0, &unrecognized, out);
        }
        let cleartext_ok = self.tls_active || (self.loopback && self.offer != TlsOffer::Required);
        if !cleartext_ok {
            return Ok(self.refuse(
                out,
                sqlstate::INVALID_AUTHORIZATION,
                "airlock requires TLS on this listener: the token is sent as a password",
            ));
        }
        if startup.param("user").is_none_or(str::is_empty) {
            return Ok(self.refuse(
                out,
                sqlstate::INVALID_AUTHORIZATION,
                "no user name specified in the startup packet",
            ));
        }
        if let Err(msg) = crate::params::check(&startup) {
            return Ok(self.refuse(out, sqlstate::INSUFFICIENT_PRIVILEGE, &msg));
        }
        codec::authentication_cleartext_password(out);
        self.state = State::ExpectPassword(startup);
        Ok(Step::NeedMore)
    }

    fn refuse(&mut self, out: &mut BytesMut, code: &str, message: &str) -> Step {
        self.state = State::Done;
        fatal(out, code, message);
        Step::Close
    }
}

/// Appends a FATAL ErrorResponse.
pub fn fatal(out: &mut BytesMut, code: &str, message: &str) {
    codec::notice_message(&Notice::new(Severity::Fatal, code, message), out);
}

/// Appends a FATAL ErrorResponse with a HINT.
pub fn fatal_hinted(out: &mut BytesMut, code: &str, message: &str, hint: &str) {
    codec::notice_message(&Notice::new(Severity::Fatal, code, message).hint(hint), out);
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::codec::{notice_fields, parse_message};

    fn startup(params: &[(&str, &str)], version: i32) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i32(version);
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.put_u8(0);
            body.extend_from_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut buf = BytesMut::new();
        buf.put_i32(body.len() as i32 + 4);
        buf.extend_from_slice(&body);
        buf
    }

    fn password(token: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(b'p');
        buf.put_i32(token.len() as i32 + 5);
        buf.extend_from_slice(token.as_bytes());
        buf.put_u8(0);
        buf
    }

    fn ssl_request() -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(codec::SSL_REQUEST_CODE);
        buf
    }

    /// The SQLSTATE of the first ErrorResponse in `out`.
    fn error_code(out: &mut BytesMut) -> String {
        while let Some(m) = parse_message(out, 1 << 20).unwrap() {
            if m.tag == b'E' {
                return notice_fields(&m.body)
                    .into_iter()
                    .find(|(f, _)| *f == b'C')
                    .unwrap()
                    .1;
            }
        }
        panic!("no error response")
    }

    const PARAMS: &[(&str, &str)] = &[("user", "readonly"), ("database", "orders")];

    #[test]
    fn plaintext_loopback_login() {
        let mut hs = ClientHandshake::new(TlsOffer::Optional, true);
        let mut out = BytesMut::new();
        let mut input = startup(PARAMS, codec::PROTOCOL_3_0);
        assert_eq!(hs.handle(&mut input, &mut out), Step::NeedMore);
        assert_eq!(
            &out[..],
            b"R\0\0\0\x08\0\0\0\x03",
            "asks for a cleartext password"
        );
        input.extend_from_slice(&password("tok"));
        let Step::Authenticate { startup, token } = hs.handle(&mut input, &mut out) else {
            panic!()
        };
        assert_eq!(token, "tok");
        assert_eq!(startup.param("database"), Some("orders"));
    }

    #[test]
    fn byte_at_a_time() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut all = startup(PARAMS, codec::PROTOCOL_3_0);
        all.extend_from_slice(&password("tok"));
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        let mut result = None;
        for b in all.iter() {
            input.put_u8(*b);
            match hs.handle(&mut input, &mut out) {
                Step::NeedMore => {}
                other => result = Some(other),
            }
        }
        assert!(matches!(result, Some(Step::Authenticate { .. })));
    }

    #[test]
    fn tls_upgrade_then_startup() {
        let mut hs = ClientHandshake::new(TlsOffer::Required, false);
        let mut out = BytesMut::new();
        assert_eq!(hs.handle(&mut ssl_request(), &mut out), Step::StartTls);
        assert_eq!(&out[..], b"S");
        hs.tls_established();
        out.clear();
        let step = hs.handle(&mut startup(PARAMS, codec::PROTOCOL_3_0), &mut out);
        assert_eq!(step, Step::NeedMore);
        assert_eq!(out[0], b'R');
    }

    #[test]
    fn ssl_request_with_trailing_bytes_is_refused() {
        let mut hs = ClientHandshake::new(TlsOffer::Required, false);
        let mut input = ssl_request();
        input.extend_from_slice(&startup(PARAMS, codec::PROTOCOL_3_0));
        let mut out = BytesMut::new();
        assert_eq!(hs.handle(&mut input, &mut out), Step::Close);
        assert_eq!(error_code(&mut out), "08P01");
    }

    #[test]
    fn tls_declined_when_disabled_and_gssenc_declined() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut input = BytesMut::new();
        input.put_i32(8);
        input.put_i32(codec::GSSENC_REQUEST_CODE);
        input.extend_from_slice(&ssl_request());
        input.extend_from_slice(&startup(PARAMS, codec::PROTOCOL_3_0));
        let mut out = BytesMut::new();
        assert_eq!(hs.handle(&mut input, &mut out), Step::NeedMore);
        assert_eq!(&out[..2], b"NN");
        assert_eq!(out[2], b'R');
    }

    /// Found by fuzzing (`fuzz/corpus/pg_startup/repeated-sslrequest`):
    /// each request is answered once, as PostgreSQL does; a repeat ends
    /// the handshake instead of negotiating for ever.
    #[test]
    fn a_repeated_ssl_or_gssenc_request_is_refused() {
        let gssenc = || {
            let mut b = BytesMut::new();
            b.put_i32(8);
            b.put_i32(codec::GSSENC_REQUEST_CODE);
            b
        };
        for first in [ssl_request(), gssenc()] {
            let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
            let mut input = first.clone();
            input.extend_from_slice(&first);
            let mut out = BytesMut::new();
            assert_eq!(hs.handle(&mut input, &mut out), Step::Close);
            assert_eq!(out.split_to(1), &b"N"[..]);
            assert_eq!(error_code(&mut out), "08P01");
        }
    }

    #[test]
    fn cleartext_refused_off_loopback_and_when_tls_required() {
        for (offer, loopback) in [
            (TlsOffer::Optional, false),
            (TlsOffer::Required, true),
            (TlsOffer::Disabled, false),
        ] {
            let mut hs = ClientHandshake::new(offer, loopback);
            let mut out = BytesMut::new();
            let step = hs.handle(&mut startup(PARAMS, codec::PROTOCOL_3_0), &mut out);
            assert_eq!(step, Step::Close, "{offer:?} loopback={loopback}");
            assert_eq!(error_code(&mut out), "28000");
        }
    }

    #[test]
    fn newer_minor_version_is_negotiated_down() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut out = BytesMut::new();
        let params = [("user", "u"), ("_pq_.compression", "on")];
        let step = hs.handle(&mut startup(&params, codec::PROTOCOL_3_0 + 2), &mut out);
        assert_eq!(step, Step::NeedMore);
        let m = parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(m.tag, b'v');
        assert_eq!(&m.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&m.body[8..], b"_pq_.compression\0");
        assert_eq!(parse_message(&mut out, 1024).unwrap().unwrap().tag, b'R');
    }

    #[test]
    fn other_major_versions_are_refused() {
        for version in [2 << 16, 4 << 16, 1234] {
            let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
            let mut out = BytesMut::new();
            assert_eq!(
                hs.handle(&mut startup(PARAMS, version), &mut out),
                Step::Close
            );
            assert_eq!(error_code(&mut out), "0A000");
        }
    }

    #[test]
    fn missing_user_and_forbidden_params() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut out = BytesMut::new();
        let step = hs.handle(
            &mut startup(&[("database", "x")], codec::PROTOCOL_3_0),
            &mut out,
        );
        assert_eq!(step, Step::Close);
        assert_eq!(error_code(&mut out), "28000");

        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut out = BytesMut::new();
        let params = [("user", "u"), ("role", "postgres")];
        let step = hs.handle(&mut startup(&params, codec::PROTOCOL_3_0), &mut out);
        assert_eq!(step, Step::Close);
        assert_eq!(error_code(&mut out), "42501");
    }

    #[test]
    fn garbage_gets_a_protocol_error() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut out = BytesMut::new();
        let step = hs.handle(
            &mut BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]),
            &mut out,
        );
        assert_eq!(step, Step::Close);
        assert_eq!(error_code(&mut out), "08P01");
    }

    #[test]
    fn wrong_message_instead_of_password() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut out = BytesMut::new();
        let mut input = startup(PARAMS, codec::PROTOCOL_3_0);
        codec::query("select 1", &mut input);
        assert_eq!(hs.handle(&mut input, &mut out), Step::Close);
        assert_eq!(error_code(&mut out), "08P01");
    }

    #[test]
    fn cancel_request_is_recognized() {
        let mut hs = ClientHandshake::new(TlsOffer::Disabled, true);
        let mut input = BytesMut::new();
        input.put_i32(16);
        input.put_i32(codec::CANCEL_REQUEST_CODE);
        input.put_i32(42);
        input.put_i32(7);
        let mut out = BytesMut::new();
        assert_eq!(
            hs.handle(&mut input, &mut out),
            Step::Cancel {
                process_id: 42,
                secret_key: 7
            }
        );
        assert!(out.is_empty());
    }
}
