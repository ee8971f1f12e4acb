//! Strict, zero-copy DER framing shared by the certificate and CSR code.
//!
//! Only what X.509 needs: single-byte tags, definite minimal lengths of at most four bytes.
//! Anything else is malformed. Nothing here panics or allocates.

use crate::time::UnixTime;

/// Why DER input was rejected. The offset is relative to the start of the outermost input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DerError {
    /// The input ended inside a tag, a length or a value.
    Truncated,
    /// A length was indefinite, non-minimal or longer than four bytes.
    BadLength,
    /// A tag in the high-tag-number form (X.509 never needs one).
    BadTag,
    /// A different tag was expected here.
    UnexpectedTag {
        /// The tag expected.
        expected: u8,
        /// The tag found.
        found: u8,
    },
    /// Bytes were left over after a complete structure.
    TrailingData,
    /// An INTEGER was empty or not minimally encoded, or negative where it must not be.
    BadInteger,
    /// A BOOLEAN was not 0x00 or 0xFF.
    BadBoolean,
    /// A BIT STRING was empty or had unused bits where none are allowed.
    BadBitString,
    /// A UTCTime or GeneralizedTime was not in its DER form (`YYMMDDHHMMSSZ` /
    /// `YYYYMMDDHHMMSSZ`) or named an impossible date.
    BadTime,
}

impl core::fmt::Display for DerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("DER input is truncated"),
            Self::BadLength => f.write_str("DER length is not definite and minimal"),
            Self::BadTag => f.write_str("DER tag uses the high-tag-number form"),
            Self::UnexpectedTag { expected, found } => {
                write!(f, "expected DER tag 0x{expected:02x}, found 0x{found:02x}")
            }
            Self::TrailingData => f.write_str("trailing data after a DER structure"),
            Self::BadInteger => f.write_str("INTEGER is not minimally encoded"),
            Self::BadBoolean => f.write_str("BOOLEAN is not 0x00 or 0xff"),
            Self::BadBitString => f.write_str("BIT STRING has unused bits or is empty"),
            Self::BadTime => f.write_str("time is not valid DER UTCTime/GeneralizedTime"),
        }
    }
}

impl core::error::Error for DerError {}

pub(crate) mod tag {
    pub(crate) const BOOLEAN: u8 = 0x01;
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const BIT_STRING: u8 = 0x03;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTC_TIME: u8 = 0x17;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;
    /// `[n]` context-specific, constructed.
    pub(crate) const fn context(n: u8) -> u8 {
        0xa0 | n
    }
    /// `[n]` context-specific, primitive.
    pub(crate) const fn context_primitive(n: u8) -> u8 {
        0x80 | n
    }
}

/// Object identifiers, as the bytes of their DER value.
pub(crate) mod oid {
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub(crate) const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub(crate) const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    pub(crate) const EXTENSION_REQUEST: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    pub(crate) const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    pub(crate) const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    pub(crate) const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    pub(crate) const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub(crate) const NAME_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x1e];
    pub(crate) const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    pub(crate) const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    pub(crate) const ANY_EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
    pub(crate) const KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
    pub(crate) const KP_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
}

