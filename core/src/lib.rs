//! # sigil-core
//!
//! The `no_std`, no-alloc heart of Sigil: everything a workload needs to prove and check
//! identity, written once for a Cortex-M device and a server sidecar alike.
//!
//! - [`spiffe`]: SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and Dapr's
//!   `spiffe://<td>/ns/<namespace>/<app-id>` form.
//! - [`pem`]: PEM blocks decoded into and encoded from caller buffers; bundles iterated
//!   without allocation.
//! - [`key`]: P-256 private keys in PKCS#8 and SEC1 form, and the [`crypto::Signer`] they
//!   implement.
//! - [`csr`]: PKCS#10 requests built into a caller buffer and parsed with their self-signature
//!   checked.
//! - [`cert`]: zero-copy, checked X.509 v3 parsing with the extensions Dapr and SPIFFE use.
//! - [`chain`]: RFC 5280 path building and validation with a work budget, against a
//!   fixed-capacity [`chain::TrustBundle`].
//! - [`profile`]: the checks a workload runs on the certificate Sentry issues it.
//! - [`rotation`]: the sans-IO machine that obtains, validates and renews an identity, and
//!   [`bundle`]: a trust bundle that owns its anchors so they can change at run time.
//! - [`link`]: the device ↔ relay framing over a UART (check-then-parse, length limit, CRC).
//! - [`agent`]: the device agent, the sans-IO machine a device runs over the link: the
//!   rotation machine, its sign requests (fresh key, CSR) and the answers matched to them,
//!   the identity slot; [`status`]: the one mapping between gRPC codes and rotation failures,
//!   shared with the relay.
//! - [`drbg`]: HMAC_DRBG (SP 800-90A, reseed counter, CAVP-tested) behind an
//!   [`drbg::EntropySource`] (a TRNG, or a provisioned seed).
//! - [`slot`]: the double-buffered, critical-section-protected holder of the identity in use,
//!   read by a TLS stack or an interrupt handler while rotation swaps it.
//!
//! ## Contract
//!
//! - **Sans-IO**: no clock, socket, file or entropy source is read here. Time is an argument
//!   ([`time::UnixTime`]), randomness a `&mut impl CryptoRngCore`.
//! - **Fixed memory**: no allocator. Encoders write into `&mut [u8]` and name the size needed
//!   when it is too small; collections are `heapless` with const capacities.
//! - **No panics on input**: every parser has one checked constructor; after it, accessors
//!   cannot panic. Path building is bounded by a [`chain::Budget`] and a depth cap.
//! - **Crypto is a trait boundary**: [`crypto::SignatureVerifier`] and [`crypto::Signer`].
//!   [`crypto::RustCryptoSignatureVerifier`] and [`key::SoftwareKey`] are the defaults here; the host
//!   adds a `ring` verifier.
//!
//! ## Features
//!
//! | feature   | default | what it adds                                             |
//! |-----------|---------|----------------------------------------------------------|
//! | `ed25519` | no      | Ed25519 signatures in [`crypto::RustCryptoSignatureVerifier`]     |
//! | `tls`     | no      | embedded-tls 0.19 glue: the device's mTLS `CryptoProvider` (`device_tls`) |
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::as_conversions, clippy::cast_possible_truncation))]

pub mod agent;
pub mod bundle;
pub mod cert;
pub mod chain;
pub mod crypto;
pub mod csr;
mod der;
#[cfg(feature = "tls")]
pub mod device_tls;
pub mod drbg;
pub mod key;
pub mod link;
pub mod names;
pub mod pem;
pub mod profile;
pub mod rotation;
pub mod slot;
pub mod spiffe;
pub mod status;
pub mod time;

pub use time::{Instant, UnixTime};
