//! Five-field cron expressions evaluated in an IANA time zone.
//!
//! The grammar is the classic one (minute hour day-of-month month day-of-week): `*`, numbers,
//! ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`, lists `a,b`, month names `jan`..`dec`, weekday
//! names `sun`..`sat` (0 and 7 are both Sunday) and the macros `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). As in Vixie cron, when both
//! day fields are restricted a day matches if either does.
//!
//! Slots are wall-clock times in the zone. Across a daylight-saving change a time that does not
//! exist (spring forward) runs at the same instant shifted by the gap, and a time that happens
//! twice (fall back) runs once, at its first occurrence ("compatible" disambiguation, as RFC 5545).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// How far [`Cron::next_after`] and [`Cron::latest_at_or_before`] search: a bit more than the
/// 4-year leap cycle, so `0 0 29 2 *` is found and an impossible date is reported as such.
const SEARCH_DAYS: u32 = 366 * 5;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.min + i as u32);
        }
        let v: u32 = text
            .parse()
            .map_err(|_| format!("{} field: {text:?} is not a number", self.name))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} field: {v} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The set of values as a bit mask (bit i = value i), and whether the field was `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut mask = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .map_err(|_| format!("{} field: step {s:?} is not a number", self.name))?;
                    if step == 0 {
                        return Err(format!("{} field: step must be at least 1", self.name));
                    }
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} field: range {range} is backwards", self.name));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n` means every n from a to the end of the field.
                (a, if item.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                mask |= 1 << v;
                v += step;
            }
        }
        Ok((mask, text.starts_with('*')))
    }
}

impl Cron {
    /// Parses an expression; the error says which field is wrong and why.
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let expanded = match expression.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => return Err(format!("unknown macro {other:?}")),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        }
        let field = |name, min, max, names| Field {
            name,
            min,
            max,
            names,
        };
        let (minutes, _) = field("minute", 0, 59, &[]).parse(fields[0])?;
        let (hours, _) = field("hour", 0, 23, &[]).parse(fields[1])?;
        let (days, days_star) = field("day-of-month", 1, 31, &[]).parse(fields[2])?;
        let (months, _) = field("month", 1, 12, &MONTHS).parse(fields[3])?;
        let (mut weekdays, weekdays_star) =
            field("day-of-week", 0, 7, &WEEKDAYS).parse(fields[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let cron = Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_restricted: !days_star,
            weekdays_restricted: !weekdays_star,
        };
        // `0 0 30 2 *` parses but never runs: refuse it rather than schedule nothing.
        let probe = Date::constant(2000, 1, 1);
        if !(0..SEARCH_DAYS as i64).any(|d| {
            probe
                .checked_add(jiff::Span::new().days(d))
                .is_ok_and(|day| cron.matches_day(day))
        }) {
            return Err(format!("{expression:?} matches no date"));
        }
        Ok(cron)
    }

    fn matches_day(&self, day: Date) -> bool {
        let in_month = self.months & (1 << day.month()) != 0;
        let dom = self.days & (1 << day.day()) != 0;
        let dow = self.weekdays & (1 << day.weekday().to_sunday_zero_offset()) != 0;
        let day_ok = if self.days_restricted && self.weekdays_restricted {
            dom || dow
        } else {
            dom && dow
        };
        in_month && day_ok
    }

    /// The instants of this day's slots, in `tz`.
    fn slots_on(&self, day: Date, tz: &TimeZone) -> impl Iterator<Item = Timestamp> + '_ {
        let tz = tz.clone();
        let matches = self.matches_day(day);
        (0..24i8)
            .filter(move |h| matches && self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60i8)
                    .filter(move |m| self.minutes & (1 << m) != 0)
                    .map(move |m| DateTime::from_parts(day, jiff::civil::time(h, m, 0, 0)))
            })
            .filter_map(move |dt| tz.to_ambiguous_timestamp(dt).compatible().ok())
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Start a day early: a slot on the previous civil day can land after `t` when shifted
        // by a daylight-saving gap.
        let mut day = t.to_zoned(tz.clone()).date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(found) = self.slots_on(day, tz).filter(|s| *s > t).min() {
                return Some(found);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut day = t.to_zoned(tz.clone()).date().tomorrow().ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(found) = self.slots_on(day, tz).filter(|s| *s <= t).max() {
                return Some(found);
            }
            day = day.yesterday().ok()?;
        }
        None
    }
}