/// A cursor over DER input. Every read checks bounds; nothing panics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The tag of the next element, if any.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// Reads one element: (tag, value, the whole TLV).
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let start = self.input;
        let (&tag, rest) = start.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::BadTag);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DerError::BadLength);
            }
            let (bytes, after) = rest.split_at_checked(n).ok_or(DerError::Truncated)?;
            rest = after;
            let mut len: usize = 0;
            for &b in bytes {
                len = len.checked_mul(256).ok_or(DerError::BadLength)? | usize::from(b);
            }
            // Minimal: no leading zero byte, and the long form only for lengths >= 128.
            if bytes.first() == Some(&0) || len < 0x80 {
                return Err(DerError::BadLength);
            }
            len
        };
        let (value, after) = rest.split_at_checked(len).ok_or(DerError::Truncated)?;
        let header_len = start.len() - rest.len();
        let whole = start.get(..header_len + len).ok_or(DerError::Truncated)?;
        self.input = after;
        Ok((tag, value, whole))
    }

    /// Reads one element that must carry `expected`, returning its value.
    pub(crate) fn read(&mut self, expected: u8) -> Result<&'a [u8], DerError> {
        self.read_tlv(expected).map(|(value, _)| value)
    }

    /// Reads one element that must carry `expected`, returning (value, whole TLV).
    pub(crate) fn read_tlv(&mut self, expected: u8) -> Result<(&'a [u8], &'a [u8]), DerError> {
        let (tag, value, whole) = self.read_any()?;
        if tag != expected {
            return Err(DerError::UnexpectedTag {
                expected,
                found: tag,
            });
        }
        Ok((value, whole))
    }

    /// Reads an element tagged `expected` if it is next, else nothing.
    pub(crate) fn read_optional(&mut self, expected: u8) -> Result<Option<&'a [u8]>, DerError> {
        if self.peek_tag() == Some(expected) {
            self.read(expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Requires the input to be used up.
    pub(crate) fn finish(&self) -> Result<(), DerError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Parses `input` as exactly one element tagged `expected`; returns its value.
pub(crate) fn parse_exact(input: &[u8], expected: u8) -> Result<&[u8], DerError> {
    let mut r = Reader::new(input);
    let value = r.read(expected)?;
    r.finish()?;
    Ok(value)
}

/// A DER BOOLEAN value.
pub(crate) fn boolean(value: &[u8]) -> Result<bool, DerError> {
    match value {
        [0x00] => Ok(false),
        [0xff] => Ok(true),
        _ => Err(DerError::BadBoolean),
    }
}

/// A non-negative INTEGER's minimal big-endian bytes (checks DER minimality).
pub(crate) fn unsigned_integer(value: &[u8]) -> Result<&[u8], DerError> {
    match value {
        [] => Err(DerError::BadInteger),
        [0x00] => Ok(value),
        [0x00, next, ..] if *next < 0x80 => Err(DerError::BadInteger),
        [0x00, rest @ ..] => Ok(rest),
        [first, ..] if *first >= 0x80 => Err(DerError::BadInteger),
        [0xff, next, ..] if *next >= 0x80 => Err(DerError::BadInteger),
        _ => Ok(value),
    }
}

/// A small non-negative INTEGER (at most `u32`).
pub(crate) fn small_unsigned(value: &[u8]) -> Result<u32, DerError> {
    let bytes = unsigned_integer(value)?;
    if bytes.len() > 4 {
        return Err(DerError::BadInteger);
    }
    Ok(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// A BIT STRING with no unused bits (keys and signatures).
pub(crate) fn bit_string_octets(value: &[u8]) -> Result<&[u8], DerError> {
    match value.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err(DerError::BadBitString),
    }
}

/// A named-bit BIT STRING (keyUsage) as a little-endian bit set: bit `n` is named bit `n`.
pub(crate) fn named_bits(value: &[u8]) -> Result<u16, DerError> {
    let (&unused, bytes) = value.split_first().ok_or(DerError::BadBitString)?;
    if unused > 7 || bytes.len() > 2 || (bytes.is_empty() && unused != 0) {
        return Err(DerError::BadBitString);
    }
    // The unused bits must be zero. (DER also wants no trailing zero bits; some issuers get
    // that wrong and it changes no meaning, so it is tolerated.)
    if let Some(&last) = bytes.last() {
        let mask = (1u8 << unused) - 1;
        if last & mask != 0 {
            return Err(DerError::BadBitString);
        }
    }
    let mut set = 0u16;
    for (i, &byte) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                set |= 1 << (i * 8 + bit);
            }
        }
    }
    Ok(set)
}

