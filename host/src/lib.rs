//! Sigil on a std host: the library behind the `sigil` binary.
//!
//! - [`verifier::RingVerifier`]: the core's signature-verifier trait on `ring`.
//! - [`pki`]: reading PEM files into owned DER, and describing certificates for people.
//! - [`commands`]: what each `sigil` subcommand does; the binary only parses arguments.

pub mod commands;
pub mod pki;
pub mod verifier;
