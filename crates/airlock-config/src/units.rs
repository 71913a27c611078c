//! Value types written as human-friendly strings: durations, byte sizes, the session lifetime.
//!
//! Each deserializes through a visitor so that a bad value is reported at its own line and column.
//! `Serialize` exists so the JSON Schema can show defaults in the same notation.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Z]+\s*)+$";

/// A duration written like `30s`, `15m`, `1h` or `100ms` (humantime syntax, e.g. `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (write e.g. 100ms, 30s, 15m, 1h)"))
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 15m or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as `100ms`, `30s`, `15m`, `1h` or `1h 30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// A number of bytes, written as an integer or with a unit: SI `B`, `kB`, `MB`, `GB`, `TB`
/// (powers of 1000) or IEC `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024). Units are case-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Largest first, so `Display` picks the biggest unit that divides the value exactly.
const UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("kB", 1_000),
    ("B", 1),
];

impl ByteSize {
    pub const KIB: ByteSize = ByteSize(1 << 10);
    pub const MIB: ByteSize = ByteSize(1 << 20);
    pub const GIB: ByteSize = ByteSize(1 << 30);

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let unit = unit.trim_start();
        let multiplier = match unit {
            "" => 1,
            _ => UNITS.iter().find(|(name, _)| *name == unit).map(|(_, m)| *m).ok_or_else(|| {
                format!("invalid size {text:?}: unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)")
            })?,
        };
        let count: u64 = digits.parse().map_err(|_| format!("invalid size {text:?}: expected a whole number followed by an optional unit, such as 64MiB"))?;
        count
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, size) = UNITS
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
            .unwrap_or(&("B", 1));
        write!(f, "{}{name}", self.0 / size)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64MiB, 512kB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of bytes, or a whole number with a unit: B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+\s*(B|kB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$"},
            ],
        })
    }
}

/// How long a client session may live, written `token`, `unlimited` or a duration such as `8h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionLifetime {
    /// The session is cut when the client's token expires.
    #[default]
    Token,
    /// The session lives until either side closes it.
    Unlimited,
    /// The session is cut this long after it started, whatever the token's expiry.
    Fixed(Duration),
}

impl fmt::Display for SessionLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionLifetime::Token => f.write_str("token"),
            SessionLifetime::Unlimited => f.write_str("unlimited"),
            SessionLifetime::Fixed(d) => HumanDuration(*d).fmt(f),
        }
    }
}

impl Serialize for SessionLifetime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionLifetime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SessionLifetime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`token`, `unlimited` or a duration such as 8h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SessionLifetime, E> {
                match v {
                    "token" => Ok(SessionLifetime::Token),
                    "unlimited" => Ok(SessionLifetime::Unlimited),
                    _ => humantime::parse_duration(v).map(SessionLifetime::Fixed).map_err(|_| {
                        E::custom(format!("invalid session lifetime {v:?}: expected `token`, `unlimited` or a duration such as 8h"))
                    }),
                }
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for SessionLifetime {
    fn schema_name() -> Cow<'static, str> {
        "SessionLifetime".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`token`: cut the session when the token expires; `unlimited`; or a fixed duration such as `8h`.",
            "anyOf": [
                {"type": "string", "enum": ["token", "unlimited"]},
                generator.subschema_for::<HumanDuration>(),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: for<'de> Deserialize<'de>>(yaml: &str) -> Result<T, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("30s", Duration::from_secs(30)),
            ("15m", Duration::from_secs(900)),
            ("1h", Duration::from_secs(3600)),
            ("100ms", Duration::from_millis(100)),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            assert_eq!(
                parse::<HumanDuration>(text),
                Ok(HumanDuration(want)),
                "{text}"
            );
        }
        for text in ["10 parsecs", "-5s", "", "5", "fast", "s"] {
            let err = parse::<HumanDuration>(&format!("{text:?}")).unwrap_err();
            assert!(err.contains("duration"), "{text}: {err}");
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("64MiB", 64 << 20),
            ("64KiB", 64 << 10),
            ("1GiB", 1 << 30),
            ("512kB", 512_000),
            ("1MB", 1_000_000),
            ("2 GB", 2_000_000_000),
            ("100B", 100),
            ("65536", 65536),
            ("'4096'", 4096),
        ] {
            assert_eq!(parse::<ByteSize>(text), Ok(ByteSize(want)), "{text}");
        }
        for (text, why) in [
            ("64XB", "unknown unit \"XB\""),
            ("64kb", "unknown unit \"kb\""),
            ("MiB", "whole number"),
            ("1.5MiB", "unknown unit \".5MiB\""),
            ("-5", "invalid type: integer `-5`"),
            ("99999999999TiB", "too large"),
        ] {
            let err = parse::<ByteSize>(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        for (size, want) in [
            (64 << 20, "64MiB"),
            (512_000, "500KiB"),
            (1_000_000, "1MB"),
            (3072, "3KiB"),
            (1536, "1536B"),
            (1000, "1kB"),
            (1001, "1001B"),
            (0, "0B"),
        ] {
            assert_eq!(ByteSize(size).to_string(), want);
        }
    }

    #[test]
    fn session_lifetimes() {
        for (text, want) in [
            ("token", SessionLifetime::Token),
            ("unlimited", SessionLifetime::Unlimited),
            ("8h", SessionLifetime::Fixed(Duration::from_secs(8 * 3600))),
        ] {
            assert_eq!(parse::<SessionLifetime>(text), Ok(want), "{text}");
            assert_eq!(want.to_string(), text);
        }
        let err = parse::<SessionLifetime>("forever").unwrap_err();
        assert!(
            err.contains("expected `token`, `unlimited` or a duration"),
            "{err}"
        );
    }
}
