//! Trend and anomaly detection over one time series: a trailing moving average with its
//! direction, and for each point a baseline (the value expected there), the spread
//! around it, a z-score and, past the threshold, an anomaly.
//!
//! - The moving average of point `i` is the mean of the `window` values ending at `i`
//!   (so it exists from the `window`-th point on). Its direction compares it with the
//!   previous point's moving average.
//! - Anomalies come from one of two detectors, recorded with each analytics job so a
//!   job's results never change: [`Detector::Robust`] (every job since #34, see
//!   [`robust`]) compares a point with the median of the `window` earlier values at the
//!   same place in the season (same hour on earlier days, same weekday, …), the season
//!   chosen from the bucket and the data, and measures the distance in robust spreads
//!   (median absolute deviation), so one spike can neither hide itself nor inflate the
//!   baseline; a level shift is flagged where it starts and then becomes the baseline.
//!   [`Detector::Zscore`] (jobs before #34, see [`zscore`]) compares it with the mean and
//!   standard deviation of the `window` points before it.
//!
//! Points whose value is not finite (a bucket the source had no value for) get no figures
//! and take no part in any window; a bucket missing from the series is simply absent,
//! and the season is read from each point's time, so gaps shift nothing.

pub mod robust;
pub mod zscore;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;

/// How a point's baseline is chosen: which earlier points are comparable with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seasonality {
    /// Chosen from the bucket and the data: hour buckets compare with the same hour on
    /// earlier days, or on the same weekday when the data has a weekly pattern; day
    /// buckets with the same weekday when the data has one; week buckets, and data
    /// without a pattern, with the points right before.
    #[default]
    Auto,
    /// The `window` points right before it.
    None,
    /// The same time of day on earlier days (UTC); with day or week buckets, the same
    /// as none.
    Daily,
    /// The same weekday and time of day (UTC); with week buckets, the same as none.
    Weekly,
}

impl Seasonality {
    /// The names a query may ask for.
    pub const REQUESTABLE: [&'static str; 4] = ["auto", "none", "daily", "weekly"];

    pub fn as_str(self) -> &'static str {
        match self {
            Seasonality::Auto => "auto",
            Seasonality::None => "none",
            Seasonality::Daily => "daily",
            Seasonality::Weekly => "weekly",
        }
    }

    /// The season's length, `None` for none (and auto, which is not one).
    pub fn period_ms(self) -> Option<i64> {
        match self {
            Seasonality::Daily => Some(DAY_MS),
            Seasonality::Weekly => Some(WEEK_MS),
            Seasonality::Auto | Seasonality::None => None,
        }
    }
}

/// Which detector a job's anomalies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Mean and standard deviation of the `window` points before (jobs before #34).
    Zscore,
    /// Seasonal median and median absolute deviation (see [`robust`]).
    Robust,
}

/// The knobs of [`analyse`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrendSettings {
    /// Points in the moving average, and earlier comparable values in a baseline: the
    /// same hour on `window` earlier days, say (at least 2).
    pub window: usize,
    /// A point is an anomaly when `|z|` exceeds this.
    pub z_threshold: f64,
    pub seasonality: Seasonality,
    pub detector: Detector,
    /// The length of the series' buckets; seasons are whole numbers of buckets.
    pub bucket_ms: i64,
}

impl TrendSettings {
    pub const DEFAULT_WINDOW: usize = 7;
    /// Robust z-scores past 4.5 are rare in clean data (a few in ten thousand points
    /// of a seasonal series with noise), while a real spike or dip is many spreads away
    /// (`cargo bench --bench anomalies`).
    pub const DEFAULT_Z: f64 = 4.5;
    /// The threshold of jobs before #34, which their stored queries still say.
    pub const ZSCORE_DEFAULT_Z: f64 = 2.0;
    pub const MIN_WINDOW: usize = 2;
    pub const MAX_WINDOW: usize = 10_000;

    /// TrendSettings users gave for a series of `bucket_ms` buckets, checked; the error
    /// starts with the name of the bad one (`window`, `z`). A season no longer than a
    /// bucket (daily with day buckets) is no season: each point is compared with the
    /// ones right before, which is what "the same time on earlier days" means there.
    pub fn checked(
        window: usize,
        z_threshold: f64,
        seasonality: Seasonality,
        bucket_ms: i64,
    ) -> Result<TrendSettings, String> {
        if !(TrendSettings::MIN_WINDOW..=TrendSettings::MAX_WINDOW).contains(&window) {
            return Err(format!(
                "window must be between {} and {}, not {window}",
                TrendSettings::MIN_WINDOW,
                TrendSettings::MAX_WINDOW
            ));
        }
        if !z_threshold.is_finite() || z_threshold <= 0.0 {
            return Err(format!(
                "z threshold must be a positive number, not {z_threshold}"
            ));
        }
        Ok(TrendSettings {
            window,
            z_threshold,
            seasonality,
            detector: Detector::Robust,
            bucket_ms,
        })
    }
}

