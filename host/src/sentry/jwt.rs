//! JWT verification against a JSON Web Key Set, for Sentry's `jwks` validator.
//!
//! # Contract
//!
//! A workload presents a compact JWS (`header.payload.signature`, RFC 7515
//! §7.1). [`verify`] accepts it only when **all** of the following hold:
//!
//! 1. The token is at most [`MAX_TOKEN_BYTES`] (16 KiB); larger tokens are
//!    refused before any decoding.
//! 2. It has exactly three base64url (unpadded, canonical) segments; the header
//!    and payload are JSON objects. No whitespace is trimmed.
//! 3. The header `alg` is one of ES256, ES384, RS256, RS384, RS512, PS256,
//!    PS384, PS512 or EdDSA (Ed25519). `none`, every `HS*` (HMAC can never be
//!    keyed from a public JWKS), ES512 and anything else are refused with
//!    [`JwtError::UnsupportedAlgorithm`].
//! 4. The header has no `crit` member (no extension is understood, so any is
//!    refused). `typ` and `cty` are not checked: Dapr (jwx) does not check
//!    `typ`, and SPIFFE JWT-SVIDs may carry `"JOSE"`. Embedded key hints
//!    (`jwk`, `jku`, `x5u`, `x5c`) are never used: keys come from the
//!    configured [`Jwks`] only. Registered header members must have their
//!    registered JSON types, and a header member given twice is refused.
//! 5. Some key of the set verifies the signature. If the header has `kid`,
//!    only keys with that exact `kid` are tried, otherwise every key is. A key
//!    is tried only if it suits `alg` (EC P-256 for ES256, EC P-384 for ES384,
//!    RSA for RS*/PS*, OKP Ed25519 for EdDSA) and, when the key has its own
//!    `alg`, that equals the header's. No such key →
//!    [`JwtError::UnknownKey`]; keys tried but none verifies →
//!    [`JwtError::BadSignature`].
//! 6. Claims (after the signature; a claim given twice is refused):
//!    * `exp`, `aud` and `sub` are **required**; a token without an expiry is
//!      refused.
//!    * `aud` is a string or an array of strings and must contain
//!      [`Expectations::audience`] exactly; `sub` is a string equal to
//!      [`Expectations::subject`] exactly.
//!    * `exp` is a non-negative JSON number (integer or fractional seconds;
//!      fractions round toward the stricter side). Refused when
//!      `now > exp + leeway`.
//!    * `nbf` is optional; refused when `now + leeway < nbf`.
//!    * `iat` is optional; refused when `now + leeway < iat` (issued in the
//!      future). This mirrors jwx, which Dapr uses.
//!    * `iss`, if present, must be a string; it is returned, not checked.
//!
//! The caller supplies the clock and the leeway (Dapr uses
//! [`DEFAULT_LEEWAY_SECS`], 5 minutes) through [`Expectations`].
//!
//! # Who does what
//!
//! The `jsonwebtoken` crate decodes the token, checks the signature with the
//! key this module picks, and validates `aud`, `sub` and the presence and type
//! of `exp`, `aud` and `sub`. Its signatures are checked by `ring` (the host's
//! one crypto library) through [`RING_PROVIDER`], which this module installs
//! as `jsonwebtoken`'s process-wide provider on first use; if another provider
//! was installed first, every token is refused ([`JwtError::ForeignProvider`]).
//! This module adds what the crate lacks: the size limit, refusals that name
//! the algorithm or the `crit` member, key selection over a set, the times
//! (`jsonwebtoken` reads the system clock itself and ignores `iat`) and
//! Dapr's JWKS loading.
//!
//! # JWKS
//!
//! [`Jwks::from_json`] reads `{"keys":[...]}`. Usable entries: `kty` `EC`
//! with `crv` `P-256`/`P-384` (`x`,`y` of exactly the field size), `RSA`
//! (`n`,`e`; leading zero octets stripped; 2048–8192-bit moduli), `OKP` with
//! `crv` `Ed25519` (`x` of 32 octets). Entries that are well formed but not
//! usable are skipped: unknown `kty` (including `oct`: HMAC keys are never
//! used) or `crv`, `use` other than `sig`, `key_ops` without `verify`, an `alg`
//! this module does not support, RSA moduli outside 2048–8192 bits. An entry of
//! a supported type that is malformed (missing member, bad base64url, wrong
//! length, `alg` inconsistent with its type) makes the whole set
//! [`JwtError::BadJwks`], as does a set with no usable key. Private members
//! (`d`, `p`, `q`, ...) are ignored and never stored. (`jsonwebtoken`'s own JWK
//! model is not used: it reads a malformed key of a supported type as an
//! unknown one, which would turn a refusal into a skip.)
//!
//! EC points and RSA public keys are validated by `ring` when a signature is
//! checked, so an invalid point in the set surfaces as
//! [`JwtError::BadSignature`], not at load time.
//!
//! The code never panics on input and contains no `unsafe`.

use std::io::Read;
use std::path::Path;

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};
use serde_json::{Map, Value};

/// Largest token [`verify`] and [`decode_unverified`] accept, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The clock-skew allowance Dapr's Sentry uses for `exp`/`nbf`/`iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 5 * 60;

/// Largest JWKS file [`Jwks::load`] reads, in bytes.
const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;

/// The claims `jsonwebtoken` must find.
const REQUIRED_CLAIMS: [&str; 3] = ["exp", "aud", "sub"];

/// The registered claims `jsonwebtoken` reads by type, with the JSON type each must have.
const CLAIM_TYPES: [(&str, &str); 4] = [
    ("exp", "a non-negative number of seconds"),
    ("nbf", "a non-negative number of seconds"),
    ("aud", "a string or an array of strings"),
    ("sub", "a string"),
];

/// Why a token or a JWKS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Length of the presented token.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS/JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header's `alg` is not accepted (includes `none` and HMAC).
    #[error(
        "unsupported JWS algorithm {0:?} (accepted: ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA)"
    )]
    UnsupportedAlgorithm(String),
    /// The header carries `crit`; no extension is supported.
    #[error("token header marks extensions as critical ({0}); none are supported")]
    CriticalHeader(String),
    /// No key in the set has the token's `kid` (if any) and suits its `alg`.
    #[error("no key in the JWKS matches kid {kid:?} and is usable with alg {alg}")]
    UnknownKey {
        /// The header's `kid`, if it had one.
        kid: Option<String>,
        /// The header's `alg`.
        alg: String,
    },
    /// Candidate keys were found but none verifies the signature.
    #[error("signature verification failed with every candidate key")]
    BadSignature,
    /// A required claim is absent.
    #[error("required claim {0:?} is missing")]
    MissingClaim(&'static str),
    /// A claim is present but has the wrong JSON type.
    #[error("claim {claim:?} is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `now > exp + leeway`.
    #[error("token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
        /// Allowed skew.
        leeway: u64,
    },
    /// `now + leeway < nbf`.
    #[error("token not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The verifier's clock.
        now: u64,
        /// Allowed skew.
        leeway: u64,
    },
    /// `now + leeway < iat`.
    #[error("token issued in the future at {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The verifier's clock.
        now: u64,
        /// Allowed skew.
        leeway: u64,
    },
    /// `aud` does not contain the expected audience.
    #[error("audience {found:?} does not contain {expected:?}")]
    AudienceMismatch {
        /// The audience the verifier requires.
        expected: String,
        /// The token's audiences.
        found: Vec<String>,
    },
    /// `sub` is not the expected subject.
    #[error("subject {found:?} is not the expected {expected:?}")]
    SubjectMismatch {
        /// The subject the verifier requires.
        expected: String,
        /// The token's subject.
        found: String,
    },
    /// The JWKS (or its source) is unusable.
    #[error("invalid JWKS: {0}")]
    BadJwks(String),
    /// Another crypto provider was installed as `jsonwebtoken`'s process default before
    /// [`RING_PROVIDER`]; signatures are checked by `ring` or not at all.
    #[error("jsonwebtoken's process-wide crypto provider is not Sigil's ring provider")]
    ForeignProvider,
}

/// The JWS algorithms accepted: never HMAC (a public JWKS cannot key it), never `none`.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Looks up a JWA `alg` name (case-sensitive); `None` for anything not [`ACCEPTED`].
fn algorithm(name: &str) -> Option<Algorithm> {
    let alg = name.parse().ok()?;
    ACCEPTED.contains(&alg).then_some(alg)
}

