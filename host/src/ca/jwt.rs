//! Sentry's JWT-SVID signing key and the key set it publishes (issue 17), wire-compatible with
//! Dapr's `--jwt-enabled` Sentry (`pkg/sentry/server/ca/jwt`).
//!
//! **The files**: `jwt.key` (the private key, PEM: PKCS#8 `PRIVATE KEY` for RSA, P-256, P-384
//! or Ed25519; PKCS#1 `RSA PRIVATE KEY`; SEC1 `EC PRIVATE KEY` for P-256) and `jwks.json` (the
//! public set relying parties fetch, `{"keys":[...]}`, possibly holding more keys than the
//! signing one: those verify tokens still alive). [`load_or_generate`] reads both under the
//! credential store's lock; when `jwt.key` is absent it generates one for the configured
//! algorithm (RSA-2048 for RS*/PS*, Dapr's default RS256; P-256, P-384 or Ed25519 otherwise)
//! and adds its public key to the set (the set first, so a crash between the two writes leaves
//! a set that holds an unused key, never a key that signs tokens nobody can verify). Unlike
//! Dapr, an existing key is never overwritten (Dapr regenerates both files when `jwks.json` is
//! missing: here the set is derived from the key), and the algorithm asked for is the one
//! generated (Dapr always generates RS256).
//!
//! **Checks** ([`JwtKeys::new`]): the key suits `--jwt-signing-algorithm`; the set holds the
//! signing key's public key (compared by RFC 7638 thumbprint; Dapr only warns, so tokens it
//! signs may not verify against what it publishes); the token `kid` is `--jwt-key-id` if given,
//! else that set entry's `kid`, else the thumbprint (SHA-256, standard base64 with padding, as
//! Dapr), and a `--jwt-key-id` that differs from the entry's `kid` is refused.
//!
//! **Tokens** ([`JwtKeys::issue`]): header `{"alg","kid","typ":"JWT"}`; claims in Dapr's
//! order and form: `aud` (always an array), `exp`, `iat`, `iss` (only when configured), `jti`
//! (16 random bytes, hex), `nbf` (back-dated by the clock skew), `sub` (the SPIFFE ID), `use`
//! (`sig`). Signed by `ring` (RSA PKCS#1 v1.5 and PSS, ECDSA with fixed-size signatures as JWS
//! needs, Ed25519). The `rsa` crate only generates RSA keys; it never signs.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64ct::{Base64, Base64UrlUnpadded, Encoding as _};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::pki;

/// The JWS algorithms Sentry signs with (`--jwt-signing-algorithm`, Dapr's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Dapr's default).
    #[default]
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519 (daprd cannot read these: go-spiffe accepts RS, PS and ES only).
    EdDSA,
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = JwtKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            other => return Err(JwtKeyError::Algorithm(other.to_owned())),
        })
    }
}

impl JwtAlgorithm {
    /// The JWS name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    const fn key_kind(self) -> &'static str {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                "an RSA key"
            }
            Self::ES256 => "an ECDSA P-256 key",
            Self::ES384 => "an ECDSA P-384 key",
            Self::EdDSA => "an Ed25519 key",
        }
    }
}

/// Why the JWT key or its set could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtKeyError {
    /// `--jwt-signing-algorithm` names no algorithm Sentry signs with.
    #[error(
        "unsupported JWT signing algorithm {0:?} (RS256, RS384, RS512, PS256, PS384, PS512, \
         ES256, ES384 or EdDSA; ES512 is not supported)"
    )]
    Algorithm(String),
    /// The key file holds no usable private key.
    #[error("{path}: {why}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The key is not of the kind the algorithm needs.
    #[error("{path}: {algorithm} needs {needed}, the file holds {found}")]
    Mismatch {
        /// The key file.
        path: String,
        /// The algorithm.
        algorithm: &'static str,
        /// What it needs.
        needed: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// The key set is not a JWKS, or its entries are malformed.
    #[error("{path}: {why}")]
    Jwks {
        /// The JWKS file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The set does not hold the signing key.
    #[error(
        "{path} does not hold the public key of the JWT signing key (thumbprint {thumbprint}): \
         tokens signed with it would not verify against the published set"
    )]
    NotPublished {
        /// The JWKS file.
        path: String,
        /// The signing key's RFC 7638 thumbprint.
        thumbprint: String,
    },
    /// `--jwt-key-id` and the set's `kid` for the signing key differ.
    #[error("--jwt-key-id {given:?} differs from the kid {published:?} the key set gives the signing key")]
    KeyId {
        /// `--jwt-key-id`.
        given: String,
        /// The set's.
        published: String,
    },
    /// Generating, signing or writing failed.
    #[error("{0}")]
    Io(String),
}

