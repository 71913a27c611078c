//! Packets: framing (with the 16 MiB continuation rule), length-encoded
//! integers and strings, and the few packets airlock writes itself (OK,
//! ERR, EOF, AuthSwitchRequest).
//!
//! A MySQL packet is a 3-byte little-endian length, a 1-byte sequence id
//! and the payload. A payload of 2^24-1 bytes or more is sent as frames of
//! exactly 2^24-1 bytes followed by a shorter one (possibly empty);
//! [`Framer::next`] gives the whole payload back, and [`write`] splits it
//! again.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest frame payload; a frame this long is continued by the next.
pub const MAX_FRAME: usize = 0xFF_FFFF;

/// One logical packet: its whole payload and the sequence id of its last
/// frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub payload: Bytes,
}

/// Why bytes could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a packet of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("frame sequence {got} where {want} was expected")]
    Sequence { got: u8, want: u8 },
}

/// Frames packets out of a byte stream, reassembling continued packets,
/// each bounded by `max` bytes before anything is reserved for it.
#[derive(Debug)]
pub struct Framer {
    max: usize,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer { max }
    }

    /// The next whole packet in `buf`, consumed; `Ok(None)` when more bytes
    /// are needed (nothing is consumed then).
    pub fn next(&self, buf: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        // Check-then-split: walk the frames first.
        let mut at = 0;
        let mut total = 0usize;
        let mut frames = 0;
        let first_seq = match buf.get(3) {
            Some(&s) => s,
            None => return Ok(None),
        };
        loop {
            let Some(header) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len =
                usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
            let want = first_seq.wrapping_add(frames);
            if header[3] != want {
                return Err(FrameError::Sequence {
                    got: header[3],
                    want,
                });
            }
            total += len;
            if total > self.max {
                return Err(FrameError::TooLarge(total, self.max));
            }
            at += 4 + len;
            frames = frames.wrapping_add(1);
            if buf.len() < at {
                // Reserve for the rest of this frame only: lengths were checked.
                buf.reserve(at - buf.len());
                return Ok(None);
            }
            if len < MAX_FRAME {
                break;
            }
        }
        let seq = first_seq.wrapping_add(frames - 1);
        if frames == 1 {
            buf.advance(4);
            return Ok(Some(Packet {
                seq,
                payload: buf.split_to(total).freeze(),
            }));
        }
        let mut payload = BytesMut::with_capacity(total);
        let mut frame = buf.split_to(at);
        while !frame.is_empty() {
            let len =
                usize::from(frame[0]) | usize::from(frame[1]) << 8 | usize::from(frame[2]) << 16;
            frame.advance(4);
            payload.extend_from_slice(&frame.split_to(len));
        }
        Ok(Some(Packet {
            seq,
            payload: payload.freeze(),
        }))
    }
}

/// Writes `payload` as one logical packet starting at sequence id `*seq`,
/// split into frames as needed; `*seq` is left at the next id.
pub fn write(out: &mut BytesMut, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        out.reserve(4 + n);
        out.put_uint_le(n as u64, 3);
        out.put_u8(*seq);
        *seq = seq.wrapping_add(1);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_FRAME {
            return;
        }
    }
}

/// Writes a packet whose payload `fill` appends, starting at `*seq`.
pub fn write_with(out: &mut BytesMut, seq: &mut u8, fill: impl FnOnce(&mut BytesMut)) {
    let mut payload = BytesMut::new();
    fill(&mut payload);
    write(out, seq, &payload);
}

