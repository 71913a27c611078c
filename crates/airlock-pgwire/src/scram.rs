//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL's client side speaks it,
//! without channel binding, with the client nonce passed in.
//!
//! Why not `postgres-protocol`'s `ScramSha256`: it draws its nonce from a
//! thread RNG and keeps the nonce-taking constructor private, so a login
//! could not be replayed in a test and this crate would draw randomness.
//! The primitives (PBKDF2, HMAC, SHA-256, constant-time comparison) are
//! aws-lc-rs's; the password is SASLprep'd with `stringprep`, as libpq and
//! PostgreSQL do.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The mechanism's name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PostgreSQL's upper bound is `scram_iterations`' (2^31 - 1); more than this
/// many rounds is a server making the client burn CPU.
const MAX_ITERATIONS: u32 = 10_000_000;

/// The client side of one exchange.
pub struct Scram {
    password: Vec<u8>,
    nonce: String,
    state: State,
}

enum State {
    /// `client-first` is out; waiting for `server-first`.
    First,
    /// `client-final` is out; the server's signature is expected.
    Final {
        server_signature: [u8; 32],
    },
    Done,
}

/// Why the exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server asked for {0} iterations")]
    Iterations(u32),
    #[error("the server's signature does not match: it does not know the password")]
    Signature,
    #[error("the server refused: {0}")]
    Server(String),
    #[error("message out of order")]
    OutOfOrder,
}

impl Scram {
    /// Starts an exchange with `nonce`, printable ASCII without a comma (a
    /// caller draws it at random: 18 random bytes in base64, say).
    pub fn new(password: &[u8], nonce: &str) -> Scram {
        debug_assert!(
            nonce
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b',')
        );
        // SASLprep when the password is a valid UTF-8 string it accepts;
        // otherwise the raw bytes, as PostgreSQL stores them.
        let password = std::str::from_utf8(password)
            .ok()
            .and_then(|p| stringprep::saslprep(p).ok())
            .map_or_else(|| password.to_vec(), |p| p.as_bytes().to_vec());
        Scram {
            password,
            nonce: nonce.to_string(),
            state: State::First,
        }
    }

    /// `client-first-message`: no channel binding, no user name (the
    /// server takes the StartupMessage's).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare())
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// Takes `server-first-message`; returns `client-final-message`.
    pub fn server_first(&mut self, message: &[u8]) -> Result<String, ScramError> {
        if !matches!(self.state, State::First) {
            return Err(ScramError::OutOfOrder);
        }
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.split(',');
        let nonce = attribute(parts.next(), 'r')?;
        let salt = attribute(parts.next(), 's')?;
        let iterations = attribute(parts.next(), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count"))?;
        let rounds = NonZeroU32::new(iterations)
            .filter(|n| n.get() <= MAX_ITERATIONS)
            .ok_or(ScramError::Iterations(iterations))?;
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            &salt,
            &self.password,
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare());
        let client_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.state = State::Final {
            server_signature: server_signature
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes"),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Takes `server-final-message`: the server proves it knows the
    /// password.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), ScramError> {
        let State::Final { server_signature } = self.state else {
            return Err(ScramError::OutOfOrder);
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let first = text.split(',').next();
        if let Ok(error) = attribute(first, 'e') {
            return Err(ScramError::Server(error.to_string()));
        }
        let verifier = STANDARD
            .decode(attribute(first, 'v')?)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        constant_time::verify_slices_are_equal(&verifier, &server_signature)
            .map_err(|_| ScramError::Signature)?;
        self.state = State::Done;
        Ok(())
    }
}

/// The value of attribute `name` in `part` (`name=value`).
fn attribute(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed("missing attribute"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One exchange recorded against PostgreSQL 15 (a throwaway cluster,
    // `--auth=scram-sha-256`, password "pencil"), with this client nonce.
    const NONCE: &str = "airlock-fixed-nonce-0123";
    const SERVER_FIRST: &str =
        "r=airlock-fixed-nonce-0123dRCqbyL8JmT3jVeVAYivWqxg,s=xgmKg2rGsZOVZXoroMi4LQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=airlock-fixed-nonce-0123dRCqbyL8JmT3jVeVAYivWqxg,p=wD5BR8VO9OJlwRFffC0saX0T6bj2hkI/w/ZwlsBpRu4=";
    const SERVER_FINAL: &str = "v=n6lcPvymfTatzG5nYEZSrOn/fgNdyyBehlngUEwr718=";

    #[test]
    fn a_recorded_exchange_replays_byte_for_byte() {
        let mut scram = Scram::new(b"pencil", NONCE);
        assert_eq!(scram.client_first(), "n,,n=,r=airlock-fixed-nonce-0123");
        assert_eq!(
            scram.server_first(SERVER_FIRST.as_bytes()).unwrap(),
            CLIENT_FINAL
        );
        scram.server_final(SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_refused() {
        let mut scram = Scram::new(b"pencil", NONCE);
        scram.server_first(SERVER_FIRST.as_bytes()).unwrap();
        let forged = "v=m6lcPvymfTatzG5nYEZSrOn/fgNdyyBehlngUEwr718=";
        assert_eq!(
            scram.server_final(forged.as_bytes()),
            Err(ScramError::Signature)
        );
        // The wrong password gives another proof than the server expects.
        let mut wrong = Scram::new(b"pencils", NONCE);
        assert_ne!(
            wrong.server_first(SERVER_FIRST.as_bytes()).unwrap(),
            CLIENT_FINAL
        );
    }

    #[test]
    fn bad_server_messages_are_refused() {
        let cases: &[(&str, ScramError)] = &[
            // A nonce that does not extend the client's, or adds nothing.
            (
                "r=someone-elses-nonce,s=xgmKg2rGsZOVZXoroMi4LQ==,i=4096",
                ScramError::Nonce,
            ),
            (
                "r=airlock-fixed-nonce-0123,s=xgmKg2rGsZOVZXoroMi4LQ==,i=4096",
                ScramError::Nonce,
            ),
            (
                "r=airlock-fixed-nonce-0123x,s=!!!,i=4096",
                ScramError::Malformed("salt is not base64"),
            ),
            (
                "r=airlock-fixed-nonce-0123x,s=xgmK,i=0",
                ScramError::Iterations(0),
            ),
            (
                "r=airlock-fixed-nonce-0123x,s=xgmK,i=4000000000",
                ScramError::Iterations(4_000_000_000),
            ),
            (
                "r=airlock-fixed-nonce-0123x,s=xgmK",
                ScramError::Malformed("missing attribute"),
            ),
            (
                "s=xgmK,r=airlock-fixed-nonce-0123x,i=1",
                ScramError::Malformed("missing attribute"),
            ),
        ];
        for (message, want) in cases {
            let mut scram = Scram::new(b"pencil", NONCE);
            assert_eq!(
                scram.server_first(message.as_bytes()).as_ref(),
                Err(want),
                "{message}"
            );
        }
        let mut scram = Scram::new(b"pencil", NONCE);
        assert_eq!(
            scram.server_final(SERVER_FINAL.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
        scram.server_first(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            scram.server_final(b"e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
    }
}