enum Pair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Pair {
    const fn kind(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "an RSA key",
            Self::Ecdsa(_) => "an ECDSA key",
            Self::Ed25519(_) => "an Ed25519 key",
        }
    }
}

/// Reads a private key for `algorithm` from PEM `text` (`path` names it in errors).
fn read_key(text: &str, path: &str, algorithm: JwtAlgorithm) -> Result<Pair, JwtKeyError> {
    let bad = |why: &str| JwtKeyError::Key {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let block = sigil_core::pem::blocks(text)
        .filter_map(Result::ok)
        .find(|b| {
            matches!(
                b.label_str(),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
            )
        })
        .ok_or_else(|| bad("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block"))?;
    let mut buf = Zeroizing::new(vec![0u8; block.decoded_len_max()]);
    let der = block
        .decode(&mut buf)
        .map_err(|_| bad("the PEM block does not decode"))?;
    let rng = SystemRandom::new();
    let pair = match block.label_str() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
            .map(Pair::Rsa)
            .map_err(|e| bad(&format!("the RSA key is refused: {e}")))?,
        "EC PRIVATE KEY" => {
            if algorithm != JwtAlgorithm::ES256 {
                return Err(mismatch(
                    path,
                    algorithm,
                    "an ECDSA P-256 key (EC PRIVATE KEY)",
                ));
            }
            let p256 = crate::key::P256Key::from_pem(text)
                .map_err(|_| bad("an EC PRIVATE KEY must be P-256 (use PKCS#8 for P-384)"))?;
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                p256.pkcs8_der(),
                &rng,
            )
            .map(Pair::Ecdsa)
            .map_err(|_| bad("the P-256 key is refused"))?
        }
        _ => {
            if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
                Pair::Rsa(k)
            } else if let Ok(k) =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            {
                if algorithm == JwtAlgorithm::ES384 {
                    return Err(mismatch(path, algorithm, "an ECDSA P-256 key"));
                }
                Pair::Ecdsa(k)
            } else if let Ok(k) =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng)
            {
                if algorithm != JwtAlgorithm::ES384 {
                    return Err(mismatch(path, algorithm, "an ECDSA P-384 key"));
                }
                Pair::Ecdsa(k)
            } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                Pair::Ed25519(k)
            } else {
                return Err(bad(
                    "not an RSA (2048 to 8192 bits), ECDSA P-256/P-384 or Ed25519 private key",
                ));
            }
        }
    };
    let fits = matches!(
        (&pair, algorithm),
        (
            Pair::Rsa(_),
            JwtAlgorithm::RS256
                | JwtAlgorithm::RS384
                | JwtAlgorithm::RS512
                | JwtAlgorithm::PS256
                | JwtAlgorithm::PS384
                | JwtAlgorithm::PS512
        ) | (Pair::Ecdsa(_), JwtAlgorithm::ES256 | JwtAlgorithm::ES384)
            | (Pair::Ed25519(_), JwtAlgorithm::EdDSA)
    );
    if !fits {
        return Err(mismatch(path, algorithm, pair.kind()));
    }
    if let (Pair::Ecdsa(k), JwtAlgorithm::ES256) = (&pair, algorithm) {
        // An EC PRIVATE KEY or a PKCS#8 key read with the P-256 parser: P-256 (65-byte point).
        if k.public_key().as_ref().len() != 65 {
            return Err(mismatch(path, algorithm, "an ECDSA P-384 key"));
        }
    }
    Ok(pair)
}

fn mismatch(path: &str, algorithm: JwtAlgorithm, found: &'static str) -> JwtKeyError {
    JwtKeyError::Mismatch {
        path: path.to_owned(),
        algorithm: algorithm.as_str(),
        needed: algorithm.key_kind(),
        found,
    }
}