/// `jsonwebtoken`'s crypto backend in Sigil: signatures checked by `ring` (the host's one
/// crypto library), for the nine accepted algorithms only; no signing. Its JWK utilities
/// (thumbprints, keys from private keys) panic, and nothing in Sigil calls them: this
/// module parses JWKS itself.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| {
        Err(ErrorKind::Provider("Sigil's JWT provider only verifies".into()).into())
    },
    verifier_factory: |alg, key| {
        if alg.family() != key.family() || key.family() == AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Ok(Box::new(RingSignatureVerifier {
            alg: *alg,
            key: key.clone(),
        }))
    },
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`RING_PROVIDER`] (once per process) and checks it is the one in use.
fn ring_provider() -> Result<(), JwtError> {
    let _ = RING_PROVIDER.install_default();
    match CryptoProvider::try_get_default() {
        Some(provider) if std::ptr::eq(provider, &RING_PROVIDER) => Ok(()),
        _ => Err(JwtError::ForeignProvider),
    }
}

/// One public key and the algorithm it is used with, for [`RING_PROVIDER`].
struct RingSignatureVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for RingSignatureVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> Result<(), jsonwebtoken::signature::Error> {
        use ring::signature as r;
        use Algorithm as A;
        let rsa = |params: &'static r::RsaParameters| match self.key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                r::RsaPublicKeyComponents { n, e }.verify(params, message, sig)
            }
            DecodingKeyKind::SecretOrDer(_) => Err(ring::error::Unspecified),
        };
        let point = |alg: &'static dyn r::VerificationAlgorithm| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => {
                r::UnparsedPublicKey::new(alg, bytes).verify(message, sig)
            }
            DecodingKeyKind::RsaModulusExponent { .. } => Err(ring::error::Unspecified),
        };
        match self.alg {
            A::ES256 => point(&r::ECDSA_P256_SHA256_FIXED),
            A::ES384 => point(&r::ECDSA_P384_SHA384_FIXED),
            A::EdDSA => point(&r::ED25519),
            A::RS256 => rsa(&r::RSA_PKCS1_2048_8192_SHA256),
            A::RS384 => rsa(&r::RSA_PKCS1_2048_8192_SHA384),
            A::RS512 => rsa(&r::RSA_PKCS1_2048_8192_SHA512),
            A::PS256 => rsa(&r::RSA_PSS_2048_8192_SHA256),
            A::PS384 => rsa(&r::RSA_PSS_2048_8192_SHA384),
            A::PS512 => rsa(&r::RSA_PSS_2048_8192_SHA512),
            _ => Err(ring::error::Unspecified),
        }
        .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtVerifier for RingSignatureVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EcCurve {
    P256,
    P384,
}

/// Public key material only; private members are never read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// Uncompressed SEC1 point `0x04 || x || y`.
    Ec { curve: EcCurve, point: Vec<u8> },
    /// Big-endian modulus and exponent without leading zero octets.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// 32-octet Ed25519 public key.
    Ed25519 { x: Vec<u8> },
}

impl KeyMaterial {
    /// Whether a key of this type can verify this algorithm.
    fn suits(&self, alg: Algorithm) -> bool {
        match self {
            Self::Ec { curve, .. } => match curve {
                EcCurve::P256 => alg == Algorithm::ES256,
                EcCurve::P384 => alg == Algorithm::ES384,
            },
            Self::Rsa { .. } => alg.family() == AlgorithmFamily::Rsa,
            Self::Ed25519 { .. } => alg == Algorithm::EdDSA,
        }
    }

    /// The key as `jsonwebtoken` carries it to [`RING_PROVIDER`].
    fn decoding_key(&self) -> DecodingKey {
        match self {
            Self::Ec { point, .. } => DecodingKey::from_ec_der(point),
            Self::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            Self::Ed25519 { x } => DecodingKey::from_ed_der(x),
        }
    }
}

/// One usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: KeyMaterial,
}