/// Which way the moving average went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    Up,
    Down,
    Flat,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "UP",
            Direction::Down => "DOWN",
            Direction::Flat => "FLAT",
        }
    }

    /// From `before` to `after`; changes within rounding noise are flat.
    pub fn between(before: f64, after: f64) -> Direction {
        let tolerance = 1e-9 * before.abs().max(after.abs()).max(1.0);
        if after - before > tolerance {
            Direction::Up
        } else if before - after > tolerance {
            Direction::Down
        } else {
            Direction::Flat
        }
    }
}

/// An anomaly above or below its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnomalyKind {
    Spike,
    Drop,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "SPIKE",
            AnomalyKind::Drop => "DROP",
        }
    }
}

/// One value of a series at the start of its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// The figures of one point; `None` where there is not enough history yet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrendFigures {
    pub moving_average: Option<f64>,
    pub direction: Option<Direction>,
    pub z_score: Option<f64>,
    pub anomaly: Option<AnomalyKind>,
    /// The value expected at this point, which the z-score measures from (robust
    /// detector only).
    pub baseline: Option<f64>,
    /// The robust spread (scaled median absolute deviation) of comparable points
    /// around their baselines: one unit of the z-score (robust detector only).
    pub spread: Option<f64>,
}

/// The figures of every point, in the input's order, the series' overall direction
/// (the last moving average against the first; `None` with fewer than two), and the
/// season the baselines followed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Analysis {
    pub points: Vec<TrendFigures>,
    pub direction: Option<Direction>,
    /// What the baselines compared with: never `Auto` (its choice is given instead).
    pub seasonality: Seasonality,
}

/// Analyses `points`, which must be in time order (ties keep their order).
pub fn analyse(points: &[TrendPoint], settings: &TrendSettings) -> Analysis {
    debug_assert!(points.windows(2).all(|p| p[0].at <= p[1].at));
    let window = settings.window.max(1);
    let mut figures = vec![TrendFigures::default(); points.len()];
    let finite: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].value.is_finite())
        .collect();

    let mut rolling = zscore::Rolling::new(window);
    let mut previous_ma: Option<f64> = None;
    let mut first_ma = None;
    let mut last_ma = None;
    for &i in &finite {
        let value = points[i].value;
        rolling.push(value, |k| points[finite[k]].value);
        if let Some(ma) = rolling.full_mean() {
            figures[i].moving_average = Some(ma);
            figures[i].direction = previous_ma.map(|before| Direction::between(before, ma));
            previous_ma = Some(ma);
            first_ma.get_or_insert(ma);
            last_ma = Some(ma);
        }
    }

    let seasonality = match settings.detector {
        Detector::Zscore => {
            zscore::score(points, &finite, settings, &mut figures);
            settings.seasonality
        }
        Detector::Robust => robust::score(points, &finite, settings, &mut figures),
    };

    let direction = match (first_ma, last_ma, finite.len() > window) {
        (Some(first), Some(last), true) => Some(Direction::between(first, last)),
        _ => None,
    };
    Analysis {
        points: figures,
        direction,
        seasonality,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_is_wrong() {
        let check = |window, z, seasonality, bucket| {
            TrendSettings::checked(window, z, seasonality, bucket).map(|_| ())
        };
        assert!(
            check(1, 2.0, Seasonality::None, DAY_MS)
                .unwrap_err()
                .starts_with("window")
        );
        assert!(
            check(7, 0.0, Seasonality::None, DAY_MS)
                .unwrap_err()
                .starts_with("z threshold")
        );
        assert!(check(7, f64::NAN, Seasonality::None, DAY_MS).is_err());
        for (seasonality, bucket) in [
            (Seasonality::Weekly, DAY_MS),
            (Seasonality::Daily, HOUR_MS),
            (Seasonality::Auto, WEEK_MS),
            // A season no longer than a bucket is none, not an error.
            (Seasonality::Daily, DAY_MS),
            (Seasonality::Weekly, WEEK_MS),
        ] {
            assert!(check(7, 2.5, seasonality, bucket).is_ok());
        }
    }
}
