//! When a WFM rule's slots fall: a cron pattern read in an IANA time zone, as UTC instants.
//!
//! Patterns have 5 fields (minute granularity) or 6 (with seconds first); names such as
//! `Mon-Fri` work. [`croner`] does the matching and follows the OCPS rules for daylight
//! saving time:
//! - a time that does not exist (02:30 on a spring-forward night) fires at the first
//!   valid time after the gap (03:00), so the day's firing is not lost, when the pattern
//!   names a fixed time of day;
//! - a fixed time of day that happens twice (01:30 on a fall-back night) fires once, at
//!   its first occurrence;
//! - a pattern with steps or wildcards in its time fields (`*/30`) fires at every
//!   instant whose local time matches, so it runs through the repeated hour twice.
//!
//! croner walks local time, so on a fall-back night it cannot answer "the next slot after
//! this instant" for instants in the repeated hour by itself: the local times just before
//! the transition come round again. [`Slots::next_after`] corrects for that, so the
//! slots it returns are strictly increasing UTC instants.

use std::fmt;

use chrono::{DateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};

/// The largest amount any zone's offset drops by at once (a DST change is 1 h in most
/// zones, 30 min on Lord Howe Island, 2 h at Troll station).
const MAX_FALL_BACK: TimeDelta = TimeDelta::hours(3);

/// How many of croner's answers may be passed over while looking for the next slot: only
/// earlier readings of a repeated local time are, a handful at most.
const MAX_PASSED_OVER: usize = 64;

/// Where `latest_between` starts looking back from its end.
const FIRST_LOOKBACK: TimeDelta = TimeDelta::minutes(1);

/// A cron pattern in a time zone.
#[derive(Clone)]
pub struct Slots {
    cron: Cron,
    pattern: String,
    zone: Tz,
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slots({:?} in {})", self.pattern, self.zone.name())
    }
}

impl PartialEq for Slots {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.zone == other.zone
    }
}

impl Eq for Slots {}

