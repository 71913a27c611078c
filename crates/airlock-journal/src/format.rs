//! The bytes on disk, for tools that check the journal or the store without
//! this crate's reader. All integers are little-endian.
//!
//! A segment file `<stream>-<first seq, 20 digits>.seg` is a header
//! followed by records:
//!
//! ```text
//! header (72 bytes)
//!   0  magic       8   "AIRLJRNL"
//!   8  version     4   1
//!  12  stream     16   UUID bytes (equals the file name's)
//!  28  first_seq   8   seq of the segment's first record (equals the name's)
//!  36  prev       32   hash the first record chains from
//!  68  crc         4   CRC-32C of bytes 0..68
//!
//! record (80 bytes + payload)
//!   0  length      4   length of the body (72 + payload length)
//!   4  crc         4   CRC-32C of the body
//!   8  body:
//!        seq       8   1 for a stream's first record, then +1 each
//!        prev     32   hash of the record before (or the header's prev)
//!        hash     32   SHA-256(prev || seq as 8 bytes LE || payload)
//!        payload   …   opaque, at most MAX_PAYLOAD bytes
//! ```
//!
//! The header repeats the link into the segment so that an empty segment
//! (a process that stopped before writing) still tells where its chain is.
//! `<stream>.anchor` (written by [`prune`](crate::prune)) is text:
//! `airlock-journal anchor 1\nstream <uuid>\nseq <n>\nhash <64 hex>\n`, the
//! last pruned record's seq and hash.

use aws_lc_rs::digest;
use uuid::Uuid;

pub use crate::crc::{crc32c, crc32c_update};

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

pub const MAGIC: [u8; 8] = *b"AIRLJRNL";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 72;
/// `length` and `crc`, before each record's body.
pub const FRAME_LEN: usize = 8;
/// `seq`, `prev` and `hash`, before each payload.
pub const BODY_FIXED: usize = 72;
pub const RECORD_OVERHEAD: usize = FRAME_LEN + BODY_FIXED;
/// 16 MiB: well above a 1 MB statement with its bounded result sample, and
/// small enough that a garbled length cannot make a reader allocate much.
pub const MAX_PAYLOAD: usize = 16 << 20;
pub const MAX_BODY: usize = BODY_FIXED + MAX_PAYLOAD;

const GENESIS_DOMAIN: &[u8] = b"airlock-journal genesis 1\0";

/// The `prev` of a stream's first record: binds every record's hash to its
/// stream, so records copied into another stream do not verify.
pub fn genesis_hash(stream: Uuid) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(GENESIS_DOMAIN);
    ctx.update(stream.as_bytes());
    to_hash(ctx.finish())
}

/// A record's hash: `SHA-256(prev || seq (8 bytes LE) || payload)`.
pub fn record_hash(prev: &Hash, seq: u64, payload: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_le_bytes());
    ctx.update(payload);
    to_hash(ctx.finish())
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut h = [0; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// A segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub stream: Uuid,
    pub first_seq: u64,
    pub prev: Hash,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..28].copy_from_slice(self.stream.as_bytes());
        b[28..36].copy_from_slice(&self.first_seq.to_le_bytes());
        b[36..68].copy_from_slice(&self.prev);
        let crc = crc32c(&b[..68]);
        b[68..72].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a header; the error says what is wrong with it.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
        if b[0..8] != MAGIC {
            return Err("not a journal segment (bad magic)");
        }
        if crc32c(&b[..68]) != u32_at(b, 68) {
            return Err("header checksum mismatch");
        }
        if u32_at(b, 8) != VERSION {
            return Err("unsupported format version");
        }
        let first_seq = u64_at(b, 28);
        if first_seq == 0 {
            return Err("first seq is 0");
        }
        Ok(Header {
            stream: Uuid::from_bytes(b[12..28].try_into().expect("16 bytes")),
            first_seq,
            prev: b[36..68].try_into().expect("32 bytes"),
        })
    }
}

