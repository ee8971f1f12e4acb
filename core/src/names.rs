//! Names in certificates: subjectAltName entries, nameConstraints, and matching a presented
//! name against a reference name (DNS with RFC 6125 wildcards, IP addresses) or a constraint
//! (RFC 5280 §4.2.1.10: URI hosts, DNS suffixes, IP subnets, directoryName prefixes).
//!
//! Under nameConstraints, names are judged as names, never as bytes: a dNSName or rfc822Name
//! that is not well-formed breaks any constraints, as does a malformed constraint compared with
//! a name; a wildcard dNSName `*.d` stands for every name one label below `d`, so it is
//! permitted only if a permitted subtree holds all of them, and excluded if an excluded
//! subtree holds any of them (`*.example.com` is excluded by `bad.example.com`).

use crate::der::{self, tag, DerError, Reader};

/// One `GeneralName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GeneralName<'a> {
    /// rfc822Name `[1]`
    Email(&'a str),
    /// dNSName `[2]`
    Dns(&'a str),
    /// directoryName `[4]`: the `Name`, whole DER TLV.
    DirectoryName(&'a [u8]),
    /// uniformResourceIdentifier `[6]`
    Uri(&'a str),
    /// iPAddress `[7]`: 4 or 16 bytes in a SAN; address and mask (8 or 32 bytes) in a
    /// constraint.
    Ip(&'a [u8]),
    /// otherName, x400Address, ediPartyName or registeredID: carried, not interpreted. The
    /// value is the context tag number.
    Unsupported(u8),
}

impl<'a> GeneralName<'a> {
    fn parse(tag_byte: u8, value: &'a [u8], constraint: bool) -> Result<Self, DerError> {
        let ia5 = |v: &'a [u8]| -> Result<&'a str, DerError> {
            if v.is_ascii() {
                core::str::from_utf8(v).map_err(|_| DerError::BadTag)
            } else {
                Err(DerError::BadTag)
            }
        };
        Ok(match tag_byte {
            0x81 => Self::Email(ia5(value)?),
            0x82 => Self::Dns(ia5(value)?),
            0xa4 => {
                // [4] is EXPLICIT: the value is a whole Name.
                let mut r = Reader::new(value);
                let (_, name) = r.read_tlv(tag::SEQUENCE)?;
                r.finish()?;
                Self::DirectoryName(name)
            }
            0x86 => Self::Uri(ia5(value)?),
            0x87 => match (value.len(), constraint) {
                (4 | 16, false) | (8 | 32, true) => Self::Ip(value),
                _ => return Err(DerError::BadLength),
            },
            0xa0 | 0xa3 | 0xa5 | 0x88 => Self::Unsupported(tag_byte & 0x1f),
            _ => return Err(DerError::BadTag),
        })
    }

    /// Which kind of name this is, for matching names against constraints of the same kind.
    const fn kind(&self) -> u8 {
        match self {
            Self::Email(_) => 1,
            Self::Dns(_) => 2,
            Self::DirectoryName(_) => 4,
            Self::Uri(_) => 6,
            Self::Ip(_) => 7,
            Self::Unsupported(n) => *n,
        }
    }
}

/// A checked `SEQUENCE OF GeneralName` (a subjectAltName's value).
#[derive(Clone, Copy, Debug)]
pub struct GeneralNames<'a>(&'a [u8]);

impl<'a> GeneralNames<'a> {
    pub(crate) fn parse(list: &'a [u8]) -> Result<Self, DerError> {
        let mut r = Reader::new(list);
        if r.is_empty() {
            return Err(DerError::Truncated);
        }
        while !r.is_empty() {
            let (t, v, _) = r.read_any()?;
            GeneralName::parse(t, v, false)?;
        }
        Ok(Self(list))
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = GeneralName<'a>> {
        let mut r = Reader::new(self.0);
        core::iter::from_fn(move || {
            let (t, v, _) = r.read_any().ok()?;
            GeneralName::parse(t, v, false).ok()
        })
    }
}

/// A checked nameConstraints extension.
#[derive(Clone, Copy, Debug)]
pub struct NameConstraints<'a> {
    permitted: Option<&'a [u8]>,
    excluded: Option<&'a [u8]>,
}

impl<'a> NameConstraints<'a> {
    pub(crate) fn parse(ext_value: &'a [u8]) -> Result<Self, DerError> {
        let mut r = Reader::new(der::parse_exact(ext_value, tag::SEQUENCE)?);
        let permitted = r.read_optional(tag::context(0))?;
        let excluded = r.read_optional(tag::context(1))?;
        r.finish()?;
        if permitted.is_none() && excluded.is_none() {
            // RFC 5280: at least one of the two MUST be present.
            return Err(DerError::Truncated);
        }
        for subtrees in [permitted, excluded].into_iter().flatten() {
            let mut s = Reader::new(subtrees);
            if s.is_empty() {
                return Err(DerError::Truncated);
            }
            while !s.is_empty() {
                subtree(s.read(tag::SEQUENCE)?)?;
            }
        }
        Ok(Self {
            permitted,
            excluded,
        })
    }

    /// The permitted subtrees' base names.
    pub fn permitted(&self) -> impl Iterator<Item = GeneralName<'a>> {
        subtrees(self.permitted)
    }

    /// The excluded subtrees' base names.
    pub fn excluded(&self) -> impl Iterator<Item = GeneralName<'a>> {
        subtrees(self.excluded)
    }
}

