//! airlock as a client of the upstream: the greeting, TLS (with libpq's
//! `sslmode` meanings, decided by the driver), the HandshakeResponse with
//! the gateway-held credential, and the authentication exchange:
//! `mysql_native_password`, `caching_sha2_password` (fast path; full
//! authentication over TLS, or with the server's RSA key otherwise) and
//! `mysql_clear_password` (over TLS only).

use bytes::BytesMut;
use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, SslRequest};
use mysql_common::proto::{MyDeserialize, MySerialize};

use crate::codec::{self, Framer};
use crate::handshake::{CLEAR_PASSWORD, response_payload};

const NATIVE: &[u8] = b"mysql_native_password";
const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// Whether TLS is used towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsWant {
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or no session.
    Require,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Write `out`, read more, call again.
    NeedMore,
    /// Write `out` (the SSLRequest), run the TLS handshake, then call
    /// [`UpstreamLogin::tls_established`].
    StartTls,
    /// Logged in: relay from now on.
    Ready(Ready),
    Failed(LoginError),
}

/// The upstream after login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub server_version: Vec<u8>,
    /// The upstream's connection id (what `KILL QUERY` needs).
    pub connection_id: u32,
    /// The capabilities both sides use.
    pub capabilities: CapabilityFlags,
    pub status: u16,
    /// The server is MySQL rather than MariaDB.
    pub mysql: bool,
    pub collation: u8,
}

/// Why the login failed. The upstream's message never leaves this crate:
/// it names the upstream user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the upstream refused the login (error {code})")]
    Refused { code: u16 },
    #[error("the upstream does not offer TLS")]
    TlsUnavailable,
    #[error(
        "the upstream asked for authentication plugin {0:?}, which airlock does not speak here"
    )]
    Plugin(String),
    #[error("the upstream sent an unexpected login packet: {0}")]
    Protocol(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Tls,
    Auth,
    /// caching_sha2_password asked for the public key.
    PublicKey,
}

/// The login as a machine fed the upstream's bytes.
pub struct UpstreamLogin {
    state: State,
    user: String,
    password: Vec<u8>,
    database: String,
    /// What the client negotiated with airlock; the upstream gets the
    /// common part.
    client: CapabilityFlags,
    collation: u8,
    tls: TlsWant,
    tls_active: bool,
    framer: Framer,
    seq: u8,
    nonce: Vec<u8>,
    plugin: Vec<u8>,
    server: Option<Ready>,
}

impl UpstreamLogin {
    pub fn new(
        user: &str,
        password: Option<&str>,
        database: &str,
        client: CapabilityFlags,
        collation: u8,
        tls: TlsWant,
    ) -> Self {
        UpstreamLogin {
            state: State::Greeting,
            user: user.to_owned(),
            password: password.unwrap_or_default().as_bytes().to_vec(),
            database: database.to_owned(),
            client,
            collation,
            tls,
            tls_active: false,
            framer: Framer::new(1 << 20),
            seq: 0,
            nonce: Vec::new(),
            plugin: Vec::new(),
            server: None,
        }
    }

    /// The TLS handshake has completed: the response goes out now.
    pub fn tls_established(&mut self, out: &mut BytesMut) {
        self.tls_active = true;
        self.respond(out);
    }

