//! PKCS#10 certificate signing requests (RFC 2986): built into a caller buffer through a
//! [`Signer`], and parsed with their self-signature checked.
//!
//! The request Sigil builds is the one Dapr sends: an empty subject and the workload's public
//! key, plus (optionally) its SPIFFE ID as a critical URI subjectAltName inside an
//! extensionRequest attribute (critical because the subject is empty, RFC 5280 §4.2.1.6).

use crate::crypto::{
    AlgorithmError, PublicKey, Scheme, SignError, SignatureError, SignatureVerifier, Signer,
    MAX_SIGNATURE_LEN,
};
use crate::der::{self, header_len, oid, tag, DerError, Reader, Writer};
use crate::names::GeneralNames;
use crate::spiffe::SpiffeId;

/// Why a CSR could not be built or was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The DER structure is malformed.
    Der(DerError),
    /// The version is not 0 (v1), the only one RFC 2986 defines.
    UnsupportedVersion,
    /// The key or signature algorithm is not supported, or the key is invalid.
    Algorithm(AlgorithmError),
    /// The signature algorithm does not fit the key in the request.
    AlgorithmMismatch,
    /// The self-signature does not verify.
    BadSignature(SignatureError),
    /// The extensionRequest attribute, or its subjectAltName, is malformed.
    BadExtensionRequest,
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The signer failed.
    Sign(SignError),
}

impl From<DerError> for Error {
    fn from(e: DerError) -> Self {
        Self::Der(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Der(e) => write!(f, "malformed certificate signing request: {e}"),
            Self::UnsupportedVersion => f.write_str("CSR version is not v1 (0)"),
            Self::Algorithm(e) => write!(f, "CSR: {e}"),
            Self::AlgorithmMismatch => f.write_str("CSR signature algorithm does not fit its key"),
            Self::BadSignature(e) => write!(f, "CSR self-signature: {e}"),
            Self::BadExtensionRequest => f.write_str("CSR extensionRequest is malformed"),
            Self::BufferTooSmall { needed } => {
                write!(f, "CSR buffer too small: {needed} bytes needed")
            }
            Self::Sign(e) => write!(f, "signing the CSR: {e}"),
        }
    }
}

impl core::error::Error for Error {}

/// Longest CSR [`Builder::build`] writes with a P-256 key and no SPIFFE ID.
pub const MAX_CSR_LEN_NO_SAN: usize = 4 + 3 + 2 + 91 + 2 + 12 + 3 + MAX_SIGNATURE_LEN + 4;

/// Builds a CSR.
#[derive(Clone, Copy, Debug, Default)]
pub struct Builder<'a> {
    spiffe_id: Option<SpiffeId<'a>>,
}

impl<'a> Builder<'a> {
    /// A request with an empty subject and no extensions, as Dapr's sidecar sends.
    pub const fn new() -> Self {
        Self { spiffe_id: None }
    }

    /// Asks for `id` as the certificate's URI SAN.
    #[must_use]
    pub const fn with_spiffe_id(mut self, id: SpiffeId<'a>) -> Self {
        self.spiffe_id = Some(id);
        self
    }

    /// Bytes [`Builder::build`] needs at most for this request and a signer with `key`.
    pub fn buffer_len(&self, key: PublicKey<'_>) -> usize {
        let info = self.info_content_len(key);
        let tbs = header_len(info) + info;
        let body = tbs + 12 + header_len(MAX_SIGNATURE_LEN + 1) + MAX_SIGNATURE_LEN + 1;
        header_len(body) + body
    }

