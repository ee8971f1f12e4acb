//! Lines to the host (semihosting stdout) without `core::fmt`: a line is a list of string
//! pieces and unsigned numbers ([`say!`](crate::say)), written piece by piece. Formatting
//! machinery, `Display` impls and their strings were 41 KB of the `device` image's flash
//! (measured by building it, locally, with every print removed: 130,768 → 89,640 B at opt "z"); these
//! lines cost a few hundred bytes. Errors are logged by their fixed names
//! (`chain::ErrorKind::name`, `ServerRefusal::name`, ...), not their `Display` text.

use cortex_m_semihosting::hprint;

/// One piece of a line.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// Text as it is.
    Str(&'a str),
    /// An unsigned number, in decimal.
    Num(u64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Self::Str(s)
    }
}

impl From<u64> for Arg<'_> {
    fn from(n: u64) -> Self {
        Self::Num(n)
    }
}

impl From<u32> for Arg<'_> {
    fn from(n: u32) -> Self {
        Self::Num(u64::from(n))
    }
}

impl From<u16> for Arg<'_> {
    fn from(n: u16) -> Self {
        Self::Num(u64::from(n))
    }
}

impl From<u8> for Arg<'_> {
    fn from(n: u8) -> Self {
        Self::Num(u64::from(n))
    }
}

impl From<usize> for Arg<'_> {
    fn from(n: usize) -> Self {
        Self::Num(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl From<bool> for Arg<'_> {
    fn from(b: bool) -> Self {
        Self::Str(if b { "true" } else { "false" })
    }
}

/// `n` in decimal, in `buf`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        // The digit is 0..=9: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        if let Some(b) = buf.get_mut(at) {
            *b = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    core::str::from_utf8(buf.get(at..).unwrap_or(&[])).unwrap_or("?")
}

/// Writes the pieces, then a newline.
pub fn line(args: &[Arg<'_>]) {
    for a in args {
        match *a {
            Arg::Str(s) => hprint!(s),
            Arg::Num(n) => {
                let mut buf = [0u8; 20];
                hprint!(decimal(n, &mut buf));
            }
        }
    }
    hprint!("\n");
}

/// Writes one line of pieces (`&str`, unsigned integers, `bool`): `say!("took ", ms, " ms")`.
#[macro_export]
macro_rules! say {
    ($($a:expr),* $(,)?) => {
        $crate::log::line(&[$($crate::log::Arg::from($a)),*])
    };
}
