//! Content detectors: hand-written scanners over bytes.
//!
//! Values reach the gateway as bytes that need not be UTF-8, so every
//! scanner works on `&[u8]` and only looks at ASCII. A match must be a whole
//! token: the byte before and after it must not be an ASCII letter or digit,
//! so a digit run inside a longer one never matches partially.
//!
//! Most values hold nothing sensitive, and most of the cost of masking is
//! proving that. [`Detectors::scan`] therefore makes one cheap pass over the
//! value first ([`Hints`]: how many digits, uppercase letters, `@` and `.`)
//! and runs a detailed scanner only when the counts say it could match.

use std::fmt;
use std::ops::Range;

use airlock_policy::masking::Detector;
use memchr::{memchr_iter, memmem};

/// A set of enabled content detectors.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Detectors {
    /// One bit per detector, by discriminant.
    enabled: u32,
}

impl fmt::Debug for Detectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = Detector::ALL
            .iter()
            .filter(|&&d| self.contains(d))
            .map(|d| d.name());
        f.debug_set().entries(names).finish()
    }
}

impl Detectors {
    /// The set of `detectors`; duplicates are ignored.
    pub fn new(detectors: &[Detector]) -> Detectors {
        Detectors {
            enabled: detectors.iter().fold(0, |acc, &d| acc | bit(d)),
        }
    }

    /// Whether no detector is enabled, so values need no scan at all.
    pub fn is_empty(&self) -> bool {
        self.enabled == 0
    }

    /// Whether `detector` is in the set.
    pub fn contains(&self, detector: Detector) -> bool {
        self.enabled & bit(detector) != 0
    }

    /// The first enabled detector, in [`Detector::ALL`] order, that matches
    /// anywhere in `value`. Card and SSN come before phone in that order,
    /// so a card or SSN is reported as such and not as a phone number.
    pub fn scan(&self, value: &[u8]) -> Option<Detector> {
        if self.is_empty() {
            return None;
        }
        let hints = Hints::of(value);
        Detector::ALL.iter().copied().find(|&d| {
            self.contains(d)
                && hints.may_match(d)
                && match d {
                    Detector::PlantedInstructions => crate::planted::scan(value).is_some(),
                    _ => next_match(d, value, 0).is_some(),
                }
        })
    }

    /// Every match in `text`, sorted and non-overlapping, for redacting
    /// inside longer text. Overlapping matches of different detectors are
    /// merged into one span (masking the union never leaks a part of
    /// either) reported as the detector first in [`Detector::ALL`] order.
    pub fn find(&self, text: &[u8]) -> Vec<(Range<usize>, Detector)> {
        let mut found = Vec::new();
        if self.is_empty() {
            return found;
        }
        let hints = Hints::of(text);
        for &d in Detector::ALL {
            if !self.contains(d) || d.value_only() || !hints.may_match(d) {
                continue;
            }
            let mut from = 0;
            while let Some(m) = next_match(d, text, from) {
                from = m.end;
                found.push((m, d));
            }
        }
        if found.len() < 2 {
            return found;
        }
        found.sort_by_key(|(r, d)| (r.start, *d));
        let mut merged: Vec<(Range<usize>, Detector)> = Vec::with_capacity(found.len());
        for (r, d) in found {
            match merged.last_mut() {
                Some((last, ld)) if r.start < last.end => {
                    last.end = last.end.max(r.end);
                    *ld = (*ld).min(d);
                }
                _ => merged.push((r, d)),
            }
        }
        merged
    }
}

fn bit(d: Detector) -> u32 {
    1 << (d as u32)
}

/// The first match of `d` in `text` starting at or after `from`.
fn next_match(d: Detector, text: &[u8], from: usize) -> Option<Range<usize>> {
    match d {
        Detector::CreditCard => credit_card(text, from),
        Detector::Ssn => ssn(text, from),
        Detector::Email => email(text, from),
        Detector::Phone => phone(text, from),
        Detector::Iban => iban(text, from),
        Detector::Jwt => jwt(text, from),
        Detector::AwsAccessKeyId => aws_access_key_id(text, from),
        // Value-only (`Detector::value_only`): `find` never asks.
        Detector::PlantedInstructions => None,
    }
}