    /// Builds the request, signed by `signer`, into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] naming the size needed ([`Builder::buffer_len`] is always
    /// enough); [`Error::AlgorithmMismatch`] if the signer's scheme is not one X.509 uses with
    /// its key; [`Error::Sign`] if the signer fails.
    pub fn build<'b>(
        &self,
        signer: &mut impl Signer,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], Error> {
        let key = signer.public_key();
        let needed = self.buffer_len(key);
        if buf.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        let scheme = signer.scheme();
        if !matches!(
            (scheme, key),
            (Scheme::EcdsaP256Sha256, PublicKey::EcP256(_))
                | (Scheme::Ed25519, PublicKey::Ed25519(_))
        ) {
            // X.509 wants DER ECDSA signatures; a fixed-size (JWS) signer cannot sign a CSR.
            return Err(Error::AlgorithmMismatch);
        }
        let tbs_len = {
            let mut w = Writer::new(buf);
            self.write_info(&mut w, key);
            w.finish()
                .map_err(|needed| Error::BufferTooSmall { needed })?
                .len()
        };
        let mut sig_buf = [0u8; MAX_SIGNATURE_LEN];
        let sig = {
            let tbs = buf.get(..tbs_len).ok_or(Error::BufferTooSmall { needed })?;
            signer.sign(tbs, &mut sig_buf).map_err(Error::Sign)?
        };
        let alg = scheme.algorithm_identifier();
        let bits_len = sig.len() + 1;
        let body = tbs_len + alg.len() + header_len(bits_len) + bits_len;
        let outer_header = header_len(body) - 1;
        let total = 1 + outer_header + body;
        if total > buf.len() {
            return Err(Error::BufferTooSmall { needed: total });
        }
        buf.copy_within(..tbs_len, 1 + outer_header);
        let mut head = Writer::new(buf);
        head.header(tag::SEQUENCE, body);
        head.finish()
            .map_err(|needed| Error::BufferTooSmall { needed })?;
        let tail = buf
            .get_mut(1 + outer_header + tbs_len..total)
            .ok_or(Error::BufferTooSmall { needed: total })?;
        let mut w = Writer::new(tail);
        w.bytes(alg);
        w.header(tag::BIT_STRING, bits_len);
        w.bytes(&[0]);
        w.bytes(sig);
        w.finish()
            .map_err(|needed| Error::BufferTooSmall { needed })?;
        buf.get(..total)
            .ok_or(Error::BufferTooSmall { needed: total })
    }

    fn spki_content_len(key: PublicKey<'_>) -> usize {
        let (alg, bits) = spki_parts(key);
        alg.len() + header_len(bits + 1) + bits + 1
    }

    fn extension_request_len(&self) -> Option<usize> {
        let id = self.spiffe_id?;
        let uri = id.as_str().len();
        let gn = header_len(uri) + uri;
        let san = header_len(gn) + gn;
        let ext = 5 + 3 + header_len(san) + san;
        let exts = header_len(ext) + ext;
        let set = header_len(exts) + exts;
        Some(11 + header_len(set) + set)
    }

    fn info_content_len(&self, key: PublicKey<'_>) -> usize {
        let spki = Self::spki_content_len(key);
        let attrs = self
            .extension_request_len()
            .map_or(0, |a| header_len(a) + a);
        3 + 2 + header_len(spki) + spki + header_len(attrs) + attrs
    }

    fn write_info(&self, w: &mut Writer<'_>, key: PublicKey<'_>) {
        w.header(tag::SEQUENCE, self.info_content_len(key));
        w.tlv(tag::INTEGER, &[0]);
        w.tlv(tag::SEQUENCE, &[]);
        let (alg, bits) = spki_parts(key);
        w.header(tag::SEQUENCE, Self::spki_content_len(key));
        w.bytes(alg);
        w.header(tag::BIT_STRING, bits + 1);
        w.bytes(&[0]);
        w.bytes(key.as_bytes());
        match (self.spiffe_id, self.extension_request_len()) {
            (Some(id), Some(attr)) => {
                let uri = id.as_str();
                let gn = header_len(uri.len()) + uri.len();
                let san = header_len(gn) + gn;
                let ext = 5 + 3 + header_len(san) + san;
                let exts = header_len(ext) + ext;
                let set = header_len(exts) + exts;
                w.header(tag::context(0), header_len(attr) + attr);
                w.header(tag::SEQUENCE, attr);
                w.tlv(tag::OID, oid::EXTENSION_REQUEST);
                w.header(tag::SET, set);
                w.header(tag::SEQUENCE, exts);
                w.header(tag::SEQUENCE, ext);
                w.tlv(tag::OID, oid::SUBJECT_ALT_NAME);
                w.tlv(tag::BOOLEAN, &[0xff]);
                w.header(tag::OCTET_STRING, san);
                w.header(tag::SEQUENCE, gn);
                w.tlv(tag::context_primitive(6), uri.as_bytes());
            }
            _ => w.tlv(tag::context(0), &[]),
        }
    }
}

