//! The one mapping between gRPC status codes and the rotation machine's failure kinds.
//!
//! A sign request that gets no chain fails with a gRPC code: Sentry's own, or one the relay
//! chose because Sentry could not be asked or its answer could not be used. The relay turns
//! each such outcome into a code with [`code`]; the device agent turns the code in a link
//! answer back into a [`Failure`] with [`failure`]. Both ends use this table, so a kind of
//! failure survives the trip over the link:
//!
//! | gRPC code | [`Failure`] | who sends it |
//! |---|---|---|
//! | `UNAVAILABLE` 14, `DEADLINE_EXCEEDED` 4 | [`Failure::Unreachable`] | the relay, when Sentry cannot be reached (or a token file read); Sentry's transport |
//! | `INTERNAL` 13 | [`Failure::Garbled`] | the relay, when Sentry's answer cannot be used; Sentry, when it failed to issue |
//! | any other (Dapr's `INVALID_ARGUMENT` 3, `PERMISSION_DENIED` 7, ...) | [`Failure::Refused`] | Sentry or the relay, refusing the request |
//!
//! Sentry's own `INTERNAL` reads as [`Failure::Garbled`] too: to the workload both mean that
//! the CA side produced no usable answer, not that its request was wrong. The kinds are for
//! logs and metrics; the machine backs off the same way for each.

use crate::rotation::Failure;

/// gRPC `UNKNOWN`: a refusal whose cause has no code of its own.
pub const UNKNOWN: u8 = 2;
/// gRPC `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// gRPC `INTERNAL`.
pub const INTERNAL: u8 = 13;
/// gRPC `UNAVAILABLE`.
pub const UNAVAILABLE: u8 = 14;

/// The failure a refusal with gRPC `code` stands for.
pub const fn failure(code: u8) -> Failure {
    match code {
        UNAVAILABLE | DEADLINE_EXCEEDED => Failure::Unreachable,
        INTERNAL => Failure::Garbled,
        _ => Failure::Refused,
    }
}

/// The gRPC code to report `failure` with when the CA gave no code of its own (a refusal by
/// the CA carries the CA's code instead). [`failure`] maps it back to `failure`.
pub const fn code(failure: Failure) -> u8 {
    match failure {
        Failure::Unreachable => UNAVAILABLE,
        Failure::Garbled => INTERNAL,
        Failure::Refused => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_survives_the_link() {
        for f in [Failure::Unreachable, Failure::Refused, Failure::Garbled] {
            assert_eq!(failure(code(f)), f);
            assert_ne!(code(f), 0, "0 is OK, never a refusal");
        }
    }

    #[test]
    fn dapr_codes_read_as_their_kind() {
        assert_eq!(failure(14), Failure::Unreachable);
        assert_eq!(failure(4), Failure::Unreachable);
        assert_eq!(failure(13), Failure::Garbled);
        // INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED, and codes
        // gRPC does not define.
        for c in [1, 2, 3, 7, 8, 16, 17, 255] {
            assert_eq!(failure(c), Failure::Refused, "code {c}");
        }
    }
}
