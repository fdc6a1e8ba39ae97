//! Detection-quality metrics for labelled prompt sets (used by `vallum eval`).
//!
//! Positive = label 1 (injection or jailbreak); a prediction is positive when the decision is at
//! least the chosen action (`flag` by default).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Confusion counts and derived rates for one group of examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Examples.
    pub n: usize,
    /// Label-1 examples.
    pub positives: usize,
    /// Label-0 examples.
    pub negatives: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
}

impl Counts {
    /// Adds one example.
    pub fn add(&mut self, label: bool, predicted: bool) {
        self.n += 1;
        match (label, predicted) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
        if label {
            self.positives += 1;
        } else {
            self.negatives += 1;
        }
    }

    /// True-positive rate (recall), `None` without positives.
    pub fn tpr(&self) -> Option<f64> {
        (self.positives > 0).then(|| self.tp as f64 / self.positives as f64)
    }

    /// False-positive rate, `None` without negatives.
    pub fn fpr(&self) -> Option<f64> {
        (self.negatives > 0).then(|| self.fp as f64 / self.negatives as f64)
    }

    /// Precision, `None` without predicted positives.
    pub fn precision(&self) -> Option<f64> {
        (self.tp + self.fp > 0).then(|| self.tp as f64 / (self.tp + self.fp) as f64)
    }

    /// F1, `None` when precision or recall is undefined.
    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision()?, self.tpr()?);
        Some(if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) })
    }
}

/// Area under the ROC curve by the rank-sum (Mann–Whitney U) formula with ties counted half.
/// `None` unless both classes are present.
pub fn auc(scores: &[(f32, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v: Vec<(f32, bool)> = scores.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0; // ranks are 1-based: (i+1 + j) / 2
        rank_sum += avg * v[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64))
}

/// TPR at a false-positive-rate budget: the share of positives scoring strictly above the
/// threshold set by the `floor(max_fpr · negatives)`-th highest negative score (so that at most
/// that many negatives are above it). `None` unless both classes are present.
pub fn tpr_at_fpr(scores: &[(f32, bool)], max_fpr: f64) -> Option<f64> {
    let mut neg: Vec<f32> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let pos: Vec<f32> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    if neg.is_empty() || pos.is_empty() {
        return None;
    }
    neg.sort_by(|a, b| b.total_cmp(a));
    let k = (max_fpr * neg.len() as f64).floor() as usize;
    let thr = neg[k.min(neg.len() - 1)];
    Some(pos.iter().filter(|&&s| s > thr).count() as f64 / pos.len() as f64)
}

/// A whole evaluation report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Decision counted as a positive prediction.
    pub positive_at: String,
    /// Whether the numbers include the classifier: `"used"`, `"disabled"` (by the policy or
    /// `--signatures-only`) or `"unavailable"` (enabled, but its model or ONNX Runtime could not
    /// be loaded, so the scores are the signature layer's alone).
    pub classifier: String,
    /// Examples.
    pub n: usize,
    /// Overall TPR.
    pub tpr: Option<f64>,
    /// Overall FPR.
    pub fpr: Option<f64>,
    /// Overall precision.
    pub precision: Option<f64>,
    /// Overall F1.
    pub f1: Option<f64>,
    /// ROC AUC of the final score.
    pub auc: Option<f64>,
    /// TPR at 1 % FPR of the final score.
    pub tpr_at_1pct_fpr: Option<f64>,
    /// Overall counts.
    pub overall: Counts,
    /// Counts per source.
    pub per_source: BTreeMap<String, Counts>,
    /// Lines that could not be evaluated.
    pub errors: usize,
}
