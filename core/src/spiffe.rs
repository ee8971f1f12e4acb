//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) by the SPIFFE ID specification, as go-spiffe
//! enforces it, and Dapr's `spiffe://<td>/ns/<namespace>/<app-id>` form.
//!
//! Rules: the scheme is exactly `spiffe://`; the trust domain is 1–255 bytes of `a-z 0-9 . - _`
//! (upper case is an error, as are a port or user info); the path is empty or `/`-separated
//! segments of `a-z A-Z 0-9 . - _`, none empty, `.` or `..`, and no trailing `/`; the whole ID
//! is at most 2048 bytes. Parsing borrows; nothing allocates or panics.

use core::fmt;

/// Longest SPIFFE ID, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
const SCHEME: &str = "spiffe://";

/// Why a SPIFFE ID or trust domain was rejected. Offsets are byte offsets into the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input is empty.
    Empty,
    /// The input does not start with `spiffe://` (the scheme is case-sensitive here).
    WrongScheme,
    /// There is no trust domain after `spiffe://`.
    MissingTrustDomain,
    /// A trust-domain byte is not one of `a-z 0-9 . - _`.
    BadTrustDomainChar {
        /// Offset of the byte.
        at: usize,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    TrustDomainTooLong {
        /// Its length.
        len: usize,
    },
    /// A path segment is empty (`//`, or the path is just `/`).
    EmptySegment {
        /// Offset of the segment.
        at: usize,
    },
    /// A path segment is `.` or `..`.
    DotSegment {
        /// Offset of the segment.
        at: usize,
    },
    /// A path byte is not one of `a-z A-Z 0-9 . - _`.
    BadPathChar {
        /// Offset of the byte.
        at: usize,
    },
    /// The path ends with `/`.
    TrailingSlash,
    /// The ID is longer than [`MAX_ID_LEN`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The path is not Dapr's `/ns/<namespace>/<app-id>`.
    NotDapr,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("SPIFFE ID is empty"),
            Self::WrongScheme => f.write_str("SPIFFE ID must start with \"spiffe://\""),
            Self::MissingTrustDomain => f.write_str("SPIFFE ID has no trust domain"),
            Self::BadTrustDomainChar { at } => write!(
                f,
                "trust domain character at byte {at} is not one of a-z 0-9 . - _"
            ),
            Self::TrustDomainTooLong { len } => {
                write!(
                    f,
                    "trust domain is {len} bytes, more than {MAX_TRUST_DOMAIN_LEN}"
                )
            }
            Self::EmptySegment { at } => write!(f, "empty path segment at byte {at}"),
            Self::DotSegment { at } => write!(f, "path segment at byte {at} is . or .."),
            Self::BadPathChar { at } => write!(
                f,
                "path character at byte {at} is not one of a-z A-Z 0-9 . - _"
            ),
            Self::TrailingSlash => f.write_str("SPIFFE ID path ends with /"),
            Self::TooLong { len } => write!(f, "SPIFFE ID is {len} bytes, more than {MAX_ID_LEN}"),
            Self::BufferTooSmall { needed } => {
                write!(f, "SPIFFE ID buffer too small: {needed} bytes needed")
            }
            Self::NotDapr => f.write_str("path is not /ns/<namespace>/<app-id>"),
        }
    }
}

impl core::error::Error for Error {}

fn is_td_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Checks a bare trust-domain name; `base` is its offset in the larger input, for errors.
fn check_trust_domain(td: &str, base: usize) -> Result<(), Error> {
    if td.is_empty() {
        return Err(Error::MissingTrustDomain);
    }
    if let Some(at) = td.bytes().position(|b| !is_td_byte(b)) {
        return Err(Error::BadTrustDomainChar { at: base + at });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(Error::TrustDomainTooLong { len: td.len() });
    }
    Ok(())
}

/// Checks a path (empty, or `/seg/seg...`); `base` is its offset in the larger input.
fn check_path(path: &str, base: usize) -> Result<(), Error> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') && path.len() > 1 {
        // Report the trailing slash only when everything before it is fine.
        check_path(path.get(..path.len() - 1).unwrap_or(""), base)?;
        return Err(Error::TrailingSlash);
    }
    let mut at = base;
    for segment in path.split('/').skip(1) {
        at += 1;
        if segment.is_empty() {
            return Err(Error::EmptySegment { at });
        }
        if segment == "." || segment == ".." {
            return Err(Error::DotSegment { at });
        }
        if let Some(i) = segment.bytes().position(|b| !is_path_byte(b)) {
            return Err(Error::BadPathChar { at: at + i });
        }
        at += segment.len();
    }
    Ok(())
}

/// A trust domain name, borrowed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrustDomain<'a>(&'a str);

impl<'a> TrustDomain<'a> {
    /// Parses a bare trust-domain name such as `example.org`.
    ///
    /// # Errors
    ///
    /// [`Error::MissingTrustDomain`] if empty, [`Error::BadTrustDomainChar`],
    /// [`Error::TrustDomainTooLong`].
    pub fn parse(name: &'a str) -> Result<Self, Error> {
        check_trust_domain(name, 0).map(|()| Self(name))
    }

