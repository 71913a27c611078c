//! The client's side of the connection phase, airlock as the server: the
//! greeting, an optional SSLRequest, the HandshakeResponse, and the token,
//! which arrives through `mysql_clear_password`: in the response itself
//! when the client already chose that plugin, otherwise in its answer to an
//! AuthSwitchRequest naming it, whatever plugin the client started with.
//! A scramble a client computed for another plugin is never taken for a
//! token.

use bytes::{BufMut, BytesMut};
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse, SslRequest};
use mysql_common::proto::{MyDeserialize, MySerialize};

use crate::codec::{self, FrameError, Framer, Packet};
use crate::errno;

/// The plugin the token travels with.
pub const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";

/// Whether the listener offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOffer {
    /// No TLS.
    Disabled,
    /// TLS if the client asks; cleartext tokens only on a loopback listener.
    Optional,
    /// Every client must use TLS.
    Required,
}

/// The capabilities airlock's greeting may offer: what it can relay and
/// inspect. Compression, LOCAL INFILE, query attributes, optional result
/// metadata, session tracking and MariaDB's extended capabilities are
/// never offered; `CLIENT_LONG_PASSWORD` follows the upstream's (MariaDB
/// clear it, which is how clients tell MariaDB from MySQL).
pub fn supported() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// The greeting's variable parts.
#[derive(Debug, Clone)]
pub struct Greeting {
    /// The upstream's version string, as clients use it to pick features.
    pub server_version: Vec<u8>,
    /// airlock's id of the session (what `CONNECTION_ID()` cannot be:
    /// `KILL` ids are mapped).
    pub connection_id: u32,
    /// 20 bytes from the caller's random source; no plugin airlock asks for
    /// uses them, but clients expect them.
    pub scramble: [u8; 20],
    /// Whether the upstream is MySQL (it sets `CLIENT_LONG_PASSWORD`).
    pub mysql: bool,
    /// The default collation id.
    pub collation: u8,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Write `out` (if any), read more, call again.
    NeedMore,
    /// Write nothing more; run the TLS handshake, then call
    /// [`ClientHandshake::tls_established`] and continue.
    StartTls,
    /// The client is identified; verify the token, then answer with
    /// [`ClientHandshake::accept`] or [`ClientHandshake::refuse`].
    Authenticate(Login),
    /// Write `out` (an ERR, or nothing) and close.
    Close,
}

/// What the client asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    /// The database: airlock's connection name.
    pub database: Option<String>,
    pub token: String,
    /// The client's capabilities (already limited to what was offered).
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub max_packet_size: u32,
    /// `program_name` and friends, for the recording.
    pub attributes: Vec<(String, String)>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("token", &"<redacted>")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeted,
    /// The SSLRequest came and TLS is being set up.
    Tls,
    /// AuthSwitchRequest sent; the token comes next.
    Switched,
    Done,
}

/// The connection phase as a machine fed the client's bytes.
#[derive(Debug)]
pub struct ClientHandshake {
    state: State,
    offer: TlsOffer,
    loopback: bool,
    tls_active: bool,
    framer: Framer,
    /// The sequence id of the next packet airlock writes.
    seq: u8,
    offered: CapabilityFlags,
    pending: Option<Login>,
}

impl ClientHandshake {
    /// Writes the greeting to `out`. `loopback`: the listener accepts only
    /// loopback peers, where a token may travel without TLS.
    pub fn start(greeting: &Greeting, offer: TlsOffer, loopback: bool, out: &mut BytesMut) -> Self {
        let mut offered = supported();
        if !greeting.mysql {
            offered.remove(CapabilityFlags::CLIENT_LONG_PASSWORD);
        }
        if offer != TlsOffer::Disabled {
            offered.insert(CapabilityFlags::CLIENT_SSL);
        }
        // 12 more bytes and the NUL clients expect after them.
        let mut tail = greeting.scramble[8..].to_vec();
        tail.push(0);
        let packet = HandshakePacket::new(
            10,
            greeting.server_version.as_slice(),
            greeting.connection_id,
            greeting.scramble[..8].try_into().expect("8 bytes"),
            Some(tail.as_slice()),
            offered,
            greeting.collation,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(CLEAR_PASSWORD),
        )
        .with_mariadb_ext_capabilities(MariadbCapabilities::empty());
        let mut payload = Vec::new();
        packet.serialize(&mut payload);
        let mut seq = 0;
        codec::write(out, &mut seq, &payload);
        ClientHandshake {
            state: State::Greeted,
            offer,
            loopback,
            tls_active: false,
            framer: Framer::new(64 * 1024),
            seq,
            offered,
            pending: None,
        }
    }

