//! IntraQ's stage-1 terms (spec 2.1-2.3) plugged into `compress_synth`'s loop: soft targets
//! `U(eps, 1)` for the soft inception loss, the marginal distance constraint to the class centres
//! of the images finished before, and local object reinforcement (a random-resized crop of area
//! at least `eta`, with flips, on a coin of probability `p_lor` per iteration).

use crate::centres::ClassCentres;
use crate::losses::{mdc_loss, soft_inception_loss};
use candle_core::{Device, Tensor};
use compress_synth::crop::random_resized_crop;
use compress_synth::{BatchContext, SynthError, SynthMethod, TeacherOut};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// IntraQ's synthesis settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntraqTerms {
    /// Soft-label lower bound epsilon (1: hard targets).
    pub eps_soft: f64,
    /// Probability that an image gets a soft target `U(eps, 1)` (the official code: 0.5).
    pub p_soft: f64,
    /// MDC lower / upper cosine-distance bounds ((0, 2): off).
    pub lambda: (f64, f64),
    /// LOR crop area lower bound eta.
    pub eta: f64,
    /// Probability of LOR per iteration (one coin for the batch).
    pub p_lor: f64,
    /// Horizontal flips after the crop.
    pub flip: bool,
}

impl IntraqTerms {
    /// The official CIFAR-10 script: eps 0.95, lambda (0.05, 0.8), eta 0.5, LOR 0.5, flips.
    pub fn cifar10() -> Self {
        Self { eps_soft: 0.95, p_soft: 0.5, lambda: (0.05, 0.8), eta: 0.5, p_lor: 0.5, flip: true }
    }

    /// CIFAR-100: eps 0.6, lambda (0.02, 1.0).
    pub fn cifar100() -> Self {
        Self { eps_soft: 0.6, lambda: (0.02, 1.0), ..Self::cifar10() }
    }

    /// The released ImageNet script: eps 1, lambda (0, 2) (MDC and soft labels off).
    pub fn imagenet() -> Self {
        Self { eps_soft: 1.0, lambda: (0.0, 2.0), ..Self::cifar10() }
    }

    /// Checks the settings are possible.
    pub fn validate(&self) -> compress_synth::Result<()> {
        let unit = 0.0..=1.0;
        if !unit.contains(&self.eps_soft) || !unit.contains(&self.p_soft) {
            return Err(SynthError::Config(format!(
                "eps {} and p_soft {} must be in [0, 1]",
                self.eps_soft, self.p_soft
            )));
        }
        if !unit.contains(&self.p_lor) || self.eta.is_nan() || self.eta <= 0.0 || self.eta > 1.0 {
            return Err(SynthError::Config(format!(
                "p_lor {} must be in [0, 1] and eta {} in (0, 1]",
                self.p_lor, self.eta
            )));
        }
        if self.lambda.0 > self.lambda.1 {
            return Err(SynthError::Config(format!("MDC bounds {:?} are reversed", self.lambda)));
        }
        Ok(())
    }

    /// Whether the marginal distance constraint is on.
    pub fn mdc_on(&self) -> bool {
        self.lambda != (0.0, 2.0)
    }

    /// The synthesis method for `classes` classes (an empty centre bank).
    pub fn method(self, classes: usize) -> compress_synth::Result<Intraq> {
        self.validate()?;
        Ok(Intraq { terms: self, bank: ClassCentres::new(classes) })
    }
}

/// IntraQ's [`SynthMethod`]: its settings and the class centres of the finished batches.
#[derive(Debug, Clone)]
pub struct Intraq {
    terms: IntraqTerms,
    bank: ClassCentres,
}

/// One batch's soft targets and (once the feature width is known) its centres and mask.
#[derive(Debug)]
pub struct IntraqBatch {
    soft: Tensor,
    centres: Option<(Tensor, Tensor)>,
}

impl SynthMethod for Intraq {
    type Batch = IntraqBatch;

    fn key(&self) -> serde_json::Value {
        serde_json::json!({"intraq": self.terms})
    }

