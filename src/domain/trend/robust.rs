//! The anomaly detector of analytics jobs since #34: seasonal, robust, and following
//! level shifts.
//!
//! Contact-center figures repeat by hour of day and day of week, so a point is compared
//! with points at the same place in the season, and the season comes from the bucket and
//! the data (`choose`): hour buckets compare with the same hour on earlier days, or on
//! the same weekday when that fits the data clearly better; day buckets with the same
//! weekday when that fits clearly better than the days right before; week buckets with
//! the weeks right before.
//!
//! A point's **baseline** is the value expected there. Without a season it is the median
//! of the `window` points right before that were no anomalies. With one it is `level ×
//! seasonal` (`level + seasonal` for series that go below zero, where proportions mean
//! nothing; volumes change in proportion, so a busier month is busier at night by the
//! night's share):
//! - `seasonal`: the median of the `window` earlier values at the same place in the
//!   season, each taken relative to the level of its time. A point is judged once its
//!   place has `window` of them (`window` days for hourly data with a daily season).
//! - `level`: the median of the latest season's worth of points (at most two days of
//!   hours) that were no anomalies, each relative to its seasonal part and weighted by
//!   it, so a busy hour says more than a quiet one. It follows drift.
//!
//! A **level shift** is a run of `SHIFT_RUN` points on one side of their baselines,
//! each at least half the threshold away and some of them anomalies: those are flagged
//! (the shift starts there), and the level becomes theirs, so what follows is judged
//! against the new level instead of being flagged until the old one is forgotten.
//!
//! A point's **spread** is the median absolute residual (`value − baseline`) of the
//! latest points whose baselines were of about the same size (within a factor of √2),
//! scaled by 1.4826 to match the standard deviation of normal noise: counts are noisier
//! when they are larger, so a busy hour is measured against busy-hour noise, and points
//! of every place in the season contribute, so the estimate rests on many residuals
//! (a median of few is often far too small). Integer data (counts) never has a spread
//! below 1, so a quiet hour going from 0 to 2 is no anomaly. The **z-score** is
//! `(value − baseline) / spread`; past the threshold the point is a SPIKE or a DROP.
//! Medians ignore a lone spike: it neither hides the next one nor lifts the baseline or
//! the spread.

use super::{AnomalyKind, HOUR_MS, Seasonality, TrendFigures, TrendPoint, TrendSettings};

/// Scales a median absolute deviation to the standard deviation of normal noise.
const MAD_SCALE: f64 = 1.4826;
/// A longer season is chosen only when its mean absolute error is below this share of
/// the shorter one's: a season must earn its longer warm-up.
const SEASON_GAIN: f64 = 0.8;
/// Residuals kept per size of baseline: enough that the spread is a steady estimate.
const RESIDUALS_KEPT: usize = 168;
/// Residuals a spread needs before anything is judged.
const RESIDUALS_TO_JUDGE: usize = 14;

/// How much the spread of `n` residuals is widened: a median of few residuals is often
/// far too small, which would flag ordinary points. `1 + (14 / n)^1.5` keeps the share
/// of normal noise flagged past 4.5 about as small with 14 to 84 residuals as with 168
/// (measured by simulation), and fades as residuals accumulate. Only exactly rounded
/// operations (no `powf`, no logarithms) go into the figures, so a job's results, and
/// the hash of its CSV, are the same on every machine.
fn small_sample_widening(n: usize) -> f64 {
    let ratio = RESIDUALS_TO_JUDGE as f64 / n.max(1) as f64;
    1.0 + ratio * ratio.sqrt()
}

/// Scores the finite points (`finite`, indices into `points`, in time order) into
/// `figures`; returns the season the baselines followed.
pub(super) fn score(
    points: &[TrendPoint],
    finite: &[usize],
    settings: &TrendSettings,
    figures: &mut [TrendFigures],
) -> Seasonality {
    let step = step_ms(points, finite, settings.bucket_ms);
    let season = choose(points, finite, settings, step);
    let values = || finite.iter().map(|&i| points[i].value);
    let quantum = if values().all(|v| v.fract() == 0.0 && v.abs() < 9e15) {
        1.0
    } else {
        0.0
    };
    let proportional = values().all(|v| v >= 0.0);
    let mut detector = Detector::new(season, step, settings.window.max(1), quantum, proportional);
    for &i in finite {
        detector.judge(i, &points[i], settings.z_threshold, figures);
    }
    season
}

/// The bucket length: as given, or else the shortest gap between points.
fn step_ms(points: &[TrendPoint], finite: &[usize], bucket_ms: i64) -> i64 {
    if bucket_ms > 0 {
        return bucket_ms;
    }
    finite
        .windows(2)
        .map(|w| points[w[1]].at.timestamp_millis() - points[w[0]].at.timestamp_millis())
        .filter(|&gap| gap > 0)
        .min()
        .unwrap_or(HOUR_MS)
}