    /// The TLS handshake asked for by [`Step::StartTls`] has completed.
    pub fn tls_established(&mut self) {
        self.tls_active = true;
        self.state = State::Greeted;
    }

    /// Whether the client's connection is TLS.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Feeds the client's bytes.
    pub fn handle(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Step {
        loop {
            let packet = match self.framer.next(input) {
                Ok(Some(p)) => p,
                Ok(None) => return Step::NeedMore,
                Err(FrameError::TooLarge(..)) => {
                    return self.refuse_with(
                        out,
                        errno::NET_PACKET_TOO_LARGE,
                        "08S01",
                        "airlock: the login packet is too large",
                    );
                }
                Err(FrameError::Sequence { .. }) => {
                    return self.refuse_with(
                        out,
                        errno::HANDSHAKE_ERROR,
                        "08S01",
                        "airlock: bad packet sequence during login",
                    );
                }
            };
            if packet.seq != self.seq {
                return self.refuse_with(
                    out,
                    errno::HANDSHAKE_ERROR,
                    "08S01",
                    "airlock: bad packet sequence during login",
                );
            }
            self.seq = packet.seq.wrapping_add(1);
            match self.state {
                State::Greeted => {
                    if let Some(step) = self.response(packet, input, out) {
                        return step;
                    }
                }
                State::Switched => {
                    let Some(mut login) = self.pending.take() else {
                        return Step::Close;
                    };
                    login.token = match token(&packet.payload) {
                        Some(t) => t,
                        None => return self.bad_token(out),
                    };
                    self.state = State::Done;
                    return Step::Authenticate(login);
                }
                State::Tls | State::Done => {
                    return self.refuse_with(
                        out,
                        errno::HANDSHAKE_ERROR,
                        "08S01",
                        "airlock: unexpected packet during login",
                    );
                }
            }
        }
    }

    fn response(&mut self, packet: Packet, input: &BytesMut, out: &mut BytesMut) -> Option<Step> {
        let payload = &packet.payload[..];
        let flags = payload.get(..4).map(|b| {
            CapabilityFlags::from_bits_truncate(u32::from_le_bytes(b.try_into().unwrap()))
        });
        let Some(flags) = flags else {
            return Some(self.malformed(out));
        };
        if !flags.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Some(self.refuse_with(
                out,
                errno::NOT_SUPPORTED_AUTH_MODE,
                "08004",
                "airlock: the client must speak protocol 4.1",
            ));
        }
        if payload.len() == 32 && flags.contains(CapabilityFlags::CLIENT_SSL) {
            if SslRequest::deserialize((), &mut ParseBuf(payload)).is_err() {
                return Some(self.malformed(out));
            }
            if self.offer == TlsOffer::Disabled || self.tls_active {
                return Some(self.refuse_with(
                    out,
                    errno::HANDSHAKE_ERROR,
                    "08S01",
                    "airlock: TLS is not offered here",
                ));
            }
            if !input.is_empty() {
                // Bytes sent before the TLS handshake could be injected by
                // a man in the middle.
                return Some(Step::Close);
            }
            self.state = State::Tls;
            return Some(Step::StartTls);
        }
        let Ok(response) = HandshakeResponse::deserialize((), &mut ParseBuf(payload)) else {
            return Some(self.malformed(out));
        };
        let cleartext_ok = self.tls_active || (self.loopback && self.offer != TlsOffer::Required);
        if !cleartext_ok {
            return Some(self.refuse_with(
                out,
                errno::ACCESS_DENIED,
                "28000",
                "airlock requires TLS on this listener: the token is sent as a password (use --ssl, sslMode=REQUIRED or your driver's equivalent)",
            ));
        }
        let user = String::from_utf8_lossy(response.user()).into_owned();
        if user.is_empty() {
            return Some(self.refuse_with(
                out,
                errno::ACCESS_DENIED,
                "28000",
                "airlock: a user (the role profile) is required",
            ));
        }
        let attributes = response
            .connect_attributes()
            .map(|a| {
                let mut a: Vec<_> = a.into_iter().collect();
                a.sort();
                a
            })
            .unwrap_or_default();
        let mut login = Login {
            user,
            database: response
                .db_name()
                .filter(|d| !d.is_empty())
                .map(|d| String::from_utf8_lossy(d).into_owned()),
            token: String::new(),
            capabilities: response.capabilities() & self.offered,
            collation: response.collation(),
            max_packet_size: 0,
            attributes,
        };
        login.max_packet_size = u32::from_le_bytes(payload[4..8].try_into().unwrap());
        let plugin = response.auth_plugin().map(|p| p.as_bytes().to_vec());
        if plugin.as_deref() == Some(CLEAR_PASSWORD) && !response.scramble_buf().is_empty() {
            login.token = match token(response.scramble_buf()) {
                Some(t) => t,
                None => return Some(self.bad_token(out)),
            };
            self.state = State::Done;
            return Some(Step::Authenticate(login));
        }
        if !flags.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            return Some(self.refuse_with(
                out,
                errno::NOT_SUPPORTED_AUTH_MODE,
                "08004",
                "airlock: the client must support authentication plugins (mysql_clear_password carries the token)",
            ));
        }
        // Whatever the client computed is not the token: ask for it in
        // cleartext.
        codec::auth_switch(out, &mut self.seq, CLEAR_PASSWORD, b"");
        self.pending = Some(login);
        self.state = State::Switched;
        None
    }

    fn malformed(&mut self, out: &mut BytesMut) -> Step {
        self.refuse_with(
            out,
            errno::HANDSHAKE_ERROR,
            "08S01",
            "airlock: malformed handshake response",
        )
    }

    fn bad_token(&mut self, out: &mut BytesMut) -> Step {
        self.refuse_with(
            out,
            errno::ACCESS_DENIED,
            "28000",
            "airlock: the password must be an OIDC token (UTF-8 text)",
        )
    }

    fn refuse_with(&mut self, out: &mut BytesMut, code: u16, state: &str, message: &str) -> Step {
        self.state = State::Done;
        codec::err(out, &mut self.seq, code, state, message);
        Step::Close
    }

    /// The login succeeded upstream: OK with the upstream's status.
    pub fn accept(&mut self, out: &mut BytesMut, status: u16) {
        codec::ok(
            out,
            &mut self.seq,
            codec::OkInfo {
                status,
                ..codec::OkInfo::default()
            },
        );
    }

    /// The login is refused with `code`/`sqlstate` and `message`.
    pub fn refuse(&mut self, out: &mut BytesMut, code: u16, sqlstate: &str, message: &str) {
        codec::err(out, &mut self.seq, code, sqlstate, message);
    }
}

