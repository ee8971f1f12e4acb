//! PEM (RFC 7468, as openssl writes it) decoded into and encoded from caller buffers.
//!
//! Reading is tolerant where real files are: text before, between and after blocks (comments,
//! `openssl x509 -text` output) is skipped, lines may end in CRLF, and line length may be any
//! multiple of four. It is strict about the block itself: matching BEGIN/END labels, base64
//! with padding only at the end, and no RFC 1421 headers. Bundles of several certificates are
//! iterated with [`blocks`] or decoded all at once into one buffer with [`decode_all`];
//! nothing allocates or panics.

use base64ct::{Base64, Encoding as _};
use core::fmt;

/// The block labels Sigil reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    /// `CERTIFICATE`
    Certificate,
    /// `CERTIFICATE REQUEST`
    CertificateRequest,
    /// `PRIVATE KEY` (PKCS#8)
    PrivateKey,
    /// `EC PRIVATE KEY` (SEC1)
    EcPrivateKey,
}

impl Label {
    /// The label text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "CERTIFICATE",
            Self::CertificateRequest => "CERTIFICATE REQUEST",
            Self::PrivateKey => "PRIVATE KEY",
            Self::EcPrivateKey => "EC PRIVATE KEY",
        }
    }

    /// The label for `text`, if it is one of these.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Certificate,
            Self::CertificateRequest,
            Self::PrivateKey,
            Self::EcPrivateKey,
        ]
        .into_iter()
        .find(|l| l.as_str() == text)
    }
}

/// Why PEM input was rejected. Lines are numbered from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The block begun on `line` has no END line.
    MissingEnd {
        /// The BEGIN line.
        line: usize,
    },
    /// The END line's label differs from the BEGIN line's.
    LabelMismatch {
        /// The END line.
        line: usize,
    },
    /// A line is not valid base64 (or has padding before the last line).
    BadBase64 {
        /// The line.
        line: usize,
    },
    /// A line other than the last has a length that is not a multiple of four.
    BadLineLength {
        /// The line.
        line: usize,
    },
    /// The block has RFC 1421 headers (`Proc-Type:` …), e.g. an encrypted legacy key.
    Headers {
        /// The line.
        line: usize,
    },
    /// The block has no content.
    Empty {
        /// The BEGIN line.
        line: usize,
    },
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// No block with the label asked for.
    NotFound,
    /// More blocks than the caller has room for.
    TooMany {
        /// The room.
        max: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingEnd { line } => {
                write!(f, "PEM block begun on line {line} has no END line")
            }
            Self::LabelMismatch { line } => {
                write!(
                    f,
                    "PEM END label on line {line} differs from its BEGIN label"
                )
            }
            Self::BadBase64 { line } => write!(f, "PEM line {line} is not valid base64"),
            Self::BadLineLength { line } => {
                write!(f, "PEM line {line} length is not a multiple of 4")
            }
            Self::Headers { line } => {
                write!(
                    f,
                    "PEM line {line} is a header (encrypted or legacy PEM is not supported)"
                )
            }
            Self::Empty { line } => write!(f, "PEM block begun on line {line} is empty"),
            Self::BufferTooSmall { needed } => {
                write!(f, "PEM output buffer too small: {needed} bytes needed")
            }
            Self::NotFound => f.write_str("no PEM block with the expected label"),
            Self::TooMany { max } => write!(f, "more than {max} PEM blocks"),
        }
    }
}

impl core::error::Error for Error {}

/// One PEM block, found but not yet decoded.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    label: &'a str,
    body: &'a str,
    line: usize,
}

