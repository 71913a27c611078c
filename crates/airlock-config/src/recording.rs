//! The audit sections: `store`, `journal`, `recording` and `api`.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::{ByteSize, HumanDuration, Secret};

/// Where shipped audit events (and, with the approvals feature, approvals) are kept.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Store {
    /// `sqlite://PATH` (embedded, the default: `sqlite://<data_dir>/airlock.db`) or
    /// `postgres://user@host:port/db` for several replicas. Put no password in the URL: use
    /// `password`.
    pub url: String,
    /// The PostgreSQL store's password.
    pub password: Option<Secret>,
}

/// The local journal every event is appended to before the statement it describes runs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Journal {
    /// Its directory (default `<data_dir>/journal`).
    pub dir: PathBuf,
    /// `always` (fdatasync each event before the statement goes on) or an interval such as
    /// `100ms` (the default: a power loss can lose up to one interval; a crash of the gateway
    /// loses nothing).
    pub fsync: JournalFsync,
}

/// When journal writes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalFsync {
    Always,
    Interval(Duration),
}

impl Default for JournalFsync {
    fn default() -> Self {
        JournalFsync::Interval(Duration::from_millis(100))
    }
}

impl<'de> Deserialize<'de> for JournalFsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JournalFsync;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`always` or an interval such as 100ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JournalFsync, E> {
                if v == "always" {
                    return Ok(JournalFsync::Always);
                }
                humantime::parse_duration(v)
                    .map(JournalFsync::Interval)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid fsync {v:?}: write `always` or an interval such as 100ms ({e})"
                        ))
                    })
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for JournalFsync {
    fn schema_name() -> Cow<'static, str> {
        "JournalFsync".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`always`, or an interval such as `100ms`.",
            "type": "string",
            "default": "100ms",
        })
    }
}

/// What a recording keeps.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Recording {
    /// How much of each result is kept (masked, as the client saw it).
    pub result_sample: ResultSample,
    /// Statement texts (and all bind parameters together) longer than this are cut; the event
    /// keeps the full length and a SHA-256.
    pub max_statement_bytes: ByteSize,
    /// Events older than this are pruned from the store and the journal (after shipping),
    /// leaving checkpoint anchors so `airlock audit verify` still passes. Kept forever when
    /// absent.
    pub retention: Option<HumanDuration>,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            result_sample: ResultSample::default(),
            max_statement_bytes: ByteSize(64 * ByteSize::KIB.0),
            retention: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ResultSample {
    /// Rows kept per result (0 keeps none).
    pub max_rows: u32,
    /// Bytes of values kept per result.
    pub max_bytes: ByteSize,
}

impl Default for ResultSample {
    fn default() -> Self {
        ResultSample {
            max_rows: 100,
            max_bytes: ByteSize(64 * ByteSize::KIB.0),
        }
    }
}

/// Who may use the HTTP API, by token groups.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Api {
    /// Groups with every API right.
    pub admin_groups: Vec<String>,
    /// Groups that may read sessions and events.
    pub auditor_groups: Vec<String>,
}