/// The AlgorithmIdentifier TLV and key length of a SubjectPublicKeyInfo.
fn spki_parts(key: PublicKey<'_>) -> (&'static [u8], usize) {
    const EC_P256: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    const ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
    match key {
        PublicKey::EcP256(p) => (EC_P256, p.len()),
        PublicKey::Ed25519(k) => (ED25519, k.len()),
    }
}

/// A parsed, structurally checked CSR. Its signature is checked by
/// [`Csr::verify_signature`]; nothing in it should be trusted before that.
#[derive(Clone, Copy, Debug)]
pub struct Csr<'a> {
    der: &'a [u8],
    info: &'a [u8],
    subject: &'a [u8],
    public_key: PublicKey<'a>,
    scheme: Scheme,
    signature: &'a [u8],
    subject_alt_name: Option<GeneralNames<'a>>,
}

impl<'a> Csr<'a> {
    /// Parses one DER CSR; `der` must hold exactly that.
    ///
    /// # Errors
    ///
    /// [`Error::Der`] for malformed DER, [`Error::UnsupportedVersion`],
    /// [`Error::Algorithm`] for keys and signature algorithms other than P-256/ECDSA-SHA256 and
    /// Ed25519, [`Error::AlgorithmMismatch`], [`Error::BadExtensionRequest`].
    pub fn parse(der: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(der::parse_exact(der, tag::SEQUENCE)?);
        let (info_value, info) = r.read_tlv(tag::SEQUENCE)?;
        let alg = r.read(tag::SEQUENCE)?;
        let signature = der::bit_string_octets(r.read(tag::BIT_STRING)?)?;
        r.finish()?;
        let scheme = Scheme::from_algorithm_identifier(alg).map_err(Error::Algorithm)?;

        let mut i = Reader::new(info_value);
        if i.read(tag::INTEGER)? != [0] {
            return Err(Error::UnsupportedVersion);
        }
        let (_, subject) = i.read_tlv(tag::SEQUENCE)?;
        let public_key = PublicKey::from_spki(i.read(tag::SEQUENCE)?).map_err(Error::Algorithm)?;
        let attributes = i.read(tag::context(0))?;
        i.finish()?;
        if !matches!(
            (scheme, public_key),
            (Scheme::EcdsaP256Sha256, PublicKey::EcP256(_))
                | (Scheme::Ed25519, PublicKey::Ed25519(_))
        ) {
            return Err(Error::AlgorithmMismatch);
        }
        let subject_alt_name =
            Self::parse_attributes(attributes).map_err(|_| Error::BadExtensionRequest)?;
        Ok(Self {
            der,
            info,
            subject,
            public_key,
            scheme,
            signature,
            subject_alt_name,
        })
    }