impl<'a> Block<'a> {
    /// The label text as written.
    pub const fn label_str(&self) -> &'a str {
        self.label
    }

    /// The label, if Sigil knows it.
    pub fn label(&self) -> Option<Label> {
        Label::parse(self.label)
    }

    /// An upper bound of the decoded length.
    pub fn decoded_len_max(&self) -> usize {
        self.body.len() / 4 * 3 + 3
    }

    /// Decodes the body into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] (with the exact size), [`Error::Headers`],
    /// [`Error::BadLineLength`], [`Error::BadBase64`], [`Error::Empty`].
    pub fn decode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], Error> {
        // First pass: check the shape and find the exact length.
        let mut chars = 0usize;
        let mut padding = 0usize;
        let mut lines = self.lines().peekable();
        while let Some((n, line)) = lines.next() {
            if line.contains(':') {
                return Err(Error::Headers { line: n });
            }
            let last = lines.peek().is_none();
            if line.len() % 4 != 0 {
                return Err(if last {
                    Error::BadBase64 { line: n }
                } else {
                    Error::BadLineLength { line: n }
                });
            }
            if !last && line.ends_with('=') {
                return Err(Error::BadBase64 { line: n });
            }
            chars += line.len();
            if last {
                padding = line.bytes().rev().take_while(|&b| b == b'=').count();
            }
        }
        if chars == 0 {
            return Err(Error::Empty { line: self.line });
        }
        let needed = (chars / 4 * 3).saturating_sub(padding);
        let out = buf
            .get_mut(..needed)
            .ok_or(Error::BufferTooSmall { needed })?;
        let mut at = 0;
        for (n, line) in self.lines() {
            let dst = out.get_mut(at..).ok_or(Error::BadBase64 { line: n })?;
            let written = Base64::decode(line, dst)
                .map_err(|_| Error::BadBase64 { line: n })?
                .len();
            at += written;
        }
        if at != needed {
            return Err(Error::BadBase64 { line: self.line });
        }
        Ok(out)
    }

    /// Non-empty body lines with their line numbers, trimmed of `\r` and trailing blanks.
    fn lines(&self) -> impl Iterator<Item = (usize, &'a str)> {
        let first = self.line + 1;
        self.body
            .split('\n')
            .enumerate()
            .map(move |(i, l)| (first + i, l.trim_end_matches(['\r', ' ', '\t'])))
            .filter(|(_, l)| !l.is_empty())
    }
}

/// The PEM blocks of `text`, in order. Iteration stops after the first error.
pub fn blocks(text: &str) -> Blocks<'_> {
    Blocks {
        rest: text,
        line: 1,
        done: false,
    }
}

/// Iterator returned by [`blocks`].
#[derive(Clone, Debug)]
pub struct Blocks<'a> {
    rest: &'a str,
    line: usize,
    done: bool,
}

impl<'a> Blocks<'a> {
    /// Takes the next line (without its `\n`), advancing the line counter.
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = self.rest.split_once('\n').unwrap_or((self.rest, ""));
        self.rest = rest;
        let n = self.line;
        self.line += 1;
        Some((n, line.trim_end_matches(['\r', ' ', '\t'])))
    }
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Result<Block<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (begin_line, label) = loop {
            let (n, line) = self.next_line()?;
            if let Some(label) = line
                .strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                break (n, label);
            }
        };
        let body_start = self.rest;
        loop {
            let before = self.rest;
            let Some((n, line)) = self.next_line() else {
                self.done = true;
                return Some(Err(Error::MissingEnd { line: begin_line }));
            };
            if let Some(end) = line
                .strip_prefix("-----END ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                if end != label {
                    self.done = true;
                    return Some(Err(Error::LabelMismatch { line: n }));
                }
                let body_len = body_start.len() - before.len();
                let body = body_start.get(..body_len).unwrap_or("");
                return Some(Ok(Block {
                    label,
                    body,
                    line: begin_line,
                }));
            }
            if line.starts_with("-----BEGIN ") {
                self.done = true;
                return Some(Err(Error::MissingEnd { line: begin_line }));
            }
        }
    }
}