fn b64url(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Strips leading zero octets (a JWK's RSA integers are minimal).
fn minimal(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The RFC 7638 members of a public key: (kty, the required members in lexicographic order).
fn public_members(pair: &Pair) -> Vec<(&'static str, String)> {
    match pair {
        Pair::Rsa(k) => {
            let c: signature::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
            vec![
                ("e", b64url(minimal(&c.e))),
                ("kty", "RSA".into()),
                ("n", b64url(minimal(&c.n))),
            ]
        }
        Pair::Ecdsa(k) => {
            let point = k.public_key().as_ref();
            let (crv, size) = if point.len() == 65 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let coords = point.get(1..).unwrap_or_default();
            let (x, y) = coords.split_at(size.min(coords.len()));
            vec![
                ("crv", crv.into()),
                ("kty", "EC".into()),
                ("x", b64url(x)),
                ("y", b64url(y)),
            ]
        }
        Pair::Ed25519(k) => vec![
            ("crv", "Ed25519".into()),
            ("kty", "OKP".into()),
            ("x", b64url(k.public_key().as_ref())),
        ],
    }
}

/// RFC 7638 thumbprint of the required members: SHA-256, standard base64 with padding (as
/// Dapr makes its default `kid`).
fn thumbprint(members: &[(&str, String)]) -> String {
    let mut canonical = Map::new();
    for (k, v) in members {
        canonical.insert((*k).to_owned(), Value::String(v.clone()));
    }
    // serde_json's map is sorted by key (no `preserve_order`): the canonical form.
    let text = Value::Object(canonical).to_string();
    Base64::encode_string(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// The thumbprint of a JWKS entry, from its required members (RSA integers made minimal), or
/// `None` for an entry of another type or without them.
fn entry_thumbprint(entry: &Map<String, Value>) -> Option<String> {
    let text = |k: &str| entry.get(k).and_then(Value::as_str);
    let members: Vec<(&str, String)> = match text("kty")? {
        "RSA" => {
            let int = |k: &str| {
                let raw = Base64UrlUnpadded::decode_vec(text(k)?).ok()?;
                Some(b64url(minimal(&raw)))
            };
            vec![("e", int("e")?), ("kty", "RSA".into()), ("n", int("n")?)]
        }
        "EC" => vec![
            ("crv", text("crv")?.to_owned()),
            ("kty", "EC".into()),
            ("x", text("x")?.to_owned()),
            ("y", text("y")?.to_owned()),
        ],
        "OKP" => vec![
            ("crv", text("crv")?.to_owned()),
            ("kty", "OKP".into()),
            ("x", text("x")?.to_owned()),
        ],
        _ => return None,
    };
    Some(thumbprint(&members))
}

/// The claims of one token (Dapr's, in its order).
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    /// `sub`: the workload's SPIFFE ID.
    pub subject: &'a str,
    /// `aud`.
    pub audiences: &'a [String],
    /// `iss`, when `--jwt-issuer` is given.
    pub issuer: Option<&'a str>,
    /// `iat`.
    pub issued_at: SystemTime,
    /// `nbf` is `iat` minus this.
    pub skew: std::time::Duration,
    /// `exp` is `iat` plus this.
    pub ttl: std::time::Duration,
}

/// The signing key, its `kid`, and the public set published beside it.
pub struct JwtKeys {
    algorithm: JwtAlgorithm,
    kid: String,
    pair: Pair,
    /// The set as served: every entry of the file, normalised.
    jwks: Vec<Map<String, Value>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("published", &self.jwks.len())
            .finish_non_exhaustive()
    }
}

/// Where the JWT key and its set are, and how to sign.
#[derive(Clone, Debug)]
pub struct JwtKeyPaths {
    /// `jwt.key`.
    pub key: std::path::PathBuf,
    /// `jwks.json`.
    pub jwks: std::path::PathBuf,
}

/// Parses a JWKS file's text into its entries (objects; a set with anything else is refused).
fn parse_jwks(text: &str, path: &str) -> Result<Vec<Map<String, Value>>, JwtKeyError> {
    let bad = |why: String| JwtKeyError::Jwks {
        path: path.to_owned(),
        why,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("not a JWK set: no \"keys\" array".to_owned()))?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let entry = k
                .as_object()
                .ok_or_else(|| bad(format!("keys[{i}] is not an object")))?;
            // Private members never leave the file.
            let mut public = entry.clone();
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                public.remove(private);
            }
            Ok(public)
        })
        .collect()
}

