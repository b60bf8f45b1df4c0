//! Deployment (spec 2.7 and the issue): a subnet becomes an ordinary, physically narrower zoo
//! network: the supernet's leading channels of every group copied out (with the running
//! statistics the subnet was recalibrated to), run on inputs resized to its resolution. Its
//! output equals the supernet's at that config.

use crate::error::{Result, config_err};
use crate::recalibrate::recalibrate;
use crate::space::SubnetConfig;
use crate::supernet::{SlimArch, Supernet};
use crate::trainer::PssState;
use candle_core::Tensor;
use compress_data::batch::Dataset;
use compress_nn::Network;
use compress_nn::layers::bilinear_align_corners;
use compress_nn::zoo::MobileNetV1;
use std::collections::BTreeMap;

/// A deployed subnet: the narrow network and its input resolution.
#[derive(Debug)]
pub struct Deployed<N: compress_nn::Architecture = MobileNetV1> {
    /// The network (widths of the subnet; save it with `Network::save`).
    pub net: Network<N>,
    /// The subnet's config.
    pub config: SubnetConfig,
}

impl<N: compress_nn::Architecture> Deployed<N> {
    /// Logits of full-resolution images (resized to the subnet's `r` first).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward_t(&bilinear_align_corners(x, self.config.resolution)?, false)?)
    }
}

/// Extracts `cfg` from the supernet (recalibrate its BatchNorms for `cfg` first).
pub fn extract<A: SlimArch>(sup: &Supernet<A>, cfg: &SubnetConfig) -> Result<Deployed<A::Net>> {
    let kept: BTreeMap<String, Vec<usize>> = sup.widths(cfg).into_iter().map(|(g, w)| (g, (0..w).collect())).collect();
    Ok(Deployed { net: sup.net.prune(&kept)?, config: cfg.clone() })
}

/// A subnet's predicted latency (e.g. `|c| table.predict(&arch, c)`,
/// [`crate::latency::LatencyTable::predict`], of a table measured here).
pub type LatencyOf<'a> = &'a dyn Fn(&SubnetConfig) -> Result<f64>;

/// A resource budget.
#[derive(Clone, Copy)]
pub enum Budget<'a> {
    /// At most this many MACs.
    Macs(u64),
    /// At most this many microseconds by a latency predictor.
    Latency(f64, LatencyOf<'a>),
}

impl std::fmt::Debug for Budget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Macs(m) => write!(f, "{m} MACs"),
            Budget::Latency(us, _) => write!(f, "{us} us"),
        }
    }
}

/// The deployed subnet for `budget`: among every bucket's best pool subnet, the costliest one
/// within the budget (the most capacity it allows), its BatchNorms recalibrated on `batches`
/// batches of `data`, extracted as a narrow network (save it with `Network::save`).
#[allow(clippy::too_many_arguments)]
pub fn select<A: SlimArch, D: Dataset>(
    sup: &Supernet<A>,
    state: &PssState,
    budget: Budget,
    data: &D,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Deployed<A::Net>> {
    let mut best: Option<(f64, SubnetConfig)> = None;
    for (_, entry) in state.best() {
        let Some((cfg, _)) = entry else { continue };
        let (cost, limit) = match budget {
            Budget::Macs(m) => (sup.macs(&cfg) as f64, m as f64),
            Budget::Latency(us, latency) => (latency(&cfg)?, us),
        };
        if cost <= limit && best.as_ref().is_none_or(|b| cost > b.0) {
            best = Some((cost, cfg));
        }
    }
    let (_, cfg) = best.ok_or_else(|| config_err(format!("no pool subnet fits the budget {budget:?}")))?;
    recalibrate(sup, &cfg, data, batches, batch_size, seed)?;
    extract(sup, &cfg)
}