/// Decodes the first block labelled `label` into `buf` (blocks with other labels are skipped).
///
/// # Errors
///
/// [`Error::NotFound`], or the error of the block or of the text before it.
pub fn decode_first<'b>(text: &str, label: Label, buf: &'b mut [u8]) -> Result<&'b [u8], Error> {
    for block in blocks(text) {
        let block = block?;
        if block.label() == Some(label) {
            return block.decode(buf);
        }
    }
    Err(Error::NotFound)
}

/// Decodes every block labelled `label` into consecutive parts of `buf`.
///
/// # Errors
///
/// [`Error::NotFound`] if there is none, [`Error::TooMany`] beyond `N`,
/// [`Error::BufferTooSmall`] (the size needed for the block that did not fit, on top of
/// what was used), or a block's error.
pub fn decode_all<'b, const N: usize>(
    text: &str,
    label: Label,
    buf: &'b mut [u8],
) -> Result<heapless::Vec<&'b [u8], N>, Error> {
    let mut out = heapless::Vec::new();
    let mut rest: &'b mut [u8] = buf;
    let mut used = 0;
    for block in blocks(text) {
        let block = block?;
        if block.label() != Some(label) {
            continue;
        }
        if out.len() == N {
            return Err(Error::TooMany { max: N });
        }
        let len = match block.decode(rest) {
            Ok(d) => d.len(),
            Err(Error::BufferTooSmall { needed }) => {
                return Err(Error::BufferTooSmall {
                    needed: used + needed,
                })
            }
            Err(e) => return Err(e),
        };
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        used += len;
        // `out` has room: its length was checked against N above.
        let _ = out.push(&*head);
    }
    if out.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(out)
}

/// Exact length of [`encode`]'s output for `der_len` bytes.
pub const fn encoded_len(label: Label, der_len: usize) -> usize {
    let b64 = der_len.div_ceil(3) * 4;
    let lines = b64.div_ceil(64);
    let label = label.as_str().len();
    (11 + label + 5 + 1) + b64 + lines + (9 + label + 5 + 1)
}

