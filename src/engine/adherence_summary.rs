//! Adherence over the periods a supervisor's summary widgets show: today, yesterday,
//! the week to date and the month to date, each in a time zone, for every agent or one
//! team, added up from the compliance report's own per-agent figures
//! ([`crate::report::summarize`]), so each period says what the report over the same
//! window says.
//!
//! The periods overlap, so the window from the earliest start to now is cut at every
//! period's start and each piece is read once: the figures are sums of time, and the
//! time in two windows side by side is the time in both together.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::adherence_rules::Judging;
use crate::domain::idle::Window;
use crate::report::{AgentSummary, summarize};
use crate::store::{Pool, roster};

/// The summary's periods, each `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryWindows {
    pub today: (DateTime<Utc>, DateTime<Utc>),
    pub yesterday: (DateTime<Utc>, DateTime<Utc>),
    /// From Monday's midnight.
    pub week_to_date: (DateTime<Utc>, DateTime<Utc>),
    /// From the 1st's midnight.
    pub month_to_date: (DateTime<Utc>, DateTime<Utc>),
}

impl SummaryWindows {
    /// The periods of `now`, days starting at midnight in `zone` (where a change of
    /// clocks skips midnight, at the first instant of the day).
    pub fn of(now: DateTime<Utc>, zone: Tz) -> SummaryWindows {
        let day = now.with_timezone(&zone).date_naive();
        let today = start_of(day, zone);
        let yesterday = start_of(day - Days::new(1), zone);
        let monday = day - Days::new(u64::from(day.weekday().num_days_from_monday()));
        let first = day.with_day(1).expect("every month has a 1st");
        SummaryWindows {
            today: (today, now),
            yesterday: (yesterday, today),
            week_to_date: (start_of(monday, zone), now),
            month_to_date: (start_of(first, zone), now),
        }
    }

    fn all(&self) -> [(DateTime<Utc>, DateTime<Utc>); 4] {
        [
            self.today,
            self.yesterday,
            self.week_to_date,
            self.month_to_date,
        ]
    }
}

/// The first instant of `day` in `zone`.
fn start_of(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A gap at midnight (a zone that springs forward then) is at most a few hours.
    (0..=3)
        .filter_map(|hours| {
            zone.from_local_datetime(&(midnight + chrono::TimeDelta::hours(hours)))
                .earliest()
        })
        .next()
        .map_or_else(|| midnight.and_utc(), |at| at.with_timezone(&Utc))
}

/// Adherence time of a period, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Time inside shifts.
    pub scheduled_ms: i64,
    pub in_ms: i64,
    pub out_ms: i64,
    pub authorised_ms: i64,
    pub neutral_ms: i64,
}

impl Totals {
    /// In-adherence time per judged time (in and out), in percent; `None` without any.
    pub fn adherence_pct(&self) -> Option<f64> {
        let judged = self.in_ms + self.out_ms;
        (judged > 0).then(|| self.in_ms as f64 * 100.0 / judged as f64)
    }

    fn add(&mut self, other: &Totals) {
        self.scheduled_ms += other.scheduled_ms;
        self.in_ms += other.in_ms;
        self.out_ms += other.out_ms;
        self.authorised_ms += other.authorised_ms;
        self.neutral_ms += other.neutral_ms;
    }

    /// One agent's line of the compliance report, in milliseconds.
    fn of(agent: &AgentSummary) -> Totals {
        let ms = |seconds: Option<f64>| (seconds.unwrap_or(0.0) * 1000.0).round() as i64;
        let scheduled = ms(agent.scheduled_seconds);
        let (inside, neutral, authorised) = (
            ms(agent.in_adherence_seconds),
            ms(agent.neutral_seconds),
            ms(agent.authorised_seconds),
        );
        let observed = scheduled - ms(agent.unobserved_seconds);
        Totals {
            scheduled_ms: scheduled,
            in_ms: inside,
            out_ms: (observed - neutral - authorised - inside).max(0),
            authorised_ms: authorised,
            neutral_ms: neutral,
        }
    }
}