    fn parse_attributes(attributes: &'a [u8]) -> Result<Option<GeneralNames<'a>>, DerError> {
        let mut san = None;
        let mut a = Reader::new(attributes);
        while !a.is_empty() {
            let mut attr = Reader::new(a.read(tag::SEQUENCE)?);
            let id = attr.read(tag::OID)?;
            let values = attr.read(tag::SET)?;
            attr.finish()?;
            if id != oid::EXTENSION_REQUEST {
                continue; // challengePassword and friends: not used.
            }
            let exts = der::parse_exact(values, tag::SEQUENCE)?;
            let mut e = Reader::new(exts);
            while !e.is_empty() {
                let mut ext = Reader::new(e.read(tag::SEQUENCE)?);
                let ext_id = ext.read(tag::OID)?;
                if let Some(b) = ext.read_optional(tag::BOOLEAN)? {
                    der::boolean(b)?;
                }
                let value = ext.read(tag::OCTET_STRING)?;
                ext.finish()?;
                if ext_id == oid::SUBJECT_ALT_NAME {
                    if san.is_some() {
                        return Err(DerError::TrailingData);
                    }
                    san = Some(GeneralNames::parse(der::parse_exact(
                        value,
                        tag::SEQUENCE,
                    )?)?);
                }
            }
        }
        Ok(san)
    }

    /// Checks the self-signature with `verifier`. Call this before using anything else.
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`] with the verifier's reason.
    pub fn verify_signature(&self, verifier: &impl SignatureVerifier) -> Result<(), Error> {
        verifier
            .verify(self.scheme, self.public_key, self.info, self.signature)
            .map_err(Error::BadSignature)
    }

    /// The whole request.
    pub const fn der(&self) -> &'a [u8] {
        self.der
    }

    /// The subject `Name`, whole TLV (`30 00` when empty).
    pub const fn subject(&self) -> &'a [u8] {
        self.subject
    }

    /// The requested public key.
    pub const fn public_key(&self) -> PublicKey<'a> {
        self.public_key
    }

    /// The signature scheme.
    pub const fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The subjectAltName requested in an extensionRequest, if any.
    pub const fn subject_alt_names(&self) -> Option<GeneralNames<'a>> {
        self.subject_alt_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCryptoSignatureVerifier;
    use crate::key::SoftwareKey;
    use crate::names::GeneralName;
    use proptest::prelude::*;

    fn key(seed: u8) -> SoftwareKey {
        let bytes = [seed.max(1); 32];
        SoftwareKey::from_signing_key(p256::ecdsa::SigningKey::from_slice(&bytes).unwrap())
    }

    #[test]
    fn build_parse_verify() {
        let mut k = key(7);
        let mut buf = [0u8; 512];
        let der = Builder::new().build(&mut k, &mut buf).unwrap().to_vec();
        assert!(der.len() <= MAX_CSR_LEN_NO_SAN);
        let csr = Csr::parse(&der).unwrap();
        csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
        assert_eq!(csr.subject(), &[0x30, 0x00]);
        assert!(csr.subject_alt_names().is_none());
        assert_eq!(csr.public_key(), k.public_key());
    }

    #[test]
    fn tampering_is_detected() {
        let mut k = key(9);
        let id = SpiffeId::parse("spiffe://example.org/ns/default/app").unwrap();
        let mut buf = [0u8; 512];
        let der = Builder::new()
            .with_spiffe_id(id)
            .build(&mut k, &mut buf)
            .unwrap()
            .to_vec();
        let pos = der.windows(3).position(|w| w == b"app").unwrap();
        let mut bad = der.clone();
        bad[pos] = b'b';
        let csr = Csr::parse(&bad).unwrap();
        assert!(matches!(
            csr.verify_signature(&RustCryptoSignatureVerifier),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn small_buffer_names_size() {
        let mut k = key(3);
        let mut buf = [0u8; 16];
        let need = Builder::new().buffer_len(k.public_key());
        assert_eq!(
            Builder::new().build(&mut k, &mut buf),
            Err(Error::BufferTooSmall { needed: need })
        );
    }

    proptest! {
        #[test]
        fn round_trip(seed in 1u8..=254, segs in proptest::collection::vec("[a-zA-Z0-9._-]{1,40}", 0..6), td in "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,20}){0,3}") {
            prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
            let mut idbuf = [0u8; 2048];
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let id = crate::spiffe::write_id(&td, &path, &mut idbuf).unwrap();
            let mut k = key(seed);
            let mut buf = vec![0u8; Builder::new().with_spiffe_id(id).buffer_len(k.public_key())];
            let der = Builder::new().with_spiffe_id(id).build(&mut k, &mut buf).unwrap();
            let csr = Csr::parse(der).unwrap();
            csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
            let names: Vec<_> = csr.subject_alt_names().unwrap().iter().collect();
            prop_assert_eq!(names, vec![GeneralName::Uri(id.as_str())]);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Csr::parse(&bytes);
        }
    }
}