/// Reads a length-encoded integer at the front of `buf`. `None` for the
/// NULL marker (0xFB), 0xFF, or too few bytes.
pub fn lenenc_int(buf: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = buf.split_first()?;
    let (value, used) = match first {
        0..=0xFA => (u64::from(first), 0),
        0xFC => (
            u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        0xFD => {
            let b = rest.get(..3)?;
            (
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                3,
            )
        }
        0xFE => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
        _ => return None,
    };
    *buf = &rest[used..];
    Some(value)
}

pub fn put_lenenc_int(out: &mut BytesMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(v, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(v);
        }
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, b: &[u8]) {
    put_lenenc_int(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// One value of a text-protocol row: `None` is SQL NULL. Advances `buf`;
/// `Err` for a malformed row.
#[allow(clippy::result_unit_err)]
pub fn text_value<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
    match buf.first() {
        None => Err(()),
        Some(0xFB) => {
            *buf = &buf[1..];
            Ok(None)
        }
        Some(_) => {
            let len = lenenc_int(buf).ok_or(())?;
            let len = usize::try_from(len).map_err(|_| ())?;
            let value = buf.get(..len).ok_or(())?;
            *buf = &buf[len..];
            Ok(Some(value))
        }
    }
}

/// Server status flags airlock reads.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
}

/// An OK packet's fields airlock reads: affected rows, status, warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Reads an OK packet (header 0x00, or 0xFE as a terminator).
pub fn ok_info(payload: &[u8]) -> Option<OkInfo> {
    let mut b = payload.get(1..)?;
    let affected_rows = lenenc_int(&mut b)?;
    let last_insert_id = lenenc_int(&mut b)?;
    let status = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
    let warnings = b.get(2..4).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Reads an old-style EOF packet (0xFE, fewer than 9 bytes): status and
/// warnings.
pub fn eof_info(payload: &[u8]) -> Option<OkInfo> {
    let b = payload.get(1..5)?;
    Some(OkInfo {
        warnings: u16::from_le_bytes([b[0], b[1]]),
        status: u16::from_le_bytes([b[2], b[3]]),
        ..OkInfo::default()
    })
}

/// Whether `payload` is an EOF-or-terminator packet (0xFE and shorter than
/// a length-encoded 8-byte integer could be; a row starting with 0xFE is
/// at least 9 bytes).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// An ERR packet's code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub sqlstate: [u8; 5],
    pub message: Bytes,
}

pub fn err_info(payload: &Bytes) -> Option<ErrInfo> {
    if payload.first() != Some(&0xFF) || payload.len() < 3 {
        return None;
    }
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let (sqlstate, at) = match payload.get(3) {
        Some(b'#') if payload.len() >= 9 => (payload[4..9].try_into().ok()?, 9),
        _ => (*b"HY000", 3),
    };
    Some(ErrInfo {
        code,
        sqlstate,
        message: payload.slice(at..),
    })
}

/// Writes an ERR packet (protocol 4.1, with a SQLSTATE).
pub fn err(out: &mut BytesMut, seq: &mut u8, code: u16, sqlstate: &str, message: &str) {
    write_with(out, seq, |p| {
        p.put_u8(0xFF);
        p.put_u16_le(code);
        p.put_u8(b'#');
        let state = sqlstate.as_bytes();
        p.extend_from_slice(state.get(..5).unwrap_or(b"HY000"));
        p.extend_from_slice(message.as_bytes());
    });
}

/// Writes an OK packet.
pub fn ok(out: &mut BytesMut, seq: &mut u8, info: OkInfo) {
    write_with(out, seq, |p| {
        p.put_u8(0x00);
        put_lenenc_int(p, info.affected_rows);
        put_lenenc_int(p, info.last_insert_id);
        p.put_u16_le(info.status);
        p.put_u16_le(info.warnings);
    });
}

/// Writes an AuthSwitchRequest naming `plugin`, with `data`.
pub fn auth_switch(out: &mut BytesMut, seq: &mut u8, plugin: &[u8], data: &[u8]) {
    write_with(out, seq, |p| {
        p.put_u8(0xFE);
        p.extend_from_slice(plugin);
        p.put_u8(0);
        p.extend_from_slice(data);
    });
}

/// Command bytes (the first payload byte of a client packet).
pub mod command {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0E;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const RESET_CONNECTION: u8 = 0x1F;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8], seq: u8) -> BytesMut {
        let mut out = BytesMut::new();
        let mut s = seq;
        write(&mut out, &mut s, payload);
        out
    }

    #[test]
    fn a_packet_is_framed_and_needs_its_whole_length() {
        let wire = framed(b"\x03select 1", 0);
        let framer = Framer::new(1 << 20);
        for cut in 0..wire.len() {
            let mut partial = BytesMut::from(&wire[..cut]);
            assert_eq!(framer.next(&mut partial).unwrap(), None, "cut at {cut}");
            assert_eq!(partial.len(), cut, "nothing consumed");
        }
        let mut whole = wire.clone();
        whole.extend_from_slice(&framed(b"\x0e", 0));
        let p = framer.next(&mut whole).unwrap().unwrap();
        assert_eq!((p.seq, &p.payload[..]), (0, &b"\x03select 1"[..]));
        assert_eq!(
            framer.next(&mut whole).unwrap().unwrap().payload,
            &b"\x0e"[..]
        );
        assert!(whole.is_empty());
    }

    #[test]
    fn packets_of_16_mib_and_more_are_split_and_reassembled() {
        for size in [
            MAX_FRAME - 1,
            MAX_FRAME,
            MAX_FRAME + 1,
            2 * MAX_FRAME,
            2 * MAX_FRAME + 7,
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut wire = framed(&payload, 3);
            let frames = size / MAX_FRAME + 1;
            assert_eq!(wire.len(), size + 4 * frames, "size {size}");
            let p = Framer::new(64 << 20).next(&mut wire).unwrap().unwrap();
            assert_eq!(p.payload.len(), size);
            assert!(p.payload[..] == payload[..], "size {size}");
            assert_eq!(p.seq, 3 + frames as u8 - 1);
            assert!(wire.is_empty());
        }
    }

    #[test]
    fn oversized_and_missequenced_packets_are_refused_before_buffering() {
        // A header announcing more than the limit is refused at once.
        let mut wire = BytesMut::from(&[0xFF, 0xFF, 0x0F, 0][..]);
        assert_eq!(
            Framer::new(1024).next(&mut wire),
            Err(FrameError::TooLarge(0x0F_FFFF, 1024))
        );
        // A continuation frame with the wrong sequence id.
        let mut wire = framed(&vec![0u8; MAX_FRAME + 1], 0);
        wire[4 + MAX_FRAME + 3] = 9;
        assert_eq!(
            Framer::new(64 << 20).next(&mut wire),
            Err(FrameError::Sequence { got: 9, want: 1 })
        );
    }

    #[test]
    fn lenenc_integers_round_trip_and_refuse_short_input() {
        for v in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, v);
            let mut b = &out[..];
            assert_eq!(lenenc_int(&mut b), Some(v));
            assert!(b.is_empty());
            let mut short = &out[..out.len() - 1];
            if out.len() > 1 {
                assert_eq!(lenenc_int(&mut short), None);
            }
        }
        assert_eq!(lenenc_int(&mut &[0xFB][..]), None);
        assert_eq!(lenenc_int(&mut &[0xFF][..]), None);
    }

    #[test]
    fn text_values_and_nulls() {
        let row = b"\x03abc\xfb\x00";
        let mut b = &row[..];
        assert_eq!(text_value(&mut b), Ok(Some(&b"abc"[..])));
        assert_eq!(text_value(&mut b), Ok(None));
        assert_eq!(text_value(&mut b), Ok(Some(&b""[..])));
        assert_eq!(text_value(&mut b), Err(()));
        assert_eq!(text_value(&mut &b"\x05ab"[..]), Err(()));
    }

    #[test]
    fn ok_err_and_eof_packets() {
        let mut out = BytesMut::new();
        let mut seq = 1;
        ok(
            &mut out,
            &mut seq,
            OkInfo {
                affected_rows: 300,
                last_insert_id: 7,
                status: status::AUTOCOMMIT,
                warnings: 2,
            },
        );
        err(&mut out, &mut seq, 1045, "28000", "denied");
        assert_eq!(seq, 3);
        let framer = Framer::new(1024);
        let ok_packet = framer.next(&mut out).unwrap().unwrap();
        assert_eq!(
            ok_info(&ok_packet.payload),
            Some(OkInfo {
                affected_rows: 300,
                last_insert_id: 7,
                status: status::AUTOCOMMIT,
                warnings: 2
            })
        );
        let e = err_info(&framer.next(&mut out).unwrap().unwrap().payload).unwrap();
        assert_eq!(
            (e.code, &e.sqlstate, &e.message[..]),
            (1045, b"28000", &b"denied"[..])
        );
        assert!(is_eof(b"\xfe\x00\x00\x02\x00"));
        assert!(!is_eof(b"\xfe\x01\x02\x03\x04\x05\x06\x07\x08"));
        assert_eq!(
            eof_info(b"\xfe\x01\x00\x08\x00").unwrap().status,
            status::MORE_RESULTS_EXISTS
        );
    }
}

