//! What Sigil's device images share across boards, above the core and below a board's
//! registers:
//!
//! - [`link`]: the core's link framing over a board's serial port ([`link::Port`]: bytes in
//!   and out, and its clock), and the TLS byte channel embedded-tls runs on;
//! - [`drive`]: the device agent's driver steps (frames and timer in, frames out);
//! - [`call`]: one mutual-TLS call with the identity the device agent installed;
//! - [`replay`]: a recorded TLS session played back (the bench's measured handshake).
//!
//! A board supplies the [`link::Port`] (its UART and clock), the entropy source behind the
//! core's DRBG and the provisioning; the core does the rest.
#![no_std]

pub mod call;
pub mod drive;
pub mod link;
pub mod replay;
