//! The upstream login: airlock as a PostgreSQL client.
//!
//! [`UpstreamLogin`] writes the StartupMessage, answers the server's
//! authentication request (trust, cleartext, md5 with `postgres-protocol`'s
//! helper, or SCRAM-SHA-256 with [`crate::scram`]), and collects
//! ParameterStatus and BackendKeyData until the first ReadyForQuery. TLS
//! negotiation happens before it, in the driver, because it changes the
//! socket. SCRAM's client nonce, the one random value of a login, is the
//! caller's.
//!
//! The upstream's error text is never passed on: PostgreSQL names the user in
//! `password authentication failed for user "…"`, and that user is a
//! credential only airlock holds. [`LoginError`] keeps the SQLSTATE only.

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::frontend;

use crate::codec::{self, notice_fields};
use crate::error::ProtocolError;
use crate::scram::{self, Scram};

/// Messages the upstream sends during login are small; this bounds them.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Why the upstream login failed. Displays without the upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the upstream refused the login (SQLSTATE {code})")]
    Rejected { code: String },
    #[error("the upstream asked for a password but the role has none configured")]
    PasswordRequired,
    #[error("the upstream asked for an unsupported authentication method: {0}")]
    Unsupported(String),
    #[error("SCRAM authentication with the upstream failed: {0}")]
    Scram(String),
    #[error("the upstream broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

/// What the upstream told us by the time it was ready for queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReady {
    pub parameters: Vec<(String, String)>,
    pub backend_key: Option<(i32, i32)>,
    pub status: u8,
}

enum State {
    Authenticating,
    Scram(Box<Scram>),
    Authenticated,
}

/// The upstream login, as a state machine.
pub struct UpstreamLogin {
    state: State,
    user: String,
    password: Option<String>,
    /// SCRAM's client nonce.
    nonce: String,
    parameters: Vec<(String, String)>,
    backend_key: Option<(i32, i32)>,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin").finish_non_exhaustive()
    }
}

