//! Durations written the way operators write them: `"500ms"`, `"2s"`, `"1m30s"`, `"1.5s"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration parsed from a human string; serialises back to the same style.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected a number and a unit (us, ms, s, m, h), e.g. \"500ms\" or \"2s\"")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let invalid = || DurationError::Invalid(s.to_string());
        let mut total_ns: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let (num, tail) = rest.split_at(num_end);
            let unit_end = tail
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            if num.is_empty() {
                return Err(invalid());
            }
            let unit_ns: u128 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(invalid()),
            };
            total_ns = total_ns
                .checked_add(parse_scaled(num, unit_ns).ok_or_else(invalid)?)
                .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
            rest = tail;
        }
        let secs = u64::try_from(total_ns / 1_000_000_000)
            .map_err(|_| DurationError::Overflow(s.to_string()))?;
        Ok(Self(Duration::new(secs, (total_ns % 1_000_000_000) as u32)))
    }
}

/// `num` (decimal, optional fraction) times `unit_ns`, in nanoseconds.
fn parse_scaled(num: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut ns = int.checked_mul(unit_ns)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        ns = ns.checked_add(digits.checked_mul(unit_ns)? / scale)?;
    }
    Some(ns)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 && d.as_secs() > 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else if d.as_nanos().is_multiple_of(1_000) {
            write!(f, "{}us", d.as_micros())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u128 {
        s.parse::<HumanDuration>()
            .map(|d| d.0.as_millis())
            .unwrap_or(u128::MAX)
    }

    #[test]
    fn parses_common_forms() {
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("2s"), 2000);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms(" 10ms "), 10);
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "5",
            "ms",
            "5 parsecs",
            "1..2s",
            "-1s",
            "1s2",
            "99999999999999999999999h",
        ] {
            assert!(
                bad.parse::<HumanDuration>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["500ms", "2s", "150us", "1ns"] {
            let d: HumanDuration = s.parse().unwrap_or_default();
            assert_eq!(d.to_string(), s);
        }
    }
}
