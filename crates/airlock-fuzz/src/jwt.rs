//! Bearer tokens and an issuer's JWKS: decoding, key reading, signature
//! checks and claim checks, as `Verifier::verify` runs them but without a
//! network.

use std::time::{Duration, UNIX_EPOCH};

use airlock_identity::IssuerSpec;

/// A real P-256 public key, so that signatures are checked against a key
/// that parses whatever JWKS the input carries.
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
    let fixed = format!(r#"{{"keys":[{KEY}]}}"#);
    for keys in [jwks, fixed.as_bytes()] {
        if let Ok(principal) = airlock_identity::fuzzing::token(keys, token, &spec, now) {
            // Accepted claims are live ones.
            assert!(
                principal.expires_at + airlock_identity::LEEWAY > now,
                "an expired token"
            );
        }
    }
}
