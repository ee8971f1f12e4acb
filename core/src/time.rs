//! Time as an argument.
//!
//! The core never reads a clock. Certificate validity is checked against a [`UnixTime`] (wall
//! clock) the caller passes in; timers and retries run on an [`Instant`] (monotonic, from any
//! origin such as boot); durations are [`core::time::Duration`].

use core::fmt;
use core::time::Duration;

/// Seconds since the Unix epoch (1970-01-01T00:00:00Z), as a certificate's validity uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The epoch itself.
    pub const EPOCH: Self = Self(0);

    /// A time `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_secs()))
    }

    /// `self - d`, saturating at the epoch.
    pub const fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_secs()))
    }

    /// The civil date and time (UTC) of this instant: (year, month, day, hour, minute, second).
    pub const fn to_civil(self) -> (u64, u8, u8, u8, u8, u8) {
        let days = self.0 / 86_400;
        let rem = self.0 % 86_400;
        // Howard Hinnant's days-to-civil, for non-negative day counts.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
        #[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
        // month <= 12, day <= 31, hour < 24, minute and second < 60: all fit in u8.
        (
            year,
            month as u8,
            day as u8,
            (rem / 3_600) as u8,
            (rem % 3_600 / 60) as u8,
            (rem % 60) as u8,
        )
    }

    /// The instant of a civil UTC date and time, or `None` if a field is out of range or the date
    /// is before the epoch.
    pub fn from_civil(year: u64, month: u8, day: u8, h: u8, m: u8, s: u8) -> Option<Self> {
        if year < 1970
            || month == 0
            || month > 12
            || day == 0
            || day > 31
            || h > 23
            || m > 59
            || s > 59
        {
            return None;
        }
        let (mo, d) = (u64::from(month), u64::from(day));
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let month_len = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if day > month_len {
            return None;
        }
        // Howard Hinnant's days-from-civil.
        let y = if mo <= 2 { year - 1 } else { year };
        let era = y / 400;
        let yoe = y - era * 400;
        let mp = if mo > 2 { mo - 3 } else { mo + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(Self(
            days * 86_400 + u64::from(h) * 3_600 + u64::from(m) * 60 + u64::from(s),
        ))
    }
}

/// A point on a monotonic clock, in milliseconds from an origin the driver chooses (boot, say).
/// It never goes backwards; it says nothing about the date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(0);

    /// `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// RFC 3339 in UTC, e.g. `2026-11-22T14:00:00Z`.
impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.to_civil();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for secs in [
            0,
            1,
            86_399,
            951_782_400,
            1_700_000_000,
            4_102_444_800,
            253_402_300_799,
        ] {
            let t = UnixTime::from_secs(secs);
            let (y, mo, d, h, mi, s) = t.to_civil();
            assert_eq!(UnixTime::from_civil(y, mo, d, h, mi, s), Some(t), "{secs}");
        }
        assert_eq!(
            UnixTime::from_secs(951_782_400).to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(UnixTime::from_civil(2001, 2, 29, 0, 0, 0), None);
        assert_eq!(UnixTime::from_civil(1969, 12, 31, 0, 0, 0), None);
    }
}
