//! Cross-layer ranking (CLR, section 2.1-2.2): computation-aware scores `s(w) = |w| / f_l^lambda`,
//! one global threshold over every candidate weight, and each group's keep count.

use crate::error::{Result, config_err};

/// CLR's two settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClrConfig {
    /// `rho`: the fraction of candidate *weights* to remove (not of parameters or FLOPs).
    pub pr_target: f64,
    /// `lambda`: how strongly a group's relative FLOPs `f_l` raise its pruning (0: plain
    /// magnitude ranking).
    pub lambda: f64,
}

impl ClrConfig {
    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.pr_target) || !self.lambda.is_finite() {
            return Err(config_err(format!(
                "pr_target must lie in [0, 1) and lambda be finite (got {} and {})",
                self.pr_target, self.lambda
            )));
        }
        Ok(())
    }
}

/// One candidate group's weights as CLR sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredGroup {
    /// The group's name.
    pub name: String,
    /// Every candidate weight of the group (raw values; the sign is dropped by the score).
    pub weights: Vec<f32>,
    /// Filters (output channels) of the group, `C_l`.
    pub channels: usize,
    /// `f_l`, the group's FLOPs relative to the first group's.
    pub flops_factor: f64,
}

/// What CLR decides for one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerPlan {
    /// The group's name.
    pub name: String,
    /// `p_l = #{w in l : s(w) < tau} / |l|` (ties at `tau` survive).
    pub prune_ratio: f64,
    /// `C_l`.
    pub channels: usize,
    /// `m_l = max(1, int(C_l (1 - p_l)))`, in f64 as the official code computes it.
    pub keep: usize,
}

/// The global ranking's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranking {
    /// `tau`, the `n_keep`-th largest score.
    pub tau: f32,
    /// `N`, the number of candidate weights.
    pub candidates: usize,
    /// `n_keep = int(N (1 - rho))`.
    pub n_keep: usize,
    /// Weights scoring `>= tau` (more than `n_keep` when scores tie at `tau`).
    pub surviving: usize,
    /// Per group, in input order.
    pub layers: Vec<LayerPlan>,
}

/// `s(w) = |w| / f^lambda` in f32 (the official code divides an f32 tensor by the Python float
/// `f ** lambda`).
pub fn scores(weights: &[f32], flops_factor: f64, lambda: f64) -> Vec<f32> {
    let d = flops_factor.powf(lambda) as f32;
    weights.iter().map(|w| w.abs() / d).collect()
}

/// `int(C (1 - p))` in f64, at least 1 (the official code would build a zero-width layer).
pub fn keep_count(channels: usize, prune_ratio: f64) -> usize {
    ((channels as f64 * (1.0 - prune_ratio)).floor() as usize).clamp(1, channels.max(1))
}

