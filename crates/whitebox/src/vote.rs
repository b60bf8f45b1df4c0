//! Stage 2 (spec 2.5): the global vote to a FLOPs target. Every channel scores `|sum_k M[k, c]|`;
//! the pool of all scores (every mask tensor, applied or not, unless the layout leaves a slot
//! out) sets the threshold `theta`, the `floor(q N)`-th largest score; a prunable layer keeps
//! the channels with score `>= theta` (ties kept), or its top `floor(0.3 C)` when fewer than
//! `0.3 C` survive. `q` starts at 0.9 and drops by 0.01 (repeated f64 subtraction, as the
//! official loop) until the pruned network's FLOPs reduction reaches the target; that last pass
//! is the plan, so the reduction overshoots the target slightly.

use crate::error::{Result, config_err};
use crate::layout::{KeepRule, MaskSlot, WhiteBoxLayout};
use compress_core::rng::SeededRng;
use compress_nn::structure::Widths;
use rand::seq::index::sample;
use std::collections::BTreeMap;

/// Which masks' votes set the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VotePool {
    /// Every mask tensor the layout puts in the pool, applied or not (the official code).
    AllMasks,
    /// Only the applied ones (an option the spec offers: the never-applied masks only shift the
    /// quantile grid).
    AppliedOnly,
}

/// The vote's settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GlobalVoting {
    /// The first `q` (0.9).
    pub q0: f64,
    /// The step of `q` (0.01).
    pub dq: f64,
    /// The share of a layer's channels always kept (0.3).
    pub min_preserve: f64,
    /// The pool.
    pub pool: VotePool,
}

impl Default for GlobalVoting {
    /// The official settings: 0.9, 0.01, 0.3, every mask.
    fn default() -> Self {
        Self { q0: 0.9, dq: 0.01, min_preserve: 0.3, pool: VotePool::AllMasks }
    }
}

/// The keep sets of one pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Keep {
    /// `floor(q N)`.
    pub n: usize,
    /// The `n`-th largest pooled score.
    pub theta: f32,
    /// Per slot: the kept channels (ascending) of a prunable slot, `None` for the others.
    pub kept: Vec<Option<Vec<usize>>>,
}

fn in_pool(s: &MaskSlot, pool: VotePool) -> bool {
    s.in_pool && (pool == VotePool::AllMasks || s.site.is_some())
}

/// One pass at `q` over `scores` (one vector per slot).
pub fn keep_at(scores: &[Vec<f32>], slots: &[MaskSlot], pool: VotePool, q: f64, min_preserve: f64) -> Result<Keep> {
    if scores.len() != slots.len() {
        return Err(config_err(format!("{} score vectors for {} slots", scores.len(), slots.len())));
    }
    let mut all: Vec<f32> =
        scores.iter().zip(slots).filter(|(_, s)| in_pool(s, pool)).flat_map(|(v, _)| v.iter().copied()).collect();
    if all.iter().any(|v| !v.is_finite()) {
        return Err(config_err("a mask score is not finite"));
    }
    let n = (q * all.len() as f64).floor() as usize;
    if n == 0 || n > all.len() {
        return Err(config_err(format!("q = {q} selects {n} of a pool of {}", all.len())));
    }
    all.sort_by(|a, b| b.total_cmp(a));
    let theta = all[n - 1];
    let mut kept = Vec::with_capacity(slots.len());
    for (v, s) in scores.iter().zip(slots) {
        if !s.prunable {
            kept.push(None);
            continue;
        }
        let mut k: Vec<usize> = (0..v.len()).filter(|&c| v[c] >= theta).collect();
        if (k.len() as f64) < min_preserve * v.len() as f64 {
            // The official fallback keeps floor(0.3 C) by score; at least one channel, so a
            // layer of fewer than 4 channels is not emptied.
            let m = ((min_preserve * v.len() as f64).floor() as usize).max(1);
            k = compress_prune::top_k(v, m)?;
        }
        kept.push(Some(k));
    }
    Ok(Keep { n, theta, kept })
}

/// One pass of the loop.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VotePass {
    /// `q`.
    pub q: f64,
    /// `floor(q N)`.
    pub n: usize,
    /// The threshold.
    pub theta: f32,
    /// The pruned network's FLOPs.
    pub flops: u64,
    /// Its reduction `(F0 - F) / F0`.
    pub reduction: f64,
}

/// The vote's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrunePlan {
    /// Kept channels (ascending) of every pruned group.
    pub kept: BTreeMap<String, Vec<usize>>,
    /// The pruned widths.
    pub widths: Widths,
    /// The unpruned FLOPs.
    pub flops0: u64,
    /// The pruned FLOPs.
    pub flops: u64,
    /// `(flops0 - flops) / flops0`.
    pub reduction: f64,
    /// Every pass, the last one the plan's.
    pub passes: Vec<VotePass>,
}