/// The token from a cleartext password: the bytes up to a trailing NUL,
/// which must be UTF-8.
fn token(data: &[u8]) -> Option<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return None;
    }
    std::str::from_utf8(data).ok().map(str::to_owned)
}

/// A HandshakeResponse41 as a client writes it: airlock's upstream login,
/// and this crate's tests.
pub(crate) fn response_payload(
    capabilities: CapabilityFlags,
    collation: u8,
    user: &[u8],
    auth: &[u8],
    database: Option<&[u8]>,
    plugin: &[u8],
) -> Vec<u8> {
    let mut p = BytesMut::new();
    let mut caps = capabilities | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    if database.is_some() {
        caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    }
    caps.remove(CapabilityFlags::CLIENT_CONNECT_ATTRS);
    p.put_u32_le(caps.bits());
    p.put_u32_le(16 * 1024 * 1024);
    p.put_u8(collation);
    p.put_bytes(0, 23);
    p.extend_from_slice(user);
    p.put_u8(0);
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        codec::put_lenenc_bytes(&mut p, auth);
    } else {
        p.put_u8(auth.len() as u8);
        p.extend_from_slice(auth);
    }
    if let Some(db) = database {
        p.extend_from_slice(db);
        p.put_u8(0);
    }
    p.extend_from_slice(plugin);
    p.put_u8(0);
    p.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Greeting {
        Greeting {
            server_version: b"5.5.5-10.11.6-MariaDB".to_vec(),
            connection_id: 7,
            scramble: [b'a'; 20],
            mysql: false,
            collation: 45,
        }
    }

    fn client_caps() -> CapabilityFlags {
        CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_COMPRESS
            | CapabilityFlags::CLIENT_LOCAL_FILES
    }

    fn packet(seq: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut s = seq;
        codec::write(&mut out, &mut s, payload);
        out
    }

    fn next(out: &mut BytesMut) -> Packet {
        Framer::new(1 << 20).next(out).unwrap().unwrap()
    }

    fn err_of(out: &mut BytesMut) -> (u16, String) {
        let e = codec::err_info(&next(out).payload).unwrap();
        (e.code, String::from_utf8_lossy(&e.message).into_owned())
    }

    #[test]
    fn the_greeting_offers_cleartext_and_hides_what_airlock_cannot_inspect() {
        let mut out = BytesMut::new();
        let _hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
        let g = next(&mut out);
        assert_eq!(g.seq, 0);
        let parsed = HandshakePacket::deserialize((), &mut ParseBuf(&g.payload)).unwrap();
        assert_eq!(parsed.server_version_ref(), b"5.5.5-10.11.6-MariaDB");
        assert_eq!(parsed.connection_id(), 7);
        assert_eq!(
            parsed.auth_plugin().map(|p| p.as_bytes().to_vec()),
            Some(CLEAR_PASSWORD.to_vec())
        );
        let caps = parsed.capabilities();
        assert!(caps.contains(CapabilityFlags::CLIENT_SSL));
        for hidden in [
            CapabilityFlags::CLIENT_COMPRESS,
            CapabilityFlags::CLIENT_LOCAL_FILES,
            CapabilityFlags::CLIENT_QUERY_ATTRIBUTES,
            CapabilityFlags::CLIENT_SESSION_TRACK,
            CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA,
            CapabilityFlags::CLIENT_LONG_PASSWORD,
        ] {
            assert!(!caps.contains(hidden), "{hidden:?}");
        }
        assert!(parsed.mariadb_ext_capabilities().is_empty());
    }

    #[test]
    fn a_cleartext_response_carries_the_token_and_capabilities_are_cut_to_the_offer() {
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
        out.clear();
        let token = "e".repeat(1600);
        let mut auth = token.clone().into_bytes();
        auth.push(0);
        let mut input = packet(
            1,
            &response_payload(
                client_caps(),
                45,
                b"readonly",
                &auth,
                Some(b"shop"),
                CLEAR_PASSWORD,
            ),
        );
        let Step::Authenticate(login) = hs.handle(&mut input, &mut out) else {
            panic!("no login")
        };
        assert_eq!(login.token, token);
        assert_eq!(login.user, "readonly");
        assert_eq!(login.database.as_deref(), Some("shop"));
        assert!(
            !login
                .capabilities
                .contains(CapabilityFlags::CLIENT_COMPRESS)
        );
        assert!(
            !login
                .capabilities
                .contains(CapabilityFlags::CLIENT_LOCAL_FILES)
        );
        assert!(out.is_empty());
        hs.accept(&mut out, 2);
        assert_eq!(next(&mut out).seq, 2);
    }

    #[test]
    fn a_native_scramble_is_never_taken_for_the_token() {
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
        out.clear();
        let mut input = packet(
            1,
            &response_payload(
                client_caps(),
                45,
                b"ro",
                &[9; 20],
                None,
                b"mysql_native_password",
            ),
        );
        assert_eq!(hs.handle(&mut input, &mut out), Step::NeedMore);
        let switch = next(&mut out);
        assert_eq!(switch.seq, 2);
        assert_eq!(&switch.payload[..], b"\xfemysql_clear_password\0");
        let mut answer = packet(3, b"the.token\0");
        let Step::Authenticate(login) = hs.handle(&mut answer, &mut out) else {
            panic!("no login")
        };
        assert_eq!(login.token, "the.token");
        hs.accept(&mut out, 2);
        assert_eq!(next(&mut out).seq, 4);
    }

    #[test]
    fn cleartext_is_refused_off_loopback_and_when_tls_is_required() {
        for (offer, loopback, ok) in [
            (TlsOffer::Optional, true, true),
            (TlsOffer::Disabled, true, true),
            (TlsOffer::Optional, false, false),
            (TlsOffer::Required, true, false),
        ] {
            let mut out = BytesMut::new();
            let mut hs = ClientHandshake::start(&greeting(), offer, loopback, &mut out);
            out.clear();
            let mut input = packet(
                1,
                &response_payload(client_caps(), 45, b"ro", b"tok\0", None, CLEAR_PASSWORD),
            );
            let step = hs.handle(&mut input, &mut out);
            if ok {
                assert!(
                    matches!(step, Step::Authenticate(_)),
                    "{offer:?} {loopback}"
                );
            } else {
                assert_eq!(step, Step::Close);
                let (code, message) = err_of(&mut out);
                assert_eq!(code, errno::ACCESS_DENIED);
                assert!(message.contains("requires TLS"), "{message}");
            }
        }
    }

    #[test]
    fn ssl_request_then_tls_then_the_response() {
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Required, false, &mut out);
        out.clear();
        let mut ssl = Vec::new();
        SslRequest::new(client_caps() | CapabilityFlags::CLIENT_SSL, 1 << 24, 45)
            .serialize(&mut ssl);
        let mut input = packet(1, &ssl);
        assert_eq!(hs.handle(&mut input, &mut out), Step::StartTls);
        hs.tls_established();
        let mut input = packet(
            2,
            &response_payload(
                client_caps() | CapabilityFlags::CLIENT_SSL,
                45,
                b"ro",
                b"tok\0",
                Some(b"shop"),
                CLEAR_PASSWORD,
            ),
        );
        assert!(matches!(
            hs.handle(&mut input, &mut out),
            Step::Authenticate(_)
        ));
        assert!(hs.tls_active());
    }

    #[test]
    fn an_ssl_request_followed_by_garbage_is_closed_before_tls() {
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, false, &mut out);
        out.clear();
        let mut ssl = Vec::new();
        SslRequest::new(client_caps() | CapabilityFlags::CLIENT_SSL, 1 << 24, 45)
            .serialize(&mut ssl);
        let mut input = packet(1, &ssl);
        input.extend_from_slice(b"GARBAGE");
        assert_eq!(hs.handle(&mut input, &mut out), Step::Close);
    }

    #[test]
    fn truncated_overlong_and_tokenless_responses_are_refused() {
        let full = response_payload(
            client_caps(),
            45,
            b"ro",
            b"tok\0",
            Some(b"shop"),
            CLEAR_PASSWORD,
        );
        // Truncated anywhere inside the fixed part or the user name.
        for cut in [3, 10, 31, 33] {
            let mut out = BytesMut::new();
            let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
            out.clear();
            let mut input = packet(1, &full[..cut]);
            assert_eq!(hs.handle(&mut input, &mut out), Step::Close, "cut {cut}");
            let (code, _) = err_of(&mut out);
            assert_eq!(code, errno::HANDSHAKE_ERROR, "cut {cut}");
        }
        // An auth-data length pointing past the packet.
        let mut lying = full.clone();
        let at = 32 + 3; // after "ro\0"
        lying[at] = 200;
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
        out.clear();
        assert_eq!(hs.handle(&mut packet(1, &lying), &mut out), Step::Close);
        // A header announcing more than the login limit.
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
        out.clear();
        let mut huge = BytesMut::from(&[0xFF, 0xFF, 0xFF, 1][..]);
        assert_eq!(hs.handle(&mut huge, &mut out), Step::Close);
        assert_eq!(err_of(&mut out).0, errno::NET_PACKET_TOO_LARGE);
        // An empty or non-UTF-8 token.
        for bad in [&b"\0"[..], b"\xff\xfe\0"] {
            let mut out = BytesMut::new();
            let mut hs = ClientHandshake::start(&greeting(), TlsOffer::Optional, true, &mut out);
            out.clear();
            let mut input = packet(
                1,
                &response_payload(
                    client_caps(),
                    45,
                    b"ro",
                    b"x",
                    None,
                    b"mysql_native_password",
                ),
            );
            assert_eq!(hs.handle(&mut input, &mut out), Step::NeedMore);
            out.clear();
            assert_eq!(hs.handle(&mut packet(3, bad), &mut out), Step::Close);
            assert_eq!(err_of(&mut out).0, errno::ACCESS_DENIED);
        }
    }
}