/// CLR over `groups`: the global threshold `tau` at `n_keep = int(N (1 - rho))` kept weights,
/// then every group's pruning ratio and keep count.
pub fn cross_layer_ranking(groups: &[ScoredGroup], cfg: &ClrConfig) -> Result<Ranking> {
    cfg.check()?;
    let mut all = Vec::new();
    let mut per_group = Vec::with_capacity(groups.len());
    for g in groups {
        if g.weights.is_empty() || g.channels == 0 {
            return Err(config_err(format!("group {} has no weights or no filters", g.name)));
        }
        if !(g.flops_factor.is_finite() && g.flops_factor > 0.0) {
            return Err(config_err(format!("group {} has FLOPs factor {}", g.name, g.flops_factor)));
        }
        let s = scores(&g.weights, g.flops_factor, cfg.lambda);
        if let Some(bad) = s.iter().find(|x| !x.is_finite()) {
            return Err(config_err(format!("group {} has a non-finite score {bad}", g.name)));
        }
        all.extend_from_slice(&s);
        per_group.push(s);
    }
    let n = all.len();
    if n == 0 {
        return Err(config_err("no candidate weights"));
    }
    let n_keep = ((n as f64 * (1.0 - cfg.pr_target)).floor() as usize).max(1);
    let (_, tau, _) = all.select_nth_unstable_by(n_keep - 1, |a, b| b.total_cmp(a));
    let tau = *tau;
    let surviving = all.iter().filter(|&&s| s >= tau).count();
    let layers = groups
        .iter()
        .zip(&per_group)
        .map(|(g, s)| {
            let pruned = s.iter().filter(|&&x| x < tau).count();
            let p = pruned as f64 / s.len() as f64;
            LayerPlan { name: g.name.clone(), prune_ratio: p, channels: g.channels, keep: keep_count(g.channels, p) }
        })
        .collect();
    Ok(Ranking { tau, candidates: n, n_keep, surviving, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Vec<ScoredGroup> {
        vec![
            ScoredGroup {
                name: "A".into(),
                weights: vec![0.5, -0.1, 0.3, 0.05, -0.2, 0.02],
                channels: 3,
                flops_factor: 1.0,
            },
            ScoredGroup {
                name: "B".into(),
                weights: vec![0.9, -0.6, 0.2, 0.4, 0.1, -0.8],
                channels: 3,
                flops_factor: 4.0,
            },
        ]
    }

    /// Section 8, CLR: scores, tau, the tie at tau, p and m.
    #[test]
    fn the_worked_example() {
        let g = example();
        assert_eq!(scores(&g[0].weights, 1.0, 0.5), [0.5, 0.1, 0.3, 0.05, 0.2, 0.02]);
        assert_eq!(scores(&g[1].weights, 4.0, 0.5), [0.45, 0.3, 0.1, 0.2, 0.05, 0.4]);
        let r = cross_layer_ranking(&g, &ClrConfig { pr_target: 0.5, lambda: 0.5 }).unwrap();
        assert_eq!((r.candidates, r.n_keep, r.tau), (12, 6, 0.2));
        assert_eq!(r.surviving, 7, "both 0.2s survive the strict <");
        assert_eq!((r.layers[0].prune_ratio, r.layers[1].prune_ratio), (0.5, 1.0 / 3.0));
        assert_eq!((r.layers[0].keep, r.layers[1].keep), (1, 2));
        let r = cross_layer_ranking(&g, &ClrConfig { pr_target: 0.5, lambda: 0.0 }).unwrap();
        assert_eq!(r.tau, 0.3);
        assert_eq!((r.layers[0].prune_ratio, r.layers[1].prune_ratio), (2.0 / 3.0, 1.0 / 3.0));
    }

    #[test]
    fn a_larger_factor_prunes_more_and_counts_truncate() {
        let mut g = example();
        g[1].weights = g[0].weights.clone();
        let r = cross_layer_ranking(&g, &ClrConfig { pr_target: 0.5, lambda: 1.0 }).unwrap();
        assert!(r.layers[1].prune_ratio > r.layers[0].prune_ratio);
        assert_eq!(keep_count(64, 1.0 - 0.3), 19, "int(64 x 0.3) = int(19.2)");
        assert_eq!(keep_count(10, 1.0), 1, "clamped to one filter");
        assert_eq!(keep_count(3, 1.0 / 3.0), 2);
    }

    #[test]
    fn bad_settings_and_inputs_are_errors() {
        let g = example();
        assert!(cross_layer_ranking(&g, &ClrConfig { pr_target: 1.0, lambda: 0.5 }).is_err());
        assert!(cross_layer_ranking(&g, &ClrConfig { pr_target: -0.1, lambda: 0.5 }).is_err());
        assert!(cross_layer_ranking(&g, &ClrConfig { pr_target: 0.5, lambda: f64::NAN }).is_err());
        let mut bad = example();
        bad[0].weights[0] = f32::NAN;
        assert!(cross_layer_ranking(&bad, &ClrConfig { pr_target: 0.5, lambda: 0.5 }).is_err());
        bad = example();
        bad[1].flops_factor = 0.0;
        assert!(cross_layer_ranking(&bad, &ClrConfig { pr_target: 0.5, lambda: 0.5 }).is_err());
        assert!(cross_layer_ranking(&[], &ClrConfig { pr_target: 0.5, lambda: 0.5 }).is_err());
        // rho = 0 keeps everything.
        let r = cross_layer_ranking(&g, &ClrConfig { pr_target: 0.0, lambda: 0.5 }).unwrap();
        assert!(r.layers.iter().all(|l| l.keep == l.channels));
    }
}