/// Whether a season of `period_ms` can be measured in buckets of `step_ms`.
fn fits(period_ms: i64, step_ms: i64) -> bool {
    step_ms > 0 && period_ms % step_ms == 0 && period_ms / step_ms >= 2
}

/// The season of `settings`, or for `Auto` the one that fits the data: each candidate
/// (none, then daily and weekly where the bucket allows) predicts every point as the
/// median of the `window` earlier values at its place in the season, and the longest
/// season whose mean absolute error beats the shorter ones' by [`SEASON_GAIN`] wins.
/// Candidates are compared on the same points (those the longest can predict); a season
/// the series is too short to predict a full season of is left out.
pub(super) fn choose(
    points: &[TrendPoint],
    finite: &[usize],
    settings: &TrendSettings,
    step: i64,
) -> Seasonality {
    if settings.seasonality != Seasonality::Auto {
        let fixed = settings.seasonality;
        return match fixed.period_ms() {
            Some(period) if !fits(period, step) => Seasonality::None,
            _ => fixed,
        };
    }
    let window = settings.window.max(1);
    let mut candidates: Vec<Seasonality> =
        [Seasonality::None, Seasonality::Daily, Seasonality::Weekly]
            .into_iter()
            .filter(|s| s.period_ms().is_none_or(|period| fits(period, step)))
            .collect();
    while candidates.len() > 1 {
        let errors: Vec<Vec<Option<f64>>> = candidates
            .iter()
            .map(|&season| prediction_errors(points, finite, season, step, window))
            .collect();
        let longest = errors.last().expect("candidates");
        let compared: Vec<usize> = (0..finite.len())
            .filter(|&k| longest[k].is_some())
            .collect();
        let phases = candidates
            .last()
            .and_then(|s| s.period_ms())
            .map_or(1, |period| (period / step) as usize);
        if compared.len() < phases.max(window) {
            candidates.pop();
            continue;
        }
        let mean_error = |errors: &[Option<f64>]| {
            compared
                .iter()
                .map(|&k| errors[k].unwrap_or(0.0))
                .sum::<f64>()
                / compared.len() as f64
        };
        let means: Vec<f64> = errors.iter().map(|e| mean_error(e)).collect();
        let mut best = 0;
        for candidate in 1..candidates.len() {
            if means[candidate] < SEASON_GAIN * means[best] {
                best = candidate;
            }
        }
        return candidates[best];
    }
    Seasonality::None
}

/// For each finite point, `|value − median of the window earlier values at its place in
/// the season|`, once there are `window` of them.
fn prediction_errors(
    points: &[TrendPoint],
    finite: &[usize],
    season: Seasonality,
    step: i64,
    window: usize,
) -> Vec<Option<f64>> {
    let places = Places::new(season, step);
    let mut history: Vec<Ring> = (0..places.count).map(|_| Ring::new(window)).collect();
    let mut scratch = Vec::with_capacity(window);
    finite
        .iter()
        .map(|&i| {
            let point = &points[i];
            let ring = &mut history[places.of(point)];
            let error =
                (ring.len() >= window).then(|| (point.value - ring.median(&mut scratch)).abs());
            ring.push(point.value);
            error
        })
        .collect()
}

/// The places of a season: hour of the day, hour of the week, weekday; one for none.
struct Places {
    period_ms: i64,
    step_ms: i64,
    count: usize,
}

impl Places {
    fn new(season: Seasonality, step_ms: i64) -> Places {
        match season.period_ms() {
            Some(period_ms) if fits(period_ms, step_ms) => Places {
                period_ms,
                step_ms,
                count: (period_ms / step_ms) as usize,
            },
            _ => Places {
                period_ms: 0,
                step_ms,
                count: 1,
            },
        }
    }

    fn of(&self, point: &TrendPoint) -> usize {
        if self.count == 1 {
            return 0;
        }
        let into = point.at.timestamp_millis().rem_euclid(self.period_ms);
        ((into / self.step_ms) as usize).min(self.count - 1)
    }
}