    pub fn handle(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Step {
        loop {
            let packet = match self.framer.next(input) {
                Ok(Some(p)) => p,
                Ok(None) => return Step::NeedMore,
                Err(_) => return Step::Failed(LoginError::Protocol("a malformed frame")),
            };
            self.seq = packet.seq.wrapping_add(1);
            let p = &packet.payload[..];
            if p.first() == Some(&0xFF) {
                let code = codec::err_info(&packet.payload).map_or(0, |e| e.code);
                return Step::Failed(LoginError::Refused { code });
            }
            match self.state {
                State::Greeting => {
                    if let Some(step) = self.greeting(p, out) {
                        return step;
                    }
                }
                State::Tls => {
                    return Step::Failed(LoginError::Protocol("a packet during TLS setup"));
                }
                State::Auth => match p.first() {
                    Some(0x00) => {
                        let mut ready = self.server.take().expect("greeted");
                        ready.status = codec::ok_info(p).map_or(0, |o| o.status);
                        self.password.fill(0);
                        return Step::Ready(ready);
                    }
                    Some(0xFE) => {
                        // AuthSwitchRequest: plugin name, NUL, data.
                        let rest = &p[1..];
                        let Some(end) = rest.iter().position(|&b| b == 0) else {
                            return Step::Failed(LoginError::Protocol(
                                "an auth switch without a plugin",
                            ));
                        };
                        self.plugin = rest[..end].to_vec();
                        let data = &rest[end + 1..];
                        self.nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                        match self.auth_data() {
                            Ok(data) => codec::write(out, &mut self.seq, &data),
                            Err(e) => return Step::Failed(e),
                        }
                    }
                    Some(0x01) if self.plugin == CACHING_SHA2 => match p.get(1) {
                        // Fast authentication succeeded; OK follows.
                        Some(0x03) => {}
                        // Full authentication.
                        Some(0x04) => {
                            if self.tls_active {
                                let mut pw = self.password.clone();
                                pw.push(0);
                                codec::write(out, &mut self.seq, &pw);
                            } else {
                                codec::write(out, &mut self.seq, &[0x02]);
                                self.state = State::PublicKey;
                            }
                        }
                        _ => {
                            return Step::Failed(LoginError::Protocol(
                                "unexpected caching_sha2_password data",
                            ));
                        }
                    },
                    _ => {
                        return Step::Failed(LoginError::Protocol(
                            "an unexpected authentication packet",
                        ));
                    }
                },
                State::PublicKey => {
                    if p.first() != Some(&0x01) {
                        return Step::Failed(LoginError::Protocol("no public key"));
                    }
                    let mut pw = self.password.clone();
                    pw.push(0);
                    for (i, b) in pw.iter_mut().enumerate() {
                        *b ^= self
                            .nonce
                            .get(i % self.nonce.len().max(1))
                            .copied()
                            .unwrap_or(0);
                    }
                    match mysql_common::crypto::encrypt(&pw, &p[1..]) {
                        Ok(sealed) => codec::write(out, &mut self.seq, &sealed),
                        Err(_) => {
                            return Step::Failed(LoginError::Protocol("an unusable public key"));
                        }
                    }
                    self.state = State::Auth;
                }
            }
        }
    }

    fn greeting(&mut self, p: &[u8], out: &mut BytesMut) -> Option<Step> {
        let Ok(g) = HandshakePacket::deserialize((), &mut ParseBuf(p)) else {
            return Some(Step::Failed(LoginError::Protocol("a malformed greeting")));
        };
        let caps = g.capabilities();
        if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Some(Step::Failed(LoginError::Protocol(
                "a server older than protocol 4.1",
            )));
        }
        let mut nonce = g.scramble_1_ref().to_vec();
        let tail = g.scramble_2_ref().unwrap_or_default();
        nonce.extend_from_slice(tail.strip_suffix(&[0]).unwrap_or(tail));
        self.nonce = nonce;
        self.plugin = g
            .auth_plugin()
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_else(|| NATIVE.to_vec());
        let mut common = (self.client & caps)
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        common &= caps | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        common.remove(CapabilityFlags::CLIENT_SSL);
        common.remove(CapabilityFlags::CLIENT_CONNECT_ATTRS);
        self.server = Some(Ready {
            server_version: g.server_version_ref().to_vec(),
            connection_id: g.connection_id(),
            capabilities: common,
            status: 0,
            mysql: caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
            collation: g.default_collation(),
        });
        let offers_tls = caps.contains(CapabilityFlags::CLIENT_SSL);
        match (self.tls, offers_tls) {
            (TlsWant::Disable, _) | (TlsWant::Prefer, false) => {
                self.respond(out);
                None
            }
            (TlsWant::Require, false) => Some(Step::Failed(LoginError::TlsUnavailable)),
            (_, true) => {
                let mut ssl = Vec::new();
                SslRequest::new(
                    common | CapabilityFlags::CLIENT_SSL,
                    1 << 24,
                    self.collation,
                )
                .serialize(&mut ssl);
                codec::write(out, &mut self.seq, &ssl);
                self.state = State::Tls;
                Some(Step::StartTls)
            }
        }
    }

