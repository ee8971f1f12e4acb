//! The jwks validator's signatures are checked by `ring` through Sigil's own `jsonwebtoken`
//! provider, or not at all: with another provider installed first as the process default (here
//! one that accepts every signature), every token is refused. A process of its own, since the
//! default is process-wide and can be set once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::signature::{Error, Verifier};
use jsonwebtoken::Algorithm;
use sigil_host::sentry::jwt::{self, Expectations, Jwks, JwtError};

/// Accepts any signature: what a foreign provider must not be allowed to do.
struct Accepting(Algorithm);

impl Verifier<Vec<u8>> for Accepting {
    fn verify(&self, _message: &[u8], _signature: &Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
}

impl JwtVerifier for Accepting {
    fn algorithm(&self) -> Algorithm {
        self.0
    }
}

static ACCEPTING: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()),
    verifier_factory: |alg, _| Ok(Box::new(Accepting(*alg))),
    key_utils: KeyUtils::new_unimplemented(),
};

#[test]
fn a_foreign_provider_installed_first_refuses_every_token() {
    ACCEPTING.install_default().unwrap();
    // RFC 8037 A.2's public key; the token below carries a signature of zeros.
    let jwks = Jwks::load(
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let b64 = |json: &str| {
        use base64ct::{Base64UrlUnpadded, Encoding};
        Base64UrlUnpadded::encode_string(json.as_bytes())
    };
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"EdDSA"}"#),
        b64(r#"{"sub":"spiffe://public/ns/default/app","aud":"sentry","exp":4102444800}"#),
        b64(&"\0".repeat(64)),
    );
    let expect = Expectations {
        audience: "sentry",
        subject: "spiffe://public/ns/default/app",
        now: 1_700_000_000,
        leeway: jwt::DEFAULT_LEEWAY_SECS,
    };
    assert_eq!(
        jwt::verify(&token, &jwks, &expect).unwrap_err(),
        JwtError::ForeignProvider
    );
    // The refusal reads as a reason in Sentry's PERMISSION_DENIED.
    assert!(JwtError::ForeignProvider
        .to_string()
        .contains("ring provider"));
}