/// The latest `capacity` values of a series, oldest first.
struct Ring {
    values: std::collections::VecDeque<f64>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring {
            values: std::collections::VecDeque::with_capacity(capacity + 1),
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// Replaces the newest value.
    fn replace_last(&mut self, value: f64) {
        if let Some(last) = self.values.back_mut() {
            *last = value;
        }
    }

    fn push(&mut self, value: f64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// The median (of a non-empty ring), using `scratch` for the selection.
    fn median(&self, scratch: &mut Vec<f64>) -> f64 {
        scratch.clear();
        scratch.extend(self.values.iter().copied());
        median(scratch)
    }
}

/// The median of `values` (not empty), reordering them.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, middle, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *middle;
    if n % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Points in a row on one side of their baselines (each at least half the threshold
/// away, and at least one an anomaly) that make a level shift.
const SHIFT_RUN: usize = 3;
/// The most points the level is taken over (two days of hours).
const LEVEL_POINTS: usize = 48;

/// One of the points the level is taken over: its value relative to its seasonal part,
/// and how much that says (its seasonal part: a busy hour says more about a
/// proportional level than a quiet one).
#[derive(Debug, Clone, Copy)]
struct LevelSample {
    relative: f64,
    weight: f64,
}

/// A point of a run on one side of the baselines: each at least half the threshold
/// away, some of them anomalies.
struct RunPoint {
    sample: LevelSample,
    value: f64,
    place: usize,
    above: bool,
    anomaly: bool,
}

/// The detector's state while it walks the series.
struct Detector {
    places: Places,
    window: usize,
    /// Level and seasonal part multiply (non-negative series) or add.
    proportional: bool,
    /// Per place: the latest `window` values relative to the level of their time.
    seasonal: Vec<Ring>,
    /// The latest points that were no anomalies, relative to their seasonal part: with a
    /// season, a season's worth (at most [`LEVEL_POINTS`], at least `window`); without
    /// one, `window` values.
    level: std::collections::VecDeque<LevelSample>,
    level_points: usize,
    /// Whether the level has been taken over a full `level_points` once: before that,
    /// a few quiet hours would set it for the busy ones.
    level_ready: bool,
    /// Per size of baseline (half-octaves of its magnitude): the latest absolute
    /// residuals.
    residuals: std::collections::BTreeMap<i32, Ring>,
    /// The current run of anomalies on one side.
    run: Vec<RunPoint>,
    /// The smallest spread: 1 for integer data, else 0 (then a relative epsilon).
    quantum: f64,
    scratch: Vec<f64>,
    weighted: Vec<(f64, f64)>,
}

impl Detector {
    fn new(
        season: Seasonality,
        step_ms: i64,
        window: usize,
        quantum: f64,
        proportional: bool,
    ) -> Detector {
        let places = Places::new(season, step_ms);
        let level_points = if places.count > 1 {
            (2 * places.count).clamp(window, LEVEL_POINTS.max(window))
        } else {
            window
        };
        Detector {
            seasonal: (0..places.count).map(|_| Ring::new(window)).collect(),
            level: std::collections::VecDeque::with_capacity(level_points + 1),
            level_points,
            level_ready: false,
            residuals: std::collections::BTreeMap::new(),
            run: Vec::with_capacity(SHIFT_RUN),
            places,
            window,
            proportional,
            quantum,
            scratch: Vec::with_capacity(RESIDUALS_KEPT * 3),
            weighted: Vec::with_capacity(level_points),
        }
    }

    /// The level: the weighted median of the level samples; `None` until there have
    /// been enough of them.
    fn level(&mut self) -> Option<f64> {
        if !self.level_ready || self.level.is_empty() {
            return None;
        }
        self.weighted.clear();
        self.weighted
            .extend(self.level.iter().map(|s| (s.relative, s.weight)));
        Some(weighted_median(&mut self.weighted))
    }

    fn learn_level(&mut self, sample: LevelSample) {
        if self.level.len() == self.level_points {
            self.level.pop_front();
        }
        self.level.push_back(sample);
        self.level_ready |= self.level.len() == self.level_points;
    }

    /// The size class of a baseline: half-octaves of `1 + |baseline|`, read from the
    /// float's exponent and mantissa (exact, unlike a logarithm).
    fn size(baseline: f64) -> i32 {
        let magnitude = 1.0 + baseline.abs();
        if !magnitude.is_finite() {
            return i32::MAX;
        }
        let bits = magnitude.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
        2 * exponent + i32::from(mantissa >= std::f64::consts::SQRT_2)
    }

    /// The absolute residuals of baselines of `baseline`'s size, widened to the sizes
    /// either side (nearest first) until there are enough; in `self.scratch`.
    fn comparable_residuals(&mut self, baseline: f64) {
        let wanted = 3 * RESIDUALS_TO_JUDGE;
        let size = Detector::size(baseline);
        self.scratch.clear();
        let (lowest, highest) = match (
            self.residuals.keys().next(),
            self.residuals.keys().next_back(),
        ) {
            (Some(&low), Some(&high)) => (low, high),
            _ => return,
        };
        let mut reach = 0;
        while self.scratch.len() < wanted
            && (size.saturating_sub(reach) >= lowest || size.saturating_add(reach) <= highest)
        {
            for near in [size.saturating_sub(reach), size.saturating_add(reach)] {
                if let Some(ring) = self.residuals.get(&near) {
                    self.scratch.extend(ring.values.iter().copied());
                }
                if reach == 0 {
                    break;
                }
            }
            reach += 1;
        }
    }

    fn combine(&self, level: f64, seasonal: f64) -> f64 {
        if self.proportional {
            level * seasonal
        } else {
            level + seasonal
        }
    }

    /// `value` relative to `part` (a level or a seasonal part); `None` where a zero
    /// part makes a proportion meaningless.
    fn relative(&self, value: f64, part: f64) -> Option<f64> {
        if !self.proportional {
            Some(value - part)
        } else if part > 0.0 {
            Some(value / part)
        } else {
            None
        }
    }

    fn judge(
        &mut self,
        i: usize,
        point: &TrendPoint,
        threshold: f64,
        figures: &mut [TrendFigures],
    ) {
        let x = point.value;
        let place = self.places.of(point);
        let seasonal_series = self.places.count > 1;
        let identity = if self.proportional { 1.0 } else { 0.0 };
        let level = self.level();
        let (baseline, established, sample) = if seasonal_series {
            let level = level.unwrap_or(identity);
            let ring = &self.seasonal[place];
            let seasonal = (ring.len() > 0).then(|| ring.median(&mut self.scratch));
            let settled = ring.len() >= self.window;
            let established = settled && self.level_ready;
            if let Some(relative) = self.relative(x, level) {
                self.seasonal[place].push(relative);
            }
            let sample = seasonal.and_then(|s| {
                Some(LevelSample {
                    relative: self.relative(x, s)?,
                    weight: if self.proportional { s } else { 1.0 },
                })
            });
            (
                seasonal.map(|s| self.combine(level, s)),
                established,
                sample.filter(|_| settled),
            )
        } else {
            // Without a season the level is the median of the points right before, from
            // the first one on.
            let baseline = (!self.level.is_empty()).then(|| {
                self.weighted.clear();
                self.weighted
                    .extend(self.level.iter().map(|s| (s.relative, s.weight)));
                weighted_median(&mut self.weighted)
            });
            let sample = LevelSample {
                relative: x,
                weight: 1.0,
            };
            (baseline, self.level_ready, Some(sample))
        };

        let mut anomaly = None;
        // Which side the point leans to, when it is at least half the threshold away.
        let mut lean = None;
        // Values of extreme sizes can make a proportion overflow: a baseline that is not
        // a number judges nothing.
        if let Some(baseline) = baseline.filter(|b| b.is_finite()) {
            let residual = x - baseline;
            self.comparable_residuals(baseline);
            let n = self.scratch.len();
            if established && n >= RESIDUALS_TO_JUDGE {
                let floor = self.quantum.max(1e-9 * baseline.abs().max(1.0));
                let spread =
                    (MAD_SCALE * median(&mut self.scratch) * small_sample_widening(n)).max(floor);
                let z = residual / spread;
                let figure = &mut figures[i];
                figure.baseline = Some(baseline);
                figure.spread = Some(spread);
                figure.z_score = Some(z);
                if z.abs() > threshold / 2.0 {
                    lean = Some(z > 0.0);
                }
                if z.abs() > threshold {
                    let kind = if z > 0.0 {
                        AnomalyKind::Spike
                    } else {
                        AnomalyKind::Drop
                    };
                    figure.anomaly = Some(kind);
                    anomaly = Some(kind);
                }
            }
            self.residuals
                .entry(Detector::size(baseline))
                .or_insert_with(|| Ring::new(RESIDUALS_KEPT))
                .push(residual.abs());
        }

        let Some(sample) = sample else {
            self.run.clear();
            return;
        };
        // The level learns from what is ordinary; with a season, from the places whose
        // seasonal parts are settled (`sample` is `None` before).
        if anomaly.is_none() {
            self.learn_level(sample);
        }
        match lean {
            None => self.run.clear(),
            Some(above) => {
                if self.run.last().is_some_and(|r| r.above != above) {
                    self.run.clear();
                }
                self.run.push(RunPoint {
                    sample,
                    value: x,
                    place,
                    above,
                    anomaly: anomaly.is_some(),
                });
                if self.run.len() >= SHIFT_RUN && self.run.iter().any(|r| r.anomaly) {
                    self.shift();
                }
            }
        }
    }

    /// The run is a level shift: [`SHIFT_RUN`] points in a row on one side, at least
    /// half the threshold away and some of them anomalies. The level becomes theirs, and
    /// what was stored of them is restated against it, so the new level is the baseline
    /// from the next point on.
    fn shift(&mut self) {
        self.level.clear();
        let run = std::mem::take(&mut self.run);
        for point in &run {
            self.learn_level(point.sample);
        }
        let Some(level) = self.level() else { return };
        if self.places.count > 1 {
            for point in &run {
                if let Some(relative) = self.relative(point.value, level) {
                    self.seasonal[point.place].replace_last(relative);
                }
            }
        }
    }
}

/// The weighted median of `(value, weight)` pairs (not empty), reordering them: the
/// value where the weights below and above are each at most half the total. Zero
/// weights count as tiny ones, so a run of them still has a median.
fn weighted_median(pairs: &mut [(f64, f64)]) -> f64 {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let weight = |w: f64| w.max(1e-12);
    let total: f64 = pairs.iter().map(|p| weight(p.1)).sum();
    let mut below = 0.0;
    for &(value, w) in pairs.iter() {
        below += weight(w);
        if below >= total / 2.0 {
            return value;
        }
    }
    pairs[pairs.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::super::{Analysis, DAY_MS, Detector as Kind, WEEK_MS, analyse};
    use super::*;
    use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// 2026-01-05 is a Monday.
    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
    }

    /// Normal noise from uniform draws (Box-Muller), so no further crate is needed.
    fn normal(rng: &mut StdRng) -> f64 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let v: f64 = rng.random();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A contact-center hour: quiet at night, busy by day.
    fn daily_shape(hour: u32) -> f64 {
        let h = f64::from(hour);
        20.0 + 80.0 * (-((h - 13.0) / 4.0).powi(2)).exp()
    }

    /// `n` hourly points of `expected(at)` with normal noise of `sd` (seeded).
    fn hourly(
        n: usize,
        sd: f64,
        seed: u64,
        expected: impl Fn(DateTime<Utc>) -> f64,
    ) -> Vec<TrendPoint> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|h| {
                let at = start() + chrono::Duration::hours(h as i64);
                TrendPoint {
                    at,
                    value: expected(at) + sd * normal(&mut rng),
                }
            })
            .collect()
    }

    fn defaults(bucket_ms: i64) -> TrendSettings {
        TrendSettings::checked(
            TrendSettings::DEFAULT_WINDOW,
            TrendSettings::DEFAULT_Z,
            Seasonality::Auto,
            bucket_ms,
        )
        .unwrap()
    }

    fn flagged(analysis: &Analysis) -> Vec<usize> {
        (0..analysis.points.len())
            .filter(|&i| analysis.points[i].anomaly.is_some())
            .collect()
    }

    fn share(analysis: &Analysis) -> f64 {
        flagged(analysis).len() as f64 / analysis.points.len() as f64
    }

    #[test]
    fn an_hourly_year_with_a_daily_cycle_flags_under_1_percent_and_finds_both_spikes() {
        let mut points = hourly(8_000, 2.0, 34, |at| daily_shape(at.hour()));
        let spikes = [3_000, 6_500];
        for &s in &spikes {
            points[s].value += 40.0;
        }
        let analysis = analyse(&points, &defaults(HOUR_MS));
        assert_eq!(analysis.seasonality, Seasonality::Daily);
        let found = flagged(&analysis);
        assert!(
            share(&analysis) < 0.01,
            "{} flagged: {found:?}",
            found.len()
        );
        for s in spikes {
            assert_eq!(analysis.points[s].anomaly, Some(AnomalyKind::Spike), "{s}");
            let baseline = analysis.points[s].baseline.unwrap();
            let expected = daily_shape(points[s].at.hour());
            assert!(
                (baseline - expected).abs() < 4.0,
                "baseline {baseline}, expected {expected}"
            );
        }
        // What #34 found: the moving window mean and deviation flag a large part of it.
        let zscore = TrendSettings {
            window: TrendSettings::DEFAULT_WINDOW,
            z_threshold: TrendSettings::ZSCORE_DEFAULT_Z,
            seasonality: Seasonality::None,
            detector: Kind::Zscore,
            bucket_ms: HOUR_MS,
        };
        assert!(share(&analyse(&points, &zscore)) > 0.05);
    }

    #[test]
    fn dips_are_found_as_drops_at_busy_and_quiet_hours() {
        let mut points = hourly(24 * 60, 2.0, 7, |at| daily_shape(at.hour()));
        // A lunchtime outage and a night one (hours 13 and 3 of days 30 and 45).
        let dips = [24 * 30 + 13, 24 * 45 + 3];
        points[dips[0]].value -= 50.0;
        points[dips[1]].value = 0.0;
        let analysis = analyse(&points, &defaults(HOUR_MS));
        for d in dips {
            assert_eq!(analysis.points[d].anomaly, Some(AnomalyKind::Drop), "{d}");
        }
        assert!(share(&analysis) < 0.01, "{:?}", flagged(&analysis));
    }

    /// Weekdays busy by day, weekends at a third; noise grows with the volume.
    fn weekly_shape(at: DateTime<Utc>) -> f64 {
        let weekend = at.weekday().number_from_monday() >= 6;
        daily_shape(at.hour()) * if weekend { 0.35 } else { 1.0 }
    }

    #[test]
    fn a_weekly_pattern_is_found_and_weekends_are_no_anomaly() {
        let mut points = hourly(24 * 7 * 20, 1.5, 3, weekly_shape);
        let spike = 24 * 7 * 15 + 24 * 5 + 12; // a Saturday noon
        points[spike].value += 25.0;
        let analysis = analyse(&points, &defaults(HOUR_MS));
        assert_eq!(analysis.seasonality, Seasonality::Weekly);
        assert_eq!(analysis.points[spike].anomaly, Some(AnomalyKind::Spike));
        assert!(share(&analysis) < 0.01, "{:?}", flagged(&analysis));
        // Against earlier days alone, the first weekend hours after weekdays stand out.
        let daily = TrendSettings {
            seasonality: Seasonality::Daily,
            ..defaults(HOUR_MS)
        };
        assert!(share(&analyse(&points, &daily)) > share(&analysis));

        // Day buckets of the same pattern compare with the same weekday.
        let mut rng = StdRng::seed_from_u64(5);
        let mut days: Vec<TrendPoint> = (0..7 * 30)
            .map(|d| {
                let at = start() + chrono::Duration::days(d);
                let weekend = at.weekday().number_from_monday() >= 6;
                let volume = if weekend { 400.0 } else { 1_200.0 };
                TrendPoint {
                    at,
                    value: volume + 15.0 * normal(&mut rng),
                }
            })
            .collect();
        days[7 * 20 + 2].value += 300.0; // a Wednesday
        let analysis = analyse(&days, &defaults(DAY_MS));
        assert_eq!(analysis.seasonality, Seasonality::Weekly);
        assert_eq!(flagged(&analysis), [7 * 20 + 2]);
        // A Saturday is expected to be like earlier Saturdays, not like the Friday
        // before it.
        let saturday = 7 * 25 + 5;
        assert_eq!(days[saturday].at.weekday(), chrono::Weekday::Sat);
        let baseline = analysis.points[saturday].baseline.unwrap();
        assert!(
            (baseline - 400.0).abs() < 30.0,
            "Saturday baseline {baseline}"
        );
        let monday = analysis.points[saturday + 2].baseline.unwrap();
        assert!((monday - 1_200.0).abs() < 60.0, "Monday baseline {monday}");
    }

    #[test]
    fn auto_picks_the_weekly_season_only_when_the_data_has_a_weekly_pattern() {
        // Hours: the same day every day, then weekends at a third.
        let daily = hourly(24 * 7 * 12, 2.0, 51, |at| daily_shape(at.hour()));
        assert_eq!(
            analyse(&daily, &defaults(HOUR_MS)).seasonality,
            Seasonality::Daily
        );
        let weekly = hourly(24 * 7 * 12, 2.0, 52, weekly_shape);
        assert_eq!(
            analyse(&weekly, &defaults(HOUR_MS)).seasonality,
            Seasonality::Weekly
        );
        // Days: every day alike is compared with the days right before; a weekly
        // pattern with the same weekday.
        let days = |seed, weekend_share: f64| -> Vec<TrendPoint> {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..7 * 30)
                .map(|d| {
                    let at = start() + chrono::Duration::days(d);
                    let share = if at.weekday().number_from_monday() >= 6 {
                        weekend_share
                    } else {
                        1.0
                    };
                    TrendPoint {
                        at,
                        value: 1_000.0 * share + 20.0 * normal(&mut rng),
                    }
                })
                .collect()
        };
        assert_eq!(
            analyse(&days(53, 1.0), &defaults(DAY_MS)).seasonality,
            Seasonality::None
        );
        assert_eq!(
            analyse(&days(54, 0.4), &defaults(DAY_MS)).seasonality,
            Seasonality::Weekly
        );
    }