/// Runs the loop on `cfg` with `scores` (slot order) until the reduction reaches `target`;
/// `flops` counts a config, `seed` draws the random groups' channels (stream per group and pass).
pub fn vote<C: WhiteBoxLayout>(
    cfg: &C,
    scores: &[Vec<f32>],
    target: f64,
    voting: &GlobalVoting,
    flops: &dyn Fn(&C) -> Result<u64>,
    seed: u64,
) -> Result<PrunePlan> {
    if !(0.0..1.0).contains(&target) {
        return Err(config_err(format!("a FLOPs reduction target in [0, 1), not {target}")));
    }
    if !(voting.dq > 0.0 && voting.q0 > 0.0 && voting.q0 <= 1.0 && (0.0..=1.0).contains(&voting.min_preserve)) {
        return Err(config_err(format!("impossible vote settings {voting:?}")));
    }
    let slots = cfg.mask_slots()?;
    for (s, v) in slots.iter().zip(scores) {
        if v.len() != s.width {
            return Err(config_err(format!("{} scores for group {:?} of {} channels", v.len(), s.group, s.width)));
        }
    }
    let randoms = cfg.random_groups();
    let flops0 = flops(cfg)?;
    let rng = SeededRng::new(seed);
    let (mut q, mut r_prev) = (voting.q0, 0.0);
    let mut passes = Vec::new();
    loop {
        if q <= 0.0 {
            let last = passes.last().map_or(0.0, |p: &VotePass| p.reduction);
            return Err(config_err(format!(
                "the vote cannot reach a {target} reduction: q ran out after {} passes at {last:.4} \
                 (tied scores are all kept: are the masks trained?)",
                passes.len()
            )));
        }
        let keep = keep_at(scores, &slots, voting.pool, q, voting.min_preserve)?;
        let mut kept = BTreeMap::new();
        for (s, k) in slots.iter().zip(keep.kept) {
            if let Some(k) = k {
                kept.insert(s.group.clone(), k);
            }
        }
        for (i, rg) in randoms.iter().enumerate() {
            let c =
                cfg.widths().get(&rg.group).copied().ok_or_else(|| config_err(format!("no group {:?}", rg.group)))?;
            let m = match rg.rule {
                KeepRule::PreviousReduction => (c as f64 * (1.0 - r_prev)) as usize,
                KeepRule::Fraction(f) => (c as f64 * f) as usize,
            }
            .clamp(1, c);
            let mut r = rng.stream(&format!("whitebox/random/{i}"), passes.len() as u64);
            let mut k = sample(&mut r, c, m).into_vec();
            k.sort_unstable();
            kept.insert(rg.group.clone(), k);
        }
        let widths: Widths = kept.iter().map(|(g, k)| (g.clone(), k.len())).collect();
        let f = flops(&cfg.with_widths(widths.clone())?)?;
        let reduction = (flops0 as f64 - f as f64) / flops0.max(1) as f64;
        passes.push(VotePass { q, n: keep.n, theta: keep.theta, flops: f, reduction });
        q -= voting.dq;
        if reduction >= target {
            return Ok(PrunePlan { kept, widths, flops0, flops: f, reduction, passes });
        }
        r_prev = reduction;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(group: &str, width: usize) -> MaskSlot {
        MaskSlot {
            group: group.into(),
            width,
            site: Some((format!("{group}_bn"), compress_nn::tap::TapPoint::Output)),
            prunable: true,
            in_pool: true,
            fold: vec![],
        }
    }

    /// Section 8's voting example: scores A [1.8, 0.3, 1.1, 0.05], B [0.7, 1.6, 0.1].
    #[test]
    fn worked_vote_sequence() {
        let scores = vec![vec![1.8f32, 0.3, 1.1, 0.05], vec![0.7, 1.6, 0.1]];
        let slots = [slot("A", 4), slot("B", 3)];
        let at = |q: f64| keep_at(&scores, &slots, VotePool::AllMasks, q, 0.3).unwrap();
        let sets = |k: &Keep| k.kept.iter().map(|x| x.clone().unwrap()).collect::<Vec<_>>();
        let k = at(0.9);
        assert_eq!((k.n, k.theta), (6, 0.1));
        assert_eq!(sets(&k), [vec![0, 1, 2], vec![0, 1, 2]]);
        let k = at(0.8);
        assert_eq!(k.theta, 0.3);
        assert_eq!(sets(&k), [vec![0, 1, 2], vec![0, 1]]);
        let k = at(0.7);
        assert_eq!((k.n, k.theta), (4, 0.7));
        assert_eq!(sets(&k), [vec![0, 2], vec![0, 1]]);
        let k = at(0.5);
        assert_eq!(k.theta, 1.1);
        assert_eq!(sets(&k), [vec![0, 2], vec![1]]);
        let k = at(0.4);
        assert_eq!(k.theta, 1.6);
        assert_eq!(sets(&k), [vec![0], vec![1]], "A's fallback floor(1.2) = 1 keeps {{0}}");
        // q stepped by repeated subtraction reaches the same passes.
        let mut q = 0.9f64;
        for _ in 0..20 {
            q -= 0.01;
        }
        assert_eq!(at(q).theta, 0.7);
        // An unapplied slot leaves the pool under AppliedOnly.
        let mut s2 = slots.clone();
        s2[1].site = None;
        s2[1].prunable = false;
        let k = keep_at(&scores, &s2, VotePool::AppliedOnly, 0.5, 0.3).unwrap();
        assert_eq!((k.n, k.theta, k.kept[1].clone()), (2, 1.1, None));
    }
}
