//! What every benchmark shares: the runtime, medians, and the verdict beside a target.

#![allow(dead_code)] // each benchmark uses its own subset

/// A multi-threaded tokio runtime, as `wfmd serve` runs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The median of several runs (the machines are noisy).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `MET` or `MISSED`, printed beside each figure.
pub fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}