impl JwtKeys {
    /// The signing key from `key_pem` and the set from `jwks_text` (the paths name them in
    /// errors), checked as the module doc says.
    ///
    /// # Errors
    ///
    /// [`JwtKeyError`], naming the file and the rule.
    pub fn new(
        key_pem: &str,
        jwks_text: &str,
        paths: &JwtKeyPaths,
        algorithm: JwtAlgorithm,
        key_id: Option<&str>,
    ) -> Result<Self, JwtKeyError> {
        let key_path = paths.key.display().to_string();
        let jwks_path = paths.jwks.display().to_string();
        let pair = read_key(key_pem, &key_path, algorithm)?;
        let mut jwks = parse_jwks(jwks_text, &jwks_path)?;
        let own = thumbprint(&public_members(&pair));
        let at = jwks
            .iter()
            .position(|e| entry_thumbprint(e).as_deref() == Some(own.as_str()))
            .ok_or_else(|| JwtKeyError::NotPublished {
                path: jwks_path.clone(),
                thumbprint: own.clone(),
            })?;
        let published = jwks[at]
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kid = match (key_id, published) {
            (Some(given), Some(p)) if given != p => {
                return Err(JwtKeyError::KeyId {
                    given: given.to_owned(),
                    published: p,
                })
            }
            (Some(given), _) => given.to_owned(),
            (None, Some(p)) => p,
            (None, None) => own,
        };
        // The served entry carries the kid the tokens carry (a relying party looks keys up
        // by it), and no other entry may carry it too.
        jwks[at].insert("kid".into(), json!(kid));
        if jwks
            .iter()
            .enumerate()
            .any(|(i, e)| i != at && e.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
        {
            return Err(JwtKeyError::Jwks {
                path: jwks_path,
                why: format!(
                    "another key has the signing key's kid {kid:?}: a relying party could pick \
                     the wrong one"
                ),
            });
        }
        Ok(Self {
            algorithm,
            kid,
            pair,
            jwks,
            rng: SystemRandom::new(),
        })
    }

    /// The algorithm tokens are signed with.
    pub const fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// The `kid` of the tokens.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The published set, `{"keys":[...]}` (compact, members sorted).
    pub fn jwks_json(&self) -> String {
        json!({ "keys": self.jwks }).to_string()
    }

    /// How many keys the set publishes.
    pub fn published(&self) -> usize {
        self.jwks.len()
    }

    /// Whether the set has no key (an OIDC server answers 404 then, as Dapr's).
    pub fn is_empty(&self) -> bool {
        self.jwks.is_empty()
    }

    /// One signed token.
    ///
    /// # Errors
    ///
    /// [`JwtKeyError::Io`] if the RNG or the signature fails.
    pub fn issue(&self, claims: &Claims<'_>) -> Result<String, JwtKeyError> {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let iat = secs(claims.issued_at);
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| JwtKeyError::Io("the system RNG failed".into()))?;
        let header = json!({ "alg": self.algorithm.as_str(), "kid": self.kid, "typ": "JWT" });
        let mut payload = Map::new();
        payload.insert("aud".into(), json!(claims.audiences));
        payload.insert("exp".into(), json!(secs(claims.issued_at + claims.ttl)));
        payload.insert("iat".into(), json!(iat));
        if let Some(iss) = claims.issuer {
            payload.insert("iss".into(), json!(iss));
        }
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        payload.insert("jti".into(), json!(jti));
        payload.insert(
            "nbf".into(),
            json!(secs(
                claims
                    .issued_at
                    .checked_sub(claims.skew)
                    .unwrap_or(UNIX_EPOCH)
            )),
        );
        payload.insert("sub".into(), json!(claims.subject));
        payload.insert("use".into(), json!("sig"));
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(Value::Object(payload).to_string().as_bytes())
        );
        let fail = |_| JwtKeyError::Io("signing the JWT failed".into());
        let sig = match &self.pair {
            Pair::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match self.algorithm {
                    JwtAlgorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    JwtAlgorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    JwtAlgorithm::PS256 => &signature::RSA_PSS_SHA256,
                    JwtAlgorithm::PS384 => &signature::RSA_PSS_SHA384,
                    JwtAlgorithm::PS512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(padding, &self.rng, signing_input.as_bytes(), &mut sig)
                    .map_err(fail)?;
                sig
            }
            Pair::Ecdsa(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(k) => k.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{signing_input}.{}", b64url(&sig)))
    }
}

/// A new private key for `algorithm`, as PKCS#8 PEM.
///
/// # Errors
///
/// [`JwtKeyError::Io`] if generation fails.
pub fn generate(algorithm: JwtAlgorithm) -> Result<Zeroizing<String>, JwtKeyError> {
    let rng = SystemRandom::new();
    let fail = |what: &str| JwtKeyError::Io(format!("generating the JWT key: {what}"));
    let der: Zeroizing<Vec<u8>> = match algorithm {
        JwtAlgorithm::ES256 => Zeroizing::new(
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| fail("ring"))?
                .as_ref()
                .to_vec(),
        ),
        JwtAlgorithm::ES384 => Zeroizing::new(
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .map_err(|_| fail("ring"))?
                .as_ref()
                .to_vec(),
        ),
        JwtAlgorithm::EdDSA => Zeroizing::new(
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| fail("ring"))?
                .as_ref()
                .to_vec(),
        ),
        _ => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| fail(&e.to_string()))?;
            let doc = key.to_pkcs8_der().map_err(|e| fail(&e.to_string()))?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
    };
    Ok(Zeroizing::new(pki::to_pem(
        sigil_core::pem::Label::PrivateKey,
        &der,
    )))
}