/// A validity time: UTCTime (years 1950–2049) or GeneralizedTime, both in their DER form.
pub(crate) fn time(tag: u8, value: &[u8]) -> Result<UnixTime, DerError> {
    let (year, rest) = match tag {
        tag::UTC_TIME if value.len() == 13 => {
            let (yy, rest) = value.split_at_checked(2).ok_or(DerError::BadTime)?;
            let yy = u64::from(digits(yy)?);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        tag::GENERALIZED_TIME if value.len() == 15 => {
            let (yyyy, rest) = value.split_at_checked(4).ok_or(DerError::BadTime)?;
            (u64::from(digits(yyyy)?), rest)
        }
        _ => return Err(DerError::BadTime),
    };
    let field = |i: usize| -> Result<u8, DerError> {
        let two = rest.get(i..i + 2).ok_or(DerError::BadTime)?;
        u8::try_from(digits(two)?).map_err(|_| DerError::BadTime)
    };
    if rest.get(10) != Some(&b'Z') {
        return Err(DerError::BadTime);
    }
    let (mo, d, h, mi, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if year < 1970 {
        // Before the epoch (UTCTime 1950–1969): valid dates clamp to the epoch, which keeps
        // every comparison with a later time the same. The calendar repeats every 400 years.
        return UnixTime::from_civil(year + 400, mo, d, h, mi, s)
            .map(|_| UnixTime::EPOCH)
            .ok_or(DerError::BadTime);
    }
    UnixTime::from_civil(year, mo, d, h, mi, s).ok_or(DerError::BadTime)
}

fn digits(ascii: &[u8]) -> Result<u32, DerError> {
    ascii.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(DerError::BadTime)
        }
    })
}

/// A DER writer over a caller buffer. A write that does not fit sets the writer to failed and
/// records how much room was needed; the caller checks [`Writer::finish`].
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    pub(crate) fn bytes(&mut self, data: &[u8]) {
        let end = self.pos + data.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) if !self.overflow => dst.copy_from_slice(data),
            _ => self.overflow = true,
        }
        self.pos = end;
    }

    /// Writes a tag and a length header.
    pub(crate) fn header(&mut self, tag: u8, len: usize) {
        self.bytes(&[tag]);
        let mut tmp = [0u8; 5];
        let n = encode_length(len, &mut tmp);
        self.bytes(tmp.get(..n).unwrap_or(&[]));
    }

    /// Writes a complete element.
    pub(crate) fn tlv(&mut self, tag: u8, value: &[u8]) {
        self.header(tag, value.len());
        self.bytes(value);
    }

    /// The written bytes, or the size that was needed.
    pub(crate) fn finish(self) -> Result<&'a [u8], usize> {
        if self.overflow {
            Err(self.pos)
        } else {
            self.buf.get(..self.pos).ok_or(self.pos)
        }
    }
}

/// Size of a header for a value of `len` bytes.
pub(crate) const fn header_len(len: usize) -> usize {
    match len {
        0..=0x7f => 2,
        0x80..=0xff => 3,
        0x100..=0xffff => 4,
        0x1_0000..=0xff_ffff => 5,
        _ => 6,
    }
}