    #[test]
    fn a_clean_hourly_year_with_daily_and_weekly_cycles_flags_under_1_percent() {
        // About 8,000 hours, weekends at a third, noise like counts' (σ = √volume).
        let expected = |at: DateTime<Utc>| weekly_shape(at) * 3.0;
        let mut rng = StdRng::seed_from_u64(61);
        let mut points: Vec<TrendPoint> = (0..8_000)
            .map(|h| {
                let at = start() + chrono::Duration::hours(h);
                let e = expected(at);
                TrendPoint {
                    at,
                    value: (e + e.sqrt() * normal(&mut rng)).round(),
                }
            })
            .collect();
        let clean = analyse(&points, &defaults(HOUR_MS));
        assert_eq!(clean.seasonality, Seasonality::Weekly);
        assert!(share(&clean) < 0.01, "{:?}", flagged(&clean));

        // Spikes and dips of half the expected value, at busy and quiet hours, weekdays
        // and weekends, once the weekly baselines have settled (eight weeks).
        let planted: Vec<(i64, AnomalyKind)> = [
            (24 * 7 * 9 + 13, AnomalyKind::Spike), // a Monday lunchtime
            (24 * 7 * 12 + 24 * 5 + 11, AnomalyKind::Spike), // a Saturday
            (24 * 7 * 20 + 24 * 2 + 3, AnomalyKind::Spike), // a Wednesday night
            (24 * 7 * 25 + 24 * 3 + 15, AnomalyKind::Drop), // a Thursday afternoon
            (24 * 7 * 33 + 24 * 6 + 12, AnomalyKind::Drop), // a Sunday noon
            (24 * 7 * 40 + 24 + 10, AnomalyKind::Drop), // a Tuesday morning
        ]
        .to_vec();
        for &(h, kind) in &planted {
            let point = &mut points[h as usize];
            let size = (0.5 * expected(point.at)).max(8.0 * expected(point.at).sqrt());
            point.value = match kind {
                AnomalyKind::Spike => (expected(point.at) + size).round(),
                AnomalyKind::Drop => (expected(point.at) - size).max(0.0).round(),
            };
        }
        let analysis = analyse(&points, &defaults(HOUR_MS));
        for (h, kind) in planted {
            assert_eq!(
                analysis.points[h as usize].anomaly,
                Some(kind),
                "{} {:?}",
                points[h as usize].at,
                analysis.points[h as usize]
            );
        }
        assert!(share(&analysis) < 0.01, "{:?}", flagged(&analysis));
    }

