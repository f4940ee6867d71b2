//! Each agent's adherence at this instant, for real-time adherence (RTA) screens: the
//! verdict on the state the agent is in against what its stored schedule says now,
//! judged by the tenant's adherence rules exactly as the compliance sweep and the
//! reports judge ([`Timeline::deviation_at`], [`Judging::judge`]), with supervisors'
//! authorisations laid over the schedule.
//!
//! Everything comes from the store (the shifts the schedule book stored, the
//! authorisations) and from the caller (the recorded state, which the live feed keeps):
//! nothing here asks the platform, however often it is asked.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;

use crate::domain::AgentState;
use crate::domain::adherence::{DeviationKind, Timeline};
use crate::domain::adherence_rules::{Judgement, Judging};
use crate::store::schedules::{self, ShiftRow};
use crate::store::{Pool, authorisations, on, to_ms};

/// How far either side of now shifts and authorisations are read: a deviation going on
/// now may have begun in the shift before (logged in since it ended), and the next
/// change of verdict may come with the next shift.
const AROUND: TimeDelta = TimeDelta::days(1);

/// What an agent's state is, against its schedule, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NowVerdict {
    /// The state meets the schedule.
    In,
    /// It does not: out of adherence (off shift and logged in counts too).
    Out,
    /// An adherence rule counts it neither way, or no state is recorded yet in
    /// scheduled time.
    Neutral,
    /// A supervisor authorised the time (or excused the exception it belongs to).
    Authorised,
    /// No schedule asks anything of the agent now: off shift and logged out, or no
    /// shift stored around now.
    Unscheduled,
}

/// One agent's adherence now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentNow {
    pub verdict: NowVerdict,
    /// The schedule's activity now: its title, else what it expects (`WORK`,
    /// `MANDATORY_BREAK`, `OPTIONAL_BREAK`); `None` off shift.
    pub scheduled: Option<String>,
    /// When out of adherence: since when the deviation runs, and its kind (the kind of
    /// exception it opens, or opened).
    pub out: Option<(DateTime<Utc>, DeviationKind)>,
}

/// The recorded state of an agent: state, reason code, since when.
pub type Observed<'a> = (AgentState, Option<&'a str>, DateTime<Utc>);

/// The adherence now of an agent in `observed` (nothing recorded: `None`) whose
/// schedule is `timeline` (no shift stored around now: `None`), as `judging` judges.
pub fn judge(
    timeline: Option<&Timeline>,
    observed: Option<Observed<'_>>,
    judging: &Judging,
    now: DateTime<Utc>,
) -> AgentNow {
    let unscheduled = AgentNow {
        verdict: NowVerdict::Unscheduled,
        scheduled: None,
        out: None,
    };
    let Some(timeline) = timeline else {
        return unscheduled;
    };
    let Some(segment) = timeline
        .between(now, now + TimeDelta::milliseconds(1))
        .into_iter()
        .next()
    else {
        return unscheduled;
    };
    let scheduled = timeline.scheduled(&segment);
    let on_shift = segment.expected.is_scheduled();
    let activity = on_shift.then(|| {
        scheduled
            .title
            .map_or_else(|| segment.expected.as_str().to_owned(), str::to_owned)
    });
    let Some((state, reason, since)) = observed else {
        return AgentNow {
            verdict: if on_shift {
                NowVerdict::Neutral
            } else {
                NowVerdict::Unscheduled
            },
            scheduled: activity,
            out: None,
        };
    };
    let verdict = match judging.judge(scheduled, state, reason) {
        Judgement::Authorised => NowVerdict::Authorised,
        Judgement::Neutral { .. } => NowVerdict::Neutral,
        Judgement::In { .. } if on_shift => NowVerdict::In,
        Judgement::In { .. } => NowVerdict::Unscheduled,
        Judgement::Out { .. } => NowVerdict::Out,
    };
    let out = (verdict == NowVerdict::Out)
        .then(|| timeline.deviation_at(judging, (state, reason), since, now))
        .flatten()
        .map(|deviation| (deviation.since, deviation.kind));
    AgentNow {
        verdict,
        scheduled: activity,
        out,
    }
}

/// The agents' schedules around now, with supervisors' authorisations laid over them,
/// by agent; and the next instant any of them changes what it expects (where a verdict
/// may change with nothing recorded).
#[derive(Debug, Default)]
pub struct Schedules {
    pub timelines: HashMap<String, Timeline>,
    pub next_change: Option<DateTime<Utc>>,
}

