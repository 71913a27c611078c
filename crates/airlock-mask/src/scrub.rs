//! Scrubbing server error and notice texts.
//!
//! PostgreSQL copies values into its messages: `Key (ssn)=(123-45-6789)
//! already exists`, `Failing row contains (1, Alice, …)`, quoted literals in
//! a `where` context. A masked column must not leak through an error, so
//! these fields go through the detectors, and, when the statement touched
//! anything sensitive, lose every value-bearing part outright.

use std::borrow::Cow;

use airlock_policy::masking::{Detector, Strategy};
use memchr::memchr;

use crate::detect::Detectors;
use crate::mask::{Masker, PLACEHOLDER};

/// Which quoted segments of a sensitive text stay as they are: the
/// client's own words, and names it may know. Given the segment's content.
pub type Keep<'a> = &'a dyn Fn(&[u8]) -> bool;

/// How a server quotes the values it copies into its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// PostgreSQL: `"…"`.
    Double,
    /// MySQL and MariaDB: `'…'` (`Duplicate entry '…' for key`,
    /// `Truncated incorrect INTEGER value: '…'`).
    Single,
}

impl Quote {
    fn byte(self) -> u8 {
        match self {
            Quote::Double => b'"',
            Quote::Single => b'\'',
        }
    }
}

/// Scrubs one field of an error or notice (message, detail, hint, where).
/// Detector matches are masked with `detector_strategy` of their detector.
/// When `sensitive` is given, every value quoted with `quote` whose content
/// it does not keep becomes `"*****"`, and the value lists of `=(…)` and
/// `contains (…)` become `(*****)`. `None` when nothing changed.
pub fn scrub(
    text: &str,
    quote: Quote,
    detectors: &Detectors,
    masker: &Masker,
    detector_strategy: impl Fn(Detector) -> Strategy,
    sensitive: Option<Keep<'_>>,
) -> Option<String> {
    let base = match sensitive {
        Some(keep) => hide_values(text.as_bytes(), quote.byte(), keep),
        None => Cow::Borrowed(text.as_bytes()),
    };
    let spans: Vec<_> = detectors
        .find(&base)
        .into_iter()
        .map(|(r, d)| (r, detector_strategy(d)))
        .collect();
    let out = if spans.is_empty() {
        base.into_owned()
    } else {
        let mut out = Vec::with_capacity(base.len());
        masker.mask_spans(&base, &spans, &mut out);
        out
    };
    if out == text.as_bytes() {
        return None;
    }
    // Masks replace whole ASCII-delimited tokens, and partial masks cut at
    // characters, so the result is UTF-8; the fallback only avoids a panic.
    Some(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Replaces the contents of quoted segments (but those `keep` accepts) and
/// of `=(…)` and `contains (…)` lists by the placeholder. An unclosed one runs to the
/// end of the text: hiding too much is better than leaking.
fn hide_values<'t>(t: &'t [u8], quote: u8, keep: Keep<'_>) -> Cow<'t, [u8]> {
    const CONTAINS: &[u8] = b"contains (";
    let mut out = Vec::new();
    let (mut copied, mut i) = (0, 0);
    while i < t.len() {
        let (open, close) = if t[i] == quote {
            let close = quote_close(t, quote, i + 1);
            if let Some(close) = close
                && keep(&t[i + 1..close])
            {
                i = close + 1;
                continue;
            }
            (i + 1, close)
        } else if t[i] == b'=' && t.get(i + 1) == Some(&b'(') {
            (i + 2, balanced_close(t, i + 2))
        } else if t[i..].starts_with(CONTAINS) {
            (i + CONTAINS.len(), balanced_close(t, i + CONTAINS.len()))
        } else {
            i += 1;
            continue;
        };
        out.extend_from_slice(&t[copied..open]);
        out.extend_from_slice(PLACEHOLDER.as_bytes());
        match close {
            Some(close) => {
                out.push(t[close]);
                i = close + 1;
            }
            None => i = t.len(),
        }
        copied = i;
    }
    if copied == 0 {
        return Cow::Borrowed(t);
    }
    out.extend_from_slice(&t[copied..]);
    Cow::Owned(out)
}

/// The `quote` that closes a quoted value opened just before `from`.
/// Neither PostgreSQL nor MySQL escapes a quote inside the value it quotes,
/// and in their messages a closing quote is never followed by a letter, a
/// digit or another quote: a quote that is belongs to the value
/// (`"a"SECRET"b"` is one value).
fn quote_close(t: &[u8], quote: u8, from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let close = at + memchr(quote, t.get(at..)?)?;
        match t.get(close + 1) {
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' || *c == quote || !c.is_ascii() => {
                at = close + 1;
            }
            _ => return Some(close),
        }
    }
}