    /// `s_i = U(eps, 1)` with probability `p_soft`, else 1.
    fn start_batch(&self, labels: &[u32], rng: &mut StdRng, device: &Device) -> compress_synth::Result<IntraqBatch> {
        let t = &self.terms;
        let soft: Vec<f32> = (0..labels.len())
            .map(|_| if rng.random_bool(t.p_soft) { rng.random_range(t.eps_soft..=1.0) as f32 } else { 1.0 })
            .collect();
        Ok(IntraqBatch { soft: Tensor::from_vec(soft, labels.len(), device)?, centres: None })
    }

    /// LOR: on a coin of probability `p_lor`, a random-resized crop of area `(eta, 1)`.
    fn view(&self, images: &Tensor, rng: &mut StdRng) -> compress_synth::Result<Tensor> {
        let t = &self.terms;
        Ok(if t.p_lor > 0.0 && rng.random_bool(t.p_lor) {
            random_resized_crop(images, t.eta, t.flip, rng)?
        } else {
            images.clone()
        })
    }

    /// `L_BNS + L_SIL (+ L_MDC lower + upper)`.
    fn objective(
        &self,
        batch: &mut IntraqBatch,
        bns: Tensor,
        out: &TeacherOut,
        ctx: &BatchContext,
    ) -> compress_synth::Result<Tensor> {
        let mut loss = (bns + soft_inception_loss(&out.logits, ctx.labels, &batch.soft)?)?;
        if self.terms.mdc_on() {
            if batch.centres.is_none() {
                batch.centres = Some(self.bank.gather(ctx.label_list, out.features.dim(1)?, ctx.images.device())?);
            }
            if let Some((c, m)) = &batch.centres {
                let (lo, hi) = mdc_loss(&out.features, c, m, self.terms.lambda.0, self.terms.lambda.1)?;
                loss = ((loss + lo)? + hi)?;
            }
        }
        Ok(loss)
    }

    /// Adds the batch's clean features to the class centres.
    fn finish_batch(&mut self, out: &TeacherOut, labels: &[u32]) -> compress_synth::Result<()> {
        Ok(self.bank.push(&out.features.detach(), labels)?)
    }
}

/// `cargo xtask bench synth`: the speed of stage 1 for a CIFAR ResNet-20 at 32 x 32, batch 256,
/// with the CIFAR-10 script's terms (LOR, soft labels, MDC from the second group on). One Adam
/// iteration = probed teacher forward, the losses, backward to the images, Adam step. Weights are
/// random (speed does not depend on them). Returns the line to print.
pub fn bench(iters: usize) -> crate::Result<String> {
    use compress_nn::network::Network;
    use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
    use compress_synth::{SynthConfig, synthesize};
    let dev = Device::Cpu;
    let net = Network::<ResNetCifar>::new(ResNetCifarConfig::new(20, 10)?, 0, &dev)?;
    let iters = iters.max(2);
    let cfg = |n: usize| SynthConfig { groups: 2, batches_per_group: 1, iters: n, ..SynthConfig::cifar10() };
    // A 1-iteration run measures the fixed per-batch cost.
    let t0 = std::time::Instant::now();
    synthesize(&net, &cfg(1), &mut IntraqTerms::cifar10().method(10)?, 0, None, &dev)?;
    let fixed = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    synthesize(&net, &cfg(iters), &mut IntraqTerms::cifar10().method(10)?, 0, None, &dev)?;
    let per_iter = (t1.elapsed().as_secs_f64() - fixed) / (2 * (iters - 1)) as f64;
    Ok(format!(
        "ResNet-20, 32x32, batch 256, {} candle thread(s): {:.0} ms per Adam iteration, {:.0} image-iterations/s; \
         at the official 1,000 iterations a 256-image batch takes {:.0} s ({:.2} finished images/s)",
        candle_core::utils::get_num_threads(),
        per_iter * 1e3,
        256.0 / per_iter,
        per_iter * 1000.0,
        256.0 / (per_iter * 1000.0)
    ))
}