/// Property: how the stream is cut does not change the packets.
#[cfg(test)]
mod split_tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;

    /// Every whole packet in `buf`.
    fn drain(framer: &Framer, buf: &mut BytesMut, into: &mut Vec<Packet>) {
        while let Some(p) = framer.next(buf).unwrap() {
            into.push(p);
        }
    }

    /// A packet of more than one frame, cut around its frame boundary and
    /// inside the second frame's header, frames as it does whole.
    #[test]
    fn a_packet_of_two_frames_cut_near_its_boundary_frames_the_same() {
        let payload: Vec<u8> = (0..MAX_FRAME + 7).map(|i| (i % 251) as u8).collect();
        let mut stream = BytesMut::new();
        write(&mut stream, &mut 3, &payload);
        write(&mut stream, &mut 0, b"next");
        let framer = Framer::new(MAX_FRAME + 1024);
        let boundary = 4 + MAX_FRAME;
        for cut in [
            1,
            4,
            boundary - 1,
            boundary,
            boundary + 1,
            boundary + 2,
            boundary + 3,
            boundary + 4,
            boundary + 5,
            stream.len() - 5,
        ] {
            let mut input = BytesMut::from(&stream[..cut]);
            let mut got = Vec::new();
            drain(&framer, &mut input, &mut got);
            let whole_first = usize::from(cut >= boundary + 4 + 7);
            assert_eq!(got.len(), whole_first, "cut at {cut}: only whole packets");
            input.extend_from_slice(&stream[cut..]);
            drain(&framer, &mut input, &mut got);
            assert!(input.is_empty(), "cut at {cut}");
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].seq, 4, "the last frame's sequence id");
            assert!(got[0].payload[..] == payload[..], "cut at {cut}");
            assert_eq!(&got[1].payload[..], b"next");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn packets_cut_anywhere_frame_the_same(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..10),
            first_seq in any::<u8>(),
            cuts in prop::collection::vec(0usize..8192, 0..32),
        ) {
            let mut stream = BytesMut::new();
            for p in &payloads {
                // Each packet a command's first, as a client sends them.
                let mut seq = first_seq;
                write(&mut stream, &mut seq, p);
            }
            let framer = Framer::new(1 << 20);
            let mut whole = Vec::new();
            let mut input = stream.clone();
            drain(&framer, &mut input, &mut whole);
            prop_assert!(input.is_empty());
            prop_assert_eq!(whole.len(), payloads.len());
            for (packet, payload) in whole.iter().zip(&payloads) {
                prop_assert_eq!(&packet.payload[..], &payload[..]);
                prop_assert_eq!(packet.seq, first_seq);
            }

            let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            at.push(stream.len());
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut input = BytesMut::new();
            let mut from = 0;
            for to in at {
                input.extend_from_slice(&stream[from..to]);
                from = to;
                drain(&framer, &mut input, &mut pieces);
            }
            prop_assert!(input.is_empty());
            prop_assert_eq!(pieces, whole);
        }
    }
}
