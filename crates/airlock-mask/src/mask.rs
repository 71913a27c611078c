//! Masking strategies applied to one value, and the key that makes `hash`
//! pseudonyms stable.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use airlock_policy::masking::Strategy;
use aws_lc_rs::hmac;
use memchr::memmem;

use crate::detect::{boundary_after, boundary_before};

/// What a text value is replaced with when nothing of it may show.
pub use airlock_policy::masking::PLACEHOLDER;

/// The name of the key file in the data directory.
const KEY_FILE: &str = "mask-key";
const KEY_LEN: usize = 32;
/// `hash_` and this many hex characters of the HMAC: 64 bits, enough that
/// distinct values do not collide in practice, short enough to read.
const HASH_HEX: usize = 16;

/// The outcome of masking one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Masked {
    /// The masked bytes were appended to the output.
    Value,
    /// The value must be sent as NULL; nothing was appended.
    Null,
}

/// Applies masking strategies. Holds the HMAC key of the `hash` strategy:
/// the same key gives the same pseudonyms, so they stay joinable across
/// sessions and restarts, and nobody without the key can confirm a guess.
#[derive(Clone)]
pub struct Masker {
    key: hmac::Key,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masker { key: <redacted> }")
    }
}

impl Masker {
    pub fn new(key: [u8; 32]) -> Masker {
        Masker {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        }
    }

    /// The masker keyed by `dir/mask-key` (32 raw bytes), creating the key
    /// with fresh random bytes, readable by the owner only, when it does
    /// not exist yet. Two processes starting together agree on one key:
    /// the file is created with `create_new`, and the loser reads it.
    pub fn load_or_create(dir: &Path) -> io::Result<Masker> {
        let path = dir.join(KEY_FILE);
        match read_key(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other.map(Masker::new),
        }
        fs::create_dir_all(dir)?;
        let mut key = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| io::Error::other("no random bytes for the masking key"))?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(Masker::new(key))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                read_racing_key(&path).map(Masker::new)
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("creating {}: {e}", path.display()),
            )),
        }
    }

    /// Masks `value` with `strategy`. `text` says whether the client reads
    /// the value as text: a placeholder cannot stand in for an integer or
    /// a binary-format value, so a non-text value is always NULL.
    pub fn apply(&self, strategy: Strategy, value: &[u8], text: bool, out: &mut Vec<u8>) -> Masked {
        if !text {
            return Masked::Null;
        }
        match strategy {
            Strategy::Null => return Masked::Null,
            Strategy::Redact => out.extend_from_slice(PLACEHOLDER.as_bytes()),
            Strategy::Partial {
                keep_first,
                keep_last,
            } => partial(value, keep_first.into(), keep_last.into(), out),
            Strategy::Email => email(value, out),
            Strategy::Hash => self.hash(value, out),
        }
        Masked::Value
    }

    /// Copies `text` to `out`, replacing each span by its masked form;
    /// inside text there is no NULL, so a `Null` strategy gives
    /// [`PLACEHOLDER`]. Spans are expected sorted and non-overlapping, as
    /// [`crate::Detectors::find`] returns them; overlapping parts are
    /// masked once, and spans past the end are clipped.
    pub fn mask_spans(&self, text: &[u8], spans: &[(Range<usize>, Strategy)], out: &mut Vec<u8>) {
        let mut sorted;
        let spans = if spans.is_sorted_by_key(|(r, _)| r.start) {
            spans
        } else {
            sorted = spans.to_vec();
            sorted.sort_by_key(|(r, _)| r.start);
            &sorted
        };
        out.reserve(text.len());
        let mut pos = 0;
        for (range, strategy) in spans {
            let start = range.start.max(pos).min(text.len());
            let end = range.end.min(text.len());
            if start >= end {
                continue;
            }
            out.extend_from_slice(&text[pos..start]);
            if self.apply(*strategy, &text[start..end], true, out) == Masked::Null {
                out.extend_from_slice(PLACEHOLDER.as_bytes());
            }
            pos = end;
        }
        out.extend_from_slice(&text[pos..]);
    }

    /// `hash_` and the first 16 hex characters of HMAC-SHA256(key, value).
    fn hash(&self, value: &[u8], out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.key, value);
        out.extend_from_slice(b"hash_");
        for &b in &tag.as_ref()[..HASH_HEX / 2] {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

fn read_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    let bytes = fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: a masking key must be exactly {KEY_LEN} bytes, found {}",
                path.display(),
                bytes.len()
            ),
        )
    })
}