/// One GeneralSubtree: the base; minimum must be 0 (absent in DER) and maximum absent.
fn subtree(value: &[u8]) -> Result<GeneralName<'_>, DerError> {
    let mut r = Reader::new(value);
    let (t, v, _) = r.read_any()?;
    let base = GeneralName::parse(t, v, true)?;
    r.finish()?;
    Ok(base)
}

fn subtrees(list: Option<&[u8]>) -> impl Iterator<Item = GeneralName<'_>> {
    let mut r = Reader::new(list.unwrap_or(&[]));
    core::iter::from_fn(move || subtree(r.read(tag::SEQUENCE).ok()?).ok())
}

/// Why a certificate's names broke an issuer's constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConstraintFailure {
    /// A name fell outside every permitted subtree of its kind, or inside an excluded one.
    Violation,
    /// The comparison budget ran out.
    Budget,
}

/// Which list of subtrees a name is compared with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subtrees {
    Permitted,
    Excluded,
}

/// Checks the names of a certificate (its SANs and, when not empty, its subject as a
/// directoryName) against `constraints`. `budget` counts comparisons.
pub(crate) fn check_constraints(
    constraints: &NameConstraints<'_>,
    subject: Option<&[u8]>,
    sans: Option<GeneralNames<'_>>,
    budget: &mut usize,
) -> Result<(), ConstraintFailure> {
    let subject_name = subject.map(GeneralName::DirectoryName);
    let names = sans.into_iter().flat_map(|s| s.iter()).chain(subject_name);
    for name in names {
        let well_formed = match name {
            GeneralName::Dns(d) => is_valid_presented_dns(d),
            GeneralName::Email(e) => is_valid_mailbox(e),
            _ => true,
        };
        if !well_formed {
            return Err(ConstraintFailure::Violation);
        }
        let mut has_permitted_of_kind = false;
        let mut permitted = false;
        for base in constraints.permitted() {
            *budget = budget.checked_sub(1).ok_or(ConstraintFailure::Budget)?;
            if base.kind() == name.kind() {
                has_permitted_of_kind = true;
                permitted |= matches(&name, &base, Subtrees::Permitted)?;
            }
        }
        if has_permitted_of_kind && !permitted {
            return Err(ConstraintFailure::Violation);
        }
        for base in constraints.excluded() {
            *budget = budget.checked_sub(1).ok_or(ConstraintFailure::Budget)?;
            if base.kind() == name.kind() && matches(&name, &base, Subtrees::Excluded)? {
                return Err(ConstraintFailure::Violation);
            }
        }
    }
    Ok(())
}

/// Whether `name` lies in the subtree `base` (same kind); for a wildcard dNSName, whether all
/// its names do (permitted) or any does (excluded).
fn matches(
    name: &GeneralName<'_>,
    base: &GeneralName<'_>,
    subtrees: Subtrees,
) -> Result<bool, ConstraintFailure> {
    Ok(match (name, base) {
        (GeneralName::Dns(n), GeneralName::Dns(c)) => dns_in_subtree(n, c, subtrees)?,
        (GeneralName::Uri(n), GeneralName::Uri(c)) => match uri_host(n) {
            Some(host) => host_in_uri_subtree(host, c),
            // A URI without an authority cannot satisfy a URI constraint (RFC 5280).
            None => false,
        },
        (GeneralName::Ip(n), GeneralName::Ip(c)) => ip_in_subnet(n, c),
        (GeneralName::DirectoryName(n), GeneralName::DirectoryName(c)) => dn_has_prefix(n, c),
        (GeneralName::Email(n), GeneralName::Email(c)) => email_in_subtree(n, c)?,
        // Kinds we do not interpret: fail closed when a name of that kind is constrained.
        _ => return Err(ConstraintFailure::Violation),
    })
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.get(s.len() - suffix.len()..)
            .is_some_and(|tail| eq_ignore_case(tail, suffix))
}

