//! Names in certificates: subjectAltName entries, nameConstraints, and matching a presented
//! name against a reference name (DNS with RFC 6125 wildcards, IP addresses) or a constraint
//! (RFC 5280 §4.2.1.10: URI hosts, DNS suffixes, IP subnets, directoryName prefixes).

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
        let mut has_permitted_of_kind = false;
        let mut permitted = false;
        for base in constraints.permitted() {
            *budget = budget.checked_sub(1).ok_or(ConstraintFailure::Budget)?;
            if base.kind() == name.kind() {
                has_permitted_of_kind = true;
                permitted |= matches(&name, &base)?;
            }
        }
        if has_permitted_of_kind && !permitted {
            return Err(ConstraintFailure::Violation);
        }
        for base in constraints.excluded() {
            *budget = budget.checked_sub(1).ok_or(ConstraintFailure::Budget)?;
            if base.kind() == name.kind() && matches(&name, &base)? {
                return Err(ConstraintFailure::Violation);
            }
        }
    }
    Ok(())
}

/// Whether `name` lies in the subtree `base` (same kind).
fn matches(name: &GeneralName<'_>, base: &GeneralName<'_>) -> Result<bool, ConstraintFailure> {
    Ok(match (name, base) {
        (GeneralName::Dns(n), GeneralName::Dns(c)) => dns_in_subtree(n, c),
        (GeneralName::Uri(n), GeneralName::Uri(c)) => match uri_host(n) {
            Some(host) => host_in_uri_subtree(host, c),
            // A URI without an authority cannot satisfy a URI constraint (RFC 5280).
            None => false,
        },
        (GeneralName::Ip(n), GeneralName::Ip(c)) => ip_in_subnet(n, c),
        (GeneralName::DirectoryName(n), GeneralName::DirectoryName(c)) => dn_has_prefix(n, c),
        (GeneralName::Email(n), GeneralName::Email(c)) => email_in_subtree(n, c),
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

/// DNS subtree: `example.com` covers itself and every name below it; `.example.com` only the
/// names below it. An empty constraint covers every name.
fn dns_in_subtree(name: &str, constraint: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if constraint.is_empty() {
        return true;
    }
    if constraint.starts_with('.') {
        return ends_with_ignore_case(name, constraint);
    }
    eq_ignore_case(name, constraint)
        || (ends_with_ignore_case(name, constraint)
            && name.as_bytes().get(name.len() - constraint.len() - 1) == Some(&b'.'))
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

fn email_in_subtree(addr: &str, constraint: &str) -> bool {
    if constraint.contains('@') {
        return eq_ignore_case(addr, constraint);
    }
    let Some((_, host)) = addr.rsplit_once('@') else {
        return false;
    };
    if constraint.starts_with('.') {
        ends_with_ignore_case(host, constraint)
    } else {
        eq_ignore_case(host, constraint)
    }
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
        assert!(dns_in_subtree("example.org", "example.org"));
        assert!(dns_in_subtree("a.example.org", "example.org"));
        assert!(!dns_in_subtree("badexample.org", "example.org"));
        assert!(!dns_in_subtree("example.org", ".example.org"));
        assert!(dns_in_subtree("a.example.org", ".example.org"));
        assert!(dns_in_subtree("anything", ""));
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
