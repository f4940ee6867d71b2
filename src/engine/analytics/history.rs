//! Analytics over wfmd's own store: idle time, time in states, adherence, exceptions,
//! violations, transitions and latency p95 per agent or team and per hour, day or week.
//! No platform call.
//!
//! The figures of one agent in one window are the compliance report's
//! ([`crate::report::summarize`]: the same idle, adherence and exception rules), so a
//! history query and a compliance report of the same day agree. Hours are computed from
//! the raw intervals. Days come from the daily rollups (`analytics_daily`), which are
//! computed from the raw intervals once a day is over (plus [`SETTLE`]) and then kept:
//! "adherence per agent per day" over 90 days reads 180,000 rollup rows instead of
//! 20 million intervals. Weeks add up their days (the latency p95 of a week is taken
//! from its attempts, since percentiles do not add up).
//!
//! Each agent's figures of a bucket are then grouped by the query's dimensions and
//! combined with each metric's aggregation (sum, avg, min, max, count over the agents of
//! the group that have a value).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;

use super::spec::{Agg, Bucket, QuerySpec};
use crate::domain::AgentState;
use crate::domain::adherence_rules::Judging;
use crate::domain::idle::Window;
use crate::report::{AgentSummary, summarize};
use crate::store::analytics::{self as stored, DailyRow, RosterEntry};
use crate::store::retention::{self, Kind, NotKept};
use crate::store::{Pool, Store, from_ms, to_ms};

/// How long after a day ends its rollup is written: late observations (a state the sync
/// records with the platform's earlier timestamp) land before it.
pub const SETTLE: TimeDelta = TimeDelta::hours(1);

const DAY_MS: i64 = 86_400_000;

/// One output row: a series (its dimension values) at one bucket, a value per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub series: BTreeMap<String, String>,
    pub bucket: i64,
    pub values: Vec<Option<f64>>,
}

/// Where a history query's rows go, one bucket at a time.
pub trait RowSink: Send {
    fn rows(&mut self, rows: Vec<Row>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Collects every row (tests, small queries).
impl RowSink for Vec<Row> {
    async fn rows(&mut self, rows: Vec<Row>) -> anyhow::Result<()> {
        self.extend(rows);
        Ok(())
    }
}

/// Counts the rows and drops them (benchmarks).
impl RowSink for usize {
    async fn rows(&mut self, rows: Vec<Row>) -> anyhow::Result<()> {
        *self += rows.len();
        Ok(())
    }
}

/// Whether day buckets come from the rollups or are recomputed from the raw intervals
/// (the test of the rollups compares the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Rollups,
    Raw,
}

/// One agent's figures of one bucket, as the rollups keep them.
fn from_summary(bucket: i64, s: &AgentSummary) -> DailyRow {
    let ms = |seconds: f64| (seconds * 1000.0).round() as i64;
    DailyRow {
        day: bucket,
        agent_id: s.agent_id.clone(),
        idle_ms: ms(s.idle_seconds),
        ready_ms: ms(s.seconds_ready),
        not_ready_ms: ms(s.seconds_not_ready),
        paused_ms: ms(s.seconds_paused),
        idle_state_ms: ms(s.seconds_idle),
        logged_out_ms: ms(s.seconds_logged_out),
        on_contact_ms: ms(s.seconds_on_contact),
        acw_ms: ms(s.seconds_acw),
        scheduled_ms: s.scheduled_seconds.map(ms),
        in_adherence_ms: s.in_adherence_seconds.map(ms),
        exceptions: s.adherence_exceptions.map(i64::from),
        transitions: s.transitions,
        violations: s.rejections,
        latency_p95_ms: s.latency_p95_ms,
    }
}

/// Adds `b`'s durations and counts to `a` (a week from its days; p95 is set apart).
fn add(a: &mut DailyRow, b: &DailyRow) {
    let opt = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
    };
    a.idle_ms += b.idle_ms;
    a.ready_ms += b.ready_ms;
    a.not_ready_ms += b.not_ready_ms;
    a.paused_ms += b.paused_ms;
    a.idle_state_ms += b.idle_state_ms;
    a.logged_out_ms += b.logged_out_ms;
    a.on_contact_ms += b.on_contact_ms;
    a.acw_ms += b.acw_ms;
    a.scheduled_ms = opt(a.scheduled_ms, b.scheduled_ms);
    a.in_adherence_ms = opt(a.in_adherence_ms, b.in_adherence_ms);
    a.exceptions = opt(a.exceptions, b.exceptions);
    a.transitions += b.transitions;
    a.violations += b.violations;
}