    /// The name.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for TrustDomain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A SPIFFE ID, borrowed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId<'a> {
    id: &'a str,
    td_end: usize,
}

impl<'a> SpiffeId<'a> {
    /// Parses `spiffe://<trust-domain>[/<path>]`.
    ///
    /// # Errors
    ///
    /// The [`Error`] of the first rule broken, with the byte offset where it applies.
    pub fn parse(id: &'a str) -> Result<Self, Error> {
        if id.is_empty() {
            return Err(Error::Empty);
        }
        let rest = id.strip_prefix(SCHEME).ok_or(Error::WrongScheme)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        check_trust_domain(td, SCHEME.len())?;
        check_path(path, SCHEME.len() + td_len)?;
        if id.len() > MAX_ID_LEN {
            return Err(Error::TooLong { len: id.len() });
        }
        Ok(Self {
            id,
            td_end: SCHEME.len() + td_len,
        })
    }

    /// The whole ID.
    pub const fn as_str(&self) -> &'a str {
        self.id
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain<'a> {
        TrustDomain(self.id.get(SCHEME.len()..self.td_end).unwrap_or(""))
    }

    /// The path: empty, or starting with `/`.
    pub fn path(&self) -> &'a str {
        self.id.get(self.td_end..).unwrap_or("")
    }

    /// The path's segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &'a str> {
        self.path().split('/').skip(1)
    }

    /// Whether the ID belongs to `td`.
    pub fn is_member_of(&self, td: TrustDomain<'_>) -> bool {
        self.trust_domain().as_str() == td.as_str()
    }

    /// Dapr's reading of the ID, if its path is `/ns/<namespace>/<app-id>`.
    pub fn dapr(&self) -> Option<DaprId<'a>> {
        let mut s = self.segments();
        match (s.next(), s.next(), s.next(), s.next()) {
            (Some("ns"), Some(namespace), Some(app_id), None) => Some(DaprId {
                trust_domain: self.trust_domain(),
                namespace,
                app_id,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)
    }
}

/// A SPIFFE ID of Dapr's form `spiffe://<td>/ns/<namespace>/<app-id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaprId<'a> {
    trust_domain: TrustDomain<'a>,
    namespace: &'a str,
    app_id: &'a str,
}

impl<'a> DaprId<'a> {
    /// The trust domain.
    pub const fn trust_domain(&self) -> TrustDomain<'a> {
        self.trust_domain
    }

    /// The namespace.
    pub const fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// The app ID.
    pub const fn app_id(&self) -> &'a str {
        self.app_id
    }
}

/// Writes `spiffe://<td><path>` into `buf` and checks it.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] naming the size needed, or the rule the result breaks.
pub fn write_id<'b>(td: &str, path: &str, buf: &'b mut [u8]) -> Result<SpiffeId<'b>, Error> {
    write_parts(&[SCHEME, td, path], buf)
}

/// Writes Dapr's `spiffe://<td>/ns/<namespace>/<app-id>` into `buf` and checks it: the trust
/// domain must be one (so it cannot carry path segments), and the namespace and app ID one
/// path segment each.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] naming the size needed, [`Error::NotDapr`] if a part would add
/// path segments, or the rule the result breaks.
pub fn write_dapr_id<'b>(
    td: &str,
    namespace: &str,
    app_id: &str,
    buf: &'b mut [u8],
) -> Result<SpiffeId<'b>, Error> {
    TrustDomain::parse(td)?;
    for part in [namespace, app_id] {
        if part.contains('/') {
            return Err(Error::NotDapr);
        }
    }
    write_parts(&[SCHEME, td, "/ns/", namespace, "/", app_id], buf)
}

fn write_parts<'b>(parts: &[&str], buf: &'b mut [u8]) -> Result<SpiffeId<'b>, Error> {
    let needed: usize = parts.iter().map(|p| p.len()).sum();
    let out = buf
        .get_mut(..needed)
        .ok_or(Error::BufferTooSmall { needed })?;
    let mut at = 0;
    for part in parts {
        if let Some(dst) = out.get_mut(at..at + part.len()) {
            dst.copy_from_slice(part.as_bytes());
        }
        at += part.len();
    }
    // Concatenated `str`s are valid UTF-8.
    let text = core::str::from_utf8(out).map_err(|_| Error::WrongScheme)?;
    SpiffeId::parse(text)
}

/// A SPIFFE ID stored inline, for holding an identity without borrowing its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSpiffeId<const N: usize> {
    text: heapless::String<N>,
}

impl<const N: usize> OwnedSpiffeId<N> {
    /// Copies `id`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] if `id` is longer than `N`.
    pub fn from_id(id: SpiffeId<'_>) -> Result<Self, Error> {
        let mut text = heapless::String::new();
        text.push_str(id.as_str())
            .map_err(|_| Error::BufferTooSmall {
                needed: id.as_str().len(),
            })?;
        Ok(Self { text })
    }

