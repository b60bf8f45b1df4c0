//! DCFF on any network: [`Dcff`] wraps a user's [`Architecture`] whose config lists its prunable
//! convolutions ([`LayerwiseRates`]; a network declared with `compress_nn::stack::Stack` has
//! them), trains as an ordinary candle model, and extracts the compact network.
//!
//! The method's settings ([`DcffSettings`]: per-layer rates, the temperature schedule, the KL
//! rule) are apart from the training recipe: any optimizer over [`Dcff::trainable_vars`] and any
//! loss work, so long as [`Dcff::begin_epoch`] runs at the start of each epoch.

use crate::error::Result;
use crate::fused::{EpochRefresh, FusedNetwork};
use crate::proxy::KlMode;
use crate::temperature::TemperatureSchedule;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use compress_nn::{Architecture, Model, Network};
use compress_prune::LayerwiseRates;

/// What DCFF itself needs to know (section 2 of the paper).
#[derive(Debug, Clone, PartialEq)]
pub struct DcffSettings {
    /// One pruning rate per prunable convolution, in `prunable_convs` order: layer `l` keeps
    /// `m = int(C (1 - r_l))` fused filters. Convolutions that produce one group (a residual
    /// stage) must share a rate.
    pub rates: Vec<f64>,
    /// `T(e)` from `T_s` to `T_e` over the training epochs.
    pub temperature: TemperatureSchedule,
    /// How KL scores treat underflow at high temperature (the official code: [`KlMode::Official`]).
    pub kl: KlMode,
}

impl DcffSettings {
    /// The official settings: one `rate` for every prunable convolution, `T` from 1 to 1e4 over
    /// `epochs`, the official KL scores.
    pub fn uniform<C: LayerwiseRates>(config: &C, rate: f64, epochs: usize) -> Self {
        Self {
            rates: vec![rate; config.prunable_convs().len()],
            temperature: TemperatureSchedule::official(epochs),
            kl: KlMode::Official,
        }
    }
}

/// A network under DCFF training: a candle model (forward with the fused filters `Phi W`) whose
/// filters are re-coded at every epoch start, and whose compact form is read off at the end.
#[derive(Debug)]
pub struct Dcff<A: Architecture> {
    fused: FusedNetwork<A>,
    temperature: TemperatureSchedule,
}

impl<A: Architecture> Dcff<A>
where
    A::Config: LayerwiseRates,
{
    /// A fresh fused network for `config` (the original, unpruned widths), weights drawn from
    /// `seed` as the architecture initialises them.
    pub fn new(config: A::Config, settings: &DcffSettings, seed: u64, device: &Device) -> Result<Self> {
        let fused = FusedNetwork::new(config, &settings.rates, settings.kl, seed, device)?;
        Ok(Self { fused, temperature: settings.temperature })
    }

    /// Re-codes every fused layer at the start of `epoch` (section 2, steps 1-8): temperature
    /// `T(epoch)`, new proxies, the `m` most distinctive filters, and `Phi`. Returns what changed.
    pub fn begin_epoch(&self, epoch: usize) -> Result<EpochRefresh> {
        self.fused.refresh(epoch, self.temperature.at(epoch))
    }

    /// The forward pass with the fused filters (`train` selects BatchNorm batch statistics).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(Model::forward_t(&self.fused, x, train)?)
    }

    /// The parameters to train: every filter `W` and the compact rest; the fusion matrices,
    /// stored scores and running statistics are buffers and are not in the list.
    pub fn trainable_vars(&self) -> Result<Vec<Var>> {
        Ok(self.fused.trainable_vars()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every variable, buffers included (what a checkpoint saves).
    pub fn varmap(&self) -> &VarMap {
        self.fused.varmap()
    }

    /// The compact network (`Phi W`, `Phi b`, the rest copied): an ordinary network of the same
    /// architecture at the pruned widths, computing the fused network's function. Save it with
    /// [`Network::save`]: its tensors keep the user's names.
    pub fn extract(&self) -> Result<Network<A>> {
        self.fused.to_compact()
    }

    /// The fused network itself (selections, refresh state; a `compress_train::Model`).
    pub fn fused(&self) -> &FusedNetwork<A> {
        &self.fused
    }
}

/// A [`Dcff`] trains and evaluates through `compress_train` as any model does (its buffers stay
/// out of the optimizer by the buffer naming rule); `begin_epoch` is then the
/// [`crate::Refresher`] hook's job.
impl<A: Architecture> Model for Dcff<A>
where
    A::Config: LayerwiseRates,
{
    fn varmap(&self) -> &VarMap {
        self.fused.varmap()
    }

    fn device(&self) -> &Device {
        self.fused.device()
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> compress_nn::Result<Tensor> {
        Model::forward_t(&self.fused, x, train)
    }
}