/// `name` is `domain` or a name below it.
fn at_or_below(name: &str, domain: &str) -> bool {
    eq_ignore_case(name, domain)
        || (ends_with_ignore_case(name, domain)
            && name.as_bytes().get(name.len() - domain.len() - 1) == Some(&b'.'))
}

/// DNS subtree: `example.com` covers itself and every name below it; `.example.com` only the
/// names below it; an empty constraint covers every name. `name` is well-formed (checked by
/// the caller); a wildcard `*.d` is in a permitted subtree if every name one label below `d`
/// is, and in an excluded one if any is (or, for `.x.d`, if `x.d` is).
///
/// # Errors
///
/// A malformed constraint (not empty and not a reference name, with an optional leading dot)
/// is a violation.
fn dns_in_subtree(
    name: &str,
    constraint: &str,
    subtrees: Subtrees,
) -> Result<bool, ConstraintFailure> {
    if constraint.is_empty() {
        return Ok(true);
    }
    let domain = constraint.strip_prefix('.').unwrap_or(constraint);
    if !is_valid_reference_dns(domain) {
        return Err(ConstraintFailure::Violation);
    }
    let below_only = domain.len() != constraint.len();
    Ok(match name.strip_prefix("*.") {
        // Every `x.rest` is in the subtree exactly when `rest` is `domain` or below it.
        Some(rest) if at_or_below(rest, domain) => true,
        // Otherwise some `x.rest` is in it only when `domain` itself is one of them. For an
        // excluded `.domain` none is (the subtree is strictly below `domain`), but it is
        // refused all the same, as rustls-webpki does: failing closed costs nothing there.
        Some(rest) => {
            subtrees == Subtrees::Excluded
                && domain
                    .split_once('.')
                    .is_some_and(|(_, parent)| eq_ignore_case(parent, rest))
        }
        None if below_only => ends_with_ignore_case(name, constraint),
        None => at_or_below(name, domain),
    })
}