    fn respond(&mut self, out: &mut BytesMut) {
        let server = self.server.as_ref().expect("greeted");
        let mut caps = server.capabilities;
        if self.tls_active {
            caps |= CapabilityFlags::CLIENT_SSL;
        }
        let (plugin, data) = match self.auth_data() {
            Ok(data) => (self.plugin.clone(), data),
            // A plugin airlock does not speak: answer as native; the
            // server switches to what the account needs.
            Err(_) => {
                self.plugin = NATIVE.to_vec();
                (NATIVE.to_vec(), self.auth_data().unwrap_or_default())
            }
        };
        let payload = response_payload(
            caps,
            self.collation,
            self.user.as_bytes(),
            &data,
            Some(self.database.as_bytes()),
            &plugin,
        );
        codec::write(out, &mut self.seq, &payload);
        self.state = State::Auth;
    }

    /// The authentication data for the current plugin and nonce.
    fn auth_data(&self) -> Result<Vec<u8>, LoginError> {
        if self.password.is_empty() {
            return Ok(Vec::new());
        }
        match &self.plugin[..] {
            NATIVE => Ok(scramble_native(&self.nonce, &self.password)
                .map(|s| s.to_vec())
                .unwrap_or_default()),
            CACHING_SHA2 => {
                let nonce: [u8; 20] = self
                    .nonce
                    .get(..20)
                    .and_then(|n| n.try_into().ok())
                    .ok_or(LoginError::Protocol("a short nonce"))?;
                Ok(scramble_sha256(&nonce, &self.password)
                    .map(|s| s.to_vec())
                    .unwrap_or_default())
            }
            CLEAR_PASSWORD if self.tls_active => {
                let mut pw = self.password.clone();
                pw.push(0);
                Ok(pw)
            }
            other => Err(LoginError::Plugin(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("state", &self.state)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::constants::StatusFlags;

    fn greeting(plugin: &[u8], caps: CapabilityFlags) -> BytesMut {
        let g = HandshakePacket::new(
            10,
            &b"5.5.5-10.11.6-MariaDB"[..],
            42,
            *b"abcdefgh",
            Some(&b"ijklmnopqrst\0"[..]),
            caps,
            45,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(plugin),
        );
        let mut payload = Vec::new();
        g.serialize(&mut payload);
        let mut out = BytesMut::new();
        codec::write(&mut out, &mut 0, &payload);
        out
    }

    /// A MariaDB server's (no `CLIENT_LONG_PASSWORD`).
    fn server_caps() -> CapabilityFlags {
        (crate::handshake::supported() | CapabilityFlags::CLIENT_SSL)
            - CapabilityFlags::CLIENT_LONG_PASSWORD
    }

    fn client_caps() -> CapabilityFlags {
        CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
    }

    fn read(out: &mut BytesMut) -> codec::Packet {
        Framer::new(1 << 20).next(out).unwrap().unwrap()
    }

    #[test]
    fn native_password_login_sends_the_scramble_of_the_greeting_nonce() {
        let mut login = UpstreamLogin::new(
            "app",
            Some("secret"),
            "shop",
            client_caps(),
            45,
            TlsWant::Prefer,
        );
        let mut out = BytesMut::new();
        let mut input = greeting(NATIVE, server_caps() - CapabilityFlags::CLIENT_SSL);
        assert_eq!(login.handle(&mut input, &mut out), Step::NeedMore);
        let response = read(&mut out);
        assert_eq!(response.seq, 1);
        let want = scramble_native(b"abcdefghijklmnopqrst", b"secret").unwrap();
        let p = &response.payload[..];
        assert!(p.windows(20).any(|w| w == want), "scramble in the response");
        assert!(p.windows(5).any(|w| w == b"shop\0"));
        let caps =
            CapabilityFlags::from_bits_truncate(u32::from_le_bytes(p[..4].try_into().unwrap()));
        assert!(caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF));
        assert!(!caps.contains(CapabilityFlags::CLIENT_SSL));
        let mut ok = BytesMut::new();
        codec::ok(
            &mut ok,
            &mut 2,
            codec::OkInfo {
                status: 2,
                ..Default::default()
            },
        );
        let Step::Ready(ready) = login.handle(&mut ok, &mut out) else {
            panic!()
        };
        assert_eq!(ready.connection_id, 42);
        assert_eq!(ready.status, 2);
        assert!(!ready.mysql);
    }

    #[test]
    fn tls_is_asked_for_when_offered_and_required_when_configured() {
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Prefer,
        );
        let mut out = BytesMut::new();
        assert_eq!(
            login.handle(&mut greeting(NATIVE, server_caps()), &mut out),
            Step::StartTls
        );
        let ssl = read(&mut out);
        assert_eq!(ssl.payload.len(), 32);
        login.tls_established(&mut out);
        assert_eq!(read(&mut out).seq, 2);

        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Require,
        );
        assert_eq!(
            login.handle(
                &mut greeting(NATIVE, server_caps() - CapabilityFlags::CLIENT_SSL),
                &mut out
            ),
            Step::Failed(LoginError::TlsUnavailable)
        );
    }

    #[test]
    fn an_auth_switch_is_followed_and_an_error_keeps_only_its_code() {
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Disable,
        );
        let mut out = BytesMut::new();
        let _ = login.handle(&mut greeting(CACHING_SHA2, server_caps()), &mut out);
        out.clear();
        let mut switch = BytesMut::new();
        codec::auth_switch(&mut switch, &mut 2, NATIVE, b"01234567890123456789\0");
        assert_eq!(login.handle(&mut switch, &mut out), Step::NeedMore);
        let answer = read(&mut out);
        assert_eq!(answer.seq, 3);
        assert_eq!(
            &answer.payload[..],
            &scramble_native(b"01234567890123456789", b"pw").unwrap()[..]
        );
        let mut err = BytesMut::new();
        codec::err(
            &mut err,
            &mut 4,
            1045,
            "28000",
            "Access denied for user 'app'",
        );
        let step = login.handle(&mut err, &mut out);
        assert_eq!(step, Step::Failed(LoginError::Refused { code: 1045 }));
        assert!(!format!("{step:?}").contains("app"));
    }