impl Schedules {
    /// Every agent's stored shifts around `now` (`agent`: only that agent's).
    pub async fn read(
        pool: &Pool,
        agent: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Schedules, sqlx::Error> {
        let (from, to) = (now - AROUND, now + AROUND);
        let mut shifts: HashMap<String, Vec<crate::domain::adherence::Shift>> = HashMap::new();
        match agent {
            Some(agent) => {
                let stored = schedules::of_agent(pool, agent, from, to).await?;
                shifts.insert(
                    agent.to_owned(),
                    stored.into_iter().map(|s| s.shift).collect(),
                );
            }
            None => {
                let mut rows = on!(pool, |c| sqlx::query_as::<_, ShiftRow>(
                    schedules::OVERLAPPING
                )
                .bind(to_ms(from))
                .bind(to_ms(to))
                .fetch(c));
                while let Some(row) = rows.try_next().await? {
                    if let Some(stored) = row.to_stored() {
                        shifts
                            .entry(stored.agent_id)
                            .or_default()
                            .push(stored.shift);
                    }
                }
            }
        }
        let authorised = {
            let mut conn = pool.acquire().await?;
            authorisations::counted(&mut conn, to_ms(from), to_ms(to)).await?
        };
        let mut timelines = HashMap::with_capacity(shifts.len());
        let mut next_change: Option<DateTime<Utc>> = None;
        for (agent, shifts) in shifts {
            let timeline = Timeline::new(&shifts);
            let timeline = match authorised.get(&agent) {
                Some(spans) => timeline.authorised(spans),
                None => timeline,
            };
            let next = timeline
                .segments()
                .iter()
                .flat_map(|s| [s.start, s.end])
                .filter(|at| *at > now)
                .min();
            next_change = match (next_change, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            timelines.insert(agent, timeline);
        }
        Ok(Schedules {
            timelines,
            next_change,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::adherence::Shift;
    use crate::domain::policy::{BreakWindow, TitledSpan};
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + minutes * 60_000)
            .unwrap()
    }

    /// A shift from minute 0 to 480, lunch (mandatory) 180-210, a team meeting 300-330.
    fn timeline() -> Timeline {
        Timeline::new(&[Shift {
            start: at(0),
            end: at(480),
            breaks: vec![BreakWindow {
                start: at(180),
                end: at(210),
                kind: "LUNCH".into(),
                mandatory: true,
            }],
            activities: vec![TitledSpan {
                start: at(300),
                end: at(330),
                title: "Team meeting".into(),
            }],
        }])
    }

    fn builtin() -> Judging {
        Judging::builtin(TimeDelta::minutes(2))
    }

    #[test]
    fn the_verdict_now_is_the_sweeps_judgement_with_where_the_deviation_began() {
        use AgentState::{LoggedOut, NotReady, Ready};
        let timeline = timeline();
        let judge_at = |state: AgentState, since: i64, now: i64| {
            judge(
                Some(&timeline),
                Some((state, None, at(since))),
                &builtin(),
                at(now),
            )
        };
        let ready_at_work = judge_at(Ready, 10, 100);
        assert_eq!(
            ready_at_work,
            AgentNow {
                verdict: NowVerdict::In,
                scheduled: Some("WORK".into()),
                out: None
            }
        );
        // READY since minute 100, into the lunch that began at 180: out since 180.
        let in_lunch = judge_at(Ready, 100, 190);
        assert_eq!(in_lunch.verdict, NowVerdict::Out);
        assert_eq!(in_lunch.scheduled.as_deref(), Some("LUNCH"));
        assert_eq!(
            in_lunch.out,
            Some((at(180), DeviationKind::WorkingInMandatoryBreak))
        );
        let meeting = judge_at(NotReady, 290, 310);
        assert_eq!(meeting.scheduled.as_deref(), Some("Team meeting"));
        assert_eq!(
            meeting.out.map(|o| o.0),
            Some(at(290)),
            "titled work is work: one deviation from before the meeting"
        );
        assert_eq!(
            judge_at(LoggedOut, 480, 500).verdict,
            NowVerdict::Unscheduled,
            "logged out off shift"
        );
        let stayed_on = judge_at(Ready, 400, 500);
        assert_eq!(
            (stayed_on.verdict, stayed_on.scheduled, stayed_on.out),
            (
                NowVerdict::Out,
                None,
                Some((at(480), DeviationKind::LoggedInOutsideShift))
            )
        );
        assert_eq!(
            judge(Some(&timeline), None, &builtin(), at(100)).verdict,
            NowVerdict::Neutral,
            "scheduled, nothing recorded"
        );
        assert_eq!(
            judge(None, Some((Ready, None, at(0))), &builtin(), at(100)).verdict,
            NowVerdict::Unscheduled,
            "no shift stored"
        );
        let authorised = timeline.authorised(&[(at(185), at(200))]);
        let excused = judge(
            Some(&authorised),
            Some((Ready, None, at(100))),
            &builtin(),
            at(190),
        );
        assert_eq!(
            (excused.verdict, excused.out),
            (NowVerdict::Authorised, None)
        );
    }
}