/// Parses a 5- or 6-field cron pattern, or says what is wrong with it.
pub fn parse_pattern(pattern: &str) -> Result<Cron, String> {
    let fields = pattern.split_whitespace().count();
    if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{pattern}` has {fields} fields; a pattern has 5 (minute hour day month weekday) \
             or 6 (with seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| format!("`{pattern}` is not a valid cron pattern: {e}"))
}

/// Parses an IANA time zone name, or says it is unknown.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}; use an IANA name such as America/New_York")
    })
}

impl Slots {
    pub fn new(cron: Cron, pattern: &str, zone: Tz) -> Slots {
        Slots {
            cron,
            pattern: pattern.to_owned(),
            zone,
        }
    }

    /// Parses `pattern` in `zone`; the error says which of the two is wrong.
    pub fn parse(pattern: &str, zone: &str) -> Result<Slots, String> {
        let zone = parse_zone(zone)?;
        Ok(Slots::new(parse_pattern(pattern)?, pattern, zone))
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `after`; `None` when the pattern never matches again
    /// (such as the 30th of February).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are whole seconds, so a fraction of `after` changes nothing.
        let after = after.with_nanosecond(0).unwrap_or(after);
        let first = self.first_accepted(after, false, |slot| slot > after)?;
        // A fall-back between `after` and `first` repeats local times that croner, going
        // forward from after's local time, has already passed: look at the repeated hour
        // from its own start.
        let horizon = first.min(after + MAX_FALL_BACK);
        let before = self.offset(after);
        if self.offset(horizon) >= before {
            return Some(first);
        }
        let (mut lo, mut hi) = (after, horizon);
        while hi - lo > TimeDelta::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            let mid = mid.with_nanosecond(0).unwrap_or(mid);
            if self.offset(mid) < before {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let fall_back = hi;
        let repeated = self.first_accepted(fall_back, true, |slot| slot >= fall_back);
        Some(repeated.map_or(first, |slot| slot.min(first)))
    }

    /// The latest slot in `(after, until]`, if any.
    pub fn latest_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if until <= after {
            return None;
        }
        // Looks back over a window that doubles until it holds a slot or reaches `after`,
        // so a rule due every second costs a minute of slots and a daily one a few steps.
        let mut lookback = FIRST_LOOKBACK;
        loop {
            let from = until
                .checked_sub_signed(lookback)
                .map_or(after, |from| from.max(after));
            let mut latest = None;
            let mut cursor = from;
            while let Some(slot) = self.next_after(cursor).filter(|slot| *slot <= until) {
                latest = Some(slot);
                cursor = slot;
            }
            if latest.is_some() || from == after {
                return latest;
            }
            lookback = lookback * 2;
        }
    }

    /// The next `count` slots after `after`, fewer when the pattern stops matching.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next_after(after), |slot| self.next_after(*slot))
            .take(count)
            .collect()
    }

    fn offset(&self, at: DateTime<Utc>) -> i32 {
        self.zone
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The first of croner's answers from `start` (local time) that `accept` takes.
    fn first_accepted(
        &self,
        start: DateTime<Utc>,
        inclusive: bool,
        accept: impl Fn(DateTime<Utc>) -> bool,
    ) -> Option<DateTime<Utc>> {
        let start = start.with_timezone(&self.zone);
        let answers = if inclusive {
            self.cron.iter_from(start, Direction::Forward)
        } else {
            self.cron.iter_after(start)
        };
        answers
            .take(MAX_PASSED_OVER)
            .map(|slot| slot.with_timezone(&Utc))
            .find(|slot| accept(*slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn slots(pattern: &str) -> Slots {
        Slots::parse(pattern, "America/New_York").unwrap()
    }

    fn texts(slots: &[DateTime<Utc>]) -> Vec<String> {
        slots
            .iter()
            .map(|s| s.format("%FT%TZ").to_string())
            .collect()
    }

    #[test]
    fn weekday_noon_in_new_york_moves_an_hour_in_utc_with_daylight_saving() {
        let lunch = slots("0 0 12 * * Mon-Fri");
        assert_eq!(
            texts(&lunch.upcoming(utc("2026-03-05T18:00:00Z"), 4)),
            [
                "2026-03-06T17:00:00Z", // Friday, EST
                "2026-03-09T16:00:00Z", // Monday, EDT: no firing on the weekend
                "2026-03-10T16:00:00Z",
                "2026-03-11T16:00:00Z",
            ]
        );
        assert_eq!(
            texts(&lunch.upcoming(utc("2026-10-29T18:00:00Z"), 3)),
            [
                "2026-10-30T16:00:00Z", // Friday, EDT
                "2026-11-02T17:00:00Z", // Monday, EST
                "2026-11-03T17:00:00Z",
            ]
        );
    }

    #[test]
    fn five_fields_mean_minutes_and_six_add_seconds() {
        let five = slots("30 9 * * *");
        let six = slots("15 30 9 * * *");
        let after = utc("2026-06-01T00:00:00Z");
        assert_eq!(texts(&five.upcoming(after, 1)), ["2026-06-01T13:30:00Z"]);
        assert_eq!(texts(&six.upcoming(after, 1)), ["2026-06-01T13:30:15Z"]);
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_fires_right_after_the_gap_that_day() {
        let early = slots("0 30 2 * * *");
        assert_eq!(
            texts(&early.upcoming(utc("2026-03-07T00:00:00Z"), 3)),
            [
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-08T07:00:00Z", // 02:30 does not exist: 03:00 EDT
                "2026-03-09T06:30:00Z", // 02:30 EDT
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_repeated_hour_fires_once() {
        let late = slots("0 30 1 * * *");
        let fired = late.upcoming(utc("2026-10-31T12:00:00Z"), 3);
        assert_eq!(
            texts(&fired),
            [
                "2026-11-01T05:30:00Z", // 01:30 EDT, the first of the two
                "2026-11-02T06:30:00Z", // 01:30 EST the next day
                "2026-11-03T06:30:00Z",
            ]
        );
        // Asked from inside the repeated hour (after the first 01:30, before the
        // second), the second 01:30 is still not a slot.
        assert_eq!(
            late.next_after(utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn a_stepped_pattern_runs_through_the_repeated_hour_twice_in_order() {
        let half_hourly = slots("0 */30 * * * *");
        assert_eq!(
            texts(&half_hourly.upcoming(utc("2026-11-01T04:00:00Z"), 7)),
            [
                "2026-11-01T04:30:00Z", // 00:30 EDT
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T07:30:00Z",
            ]
        );
        let every_second = slots("* * * * * *");
        assert_eq!(
            every_second.next_after(utc("2026-11-01T05:59:59Z")),
            Some(utc("2026-11-01T06:00:00Z"))
        );
        assert_eq!(
            every_second.next_after(utc("2026-11-01T06:00:00.400Z")),
            Some(utc("2026-11-01T06:00:01Z"))
        );
    }

    #[test]
    fn latest_between_finds_the_last_slot_of_a_window_or_none() {
        let lunch = slots("0 0 12 * * Mon-Fri");
        // Down from Friday morning to Tuesday morning: Friday and Monday passed.
        assert_eq!(
            lunch.latest_between(utc("2026-03-06T10:00:00Z"), utc("2026-03-10T10:00:00Z")),
            Some(utc("2026-03-09T16:00:00Z"))
        );
        assert_eq!(
            lunch.latest_between(utc("2026-03-09T16:00:00Z"), utc("2026-03-10T10:00:00Z")),
            None,
            "the start of the window is not in it"
        );
        assert_eq!(
            lunch.latest_between(utc("2026-03-09T15:00:00Z"), utc("2026-03-09T16:00:00Z")),
            Some(utc("2026-03-09T16:00:00Z")),
            "the end is"
        );
        let every_second = slots("* * * * * *");
        assert_eq!(
            every_second.latest_between(utc("2026-01-01T00:00:00Z"), utc("2026-06-01T00:00:00.5Z")),
            Some(utc("2026-06-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_pattern_that_never_matches_has_no_slots() {
        let never = slots("0 0 30 2 *");
        assert_eq!(never.next_after(utc("2026-01-01T00:00:00Z")), None);
        assert_eq!(
            never.latest_between(utc("2020-01-01T00:00:00Z"), utc("2026-01-01T00:00:00Z")),
            None
        );
    }

    use proptest::prelude::*;

    const PATTERNS: [&str; 6] = [
        "0 30 1 * * *",
        "0 30 2 * * *",
        "0 */20 * * * *",
        "*/7 * 1-3 * * *",
        "0 0 12 * * Mon-Fri",
        "15 45 23 L * *",
    ];
    const ZONES: [&str; 4] = [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "UTC",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the instant (biased towards the 2026 DST nights of New York and
        /// Berlin), the next slot is later, nothing lies between, and looking back from
        /// it finds it again: slots never repeat or go back.
        #[test]
        fn next_after_is_the_first_later_slot_and_latest_between_agrees(
            pattern in 0..PATTERNS.len(),
            zone in 0..ZONES.len(),
            night in 0..4usize,
            offset_s in 0i64..(6 * 3_600),
        ) {
            let nights = [
                "2026-03-08T04:00:00Z",
                "2026-11-01T03:00:00Z",
                "2026-03-29T00:00:00Z",
                "2026-10-25T00:00:00Z",
            ];
            let slots = Slots::parse(PATTERNS[pattern], ZONES[zone]).unwrap();
            let at = utc(nights[night]) + TimeDelta::seconds(offset_s);
            let next = slots.next_after(at).unwrap();
            prop_assert!(next > at);
            prop_assert_eq!(slots.latest_between(at, next), Some(next));
            prop_assert_eq!(slots.latest_between(at, next - TimeDelta::seconds(1)), None);
            let after = slots.next_after(next).unwrap();
            prop_assert!(after > next);

            // Independently of croner's search: no instant before `next` (within two
            // hours) has a local time the pattern matches, except the second reading of
            // a repeated local time for a pattern with a fixed time of day.
            let fixed = slots.cron.determine_job_type() == croner::JobType::FixedTime;
            let mut second = at.with_nanosecond(0).unwrap() + TimeDelta::seconds(1);
            let end = next.min(at + TimeDelta::hours(2));
            while second < end {
                let local = second.with_timezone(&slots.zone);
                let repeated = slots
                    .zone
                    .from_local_datetime(&local.naive_local())
                    .earliest()
                    .is_some_and(|first| first != local);
                prop_assert!(
                    !slots.cron.is_time_matching(&local).unwrap() || (fixed && repeated),
                    "{} is a slot before {}", second, next
                );
                second += TimeDelta::seconds(1);
            }
        }
    }

    #[test]
    fn bad_patterns_and_zones_are_explained() {
        let seven = parse_pattern("0 0 12 * * * 2027").unwrap_err();
        assert!(seven.contains("7 fields"), "{seven}");
        let four = parse_pattern("0 12 * *").unwrap_err();
        assert!(four.contains("4 fields"), "{four}");
        let hour = parse_pattern("0 25 * * *").unwrap_err();
        assert!(hour.contains("not a valid cron pattern"), "{hour}");
        let zone = parse_zone("America/NewYork").unwrap_err();
        assert_eq!(
            zone,
            "unknown time zone \"America/NewYork\"; use an IANA name such as America/New_York"
        );
        assert!(Slots::parse("@daily", "Europe/Berlin").is_ok());
    }
}