fn encode_length(len: usize, out: &mut [u8; 5]) -> usize {
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let significant = bytes.get(skip..).unwrap_or(&[]);
    if len < 0x80 {
        out[0] = significant.last().copied().unwrap_or(0);
        1
    } else {
        let n = significant.len().min(4);
        #[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
        // n <= 4.
        {
            out[0] = 0x80 | n as u8;
        }
        for (dst, src) in out
            .iter_mut()
            .skip(1)
            .zip(significant.iter().rev().take(n).rev())
        {
            *dst = *src;
        }
        1 + n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_match_dotted_forms() {
        use ::der::asn1::ObjectIdentifier as O;
        let pairs: &[(&[u8], &str)] = &[
            (oid::EC_PUBLIC_KEY, "1.2.840.10045.2.1"),
            (oid::PRIME256V1, "1.2.840.10045.3.1.7"),
            (oid::ECDSA_WITH_SHA256, "1.2.840.10045.4.3.2"),
            (oid::ED25519, "1.3.101.112"),
            (oid::EXTENSION_REQUEST, "1.2.840.113549.1.9.14"),
            (oid::SUBJECT_KEY_ID, "2.5.29.14"),
            (oid::KEY_USAGE, "2.5.29.15"),
            (oid::SUBJECT_ALT_NAME, "2.5.29.17"),
            (oid::BASIC_CONSTRAINTS, "2.5.29.19"),
            (oid::NAME_CONSTRAINTS, "2.5.29.30"),
            (oid::AUTHORITY_KEY_ID, "2.5.29.35"),
            (oid::EXT_KEY_USAGE, "2.5.29.37"),
            (oid::ANY_EXTENDED_KEY_USAGE, "2.5.29.37.0"),
            (oid::KP_SERVER_AUTH, "1.3.6.1.5.5.7.3.1"),
            (oid::KP_CLIENT_AUTH, "1.3.6.1.5.5.7.3.2"),
        ];
        for (bytes, dotted) in pairs {
            assert_eq!(*bytes, O::new_unwrap(dotted).as_bytes(), "{dotted}");
        }
    }

    #[test]
    fn lengths_round_trip_and_reject_non_minimal() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536] {
            let mut buf = [0u8; 70_000];
            let mut w = Writer::new(&mut buf);
            let value = [7u8; 65_536];
            w.tlv(tag::OCTET_STRING, &value[..len]);
            let out = w.finish().unwrap();
            assert_eq!(out.len(), header_len(len) + len);
            assert_eq!(parse_exact(out, tag::OCTET_STRING).unwrap().len(), len);
        }
        assert_eq!(
            parse_exact(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5], 4),
            Err(DerError::BadLength)
        );
        assert_eq!(
            parse_exact(&[0x04, 0x82, 0x00, 0x80], 4),
            Err(DerError::BadLength)
        );
        assert_eq!(parse_exact(&[0x04, 0x80], 4), Err(DerError::BadLength));
        assert_eq!(parse_exact(&[0x04, 0x03, 1], 4), Err(DerError::Truncated));
        assert_eq!(
            parse_exact(&[0x04, 0x00, 0x00], 4),
            Err(DerError::TrailingData)
        );
        assert_eq!(parse_exact(&[0x1f, 0x00], 0x1f), Err(DerError::BadTag));
    }

    #[test]
    fn writer_reports_needed_size() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        w.tlv(tag::OCTET_STRING, &[1, 2, 3]);
        assert_eq!(w.finish(), Err(5));
    }

    #[test]
    fn integers_booleans_bits_times() {
        assert_eq!(unsigned_integer(&[0x00, 0x80]), Ok(&[0x80][..]));
        assert_eq!(unsigned_integer(&[0x00, 0x7f]), Err(DerError::BadInteger));
        assert_eq!(unsigned_integer(&[0x80]), Err(DerError::BadInteger));
        assert_eq!(small_unsigned(&[0x01, 0x00]), Ok(256));
        assert_eq!(boolean(&[0x01]), Err(DerError::BadBoolean));
        // keyUsage digitalSignature | keyCertSign = bits 0 and 5: 0b1000_0100, 2 unused bits.
        assert_eq!(named_bits(&[0x02, 0x84]), Ok(0b10_0001));
        assert_eq!(named_bits(&[0x03, 0x84]), Err(DerError::BadBitString));
        assert_eq!(
            time(tag::UTC_TIME, b"491231235959Z"),
            Ok(UnixTime::from_secs(2_524_607_999))
        );
        assert_eq!(time(tag::UTC_TIME, b"500101000000Z"), Ok(UnixTime::EPOCH));
        assert_eq!(
            time(tag::UTC_TIME, b"500230000000Z"),
            Err(DerError::BadTime)
        );
        assert_eq!(
            time(tag::GENERALIZED_TIME, b"20500101000000Z"),
            UnixTime::from_civil(2050, 1, 1, 0, 0, 0).ok_or(DerError::BadTime)
        );
        assert_eq!(time(tag::UTC_TIME, b"2001010000Z"), Err(DerError::BadTime));
        assert_eq!(
            time(tag::GENERALIZED_TIME, b"20500101000000+0000"),
            Err(DerError::BadTime)
        );
        assert_eq!(
            time(tag::GENERALIZED_TIME, b"20500230000000Z"),
            Err(DerError::BadTime)
        );
    }
}