    /// The ID.
    pub fn as_id(&self) -> SpiffeId<'_> {
        // The text was a valid ID when stored, and is re-checked here (cheap, no panic).
        SpiffeId::parse(&self.text).unwrap_or(SpiffeId { id: "", td_end: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_ids() {
        for (id, td, path) in [
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://example.org/ns/default/app",
                "example.org",
                "/ns/default/app",
            ),
            ("spiffe://a-b_c.9/P.a-t_h", "a-b_c.9", "/P.a-t_h"),
            ("spiffe://x/...a", "x", "/...a"),
        ] {
            let parsed = SpiffeId::parse(id).unwrap();
            assert_eq!(parsed.trust_domain().as_str(), td);
            assert_eq!(parsed.path(), path);
            assert_eq!(parsed.to_string(), id);
        }
        let d = SpiffeId::parse("spiffe://public/ns/default/myapp")
            .unwrap()
            .dapr()
            .unwrap();
        assert_eq!(
            (d.trust_domain().as_str(), d.namespace(), d.app_id()),
            ("public", "default", "myapp")
        );
        assert!(SpiffeId::parse("spiffe://public/ns/default")
            .unwrap()
            .dapr()
            .is_none());
        assert!(SpiffeId::parse("spiffe://public/xs/default/a")
            .unwrap()
            .dapr()
            .is_none());
    }

    #[test]
    fn invalid_ids_say_why() {
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let long_id = format!("spiffe://a/{}", "b".repeat(2048));
        for (id, want) in [
            ("", Error::Empty),
            ("http://example.org", Error::WrongScheme),
            ("SPIFFE://example.org", Error::WrongScheme),
            ("spiffe:/example.org", Error::WrongScheme),
            ("spiffe://", Error::MissingTrustDomain),
            ("spiffe:///path", Error::MissingTrustDomain),
            ("spiffe://Example.org", Error::BadTrustDomainChar { at: 9 }),
            (
                "spiffe://example.org:8080",
                Error::BadTrustDomainChar { at: 20 },
            ),
            (
                "spiffe://user@example.org",
                Error::BadTrustDomainChar { at: 13 },
            ),
            (long_td.as_str(), Error::TrustDomainTooLong { len: 256 }),
            ("spiffe://td/", Error::EmptySegment { at: 12 }),
            ("spiffe://td//a", Error::EmptySegment { at: 12 }),
            ("spiffe://td/a/./b", Error::DotSegment { at: 14 }),
            ("spiffe://td/..", Error::DotSegment { at: 12 }),
            ("spiffe://td/a%20b", Error::BadPathChar { at: 13 }),
            ("spiffe://td/a?q=1", Error::BadPathChar { at: 13 }),
            ("spiffe://td/a#f", Error::BadPathChar { at: 13 }),
            ("spiffe://td/a/", Error::TrailingSlash),
            (long_id.as_str(), Error::TooLong { len: 2059 }),
        ] {
            assert_eq!(SpiffeId::parse(id), Err(want), "{id:?}");
        }
        assert_eq!(
            TrustDomain::parse("EXAMPLE"),
            Err(Error::BadTrustDomainChar { at: 0 })
        );
        assert_eq!(TrustDomain::parse(""), Err(Error::MissingTrustDomain));
    }

    #[test]
    fn writing() {
        let mut buf = [0u8; 64];
        let mut idbuf = [0u8; 64];
        let id = write_dapr_id("public", "default", "app", &mut idbuf).unwrap();
        assert_eq!(id.as_str(), "spiffe://public/ns/default/app");
        let mut small = [0u8; 8];
        assert_eq!(
            write_id("td", "/a", &mut small),
            Err(Error::BufferTooSmall { needed: 13 })
        );
        assert_eq!(
            write_dapr_id("td/ns/x", "a", "c", &mut buf).map(|i| i.as_str().len()),
            Err(Error::BadTrustDomainChar { at: 2 })
        );
        assert_eq!(
            write_dapr_id("td", "a/b", "c", &mut buf),
            Err(Error::NotDapr)
        );
        assert_eq!(
            write_dapr_id("td", "default", "a.b", &mut buf).map(|i| i.as_str().len()),
            Ok(26)
        );
        let owned = OwnedSpiffeId::<64>::from_id(id).unwrap();
        assert_eq!(
            owned.as_id(),
            SpiffeId::parse("spiffe://public/ns/default/app").unwrap()
        );
        assert!(OwnedSpiffeId::<8>::from_id(id).is_err());
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(
            td in "[a-z0-9._-]{1,40}",
            segs in proptest::collection::vec("[a-zA-Z0-9._-]{1,20}", 0..8),
        ) {
            prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let mut buf = [0u8; 512];
            let id = write_id(&td, &path, &mut buf).unwrap();
            prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
            prop_assert_eq!(id.path(), path.as_str());
            prop_assert_eq!(id.segments().collect::<Vec<_>>(), segs.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = SpiffeId::parse(&s);
            let _ = SpiffeId::parse(&format!("spiffe://{s}"));
        }
    }
}