/// What one pass over a value tells about which detectors could match:
/// counts of digits, uppercase letters, `@` and `.`. Coarse on purpose:
/// each byte costs one table load and one add, and the thresholds still
/// reject names, small numbers and prose outright.
#[derive(Debug, Default)]
struct Hints {
    digits: usize,
    upper: usize,
    at: usize,
    dots: usize,
}

/// Per byte, the counts it adds to [`Hints`], packed in 16-bit lanes:
/// digits, uppercase letters, `@`, `.`.
static CLASS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            1
        } else if c.is_ascii_uppercase() {
            1 << 16
        } else if c == b'@' {
            1 << 32
        } else if c == b'.' {
            1 << 48
        } else {
            0
        };
        b += 1;
    }
    t
};

impl Hints {
    fn of(v: &[u8]) -> Hints {
        let mut h = Hints::default();
        // A lane holds up to 65535 before it would carry into the next.
        for chunk in v.chunks(u16::MAX as usize) {
            let acc = chunk
                .iter()
                .fold(0u64, |acc, &b| acc + CLASS[usize::from(b)]);
            let lane = |i: u32| ((acc >> (16 * i)) & 0xffff) as usize;
            h.digits += lane(0);
            h.upper += lane(1);
            h.at += lane(2);
            h.dots += lane(3);
        }
        h
    }

    fn may_match(&self, d: Detector) -> bool {
        match d {
            Detector::CreditCard => self.digits >= 13,
            Detector::Ssn => self.digits >= 9,
            Detector::Email => self.at >= 1,
            Detector::Phone => self.digits >= 8,
            // Two letters, two check digits, fifteen characters at least.
            Detector::Iban => self.upper >= 2 && self.digits >= 2 && self.upper + self.digits >= 15,
            // `eyJ` and two dots.
            Detector::Jwt => self.upper >= 1 && self.dots >= 2,
            // A four-letter prefix, twenty characters of [A-Z2-7].
            Detector::AwsAccessKeyId => self.upper >= 4 && self.upper + self.digits >= 20,
            // Its own prefilter (`planted::scan`).
            Detector::PlantedInstructions => true,
        }
    }
}

/// Letters and digits continue a token; anything else ends it.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Whether a token may start at `i`.
pub(crate) fn boundary_before(t: &[u8], i: usize) -> bool {
    i == 0 || !is_word(t[i - 1])
}

/// Whether a token may end at `i` (exclusive).
pub(crate) fn boundary_after(t: &[u8], i: usize) -> bool {
    i >= t.len() || !is_word(t[i])
}

fn next_digit(t: &[u8], from: usize) -> Option<usize> {
    t.get(from..)?
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| p + from)
}