fn state_ms(row: &DailyRow, state: AgentState) -> i64 {
    match state {
        AgentState::Ready => row.ready_ms,
        AgentState::NotReady => row.not_ready_ms,
        AgentState::Paused => row.paused_ms,
        AgentState::Idle => row.idle_state_ms,
        AgentState::LoggedOut => row.logged_out_ms,
        AgentState::OnContact => row.on_contact_ms,
        AgentState::Acw => row.acw_ms,
    }
}

/// The start of the first day not over at `now` (with [`SETTLE`]): it has no rollup
/// yet, so its raw records are all needed.
pub fn first_unfinished_day(now: DateTime<Utc>) -> DateTime<Utc> {
    from_ms(to_ms(now - SETTLE).div_euclid(DAY_MS) * DAY_MS)
}

/// Computes and stores the rollup of every completed day in `[from_day, to_day)` that
/// has none yet. Returns how many days were computed.
pub async fn ensure_rollups(
    store: &Store,
    from_day: i64,
    to_day: i64,
    now: DateTime<Utc>,
    judging: &Judging,
) -> Result<usize, sqlx::Error> {
    let done: HashSet<i64> = stored::rolled_up_days(store.reader(), from_day, to_day)
        .await?
        .into_iter()
        .collect();
    let mut computed = 0;
    let mut day = from_day;
    while day < to_day {
        let complete = from_ms(day + DAY_MS) + SETTLE <= now;
        if complete && !done.contains(&day) {
            let window = Window {
                from: from_ms(day),
                to: from_ms(day + DAY_MS),
            };
            let rows: Vec<DailyRow> = summarize(store.reader(), window, now, judging)
                .await?
                .iter()
                .map(|s| from_summary(day, s))
                .collect();
            let mut tx = store.begin_write().await?;
            stored::save_day(&mut tx, day, &rows, to_ms(now)).await?;
            tx.commit().await?;
            computed += 1;
        }
        day += DAY_MS;
    }
    Ok(computed)
}

/// Whether `spec` can be answered in full although retention removed the raw records
/// (state intervals, attempts) before its horizon: hourly buckets and the parts of a day
/// the range cuts are computed from the raw records, so they must lie after the horizon;
/// whole days before it are answered from their kept rollups, so each must have one.
/// `Err` names the horizon, for a refusal naming `from`.
pub async fn check_kept(
    store: &Store,
    spec: &QuerySpec,
) -> Result<Result<(), NotKept>, sqlx::Error> {
    let Err(not_kept) = retention::check_window(
        store.reader(),
        &[Kind::Intervals, Kind::Attempts],
        spec.from,
    )
    .await?
    else {
        return Ok(Ok(()));
    };
    if spec.bucket == Bucket::Hour {
        return Ok(Err(not_kept));
    }
    let (from, to) = (to_ms(spec.from), to_ms(spec.to));
    // The day holding the horizon lost some of its records too.
    let end = (Bucket::Day.floor(to_ms(not_kept.kept_from)) + DAY_MS).min(to);
    if from % DAY_MS != 0 || end % DAY_MS != 0 {
        return Ok(Err(not_kept));
    }
    let kept = stored::rolled_up_days(store.reader(), from, end).await?;
    Ok(if kept.len() as i64 == (end - from) / DAY_MS {
        Ok(())
    } else {
        Err(not_kept)
    })
}

/// What the query selects, resolved once.
struct Selection {
    metrics: Vec<(String, Agg)>,
    dimensions: Vec<String>,
    agents: Option<HashSet<String>>,
    teams: Option<HashSet<String>>,
    states: Vec<AgentState>,
    roster: HashMap<String, RosterEntry>,
}