/// The public JWK of the key in `key_pem` for the set: its members, `alg`, `kid` (`key_id`,
/// else the thumbprint) and `use: sig`.
fn public_jwk(
    key_pem: &str,
    path: &str,
    algorithm: JwtAlgorithm,
    key_id: Option<&str>,
) -> Result<Map<String, Value>, JwtKeyError> {
    let pair = read_key(key_pem, path, algorithm)?;
    let members = public_members(&pair);
    let kid = key_id.map_or_else(|| thumbprint(&members), str::to_owned);
    let mut jwk = Map::new();
    for (k, v) in members {
        jwk.insert(k.to_owned(), Value::String(v));
    }
    jwk.insert("alg".into(), json!(algorithm.as_str()));
    jwk.insert("kid".into(), json!(kid));
    jwk.insert("use".into(), json!("sig"));
    Ok(jwk)
}

/// The RFC 7638 thumbprint of a private key of any kind Sentry signs with (`None` if `pem`
/// holds none): how the rotation journal marks a key Sigil generated and finds a key's entry
/// in a set.
pub fn key_thumbprint(pem: &str) -> Option<String> {
    [
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::RS256,
    ]
    .into_iter()
    .find_map(|alg| read_key(pem, "", alg).ok())
    .map(|pair| thumbprint(&public_members(&pair)))
}

/// The `kid` that `set` gives the key `key_pem` (its entry found by thumbprint), if it holds it.
pub fn kid_in_set(set: &str, key_pem: &str) -> Option<String> {
    let own = key_thumbprint(key_pem)?;
    parse_jwks(set, "")
        .ok()?
        .into_iter()
        .find(|e| entry_thumbprint(e).as_deref() == Some(own.as_str()))
        .and_then(|e| e.get("kid").and_then(Value::as_str).map(str::to_owned))
}

/// `set` with the public key of `key_pem` added for `algorithm` (its `kid` the thumbprint),
/// unless `set` holds that key already: the rotation journal's publication of a prepared key.
///
/// # Errors
///
/// [`JwtKeyError`]: `set` is not a key set, the key does not read, or its `kid` names another
/// key in `set`.
pub fn set_with_key(
    set: &str,
    key_pem: &str,
    algorithm: JwtAlgorithm,
) -> Result<String, JwtKeyError> {
    let staged = json!({ "keys": [public_jwk(key_pem, "the prepared JWT key", algorithm, None)?] });
    set_merged(set, &staged.to_string())
}

/// `set` with every entry of `staged` it does not hold (by thumbprint) added; an entry whose
/// `kid` another key of `set` has is refused (a relying party could pick the wrong one).
///
/// # Errors
///
/// [`JwtKeyError::Jwks`] as above, or when either is not a key set.
pub fn set_merged(set: &str, staged: &str) -> Result<String, JwtKeyError> {
    let mut keys = parse_jwks(set, "the JWT key set")?;
    for entry in parse_jwks(staged, "the staged JWT key set")? {
        let thumb = entry_thumbprint(&entry);
        if thumb.is_some() && keys.iter().any(|k| entry_thumbprint(k) == thumb) {
            continue;
        }
        if entry.get("kid").is_some() && keys.iter().any(|k| k.get("kid") == entry.get("kid")) {
            return Err(JwtKeyError::Jwks {
                path: "the JWT key set".into(),
                why: format!(
                    "the kid {:?} of the key being published names another key already",
                    entry.get("kid")
                ),
            });
        }
        keys.push(entry);
    }
    Ok(json!({ "keys": keys }).to_string())
}

