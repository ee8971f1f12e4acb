//! Helpers shared by Sigil's cross-crate tests.

pub mod load;

/// A process's peak resident set (`VmHWM` in `/proc/<pid>/status`), in MB; 0 if unreadable.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// rcgen fixtures in Dapr's certificate profiles (the spec's certificate table), shared by the
/// tests and benches. Times are Unix seconds.
pub mod fixtures {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
    };

    /// Unix seconds as rcgen's time type.
    pub fn unix(secs: u64) -> time::OffsetDateTime {
        i64::try_from(secs)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .expect("a representable time")
    }

    /// A fresh ECDSA P-256 key.
    pub fn p256_key() -> KeyPair {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key generation")
    }

    /// A CA certificate (root or issuer) as Sentry makes them: subject `O=<org>`, CA without a
    /// path length limit, keyCertSign + digitalSignature + cRLSign, an authorityKeyIdentifier,
    /// valid over `[not_before, not_after]`.
    pub fn ca_params(org: &str, not_before: u64, not_after: u64) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, org);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        p.not_before = unix(not_before);
        p.not_after = unix(not_after);
        p.use_authority_key_identifier_extension = true;
        p
    }

    /// A workload certificate as Sentry issues it: empty subject, the SPIFFE ID as the one
    /// (critical) URI SAN, serverAuth + clientAuth, digitalSignature, an
    /// authorityKeyIdentifier, valid over `[not_before, not_after]`.
    pub fn workload_params(spiffe_id: &str, not_before: u64, not_after: u64) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(
            spiffe_id.try_into().expect("a SPIFFE ID is an IA5 string"),
        )];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = unix(not_before);
        p.not_after = unix(not_after);
        p.use_authority_key_identifier_extension = true;
        p
    }

    /// A raw P-256 point (uncompressed SEC1, as a CSR carries it) as rcgen's public-key input,
    /// so a fake CA can issue for the key a workload asked with.
    pub struct Point(pub Vec<u8>);

    impl rcgen::PublicKeyData for Point {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &PKCS_ECDSA_P256_SHA256
        }
    }
}
