//! Calendar dates without a date crate, in one place for every backend and the CLI: the SCP
//! version policy compares days, cloud answers carry ISO 8601 / RFC 3339 timestamps
//! (`"created_at": "2025-07-22T09:00:00Z"`, seed 003), and `ctl` prints them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A day of the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Date {
    /// A date from its parts.
    pub const fn new(year: i64, month: u32, day: u32) -> Self {
        Self { year, month, day }
    }

    /// The UTC day `time` falls on.
    pub fn of(time: SystemTime) -> Self {
        let seconds = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64) - 1,
        };
        from_days(seconds.div_euclid(86_400))
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        Self::of(SystemTime::now())
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '-');
        let year: i64 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: u32 = parts.next()?.parse().ok()?;
        let date = Self::new(year, month, day);
        valid(date).then_some(date)
    }
}

fn valid(date: Date) -> bool {
    // Four-digit years (RFC 3339), which also keeps the day arithmetic far from overflow.
    (0..=9999).contains(&date.year)
        && (1..=12).contains(&date.month)
        && date.day >= 1
        && date.day <= days_in_month(date)
}

/// Exactly two ASCII digits, as RFC 3339 writes clock and zone fields (no sign, no space).
fn two_digits(text: &str) -> Option<i64> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(date: Date) -> u32 {
    match date.month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let y = date.year;
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Days since 1970-01-01 of a date (the usual era-based civil-calendar arithmetic).
pub fn to_days(date: Date) -> i64 {
    let year = if date.month <= 2 {
        date.year - 1
    } else {
        date.year
    };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(date.month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(date.day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` days after 1970-01-01.
pub fn from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    Date { year, month, day }
}

/// Parses an RFC 3339 timestamp (`2025-07-22T09:00:00Z`, `...09:00:00.123456+09:00`).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let date = Date::parse(date)?;
    // `rest` comes from the cloud: a multi-byte character may straddle byte 8.
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return None;
    }
    let (clock, mut zone) = rest.split_at(8);
    let mut fields = clock.split(':');
    let hour = two_digits(fields.next()?)?;
    let minute = two_digits(fields.next()?)?;
    let second = two_digits(fields.next()?)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut nanos: u32 = 0;
    if let Some(fraction) = zone.strip_prefix('.') {
        let digits = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        let (frac, after) = fraction.split_at(digits);
        if frac.is_empty() {
            return None;
        }
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = padded.parse().ok()?;
        zone = after;
    }
    let offset_seconds: i64 = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = zone[1..].split_once(':')?;
            let h = two_digits(h).filter(|h| *h <= 23)?;
            let m = two_digits(m).filter(|m| *m <= 59)?;
            sign * (h * 3600 + m * 60)
        }
    };
    let seconds = to_days(date) * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let base = if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds as u64))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_times_are_refused_without_panic() {
        // Found by the scp fuzz target: a character straddling byte 8 of the clock panicked
        // (in release builds too); huge years and zones overflowed in debug builds.
        for text in [
            "2026-01-01T00:00:0\u{e9}Z",
            "9223372036854775807-01-01T00:00:00Z",
            "2026-01-01T00:00:00+9999999999999999:00",
            "2026-01-01T+1:00:00Z",
            "2026-01-01T00:00:00+-1:00",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert!(parse_rfc3339("2026-01-01T00:00:00.5+05:30").is_some());
    }

    #[test]
    fn days_round_trip_and_known_dates() {
        assert_eq!(to_days(Date::new(1970, 1, 1)), 0);
        // `date -u -d 2026-11-25 +%s` / 86400 = 20782
        assert_eq!(to_days(Date::new(2026, 11, 25)), 20_782);
        assert_eq!(to_days(Date::new(2000, 3, 1)), 11_017);
        for days in [-1000, -1, 0, 59, 60, 11_016, 20_782, 100_000] {
            assert_eq!(to_days(from_days(days)), days);
        }
        assert_eq!(
            Date::of(UNIX_EPOCH + Duration::from_secs(20_782 * 86_400 + 3600)),
            Date::new(2026, 11, 25)
        );
    }

    #[test]
    fn parses_dates_and_timestamps() {
        assert_eq!(Date::parse("2025-12-31"), Some(Date::new(2025, 12, 31)));
        assert_eq!(Date::parse("2025-02-29"), None);
        assert_eq!(Date::parse("2024-02-29"), Some(Date::new(2024, 2, 29)));
        assert_eq!(Date::parse("2025-13-01"), None);
        // `date -u -d 2025-07-22T09:00:00Z +%s` = 1753174800
        let seed = parse_rfc3339("2025-07-22T09:00:00Z").expect("seed timestamp");
        assert_eq!(seed, UNIX_EPOCH + Duration::from_secs(1_753_174_800));
        let zoned = parse_rfc3339("2025-07-22T18:00:00.5+09:00").expect("zoned");
        assert_eq!(
            zoned,
            UNIX_EPOCH + Duration::from_secs(1_753_174_800) + Duration::from_millis(500)
        );
        assert_eq!(parse_rfc3339("2025-07-22"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