/// The host of a URI with an authority (`scheme://[userinfo@]host[:port]/...`).
pub(crate) fn uri_host(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port
            .split_once(']')
            .map(|(h, _)| h.trim_start_matches('['))?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// URI subtree: `host` exactly, or with a leading `.`, any host below it (RFC 5280).
fn host_in_uri_subtree(host: &str, constraint: &str) -> bool {
    if constraint.starts_with('.') {
        ends_with_ignore_case(host, constraint)
    } else {
        eq_ignore_case(host, constraint)
    }
}

fn ip_in_subnet(addr: &[u8], constraint: &[u8]) -> bool {
    let (net, mask) = constraint.split_at(constraint.len() / 2);
    addr.len() == net.len()
        && addr
            .iter()
            .zip(net)
            .zip(mask)
            .all(|((a, n), m)| a & m == n & m)
}

/// rfc822Name subtree: a mailbox exactly, a host's mailboxes, or (leading dot) the mailboxes
/// of every host below a domain. `addr` is well-formed (checked by the caller).
///
/// # Errors
///
/// A malformed constraint is a violation.
fn email_in_subtree(addr: &str, constraint: &str) -> Result<bool, ConstraintFailure> {
    let domain = constraint.strip_prefix('.').unwrap_or(constraint);
    let well_formed = if constraint.contains('@') {
        is_valid_mailbox(constraint)
    } else {
        is_valid_reference_dns(domain)
    };
    if !well_formed {
        return Err(ConstraintFailure::Violation);
    }
    if constraint.contains('@') {
        return Ok(eq_ignore_case(addr, constraint));
    }
    let host = split_mailbox(addr).map_or("", |(_, h)| h);
    Ok(if domain.len() != constraint.len() {
        ends_with_ignore_case(host, constraint)
    } else {
        eq_ignore_case(host, constraint)
    })
}

/// Whether the RDN sequence of `constraint` is a prefix of that of `name` (both whole `Name`
/// TLVs), comparing RDNs byte for byte as rustls-webpki does.
fn dn_has_prefix(name: &[u8], constraint: &[u8]) -> bool {
    let (Ok(n), Ok(c)) = (
        der::parse_exact(name, tag::SEQUENCE),
        der::parse_exact(constraint, tag::SEQUENCE),
    ) else {
        return false;
    };
    let (mut n, mut c) = (Reader::new(n), Reader::new(c));
    while !c.is_empty() {
        match (c.read_any(), n.read_any()) {
            (Ok((_, _, a)), Ok((_, _, b))) if a == b => {}
            _ => return false,
        }
    }
    true
}

/// Whether a presented DNS name (from a SAN, possibly a wildcard) matches a reference DNS
/// name, by RFC 6125 §6.4: case-insensitive; a wildcard only as the whole leftmost label,
/// matching exactly one label, and never directly under a single-label (public) suffix.
pub fn dns_matches(presented: &str, reference: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    let reference = reference.strip_suffix('.').unwrap_or(reference);
    if !is_valid_reference_dns(reference) {
        return false;
    }
    match presented.strip_prefix("*.") {
        Some(suffix) => {
            if suffix.contains('*') || !suffix.contains('.') {
                return false;
            }
            match reference.split_once('.') {
                Some((label, rest)) => !label.is_empty() && eq_ignore_case(rest, suffix),
                None => false,
            }
        }
        None => !presented.contains('*') && eq_ignore_case(presented, reference),
    }
}

/// A dNSName as a certificate may present it under name constraints: a reference name
/// ([`is_valid_reference_dns`]) whose last label is not all digits (an address in disguise),
/// optionally under a wildcard `*.` first label followed by at least two labels. No trailing
/// dot (RFC 5280 §4.2.1.6: the preferred name syntax).
pub fn is_valid_presented_dns(name: &str) -> bool {
    let wildcard = name.strip_prefix("*.");
    let host = wildcard.unwrap_or(name);
    is_valid_reference_dns(host)
        && (wildcard.is_none() || host.contains('.'))
        && !host
            .bytes()
            .rev()
            .take_while(|&b| b != b'.')
            .all(|b| b.is_ascii_digit())
}

/// `local@domain`, split at the last `@`.
fn split_mailbox(addr: &str) -> Option<(&str, &str)> {
    let at = addr.bytes().rposition(|b| b == b'@')?;
    Some((addr.get(..at)?, addr.get(at + 1..)?))
}

/// An rfc822Name mailbox as a certificate may present it under name constraints:
/// `local@domain`, the local part a dot-atom (RFC 5322 atext; no quoted strings) of at most
/// 64 bytes, the domain a reference DNS name.
pub fn is_valid_mailbox(addr: &str) -> bool {
    let Some((local, domain)) = split_mailbox(addr) else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext))
        && is_valid_reference_dns(domain)
}

