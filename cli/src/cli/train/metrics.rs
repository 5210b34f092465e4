//! The run's metrics files: `metrics.csv` (one row per finished epoch) and the chart of it,
//! `metrics.png` and `metrics.svg`.

use std::path::Path;

use anyhow::Context;
use cnnc::runtime::fsio::write_atomic;

use super::super::chart;
use super::super::checkpoint::EpochRecord;
use cnnc::train::checkpoint::metrics_csv;

/// Rewrites the chart and `metrics.csv` if the CSV does not show the whole history.
pub fn refresh_metrics(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let path = out.join("metrics.csv");
    let expected = metrics_csv(history).into_bytes();
    // Compare lengths first: the file need not be read unless it could be the expected one.
    let same_len = std::fs::metadata(&path).is_ok_and(|m| m.len() == expected.len() as u64);
    if history.is_empty() || (same_len && std::fs::read(&path).is_ok_and(|b| b == expected)) {
        return Ok(());
    }
    write_metrics(out, history)
}

/// `metrics.png`, `metrics.svg` and `metrics.csv` from the whole history, each written
/// atomically; the CSV last, since [`refresh_metrics`] trusts the chart when the CSV is up to date.
pub fn write_metrics(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    for (name, bytes) in [
        ("metrics.png", chart::png(history)?),
        ("metrics.svg", chart::svg(history)?.into_bytes()),
        ("metrics.csv", metrics_csv(history).into_bytes()),
    ] {
        let path = out.join(name);
        write_atomic(&path, &bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}
