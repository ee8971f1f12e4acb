//! Logging that a peer cannot flood: [`Throttle`] lets one line through per interval and
//! counts the rest, so a wave of refused handshakes or failed accepts writes a few lines that
//! say how many, not one line each.
//!
//! Text a peer chose (IDs, namespaces, error messages quoting it) goes into log fields with
//! `?` (Rust's `Debug`, which escapes control characters), never raw, so a newline in it cannot
//! start a fake log line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per `interval` at most; see the module doc.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// When the last line was let through, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl Throttle {
    /// A throttle letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(None),
        }
    }

    /// Whether this event may be logged at `now`: `Some(n)` with the number of events held
    /// back since the last line (to be logged with it), or `None` to stay silent (the event is
    /// counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let Ok(mut state) = self.state.lock() else {
            return Some(0);
        };
        match *state {
            Some((last, ref mut held)) if now.saturating_duration_since(last) < self.interval => {
                *held += 1;
                None
            }
            Some((_, held)) => {
                *state = Some((now, 0));
                Some(held)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

/// Request text echoed in a message: cut to a readable length, and with control characters
/// (and Unicode line and paragraph separators) escaped, so no echo can break a log line.
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        let admitted = (1..=1000)
            .filter(|i| t.admit(t0 + Duration::from_millis(*i)).is_some())
            .count();
        assert_eq!(admitted, 0);
        assert_eq!(t.admit(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(t.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.admit(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn clip_cuts_and_escapes() {
        assert_eq!(clip("a\nb\u{1b}[31m\u{2028}"), "a\\nb\\u{1b}[31m\\u{2028}");
        assert_eq!(clip(&"x".repeat(100)), format!("{}…", "x".repeat(80)));
    }
}