    #[test]
    fn missing_buckets_shift_nothing() {
        let mut points = hourly(24 * 90, 2.0, 11, |at| daily_shape(at.hour()));
        let spike = 24 * 70 + 9;
        points[spike].value += 30.0;
        let mut rng = StdRng::seed_from_u64(12);
        // A tenth of the hours are missing, and so is a whole week; some are NaN.
        let kept: Vec<TrendPoint> = points
            .iter()
            .enumerate()
            .filter(|&(i, _)| {
                i == spike || (rng.random_range(0..10) != 0 && !(24 * 40..24 * 47).contains(&i))
            })
            .map(|(i, p)| TrendPoint {
                value: if i % 97 == 0 && i != spike {
                    f64::NAN
                } else {
                    p.value
                },
                ..*p
            })
            .collect();
        let analysis = analyse(&kept, &defaults(HOUR_MS));
        assert_eq!(analysis.seasonality, Seasonality::Daily);
        let at = kept.iter().position(|p| p.at == points[spike].at).unwrap();
        assert_eq!(analysis.points[at].anomaly, Some(AnomalyKind::Spike));
        assert!(share(&analysis) < 0.01, "{:?}", flagged(&analysis));
        for (p, f) in kept.iter().zip(&analysis.points) {
            if !p.value.is_finite() {
                assert_eq!(*f, TrendFigures::default());
            }
        }
    }