/// `set` without the entry whose `kid` is `kid` (the rotation journal's retirement of a key).
///
/// # Errors
///
/// [`JwtKeyError::Jwks`] if `set` is not a key set.
pub fn set_without_kid(set: &str, kid: &str) -> Result<String, JwtKeyError> {
    let mut keys = parse_jwks(set, "the JWT key set")?;
    keys.retain(|e| e.get("kid").and_then(Value::as_str) != Some(kid));
    Ok(json!({ "keys": keys }).to_string())
}

/// What a store must write to hold a usable JWT key and set, and the keys: see [`plan`].
pub struct Planned {
    /// The keys, checked.
    pub keys: JwtKeys,
    /// A key was generated.
    pub generated: bool,
    /// The key to write (0600), when generated.
    pub write_key: Option<Zeroizing<String>>,
    /// The set to write, when derived or extended.
    pub write_set: Option<String>,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Planned")
            .field("keys", &self.keys)
            .field("generated", &self.generated)
            .field(
                "write_key",
                &self.write_key.as_ref().map(|_| "<private key>"),
            )
            .field("write_set", &self.write_set)
            .finish()
    }
}

/// The fingerprint of a JWT key and set held as text: what a reload compares.
pub fn text_fingerprint(key: Option<&str>, set: Option<&str>) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for t in [key, set] {
        let bytes = t.unwrap_or("").as_bytes();
        ctx.update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
        ctx.update(bytes);
    }
    ctx.finish().as_ref().to_vec()
}

/// Decides, from what a store holds (`key`, `set`; `names` name them in errors), what it must
/// write: both there → used as they are; a key without its set → the set derived from the key;
/// no key → a key generated for `algorithm` and its public key added to the set (entries kept,
/// one with the same kid replaced). The store writes the set before the key (see the module
/// doc). Pure but for the key generation.
///
/// # Errors
///
/// [`JwtKeyError`]: unusable contents (nothing is to be written over them).
pub fn plan(
    key: Option<Zeroizing<String>>,
    set: Option<&str>,
    names: &JwtKeyPaths,
    algorithm: JwtAlgorithm,
    key_id: Option<&str>,
) -> Result<Planned, JwtKeyError> {
    let key_name = names.key.display().to_string();
    let set_name = names.jwks.display().to_string();
    let (key_pem, generated) = match key {
        Some(k) => (k, false),
        None => (generate(algorithm)?, true),
    };
    let (set_text, write_set) = match (set, generated) {
        (Some(text), false) => (text.to_owned(), None),
        (None, false) => {
            let jwk = public_jwk(&key_pem, &key_name, algorithm, key_id)?;
            let text = json!({ "keys": [jwk] }).to_string();
            (text.clone(), Some(text))
        }
        (existing, true) => {
            let mut keys = match existing {
                Some(text) => parse_jwks(text, &set_name)?,
                None => Vec::new(),
            };
            let jwk = public_jwk(&key_pem, &key_name, algorithm, key_id)?;
            // An entry with the new key's kid has lost its private key (a key generated
            // before a crash, or a key file removed): it goes, or the kid would name two keys.
            keys.retain(|e| e.get("kid") != jwk.get("kid"));
            keys.push(jwk);
            let text = json!({ "keys": keys }).to_string();
            (text.clone(), Some(text))
        }
    };
    let keys = JwtKeys::new(&key_pem, &set_text, names, algorithm, key_id)?;
    Ok(Planned {
        keys,
        generated,
        write_key: generated.then_some(key_pem),
        write_set,
    })
}

