//! Bearer tokens and an issuer's JWKS: decoding, key reading, signature
//! checks and claim checks, as `Verifier::verify` runs them but without a
//! network.

use std::time::{Duration, UNIX_EPOCH};

use airlock_identity::IssuerSpec;

/// A real P-256 public key (RFC 7515's example, whose private half no
/// seed uses), so that signatures are checked against a key that parses
/// whatever JWKS the input carries.
const KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

/// The input is a JWKS document, a NUL, and the token.
pub fn token(data: &[u8]) {
    let (jwks, token) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    let mut spec = IssuerSpec::new("corp", "https://issuer.example", "airlock");
    spec.groups_claim = "realm_access.roles".into();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // Any token signed by the input's own keys may pass; none can carry a
    // signature this key accepts, for no seed was signed with it: one that
    // does means the signature check was skipped or confused.
    let fixed = format!(r#"{{"keys":[{KEY}]}}"#);
    if let Ok((signed, _)) = airlock_identity::fuzzing::token(fixed.as_bytes(), token, &spec, now) {
        assert!(!signed, "a token the fixed key accepts: {token}");
    }
    let _ = airlock_identity::fuzzing::token(jwks, token, &spec, now);
}