/// A reference DNS name as a caller may ask for: LDH labels of 1–63 bytes, at most 253 bytes.
pub fn is_valid_reference_dns(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_wildcards_follow_rfc6125() {
        assert!(dns_matches("example.org", "EXAMPLE.org"));
        assert!(dns_matches("*.example.org", "a.example.org"));
        assert!(!dns_matches("*.example.org", "a.b.example.org"));
        assert!(!dns_matches("*.example.org", "example.org"));
        assert!(!dns_matches("*.org", "example.org"));
        assert!(!dns_matches("f*.example.org", "foo.example.org"));
        assert!(!dns_matches("a.*.example.org", "a.b.example.org"));
        assert!(!dns_matches("example.org", "*.example.org"));
        assert!(dns_matches("example.org.", "example.org"));
    }

    #[test]
    fn dns_subtrees() {
        let permitted = |n, c| dns_in_subtree(n, c, Subtrees::Permitted);
        assert_eq!(permitted("example.org", "example.org"), Ok(true));
        assert_eq!(permitted("a.example.org", "example.org"), Ok(true));
        assert_eq!(permitted("badexample.org", "example.org"), Ok(false));
        assert_eq!(permitted("example.org", ".example.org"), Ok(false));
        assert_eq!(permitted("a.example.org", ".example.org"), Ok(true));
        assert_eq!(permitted("anything", ""), Ok(true));
    }

    /// A wildcard stands for every name one label below its base: permitted only if all of
    /// them are, excluded if any is (the cases of rustls-webpki's tests for CVE-2025-61727).
    #[test]
    fn wildcard_dns_against_subtrees_as_a_whole() {
        let both = |n, c| {
            (
                dns_in_subtree(n, c, Subtrees::Permitted),
                dns_in_subtree(n, c, Subtrees::Excluded),
            )
        };
        // (name, constraint, all inside, any inside)
        for (n, c, all, any) in [
            ("*.example.com", "example.com", true, true),
            ("*.example.com", ".example.com", true, true),
            ("*.example.com", "EXAMPLE.com", true, true),
            ("*.example.com", "bad.example.com", false, true),
            ("*.example.com", "www.EXAMPLE.COM", false, true),
            ("*.example.com", ".bad.example.com", false, true),
            ("*.example.com", "a.b.example.com", false, false),
            ("*.example.com", "www.other.com", false, false),
            ("*.example.com", "com", true, true),
            ("*.www.example.com", "www.example.com", true, true),
            ("*.b.example.com", "a.b.example.com", false, true),
            ("*.example.com", "xample.com", false, false),
        ] {
            assert_eq!(both(n, c), (Ok(all), Ok(any)), "{n} vs {c}");
        }
    }

    #[test]
    fn malformed_constraints_fail_closed() {
        for c in ["a..b", "*.example.com", "example.com.", "exa mple.com", "."] {
            for subtrees in [Subtrees::Permitted, Subtrees::Excluded] {
                assert_eq!(
                    dns_in_subtree("a.example.com", c, subtrees),
                    Err(ConstraintFailure::Violation),
                    "{c}"
                );
            }
        }
        for c in ["a@@b.com", "@b.com", "a b@c.com", "..c.com", "c..com"] {
            assert_eq!(
                email_in_subtree("a@c.com", c),
                Err(ConstraintFailure::Violation),
                "{c}"
            );
        }
        assert_eq!(email_in_subtree("a@c.com", "c.com"), Ok(true));
        assert_eq!(email_in_subtree("a@x.c.com", ".c.com"), Ok(true));
        assert_eq!(email_in_subtree("a@c.com", ".c.com"), Ok(false));
        assert_eq!(email_in_subtree("A@C.com", "a@c.com"), Ok(true));
    }

    #[test]
    fn presented_names_syntax() {
        for ok in [
            "example.com",
            "a-b.example.com",
            "_svc.example.com",
            "*.example.com",
            "x1.example.c0m",
        ] {
            assert!(is_valid_presented_dns(ok), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            ".example.com",
            "example.com.",
            "bad name.example.com",
            "-a.example.com",
            "a-.example.com",
            "*.com",
            "*.*.example.com",
            "f*.example.com",
            "a.*.example.com",
            "*",
            "10.1.2.3",
            "example.123",
        ] {
            assert!(!is_valid_presented_dns(bad), "{bad:?}");
        }
        for ok in ["a@example.com", "first.last+tag@example.com", "x!#$%@a.b"] {
            assert!(is_valid_mailbox(ok), "{ok}");
        }
        for bad in [
            "",
            "example.com",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@b@example.com",
            ".a@example.com",
            "a..b@example.com",
            "\"a b\"@example.com",
            "a@example..com",
            "a@example.com.",
        ] {
            assert!(!is_valid_mailbox(bad), "{bad:?}");
        }
    }

    #[test]
    fn uri_hosts() {
        assert_eq!(
            uri_host("spiffe://example.org/ns/default/app"),
            Some("example.org")
        );
        assert_eq!(
            uri_host("https://user@host.example:8443/x"),
            Some("host.example")
        );
        assert_eq!(uri_host("https://[::1]:8443/x"), Some("::1"));
        assert_eq!(uri_host("urn:example:thing"), None);
        assert_eq!(uri_host("spiffe:///path"), None);
        assert!(host_in_uri_subtree("example.org", "example.org"));
        assert!(!host_in_uri_subtree("a.example.org", "example.org"));
        assert!(host_in_uri_subtree("a.example.org", ".example.org"));
    }

    #[test]
    fn ip_subnets() {
        assert!(ip_in_subnet(&[10, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!ip_in_subnet(&[11, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!ip_in_subnet(&[0; 16], &[10, 0, 0, 0, 255, 0, 0, 0]));
    }
}