/// Reads a key another process has just created: it may not have written
/// all of it yet, so a short file is retried for a moment before it counts
/// as broken.
fn read_racing_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    let mut tries = 0;
    loop {
        match read_key(path) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The first `keep_first` and last `keep_last` characters around the
/// placeholder. A value no longer than what would be kept is hidden whole:
/// partial masking must never reveal an entire short value.
fn partial(value: &[u8], keep_first: usize, keep_last: usize, out: &mut Vec<u8>) {
    let placeholder = PLACEHOLDER.as_bytes();
    let Ok(s) = std::str::from_utf8(value) else {
        out.extend_from_slice(placeholder);
        return;
    };
    let chars = s.chars().count();
    if chars <= keep_first + keep_last {
        out.extend_from_slice(placeholder);
        return;
    }
    let head = s.char_indices().nth(keep_first).map_or(s.len(), |(i, _)| i);
    let tail = if keep_last == 0 {
        s.len()
    } else {
        s.char_indices()
            .nth_back(keep_last - 1)
            .map_or(0, |(i, _)| i)
    };
    out.extend_from_slice(&value[..head]);
    out.extend_from_slice(placeholder);
    out.extend_from_slice(&value[tail..]);
}

/// `a***@example.com` for `alice@example.com`; anything that is not a
/// plain `local@domain` is hidden whole.
fn email(value: &[u8], out: &mut Vec<u8>) {
    let parts = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.rsplit_once('@'))
        .filter(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !local.contains(char::is_whitespace)
                && !domain.contains(char::is_whitespace)
        });
    match parts {
        Some((local, domain)) => {
            let first = local.chars().next().map_or(0, char::len_utf8);
            out.extend_from_slice(&local.as_bytes()[..first]);
            out.extend_from_slice(b"***@");
            out.extend_from_slice(domain.as_bytes());
        }
        None => out.extend_from_slice(PLACEHOLDER.as_bytes()),
    }
}