/// The `)` that closes the parenthesis opened just before `from`.
fn balanced_close(t: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in t.iter().enumerate().skip(from) {
        match b {
            b'(' => depth += 1,
            b')' if depth == 0 => return Some(i),
            b')' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubbed(text: &str, sensitive: bool) -> Option<String> {
        scrubbed_keeping(text, sensitive, &|_| false)
    }

    fn scrubbed_keeping(text: &str, sensitive: bool, keep: Keep<'_>) -> Option<String> {
        let detectors = Detectors::new(Detector::ALL);
        let masker = Masker::new([1; 32]);
        let strategy = |d| match d {
            Detector::Email => Strategy::Email,
            Detector::CreditCard => Strategy::Partial {
                keep_first: 0,
                keep_last: 4,
            },
            Detector::Jwt => Strategy::Null,
            _ => Strategy::Redact,
        };
        scrub(
            text,
            Quote::Double,
            &detectors,
            &masker,
            strategy,
            sensitive.then_some(keep),
        )
    }

    #[test]
    fn mysql_messages_quote_values_in_single_quotes() {
        let detectors = Detectors::new(&[]);
        let masker = Masker::new([1; 32]);
        let keep = |n: &[u8]| n == b"uniq.PRIMARY";
        let got = scrub(
            "Duplicate entry '123-45-6789' for key 'uniq.PRIMARY'",
            Quote::Single,
            &detectors,
            &masker,
            |_| Strategy::Redact,
            Some(&keep),
        );
        assert_eq!(
            got.as_deref(),
            Some("Duplicate entry '*****' for key 'uniq.PRIMARY'")
        );
        // A PostgreSQL scrub leaves single quotes alone.
        assert_eq!(
            scrub(
                "entry 'x'",
                Quote::Double,
                &detectors,
                &masker,
                |_| Strategy::Redact,
                Some(&keep)
            ),
            None
        );
    }

    #[test]
    fn a_quote_inside_a_quoted_value_does_not_end_it() {
        assert_eq!(
            scrubbed(
                "invalid input syntax for type integer: \"a\"SECRET\"b\"",
                true
            )
            .as_deref(),
            Some("invalid input syntax for type integer: \"*****\"")
        );
        assert_eq!(
            scrubbed("value \"x\"\"y\" of column \"c\"", true).as_deref(),
            Some("value \"*****\" of column \"*****\"")
        );
        // An unclosed value runs to the end.
        assert_eq!(
            scrubbed("bad \"a\"SECRET", true).as_deref(),
            Some("bad \"*****")
        );
    }

    #[test]
    fn kept_segments_stay_and_the_rest_is_hidden() {
        let keep: Keep<'_> = &|s| s == b"abc" || s == b"people";
        assert_eq!(
            scrubbed_keeping("invalid input syntax for type integer: \"abc\"", true, keep),
            None
        );
        assert_eq!(
            scrubbed_keeping("column \"ssn\" of relation \"people\"", true, keep).as_deref(),
            Some("column \"*****\" of relation \"people\"")
        );
        // Value lists are hidden whatever they hold.
        assert_eq!(
            scrubbed_keeping("Key (id)=(abc) exists", true, keep).as_deref(),
            Some("Key (id)=(*****) exists")
        );
    }

    #[test]
    fn unchanged_text_is_none() {
        assert_eq!(scrubbed("relation does not exist", false), None);
        assert_eq!(scrubbed("relation does not exist", true), None);
        assert_eq!(scrubbed("relation \"users\" does not exist", false), None);
        assert_eq!(scrubbed("", true), None);
    }

    #[test]
    fn detectors_apply_with_their_strategy() {
        assert_eq!(
            scrubbed("card 4111 1111 1111 1111 for alice@example.com", false).as_deref(),
            Some("card *****1111 for a***@example.com")
        );
        assert_eq!(
            scrubbed("ssn 123-45-6789", false).as_deref(),
            Some("ssn *****")
        );
        // NULL has no place in text: the placeholder stands in.
        assert_eq!(
            scrubbed("token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. rejected", false).as_deref(),
            Some("token ***** rejected")
        );
    }

    #[test]
    fn sensitive_hides_quoted_segments() {
        assert_eq!(
            scrubbed("invalid input syntax for type integer: \"Alice\"", true).as_deref(),
            Some("invalid input syntax for type integer: \"*****\"")
        );
        assert_eq!(
            scrubbed("column \"ssn\" of relation \"people\"", true).as_deref(),
            Some("column \"*****\" of relation \"*****\"")
        );
        assert_eq!(
            scrubbed("unterminated \"secret value", true).as_deref(),
            Some("unterminated \"*****")
        );
        // Not sensitive: quotes stay, detectors still run inside them.
        assert_eq!(
            scrubbed("value \"123-45-6789\"", false).as_deref(),
            Some("value \"*****\"")
        );
    }

    #[test]
    fn sensitive_hides_key_values() {
        assert_eq!(
            scrubbed("Key (ssn)=(123-45-6789) already exists.", true).as_deref(),
            Some("Key (ssn)=(*****) already exists.")
        );
        assert_eq!(
            scrubbed("Key (a, b)=(1, f(2)) is not present in table \"t\".", true).as_deref(),
            Some("Key (a, b)=(*****) is not present in table \"*****\".")
        );
        assert_eq!(
            scrubbed(
                "Key (r)=([1,2)) conflicts with existing key (r)=([1,3)).",
                true
            )
            .as_deref(),
            // Balanced parentheses end at the range's `)`; the bracket
            // and digits are hidden, only a parenthesis is left over.
            Some("Key (r)=(*****)) conflicts with existing key (r)=(*****)).")
        );
        assert_eq!(
            scrubbed("Key (x)=(never closed", true).as_deref(),
            Some("Key (x)=(*****")
        );
        // Without `sensitive` only the detector fires.
        assert_eq!(
            scrubbed("Key (ssn)=(123-45-6789) already exists.", false).as_deref(),
            Some("Key (ssn)=(*****) already exists.")
        );
        assert_eq!(scrubbed("Key (id)=(42) already exists.", false), None);
    }

    #[test]
    fn sensitive_hides_failing_rows() {
        assert_eq!(
            scrubbed("Failing row contains (1, Alice, 123-45-6789).", true).as_deref(),
            Some("Failing row contains (*****).")
        );
        assert_eq!(
            scrubbed("Failing row contains (1, (2, 3), null).", true).as_deref(),
            Some("Failing row contains (*****).")
        );
    }

    #[test]
    fn sensitive_and_detectors_combine() {
        assert_eq!(
            scrubbed("SQL statement \"select 1\" near alice@example.com", true).as_deref(),
            Some("SQL statement \"*****\" near a***@example.com")
        );
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(
            scrubbed(
                "Schlüssel «(x)=(Jürgen)» existiert bereits: jürgen@example.de",
                true
            )
            .as_deref(),
            Some("Schlüssel «(x)=(*****)» existiert bereits: j***@example.de")
        );
    }
}
