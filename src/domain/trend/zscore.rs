//! The detector of analytics jobs stored before #34 (moving window mean and standard
//! deviation), kept exactly as it was: a completed job's results are recomputed each time
//! they are read, and the audit log holds the SHA-256 of its CSV, so its figures must
//! never change.
//!
//! The z-score of point `i` compares it with the `window` values *before* it (the point
//! never dilutes its own baseline): `(x − mean) / σ`, σ the population standard
//! deviation. A window with no variance yields no z-score and flags nothing, instead of
//! dividing by zero; a point with fewer than `window` predecessors is not judged. With
//! [`Seasonality::Weekly`] a point's baseline is the `window` earlier points at the same
//! weekday and time of day (UTC). Everything runs in O(n): sliding sums, recomputed
//! exactly once per window length (and whenever rounding could matter) so error cannot
//! build up over a million points.

use super::{AnomalyKind, Seasonality, TrendFigures, TrendPoint, TrendSettings, WEEK_MS};

/// Scores the finite points (`finite`, indices into `points`) into `figures`.
pub(super) fn score(
    points: &[TrendPoint],
    finite: &[usize],
    settings: &TrendSettings,
    figures: &mut [TrendFigures],
) {
    let window = settings.window.max(1);
    match settings.seasonality {
        Seasonality::Weekly => {
            // Each slot of the week (weekday + time of day) is its own series.
            let mut slots: Vec<(i64, usize)> = finite
                .iter()
                .map(|&i| (points[i].at.timestamp_millis().rem_euclid(WEEK_MS), i))
                .collect();
            // Stable: within a slot, time order is kept.
            slots.sort_by_key(|&(slot, _)| slot);
            for run in slots.chunk_by(|a, b| a.0 == b.0) {
                let indices: Vec<usize> = run.iter().map(|&(_, i)| i).collect();
                score_series(points, &indices, window, settings.z_threshold, figures);
            }
        }
        // Jobs of this detector only ever had `none` and `weekly`.
        _ => score_series(points, finite, window, settings.z_threshold, figures),
    }
}

/// Z-scores of the points at `indices` (one series, in time order) against the `window`
/// values before each.
fn score_series(
    points: &[TrendPoint],
    indices: &[usize],
    window: usize,
    threshold: f64,
    figures: &mut [TrendFigures],
) {
    let value = |k: usize| points[indices[k]].value;
    let mut rolling = Rolling::new(window);
    for (k, &i) in indices.iter().enumerate() {
        let x = value(k);
        if let Some((mean, variance)) = rolling.full_stats() {
            // A constant window has no spread: nothing can be judged against it.
            if !rolling.constant() && variance > 0.0 {
                let z = (x - mean) / variance.sqrt();
                figures[i].z_score = Some(z);
                if z.abs() > threshold {
                    figures[i].anomaly = Some(if z > 0.0 {
                        AnomalyKind::Spike
                    } else {
                        AnomalyKind::Drop
                    });
                }
            }
        }
        rolling.push(x, value);
    }
}

/// Mean and sum of squared deviations (`m2`) of the last `window` values of a series,
/// slid one value at a time (Welford's update), and the length of the run of equal values
/// at its end (the window is constant exactly when that run covers it).
///
/// Sliding updates lose precision when the window's spread shrinks far below what passed
/// through it (a spike leaving a quiet window): `noise` bounds the rounding error the
/// updates may have left in `m2`, and when that could matter the window is re-summed
/// exactly. It is also re-summed once per window length, so drift never builds up.
pub(super) struct Rolling {
    window: usize,
    /// Values pushed so far (the series' index of the next value).
    count: usize,
    mean: f64,
    m2: f64,
    noise: f64,
    since_resum: usize,
    last: f64,
    run: usize,
}

impl Rolling {
    pub(super) fn new(window: usize) -> Rolling {
        Rolling {
            window,
            count: 0,
            mean: 0.0,
            m2: 0.0,
            noise: 0.0,
            since_resum: 0,
            last: f64::NAN,
            run: 0,
        }
    }

