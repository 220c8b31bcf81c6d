//! Drift: does a recent window of runs look like the baseline before it?
//!
//! Three signals are read from witnessed chats: the distillation run score,
//! the user rating and the retrieval score of every shown source. Each is
//! compared between the baseline and the recent window with the population
//! stability index (PSI, over the baseline's deciles) and the two-sample
//! Kolmogorov-Smirnov statistic; a signal with enough samples in both windows
//! has drifted when either passes its threshold from `[drift]`.

use serde::{Deserialize, Serialize};

use crate::config::{DistillationConfig, DriftConfig};
use crate::distill;
use crate::observer::ChatEvent;

/// Bins of the PSI (baseline quantiles).
const PSI_BINS: usize = 10;
/// Share given to an empty bin so the PSI's logarithm stays finite.
const PSI_FLOOR: f64 = 1e-4;

/// Population stability index of `recent` against `baseline`: bins are the
/// baseline's quantiles, so any shift of mass between them counts.
pub fn psi(baseline: &[f64], recent: &[f64]) -> f64 {
    if baseline.is_empty() || recent.is_empty() {
        return 0.0;
    }
    let mut sorted = baseline.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..PSI_BINS)
        .map(|i| sorted[(i * sorted.len() / PSI_BINS).min(sorted.len() - 1)])
        .collect();
    edges.dedup();
    let shares = |values: &[f64]| {
        let mut counts = vec![0usize; edges.len() + 1];
        for v in values {
            // Bin i holds values in (edges[i-1], edges[i]].
            counts[edges.partition_point(|e| e < v)] += 1;
        }
        counts
            .into_iter()
            .map(|c| (c as f64 / values.len() as f64).max(PSI_FLOOR))
            .collect::<Vec<_>>()
    };
    shares(baseline)
        .iter()
        .zip(shares(recent))
        .map(|(b, r)| (r - b) * (r / b).ln())
        .sum()
}

/// The two-sample Kolmogorov-Smirnov statistic: the largest gap between the
/// two empirical distribution functions (0 = same, 1 = disjoint).
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut gap) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        gap = gap.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    gap
}

/// One signal compared between the two windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalDrift {
    pub signal: String,
    pub baseline_n: usize,
    pub recent_n: usize,
    pub psi: f64,
    pub ks: f64,
    /// Whether both windows had `min_samples` (else the signal is not judged).
    pub judged: bool,
    pub drifted: bool,
}

/// Every signal compared, and whether any drifted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftReport {
    /// Unix ms bounds: baseline [baseline_from, recent_from), recent [recent_from, until).
    pub baseline_from_ms: u64,
    pub recent_from_ms: u64,
    pub until_ms: u64,
    pub psi_threshold: f64,
    pub ks_threshold: f64,
    pub signals: Vec<SignalDrift>,
    pub drifted: bool,
}

/// Compares one signal's samples.
pub fn compare(
    signal: &str,
    baseline: &[f64],
    recent: &[f64],
    config: &DriftConfig,
) -> SignalDrift {
    let judged = baseline.len() >= config.min_samples && recent.len() >= config.min_samples;
    let psi = psi(baseline, recent);
    let ks = ks(baseline, recent);
    SignalDrift {
        signal: signal.to_owned(),
        baseline_n: baseline.len(),
        recent_n: recent.len(),
        psi,
        ks,
        judged,
        drifted: judged && (psi >= config.psi_threshold || ks >= config.ks_threshold),
    }
}

/// The three signals of one window of chats.
#[derive(Debug, Default)]
struct Samples {
    run_score: Vec<f64>,
    rating: Vec<f64>,
    retrieval_score: Vec<f64>,
}

impl Samples {
    fn add(&mut self, event: &ChatEvent, distillation: &DistillationConfig) {
        if let Some(score) = distill::score(event, None, distillation).score {
            self.run_score.push(score);
        }
        if let Some(rating) = event.rating {
            self.rating.push(f64::from(rating));
        }
        self.retrieval_score
            .extend(distill::source_scores(event).into_iter().map(f64::from));
    }
}

/// Compares the chats of the recent window (`recent_secs` up to `now_ms`)
/// against the baseline window (`baseline_secs` before it).
pub fn report(
    events: &[ChatEvent],
    now_ms: u64,
    config: &DriftConfig,
    distillation: &DistillationConfig,
) -> DriftReport {
    let recent_from_ms = now_ms.saturating_sub(config.recent_secs.saturating_mul(1000));
    let baseline_from_ms = recent_from_ms.saturating_sub(config.baseline_secs.saturating_mul(1000));
    let (mut baseline, mut recent) = (Samples::default(), Samples::default());
    for event in events {
        if (baseline_from_ms..recent_from_ms).contains(&event.at_ms) {
            baseline.add(event, distillation);
        } else if (recent_from_ms..=now_ms).contains(&event.at_ms) {
            recent.add(event, distillation);
        }
    }
    let signals = vec![
        compare("run_score", &baseline.run_score, &recent.run_score, config),
        compare("rating", &baseline.rating, &recent.rating, config),
        compare(
            "retrieval_score",
            &baseline.retrieval_score,
            &recent.retrieval_score,
            config,
        ),
    ];
    DriftReport {
        baseline_from_ms,
        recent_from_ms,
        until_ms: now_ms,
        psi_threshold: config.psi_threshold,
        ks_threshold: config.ks_threshold,
        drifted: signals.iter().any(|s| s.drifted),
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic sample of a roughly normal distribution.
    fn normal(n: usize, mean: f64, spread: f64, seed: u64) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| mean + spread * ((0..12).map(|_| rng.f64()).sum::<f64>() - 6.0))
            .collect()
    }

    #[test]
    fn identical_samples_have_no_drift() {
        let a = normal(500, 0.5, 0.1, 1);
        assert!(psi(&a, &a).abs() < 1e-9);
        assert_eq!(ks(&a, &a), 0.0);
    }

    #[test]
    fn ks_of_disjoint_samples_is_one_and_of_a_known_case_is_exact() {
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        // F_a jumps at 1,2,3,4 by 1/4; F_b at 2.5 by 1: largest gap 0.5 at 2.
        assert_eq!(ks(&[1.0, 2.0, 3.0, 4.0], &[2.5]), 0.5);
    }

    #[test]
    fn a_shifted_distribution_is_flagged_and_an_unshifted_one_is_not() {
        let config = DriftConfig::default();
        let baseline = normal(1000, 0.6, 0.1, 7);
        let same = normal(1000, 0.6, 0.1, 8);
        let shifted = normal(1000, 0.45, 0.1, 9);
        let calm = compare("run_score", &baseline, &same, &config);
        assert!(calm.judged && !calm.drifted, "{calm:?}");
        assert!(calm.psi < 0.05, "{calm:?}");
        let moved = compare("run_score", &baseline, &shifted, &config);
        assert!(moved.drifted, "{moved:?}");
        assert!(
            moved.psi > config.psi_threshold && moved.ks > config.ks_threshold,
            "{moved:?}"
        );
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let config = DriftConfig::default();
        let few = compare("rating", &[1.0; 5], &[-1.0; 5], &config);
        assert!(!few.judged && !few.drifted);
        assert_eq!(few.ks, 1.0);
    }
}