/// Encodes `der` as PEM: 64-column lines, `\n` line ends, a final newline.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] with the exact size ([`encoded_len`]).
pub fn encode<'b>(label: Label, der: &[u8], buf: &'b mut [u8]) -> Result<&'b str, Error> {
    let needed = encoded_len(label, der.len());
    let out = buf
        .get_mut(..needed)
        .ok_or(Error::BufferTooSmall { needed })?;
    let mut at = 0;
    let mut put = |bytes: &[u8], out: &mut [u8]| {
        if let Some(dst) = out.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(b"-----BEGIN ", out);
    put(label.as_str().as_bytes(), out);
    put(b"-----\n", out);
    for chunk in der.chunks(48) {
        let mut line = [0u8; 64];
        let text =
            Base64::encode(chunk, &mut line).map_err(|_| Error::BufferTooSmall { needed })?;
        put(text.as_bytes(), out);
        put(b"\n", out);
    }
    put(b"-----END ", out);
    put(label.as_str().as_bytes(), out);
    put(b"-----\n", out);
    core::str::from_utf8(out).map_err(|_| Error::BufferTooSmall { needed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pem(label: Label, der: &[u8]) -> String {
        let mut buf = vec![0u8; encoded_len(label, der.len())];
        encode(label, der, &mut buf).unwrap().to_owned()
    }

    #[test]
    fn openssl_style_bundle_with_text_and_crlf() {
        let a: Vec<u8> = (0..100u8).collect();
        let b: Vec<u8> = (0..49u8).rev().collect();
        let c = vec![0xffu8; 1];
        let text = format!(
            "# comment\nsubject=O=x\n{}\r\nnoise\n{}{}",
            pem(Label::Certificate, &a).replace('\n', "\r\n"),
            pem(Label::PrivateKey, &b),
            pem(Label::Certificate, &c)
        );
        let mut buf = [0u8; 512];
        let all = decode_all::<4>(&text, Label::Certificate, &mut buf).unwrap();
        assert_eq!(all.as_slice(), &[&a[..], &c[..]]);
        let mut buf = [0u8; 64];
        assert_eq!(
            decode_first(&text, Label::PrivateKey, &mut buf).unwrap(),
            &b[..]
        );
        let labels: Vec<_> = blocks(&text).map(|b| b.unwrap().label()).collect();
        assert_eq!(
            labels,
            [
                Some(Label::Certificate),
                Some(Label::PrivateKey),
                Some(Label::Certificate)
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let good = pem(Label::Certificate, &[1, 2, 3, 4, 5]);
        let truncated = good.replace("-----END CERTIFICATE-----\n", "");
        assert_eq!(
            blocks(&truncated).next().unwrap().unwrap_err(),
            Error::MissingEnd { line: 1 }
        );
        let mismatch = good.replace("END CERTIFICATE", "END PRIVATE KEY");
        assert_eq!(
            blocks(&mismatch).next().unwrap().unwrap_err(),
            Error::LabelMismatch { line: 3 }
        );
        let mut buf = [0u8; 16];
        let bad = good.replace("AQIDBAU=", "AQI*BAU=");
        assert_eq!(
            decode_first(&bad, Label::Certificate, &mut buf),
            Err(Error::BadBase64 { line: 2 })
        );
        let wrapped = "-----BEGIN CERTIFICATE-----\nAQI\nDBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            decode_first(wrapped, Label::Certificate, &mut buf),
            Err(Error::BadLineLength { line: 2 })
        );
        let headers = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAQIDBAU=\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            decode_first(headers, Label::EcPrivateKey, &mut buf),
            Err(Error::Headers { line: 2 })
        );
        let empty = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        assert_eq!(
            decode_first(empty, Label::Certificate, &mut buf),
            Err(Error::Empty { line: 1 })
        );
        let mut small = [0u8; 4];
        assert_eq!(
            decode_first(&good, Label::Certificate, &mut small),
            Err(Error::BufferTooSmall { needed: 5 })
        );
        assert_eq!(
            decode_first("nothing here", Label::Certificate, &mut buf),
            Err(Error::NotFound)
        );
        let two = format!("{good}{good}");
        assert_eq!(
            decode_all::<1>(&two, Label::Certificate, &mut buf),
            Err(Error::TooMany { max: 1 })
        );
        let mut tiny = [0u8; 7];
        assert_eq!(
            decode_all::<2>(&two, Label::Certificate, &mut tiny),
            Err(Error::BufferTooSmall { needed: 10 })
        );
        let mut out = [0u8; 10];
        assert_eq!(
            encode(Label::Certificate, &[1, 2, 3], &mut out),
            Err(Error::BufferTooSmall {
                needed: encoded_len(Label::Certificate, 3)
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(der in proptest::collection::vec(any::<u8>(), 0..600)) {
            for label in [Label::Certificate, Label::CertificateRequest, Label::PrivateKey, Label::EcPrivateKey] {
                let text = pem(label, &der);
                prop_assert_eq!(text.len(), encoded_len(label, der.len()));
                prop_assert!(text.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
                let mut buf = vec![0u8; der.len()];
                match decode_first(&text, label, &mut buf) {
                    Ok(back) => prop_assert_eq!(back, &der[..]),
                    Err(e) => {
                        let empty = der.is_empty() && matches!(e, Error::Empty { line: 1 });
                        prop_assert!(empty);
                    }
                }
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,300}", prefix in "(-----BEGIN CERTIFICATE-----\n)?") {
            let text = format!("{prefix}{text}");
            let mut buf = [0u8; 256];
            for b in blocks(&text).flatten() {
                let _ = b.decode(&mut buf);
            }
            let _ = decode_all::<3>(&text, Label::Certificate, &mut buf);
        }
    }
}