fn digit_run_end(t: &[u8], mut i: usize) -> usize {
    while i < t.len() && t[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// The digit run after the one ending at `end`, when a single space or
/// dash joins them: `4111 1111`, `4111-1111`.
fn linked_run(t: &[u8], end: usize) -> Option<(usize, usize)> {
    let sep = *t.get(end)?;
    let next = *t.get(end + 1)?;
    if (sep == b' ' || sep == b'-') && next.is_ascii_digit() {
        Some((end + 1, digit_run_end(t, end + 1)))
    } else {
        None
    }
}

/// The longest run of joined digit groups starting with the run
/// `start..first_end`, whose digit count is in `min..=max`, that ends at a
/// token boundary (per `end_ok`) and passes `check`. Group-aligned, so a
/// number is never cut inside a digit run, but a card followed by more
/// groups (`4111 1111 1111 1111 12 25`) is still found.
fn longest_grouped(
    t: &[u8],
    start: usize,
    first_end: usize,
    min: usize,
    max: usize,
    end_ok: impl Fn(&[u8], usize) -> bool,
    check: impl Fn(&[u8]) -> bool,
) -> Option<usize> {
    let (mut total, mut end, mut best) = (first_end - start, first_end, None);
    while total <= max {
        if total >= min && end_ok(t, end) && check(&t[start..end]) {
            best = Some(end);
        }
        match linked_run(t, end) {
            Some((s, e)) => {
                total += e - s;
                end = e;
            }
            None => break,
        }
    }
    best
}

// --- credit card -----------------------------------------------------------

/// `0.4111111111111111` is a fraction, not a card: a dot between digits
/// joins the token like a letter would.
fn card_start_ok(t: &[u8], s: usize) -> bool {
    boundary_before(t, s) && !(s >= 2 && t[s - 1] == b'.' && t[s - 2].is_ascii_digit())
}

fn card_end_ok(t: &[u8], e: usize) -> bool {
    boundary_after(t, e)
        && !(t.get(e) == Some(&b'.') && t.get(e + 1).is_some_and(u8::is_ascii_digit))
}

fn credit_card(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut i = from;
    while let Some(s) = next_digit(t, i) {
        let e = digit_run_end(t, s);
        if card_start_ok(t, s)
            && let Some(end) = longest_grouped(t, s, e, 13, 19, card_end_ok, luhn)
        {
            return Some(s..end);
        }
        i = e;
    }
    None
}

/// The Luhn checksum over the digits of `s`, ignoring separators.
fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in s.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

// --- SSN -------------------------------------------------------------------

fn ssn(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut i = from;
    while let Some(s) = next_digit(t, i) {
        let e = digit_run_end(t, s);
        if e - s == 3
            && boundary_before(t, s)
            && let Some(end) = ssn_rest(t, s, e)
        {
            return Some(s..end);
        }
        i = e;
    }
    None
}

/// The end of an SSN whose area is `t[s..e]`: the same separator twice,
/// and the numbers the SSA never issues excluded.
fn ssn_rest(t: &[u8], s: usize, e: usize) -> Option<usize> {
    let sep = *t.get(e)?;
    if sep != b'-' && sep != b' ' {
        return None;
    }
    let (gs, ge) = (e + 1, digit_run_end(t, e + 1));
    if ge - gs != 2 || t.get(ge) != Some(&sep) {
        return None;
    }
    let (ss, se) = (ge + 1, digit_run_end(t, ge + 1));
    if se - ss != 4 || !boundary_after(t, se) {
        return None;
    }
    let (area, group, serial) = (&t[s..e], &t[gs..ge], &t[ss..se]);
    let valid =
        area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000";
    valid.then_some(se)
}

// --- email -----------------------------------------------------------------

/// The usual local-part characters. Bytes above ASCII are included so that
/// an internationalized local part is masked whole, not from its first
/// ASCII letter on.
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-') || b >= 0x80
}

fn email(t: &[u8], from: usize) -> Option<Range<usize>> {
    let hay = t.get(from..)?;
    for at in memchr_iter(b'@', hay).map(|p| p + from) {
        let mut start = at;
        while start > from && is_local(t[start - 1]) {
            start -= 1;
        }
        while start < at && t[start] == b'.' {
            start += 1;
        }
        if start == at || !boundary_before(t, start) {
            continue;
        }
        if let Some(end) = email_domain_end(t, at + 1) {
            return Some(start..end);
        }
    }
    None
}

/// The end of the domain starting at `p`: dot-separated labels of letters,
/// digits and dashes, the last one taken being a TLD of two or more letters
/// (trailing dashes are left out, `alice@example.com-` ends at `com`).
fn email_domain_end(t: &[u8], mut p: usize) -> Option<usize> {
    let mut best = None;
    let mut label = 0;
    loop {
        let ls = p;
        while p < t.len() && (t[p].is_ascii_alphanumeric() || t[p] == b'-') {
            p += 1;
        }
        if p == ls {
            break;
        }
        if label > 0 {
            let letters = t[ls..p]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            if letters >= 2 && t[ls + letters..p].iter().all(|&b| b == b'-') {
                best = Some(ls + letters);
            }
        }
        label += 1;
        if t.get(p) == Some(&b'.') {
            p += 1;
        } else {
            break;
        }
    }
    best
}

// --- phone -----------------------------------------------------------------

fn phone(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut i = from;
    while i < t.len() {
        let b = t[i];
        if b.is_ascii_digit() {
            let e = digit_run_end(t, i);
            if e - i == 3
                && boundary_before(t, i)
                && let Some(end) = nanp_separated(t, e)
            {
                return Some(i..end);
            }
            i = e;
            continue;
        }
        let end = match b {
            b'+' => e164(t, i),
            b'(' => nanp_parenthesized(t, i),
            _ => None,
        };
        if let Some(end) = end {
            return Some(i..end);
        }
        i += 1;
    }
    None
}

/// `+` and 8–15 digits in groups joined by single spaces or dashes.
fn e164(t: &[u8], plus: usize) -> Option<usize> {
    let s = plus + 1;
    if !boundary_before(t, plus) || !t.get(s).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    longest_grouped(t, s, digit_run_end(t, s), 8, 15, boundary_after, |_| true)
}

/// `ddd-ddd-dddd` or `ddd.ddd.dddd`, the area code being `t[..e]`.
fn nanp_separated(t: &[u8], e: usize) -> Option<usize> {
    let sep = *t.get(e)?;
    if sep != b'-' && sep != b'.' {
        return None;
    }
    let ee = digit_run_end(t, e + 1);
    if ee - (e + 1) != 3 || t.get(ee) != Some(&sep) {
        return None;
    }
    let le = digit_run_end(t, ee + 1);
    (le - (ee + 1) == 4 && boundary_after(t, le)).then_some(le)
}

/// `(ddd) ddd-dddd`; the space may be missing, and the dash may be a dot or
/// a space, as people write them.
fn nanp_parenthesized(t: &[u8], open: usize) -> Option<usize> {
    if !boundary_before(t, open) || digit_run_end(t, open + 1) != open + 4 {
        return None;
    }
    let mut p = open + 4;
    if t.get(p) != Some(&b')') {
        return None;
    }
    p += 1;
    if t.get(p) == Some(&b' ') {
        p += 1;
    }
    let ee = digit_run_end(t, p);
    if ee - p != 3 || !matches!(t.get(ee), Some(b'-' | b'.' | b' ')) {
        return None;
    }
    let le = digit_run_end(t, ee + 1);
    (le - (ee + 1) == 4 && boundary_after(t, le)).then_some(le)
}

// --- IBAN ------------------------------------------------------------------

fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn iban(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut i = from;
    while i + 4 <= t.len() {
        if t[i].is_ascii_uppercase()
            && t[i + 1].is_ascii_uppercase()
            && t[i + 2].is_ascii_digit()
            && t[i + 3].is_ascii_digit()
            && boundary_before(t, i)
            && let Some(end) = iban_end(t, i)
        {
            return Some(i..end);
        }
        i += 1;
    }
    None
}

/// The end of an IBAN starting at `s`, written compact
/// (`DE89370400440532013000`) or in groups of four
/// (`DE89 3704 0044 0532 0130 00`).
fn iban_end(t: &[u8], s: usize) -> Option<usize> {
    let mut p = s + 4;
    while p < t.len() && is_upper_alnum(t[p]) {
        p += 1;
    }
    if p > s + 4 {
        return ((15..=34).contains(&(p - s)) && boundary_after(t, p) && mod97(&t[s..p]))
            .then_some(p);
    }
    // Grouped: the longest group-aligned prefix that checks out, so that a
    // following four-letter word (`… 7034 EURO`) does not hide the IBAN.
    let (mut chars, mut end, mut best) = (4, p, None);
    while t.get(end) == Some(&b' ') {
        let gs = end + 1;
        let mut ge = gs;
        while ge < t.len() && ge - gs < 5 && is_upper_alnum(t[ge]) {
            ge += 1;
        }
        let n = ge - gs;
        if n == 0 || n > 4 || chars + n > 34 {
            break;
        }
        chars += n;
        end = ge;
        if chars >= 15 && boundary_after(t, end) && mod97(&t[s..end]) {
            best = Some(end);
        }
        if n < 4 {
            break;
        }
    }
    best
}

/// ISO 13616: move the first four characters to the end, read letters as
/// 10–35, and the number mod 97 must be 1. Spaces are skipped.
fn mod97(s: &[u8]) -> bool {
    let (head, tail) = s.split_at(4);
    let mut r = 0u32;
    for &b in tail.iter().chain(head).filter(|&&b| b != b' ') {
        r = if b.is_ascii_digit() {
            (r * 10 + u32::from(b - b'0')) % 97
        } else {
            (r * 100 + u32::from(b - b'A') + 10) % 97
        };
    }
    r == 1
}

// --- JWT -------------------------------------------------------------------

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn base64url_end(t: &[u8], mut p: usize) -> usize {
    while p < t.len() && is_base64url(t[p]) {
        p += 1;
    }
    p
}

/// `eyJ…` header, a payload of at least two characters, and a signature
/// that may be empty (an unsigned JWT ends with its second dot).
fn jwt(t: &[u8], from: usize) -> Option<Range<usize>> {
    let hay = t.get(from..)?;
    for s in memmem::find_iter(hay, b"eyJ").map(|p| p + from) {
        if !boundary_before(t, s) {
            continue;
        }
        let p = base64url_end(t, s + 3);
        if t.get(p) != Some(&b'.') {
            continue;
        }
        let q = base64url_end(t, p + 1);
        if q - (p + 1) < 2 || t.get(q) != Some(&b'.') {
            continue;
        }
        return Some(s..base64url_end(t, q + 1));
    }
    None
}

// --- AWS access key id -----------------------------------------------------

const AWS_PREFIXES: [&[u8]; 12] = [
    b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"AGPA", b"AIDA", b"AIPA", b"ANPA", b"ANVA", b"AROA",
    b"APKA", b"ASCA",
];

fn aws_access_key_id(t: &[u8], from: usize) -> Option<Range<usize>> {
    let hay = t.get(from..)?;
    for s in memchr_iter(b'A', hay).map(|p| p + from) {
        let Some(key) = t.get(s..s + 20) else {
            break;
        };
        if boundary_before(t, s)
            && AWS_PREFIXES.contains(&&key[..4])
            && key[4..]
                .iter()
                .all(|&b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            && boundary_after(t, s + 20)
        {
            return Some(s..s + 20);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(d: Detector) -> Detectors {
        Detectors::new(&[d])
    }

    /// The text of every match of `d` alone in `text`.
    fn matches(d: Detector, text: &str) -> Vec<&str> {
        only(d)
            .find(text.as_bytes())
            .into_iter()
            .map(|(r, _)| &text[r])
            .collect()
    }

    fn hits(d: Detector, text: &str) -> bool {
        only(d).scan(text.as_bytes()) == Some(d)
    }

    #[test]
    fn empty_set_matches_nothing() {
        let none = Detectors::new(&[]);
        assert!(none.is_empty());
        assert_eq!(none.scan(b"4111 1111 1111 1111"), None);
        assert!(none.find(b"alice@example.com").is_empty());
        assert!(!Detectors::new(Detector::ALL).is_empty());
    }

    #[test]
    fn new_ignores_duplicates() {
        let d = Detectors::new(&[Detector::Ssn, Detector::Ssn]);
        assert!(d.contains(Detector::Ssn));
        assert!(!d.contains(Detector::Email));
        assert_eq!(d, only(Detector::Ssn));
        assert_eq!(format!("{d:?}"), r#"{"ssn"}"#);
    }

    #[test]
    fn credit_card_positives() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "378282246310005",     // Amex, 15
            "3782 822463 10005",   // Amex grouping
            "4222222222222",       // 13 digits
            "6011000990139424",    // Discover
            "3530111333300000",    // JCB
            "4111111111111111110", // 19 digits, Luhn-valid
            "5555 5555 5555 4444", // Mastercard
            "4111 1111-1111 1111", // mixed separators
        ] {
            assert!(hits(Detector::CreditCard, card), "{card}");
            assert_eq!(matches(Detector::CreditCard, card), [card], "{card}");
        }
        assert_eq!(
            matches(
                Detector::CreditCard,
                "paid with 4111 1111 1111 1111, thanks"
            ),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            matches(Detector::CreditCard, "card=4111111111111111;exp"),
            ["4111111111111111"]
        );
    }

    #[test]
    fn credit_card_followed_by_more_groups_is_found() {
        assert_eq!(
            matches(Detector::CreditCard, "4111 1111 1111 1111 12 25"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            matches(Detector::CreditCard, "1234 4111 1111 1111 1111"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            matches(Detector::CreditCard, "4111111111111111,5555555555554444"),
            ["4111111111111111", "5555555555554444"]
        );
    }

    #[test]
    fn credit_card_near_misses() {
        for s in [
            "4111111111111112",     // Luhn fails
            "1234567890123456",     // long number failing Luhn
            "411111111111",         // 12 digits
            "41111111111111111111", // 20 digits, Luhn-valid prefix inside
            "x4111111111111111",    // glued to a letter
            "4111111111111111x",
            "0.4111111111111111", // a fraction
            "4111111111111111.5",
            "4111  1111 1111 1111", // double space
            "4111--1111-1111-1111",
            "ORD-20240115-000123",        // order id
            "2024-01-15 10:32:11.123456", // timestamp
            "+4915112345679",             // a phone number failing Luhn
        ] {
            assert!(!hits(Detector::CreditCard, s), "{s}");
            assert!(matches(Detector::CreditCard, s).is_empty(), "{s}");
        }
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn ssn_positives() {
        for s in ["123-45-6789", "123 45 6789", "078-05-1120", "665-01-0001"] {
            assert!(hits(Detector::Ssn, s), "{s}");
        }
        assert_eq!(
            matches(Detector::Ssn, "ssn: 123-45-6789 and 234 56 7890."),
            ["123-45-6789", "234 56 7890"]
        );
        assert_eq!(matches(Detector::Ssn, "(123-45-6789)"), ["123-45-6789"]);
    }

    #[test]
    fn ssn_near_misses() {
        for s in [
            "123456789",   // bare nine digits
            "000-12-3456", // area 000
            "666-12-3456", // area 666
            "900-12-3456", // area 9xx
            "123-00-4567", // group 00
            "123-45-0000", // serial 0000
            "123-45 6789", // mixed separators
            "1234-56-7890",
            "123-456-7890", // a phone number
            "123-45-67890",
            "a123-45-6789",
            "123-45-6789b",
            "2024-01-15", // a date
            "12-34-5678",
        ] {
            assert!(!hits(Detector::Ssn, s), "{s}");
        }
    }

    #[test]
    fn email_positives() {
        for (text, want) in [
            ("alice@example.com", "alice@example.com"),
            (
                "Alice.Smith+tag@mail.example.co.uk",
                "Alice.Smith+tag@mail.example.co.uk",
            ),
            ("mail me at bob_99@corp-mail.io.", "bob_99@corp-mail.io"),
            ("<carol%x@example.org>", "carol%x@example.org"),
            ("\"dave@example.com\"", "dave@example.com"),
            ("x@y.museum", "x@y.museum"),
            ("alice@example.com.123", "alice@example.com"),
            ("alice@example.com-", "alice@example.com"),
            ("...eve@example.com", "eve@example.com"),
            ("jürgen@example.de", "jürgen@example.de"),
        ] {
            assert!(hits(Detector::Email, text), "{text}");
            assert_eq!(matches(Detector::Email, text), [want], "{text}");
        }
        assert_eq!(
            matches(Detector::Email, "a@b.com, c@d.org"),
            ["a@b.com", "c@d.org"]
        );
    }

    #[test]
    fn email_near_misses() {
        for s in [
            "alice@localhost", // no TLD
            "alice@example",
            "alice@example.c",   // one-letter TLD
            "alice@example.c0m", // TLD with a digit
            "alice@.com",
            "@example.com", // no local part
            "alice@",
            "alice at example.com",
            "user@123.45", // numeric "TLD"
            "alice@example..com",
            "@@@",
        ] {
            assert!(!hits(Detector::Email, s), "{s}");
        }
    }

    #[test]
    fn phone_positives() {
        for (text, want) in [
            ("+14155552671", "+14155552671"),
            ("+1 415 555 2671", "+1 415 555 2671"),
            ("+44 20 7946 0958", "+44 20 7946 0958"),
            ("+49-151-1234-5678", "+49-151-1234-5678"),
            ("call (415) 555-2671 now", "(415) 555-2671"),
            ("(415)555-2671", "(415)555-2671"),
            ("415-555-2671", "415-555-2671"),
            ("415.555.2671", "415.555.2671"),
            ("1-800-555-1212", "800-555-1212"),
            ("tel:+33142685300;", "+33142685300"),
        ] {
            assert!(hits(Detector::Phone, text), "{text}");
            assert_eq!(matches(Detector::Phone, text), [want], "{text}");
        }
    }

    #[test]
    fn phone_near_misses() {
        for s in [
            "+1234567",          // 7 digits
            "+1234567890123456", // 16 digits
            "x+14155552671",
            "+14155552671x",
            "4155552671", // bare digits
            "415-555-26710",
            "415-555.2671", // mixed separators
            "415 555 2671",
            "2024-01-15",
            "12:30:45",
            "v1.415.555",
            "(41) 555-2671",
            "(415) 55-2671",
            "+ 1 415 555 2671",
        ] {
            assert!(!hits(Detector::Phone, s), "{s}");
        }
    }

    #[test]
    fn card_and_ssn_are_not_reported_as_phone() {
        let all = Detectors::new(Detector::ALL);
        assert_eq!(all.scan(b"+4111111111111111"), Some(Detector::CreditCard));
        assert_eq!(all.scan(b"123-45-6789"), Some(Detector::Ssn));
        let found = all.find(b"+4111 1111 1111 1111");
        assert_eq!(found, [(0..20, Detector::CreditCard)]);
    }

    #[test]
    fn iban_positives() {
        for (text, want) in [
            ("DE89370400440532013000", "DE89370400440532013000"),
            ("DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
            ("GB82WEST12345698765432", "GB82WEST12345698765432"),
            ("GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
            ("NO9386011117947", "NO9386011117947"), // 15, the shortest
            ("BE68 5390 0754 7034 EURO", "BE68 5390 0754 7034"),
            (
                "iban: FR1420041010050500013M02606.",
                "FR1420041010050500013M02606",
            ),
            (
                "LC55HEMM000100010012001200023015", // 32
                "LC55HEMM000100010012001200023015",
            ),
        ] {
            assert!(hits(Detector::Iban, text), "{text}");
            assert_eq!(matches(Detector::Iban, text), [want], "{text}");
        }
    }

    #[test]
    fn iban_near_misses() {
        for s in [
            "DE89370400440532013001",      // mod-97 fails
            "DE88 3704 0044 0532 0130 00", // check digits wrong
            "de89370400440532013000",      // lowercase
            "DE8937040044053",             // 15 chars, mod-97 fails
            "DE893704004405",              // too short
            "XDE89370400440532013000",
            "DE89370400440532013000x",
            "DE89 37040 0440 5320 1300 0", // bad grouping
            "AB12CD34EF56GH78",
        ] {
            assert!(!hits(Detector::Iban, s), "{s}");
        }
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    #[test]
    fn jwt_positives() {
        assert!(hits(Detector::Jwt, JWT));
        let bearer = format!("Authorization: Bearer {JWT}, next");
        assert_eq!(matches(Detector::Jwt, &bearer), [JWT]);
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        assert_eq!(matches(Detector::Jwt, unsigned), [unsigned]);
    }

    #[test]
    fn jwt_near_misses() {
        for s in [
            "eyJhbGciOiJIUzI1NiJ9",          // header only
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi", // two segments
            "eyJhbGciOiJIUzI1NiJ9.e.sig",    // payload too short
            "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIi.sig",
            "abc.def.ghi",
            "hey Judy",
        ] {
            assert!(!hits(Detector::Jwt, s), "{s}");
        }
    }

    #[test]
    fn aws_access_key_id_positives() {
        for s in [
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "key=AKIAIOSFODNN7EXAMPLE;",
        ] {
            assert!(hits(Detector::AwsAccessKeyId, s), "{s}");
        }
        assert_eq!(
            matches(Detector::AwsAccessKeyId, "id AROA2345672345672345 x"),
            ["AROA2345672345672345"]
        );
    }

    #[test]
    fn aws_access_key_id_near_misses() {
        for s in [
            "AKIAIOSFODNN7EXAMPL",   // 19 chars
            "AKIAIOSFODNN7EXAMPLEX", // 21 chars
            "AKIAIOSFODNN8EXAMPLE",  // 8 is not base32
            "AKIAIOSFODNN1EXAMPLE",
            "akiaiosfodnn7example",
            "AXYZIOSFODNN7EXAMPLE", // unknown prefix
            "XAKIAIOSFODNN7EXAMPLE",
            "ALICE SMITH",
        ] {
            assert!(!hits(Detector::AwsAccessKeyId, s), "{s}");
        }
    }

    #[test]
    fn scan_ignores_plain_values() {
        let all = Detectors::new(Detector::ALL);
        for s in [
            "Alice Smith",
            "123456",
            "2024-01-15",
            "2024-01-15T10:32:11.123456+00:00",
            "ORD-20240115-000123",
            "order 1234567890123456 shipped",
            "3.141592653589793238",
            "INV-2024-000042",
            "The quick brown fox jumps over the lazy dog.",
            "",
        ] {
            assert_eq!(all.scan(s.as_bytes()), None, "{s}");
            assert!(all.find(s.as_bytes()).is_empty(), "{s}");
        }
    }

    #[test]
    fn scan_works_on_non_utf8() {
        let all = Detectors::new(Detector::ALL);
        let mut v = vec![0xff, 0xfe, b' '];
        v.extend_from_slice(b"4111111111111111");
        v.push(0x80);
        assert_eq!(all.scan(&v), Some(Detector::CreditCard));
        assert_eq!(all.find(&v), [(3..19, Detector::CreditCard)]);
        assert_eq!(all.scan(&[0xff; 64]), None);
    }

    #[test]
    fn scan_reports_the_first_detector_in_order() {
        let all = Detectors::new(Detector::ALL);
        let text = b"AKIAIOSFODNN7EXAMPLE alice@example.com";
        assert_eq!(all.scan(text), Some(Detector::Email));
        assert_eq!(
            all.find(text),
            [(0..20, Detector::AwsAccessKeyId), (21..38, Detector::Email)]
        );
    }

    #[test]
    fn find_merges_overlaps() {
        let all = Detectors::new(Detector::ALL);
        // The card ends at the `@`; the email covers it.
        let text = b"4111111111111111@example.com";
        assert_eq!(all.find(text), [(0..28, Detector::CreditCard)]);
    }

    /// Random bytes from an alphabet rich in what the scanners look at:
    /// no panics, spans in bounds, sorted, disjoint, and `scan` agrees.
    #[test]
    fn random_inputs_are_handled() {
        const ALPHABET: &[u8] = b"0123456789 -.+()@AKIEyJeDZz_\xc3\xa9\xff";
        let all = Detectors::new(Detector::ALL);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| ALPHABET[((seed >> (i % 50)) as usize + i * 7) % ALPHABET.len()])
                .collect();
            let found = all.find(&text);
            assert_eq!(all.scan(&text).is_some(), !found.is_empty(), "{text:?}");
            let mut end = 0;
            for (r, _) in &found {
                assert!(
                    r.start >= end && r.start < r.end && r.end <= text.len(),
                    "{text:?}"
                );
                end = r.end;
            }
        }
    }

    #[test]
    fn hints_prefilter() {
        for plain in ["Alice Smith", "123456", "15.01.24", "The end."] {
            let h = Hints::of(plain.as_bytes());
            // (Planted instructions have a prefilter of their own.)
            assert!(
                Detector::ALL
                    .iter()
                    .filter(|&&d| d != Detector::PlantedInstructions)
                    .all(|&d| !h.may_match(d)),
                "{plain}"
            );
        }
        let h = Hints::of(b"a@b.c 1234567890123 X.Y");
        assert_eq!((h.digits, h.upper, h.at, h.dots), (13, 2, 1, 2));
        // Counts do not carry between lanes on long values.
        let long = vec![b'9'; 70_000];
        let h = Hints::of(&long);
        assert_eq!((h.digits, h.upper, h.at, h.dots), (70_000, 0, 0, 0));
        // Every positive the scanners accept passes the prefilter.
        for (d, s) in [
            (Detector::Iban, "NO9386011117947"),
            (Detector::Jwt, "eyJ.ab."),
            (Detector::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE"),
            (Detector::AwsAccessKeyId, "AROA2345672345672345"),
        ] {
            assert!(Hints::of(s.as_bytes()).may_match(d), "{s}");
        }
    }
}
