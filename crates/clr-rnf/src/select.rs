//! Step 2: which filters stay. RNF (the paper's), or the baselines' L1 norm and random choice,
//! at the widths a plan (or any structure) sets.

use crate::candidates::{Candidate, producing_weights};
use crate::error::{Result, config_err};
use crate::rnf::{RnfResult, filter_rows, rnf_select_rows};
use compress_core::rng::SeededRng;
use compress_nn::structure::{ChannelGroup, Widths};
use compress_nn::{ArchConfig, Architecture, Network};
use compress_prune::top_k;
use std::collections::BTreeMap;

/// How the kept filters are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    /// k-reciprocal nearest filters (section 2.3).
    Rnf,
    /// The largest L1 norms (Li et al., 2017).
    L1,
    /// A uniformly random subset, drawn from the seed.
    Random,
}

/// The kept channels of every group a structure lowers, and RNF's `k` where it ran.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selected {
    /// Kept channel indices per group, ascending (the input of `Network::prune`).
    pub kept: BTreeMap<String, Vec<usize>>,
    /// RNF's result per group (RNF only).
    pub rnf: BTreeMap<String, RnfResult>,
}

/// The filters of `group` as rows: channel `c`'s row concatenates its rows of every tensor in
/// `tensors` (a group produced by several convolutions, e.g. a residual stage).
pub fn group_rows<A: Architecture>(
    net: &Network<A>,
    group: &ChannelGroup,
    tensors: &[String],
) -> Result<Vec<Vec<f32>>> {
    let all = net.tensors()?;
    let mut rows = vec![Vec::new(); group.width];
    for t in tensors {
        let member = group
            .members
            .iter()
            .find(|m| &m.tensor == t && m.axis == 0)
            .ok_or_else(|| config_err(format!("{t} does not produce group {}", group.name)))?;
        let w = all.get(t).ok_or_else(|| config_err(format!("no tensor {t:?}")))?;
        let r = filter_rows(w)?;
        for (c, row) in rows.iter_mut().enumerate() {
            for i in member.indices(c) {
                row.extend_from_slice(r.get(i).ok_or_else(|| config_err(format!("{t} has no row {i}")))?);
            }
        }
    }
    Ok(rows)
}

/// Chooses, for every candidate group and follower of `candidates` whose width `widths` sets,
/// which channels stay. RNF and L1 look at the candidate's scored weights (a follower at the
/// weights that produce it); `Random` draws stream `("clr-rnf/random", group index)` of `seed`.
pub fn select<A: Architecture>(
    net: &Network<A>,
    candidates: &[Candidate],
    widths: &Widths,
    selection: Selection,
    seed: u64,
) -> Result<Selected> {
    let groups = net.config.groups();
    let mut out = Selected::default();
    let rng = SeededRng::new(seed);
    let jobs = candidates.iter().flat_map(|c| {
        std::iter::once((c.group.clone(), Some(c.scored.clone()))).chain(c.followers.iter().map(|f| (f.clone(), None)))
    });
    for (index, (name, scored)) in jobs.enumerate() {
        let Some(&m) = widths.get(&name) else { continue };
        let g = groups.iter().find(|g| g.name == name).ok_or_else(|| config_err(format!("no group {name:?}")))?;
        if m == 0 || m > g.width {
            return Err(config_err(format!("group {name} cannot keep {m} of {} channels", g.width)));
        }
        let tensors = scored.unwrap_or_else(|| producing_weights(g));
        let kept = match selection {
            Selection::Rnf => {
                let r = rnf_select_rows(&group_rows(net, g, &tensors)?, m)?;
                out.rnf.insert(name.clone(), r.clone());
                r.kept
            }
            Selection::L1 => {
                let rows = group_rows(net, g, &tensors)?;
                let l1: Vec<f32> = rows.iter().map(|r| r.iter().map(|x| x.abs()).sum()).collect();
                top_k(&l1, m)?
            }
            Selection::Random => {
                let mut r = rng.stream("clr-rnf/random", index as u64);
                let mut v = rand::seq::index::sample(&mut r, g.width, m).into_vec();
                v.sort_unstable();
                v
            }
        };
        out.kept.insert(name, kept);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidates::ClrCandidates;
    use candle_core::Device;
    use compress_nn::zoo::{Vgg, VggConfig};

    #[test]
    fn selections_keep_the_widths_and_random_follows_the_seed() {
        let cfg = VggConfig::new(&[8, 0, 12, 0], 10).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg.clone(), 3, &Device::Cpu).unwrap();
        let cands = cfg.candidates().unwrap();
        let widths: Widths = [("conv0".to_string(), 3), ("conv1".to_string(), 5)].into();
        for s in [Selection::Rnf, Selection::L1, Selection::Random] {
            let k = select(&net, &cands, &widths, s, 0).unwrap();
            assert_eq!((k.kept["conv0"].len(), k.kept["conv1"].len()), (3, 5));
            assert!(k.kept.values().all(|v| v.windows(2).all(|w| w[0] < w[1])));
            assert_eq!(k.rnf.len(), if s == Selection::Rnf { 2 } else { 0 });
        }
        let a = select(&net, &cands, &widths, Selection::Random, 0).unwrap();
        assert_eq!(a, select(&net, &cands, &widths, Selection::Random, 0).unwrap());
        assert_ne!(a, select(&net, &cands, &widths, Selection::Random, 1).unwrap());
        // L1 keeps the largest-norm filters.
        let rows = group_rows(&net, &cfg.groups()[1], &["features.conv1.weight".into()]).unwrap();
        let l1: Vec<f32> = rows.iter().map(|r| r.iter().map(|x| x.abs()).sum()).collect();
        let k = select(&net, &cands, &widths, Selection::L1, 0).unwrap();
        let min_kept = k.kept["conv1"].iter().map(|&i| l1[i]).fold(f32::INFINITY, f32::min);
        assert!((0..12).filter(|i| !k.kept["conv1"].contains(i)).all(|i| l1[i] <= min_kept));
        let too_many: Widths = [("conv0".to_string(), 9)].into();
        assert!(select(&net, &cands, &too_many, Selection::L1, 0).is_err());
    }
}