    /// Pushes the series' value `x` (its index is `self.count`); `value(k)` gives the
    /// series' value at index `k`, for the one leaving the window and for re-summing.
    pub(super) fn push(&mut self, x: f64, value: impl Fn(usize) -> f64) {
        self.run = if x == self.last { self.run + 1 } else { 1 };
        self.last = x;
        self.count += 1;
        self.since_resum += 1;
        if self.count <= self.window {
            let delta = x - self.mean;
            self.mean += delta / self.count as f64;
            let term = delta * (x - self.mean);
            self.m2 += term;
            self.noise += term.abs();
            return;
        }
        let old = value(self.count - 1 - self.window);
        let before = self.mean;
        self.mean += (x - old) / self.window as f64;
        let term = (x - old) * (x - self.mean + old - before);
        self.m2 += term;
        self.noise += term.abs() + (x * x + old * old) * f64::EPSILON;
        let imprecise = self.m2 < self.noise * 1e-6 && !self.constant();
        if imprecise || self.since_resum >= self.window {
            self.resum(value);
        }
    }

    /// Mean and m2 of the window computed afresh (two passes).
    fn resum(&mut self, value: impl Fn(usize) -> f64) {
        let range = self.count - self.window..self.count;
        let n = self.window as f64;
        let mean = range.clone().map(&value).sum::<f64>() / n;
        let m2 = range.map(|k| (value(k) - mean).powi(2)).sum::<f64>();
        self.mean = mean;
        self.m2 = m2;
        self.noise = m2;
        self.since_resum = 0;
    }

    fn constant(&self) -> bool {
        self.run >= self.window
    }

    pub(super) fn full_mean(&self) -> Option<f64> {
        (self.count >= self.window).then_some(if self.constant() {
            self.last
        } else {
            self.mean
        })
    }

