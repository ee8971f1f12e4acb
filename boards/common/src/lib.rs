//! What Sigil's device images share across boards, above the core and below a board's
//! registers:
//!
//! - [`link`]: the core's link framing over a board's serial port ([`link::Port`]: bytes in
//!   and out, and its clock), and the TLS byte channel embedded-tls runs on;
//! - [`call`]: one mutual-TLS call with the identity the device agent installed.
//!
//! A board supplies the [`link::Port`] (its UART and clock), the entropy source behind the
//! core's DRBG and the provisioning; the core does the rest.
#![no_std]

pub mod call;
pub mod link;
