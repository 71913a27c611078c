//! Secrets: written in the file as a reference (`{env: NAME}` or `{file: PATH}`), never inline.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::{env, fs};

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::ConfigError;

/// Where a secret comes from. A plain string in its place is rejected, and the rejection never
/// echoes the value, so a password pasted inline does not end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum Secret {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file. A relative path is resolved against the working directory of the
    /// airlock process, not against the configuration file.
    File(PathBuf),
}

/// A resolved secret. `Debug` prints `SecretValue(***)`; there is no `Display`.
pub struct SecretValue<T = Vec<u8>>(T);

impl<T> SecretValue<T> {
    pub fn new(value: T) -> Self {
        SecretValue(value)
    }

    /// The secret itself. Keep it out of logs and error messages.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for SecretValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl Secret {
    /// Reads the secret as raw bytes, as given (for PEM material).
    pub fn resolve_bytes(&self) -> Result<SecretValue, ConfigError> {
        match self {
            Secret::Env(name) => env::var_os(name)
                .map(|v| SecretValue::new(v.into_encoded_bytes()))
                .ok_or_else(|| ConfigError::EnvNotSet { name: name.clone() }),
            Secret::File(path) => {
                fs::read(path)
                    .map(SecretValue::new)
                    .map_err(|error| ConfigError::SecretFile {
                        path: path.clone(),
                        error,
                    })
            }
        }
    }

    /// Reads the secret as UTF-8 text (for passwords), without one trailing `\n` or `\r\n`
    /// such as `echo` and editors leave at the end of a file.
    pub fn resolve_string(&self) -> Result<SecretValue<String>, ConfigError> {
        let mut text = match self {
            Secret::Env(name) => env::var(name).map_err(|e| match e {
                env::VarError::NotPresent => ConfigError::EnvNotSet { name: name.clone() },
                env::VarError::NotUnicode(_) => ConfigError::EnvNotUtf8 { name: name.clone() },
            })?,
            Secret::File(path) => {
                fs::read_to_string(path).map_err(|error| ConfigError::SecretFile {
                    path: path.clone(),
                    error,
                })?
            }
        };
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(SecretValue::new(text))
    }

    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            Secret::Env(_) => None,
            Secret::File(path) => Some(path),
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum SecretKey {
    Env,
    File,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const INLINE: &str = "a secret is never written inline; use {env: NAME} or {file: PATH}";
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{env: NAME} or {file: PATH}")
            }
            // Scalars are refused without quoting them back.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(INLINE))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let secret = match map.next_key()? {
                    Some(SecretKey::Env) => Secret::Env(map.next_value()?),
                    Some(SecretKey::File) => Secret::File(map.next_value()?),
                    None => return Err(de::Error::custom("a secret needs `env` or `file`")),
                };
                match map.next_key::<SecretKey>()? {
                    Some(_) => Err(de::Error::custom(
                        "a secret takes exactly one of `env` or `file`",
                    )),
                    None => Ok(secret),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Every secret of a [`Config`](crate::Config), resolved at one moment.
#[derive(Debug, Default)]
pub struct ResolvedSecrets {
    /// The client-facing certificate chain and private key (PEM), when `tls` names them.
    pub tls: Option<TlsKeyPair>,
    /// By connection name; every configured connection has an entry.
    pub connections: BTreeMap<String, ConnectionSecrets>,
    /// The PostgreSQL store's password, when `store.password` names one.
    pub store_password: Option<SecretValue<String>>,
    /// The HMAC-SHA256 key of each webhook, index-aligned with `notifications.webhooks`; `None`
    /// for a webhook without `secret`. Read as text, without one trailing newline.
    pub webhook_secrets: Vec<Option<SecretValue>>,
}

#[derive(Debug)]
pub struct TlsKeyPair {
    pub cert_pem: SecretValue,
    pub key_pem: SecretValue,
}

#[derive(Debug, Default)]
pub struct ConnectionSecrets {
    /// The upstream CA bundle (PEM) for `verify-full`; `None` means the system roots.
    pub ca_pem: Option<SecretValue>,
    /// By role name; roles configured without a password are absent.
    pub passwords: BTreeMap<String, SecretValue<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const UNSET: &str = "AIRLOCK_CONFIG_TEST_SURELY_UNSET";

    fn parse(yaml: &str) -> Result<Secret, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn written_as_a_reference() {
        assert_eq!(parse("{env: PW}"), Ok(Secret::Env("PW".into())));
        assert_eq!(parse("file: /run/pw"), Ok(Secret::File("/run/pw".into())));
        for (yaml, want) in [
            ("hunter2", "never written inline"),
            ("12345", "never written inline"),
            ("{}", "needs `env` or `file`"),
            ("{env: A, file: B}", "exactly one of `env` or `file`"),
            (
                "{vault: x}",
                "unknown field `vault`, expected `env` or `file`",
            ),
            ("[a]", "invalid type: sequence"),
        ] {
            let err = parse(yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("12345"), "{err}");
        }
    }

    #[test]
    fn env_secrets() {
        // Rust 2024 makes set_var unsafe, so rely on a variable cargo sets for test runs.
        let present = Secret::Env("CARGO_PKG_NAME".into());
        assert_eq!(present.resolve_string().unwrap().expose(), "airlock-config");
        assert_eq!(present.resolve_bytes().unwrap().expose(), b"airlock-config");
        for err in [
            Secret::Env(UNSET.into()).resolve_string().unwrap_err(),
            Secret::Env(UNSET.into()).resolve_bytes().unwrap_err(),
        ] {
            assert_eq!(
                err.to_string(),
                format!("environment variable {UNSET} is not set")
            );
        }
    }

    #[test]
    fn file_secrets() {
        let dir = tempfile::tempdir().unwrap();
        for (content, want) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret\n\n", "s3cret\n"),
            ("s3cret", "s3cret"),
        ] {
            let path = dir.path().join("pw");
            fs::File::create(&path)
                .unwrap()
                .write_all(content.as_bytes())
                .unwrap();
            let secret = Secret::File(path);
            assert_eq!(
                secret.resolve_string().unwrap().expose(),
                want,
                "{content:?}"
            );
            assert_eq!(secret.resolve_bytes().unwrap().expose(), content.as_bytes());
        }
        let missing = Secret::File(dir.path().join("nope"));
        let err = missing.resolve_string().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read secret file ") && err.contains("nope"),
            "{err}"
        );
        assert!(missing.resolve_bytes().is_err());
    }

    #[test]
    fn debug_does_not_leak() {
        let value = SecretValue::new("hunter2".to_owned());
        assert_eq!(format!("{value:?}"), "SecretValue(***)");
        let pair = TlsKeyPair {
            cert_pem: SecretValue::new(b"CERT".to_vec()),
            key_pem: SecretValue::new(b"KEY".to_vec()),
        };
        let debug = format!("{pair:?}");
        assert!(
            !debug.contains("CERT") && !debug.contains("KEY") && !debug.contains("67"),
            "{debug}"
        );
    }
}