    #[test]
    fn a_level_shift_is_flagged_where_it_starts_and_then_is_the_baseline() {
        // Volume up by 40 % from a morning hour on: at every hour in proportion.
        let shift_at = 24 * 40 + 10;
        let points = hourly(24 * 80, 1.0, 21, |at| {
            let after = at >= start() + chrono::Duration::hours(shift_at as i64);
            daily_shape(at.hour()) * if after { 1.4 } else { 1.0 }
        });
        let analysis = analyse(&points, &defaults(HOUR_MS));
        let found = flagged(&analysis);
        let (before, after): (Vec<usize>, Vec<usize>) = found.iter().partition(|&&i| i < shift_at);
        assert!(before.len() <= 2, "noise before the shift: {before:?}");
        // Flagged where it starts, for a run of points that makes it a shift; after that
        // the new level is the baseline.
        assert_eq!(after.first(), Some(&shift_at), "{found:?}");
        assert!(
            after.iter().all(|&i| i < shift_at + SHIFT_RUN),
            "after its start the shift is the baseline: {found:?}"
        );
        let later = shift_at + 24 * 10;
        let baseline = analysis.points[later].baseline.unwrap();
        let expected = daily_shape(points[later].at.hour()) * 1.4;
        assert!(
            (baseline - expected).abs() < 3.0,
            "{baseline} vs {expected}"
        );
    }