impl Selection {
    async fn new(pool: &Pool, spec: &QuerySpec) -> Result<Selection, sqlx::Error> {
        let values = |field: &str| -> Option<HashSet<String>> {
            let set: HashSet<String> = spec
                .filters
                .iter()
                .filter(|f| f.field == field)
                .map(|f| f.value.clone())
                .collect();
            (!set.is_empty()).then_some(set)
        };
        let mut states: Vec<AgentState> = spec
            .filters
            .iter()
            .filter(|f| f.field == "state")
            .filter_map(|f| f.value.parse().ok())
            .collect();
        if states.is_empty() {
            states = AgentState::ALL
                .into_iter()
                .filter(|s| *s != AgentState::LoggedOut)
                .collect();
        }
        let teams = values("team");
        let roster = if teams.is_some() || spec.dimensions.iter().any(|d| d == "team") {
            stored::roster(pool)
                .await?
                .into_iter()
                .map(|e| (e.agent_id.clone(), e))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(Selection {
            metrics: spec
                .metrics
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        m.aggregation.parse().expect("checked by QuerySpec::check"),
                    )
                })
                .collect(),
            dimensions: spec.dimensions.clone(),
            agents: values("agent"),
            teams,
            states,
            roster,
        })
    }

    fn team_of(&self, agent: &str) -> (&str, &str) {
        self.roster
            .get(agent)
            .map(|e| {
                (
                    e.team_id.as_deref().unwrap_or(""),
                    e.team_name.as_deref().unwrap_or(""),
                )
            })
            .unwrap_or(("", ""))
    }

    fn selects(&self, agent: &str) -> bool {
        if let Some(agents) = &self.agents
            && !agents.contains(agent)
        {
            return false;
        }
        if let Some(teams) = &self.teams {
            let (id, name) = self.team_of(agent);
            return teams.contains(id) || (!name.is_empty() && teams.contains(name));
        }
        true
    }

    fn value(&self, metric: &str, row: &DailyRow) -> Option<f64> {
        let seconds = |ms: i64| ms as f64 / 1000.0;
        match metric {
            "idle_seconds" => Some(seconds(row.idle_ms)),
            "state_seconds" => Some(seconds(self.states.iter().map(|s| state_ms(row, *s)).sum())),
            "adherence_pct" => match (row.scheduled_ms, row.in_adherence_ms) {
                (Some(scheduled), Some(met)) if scheduled > 0 => {
                    Some(met as f64 * 100.0 / scheduled as f64)
                }
                _ => None,
            },
            "exceptions" => row.exceptions.map(|n| n as f64),
            "violations" => Some(row.violations as f64),
            "transitions" => Some(row.transitions as f64),
            "latency_p95_ms" => row.latency_p95_ms.map(|ms| ms as f64),
            _ => None,
        }
    }

    /// The rows of one bucket from its agents' figures.
    fn rows(&self, bucket: i64, agents: &[DailyRow]) -> Vec<Row> {
        let mut groups: BTreeMap<BTreeMap<String, String>, Vec<&DailyRow>> = BTreeMap::new();
        for row in agents.iter().filter(|r| self.selects(&r.agent_id)) {
            let series = self
                .dimensions
                .iter()
                .map(|d| {
                    let value = match d.as_str() {
                        "agent" => row.agent_id.clone(),
                        _ => self.team_of(&row.agent_id).0.to_owned(),
                    };
                    (d.clone(), value)
                })
                .collect();
            groups.entry(series).or_default().push(row);
        }
        groups
            .into_iter()
            .map(|(series, members)| Row {
                series,
                bucket,
                values: self
                    .metrics
                    .iter()
                    .map(|(name, agg)| {
                        let values: Vec<f64> =
                            members.iter().filter_map(|r| self.value(name, r)).collect();
                        agg.apply(&values)
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Runs a history query; hands the rows to `emit` one bucket at a time, in bucket order
/// (series in order within a bucket). `now` ends open intervals; `judging` judges
/// adherence.
pub async fn run(
    store: &Store,
    spec: &QuerySpec,
    now: DateTime<Utc>,
    judging: &Judging,
    path: Path,
    emit: &mut impl RowSink,
) -> anyhow::Result<()> {
    let pool = store.reader();
    let selection = Selection::new(pool, spec).await?;
    let (from, to) = (to_ms(spec.from), to_ms(spec.to));
    let raw = async |window: Window| -> Result<Vec<DailyRow>, sqlx::Error> {
        let bucket = to_ms(window.from);
        Ok(summarize(pool, window, now, judging)
            .await?
            .iter()
            .map(|s| from_summary(bucket, s))
            .collect())
    };
    let clip = |start: i64, length: i64| Window {
        from: from_ms(start.max(from)),
        to: from_ms((start + length).min(to)),
    };

    if spec.bucket == Bucket::Hour {
        for start in Bucket::Hour.starts(from, to) {
            let agents = raw(clip(start, Bucket::Hour.ms())).await?;
            emit.rows(selection.rows(start, &agents)).await?;
        }
        return Ok(());
    }

    // Days: a whole completed day from its rollup; a day the range cuts, or one not over
    // yet, from the raw intervals.
    let whole = |day: i64| day >= from && day + DAY_MS <= to;
    let first_day = Bucket::Day.floor(from);
    if path == Path::Rollups {
        ensure_rollups(store, first_day, to, now, judging).await?;
    }
    let rolled: HashSet<i64> = match path {
        Path::Rollups => stored::rolled_up_days(pool, first_day, to)
            .await?
            .into_iter()
            .collect(),
        Path::Raw => HashSet::new(),
    };
    let mut rollups = stored::daily_rows(pool, first_day, to);
    let mut next = rollups.try_next().await?;
    let mut week: (i64, BTreeMap<String, DailyRow>) = (i64::MIN, BTreeMap::new());
    for day in Bucket::Day.starts(from, to) {
        let mut agents = Vec::new();
        while let Some(row) = next.take_if(|r| r.day <= day) {
            if row.day == day {
                agents.push(row);
            }
            next = rollups.try_next().await?;
        }
        if !(whole(day) && rolled.contains(&day)) {
            agents = raw(clip(day, DAY_MS)).await?;
        }
        match spec.bucket {
            Bucket::Day => emit.rows(selection.rows(day, &agents)).await?,
            _ => {
                let start = Bucket::Week.floor(day);
                if start != week.0 {
                    let done = std::mem::replace(&mut week, (start, BTreeMap::new()));
                    if done.0 != i64::MIN {
                        emit.rows(week_rows(pool, &selection, done, from, to).await?)
                            .await?;
                    }
                }
                for row in agents {
                    match week.1.get_mut(&row.agent_id) {
                        Some(sum) => add(sum, &row),
                        None => {
                            week.1.insert(row.agent_id.clone(), row);
                        }
                    }
                }
            }
        }
    }
    if week.0 != i64::MIN {
        emit.rows(week_rows(pool, &selection, week, from, to).await?)
            .await?;
    }
    Ok(())
}

/// A week's rows from its summed days, with the latency p95 of the week's attempts.
async fn week_rows(
    pool: &Pool,
    selection: &Selection,
    (start, agents): (i64, BTreeMap<String, DailyRow>),
    from: i64,
    to: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let needs_p95 = selection.metrics.iter().any(|(m, _)| m == "latency_p95_ms");
    let p95 = if needs_p95 {
        stored::latency_p95(pool, start.max(from), (start + Bucket::Week.ms()).min(to)).await?
    } else {
        HashMap::new()
    };
    let agents: Vec<DailyRow> = agents
        .into_values()
        .map(|mut row| {
            row.day = start;
            row.latency_p95_ms = p95.get(&row.agent_id).copied();
            row
        })
        .collect();
    Ok(selection.rows(start, &agents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Origin;
    use crate::domain::adherence::Shift;
    use crate::domain::policy::BreakWindow;
    use crate::engine::analytics::spec::AnalyticsSource;
    use crate::store::attempts::{self, AttemptRow};
    use crate::store::history::{self, NewInterval};
    use crate::store::schedules::{self, BreakSource, StoredShift};
    use chrono::TimeZone;

    const AGENTS: usize = 6;
    const DAYS: i64 = 9;

    fn start() -> DateTime<Utc> {
        // A Wednesday: the range cuts weeks on both sides.
        Utc.with_ymd_and_hms(2026, 10, 7, 0, 0, 0).unwrap()
    }

    /// Agents changing state every 37–120 minutes for nine days, with a shift and a
    /// mandatory lunch each day and some attempts (some rejected).
    async fn seeded_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let states = [
            AgentState::Ready,
            AgentState::OnContact,
            AgentState::Acw,
            AgentState::NotReady,
            AgentState::Idle,
            AgentState::Paused,
            AgentState::LoggedOut,
        ];
        for a in 0..AGENTS {
            let agent = format!("u_{a:03}");
            let mut at = start() - TimeDelta::hours(3);
            let mut n = a;
            let mut shifts = Vec::new();
            while at < start() + TimeDelta::days(DAYS) + TimeDelta::hours(2) {
                history::switch_state(
                    &mut tx,
                    &NewInterval {
                        agent_id: &agent,
                        state: states[n % states.len()],
                        reason: None,
                        origin: Origin::Observed,
                        at,
                        attempt_id: None,
                    },
                )
                .await
                .unwrap();
                if n % 3 == 0 {
                    attempts::insert(
                        &mut tx,
                        &AttemptRow {
                            id: format!("att_{a}_{n}"),
                            idempotency_key: None,
                            agent_id: agent.clone(),
                            from_state: None,
                            target_state: "READY".into(),
                            reason: "WORKING".into(),
                            origin: "api".into(),
                            actor: "test".into(),
                            outcome: if n % 2 == 0 { "succeeded" } else { "rejected" }.into(),
                            violation: (n % 2 == 1).then(|| "AGENT_NOT_SCHEDULED".into()),
                            error: None,
                            latency_ms: (n as i64 * 37) % 900,
                            requested_at: to_ms(at),
                            completed_at: to_ms(at),
                        },
                    )
                    .await
                    .unwrap();
                }
                n += 1;
                at += TimeDelta::minutes(37 + (n as i64 * 53) % 84);
            }
            for d in -1..=DAYS {
                let day = start() + TimeDelta::days(d);
                let shift_start = day + TimeDelta::hours(8 + a as i64 % 3);
                shifts.push(StoredShift {
                    agent_id: agent.clone(),
                    shift: Shift {
                        start: shift_start,
                        end: shift_start + TimeDelta::hours(8),
                        breaks: vec![BreakWindow {
                            start: shift_start + TimeDelta::hours(4),
                            end: shift_start + TimeDelta::minutes(270),
                            kind: "LUNCH".into(),
                            mandatory: true,
                        }],
                        activities: Vec::new(),
                    },
                    timezone: None,
                    breaks_from: BreakSource::Schedule,
                    fetched_at: start(),
                });
            }
            schedules::save(&mut tx, &shifts).await.unwrap();
        }
        tx.commit().await.unwrap();
        store
    }

    fn spec(bucket: Bucket, metrics: &[&str], dimensions: &[&str]) -> QuerySpec {
        QuerySpec {
            source: AnalyticsSource::History,
            metrics: metrics.iter().map(|m| m.parse().unwrap()).collect(),
            dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
            filters: vec![],
            // Starts and ends inside a day, so partial days are computed raw.
            from: start() + TimeDelta::hours(5),
            to: start() + TimeDelta::days(DAYS - 1) + TimeDelta::hours(7),
            bucket,
            window: 3,
            z: 2.0,
            seasonality: Default::default(),
            detector: crate::domain::trend::Detector::Robust,
        }
    }

    /// The built-in kinds with a two-minute threshold.
    fn two_minutes() -> crate::engine::compliance::JudgingHandle {
        crate::engine::compliance::JudgingHandle::new(Judging::builtin(TimeDelta::minutes(2)))
    }

    async fn collect(store: &Store, spec: &QuerySpec, path: Path) -> Vec<Row> {
        let now = start() + TimeDelta::days(DAYS + 1);
        let mut rows = Vec::new();
        run(store, spec, now, &two_minutes().current(), path, &mut rows)
            .await
            .unwrap();
        rows
    }

    /// Retention keeping intervals and attempts for `age`, nothing else pruned.
    fn keeping(store: &Store, age: std::time::Duration) -> crate::engine::retention::Retention {
        let age = Some(age);
        let config = crate::config::retention::RetentionConfig {
            outbox_delivered: None,
            outbox_dead: None,
            webhook_attempts: None,
            samples: None,
            bulk_jobs: None,
            rule_firings: None,
            audit: None,
            attempts: age,
            intervals: age,
            ..Default::default()
        };
        crate::engine::retention::Retention::new(store.clone(), &config, &Default::default())
    }

    #[tokio::test]
    async fn day_figures_before_the_retention_horizon_come_from_rollups_kept_at_pruning() {
        let now = start() + TimeDelta::days(DAYS + 1);
        let whole_days = QuerySpec {
            from: start(),
            to: start() + TimeDelta::days(DAYS - 1),
            ..spec(Bucket::Day, &ALL, &["agent"])
        };
        let untouched_dir = tempfile::tempdir().unwrap();
        let untouched = seeded_store(&untouched_dir).await;
        let expected = collect(&untouched, &whole_days, Path::Rollups).await;

        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        let pass = keeping(&store, FIVE_DAYS)
            .with_rollups(two_minutes())
            .prune(now, &Default::default())
            .await
            .unwrap();
        assert!(pass.removed(Kind::Intervals) > 0, "{pass:?}");
        assert_eq!(check_kept(&store, &whole_days).await.unwrap(), Ok(()));
        assert_eq!(collect(&store, &whole_days, Path::Rollups).await, expected);

        // Hours and a cut day before the horizon would be computed from what is gone.
        let hours = QuerySpec {
            to: start() + TimeDelta::days(2),
            ..spec(Bucket::Hour, &ALL, &[])
        };
        let cut_day = QuerySpec {
            from: start() + TimeDelta::hours(5),
            ..whole_days.clone()
        };
        for refused in [hours, cut_day] {
            let not_kept = check_kept(&store, &refused).await.unwrap().unwrap_err();
            assert_eq!(not_kept.kept_from, now - TimeDelta::days(5), "{refused:?}");
        }
    }

    const FIVE_DAYS: std::time::Duration = std::time::Duration::from_secs(5 * 86_400);

    #[tokio::test]
    async fn a_retention_shorter_than_a_day_keeps_an_unfinished_days_records_for_its_rollup() {
        let day = start() + TimeDelta::days(4);
        let whole_day = QuerySpec {
            from: day,
            to: day + TimeDelta::days(1),
            ..spec(Bucket::Day, &ALL, &["agent"])
        };
        let untouched_dir = tempfile::tempdir().unwrap();
        let untouched = seeded_store(&untouched_dir).await;
        let expected = collect(&untouched, &whole_day, Path::Rollups).await;
        assert!(!expected.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        let hourly =
            keeping(&store, std::time::Duration::from_secs(3_600)).with_rollups(two_minutes());
        // Three hours into the day, then the next day, once it is over.
        for now in [
            day + TimeDelta::hours(3),
            day + TimeDelta::days(1) + TimeDelta::hours(2),
        ] {
            let pass = hourly.prune(now, &Default::default()).await.unwrap();
            assert!(pass.removed(Kind::Intervals) > 0, "{pass:?}");
        }
        assert_eq!(collect(&store, &whole_day, Path::Rollups).await, expected);
    }

    #[tokio::test]
    async fn a_day_query_over_pruned_days_without_rollups_is_refused_not_undercounted() {
        let now = start() + TimeDelta::days(DAYS + 1);
        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        keeping(&store, FIVE_DAYS)
            .prune(now, &Default::default())
            .await
            .unwrap();
        let whole_days = QuerySpec {
            from: start(),
            to: start() + TimeDelta::days(DAYS - 1),
            ..spec(Bucket::Day, &ALL, &["agent"])
        };
        assert!(check_kept(&store, &whole_days).await.unwrap().is_err());
        // After the horizon's day, the raw records are all there.
        let after = QuerySpec {
            from: now - TimeDelta::days(4),
            to: now - TimeDelta::days(1),
            ..whole_days
        };
        assert_eq!(check_kept(&store, &after).await.unwrap(), Ok(()));
    }

    const ALL: [&str; 9] = [
        "adherence_pct:avg",
        "idle_seconds:sum",
        "state_seconds:max",
        "exceptions:sum",
        "violations:sum",
        "transitions:count",
        "latency_p95_ms:max",
        "adherence_pct:min",
        "idle_seconds:avg",
    ];

    #[tokio::test]
    async fn daily_rollups_agree_with_a_query_over_the_raw_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        for (bucket, dims) in [
            (Bucket::Day, &["agent"][..]),
            (Bucket::Day, &[][..]),
            (Bucket::Week, &["agent"][..]),
        ] {
            let spec = spec(bucket, &ALL, dims);
            spec.check().unwrap();
            let from_rollups = collect(&store, &spec, Path::Rollups).await;
            let raw = collect(&store, &spec, Path::Raw).await;
            assert!(!raw.is_empty());
            assert_eq!(from_rollups, raw, "{bucket:?} by {dims:?}");
        }
        // The rollups were kept: every completed day the range touches.
        let kept = stored::rolled_up_days(store.reader(), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(kept.len() as i64, DAYS);
        let with_adherence = collect(&store, &spec(Bucket::Day, &ALL, &["agent"]), Path::Rollups)
            .await
            .into_iter()
            .filter(|r| r.values[0].is_some())
            .count();
        assert!(with_adherence > 0, "adherence was computed");
    }

    #[tokio::test]
    async fn hourly_buckets_match_the_compliance_report_of_the_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        let mut spec = spec(Bucket::Hour, &["idle_seconds:sum"], &["agent"]);
        spec.to = spec.from + TimeDelta::hours(3);
        let rows = collect(&store, &spec, Path::Rollups).await;
        let now = start() + TimeDelta::days(DAYS + 1);
        let hour = Bucket::Hour.floor(to_ms(spec.from)) + 3_600_000;
        let report = summarize(
            store.reader(),
            Window {
                from: from_ms(hour),
                to: from_ms(hour + 3_600_000),
            },
            now,
            &two_minutes().current(),
        )
        .await
        .unwrap();
        for summary in report {
            let row = rows
                .iter()
                .find(|r| r.bucket == hour && r.series["agent"] == summary.agent_id)
                .unwrap();
            assert_eq!(row.values[0], Some(summary.idle_seconds));
        }
    }

    #[tokio::test]
    async fn team_dimension_groups_agents_by_the_stored_roster() {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded_store(&dir).await;
        let roster: Vec<RosterEntry> = (0..AGENTS)
            .map(|a| RosterEntry {
                agent_id: format!("u_{a:03}"),
                name: None,
                team_id: Some(if a < 2 { "t_1" } else { "t_2" }.into()),
                team_name: Some(if a < 2 { "Care" } else { "Billing" }.into()),
            })
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        crate::store::roster::remember(&mut tx, &roster, 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut by_team = spec(Bucket::Day, &["transitions:sum"], &["team"]);
        let by_agent = collect(
            &store,
            &spec(Bucket::Day, &["transitions:sum"], &["agent"]),
            Path::Rollups,
        )
        .await;
        let teams = collect(&store, &by_team, Path::Rollups).await;
        let care: f64 = by_agent
            .iter()
            .filter(|r| {
                r.bucket == teams[0].bucket
                    && ["u_000", "u_001"].contains(&r.series["agent"].as_str())
            })
            .filter_map(|r| r.values[0])
            .sum();
        let row = teams.iter().find(|r| r.series["team"] == "t_1").unwrap();
        assert_eq!(row.values[0], Some(care));
        // Filtering by team name keeps only that team's agents.
        by_team.filters = vec!["team=Billing".parse().unwrap()];
        let billing = collect(&store, &by_team, Path::Rollups).await;
        assert!(billing.iter().all(|r| r.series["team"] == "t_2"));
    }
}