impl UpstreamLogin {
    /// Writes the StartupMessage for `user` on `database` with `settings`
    /// (already allow-listed) to `out`. `nonce` is SCRAM's client nonce, in
    /// case the server asks for SCRAM: random, printable ASCII, no comma.
    pub fn start(
        user: &str,
        database: &str,
        password: Option<String>,
        nonce: String,
        settings: &[(String, String)],
        out: &mut BytesMut,
    ) -> Self {
        let params = [("user", user), ("database", database)]
            .into_iter()
            .chain(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(params, out).expect("startup parameters contain no NUL");
        UpstreamLogin {
            state: State::Authenticating,
            user: user.to_string(),
            password,
            nonce,
            parameters: Vec::new(),
            backend_key: None,
        }
    }

    /// Consumes upstream bytes; returns `Some` once ReadyForQuery arrives.
    pub fn handle(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<UpstreamReady>, LoginError> {
        while let Some(msg) = codec::parse_message(input, MAX_LOGIN_MESSAGE)? {
            let mut body = msg.body;
            match msg.tag {
                b'R' => self.on_auth(&mut body, out)?,
                b'E' => {
                    let code = notice_fields(&body)
                        .into_iter()
                        .find(|(f, _)| *f == b'C')
                        .map(|(_, c)| c)
                        .unwrap_or_else(|| "XX000".into());
                    return Err(LoginError::Rejected { code });
                }
                b'N' => {} // the upstream's login notices are not the client's business
                b'S' if matches!(self.state, State::Authenticated) => {
                    let name = codec::read_cstr(&mut body)?;
                    let value = codec::read_cstr(&mut body)?;
                    self.parameters.push((name, value));
                }
                b'K' if matches!(self.state, State::Authenticated) && body.len() == 8 => {
                    self.backend_key = Some((body.get_i32(), body.get_i32()));
                }
                b'Z' if matches!(self.state, State::Authenticated) && body.len() == 1 => {
                    return Ok(Some(UpstreamReady {
                        parameters: std::mem::take(&mut self.parameters),
                        backend_key: self.backend_key,
                        status: body[0],
                    }));
                }
                tag => {
                    return Err(ProtocolError::UnexpectedMessage {
                        tag,
                        context: "during the upstream login",
                    }
                    .into());
                }
            }
        }
        Ok(None)
    }

    fn password(&self) -> Result<&[u8], LoginError> {
        self.password
            .as_deref()
            .map(str::as_bytes)
            .ok_or(LoginError::PasswordRequired)
    }

    fn on_auth(&mut self, body: &mut bytes::Bytes, out: &mut BytesMut) -> Result<(), LoginError> {
        if body.len() < 4 {
            return Err(ProtocolError::Malformed("short authentication request").into());
        }
        let kind = body.get_i32();
        match (kind, &mut self.state) {
            (0, State::Authenticating) => self.state = State::Authenticated,
            (0, State::Scram(_)) => {
                return Err(LoginError::Scram(
                    "server skipped SCRAM final message".into(),
                ));
            }
            (3, State::Authenticating) => {
                frontend::password_message(self.password()?, out).map_err(io_protocol)?;
            }
            (5, State::Authenticating) if body.len() == 4 => {
                let salt: [u8; 4] = body[..4].try_into().unwrap();
                let hash = md5_hash(self.user.as_bytes(), self.password()?, salt);
                frontend::password_message(hash.as_bytes(), out).map_err(io_protocol)?;
            }
            (10, State::Authenticating) => {
                let mut mechanisms = Vec::new();
                while !body.is_empty() {
                    let m = codec::read_cstr(body)?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m);
                }
                if !mechanisms.iter().any(|m| m == scram::MECHANISM) {
                    return Err(LoginError::Unsupported(format!("SASL {mechanisms:?}")));
                }
                let scram = Scram::new(self.password()?, &self.nonce);
                frontend::sasl_initial_response(
                    scram::MECHANISM,
                    scram.client_first().as_bytes(),
                    out,
                )
                .map_err(io_protocol)?;
                self.state = State::Scram(Box::new(scram));
            }
            (11, State::Scram(scram)) => {
                let client_final = scram
                    .server_first(body)
                    .map_err(|e| LoginError::Scram(e.to_string()))?;
                frontend::sasl_response(client_final.as_bytes(), out).map_err(io_protocol)?;
            }
            (12, State::Scram(scram)) => {
                scram
                    .server_final(body)
                    .map_err(|e| LoginError::Scram(e.to_string()))?;
                self.state = State::Authenticating; // AuthenticationOk follows
            }
            (kind, _) => {
                return Err(LoginError::Unsupported(format!(
                    "authentication request {kind}"
                )));
            }
        }
        Ok(())
    }
}

fn io_protocol(_: std::io::Error) -> LoginError {
    LoginError::Protocol(ProtocolError::Malformed("credential contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn auth(kind: i32, data: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_i32(8 + data.len() as i32);
        b.put_i32(kind);
        b.extend_from_slice(data);
        b
    }

    fn after_ok() -> BytesMut {
        let mut b = auth(0, &[]);
        codec::parameter_status("server_version", "15.2", &mut b);
        codec::backend_key_data(99, 1234, &mut b);
        codec::ready_for_query(b'I', &mut b);
        b
    }

    #[test]
    fn trust_login_collects_parameters() {
        let mut out = BytesMut::new();
        let mut login = UpstreamLogin::start("ro", "db", None, "n0nce".into(), &[], &mut out);
        assert_eq!(out[4..8], codec::PROTOCOL_3_0.to_be_bytes());
        out.clear();
        let ready = login.handle(&mut after_ok(), &mut out).unwrap().unwrap();
        assert_eq!(ready.backend_key, Some((99, 1234)));
        assert_eq!(
            ready.parameters,
            vec![("server_version".into(), "15.2".into())]
        );
        assert_eq!(ready.status, b'I');
        assert!(out.is_empty());
    }

    #[test]
    fn md5_answers_with_the_salted_hash() {
        let mut out = BytesMut::new();
        let mut login = UpstreamLogin::start(
            "ro",
            "db",
            Some("secret".into()),
            "n0nce".into(),
            &[],
            &mut out,
        );
        out.clear();
        assert_eq!(login.handle(&mut auth(5, b"abcd"), &mut out).unwrap(), None);
        let m = codec::parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(m.tag, b'p');
        let expected = md5_hash(b"ro", b"secret", *b"abcd");
        assert_eq!(&m.body[..m.body.len() - 1], expected.as_bytes());
    }

    #[test]
    fn cleartext_without_password_fails() {
        let mut out = BytesMut::new();
        let mut login = UpstreamLogin::start("ro", "db", None, "n0nce".into(), &[], &mut out);
        assert_eq!(
            login.handle(&mut auth(3, &[]), &mut out),
            Err(LoginError::PasswordRequired)
        );
    }

    #[test]
    fn rejection_keeps_only_the_sqlstate() {
        let mut out = BytesMut::new();
        let mut login =
            UpstreamLogin::start("ro", "db", Some("pw".into()), "n0nce".into(), &[], &mut out);
        let mut input = BytesMut::new();
        codec::notice_message(
            &codec::Notice::new(
                codec::Severity::Fatal,
                "28P01",
                "password authentication failed for user \"ro\"",
            ),
            &mut input,
        );
        let err = login.handle(&mut input, &mut out).unwrap_err();
        assert_eq!(
            err,
            LoginError::Rejected {
                code: "28P01".into()
            }
        );
        assert!(!err.to_string().contains("ro\""));
    }

    #[test]
    fn unsupported_methods() {
        for kind in [2, 7, 9] {
            let mut out = BytesMut::new();
            let mut login =
                UpstreamLogin::start("ro", "db", Some("pw".into()), "n0nce".into(), &[], &mut out);
            assert!(matches!(
                login.handle(&mut auth(kind, &[]), &mut out),
                Err(LoginError::Unsupported(_))
            ));
        }
        let mut out = BytesMut::new();
        let mut login =
            UpstreamLogin::start("ro", "db", Some("pw".into()), "n0nce".into(), &[], &mut out);
        assert!(matches!(
            login.handle(&mut auth(10, b"SCRAM-SHA-256-PLUS\0\0"), &mut out),
            Err(LoginError::Unsupported(_))
        ));
    }

    #[test]
    fn scram_sends_initial_response_and_rejects_bad_server_first() {
        let mut out = BytesMut::new();
        let mut login =
            UpstreamLogin::start("ro", "db", Some("pw".into()), "n0nce".into(), &[], &mut out);
        out.clear();
        login
            .handle(&mut auth(10, b"SCRAM-SHA-256\0\0"), &mut out)
            .unwrap();
        let m = codec::parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(m.tag, b'p');
        assert!(m.body.starts_with(b"SCRAM-SHA-256\0"));
        // A server-first message whose nonce does not extend ours.
        assert!(matches!(
            login.handle(&mut auth(11, b"r=bogus,s=c2FsdA==,i=4096"), &mut out),
            Err(LoginError::Scram(_))
        ));
    }

    #[test]
    fn messages_before_authentication_are_rejected() {
        let mut out = BytesMut::new();
        let mut login = UpstreamLogin::start("ro", "db", None, "n0nce".into(), &[], &mut out);
        let mut input = BytesMut::new();
        codec::ready_for_query(b'I', &mut input);
        assert!(matches!(
            login.handle(&mut input, &mut out),
            Err(LoginError::Protocol(_))
        ));
    }
}