/// Whether `text` contains what masking produces: `***` (the placeholder,
/// partial and email masks) or a `hash_` pseudonym. Writing such a value
/// back would replace real data with its mask, so writes carrying one are
/// refused.
pub fn looks_masked(text: &[u8]) -> bool {
    if memmem::find(text, b"***").is_some() {
        return true;
    }
    memmem::find_iter(text, b"hash_").any(|p| {
        let hex = p + 5;
        boundary_before(text, p)
            && text.get(hex..hex + HASH_HEX).is_some_and(|h| {
                h.iter()
                    .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            && boundary_after(text, hex + HASH_HEX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new([7; 32])
    }

    fn apply(strategy: Strategy, value: &[u8]) -> (Masked, Vec<u8>) {
        let mut out = b"prefix:".to_vec();
        let m = masker().apply(strategy, value, true, &mut out);
        (m, out.split_off(7))
    }

    fn text(strategy: Strategy, value: &str) -> String {
        let (m, out) = apply(strategy, value.as_bytes());
        assert_eq!(m, Masked::Value);
        String::from_utf8(out).unwrap()
    }

    fn partial(keep_first: u16, keep_last: u16) -> Strategy {
        Strategy::Partial {
            keep_first,
            keep_last,
        }
    }

    #[test]
    fn non_text_is_always_null() {
        for s in [
            Strategy::Redact,
            partial(1, 1),
            Strategy::Email,
            Strategy::Hash,
            Strategy::Null,
        ] {
            let mut out = Vec::new();
            assert_eq!(masker().apply(s, b"42", false, &mut out), Masked::Null);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn redact_and_null() {
        assert_eq!(text(Strategy::Redact, "Alice"), "*****");
        assert_eq!(text(Strategy::Redact, ""), "*****");
        assert_eq!(apply(Strategy::Redact, &[0xff, 0x00]).1, b"*****");
        assert_eq!(apply(Strategy::Null, b"x"), (Masked::Null, vec![]));
    }

    #[test]
    fn partial_keeps_chars() {
        assert_eq!(text(partial(0, 4), "4111111111111111"), "*****1111");
        assert_eq!(text(partial(2, 2), "Alice Smith"), "Al*****th");
        assert_eq!(text(partial(1, 0), "Alice"), "A*****");
        assert_eq!(text(partial(0, 0), "Alice"), "*****");
        // By characters, not bytes.
        assert_eq!(text(partial(2, 1), "Zoë Ødegård"), "Zo*****d");
        assert_eq!(text(partial(1, 2), "日本語のテキスト"), "日*****スト");
    }

    #[test]
    fn partial_never_reveals_a_short_value() {
        assert_eq!(text(partial(2, 2), "Anna"), "*****");
        assert_eq!(text(partial(2, 2), "Ann"), "*****");
        assert_eq!(text(partial(3, 0), "Bob"), "*****");
        assert_eq!(text(partial(0, 4), "1234"), "*****");
        assert_eq!(text(partial(2, 2), "Ännä"), "*****");
        assert_eq!(text(partial(u16::MAX, u16::MAX), "x"), "*****");
        assert_eq!(text(partial(2, 2), "Annas"), "An*****as");
    }

    #[test]
    fn partial_of_non_utf8_is_redacted() {
        assert_eq!(apply(partial(1, 1), b"ab\xffcd").1, b"*****");
    }

    #[test]
    fn email_keeps_first_char_and_domain() {
        assert_eq!(
            text(Strategy::Email, "alice@example.com"),
            "a***@example.com"
        );
        assert_eq!(text(Strategy::Email, "ä@b.de"), "ä***@b.de");
        assert_eq!(
            text(Strategy::Email, "\"a@b\"@example.com"),
            "\"***@example.com"
        );
        for not_email in ["alice", "@example.com", "alice@", "a b@c.com", ""] {
            assert_eq!(text(Strategy::Email, not_email), "*****", "{not_email}");
        }
        assert_eq!(apply(Strategy::Email, b"\xff@example.com").1, b"*****");
    }

    #[test]
    fn hash_is_keyed_and_deterministic() {
        let a = text(Strategy::Hash, "alice@example.com");
        assert_eq!(a.len(), 5 + 16);
        assert!(a.starts_with("hash_"));
        assert!(
            a[5..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(a, text(Strategy::Hash, "alice@example.com"));
        assert_ne!(a, text(Strategy::Hash, "bob@example.com"));
        let mut other = Vec::new();
        let _ = Masker::new([8; 32]).apply(Strategy::Hash, b"alice@example.com", true, &mut other);
        assert_ne!(a.as_bytes(), other);
        assert!(looks_masked(a.as_bytes()));
    }

    #[test]
    fn hash_matches_hmac_sha256() {
        // Checked against aws-lc directly and against Python's
        // `hmac.new(b"\x0b" * 32, b"Hi There", sha256)`.
        let m = Masker::new([0x0b; 32]);
        let mut out = Vec::new();
        let _ = m.apply(Strategy::Hash, b"Hi There", true, &mut out);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]), b"Hi There");
        let hex: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(out, format!("hash_{hex}").into_bytes());
        assert_eq!(out, b"hash_198a607eb44bfbc6");
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", masker()), "Masker { key: <redacted> }");
    }

    #[test]
    fn mask_spans_replaces_each_span() {
        let m = masker();
        let text = b"ssn 123-45-6789 mail alice@example.com end";
        let spans = [(4..15, Strategy::Redact), (21..38, Strategy::Email)];
        let mut out = Vec::new();
        m.mask_spans(text, &spans, &mut out);
        assert_eq!(out, b"ssn ***** mail a***@example.com end");

        let mut out = Vec::new();
        m.mask_spans(text, &[(4..15, Strategy::Null)], &mut out);
        assert_eq!(out, b"ssn ***** mail alice@example.com end");

        let mut out = Vec::new();
        m.mask_spans(text, &[], &mut out);
        assert_eq!(out, text);
    }

    #[test]
    fn mask_spans_tolerates_unsorted_overlapping_and_clipped_spans() {
        let m = masker();
        let mut out = Vec::new();
        let spans = [
            (6..8, Strategy::Redact),
            (0..2, Strategy::Redact),
            (1..3, Strategy::Redact),
            (7..100, Strategy::Redact),
        ];
        m.mask_spans(b"abcdefghij", &spans, &mut out);
        assert_eq!(out, b"**********def**********");
    }

    #[test]
    fn looks_masked_recognizes_masks() {
        for masked in [
            "*****",
            "a***@example.com",
            "Al*****th",
            "hash_0123456789abcdef",
            "id=hash_0123456789abcdef;",
            "(hash_fedcba9876543210)",
        ] {
            assert!(looks_masked(masked.as_bytes()), "{masked}");
        }
        for plain in [
            "Alice",
            "a**b",
            "hash_0123456789ABCDEF",
            "hash_0123456789abcde",
            "hash_0123456789abcdef0",
            "rehash_0123456789abcdef",
            "hash_",
            "",
        ] {
            assert!(!looks_masked(plain.as_bytes()), "{plain}");
        }
    }

    #[test]
    fn load_or_create_creates_then_reads_the_same_key() {
        let dir = std::env::temp_dir().join(format!("airlock-mask-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let nested = dir.join("a/b");
        let first = Masker::load_or_create(&nested).unwrap();
        let key = fs::read(nested.join(KEY_FILE)).unwrap();
        assert_eq!(key.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(nested.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let second = Masker::load_or_create(&nested).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = first.apply(Strategy::Hash, b"x", true, &mut a);
        let _ = second.apply(Strategy::Hash, b"x", true, &mut b);
        assert_eq!(a, b);
        let _ = Masker::new(key.try_into().unwrap()).apply(Strategy::Hash, b"x", true, &mut b);
        assert_eq!(a, b[a.len()..]);

        fs::write(nested.join(KEY_FILE), [1u8; 31]).unwrap();
        let err = Masker::load_or_create(&nested).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("mask-key"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let dir = std::env::temp_dir().join(format!("airlock-mask-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let outputs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let m = Masker::load_or_create(&dir).unwrap();
                        let mut out = Vec::new();
                        let _ = m.apply(Strategy::Hash, b"x", true, &mut out);
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        fs::remove_dir_all(&dir).unwrap();
    }
}