/// A JSON Web Key Set (RFC 7517) of public keys usable for JWS verification.
///
/// Holds only the usable signature-verification keys of the document it was
/// built from (see the module documentation for what is skipped); never
/// private key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document (JSON object with "keys").
    ///
    /// Fails with [`JwtError::BadJwks`] if the document is not such an object,
    /// an entry of a supported type is malformed, or no entry is usable.
    pub fn from_json(json: &[u8]) -> Result<Self, JwtError> {
        let doc: Value = serde_json::from_slice(json)
            .map_err(|e| JwtError::BadJwks(format!("not valid JSON: {e}")))?;
        let entries = doc
            .as_object()
            .ok_or_else(|| JwtError::BadJwks("top level is not a JSON object".into()))?
            .get("keys")
            .ok_or_else(|| JwtError::BadJwks("no \"keys\" member".into()))?
            .as_array()
            .ok_or_else(|| JwtError::BadJwks("\"keys\" is not an array".into()))?;
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let obj = entry
                .as_object()
                .ok_or_else(|| JwtError::BadJwks(format!("keys[{i}] is not a JSON object")))?;
            match parse_jwk(obj) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(reason) => {
                    let kid = obj
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|k| format!(" (kid {k:?})"))
                        .unwrap_or_default();
                    return Err(JwtError::BadJwks(format!("keys[{i}]{kid}: {reason}")));
                }
            }
        }
        if keys.is_empty() {
            return Err(JwtError::BadJwks(format!(
                "none of its {} keys is a usable signature verification key",
                entries.len()
            )));
        }
        Ok(Self { keys })
    }
    /// Dapr's `source` option: inline JSON (starts with '{'), base64-encoded JSON, or a path to a file holding either.
    ///
    /// Resolution order: leading/trailing whitespace is trimmed; a source
    /// starting with `{` is inline JSON; `http://`/`https://` URLs are refused
    /// (fetch the document yourself and call [`Jwks::from_json`]); a source
    /// naming an existing file is read (at most 1 MiB) and its content, JSON or
    /// base64 JSON, parsed; otherwise the source is decoded as standard padded
    /// base64 (whitespace ignored) and parsed as JSON.
    pub fn load(source: &str) -> Result<Self, JwtError> {
        let src = source.trim();
        if src.is_empty() {
            return Err(JwtError::BadJwks("the JWKS source is empty".into()));
        }
        if src.starts_with('{') {
            return Self::from_json(src.as_bytes());
        }
        if src.starts_with("http://") || src.starts_with("https://") {
            return Err(JwtError::BadJwks(format!(
                "URL source {src:?} is not supported here; fetch it and use Jwks::from_json"
            )));
        }
        let path = Path::new(src);
        if path.is_file() {
            let content = read_limited(path)?;
            return Self::from_content(&content).map_err(|e| match e {
                JwtError::BadJwks(m) => {
                    JwtError::BadJwks(format!("in file {}: {m}", path.display()))
                }
                other => other,
            });
        }
        match decode_base64_lenient(src.as_bytes()) {
            Ok(json) => Self::from_json(&json),
            Err(e) if src.contains('/') || src.contains(std::path::MAIN_SEPARATOR) => {
                Err(JwtError::BadJwks(format!(
                    "JWKS file {src:?} does not exist (and the source is not base64: {e})"
                )))
            }
            Err(e) => Err(JwtError::BadJwks(format!(
                "the source is neither inline JSON, an existing file, nor base64-encoded JSON ({e})"
            ))),
        }
    }

    /// Parses file content: JSON, or base64-encoded JSON.
    fn from_content(content: &[u8]) -> Result<Self, JwtError> {
        let trimmed = content.trim_ascii();
        if trimmed.starts_with(b"{") {
            Self::from_json(trimmed)
        } else {
            let json = decode_base64_lenient(trimmed).map_err(|e| {
                JwtError::BadJwks(format!("content is neither JSON nor base64 ({e})"))
            })?;
            Self::from_json(&json)
        }
    }

    /// Number of usable keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held (never true for a set built by this module).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, JwtError> {
    let io_err = |e: std::io::Error| {
        JwtError::BadJwks(format!("cannot read JWKS file {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut content = Vec::new();
    file.take(MAX_JWKS_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(io_err)?;
    if content.len() as u64 > MAX_JWKS_FILE_BYTES {
        return Err(JwtError::BadJwks(format!(
            "JWKS file {} is larger than {MAX_JWKS_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(content)
}

/// Standard padded base64, ASCII whitespace (line wrapping) ignored.
fn decode_base64_lenient(input: &[u8]) -> Result<Vec<u8>, base64ct::Error> {
    let compact: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    Base64::decode_vec(std::str::from_utf8(&compact).map_err(|_| base64ct::Error::InvalidEncoding)?)
}

/// Optional string member; `Err` if present with another JSON type.
fn opt_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// Required base64url member decoded to bytes.
fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = opt_str(obj, name)?.ok_or_else(|| format!("missing \"{name}\""))?;
    Base64UrlUnpadded::decode_vec(s).map_err(|e| format!("\"{name}\" is not base64url: {e}"))
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default().to_vec()
}

/// `Ok(None)` = well formed but not usable here (skip); `Err` = malformed.
fn parse_jwk(obj: &Map<String, Value>) -> Result<Option<Jwk>, String> {
    let kty = opt_str(obj, "kty")?.ok_or("missing \"kty\"")?;
    let kid = opt_str(obj, "kid")?.map(str::to_owned);
    if opt_str(obj, "use")?.is_some_and(|usage| usage != "sig") {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("\"key_ops\" is not an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let alg = match opt_str(obj, "alg")? {
        None => None,
        Some(name) => match algorithm(name) {
            Some(alg) => Some((alg, name)),
            None => return Ok(None),
        },
    };
    let material = match kty {
        "EC" => {
            let (curve, size) = match opt_str(obj, "crv")?.ok_or("missing \"crv\"")? {
                "P-256" => (EcCurve::P256, 32),
                "P-384" => (EcCurve::P384, 48),
                _ => return Ok(None),
            };
            let x = b64_member(obj, "x")?;
            let y = b64_member(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!(
                    "EC coordinates must be {size} bytes each, got x={} y={}",
                    x.len(),
                    y.len()
                ));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyMaterial::Ec { curve, point }
        }
        "RSA" => {
            let n = strip_leading_zeros(&b64_member(obj, "n")?);
            let e = strip_leading_zeros(&b64_member(obj, "e")?);
            if n.is_empty() || e.is_empty() {
                return Err("RSA \"n\" and \"e\" must be non-zero".into());
            }
            let bits = n.first().map_or(0, |top| {
                (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
            });
            if !(2048..=8192).contains(&bits) {
                return Ok(None);
            }
            KeyMaterial::Rsa { n, e }
        }
        "OKP" => match opt_str(obj, "crv")?.ok_or("missing \"crv\"")? {
            "Ed25519" => {
                let x = b64_member(obj, "x")?;
                if x.len() != 32 {
                    return Err(format!("Ed25519 \"x\" must be 32 bytes, got {}", x.len()));
                }
                KeyMaterial::Ed25519 { x }
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if let Some((_, name)) = alg.filter(|(alg, _)| !material.suits(*alg)) {
        return Err(format!(
            "\"alg\" {name} does not fit a {kty} key of this type"
        ));
    }
    Ok(Some(Jwk {
        kid,
        alg: alg.map(|(alg, _)| alg),
        material,
    }))
}

/// What the validator requires of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectations<'a> {
    /// A value `aud` must contain (Sentry's own SPIFFE ID).
    pub audience: &'a str,
    /// The exact `sub` required (the SPIFFE ID the workload asks for).
    pub subject: &'a str,
    /// The verifier's clock, unix seconds.
    pub now: u64,
    /// Allowed clock skew for `exp`, `nbf` and `iat`, seconds.
    pub leeway: u64,
}

/// The verified claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`, equal to [`Expectations::subject`].
    pub sub: String,
    /// `aud`, normalised to a list (a single string becomes one element).
    pub aud: Vec<String>,
    /// `exp`, unix seconds (fractions rounded down).
    pub exp: u64,
    /// `nbf`, unix seconds (fractions rounded up), if present.
    pub nbf: Option<u64>,
    /// `iat`, unix seconds (fractions rounded up), if present.
    pub iat: Option<u64>,
    /// `iss`, if present (not checked).
    pub iss: Option<String>,
    /// Every other claim, unchanged.
    pub extra: Map<String, Value>,
}

/// The encoded header and payload segments, after the size and shape checks.
fn split_token(token: &str) -> Result<(&str, &str), JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let shape = || JwtError::Malformed("expected three '.'-separated segments".into());
    let (signing_input, _signature) = token.rsplit_once('.').ok_or_else(shape)?;
    let (header, payload) = signing_input.split_once('.').ok_or_else(shape)?;
    if payload.contains('.') {
        return Err(shape());
    }
    Ok((header, payload))
}

fn decode_segment(segment: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    Base64UrlUnpadded::decode_vec(segment)
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(e) => Err(JwtError::Malformed(format!(
            "{what} is not valid JSON: {e}"
        ))),
    }
}

/// What key selection needs from the protected header, read before `jsonwebtoken` sees the
/// token so that a refused `alg` or a `crit` is named in the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    alg: Algorithm,
    /// `alg` as the header spells it (one of the [`ACCEPTED`] names).
    name: String,
    kid: Option<String>,
}

fn parse_header(segment: &str) -> Result<Header, JwtError> {
    let fields = json_object(&decode_segment(segment, "header")?, "header")?;
    let alg_name = match fields.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(JwtError::Malformed("header \"alg\" is not a string".into())),
        None => return Err(JwtError::Malformed("header has no \"alg\"".into())),
    };
    let alg =
        algorithm(alg_name).ok_or_else(|| JwtError::UnsupportedAlgorithm(alg_name.to_owned()))?;
    if let Some(crit) = fields.get("crit") {
        return Err(JwtError::CriticalHeader(crit.to_string()));
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JwtError::Malformed("header \"kid\" is not a string".into())),
    };
    let name = alg_name.to_owned();
    Ok(Header { alg, name, kid })
}

/// Runs `attempt` with each key of the set that may have signed a token with this header,
/// in the set's order, until one gives something other than [`JwtError::BadSignature`].
fn try_keys<T>(
    jwks: &Jwks,
    header: &Header,
    mut attempt: impl FnMut(&DecodingKey) -> Result<T, JwtError>,
) -> Result<T, JwtError> {
    ring_provider()?;
    let mut tried = false;
    for key in jwks.keys.iter().filter(|k| {
        (header.kid.is_none() || k.kid == header.kid)
            && k.alg.is_none_or(|a| a == header.alg)
            && k.material.suits(header.alg)
    }) {
        tried = true;
        match attempt(&key.material.decoding_key()) {
            Err(JwtError::BadSignature) => {}
            done => return done,
        }
    }
    Err(if tried {
        JwtError::BadSignature
    } else {
        JwtError::UnknownKey {
            kid: header.kid.clone(),
            alg: header.name.clone(),
        }
    })
}

/// Verifies a compact JWS (header.payload.signature) against the set and checks the claims.
///
/// See the module documentation for every rule; `exp` is mandatory.
pub fn verify(token: &str, jwks: &Jwks, expect: &Expectations<'_>) -> Result<Claims, JwtError> {
    let (header, payload) = split_token(token)?;
    let header = parse_header(header)?;
    let mut validation = Validation::new(header.alg);
    validation.set_required_spec_claims(&REQUIRED_CLAIMS);
    // The times are checked below against the caller's clock, not the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(&[expect.audience]);
    validation.sub = Some(expect.subject.to_owned());
    let claims = try_keys(jwks, &header, |key| {
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| refusal(e, payload, expect))
    })?;
    check_times(claims, expect)
}

/// Turns `jsonwebtoken`'s refusal into ours, reading the claims it names for the message.
fn refusal(e: jsonwebtoken::errors::Error, payload: &str, expect: &Expectations<'_>) -> JwtError {
    // Claim errors come after the signature verified: the payload is the signer's. (A JSON
    // error may be the header's; the refusal stands either way.)
    let mut claims = decode_segment(payload, "payload")
        .and_then(|json| json_object(&json, "payload"))
        .unwrap_or_default();
    let mistyped = |claims: &Map<String, Value>, name: &str| {
        let (claim, wanted) = CLAIM_TYPES.into_iter().find(|(c, _)| *c == name)?;
        let reason = format!("expected {wanted}, got {}", claims.get(claim)?);
        Some(JwtError::InvalidClaim { claim, reason })
    };
    match e.into_kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        // jsonwebtoken names one of several missing claims at random; name the first.
        ErrorKind::MissingRequiredClaim(name) | ErrorKind::InvalidClaimFormat(name) => {
            match REQUIRED_CLAIMS
                .into_iter()
                .find(|c| !claims.contains_key(*c))
            {
                Some(absent) => JwtError::MissingClaim(absent),
                None => mistyped(&claims, &name)
                    .unwrap_or_else(|| JwtError::Malformed(format!("claim {name:?} is invalid"))),
            }
        }
        // jsonwebtoken reads an array or an object where it wants a number or a string as
        // a JSON syntax error; name the claim instead.
        ErrorKind::Json(json) => ["exp", "nbf", "sub"]
            .into_iter()
            .find(|c| {
                claims
                    .get(*c)
                    .is_some_and(|v| v.is_array() || v.is_object())
            })
            .and_then(|c| mistyped(&claims, c))
            .unwrap_or_else(|| JwtError::Malformed(format!("JSON error: {json}"))),
        ErrorKind::InvalidAudience => JwtError::AudienceMismatch {
            expected: expect.audience.to_owned(),
            found: claims.remove("aud").map(audiences).unwrap_or_default(),
        },
        ErrorKind::InvalidSubject => JwtError::SubjectMismatch {
            expected: expect.subject.to_owned(),
            found: match claims.remove("sub") {
                Some(Value::String(s)) => s,
                other => other.map(|v| v.to_string()).unwrap_or_default(),
            },
        },
        other => JwtError::Malformed(jsonwebtoken::errors::Error::from(other).to_string()),
    }
}

/// `aud` as a list (a single string becomes one element).
fn audiences(aud: Value) -> Vec<String> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    match aud {
        Value::Array(items) => items.into_iter().map(text).collect(),
        other => vec![text(other)],
    }
}

/// Reads a NumericDate; `round_up` picks the stricter rounding of fractions.
fn numeric_date(value: &Value, claim: &'static str, round_up: bool) -> Result<u64, JwtError> {
    let Value::Number(num) = value else {
        return Err(JwtError::InvalidClaim {
            claim,
            reason: format!("expected a number of seconds, got {value}"),
        });
    };
    if let Some(u) = num.as_u64() {
        return Ok(u);
    }
    if num.as_i64().is_some() {
        return Ok(0); // negative: before the epoch
    }
    let f = num.as_f64().unwrap_or(0.0);
    let rounded = if round_up { f.ceil() } else { f.floor() };
    // `as` saturates: negatives become 0, huge values u64::MAX.
    Ok(rounded as u64)
}

/// The time checks on claims `jsonwebtoken` accepted, against the caller's clock.
fn check_times(mut map: Map<String, Value>, expect: &Expectations<'_>) -> Result<Claims, JwtError> {
    let (now, leeway) = (expect.now, expect.leeway);
    let mut date = |claim: &'static str, round_up: bool| {
        map.remove(claim)
            .map(|v| numeric_date(&v, claim, round_up))
            .transpose()
    };
    let exp = date("exp", false)?.ok_or(JwtError::MissingClaim("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired { exp, now, leeway });
    }
    let nbf = date("nbf", true)?;
    if let Some(nbf) = nbf.filter(|nbf| now.saturating_add(leeway) < *nbf) {
        return Err(JwtError::NotYetValid { nbf, now, leeway });
    }
    let iat = date("iat", true)?;
    if let Some(iat) = iat.filter(|iat| now.saturating_add(leeway) < *iat) {
        return Err(JwtError::IssuedInFuture { iat, now, leeway });
    }
    let iss = match map.remove("iss") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(JwtError::InvalidClaim {
                claim: "iss",
                reason: "expected a string".into(),
            });
        }
    };
    map.remove("sub");
    Ok(Claims {
        sub: expect.subject.to_owned(),
        aud: map.remove("aud").map(audiences).unwrap_or_default(),
        exp,
        nbf,
        iat,
        iss,
        extra: map,
    })
}

