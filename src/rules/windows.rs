//! Rollout windows: when a bulk upgrade may start its next rollout. `Allow` windows (when there
//! is any) say when it may, `Deny` windows when it may not; each has a time zone, weekdays and a
//! time of day range (an end before the start runs past midnight). A window only holds the start
//! of a rollout: one that runs, runs on.
//!
//! Pure: the time comes in. Openness changes only at a window's boundaries, so the next opening is
//! found among the boundaries of the coming eight days, not by stepping through time.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::{RolloutWindow, WindowDay, WindowKind};

struct Parsed {
    allow: bool,
    tz: TimeZone,
    days: Vec<Weekday>,
    start: Time,
    end: Time,
}

fn weekday(d: WindowDay) -> Weekday {
    match d {
        WindowDay::Mon => Weekday::Monday,
        WindowDay::Tue => Weekday::Tuesday,
        WindowDay::Wed => Weekday::Wednesday,
        WindowDay::Thu => Weekday::Thursday,
        WindowDay::Fri => Weekday::Friday,
        WindowDay::Sat => Weekday::Saturday,
        WindowDay::Sun => Weekday::Sunday,
    }
}

fn time_of_day(text: &str) -> Option<Time> {
    let mut parts = text.split(':');
    let h: i8 = parts.next()?.parse().ok()?;
    let m: i8 = parts.next()?.parse().ok()?;
    let s: i8 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    Time::new(h, m, s, 0).ok()
}

fn parse(windows: &[RolloutWindow]) -> Result<Vec<Parsed>, String> {
    windows
        .iter()
        .enumerate()
        .map(|(n, w)| {
            let tz = TimeZone::get(&w.time_zone).map_err(|_| {
                format!("windows[{n}]: unknown time zone {:?}: use an IANA name such as Europe/Berlin", w.time_zone)
            })?;
            let time = |t: &str| {
                time_of_day(t).ok_or_else(|| format!("windows[{n}]: {t:?} is not a time of day (HH:MM or HH:MM:SS)"))
            };
            Ok(Parsed {
                allow: w.kind == WindowKind::Allow,
                tz,
                days: w.days.iter().copied().map(weekday).collect(),
                start: time(&w.start)?,
                end: time(&w.end)?,
            })
        })
        .collect()
}

impl Parsed {
    fn on(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&day)
    }

    fn contains(&self, at: Timestamp) -> bool {
        let zoned = at.to_zoned(self.tz.clone());
        let (t, day) = (zoned.time(), zoned.weekday());
        if self.start <= self.end {
            self.on(day) && self.start <= t && t < self.end
        } else {
            (self.on(day) && t >= self.start) || (self.on(day.previous()) && t < self.end)
        }
    }

    /// The instants where the window opens or closes, from the day before `from` on for `days`.
    fn boundaries(&self, from: Timestamp, days: i64) -> Vec<Timestamp> {
        let today: Date = from.to_zoned(self.tz.clone()).date();
        let mut out = Vec::new();
        for d in -1..=days {
            let Ok(date) = today.checked_add(d.days()) else { continue };
            for t in [self.start, self.end] {
                if let Ok(z) = date.to_datetime(t).to_zoned(self.tz.clone()) {
                    out.push(z.timestamp());
                }
            }
        }
        out
    }
}

fn open(parsed: &[Parsed], at: Timestamp) -> bool {
    let allowed = !parsed.iter().any(|w| w.allow) || parsed.iter().any(|w| w.allow && w.contains(at));
    allowed && !parsed.iter().any(|w| !w.allow && w.contains(at))
}