/// Loads the JWT key and its set from `paths`, making what is missing ([`plan`]); call it
/// under the credential store's lock. A generated key is marked for the rotation journal:
/// `marker` (if given) gets its [`key_thumbprint`], written between the set and the key. Returns
/// the keys, whether a key was generated, and the [`text_fingerprint`] of the key and set they
/// came from (a reload's baseline).
///
/// # Errors
///
/// [`JwtKeyError`]: an unreadable or unusable file (nothing is overwritten), a failed write.
pub fn load_or_generate(
    paths: &JwtKeyPaths,
    algorithm: JwtAlgorithm,
    key_id: Option<&str>,
    marker: Option<&Path>,
) -> Result<(JwtKeys, bool, Vec<u8>), JwtKeyError> {
    let io = |p: &Path, e: std::io::Error| JwtKeyError::Io(format!("{}: {e}", p.display()));
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p, e)),
    };
    let existing_key = read(&paths.key)?.map(Zeroizing::new);
    let existing_set = read(&paths.jwks)?;
    let write = |p: &Path, text: &str, mode: u32, force: bool| {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        pki::write_atomic(p, text.as_bytes(), mode, force)
            .map_err(|e| JwtKeyError::Io(e.to_string()))
    };
    let had_set = existing_set.is_some();
    let planned = plan(
        existing_key.clone(),
        existing_set.as_deref(),
        paths,
        algorithm,
        key_id,
    )?;
    let fingerprint = text_fingerprint(
        planned
            .write_key
            .as_deref()
            .or(existing_key.as_deref())
            .map(String::as_str),
        planned.write_set.as_deref().or(existing_set.as_deref()),
    );
    // The set first, then the key (never over an existing file).
    if let Some(set) = &planned.write_set {
        write(&paths.jwks, set, 0o644, had_set && planned.generated)?;
    }
    if let Some(key) = &planned.write_key {
        if let Some(m) = marker {
            let thumb = key_thumbprint(key).unwrap_or_default();
            write(m, &thumb, 0o644, true)?;
        }
        write(&paths.key, key, 0o600, false)?;
    }
    Ok((planned.keys, planned.generated, fingerprint))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn paths(dir: &Path) -> JwtKeyPaths {
        JwtKeyPaths {
            key: dir.join("jwt.key"),
            jwks: dir.join("jwks.json"),
        }
    }

    fn parts(token: &str) -> (Value, Value, Vec<u8>) {
        let mut it = token.split('.');
        let mut next = || Base64UrlUnpadded::decode_vec(it.next().unwrap()).unwrap();
        let h = serde_json::from_slice(&next()).unwrap();
        let p = serde_json::from_slice(&next()).unwrap();
        (h, p, next())
    }

    fn claims<'a>(aud: &'a [String], at: SystemTime) -> Claims<'a> {
        Claims {
            subject: "spiffe://public/ns/default/app",
            audiences: aud,
            issuer: None,
            issued_at: at,
            skew: std::time::Duration::from_secs(900),
            ttl: std::time::Duration::from_secs(3600),
        }
    }

    #[test]
    fn every_algorithm_generates_publishes_and_signs_what_verifies() {
        for alg in [
            JwtAlgorithm::ES256,
            JwtAlgorithm::ES384,
            JwtAlgorithm::EdDSA,
            JwtAlgorithm::PS256,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = paths(dir.path());
            let (keys, generated, _) = load_or_generate(&p, alg, None, None).unwrap();
            assert!(generated);
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{alg:?}");
            let aud = vec!["public".to_owned(), "api://x".to_owned()];
            let at = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
            let token = keys.issue(&claims(&aud, at)).unwrap();
            let (h, c, sig) = parts(&token);
            assert_eq!(h["alg"], alg.as_str());
            assert_eq!(h["typ"], "JWT");
            assert_eq!(h["kid"], keys.kid());
            assert_eq!(c["aud"], json!(aud));
            assert_eq!(c["iat"], 1_800_000_000u64);
            assert_eq!(c["nbf"], 1_800_000_000u64 - 900);
            assert_eq!(c["exp"], 1_800_000_000u64 + 3600);
            assert_eq!(c["use"], "sig");
            assert!(c.get("iss").is_none());
            assert_eq!(c["jti"].as_str().unwrap().len(), 32);
            // The published key verifies it (through the jwks validator's verifier).
            let set = crate::sentry::jwt::Jwks::from_json(keys.jwks_json().as_bytes()).unwrap();
            let verified = crate::sentry::jwt::verify(
                &token,
                &set,
                &crate::sentry::jwt::Expectations {
                    audience: "api://x",
                    subject: "spiffe://public/ns/default/app",
                    now: 1_800_000_000,
                    leeway: 60,
                },
            );
            assert!(verified.is_ok(), "{alg:?}: {verified:?}");
            assert!(!sig.is_empty());
            // Loaded again: the same key and kid, nothing generated.
            let (again, generated, _) = load_or_generate(&p, alg, None, None).unwrap();
            assert!(!generated);
            assert_eq!(again.kid(), keys.kid());
        }
    }

    #[test]
    fn a_key_is_never_overwritten_and_a_missing_set_is_derived() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let (keys, _, _) = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap();
        let key_before = std::fs::read(&p.key).unwrap();
        std::fs::remove_file(&p.jwks).unwrap();
        let (again, generated, _) = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap();
        assert!(!generated, "the set is derived, the key kept");
        assert_eq!(std::fs::read(&p.key).unwrap(), key_before);
        assert_eq!(again.kid(), keys.kid());
        // The default kid is the RFC 7638 thumbprint in standard base64 (44 characters).
        assert_eq!(again.kid().len(), 44);
        assert!(again.kid().ends_with('='));
    }

    #[test]
    fn a_set_without_the_signing_key_and_wrong_key_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap();
        let other = tempfile::tempdir().unwrap();
        let q = paths(other.path());
        load_or_generate(&q, JwtAlgorithm::ES256, None, None).unwrap();
        // Another key's set.
        std::fs::copy(&q.jwks, &p.jwks).unwrap();
        let e = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::NotPublished { .. }), "{e}");
        // A P-256 key for ES384 or RS256.
        std::fs::remove_file(&p.jwks).unwrap();
        for alg in [
            JwtAlgorithm::ES384,
            JwtAlgorithm::RS256,
            JwtAlgorithm::EdDSA,
        ] {
            let e = load_or_generate(&p, alg, None, None).unwrap_err();
            assert!(matches!(e, JwtKeyError::Mismatch { .. }), "{alg:?}: {e}");
        }
        // Not JSON, not a set.
        std::fs::write(&p.jwks, "{\"keys\": 3}").unwrap();
        let e = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::Jwks { .. }), "{e}");
        assert!("ES512".parse::<JwtAlgorithm>().is_err());
        assert!("rs256".parse::<JwtAlgorithm>().is_err());
    }

    #[test]
    fn a_regenerated_key_replaces_its_kid_and_a_kid_less_entry_is_served_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let (first, _, _) = load_or_generate(&p, JwtAlgorithm::ES256, Some("k"), None).unwrap();
        std::fs::remove_file(&p.key).unwrap();
        let (second, generated, _) =
            load_or_generate(&p, JwtAlgorithm::ES256, Some("k"), None).unwrap();
        assert!(generated);
        assert_eq!(second.kid(), first.kid());
        assert_eq!(second.jwks_json().matches("\"kid\":\"k\"").count(), 1);
        // A set whose entry has no kid: served with the one the tokens carry.
        let text = std::fs::read_to_string(&p.jwks).unwrap();
        let mut set: Value = serde_json::from_str(&text).unwrap();
        set["keys"][0].as_object_mut().unwrap().remove("kid");
        std::fs::write(&p.jwks, set.to_string()).unwrap();
        let (keys, _, _) = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap();
        assert!(keys
            .jwks_json()
            .contains(&format!("\"kid\":\"{}\"", keys.kid())));
        // Two entries with one kid: refused.
        let mut set: Value = serde_json::from_str(&keys.jwks_json()).unwrap();
        let mut twin = set["keys"][0].clone();
        twin["x"] = json!("AAAA");
        set["keys"].as_array_mut().unwrap().push(twin);
        std::fs::write(&p.jwks, set.to_string()).unwrap();
        let e = load_or_generate(&p, JwtAlgorithm::ES256, None, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::Jwks { .. }), "{e}");
    }

    #[test]
    fn an_ec_private_key_is_p256_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        // SEC1, as openssl writes it.
        let out = std::process::Command::new("openssl")
            .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(&p.key, &out.stdout).unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("EC PRIVATE KEY"));
        let e = load_or_generate(&p, JwtAlgorithm::ES384, None, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::Mismatch { .. }), "{e}");
        assert!(load_or_generate(&p, JwtAlgorithm::ES256, None, None).is_ok());
    }

    #[test]
    fn key_ids_come_from_the_flag_or_the_set_and_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let (keys, _, _) = load_or_generate(&p, JwtAlgorithm::EdDSA, Some("k1"), None).unwrap();
        assert_eq!(keys.kid(), "k1");
        assert!(keys.jwks_json().contains("\"kid\":\"k1\""));
        let (again, _, _) = load_or_generate(&p, JwtAlgorithm::EdDSA, None, None).unwrap();
        assert_eq!(again.kid(), "k1", "the set's kid");
        let e = load_or_generate(&p, JwtAlgorithm::EdDSA, Some("k2"), None).unwrap_err();
        assert!(matches!(e, JwtKeyError::KeyId { .. }), "{e}");
    }
}