/// Appends one framed record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, prev: &Hash, hash: &Hash, payload: &[u8]) {
    let start = out.len();
    let body_len =
        u32::try_from(BODY_FIXED + payload.len()).expect("payload checked against MAX_PAYLOAD");
    out.reserve(FRAME_LEN + body_len as usize);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(hash);
    out.extend_from_slice(payload);
    let crc = crc32c(&out[start + FRAME_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record whose CRC matched (its hash is not checked here).
#[derive(Debug)]
pub(crate) struct RawRecord {
    /// Where its frame starts in the segment.
    pub offset: u64,
    pub seq: u64,
    pub prev: Hash,
    pub hash: Hash,
    pub payload: Vec<u8>,
}

/// Whether `bytes` hold a CRC-valid record at any offset whose seq is
/// plausible after `after_seq`. Tells damage followed by good records from
/// a torn tail; the seq filter keeps it from computing a CRC at every byte.
pub(crate) fn contains_record(bytes: &[u8], after_seq: u64) -> bool {
    let most = (bytes.len() / RECORD_OVERHEAD) as u64 + 1;
    (0..bytes.len()).any(|i| {
        let rest = &bytes[i..];
        if rest.len() < RECORD_OVERHEAD {
            return false;
        }
        let body_len = u32_at(rest, 0) as usize;
        if !(BODY_FIXED..=MAX_BODY).contains(&body_len) || rest.len() < FRAME_LEN + body_len {
            return false;
        }
        let seq = u64_at(rest, FRAME_LEN);
        if seq <= after_seq || seq - after_seq > most {
            return false;
        }
        crc32c(&rest[FRAME_LEN..FRAME_LEN + body_len]) == u32_at(rest, 4)
    })
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `<stream>-<first seq, 20 digits>.seg`: sorts by seq within a stream.
pub(crate) fn segment_name(stream: Uuid, first_seq: u64) -> String {
    format!("{}-{first_seq:020}.seg", stream.hyphenated())
}

/// The inverse of [`segment_name`]; other spellings are not segments.
pub(crate) fn parse_segment_name(name: &str) -> Option<(Uuid, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (id, seq) = stem.split_at_checked(36)?;
    let seq = seq.strip_prefix('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let stream = Uuid::try_parse(id).ok()?;
    let first_seq: u64 = seq.parse().ok()?;
    (first_seq > 0 && segment_name(stream, first_seq) == name).then_some((stream, first_seq))
}

pub(crate) fn anchor_name(stream: Uuid) -> String {
    format!("{}.anchor", stream.hyphenated())
}

pub(crate) fn parse_anchor_name(name: &str) -> Option<Uuid> {
    let id = name.strip_suffix(".anchor")?;
    let stream = Uuid::try_parse(id).ok()?;
    (anchor_name(stream) == name).then_some(stream)
}

/// A `<segment>.torn` or `<segment>.torn.<n>` file recovery set aside.
pub(crate) fn parse_torn_name(name: &str) -> Option<Uuid> {
    let (seg, suffix) = name.split_once(".seg.torn")?;
    if !(suffix.is_empty()
        || suffix
            .strip_prefix('.')
            .is_some_and(|n| n.parse::<u32>().is_ok()))
    {
        return None;
    }
    parse_segment_name(&format!("{seg}.seg")).map(|(stream, _)| stream)
}

pub(crate) fn encode_anchor(stream: Uuid, seq: u64, hash: &Hash) -> String {
    format!(
        "airlock-journal anchor 1\nstream {}\nseq {seq}\nhash {}\n",
        stream.hyphenated(),
        hex(hash)
    )
}

/// Parses an anchor file's text; the error says what is wrong with it.
pub(crate) fn decode_anchor(text: &str, stream: Uuid) -> Result<(u64, Hash), &'static str> {
    let mut lines = text
        .strip_suffix('\n')
        .ok_or("no final newline")?
        .split('\n');
    if lines.next() != Some("airlock-journal anchor 1") {
        return Err("not an anchor file (bad first line)");
    }
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("stream "))
        .ok_or("no stream line")?;
    if id != stream.hyphenated().to_string() {
        return Err("names another stream");
    }
    let seq = lines
        .next()
        .and_then(|l| l.strip_prefix("seq "))
        .ok_or("no seq line")?;
    let seq: u64 = seq.parse().map_err(|_| "seq is not a number")?;
    let hash = lines
        .next()
        .and_then(|l| l.strip_prefix("hash "))
        .ok_or("no hash line")?;
    let hash = unhex(hash).ok_or("hash is not 64 hex digits")?;
    if lines.next().is_some() {
        return Err("trailing lines");
    }
    Ok((seq, hash))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Hash> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut h = [0; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        h[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_other_spellings() {
        let stream = Uuid::now_v7();
        let name = segment_name(stream, 42);
        assert_eq!(name.len(), 36 + 1 + 20 + 4);
        assert_eq!(parse_segment_name(&name), Some((stream, 42)));
        assert_eq!(
            parse_segment_name(&name.to_uppercase().replace(".SEG", ".seg")),
            None
        );
        assert_eq!(parse_segment_name(&format!("{}-42.seg", stream)), None);
        assert_eq!(parse_segment_name(&segment_name(stream, 0)), None);
        assert_eq!(parse_segment_name(&format!("{name}.tmp")), None);
        assert_eq!(parse_torn_name(&format!("{name}.torn")), Some(stream));
        assert_eq!(parse_torn_name(&format!("{name}.torn.3")), Some(stream));
        assert_eq!(parse_torn_name(&format!("{name}.tornx")), None);
        assert_eq!(parse_anchor_name(&anchor_name(stream)), Some(stream));
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = Header {
            stream: Uuid::now_v7(),
            first_seq: 7,
            prev: [9; 32],
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        b[30] ^= 1;
        assert_eq!(Header::decode(&b), Err("header checksum mismatch"));
        b[0] = b'X';
        assert_eq!(Header::decode(&b), Err("not a journal segment (bad magic)"));
    }

    #[test]
    fn anchor_round_trip_and_checks() {
        let stream = Uuid::now_v7();
        let text = encode_anchor(stream, 99, &[0xab; 32]);
        assert_eq!(decode_anchor(&text, stream), Ok((99, [0xab; 32])));
        assert!(decode_anchor(&text, Uuid::now_v7()).is_err());
        assert!(decode_anchor(&text.replace("seq 99", "seq x"), stream).is_err());
        assert!(decode_anchor(&text.replace("abab\n", "abAB\n"), stream).is_err());
        assert!(decode_anchor(text.trim_end(), stream).is_err());
    }

    #[test]
    fn record_frame_layout() {
        let prev = [1; 32];
        let hash = record_hash(&prev, 5, b"payload");
        let mut out = Vec::new();
        encode_record(&mut out, 5, &prev, &hash, b"payload");
        assert_eq!(out.len(), RECORD_OVERHEAD + 7);
        assert_eq!(u32_at(&out, 0) as usize, BODY_FIXED + 7);
        assert_eq!(u32_at(&out, 4), crc32c(&out[FRAME_LEN..]));
        assert_eq!(u64_at(&out, 8), 5);
        assert_eq!(&out[16..48], &prev);
        assert_eq!(&out[48..80], &hash);
        assert_eq!(&out[80..], b"payload");
        assert!(contains_record(&out, 4));
        assert!(!contains_record(&out, 5));
        assert!(!contains_record(&out[1..], 4));
    }
}
