//! The identity as files for the app (`--identity-dir`): `key.pem` (0600), `cert.pem` and
//! `ca.pem`, each replaced atomically, the key first.

use sigil_core::pem;
use zeroize::Zeroizing;

/// Writes the key, the chain and the anchors into `dir`.
pub(super) fn write_files(
    dir: &std::path::Path,
    chain: &[Vec<u8>],
    key_pkcs8: &[u8],
    anchors: &[Vec<u8>],
) -> Result<(), crate::pki::InputError> {
    let pem_all = |ders: &[Vec<u8>]| -> String {
        ders.iter()
            .map(|d| crate::pki::to_pem(pem::Label::Certificate, d))
            .collect()
    };
    std::fs::create_dir_all(dir).map_err(|source| crate::pki::InputError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let key = Zeroizing::new(crate::pki::to_pem(pem::Label::PrivateKey, key_pkcs8));
    // The key first, then the chain that matches it (an app reading both in between sees the
    // old chain with the new key only for an instant; it should re-read on failure).
    crate::pki::write_atomic(&dir.join("key.pem"), key.as_bytes(), 0o600, true)?;
    crate::pki::write_atomic(
        &dir.join("cert.pem"),
        pem_all(chain).as_bytes(),
        0o644,
        true,
    )?;
    crate::pki::write_atomic(
        &dir.join("ca.pem"),
        pem_all(anchors).as_bytes(),
        0o644,
        true,
    )
}

/// Writes the JWT-SVID for the app as `jwt_svid.token` (0600: a bearer token), Dapr's name.
pub(super) fn write_jwt(dir: &std::path::Path, jwt: &str) -> Result<(), crate::pki::InputError> {
    std::fs::create_dir_all(dir).map_err(|source| crate::pki::InputError::Write {
        path: dir.to_owned(),
        source,
    })?;
    crate::pki::write_atomic(&dir.join("jwt_svid.token"), jwt.as_bytes(), 0o600, true)
}