/// Each period's totals, in the order of [`SummaryWindows`]' fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub today: Totals,
    pub yesterday: Totals,
    pub week_to_date: Totals,
    pub month_to_date: Totals,
}

/// The summary of `periods` over every agent of the reports, or those of `team` (its
/// id, or its name in any letter case, as the agent roster has it), judged by
/// `judging`; `now` ends the intervals still open.
pub async fn summary(
    pool: &Pool,
    periods: &SummaryWindows,
    team: Option<&str>,
    now: DateTime<Utc>,
    judging: &Judging,
) -> Result<Summary, sqlx::Error> {
    let members = match team {
        Some(team) => Some(roster::team_members(pool, team).await?),
        None => None,
    };
    let mut cuts: Vec<DateTime<Utc>> = periods
        .all()
        .iter()
        .flat_map(|(from, to)| [*from, *to])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut summary = Summary::default();
    for piece in cuts.windows(2) {
        let (from, to) = (piece[0], piece[1]);
        let Ok(window) = Window::checked(from, to) else {
            continue;
        };
        let mut totals = Totals::default();
        for agent in summarize(pool, window, now, judging).await? {
            if members
                .as_ref()
                .is_none_or(|members| members.contains(&agent.agent_id))
            {
                totals.add(&Totals::of(&agent));
            }
        }
        let within = |(start, end): (DateTime<Utc>, DateTime<Utc>)| start <= from && to <= end;
        for (period, sum) in [
            (periods.today, &mut summary.today),
            (periods.yesterday, &mut summary.yesterday),
            (periods.week_to_date, &mut summary.week_to_date),
            (periods.month_to_date, &mut summary.month_to_date),
        ] {
            if within(period) {
                sum.add(&totals);
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        crate::time::parse_instant(text).unwrap()
    }

    #[test]
    fn periods_start_at_midnight_in_the_zone_and_weeks_on_monday() {
        // Thursday 2026-11-26, 01:30 UTC: still Wednesday the 25th in New York.
        let now = utc("2026-11-26T01:30:00Z");
        let utc_periods = SummaryWindows::of(now, chrono_tz::UTC);
        assert_eq!(utc_periods.today, (utc("2026-11-26T00:00:00Z"), now));
        assert_eq!(
            utc_periods.yesterday,
            (utc("2026-11-25T00:00:00Z"), utc("2026-11-26T00:00:00Z"))
        );
        assert_eq!(utc_periods.week_to_date.0, utc("2026-11-23T00:00:00Z"));
        assert_eq!(utc_periods.month_to_date.0, utc("2026-11-01T00:00:00Z"));
        let new_york = SummaryWindows::of(now, chrono_tz::America::New_York);
        assert_eq!(new_york.today.0, utc("2026-11-25T05:00:00Z"));
        assert_eq!(new_york.yesterday.0, utc("2026-11-24T05:00:00Z"));
        assert_eq!(new_york.week_to_date.0, utc("2026-11-23T05:00:00Z"));
        // November began in summer time (UTC-4).
        assert_eq!(new_york.month_to_date.0, utc("2026-11-01T04:00:00Z"));
        // Santiago springs forward at midnight: 2026-09-06 begins at 01:00 local.
        let santiago =
            SummaryWindows::of(utc("2026-09-06T12:00:00Z"), chrono_tz::America::Santiago);
        assert_eq!(santiago.today.0, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn out_of_adherence_time_is_observed_time_judged_neither_in_nor_otherwise() {
        let agent = AgentSummary {
            scheduled_seconds: Some(3600.0),
            unobserved_seconds: Some(600.0),
            in_adherence_seconds: Some(1800.0),
            neutral_seconds: Some(300.0),
            authorised_seconds: Some(300.0),
            ..AgentSummary::default()
        };
        let totals = Totals::of(&agent);
        assert_eq!(totals.out_ms, 600_000);
        assert_eq!(totals.adherence_pct(), Some(75.0));
        assert_eq!(Totals::default().adherence_pct(), None);
    }
}