    #[test]
    fn one_spike_inflates_neither_the_baseline_nor_the_spread() {
        let mut points = hourly(24 * 30, 1.0, 8, |at| daily_shape(at.hour()));
        // The same hour on two days running: the first must not hide the second.
        let first = 24 * 20 + 15;
        points[first].value += 60.0;
        points[first + 24].value += 20.0;
        let analysis = analyse(&points, &defaults(HOUR_MS));
        assert_eq!(analysis.points[first].anomaly, Some(AnomalyKind::Spike));
        assert_eq!(
            analysis.points[first + 24].anomaly,
            Some(AnomalyKind::Spike)
        );
        let (before, after) = (&analysis.points[first], &analysis.points[first + 24]);
        assert!((after.spread.unwrap() / before.spread.unwrap() - 1.0).abs() < 0.3);
        assert!((after.baseline.unwrap() - before.baseline.unwrap()).abs() < 3.0);

        // One spike alone: its neighbours, the hours after it and the same hour on the
        // days after it, are expected about what they would be without it (within the
        // noise, σ 1; a mean of the seven same hours would move by 60 / 7), and exactly
        // what they would be were it a hundred times larger: its size has no say.
        let mut one = points.clone();
        one[first + 24].value -= 20.0;
        let mut huge = one.clone();
        huge[first].value += 5_940.0;
        let mut without = one.clone();
        without[first].value -= 60.0;
        let [one, huge, without] =
            [one, huge, without].map(|points| analyse(&points, &defaults(HOUR_MS)));
        assert_eq!(huge.points[first].anomaly, Some(AnomalyKind::Spike));
        for i in (first + 1..first + 24).chain([first + 24, first + 48, first + 72]) {
            let (with, without) = (&one.points[i], &without.points[i]);
            let judged = |f: &TrendFigures| (f.baseline, f.spread, f.z_score, f.anomaly);
            assert_eq!(judged(&huge.points[i]), judged(with), "hour {i}");
            let (a, b) = (with.baseline.unwrap(), without.baseline.unwrap());
            assert!((a - b).abs() < 1.5, "hour {i}: {a} against {b}");
            let (a, b) = (with.spread.unwrap(), without.spread.unwrap());
            assert!(
                (a / b - 1.0).abs() < 0.1,
                "hour {i}: spread {a} against {b}"
            );
            assert_eq!(with.anomaly, None, "hour {i}");
        }
    }