    /// Mean and population variance of the window, once it is full.
    fn full_stats(&self) -> Option<(f64, f64)> {
        (self.count >= self.window).then(|| (self.mean, self.m2.max(0.0) / self.window as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use chrono::{Datelike, TimeZone, Weekday};
    use proptest::prelude::*;

    const DAY_MS: i64 = 86_400_000;

    /// 2026-10-05 is a Monday.
    fn day(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 10, 5, 0, 0, 0).unwrap() + chrono::Duration::days(n)
    }

    fn daily(values: &[f64]) -> Vec<TrendPoint> {
        values
            .iter()
            .enumerate()
            .map(|(n, &value)| TrendPoint {
                at: day(n as i64),
                value,
            })
            .collect()
    }

    fn settings(window: usize, seasonality: Seasonality) -> TrendSettings {
        TrendSettings {
            window,
            z_threshold: 2.0,
            seasonality,
            detector: Detector::Zscore,
            bucket_ms: DAY_MS,
        }
    }

    #[test]
    fn moving_average_starts_once_the_window_is_full_and_follows_the_values() {
        let a = analyse(
            &daily(&[1.0, 2.0, 3.0, 4.0, 3.0]),
            &settings(3, Seasonality::None),
        );
        let ma: Vec<_> = a.points.iter().map(|p| p.moving_average).collect();
        assert_eq!(ma, [None, None, Some(2.0), Some(3.0), Some(10.0 / 3.0)]);
        let dir: Vec<_> = a.points.iter().map(|p| p.direction).collect();
        assert_eq!(
            dir,
            [None, None, None, Some(Direction::Up), Some(Direction::Up)]
        );
        assert_eq!(a.direction, Some(Direction::Up));
    }

    #[test]
    fn a_spike_after_a_noisy_baseline_is_flagged_with_its_z_score() {
        let a = analyse(
            &daily(&[10.0, 12.0, 10.0, 12.0, 30.0, 11.0]),
            &settings(4, Seasonality::None),
        );
        // Baseline 10, 12, 10, 12: mean 11, σ 1 → z = 19.
        assert_eq!(a.points[4].z_score, Some(19.0));
        assert_eq!(a.points[4].anomaly, Some(AnomalyKind::Spike));
        assert_eq!(a.points[3].anomaly, None, "not enough history before it");
        assert!(a.points[5].anomaly.is_none());
    }

    #[test]
    fn a_constant_baseline_flags_nothing_instead_of_dividing_by_zero() {
        let a = analyse(
            &daily(&[5.0, 5.0, 5.0, 5.0, 500.0]),
            &settings(3, Seasonality::None),
        );
        assert!(a.points.iter().all(|p| p.z_score.is_none()));
        assert!(a.points.iter().all(|p| p.anomaly.is_none()));
    }

    #[test]
    fn a_drop_is_flagged_as_a_drop() {
        let a = analyse(
            &daily(&[10.0, 12.0, 10.0, 12.0, 1.0]),
            &settings(4, Seasonality::None),
        );
        assert_eq!(a.points[4].anomaly, Some(AnomalyKind::Drop));
        assert_eq!(a.points[4].z_score, Some(-10.0));
    }

    /// Eight weeks of a weekly pattern with a busy Monday, a little noise, and one
    /// Wednesday that is really off.
    fn seasonal() -> Vec<TrendPoint> {
        let week = [200.0, 120.0, 110.0, 115.0, 105.0, 60.0, 50.0];
        (0..56)
            .map(|n| {
                let noise = [0.0, 6.0, -4.0, 2.0, -6.0, 4.0][n as usize % 6];
                let mut value = week[n as usize % 7] + noise;
                if n == 51 {
                    value = 400.0;
                }
                TrendPoint { at: day(n), value }
            })
            .collect()
    }

    #[test]
    fn a_monday_peak_is_not_an_anomaly_against_earlier_mondays() {
        let points = seasonal();
        let aligned = analyse(&points, &settings(4, Seasonality::Weekly));
        for (p, f) in points.iter().zip(&aligned.points) {
            if p.at.weekday() == Weekday::Mon {
                assert!(f.anomaly.is_none(), "Monday {} flagged: {f:?}", p.at);
            }
        }
        assert_eq!(aligned.points[51].anomaly, Some(AnomalyKind::Spike));
        let flagged: Vec<_> = (0..56)
            .filter(|&n| aligned.points[n].anomaly.is_some())
            .collect();
        assert_eq!(flagged, [51]);

        // Without alignment the same Mondays stand out against the weekend before them.
        let plain = analyse(&points, &settings(4, Seasonality::None));
        assert!(
            points
                .iter()
                .zip(&plain.points)
                .any(|(p, f)| p.at.weekday() == Weekday::Mon && f.anomaly.is_some())
        );
    }

    #[test]
    fn missing_values_take_no_part() {
        let a = analyse(
            &daily(&[1.0, f64::NAN, 2.0, 3.0]),
            &settings(2, Seasonality::None),
        );
        assert_eq!(a.points[1], TrendFigures::default());
        assert_eq!(a.points[2].moving_average, Some(1.5));
        assert_eq!(a.points[3].moving_average, Some(2.5));
    }

    /// The definition, computed the slow way: every window re-read for every point.
    fn model(points: &[TrendPoint], s: &TrendSettings) -> Vec<TrendFigures> {
        let mut out = vec![TrendFigures::default(); points.len()];
        let finite: Vec<usize> = (0..points.len())
            .filter(|&i| points[i].value.is_finite())
            .collect();
        let mut previous = None;
        for (k, &i) in finite.iter().enumerate() {
            if k + 1 >= s.window {
                let w = &finite[k + 1 - s.window..=k];
                let ma = w.iter().map(|&j| points[j].value).sum::<f64>() / s.window as f64;
                out[i].moving_average = Some(ma);
                out[i].direction = previous.map(|p| Direction::between(p, ma));
                previous = Some(ma);
            }
        }
        for &i in &finite {
            let baseline: Vec<f64> = finite
                .iter()
                .filter(|&&j| j < i)
                .filter(|&&j| {
                    s.seasonality == Seasonality::None
                        || (points[j].at.timestamp_millis() - points[i].at.timestamp_millis())
                            .rem_euclid(7 * DAY_MS)
                            == 0
                })
                .map(|&j| points[j].value)
                .collect();
            if baseline.len() < s.window {
                continue;
            }
            let w = &baseline[baseline.len() - s.window..];
            if w.iter().all(|&v| v == w[0]) {
                continue;
            }
            let n = w.len() as f64;
            let mean = w.iter().sum::<f64>() / n;
            let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let z = (points[i].value - mean) / sd;
            out[i].z_score = Some(z);
            if z.abs() > s.z_threshold {
                out[i].anomaly = Some(if z > 0.0 {
                    AnomalyKind::Spike
                } else {
                    AnomalyKind::Drop
                });
            }
        }
        out
    }

    fn close(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-6 * scale.max(1.0)
    }

    fn arb_series() -> impl Strategy<Value = Vec<TrendPoint>> {
        let value = prop_oneof![
            8 => (-50i32..50).prop_map(f64::from),
            3 => -1e6f64..1e6,
            1 => Just(f64::NAN),
            // Large and close together: where naive running sums lose the variance.
            2 => (0i32..4).prop_map(|v| 1e9 + f64::from(v)),
        ];
        // Hours apart, sometimes a day: weekly slots repeat and sometimes do not.
        prop::collection::vec(
            (value, prop_oneof![Just(3_600_000i64), Just(DAY_MS)]),
            0..150,
        )
        .prop_map(|steps| {
            let mut at = day(0).timestamp_millis();
            steps
                .into_iter()
                .map(|(value, step)| {
                    at += step;
                    TrendPoint {
                        at: Utc.timestamp_millis_opt(at).unwrap(),
                        value,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn matches_the_brute_force_model(
            points in arb_series(),
            window in 2usize..12,
            z in 0.5f64..4.0,
            weekly in any::<bool>(),
        ) {
            let s = TrendSettings {
                z_threshold: z,
                ..settings(window, if weekly { Seasonality::Weekly } else { Seasonality::None })
            };
            let fast = analyse(&points, &s);
            let slow = model(&points, &s);
            prop_assert_eq!(fast.points.len(), slow.len());
            for (i, (f, m)) in fast.points.iter().zip(&slow).enumerate() {
                let scale = points[i].value.abs().max(1e3);
                match (f.moving_average, m.moving_average) {
                    (Some(a), Some(b)) => prop_assert!(close(a, b, scale), "ma at {}: {} vs {}", i, a, b),
                    (a, b) => prop_assert_eq!(a, b, "ma presence at {}", i),
                }
                match (f.z_score, m.z_score) {
                    (Some(a), Some(b)) => {
                        prop_assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "z at {}: {} vs {}", i, a, b);
                        // Away from the threshold the verdicts must agree exactly.
                        if (b.abs() - z).abs() > 1e-6 * b.abs().max(1.0) {
                            prop_assert_eq!(f.anomaly, m.anomaly, "anomaly at {}", i);
                        }
                    }
                    (a, b) => prop_assert_eq!(a, b, "z presence at {}", i),
                }
            }
        }

        #[test]
        fn a_constant_series_never_has_anomalies(
            value in -1e9f64..1e9,
            len in 0usize..200,
            window in 2usize..20,
            weekly in any::<bool>(),
        ) {
            let points: Vec<TrendPoint> = (0..len as i64)
                .map(|n| TrendPoint { at: day(0) + chrono::Duration::hours(n), value })
                .collect();
            let s = settings(window, if weekly { Seasonality::Weekly } else { Seasonality::None });
            let a = analyse(&points, &s);
            prop_assert!(a.points.iter().all(|p| p.anomaly.is_none() && p.z_score.is_none()));
            prop_assert!(a.points.iter().all(|p| p.direction.is_none_or(|d| d == Direction::Flat)));
        }
    }
}