/// Whether a rollout may start at `now`; if not, when it next may (within eight days; `None`:
/// not within them). An error names a window that cannot be read.
pub fn next_open(windows: &[RolloutWindow], now: Timestamp) -> Result<Option<Timestamp>, String> {
    let parsed = parse(windows)?;
    if open(&parsed, now) {
        return Ok(Some(now));
    }
    let mut candidates: Vec<Timestamp> =
        parsed.iter().flat_map(|w| w.boundaries(now, 8)).filter(|t| *t > now).collect();
    candidates.sort();
    Ok(candidates.into_iter().find(|t| open(&parsed, *t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: WindowKind, tz: &str, days: &[WindowDay], start: &str, end: &str) -> RolloutWindow {
        RolloutWindow { kind, time_zone: tz.into(), days: days.to_vec(), start: start.into(), end: end.into() }
    }

    /// A time written in the test (a mistyped one reads as the epoch, and the assertions fail).
    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn without_windows_a_rollout_may_always_start() {
        let now = at("2026-12-07T10:00:00Z");
        assert_eq!(next_open(&[], now), Ok(Some(now)));
    }

    #[test]
    fn an_allowed_weekday_window_in_its_time_zone_opens_at_its_start() {
        // Berlin is UTC+1 in December: 09:00-17:00 there is 08:00-16:00 UTC.
        let office = [window(WindowKind::Allow, "Europe/Berlin", &[WindowDay::Mon, WindowDay::Tue], "09:00", "17:00")];
        // Monday 2026-12-07.
        assert_eq!(next_open(&office, at("2026-12-07T08:30:00Z")), Ok(Some(at("2026-12-07T08:30:00Z"))));
        assert_eq!(next_open(&office, at("2026-12-07T07:00:00Z")), Ok(Some(at("2026-12-07T08:00:00Z"))));
        // Tuesday after hours: Monday next week.
        assert_eq!(next_open(&office, at("2026-12-08T16:00:00Z")), Ok(Some(at("2026-12-14T08:00:00Z"))));
    }

    #[test]
    fn a_denied_window_holds_until_its_end_and_may_run_past_midnight() {
        let night = [window(WindowKind::Deny, "UTC", &[WindowDay::Fri], "22:00", "06:00")];
        // Friday 2026-12-11 23:00 and Saturday 05:00 are inside; Saturday 06:00 it opens.
        assert_eq!(next_open(&night, at("2026-12-11T23:00:00Z")), Ok(Some(at("2026-12-12T06:00:00Z"))));
        assert_eq!(next_open(&night, at("2026-12-12T05:59:59Z")), Ok(Some(at("2026-12-12T06:00:00Z"))));
        assert_eq!(
            next_open(&night, at("2026-12-12T22:30:00Z")),
            Ok(Some(at("2026-12-12T22:30:00Z"))),
            "Saturday night is fine"
        );
        // A deny inside an allow: the allow's time less the deny's.
        let both = [
            window(WindowKind::Allow, "UTC", &[], "08:00", "18:00"),
            window(WindowKind::Deny, "UTC", &[], "12:00", "13:00:30"),
        ];
        assert_eq!(next_open(&both, at("2026-12-07T12:10:00Z")), Ok(Some(at("2026-12-07T13:00:30Z"))));
        assert_eq!(next_open(&both, at("2026-12-07T19:00:00Z")), Ok(Some(at("2026-12-08T08:00:00Z"))));
    }

    #[test]
    fn a_window_that_cannot_be_read_says_which_and_why() {
        let bad = [window(WindowKind::Allow, "Mars/Olympus", &[], "09:00", "17:00")];
        assert!(next_open(&bad, at("2026-12-07T10:00:00Z")).unwrap_err().contains("windows[0]: unknown time zone"));
        let bad = [window(WindowKind::Allow, "UTC", &[], "9am", "17:00")];
        assert!(next_open(&bad, at("2026-12-07T10:00:00Z")).unwrap_err().contains("not a time of day"));
    }

    #[test]
    fn allowed_windows_that_never_open_within_eight_days_say_so() {
        let empty = [window(WindowKind::Allow, "UTC", &[], "10:00", "10:00")];
        assert_eq!(next_open(&empty, at("2026-12-07T12:00:00Z")), Ok(None));
    }
}