/// Parses a retention age such as `30m`, `12h`, `7d`, `2w` or `1d12h` into seconds.
pub fn parse_age(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use m, h, d or w)")),
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?}: too large"))?;
    }
    if !digits.is_empty() {
        return Err(format!("{text:?}: {digits} has no unit (use m, h, d or w)"));
    }
    if total <= 0 {
        return Err(format!("{text:?}: must be a positive duration such as 7d"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    #[test]
    fn every_fifteen_minutes() {
        let c = Cron::parse("*/15 * * * *").expect("valid");
        let t = ts("2026-03-01T10:07:30Z");
        assert_eq!(c.next_after(t, &utc()), Some(ts("2026-03-01T10:15:00Z")));
        assert_eq!(
            c.latest_at_or_before(t, &utc()),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        // A slot exactly at t is "at or before" but not "after".
        let on = ts("2026-03-01T10:15:00Z");
        assert_eq!(c.latest_at_or_before(on, &utc()), Some(on));
        assert_eq!(c.next_after(on, &utc()), Some(ts("2026-03-01T10:30:00Z")));
    }

    #[test]
    fn names_ranges_lists_and_macros() {
        let c = Cron::parse("30 2 * jan-mar mon,WED").expect("valid");
        // 2026-01-05 is a Monday.
        let t = ts("2026-01-04T00:00:00Z");
        assert_eq!(c.next_after(t, &utc()), Some(ts("2026-01-05T02:30:00Z")));
        let after = ts("2026-01-05T02:30:00Z");
        assert_eq!(
            c.next_after(after, &utc()),
            Some(ts("2026-01-07T02:30:00Z"))
        );
        assert_eq!(
            Cron::parse("@daily").expect("valid"),
            Cron::parse("0 0 * * *").expect("valid")
        );
        // 7 is Sunday too.
        assert_eq!(
            Cron::parse("0 0 * * 7").expect("valid"),
            Cron::parse("0 0 * * sun").expect("valid")
        );
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 13th, or any Friday.
        let c = Cron::parse("0 0 13 * 5").expect("valid");
        // 2026-02-06 is a Friday, before the 13th.
        let t = ts("2026-02-01T00:00:00Z");
        assert_eq!(c.next_after(t, &utc()), Some(ts("2026-02-06T00:00:00Z")));
    }

    #[test]
    fn leap_day_is_found_and_impossible_dates_refused() {
        let c = Cron::parse("0 0 29 2 *").expect("valid");
        let t = ts("2026-03-01T00:00:00Z");
        assert_eq!(c.next_after(t, &utc()), Some(ts("2028-02-29T00:00:00Z")));
        let err = Cron::parse("0 0 30 2 *").expect_err("never runs");
        assert!(err.contains("matches no date"), "{err}");
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (expr, needle) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute field: 60 is outside 0-59"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day-of-month field"),
            ("* * * foo *", "month field"),
            ("* * * * 8", "day-of-week field"),
            ("*/0 * * * *", "step must be at least 1"),
            ("5-1 * * * *", "backwards"),
            ("@often", "unknown macro"),
        ] {
            let err = Cron::parse(expr).expect_err(expr);
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn zone_and_daylight_saving() {
        let berlin = TimeZone::get("Europe/Berlin").expect("bundled tzdb has Europe/Berlin");
        let c = Cron::parse("30 2 * * *").expect("valid");
        // 2026-03-29: clocks jump from 02:00 to 03:00 CET->CEST; 02:30 does not exist and runs
        // at 03:30 CEST = 01:30 UTC.
        let t = ts("2026-03-28T12:00:00Z");
        assert_eq!(c.next_after(t, &berlin), Some(ts("2026-03-29T01:30:00Z")));
        // 2026-10-25: 02:30 happens twice; it runs once, at the first (CEST, 00:30 UTC).
        let t = ts("2026-10-24T12:00:00Z");
        let first = c.next_after(t, &berlin).expect("slot");
        assert_eq!(first, ts("2026-10-25T00:30:00Z"));
        assert_eq!(
            c.next_after(first, &berlin),
            Some(ts("2026-10-26T01:30:00Z"))
        );
        // Ordinary day: 02:30 CET = 01:30 UTC.
        assert_eq!(
            c.latest_at_or_before(ts("2026-01-10T12:00:00Z"), &berlin),
            Some(ts("2026-01-10T01:30:00Z"))
        );
    }

    #[test]
    fn zones_are_bundled_in_the_binary() {
        // Container images may have no /usr/share/zoneinfo; jiff falls back to this copy.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        for name in ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"] {
            assert!(
                bundled.get(name).is_ok(),
                "{name} missing from the bundled tzdb"
            );
        }
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("1d12h"), Ok(129_600));
        assert_eq!(parse_age("2w"), Ok(1_209_600));
        for bad in ["", "0d", "7", "7x", "d", "-1d", "99999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
