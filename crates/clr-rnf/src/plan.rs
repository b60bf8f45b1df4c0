//! Step 1: the pruned structure. CLR over a network's candidates gives each candidate group (and
//! its followers) a width; the plan is those widths and the ranking behind them.

use crate::candidates::{Candidate, ClrCandidates, flops_factors};
use crate::clr::{ClrConfig, Ranking, ScoredGroup, cross_layer_ranking, keep_count};
use crate::error::{Result, config_err};
use candle_core::DType;
use compress_nn::structure::Widths;
use compress_nn::{ArchConfig, Architecture, Network};

/// The widths CLR chose, with how it chose them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The candidate groups, in the config's order.
    pub candidates: Vec<Candidate>,
    /// Their FLOPs factors `f_l`.
    pub factors: Vec<f64>,
    /// The global ranking (`tau`, per-candidate `p_l` and `m_l`).
    pub ranking: Ranking,
    /// The target width of every candidate group and follower.
    pub widths: Widths,
}

impl Plan {
    /// CLR on `net`'s candidates (section 2.1-2.2).
    pub fn new<A: Architecture>(net: &Network<A>, clr: &ClrConfig) -> Result<Self>
    where
        A::Config: ClrCandidates,
    {
        let candidates = net.config.candidates()?;
        if candidates.is_empty() {
            return Err(config_err("the network declares no prunable group"));
        }
        let factors = flops_factors(net, &candidates)?;
        let tensors = net.tensors()?;
        let groups = net.config.groups();
        let width = |name: &str| -> Result<usize> {
            let g = groups.iter().find(|g| g.name == name).ok_or_else(|| config_err(format!("no group {name:?}")))?;
            if !g.prunable {
                return Err(config_err(format!("group {name:?} is not prunable")));
            }
            Ok(g.width)
        };
        let mut scored = Vec::with_capacity(candidates.len());
        for (c, &f) in candidates.iter().zip(&factors) {
            let mut weights = Vec::new();
            for t in &c.scored {
                let w = tensors.get(t).ok_or_else(|| config_err(format!("no tensor {t:?}")))?;
                weights.extend(w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            }
            scored.push(ScoredGroup { name: c.group.clone(), weights, channels: width(&c.group)?, flops_factor: f });
        }
        let ranking = cross_layer_ranking(&scored, clr)?;
        let mut widths = Widths::new();
        for (c, l) in candidates.iter().zip(&ranking.layers) {
            widths.insert(c.group.clone(), l.keep);
            for f in &c.followers {
                widths.insert(f.clone(), keep_count(width(f)?, l.prune_ratio));
            }
        }
        Ok(Self { candidates, factors, ranking, widths })
    }

    /// The plan's config: `base` at the planned widths.
    pub fn config<C: ArchConfig>(&self, base: &C) -> Result<C> {
        Ok(base.with_widths(self.widths.clone())?)
    }

    /// Every group the plan sets (candidates, then followers).
    pub fn groups(&self) -> Vec<String> {
        let mut v: Vec<String> = self.candidates.iter().map(|c| c.group.clone()).collect();
        v.extend(self.candidates.iter().flat_map(|c| c.followers.iter().cloned()));
        v
    }
}

/// A uniform structure (the magnitude baseline's): every candidate and follower keeps
/// `int(C (1 - rate))` channels.
pub fn uniform_widths<A: Architecture>(net: &Network<A>, rate: f64) -> Result<Widths>
where
    A::Config: ClrCandidates,
{
    let groups = net.config.groups();
    let mut widths = Widths::new();
    for c in net.config.candidates()? {
        for name in std::iter::once(&c.group).chain(&c.followers) {
            let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| config_err(format!("no group {name:?}")))?;
            widths.insert(name.clone(), keep_count(g.width, rate));
        }
    }
    Ok(widths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use compress_nn::zoo::{ResNet, ResNetConfig, Vgg, VggConfig};

    #[test]
    fn vgg_plan_sets_every_conv_and_rho_zero_keeps_all() {
        let cfg = VggConfig::new(&[16, 0, 32, 0], 10).unwrap().input(1, 28).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let p = Plan::new(&net, &ClrConfig { pr_target: 0.7, lambda: 0.5 }).unwrap();
        assert_eq!(p.groups(), ["conv0", "conv1"]);
        assert_eq!(p.ranking.candidates, 16 * 9 + 32 * 16 * 9);
        // The high-FLOPs second conv is pruned harder.
        assert!(p.ranking.layers[1].prune_ratio > p.ranking.layers[0].prune_ratio);
        let all = Plan::new(&net, &ClrConfig { pr_target: 0.0, lambda: 0.5 }).unwrap();
        assert_eq!(all.config(&cfg).unwrap(), cfg);
        let u = uniform_widths(&net, 0.5).unwrap();
        assert_eq!((u["conv0"], u["conv1"]), (8, 16));
    }

    #[test]
    fn resnet50_stem_follows_stage1() {
        let cfg = ResNetConfig::resnet50(10).unwrap().input(3, 32);
        let net = Network::<ResNet>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let p = Plan::new(&net, &ClrConfig { pr_target: 0.44, lambda: 0.4 }).unwrap();
        let stage1 = &p.ranking.layers[32];
        assert_eq!(stage1.name, "stage1");
        assert_eq!(p.widths["stem"], keep_count(64, stage1.prune_ratio));
        assert_eq!(p.widths["stage1"], keep_count(256, stage1.prune_ratio));
        let compact = p.config(&cfg).unwrap();
        assert_eq!(compact.widths()["stem"], p.widths["stem"]);
    }
}