/// Decodes the claims WITHOUT verifying (the Kubernetes validator reads a pod name from a token the API server already reviewed).
///
/// Only the shape is checked: size limit, three segments, a base64url JSON
/// object payload. Never use the result for an authorisation decision unless
/// the token was verified by other means.
pub fn decode_unverified(token: &str) -> Result<Map<String, Value>, JwtError> {
    let (_header, payload) = split_token(token)?;
    json_object(&decode_segment(payload, "payload")?, "payload")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    /// Verifies the signature only (the published vectors' payloads are not Sentry's claims),
    /// through the same key selection and provider as [`verify`].
    fn verify_signature(token: &str, jwks: &Jwks) -> Result<(Header, Vec<u8>), JwtError> {
        let (header, payload) = split_token(token)?;
        let header = parse_header(header)?;
        let (message, signature) = token.rsplit_once('.').unwrap_or_default();
        try_keys(jwks, &header, |key| {
            match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, header.alg) {
                Ok(true) => Ok(()),
                Ok(false) => Err(JwtError::BadSignature),
                Err(e) => Err(JwtError::Malformed(e.to_string())),
            }
        })?;
        Ok((header, decode_segment(payload, "payload")?))
    }

    // ---- Published vectors ----

    /// RFC 7515 A.3 (ES256); JWK from A.3.1.
    const RFC7515_A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const RFC7515_A3_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}"#;
    /// The payload of RFC 7515 A.2/A.3, CRLFs included.
    const RFC7515_PAYLOAD: &[u8] =
        b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

    /// RFC 7515 A.2 (RS256); JWK from A.2.1 (public part).
    const RFC7515_A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    /// RFC 8037 A.4 (Ed25519); JWK from A.2 (public part of A.1).
    const RFC8037_A4_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    const RFC8037_A2_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    /// Independent RSA vectors produced with the OpenSSL 3.0 CLI (2048-bit key,
    /// `openssl dgst -shaNNN -sign`, PSS with `rsa_pss_saltlen:digest`). Claims:
    /// sub = SUB, aud = AUD, exp = 4102444800 (2100-01-01).
    const OPENSSL_N: &str = "s32prxpW7QCQAcTGRcDCnhgusk97i8559iib4zOq4FDMl_YsELKRY9iJq0d_2apYCgiUJpGVQIU_I1KA61w0i2JznmFgtEq9-7SMH9dZNUxdBcno4gU76sMRAbSO_T2vIZIKmGAw9GWtxB7tN3kSjMupKe7LWk9gijngHd0AG7HSen21KLEl5kEYgFGDCa83fU3kWNDE7n60a5-_Is2hxzEQ6pTOxtCqer_vj4NUZzyXFjGMZV125EY8Ck1wYKwEa2VTUIw8-EODn1iMaTzAnFhihno3ym9DRxKEgPXO7pBwsIMVzbR-UYupCDJHtwjYpfZmh022CHPF3VLVBu0qdQ";
    const OPENSSL_TOKENS: [(&str, &str); 5] = [
        (
            "RS384",
            "eyJhbGciOiJSUzM4NCIsImtpZCI6Im9wZW5zc2wtcnNhIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L2FwcCIsImF1ZCI6InNwaWZmZTovL2V4YW1wbGUub3JnL25zL2RhcHItc3lzdGVtL2RhcHItc2VudHJ5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.Nj-rM5MWbX__bcxTauxsoebyExvPq66nK1pG8hK11kaZLKZxc5eHHAST2Wv7cLV-JQArAerq984slXd5iKzqYk_5pGjmPGKrMAKy5ufQyl6y5Ev-1YYaI7AbmYYHwVVF4c0DhcIm4z1ItaKNbSQUkjMIZteFGKd-CC6YfkKtMBJe08VrDPC8LfLIlUwVEQXPkI0IhRZkfCaVtJKMoV5KJ7vH63ObV1Wvka7GVqmCuFmy9wmV3a1KIy2lnyLub2dnyn_IXekMskPMLet9EPs1-a2_77BcP7a_djnW7hSusDTbfVssICokerApfEQaLQ27ofbfhsT2l8ekR0gQCoWknA",
        ),
        (
            "RS512",
            "eyJhbGciOiJSUzUxMiIsImtpZCI6Im9wZW5zc2wtcnNhIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L2FwcCIsImF1ZCI6InNwaWZmZTovL2V4YW1wbGUub3JnL25zL2RhcHItc3lzdGVtL2RhcHItc2VudHJ5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.n3vKstprQTLDbE76hK-BWqX7Wn-q7JV1Tk6zgDr-Zs7ED2r5cgRt4MQOrOPFRt841gbi6ADq9hYwUhPW5eGY5ArH2YZv4md4_Fl-p0R2TV7W1e67kbt9NRmgP7DhDhIzqhmEcEgmRBIY2ueLdr5gSOi9K1fCwpw9ZqCtQiKtpI-Za4xJYFMot0LnBKPBsbXnWcisTnRFSUb0xrq4vdBFV0oadpFWaQ7N7iVhnqyprDav9Yab3WTya6N5pWaid70CiSt5y2z_kO5bg0qargq2yk7Ljyn2XC3mXwaL9jwfFmaCpn3VRyn3vffKyjRbOZaXD66OIQZRaAZjXhm3pJLa5Q",
        ),
        (
            "PS256",
            "eyJhbGciOiJQUzI1NiIsImtpZCI6Im9wZW5zc2wtcnNhIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L2FwcCIsImF1ZCI6InNwaWZmZTovL2V4YW1wbGUub3JnL25zL2RhcHItc3lzdGVtL2RhcHItc2VudHJ5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.hsVwnmo4DsNESfcD2OvydOtB0DHpPoqDFQkcHk7ibvY2hQb1HwWea1DCbFuSwwKwYAoToLdWCtaJkcEqTksLMGIPaObrwg2QYuA9sT_QYp5xd2l_7jxYUJu4dIfwp0cyWwpfWAUI-Cwhj5Bd10-L09M2N9RB7umMqc6rw-_Q3g4Jjv7bVYMUdQVpVHikIWq9MJLe_dS7qNNra3NFcfXLMHJ99Ch0Kkl3IUP-qsmgdawyGRRtUK2sGSGD8I50GE-oeKne3KZDW3n92wfmZ4z-rrXIWLrFjHWEJ1D6gEijt60Tp3Rn-zBUa2NCdH1lSjQdpWy3EzZapBPUPOUtolCDDw",
        ),
        (
            "PS384",
            "eyJhbGciOiJQUzM4NCIsImtpZCI6Im9wZW5zc2wtcnNhIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L2FwcCIsImF1ZCI6InNwaWZmZTovL2V4YW1wbGUub3JnL25zL2RhcHItc3lzdGVtL2RhcHItc2VudHJ5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.dp0aT5annSvzMXsZn1gN13jm-u3bjy_2vTMo9QQgtdM3m_AvVK3cAVL9WT9GohzXyLKC1Ub6quntj3fECwWF4Uc5X1L5c17nPgCoCo2LVyY4ObAiqs0ib0nZ7upQPzLIMlQClszamrf-5psTvMeL9zUTvF2cBoUzmwvfQScbg9mPMZGWga4E_hH49htUo0iqm9kLE0dQydFMzvQBAnsMyVLg-1Iz9NTTw3NRNZIG_AsHs1SVVR1lZnlI-GR9gcvfhGdE3EOuZOm9aFCy3pmM2aUBiStRXPFq5vfjF8L1O2wUj3ZI8dzDKzZW6ReMRSeF0l_g-G8wV8YPbzE4UYcvwQ",
        ),
        (
            "PS512",
            "eyJhbGciOiJQUzUxMiIsImtpZCI6Im9wZW5zc2wtcnNhIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L2FwcCIsImF1ZCI6InNwaWZmZTovL2V4YW1wbGUub3JnL25zL2RhcHItc3lzdGVtL2RhcHItc2VudHJ5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.hnHSHroB5imww5oPVHNQCl9JWLcnlnaWrXgrgA6eCfeUGQTNOZYHn7YxQ3BzVpNL0UCM-Pp11g3P_zYf97OLsIaf5Uq7OySfniHj_VrN37cIo2fM-GiFKC5bvq9PPcLrosISJU5m3udR9wdPpSm7h4L-yqug0hkiELsR6euLh6lSw7pzM8wGSwpYqIl_QKpDS15hn99Cn000eItghnUZar5CJByOrBvNqne1YFi3VszI-8Zo4RbXirJs14eWOJcYTCBG3hoX03P6cgLo5HG2CayrThjdtgcgnKa5eFv6HWC974xXmtlIYY17DrhZM9APqO2JKucm224U4szmd2_7hg",
        ),
    ];

    const AUD: &str = "spiffe://example.org/ns/dapr-system/dapr-sentry";
    const SUB: &str = "spiffe://example.org/ns/default/app";
    const NOW: u64 = 1_700_000_000;

    fn expect() -> Expectations<'static> {
        Expectations {
            audience: AUD,
            subject: SUB,
            now: NOW,
            leeway: DEFAULT_LEEWAY_SECS,
        }
    }

    fn b64u(bytes: &[u8]) -> String {
        Base64UrlUnpadded::encode_string(bytes)
    }

    fn rsa_jwks(n: &str, kid: Option<&str>) -> Jwks {
        let mut key = json!({"kty": "RSA", "n": n, "e": "AQAB"});
        if let Some(kid) = kid {
            key["kid"] = json!(kid);
        }
        Jwks::from_json(json!({ "keys": [key] }).to_string().as_bytes()).unwrap()
    }

    /// Flips one bit of the decoded signature and re-encodes it.
    fn flip_signature_bit(token: &str) -> String {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut raw = Base64UrlUnpadded::decode_vec(sig).unwrap();
        raw[7] ^= 0x01;
        format!("{input}.{}", b64u(&raw))
    }

    #[test]
    fn rfc7515_a3_es256() {
        let jwks = Jwks::from_json(RFC7515_A3_JWKS.as_bytes()).unwrap();
        let (header, payload) = verify_signature(RFC7515_A3_TOKEN, &jwks).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid, None);
        assert_eq!(payload, RFC7515_PAYLOAD);
        assert_eq!(
            verify_signature(&flip_signature_bit(RFC7515_A3_TOKEN), &jwks).unwrap_err(),
            JwtError::BadSignature
        );
        // Through verify (jsonwebtoken's decode): the signature passes, the claims do not.
        assert_eq!(
            verify(RFC7515_A3_TOKEN, &jwks, &expect()).unwrap_err(),
            JwtError::MissingClaim("aud")
        );
        assert_eq!(
            verify(&flip_signature_bit(RFC7515_A3_TOKEN), &jwks, &expect()).unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn rfc7515_a2_rs256() {
        let jwks = rsa_jwks(RFC7515_A2_N, None);
        let (header, payload) = verify_signature(RFC7515_A2_TOKEN, &jwks).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(payload, RFC7515_PAYLOAD);
        assert_eq!(
            verify_signature(&flip_signature_bit(RFC7515_A2_TOKEN), &jwks).unwrap_err(),
            JwtError::BadSignature
        );
        assert_eq!(
            verify(RFC7515_A2_TOKEN, &jwks, &expect()).unwrap_err(),
            JwtError::MissingClaim("aud")
        );
        assert_eq!(
            verify(&flip_signature_bit(RFC7515_A2_TOKEN), &jwks, &expect()).unwrap_err(),
            JwtError::BadSignature
        );
        // A modulus with a leading zero octet is the same key.
        let mut n = vec![0u8];
        n.extend(Base64UrlUnpadded::decode_vec(RFC7515_A2_N).unwrap());
        let padded = rsa_jwks(&b64u(&n), None);
        assert!(verify_signature(RFC7515_A2_TOKEN, &padded).is_ok());
        // The RS256 token must not verify as another RSA algorithm.
        let (_, rest) = RFC7515_A2_TOKEN.split_once('.').unwrap();
        let as_ps256 = format!("{}.{rest}", b64u(br#"{"alg":"PS256"}"#));
        assert_eq!(
            verify_signature(&as_ps256, &jwks).unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn rfc8037_a4_ed25519() {
        let jwks = Jwks::from_json(RFC8037_A2_JWKS.as_bytes()).unwrap();
        let (header, payload) = verify_signature(RFC8037_A4_TOKEN, &jwks).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(payload, b"Example of Ed25519 signing");
        assert_eq!(
            verify_signature(&flip_signature_bit(RFC8037_A4_TOKEN), &jwks).unwrap_err(),
            JwtError::BadSignature
        );
        // The RFC payload is not JSON, so full verification refuses it.
        assert!(matches!(
            verify(RFC8037_A4_TOKEN, &jwks, &expect()),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn openssl_rsa_vectors() {
        let jwks = rsa_jwks(OPENSSL_N, Some("openssl-rsa"));
        for (alg, token) in OPENSSL_TOKENS {
            let (header, _) = verify_signature(token, &jwks).unwrap();
            assert_eq!(header.name, alg);
            assert_eq!(header.kid.as_deref(), Some("openssl-rsa"));
            let claims = verify(token, &jwks, &expect()).unwrap();
            assert_eq!(claims.exp, 4_102_444_800);
            assert_eq!(
                verify(&flip_signature_bit(token), &jwks, &expect()).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );
        }
        // Someone else's RSA key under the same kid: bad signature.
        let other = rsa_jwks(RFC7515_A2_N, Some("openssl-rsa"));
        assert_eq!(
            verify(OPENSSL_TOKENS[0].1, &other, &expect()).unwrap_err(),
            JwtError::BadSignature
        );
    }

    // ---- Minted tokens ----

    enum Signer {
        Es256(EcdsaKeyPair),
        Es384(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        fn es256() -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self::Es256(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }

        fn es384() -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self::Es384(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }

        fn ed25519() -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        fn alg(&self) -> &'static str {
            match self {
                Self::Es256(_) => "ES256",
                Self::Es384(_) => "ES384",
                Self::Ed(_) => "EdDSA",
            }
        }

        fn jwk(&self, kid: &str) -> Value {
            match self {
                Self::Es256(kp) | Self::Es384(kp) => {
                    let point = kp.public_key().as_ref();
                    let size = (point.len() - 1) / 2;
                    let crv = if size == 32 { "P-256" } else { "P-384" };
                    json!({"kty": "EC", "crv": crv, "kid": kid,
                        "x": b64u(&point[1..=size]), "y": b64u(&point[1 + size..])})
                }
                Self::Ed(kp) => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": b64u(kp.public_key().as_ref())}),
            }
        }

        fn sign_raw(&self, header: &Value, payload: &[u8]) -> String {
            let input = format!("{}.{}", b64u(header.to_string().as_bytes()), b64u(payload));
            let sig = match self {
                Self::Es256(kp) | Self::Es384(kp) => kp
                    .sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Self::Ed(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
            };
            format!("{input}.{}", b64u(&sig))
        }

        fn sign(&self, kid: &str, claims: &Value) -> String {
            let header = json!({"alg": self.alg(), "typ": "JWT", "kid": kid});
            self.sign_raw(&header, claims.to_string().as_bytes())
        }
    }

    fn jwks_of(keys: &[Value]) -> Jwks {
        Jwks::from_json(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn good_claims() -> Value {
        json!({"sub": SUB, "aud": AUD, "exp": NOW + 600, "nbf": NOW - 10,
            "iat": NOW - 10, "iss": "https://issuer.example", "custom": 7})
    }

    #[test]
    fn happy_path_every_minted_algorithm() {
        for signer in [Signer::es256(), Signer::es384(), Signer::ed25519()] {
            let jwks = jwks_of(&[signer.jwk("k1")]);
            let token = signer.sign("k1", &good_claims());
            let claims = verify(&token, &jwks, &expect()).unwrap();
            let provider = CryptoProvider::try_get_default().unwrap();
            assert!(std::ptr::eq(provider, &RING_PROVIDER));
            assert_eq!(claims.sub, SUB);
            assert_eq!(claims.aud, vec![AUD.to_owned()]);
            assert_eq!(claims.exp, NOW + 600);
            assert_eq!(claims.nbf, Some(NOW - 10));
            assert_eq!(claims.iat, Some(NOW - 10));
            assert_eq!(claims.iss.as_deref(), Some("https://issuer.example"));
            assert_eq!(claims.extra.len(), 1);
            assert_eq!(claims.extra["custom"], json!(7));
            // A tampered payload fails the signature.
            let (h, rest) = token.split_once('.').unwrap();
            let (_, s) = rest.split_once('.').unwrap();
            let mut forged = good_claims();
            forged["sub"] = json!("spiffe://example.org/ns/default/evil");
            let forged = format!("{h}.{}.{s}", b64u(forged.to_string().as_bytes()));
            assert_eq!(
                verify(&forged, &jwks, &expect()).unwrap_err(),
                JwtError::BadSignature,
                "{}",
                signer.alg()
            );
        }
    }

    fn with(claims: &[(&str, Value)], without: &[&str]) -> Value {
        let mut c = good_claims();
        for (k, v) in claims {
            c[*k] = v.clone();
        }
        for k in without {
            c.as_object_mut().unwrap().remove(*k);
        }
        c
    }

    fn check(claims: Value) -> Result<Claims, JwtError> {
        let signer = Signer::es256();
        let jwks = jwks_of(&[signer.jwk("k1")]);
        verify(&signer.sign("k1", &claims), &jwks, &expect())
    }

    #[test]
    fn expiry() {
        let leeway = DEFAULT_LEEWAY_SECS;
        assert_eq!(
            check(with(&[("exp", json!(NOW - leeway - 1))], &[])).unwrap_err(),
            JwtError::Expired {
                exp: NOW - leeway - 1,
                now: NOW,
                leeway
            }
        );
        // Within the leeway, and exactly at its edge, is accepted.
        assert!(check(with(&[("exp", json!(NOW - 60))], &[])).is_ok());
        assert!(check(with(&[("exp", json!(NOW - leeway))], &[])).is_ok());
        // Fractional seconds round down for exp.
        let frac = (NOW - leeway) as f64 - 0.5;
        assert!(matches!(
            check(with(&[("exp", json!(frac))], &[])),
            Err(JwtError::Expired { .. })
        ));
        assert_eq!(
            check(with(&[("exp", json!(NOW as f64 + 10.75))], &[]))
                .unwrap()
                .exp,
            NOW + 10
        );
        // Negative or beyond u64 (once read as "never expires"): not a usable expiry.
        for exp in [
            json!(-5),
            json!(1e30),
            json!([NOW + 600]),
            json!({"at": NOW + 600}),
        ] {
            assert!(
                matches!(
                    check(with(&[("exp", exp.clone())], &[])),
                    Err(JwtError::InvalidClaim { claim: "exp", .. })
                ),
                "{exp}"
            );
        }
        assert_eq!(
            check(with(&[], &["exp"])).unwrap_err(),
            JwtError::MissingClaim("exp")
        );
        assert!(matches!(
            check(with(&[("exp", json!("1700000600"))], &[])),
            Err(JwtError::InvalidClaim { claim: "exp", .. })
        ));
    }

    #[test]
    fn not_before_and_issued_at() {
        let leeway = DEFAULT_LEEWAY_SECS;
        assert_eq!(
            check(with(&[("nbf", json!(NOW + leeway + 1))], &[])).unwrap_err(),
            JwtError::NotYetValid {
                nbf: NOW + leeway + 1,
                now: NOW,
                leeway
            }
        );
        assert!(check(with(&[("nbf", json!(NOW + leeway))], &[])).is_ok());
        assert!(check(with(&[], &["nbf", "iat"])).is_ok());
        assert!(matches!(
            check(with(&[("nbf", json!(null))], &[])),
            Err(JwtError::InvalidClaim { claim: "nbf", .. })
        ));
        assert!(matches!(
            check(with(&[("iat", json!(NOW + leeway + 1))], &[])),
            Err(JwtError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn audience() {
        assert_eq!(
            check(with(&[("aud", json!("spiffe://other/sentry"))], &[])).unwrap_err(),
            JwtError::AudienceMismatch {
                expected: AUD.into(),
                found: vec!["spiffe://other/sentry".into()]
            }
        );
        let ok = check(with(&[("aud", json!(["a", AUD, "b"]))], &[])).unwrap();
        assert_eq!(ok.aud, vec!["a".to_owned(), AUD.to_owned(), "b".to_owned()]);
        assert!(matches!(
            check(with(&[("aud", json!(["a", "b"]))], &[])),
            Err(JwtError::AudienceMismatch { .. })
        ));
        assert!(matches!(
            check(with(&[("aud", json!([]))], &[])),
            Err(JwtError::AudienceMismatch { .. })
        ));
        assert_eq!(
            check(with(&[], &["aud"])).unwrap_err(),
            JwtError::MissingClaim("aud")
        );
        assert!(matches!(
            check(with(&[("aud", json!([AUD, 5]))], &[])),
            Err(JwtError::InvalidClaim { claim: "aud", .. })
        ));
        // Prefix / case variants do not match.
        assert!(check(with(&[("aud", json!(format!("{AUD}/x")))], &[])).is_err());
        assert!(check(with(&[("aud", json!(AUD.to_uppercase()))], &[])).is_err());
    }

    #[test]
    fn subject() {
        assert_eq!(
            check(with(
                &[("sub", json!("spiffe://example.org/ns/default/other"))],
                &[]
            ))
            .unwrap_err(),
            JwtError::SubjectMismatch {
                expected: SUB.into(),
                found: "spiffe://example.org/ns/default/other".into()
            }
        );
        assert!(check(with(&[("sub", json!(format!("{SUB} ")))], &[])).is_err());
        assert_eq!(
            check(with(&[], &["sub"])).unwrap_err(),
            JwtError::MissingClaim("sub")
        );
        for sub in [json!([SUB]), json!({"id": SUB}), json!(5), json!(null)] {
            assert!(
                matches!(
                    check(with(&[("sub", sub.clone())], &[])),
                    Err(JwtError::InvalidClaim { claim: "sub", .. })
                ),
                "{sub}"
            );
        }
    }

    #[test]
    fn claim_types_and_duplicates() {
        // Missing claims are named in a fixed order, whatever jsonwebtoken reports first.
        assert_eq!(
            check(with(&[], &["sub", "aud"])).unwrap_err(),
            JwtError::MissingClaim("aud")
        );
        assert_eq!(
            check(with(&[("aud", json!(7))], &["sub"])).unwrap_err(),
            JwtError::MissingClaim("sub")
        );
        assert_eq!(
            check(with(&[("nbf", json!([NOW]))], &[])).unwrap_err(),
            JwtError::InvalidClaim {
                claim: "nbf",
                reason: format!("expected a non-negative number of seconds, got [{NOW}]")
            }
        );
        assert_eq!(
            check(with(&[("aud", json!({"id": AUD}))], &[])).unwrap_err(),
            JwtError::InvalidClaim {
                claim: "aud",
                reason: format!(
                    "expected a string or an array of strings, got {{\"id\":\"{AUD}\"}}"
                )
            }
        );
        assert!(matches!(
            check(with(&[("iss", json!(["x"]))], &[])),
            Err(JwtError::InvalidClaim { claim: "iss", .. })
        ));
        // A member given twice is ambiguous: refused in the payload and in the header.
        let signer = Signer::es256();
        let jwks = jwks_of(&[signer.jwk("k1")]);
        let exp = NOW + 600;
        let twice = format!(r#"{{"sub":"{SUB}x","aud":"{AUD}","exp":{exp},"sub":"{SUB}"}}"#);
        let header = json!({"alg": "ES256", "kid": "k1"});
        assert!(matches!(
            verify(&signer.sign_raw(&header, twice.as_bytes()), &jwks, &expect()),
            Err(JwtError::Malformed(msg)) if msg.contains("duplicate")
        ));
        let input = format!(
            "{}.{}",
            b64u(br#"{"alg":"ES256","kid":"k1","kid":"k1"}"#),
            b64u(good_claims().to_string().as_bytes())
        );
        let sig = match &signer {
            Signer::Es256(kp) => kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap(),
            _ => unreachable!(),
        };
        let token = format!("{input}.{}", b64u(sig.as_ref()));
        assert!(matches!(
            verify(&token, &jwks, &expect()),
            Err(JwtError::Malformed(_))
        ));
        // Registered header members must have their registered types.
        let typ = json!({"alg": "ES256", "kid": "k1", "typ": 1});
        assert!(matches!(
            verify(
                &signer.sign_raw(&typ, good_claims().to_string().as_bytes()),
                &jwks,
                &expect()
            ),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn key_selection() {
        let a = Signer::es256();
        let b = Signer::ed25519();
        let jwks = jwks_of(&[a.jwk("a"), b.jwk("b")]);
        assert_eq!(jwks.len(), 2);
        // kid matches.
        assert!(verify(&a.sign("a", &good_claims()), &jwks, &expect()).is_ok());
        assert!(verify(&b.sign("b", &good_claims()), &jwks, &expect()).is_ok());
        // Unknown kid.
        assert_eq!(
            verify(&a.sign("zzz", &good_claims()), &jwks, &expect()).unwrap_err(),
            JwtError::UnknownKey {
                kid: Some("zzz".into()),
                alg: "ES256".into()
            }
        );
        // No kid: every compatible key is tried.
        let no_kid = b.sign_raw(
            &json!({"alg": "EdDSA"}),
            good_claims().to_string().as_bytes(),
        );
        assert!(verify(&no_kid, &jwks, &expect()).is_ok());
        // A kid naming another key's type: header ES256, key "b" is Ed25519.
        let confused = a.sign_raw(
            &json!({"alg": "ES256", "kid": "b"}),
            good_claims().to_string().as_bytes(),
        );
        assert_eq!(
            verify(&confused, &jwks, &expect()).unwrap_err(),
            JwtError::UnknownKey {
                kid: Some("b".into()),
                alg: "ES256".into()
            }
        );
        // Same kid, signed by a stranger.
        let stranger = Signer::es256();
        assert_eq!(
            verify(&stranger.sign("a", &good_claims()), &jwks, &expect()).unwrap_err(),
            JwtError::BadSignature
        );
        // A key whose own alg differs is not used.
        let mut pinned = a.jwk("a");
        pinned["alg"] = json!("ES384");
        assert!(Jwks::from_json(json!({ "keys": [pinned] }).to_string().as_bytes()).is_err());
        let mut ps = Value::Object(Map::new());
        ps["keys"] =
            json!([{"kty": "RSA", "kid": "r", "alg": "PS256", "n": OPENSSL_N, "e": "AQAB"}]);
        let ps_jwks = Jwks::from_json(ps.to_string().as_bytes()).unwrap();
        let rs384 = OPENSSL_TOKENS[0].1;
        let rs384_kidless = format!(
            "{}.{}",
            b64u(br#"{"alg":"RS384"}"#),
            rs384.split_once('.').unwrap().1
        );
        assert!(matches!(
            verify_signature(&rs384_kidless, &ps_jwks),
            Err(JwtError::UnknownKey { kid: None, .. })
        ));
        // A key with use=enc is not used.
        let mut enc = a.jwk("a");
        enc["use"] = json!("enc");
        let mixed = jwks_of(&[enc, b.jwk("b")]);
        assert_eq!(mixed.len(), 1);
        assert!(matches!(
            verify(&a.sign("a", &good_claims()), &mixed, &expect()),
            Err(JwtError::UnknownKey { .. })
        ));
        let mut sig = a.jwk("a");
        sig["use"] = json!("sig");
        sig["key_ops"] = json!(["verify"]);
        assert!(verify(&a.sign("a", &good_claims()), &jwks_of(&[sig]), &expect()).is_ok());
    }

    #[test]
    fn refused_algorithms_and_headers() {
        let a = Signer::es256();
        let mut keys = vec![a.jwk("a")];
        keys.push(json!({"kty": "oct", "kid": "h", "k": b64u(b"secret")}));
        let jwks = jwks_of(&keys);
        assert_eq!(jwks.len(), 1, "the HMAC key is skipped");
        let payload = b64u(good_claims().to_string().as_bytes());

        let none = format!("{}.{payload}.", b64u(br#"{"alg":"none"}"#));
        assert_eq!(
            verify(&none, &jwks, &expect()).unwrap_err(),
            JwtError::UnsupportedAlgorithm("none".into())
        );
        // HS256 keyed with the secret from the oct key (the classic confusion).
        let input = format!("{}.{payload}", b64u(br#"{"alg":"HS256","kid":"h"}"#));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let tag = ring::hmac::sign(&key, input.as_bytes());
        let hs = format!("{input}.{}", b64u(tag.as_ref()));
        assert_eq!(
            verify(&hs, &jwks, &expect()).unwrap_err(),
            JwtError::UnsupportedAlgorithm("HS256".into())
        );
        for alg in ["HS384", "HS512", "ES512", "es256", "RSA-OAEP", ""] {
            let t = format!(
                "{}.{payload}.AAAA",
                b64u(json!({"alg": alg}).to_string().as_bytes())
            );
            assert_eq!(
                verify(&t, &jwks, &expect()).unwrap_err(),
                JwtError::UnsupportedAlgorithm(alg.into())
            );
        }
        // crit is refused even on a correctly signed token.
        let crit = a.sign_raw(
            &json!({"alg": "ES256", "kid": "a", "crit": ["exp"], "exp": 1}),
            good_claims().to_string().as_bytes(),
        );
        assert!(matches!(
            verify(&crit, &jwks, &expect()),
            Err(JwtError::CriticalHeader(_))
        ));
        // Even the one extension jsonwebtoken understands (RFC 7797 b64, here a no-op).
        let b64 = a.sign_raw(
            &json!({"alg": "ES256", "kid": "a", "crit": ["b64"], "b64": true}),
            good_claims().to_string().as_bytes(),
        );
        assert!(matches!(
            verify(&b64, &jwks, &expect()),
            Err(JwtError::CriticalHeader(_))
        ));
        // typ is ignored (documented choice).
        let typ = a.sign_raw(
            &json!({"alg": "ES256", "kid": "a", "typ": "JOSE"}),
            good_claims().to_string().as_bytes(),
        );
        assert!(verify(&typ, &jwks, &expect()).is_ok());
        // Non-string alg / kid.
        for h in [
            json!({"alg": 1}),
            json!({"kid": "a"}),
            json!({"alg": "ES256", "kid": 3}),
        ] {
            let t = format!("{}.{payload}.AAAA", b64u(h.to_string().as_bytes()));
            assert!(matches!(
                verify(&t, &jwks, &expect()),
                Err(JwtError::Malformed(_))
            ));
        }
    }

    #[test]
    fn garbage_tokens() {
        let a = Signer::es256();
        let jwks = jwks_of(&[a.jwk("a")]);
        let good = a.sign("a", &good_claims());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let big = "a".repeat(20 * 1024);
        let cases: Vec<String> = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "nodots".into(),
            "one.dot".into(),
            format!("{h}.{p}.{s}.extra"),
            format!("{h}.{p}"),
            format!("{h}!.{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}==="),
            format!(" {good}"),
            format!("{good}\n"),
            format!("{}.{p}.{s}", b64u(b"{not json")),
            format!("{}.{p}.{s}", b64u(b"[\"alg\"]")),
            format!("{h}.{}.{s}", b64u(b"not json")),
            format!("{h}.{}.{s}", b64u(b"42")),
            format!("{h}.{p}.{}", b64u(&[0u8; 3])),
            format!("{h}.{p}.{}", b64u(&[0u8; 64])),
            format!("{h}.{p}."),
            "\u{0}\u{ffff}.\u{1F600}.é".into(),
            big.clone(),
            format!("{h}.{big}.{s}"),
        ];
        for case in &cases {
            assert!(verify(case, &jwks, &expect()).is_err(), "{case:?}");
            assert!(verify_signature(case, &jwks).is_err(), "{case:?}");
        }
        assert_eq!(
            verify(&big, &jwks, &expect()).unwrap_err(),
            JwtError::TooLarge {
                len: 20 * 1024,
                max: MAX_TOKEN_BYTES
            }
        );
        assert!(matches!(
            decode_unverified(&big),
            Err(JwtError::TooLarge { .. })
        ));
        assert!(matches!(
            verify("", &jwks, &expect()),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            verify("a.b.c.d", &jwks, &expect()),
            Err(JwtError::Malformed(_))
        ));
        // Deterministic mutation fuzzing: no panic; no forged acceptance.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ABCxyz019-_.=+/ \0\xff";
        for _ in 0..3000 {
            let mut bytes = good.clone().into_bytes();
            for _ in 0..(1 + next() % 3) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = alphabet[(next() as usize) % alphabet.len()];
            }
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            let _ = decode_unverified(&mutated);
            if let Ok(claims) = verify(&mutated, &jwks, &expect()) {
                // Only an encoding-equivalent token may still verify.
                assert_eq!(claims.sub, SUB);
            }
        }
    }

    #[test]
    fn jwks_parsing() {
        let a = Signer::es256();
        let mut with_private = a.jwk("a");
        with_private["d"] = json!(b64u(&[1u8; 32]));
        let mixed = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": "WAT", "n": 5},
            {"kty": "RSA", "n": b64u(&[0xC3; 128]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "alg": "HS256", "x": "AA", "y": "AA"},
            with_private
        ]});
        let jwks = Jwks::from_json(mixed.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.len(), 1);
        assert!(verify(&a.sign("a", &good_claims()), &jwks, &expect()).is_ok());
        assert!(!format!("{jwks:?}").contains(&b64u(&[1u8; 32])));

        let bad = |doc: Value| match Jwks::from_json(doc.to_string().as_bytes()) {
            Err(JwtError::BadJwks(msg)) => msg,
            other => panic!("expected BadJwks for {doc}, got {other:?}"),
        };
        bad(json!({"keys": []}));
        bad(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
        bad(json!({"keys": {}}));
        bad(json!({"nokeys": []}));
        bad(json!([1, 2]));
        bad(json!({"keys": [1]}));
        bad(json!({"keys": [{"crv": "P-256"}]}));
        let short = bad(json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "s", "x": b64u(&[1; 31]), "y": b64u(&[1; 32])}
        ]}));
        assert!(
            short.contains("kid \"s\"") && short.contains("32 bytes"),
            "{short}"
        );
        bad(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64u(&[1; 32])}]}));
        bad(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "y": "!!"}]}));
        bad(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64u(&[1; 31])}]}));
        bad(json!({"keys": [{"kty": "RSA", "n": b64u(&[0; 300]), "e": "AQAB"}]}));
        bad(json!({"keys": [{"kty": "RSA", "e": "AQAB"}]}));
        bad(json!({"keys": [{"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "alg": "ES256"}]}));
        assert!(Jwks::from_json(b"").is_err());
        assert!(Jwks::from_json(b"\xff\xfe").is_err());
        assert!(Jwks::from_json(&[b'{'; 5000]).is_err());
    }

    #[test]
    fn load_sources() {
        let inline = Jwks::load(RFC7515_A3_JWKS).unwrap();
        assert_eq!(inline.len(), 1);
        assert!(verify_signature(RFC7515_A3_TOKEN, &inline).is_ok());

        let encoded = Base64::encode_string(RFC8037_A2_JWKS.as_bytes());
        let from_b64 = Jwks::load(&encoded).unwrap();
        assert!(verify_signature(RFC8037_A4_TOKEN, &from_b64).is_ok());
        let wrapped: String = encoded
            .as_bytes()
            .chunks(20)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert!(Jwks::load(&wrapped).is_ok());

        let dir = std::env::temp_dir();
        let unique = format!(
            "sigil-jwt-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let json_path = dir.join(format!("{unique}.json"));
        let b64_path = dir.join(format!("{unique}.b64"));
        std::fs::write(&json_path, format!("\n{RFC7515_A3_JWKS}\n")).unwrap();
        std::fs::write(&b64_path, format!("{encoded}\n")).unwrap();
        let from_file = Jwks::load(json_path.to_str().unwrap());
        let from_b64_file = Jwks::load(b64_path.to_str().unwrap());
        std::fs::write(&json_path, "{\"keys\": 3}").unwrap();
        let broken_file = Jwks::load(json_path.to_str().unwrap());
        let _ = std::fs::remove_file(&json_path);
        let _ = std::fs::remove_file(&b64_path);
        assert!(verify_signature(RFC7515_A3_TOKEN, &from_file.unwrap()).is_ok());
        assert!(verify_signature(RFC8037_A4_TOKEN, &from_b64_file.unwrap()).is_ok());
        match broken_file {
            Err(JwtError::BadJwks(msg)) => assert!(msg.contains(&unique), "{msg}"),
            other => panic!("{other:?}"),
        }

        let missing = dir.join(format!("{unique}-missing.json"));
        match Jwks::load(missing.to_str().unwrap()) {
            Err(JwtError::BadJwks(msg)) => assert!(msg.contains("does not exist"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(Jwks::load("https://example.org/jwks.json").is_err());
        assert!(Jwks::load("").is_err());
        assert!(Jwks::load("   ").is_err());
        assert!(Jwks::load("not base64 at all").is_err());
        assert!(Jwks::load(&Base64::encode_string(b"[1]")).is_err());
        assert!(Jwks::load("{").is_err());
    }

    #[test]
    fn decode_unverified_reads_claims() {
        let claims = decode_unverified(RFC7515_A2_TOKEN).unwrap();
        assert_eq!(claims["iss"], json!("joe"));
        assert_eq!(claims["exp"], json!(1_300_819_380));
        // The signature is not looked at.
        let forged = format!(
            "{}.{}.bm9wZQ",
            b64u(br#"{"alg":"none"}"#),
            b64u(br#"{"kubernetes.io":{"pod":{"name":"p"}}}"#)
        );
        assert_eq!(
            decode_unverified(&forged).unwrap()["kubernetes.io"]["pod"]["name"],
            json!("p")
        );
        assert!(decode_unverified("").is_err());
        assert!(decode_unverified("a.b").is_err());
        assert!(decode_unverified(RFC8037_A4_TOKEN).is_err());
        assert!(decode_unverified(&format!("x.{}.y", b64u(b"[]"))).is_err());
    }

    #[test]
    fn error_messages_carry_context() {
        let e = JwtError::Expired {
            exp: 10,
            now: 400,
            leeway: 300,
        };
        assert_eq!(e.to_string(), "token expired at 10 (now 400, leeway 300s)");
        let e = JwtError::UnknownKey {
            kid: Some("k".into()),
            alg: "ES256".into(),
        };
        assert!(e.to_string().contains("\"k\"") && e.to_string().contains("ES256"));
    }
}