    #[test]
    fn counts_are_judged_in_whole_units() {
        // Mostly no exceptions in an hour, now and then one or two; then eight.
        let mut rng = StdRng::seed_from_u64(4);
        let mut points: Vec<TrendPoint> = (0..24 * 30)
            .map(|h| TrendPoint {
                at: start() + chrono::Duration::hours(h),
                value: match rng.random_range(0..100) {
                    0..=89 => 0.0,
                    90..=97 => 1.0,
                    _ => 2.0,
                },
            })
            .collect();
        points[24 * 25].value = 8.0;
        let analysis = analyse(&points, &defaults(HOUR_MS));
        assert_eq!(flagged(&analysis), [24 * 25]);
        // A constant series with one spike: the spread of whole units is at least 1.
        let mut flat = vec![5.0; 60];
        flat[50] = 500.0;
        let flat: Vec<TrendPoint> = flat
            .into_iter()
            .enumerate()
            .map(|(d, value)| TrendPoint {
                at: start() + chrono::Duration::days(d as i64),
                value,
            })
            .collect();
        let analysis = analyse(&flat, &defaults(DAY_MS));
        assert_eq!(flagged(&analysis), [50]);
    }

    #[test]
    fn a_season_no_longer_than_a_bucket_is_none() {
        let days: Vec<TrendPoint> = (0..60)
            .map(|d| TrendPoint {
                at: start() + chrono::Duration::days(d),
                value: f64::from(d as i32 % 3),
            })
            .collect();
        for season in [Seasonality::Daily, Seasonality::Weekly] {
            let weeks = TrendSettings {
                seasonality: season,
                ..defaults(WEEK_MS)
            };
            assert_eq!(analyse(&days, &weeks).seasonality, Seasonality::None);
        }
        let daily = TrendSettings {
            seasonality: Seasonality::Daily,
            ..defaults(DAY_MS)
        };
        assert_eq!(analyse(&days, &daily).seasonality, Seasonality::None);
    }

    #[test]
    fn baseline_sizes_are_half_octaves() {
        for b in [
            0.0, 0.4, 1.0, 2.0, 3.7, 10.0, 99.0, 1e3, 12_345.6, 1e9, -50.0,
        ] {
            let m: f64 = 1.0 + f64::abs(b);
            let expected = (2.0 * m.log2()).floor() as i32;
            assert_eq!(Detector::size(b), expected, "{b}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_series_gets_finite_figures_and_constant_ones_no_anomaly(
            values in prop::collection::vec(
                prop_oneof![
                    8 => (-50i32..50).prop_map(f64::from),
                    3 => -1e6f64..1e6,
                    1 => Just(f64::NAN),
                    1 => prop_oneof![Just(f64::INFINITY), Just(1e-300), Just(1e300), Just(-1e300)],
                ],
                0..400,
            ),
            constant in -1e9f64..1e9,
            window in 2usize..12,
            day_buckets in any::<bool>(),
        ) {
            let step = if day_buckets { DAY_MS } else { HOUR_MS };
            let at = |n: usize| start() + chrono::Duration::milliseconds(step * n as i64);
            let settings = TrendSettings::checked(window, TrendSettings::DEFAULT_Z, Seasonality::Auto, step).unwrap();
            let points: Vec<TrendPoint> = values.iter().enumerate().map(|(n, &value)| TrendPoint { at: at(n), value }).collect();
            let analysis = analyse(&points, &settings);
            for f in &analysis.points {
                prop_assert!(f.z_score.is_none_or(f64::is_finite));
                prop_assert!(f.baseline.is_none_or(f64::is_finite));
                prop_assert!(f.spread.is_none_or(|s| s > 0.0 && s.is_finite()));
            }
            let flat: Vec<TrendPoint> = (0..values.len()).map(|n| TrendPoint { at: at(n), value: constant }).collect();
            let analysis = analyse(&flat, &settings);
            prop_assert!(analysis.points.iter().all(|f| f.anomaly.is_none()));
        }
    }
}
