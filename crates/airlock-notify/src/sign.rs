//! The `X-Airlock-Signature` scheme: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use aws_lc_rs::{constant_time, hmac};

/// What the signature header value starts with.
const PREFIX: &str = "sha256=";

/// The `X-Airlock-Signature` value for `body` sent at `timestamp` (unix
/// seconds, the `X-Airlock-Timestamp` header): `sha256=` followed by the
/// lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    sign_with(&hmac::Key::new(hmac::HMAC_SHA256, secret), timestamp, body)
}

/// [`sign`] with a key made once per webhook.
pub(crate) fn sign_with(key: &hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let tag = tag(key, timestamp, body);
    let mut out = String::with_capacity(PREFIX.len() + 2 * tag.as_ref().len());
    out.push_str(PREFIX);
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `header_value` (an `X-Airlock-Signature` value) is the signature
/// of `body` at `timestamp` under `secret`. The tag comparison is constant
/// time; hex digits are accepted in either case.
///
/// This checks the signature only: a receiver should also reject
/// timestamps too far from its own clock, so a captured request cannot be
/// replayed later.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header_value: &str) -> bool {
    let Some(hex) = header_value.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let expected = tag(&key, timestamp, body);
    constant_time::verify_slices_are_equal(expected.as_ref(), &given).is_ok()
}

fn tag(key: &hmac::Key, timestamp: u64, body: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert!(verify(b"s3cret", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(b"other", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"s3cret", 1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!verify(b"s3cret", 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!verify(b"s3cret", 1_700_000_000, b"{\"a\":1}", &sig[7..]));
        assert!(!verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig[..sig.len() - 1]
        ));
        assert!(!verify(b"s3cret", 1_700_000_000, b"{\"a\":1}", "sha256=zz"));
    }

    #[test]
    fn known_vector() {
        // The signed message is exactly `<timestamp>.<body>`.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let direct = hmac::sign(&key, b"42.what do ya want for nothing?");
        let hex: String = direct.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            sign(b"Jefe", 42, b"what do ya want for nothing?"),
            format!("sha256={hex}")
        );
    }
}
