//! The MySQL door's codec and machines: packet framing, the client's
//! handshake, the upstream login and the answer classifier.

use airlock_mywire::codec::{self, Framer};
use airlock_mywire::handshake::{self, ClientHandshake, Greeting, TlsOffer};
use airlock_mywire::response::{Expect, Response};
use airlock_mywire::upstream::{Step as LoginStep, TlsWant, UpstreamLogin};
use bytes::BytesMut;
use mysql_common::constants::CapabilityFlags;

use crate::{Chunks, Side};

/// Packets above this are refused by the framer under test.
const MAX_PACKET: usize = 1 << 16;

/// Framing and the value readers the doors use on payloads: a packet is
/// never larger than the limit, and whatever is framed reads without
/// panicking as OK, EOF, ERR, or a text row.
pub fn framer(data: &[u8]) {
    let framer = Framer::new(MAX_PACKET);
    let mut input = BytesMut::new();
    for (_, chunk) in Chunks(data) {
        input.extend_from_slice(chunk);
        loop {
            match framer.next(&mut input) {
                Ok(Some(packet)) => {
                    assert!(
                        packet.payload.len() <= MAX_PACKET,
                        "a packet over the limit"
                    );
                    let _ = codec::ok_info(&packet.payload);
                    let _ = codec::eof_info(&packet.payload);
                    let _ = codec::err_info(&packet.payload);
                    let mut row: &[u8] = &packet.payload;
                    while let Ok(Some(_)) = codec::text_value(&mut row) {}
                    let mut ints: &[u8] = &packet.payload;
                    while codec::lenenc_int(&mut ints).is_some() {}
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The client's side of the handshake: SSL request, handshake response,
/// the cleartext token after an auth switch, in any order and cut anywhere.
pub fn handshake(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let greeting = Greeting {
        server_version: b"5.5.5-10.11.6-MariaDB".to_vec(),
        connection_id: 7,
        scramble: [b'a'; 20],
        mysql: first & 8 != 0,
        collation: 45,
    };
    let offer =
        [TlsOffer::Disabled, TlsOffer::Optional, TlsOffer::Required][usize::from(first % 3)];
    let mut out = BytesMut::new();
    let mut client = ClientHandshake::start(&greeting, offer, first & 4 != 0, &mut out);
    let mut input = BytesMut::new();
    for (_, chunk) in Chunks(rest) {
        input.extend_from_slice(chunk);
        for _ in 0..8 {
            match client.handle(&mut input, &mut out) {
                handshake::Step::NeedMore => break,
                handshake::Step::StartTls => client.tls_established(),
                handshake::Step::Authenticate(_) => {
                    if first & 16 != 0 {
                        client.accept(&mut out, 2);
                    } else {
                        client.refuse(&mut out, 1045, "28000", "refused");
                    }
                    return;
                }
                handshake::Step::Close => return,
            }
        }
    }
}

/// airlock logging in upstream, whatever the server greets and answers
/// (native password, caching_sha2 fast and full paths, auth switches,
/// TLS wanted or not).
pub fn upstream_login(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let tls = [TlsWant::Disable, TlsWant::Prefer, TlsWant::Require][usize::from(first % 3)];
    let password = (first & 4 == 0).then_some("s3cret");
    let client = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_MULTI_RESULTS;
    let mut login = UpstreamLogin::new("airlock", password, "orders", client, 45, tls);
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    for (_, chunk) in Chunks(rest) {
        input.extend_from_slice(chunk);
        for _ in 0..8 {
            match login.handle(&mut input, &mut out) {
                LoginStep::NeedMore => break,
                LoginStep::StartTls => login.tls_established(&mut out),
                LoginStep::Ready(_) | LoginStep::Failed(_) => return,
            }
        }
    }
}

/// The answer classifier over any packets: each client chunk is a
/// command that sets what is expected, each upstream chunk one packet.
pub fn response(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut response = Response::new(first & 1 != 0);
    for (side, chunk) in Chunks(rest) {
        match side {
            Side::Client => {
                let pick = chunk.first().copied().unwrap_or(0);
                response.expect(match pick % 4 {
                    0 => Expect::Results {
                        binary: pick & 4 != 0,
                    },
                    1 => Expect::Prepare,
                    2 => Expect::Fetch,
                    _ => Expect::Status,
                });
            }
            Side::Upstream => {
                if response.next(chunk).is_err() {
                    response = Response::new(first & 1 != 0);
                }
            }
        }
    }
    let _ = response.done();
}