    #[test]
    fn caching_sha2_fast_path_and_full_authentication_over_tls() {
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Require,
        );
        let mut out = BytesMut::new();
        assert_eq!(
            login.handle(&mut greeting(CACHING_SHA2, server_caps()), &mut out),
            Step::StartTls
        );
        login.tls_established(&mut out);
        out.clear();
        // Full authentication: the password goes in cleartext over TLS.
        let mut more = BytesMut::new();
        codec::write(&mut more, &mut 3, &[0x01, 0x04]);
        assert_eq!(login.handle(&mut more, &mut out), Step::NeedMore);
        assert_eq!(&read(&mut out).payload[..], b"pw\0");
        let mut ok = BytesMut::new();
        codec::ok(&mut ok, &mut 5, codec::OkInfo::default());
        assert!(matches!(login.handle(&mut ok, &mut out), Step::Ready(_)));

        // Fast path: 0x03, then OK.
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Disable,
        );
        let _ = login.handle(&mut greeting(CACHING_SHA2, server_caps()), &mut out);
        let response = read(&mut out);
        let want = scramble_sha256(b"abcdefghijklmnopqrst", b"pw").unwrap();
        assert!(response.payload.windows(32).any(|w| w == want));
        let mut more = BytesMut::new();
        codec::write(&mut more, &mut 2, &[0x01, 0x03]);
        codec::ok(&mut more, &mut 3, codec::OkInfo::default());
        assert!(matches!(login.handle(&mut more, &mut out), Step::Ready(_)));
        // Without TLS, full authentication asks for the server's key.
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Disable,
        );
        let _ = login.handle(&mut greeting(CACHING_SHA2, server_caps()), &mut out);
        out.clear();
        let mut more = BytesMut::new();
        codec::write(&mut more, &mut 2, &[0x01, 0x04]);
        assert_eq!(login.handle(&mut more, &mut out), Step::NeedMore);
        assert_eq!(&read(&mut out).payload[..], &[0x02]);
    }

    #[test]
    fn cleartext_is_never_sent_without_tls() {
        let mut login = UpstreamLogin::new(
            "app",
            Some("pw"),
            "shop",
            client_caps(),
            45,
            TlsWant::Disable,
        );
        let mut out = BytesMut::new();
        let _ = login.handle(&mut greeting(NATIVE, server_caps()), &mut out);
        let mut switch = BytesMut::new();
        codec::auth_switch(&mut switch, &mut 2, CLEAR_PASSWORD, b"");
        assert!(matches!(
            login.handle(&mut switch, &mut out),
            Step::Failed(LoginError::Plugin(_))
        ));
    }
}
