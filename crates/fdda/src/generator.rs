//! FDDA's generator step (spec 2.3): GDFQ's conditional generator trained against the frozen
//! teacher on a random-label batch (`CE_1`, `L_BNS`) and a class-conditional batch (`CE_2`,
//! D-BNS and C-BNS around the class's BNS centre, or the warm-up noise branch), one Adam step on
//! `L_G = 0.5 CE_1 + 0.2 L_BNS + 0.5 CE_2 + 0.9 L_DBNS + 0.01 L_CBNS`.

use crate::centres::BnsCentres;
use crate::error::{Result, config_err};
use crate::losses::{cbns_loss, dbns_loss, deep_start, noise_loss};
use crate::sampler::{Branch, ClassSampler};
use candle_core::{DType, Tensor};
use compress_synth::losses::bns_loss;
use compress_synth::{CondGenerator, Teacher, generator_optimizer};
use compress_train::loss::cross_entropy;
use compress_train::optim::Optimizer;
use rand::rngs::StdRng;

/// The weights of `L_G`'s five terms.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    /// `CE_1` of the random-label batch.
    pub ce_random: f64,
    /// `L_BNS` of the random-label batch.
    pub bns: f64,
    /// `CE_2` of the class batch.
    pub ce_class: f64,
    /// D-BNS of the class batch.
    pub dbns: f64,
    /// C-BNS of the class batch.
    pub cbns: f64,
}

impl LossWeights {
    /// The official code's: 0.5, 0.2, 0.5, 0.9, 0.01.
    pub fn code() -> Self {
        Self { ce_random: 0.5, bns: 0.2, ce_class: 0.5, dbns: 0.9, cbns: 0.01 }
    }

    /// FDDA switched off (GDFQ-style, the mini's arm B): `CE_1 + 0.2 L_BNS`, no class batch.
    pub fn gdfq() -> Self {
        Self { ce_random: 1.0, bns: 0.2, ce_class: 0.0, dbns: 0.0, cbns: 0.0 }
    }

    /// `sum_i w_i part_i` over `[CE_1, L_BNS, CE_2, D-BNS, C-BNS]`.
    pub fn total(&self, parts: [f64; 5]) -> f64 {
        let w = [self.ce_random, self.bns, self.ce_class, self.dbns, self.cbns];
        w.iter().zip(parts).map(|(w, p)| w * p).sum()
    }

    fn uses_class_batch(&self) -> bool {
        self.ce_class != 0.0 || self.dbns != 0.0 || self.cbns != 0.0
    }
}

/// FDDA's generator settings (section 3).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeneratorSettings {
    /// `L_G`'s weights.
    pub weights: LossWeights,
    /// D-BNS noise on the means (0.5) and the variances (1.0).
    pub sigma: (f64, f64),
    /// The first deep layer; `None`: `deep_start(L)`.
    pub deep_start: Option<usize>,
    /// Each batch's size (16).
    pub batch: usize,
    /// Adam's rate (1e-3), times 0.1 at each of `milestones` (epochs 100, 200, 300).
    pub lr: f64,
    /// Epochs at which the rate drops tenfold.
    pub milestones: Vec<usize>,
    /// Epochs `0..=warmup` sample every class and give classes outside `K` the noise branch (4).
    pub warmup: usize,
}

impl GeneratorSettings {
    /// The code's settings.
    pub fn code() -> Self {
        Self {
            weights: LossWeights::code(),
            sigma: (0.5, 1.0),
            deep_start: None,
            batch: 16,
            lr: 1e-3,
            milestones: vec![100, 200, 300],
            warmup: 4,
        }
    }

    /// The rate at `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * 0.1f64.powi(self.milestones.iter().filter(|&&m| epoch >= m).count() as i32)
    }
}

/// One step's terms (unweighted), its class and branch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GeneratorParts {
    /// `[CE_1, L_BNS, CE_2, D-BNS, C-BNS]` (the class batch's are 0 when it does not run).
    pub parts: [f64; 5],
    /// `L_G`.
    pub total: f64,
    /// The class batch's class (`None` when it does not run).
    pub class: Option<usize>,
    /// Whether the noise branch ran.
    pub noise: bool,
}

/// The generator under FDDA training.
pub struct FddaGenerator {
    /// The generator.
    pub generator: CondGenerator,
    opt: Optimizer,
    /// Settings.
    pub settings: GeneratorSettings,
    centres: BnsCentres,
    sampler: ClassSampler,
}

impl std::fmt::Debug for FddaGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FddaGenerator").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl FddaGenerator {
    /// Adam (GDFQ's betas) over `generator`, against `centres` (their `K` drives the sampler).
    pub fn new(generator: CondGenerator, centres: BnsCentres, settings: GeneratorSettings) -> Result<Self> {
        if centres.classes() != generator.config().classes {
            return Err(config_err(format!(
                "centres of {} classes for a generator of {}",
                centres.classes(),
                generator.config().classes
            )));
        }
        let sampler = ClassSampler::new(centres.correct.clone(), settings.warmup)?;
        Ok(Self { opt: generator_optimizer(&generator)?, generator, settings, centres, sampler })
    }

    /// One step at `epoch`: returns the random-label batch as generated before the update
    /// (detached; what the student sees), its labels and the terms. A non-finite `L_G` is an
    /// error and leaves the generator unchanged.
    pub fn step<T: Teacher + ?Sized>(
        &mut self,
        teacher: &T,
        epoch: usize,
        rng: &mut StdRng,
    ) -> Result<(Tensor, Tensor, GeneratorParts)> {
        let s = &self.settings;
        let w = s.weights;
        let dev = self.generator.device().clone();
        let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let (z, y) = self.generator.sample_inputs(s.batch, rng, &dev)?;
        let x = self.generator.forward(&z, &y)?;
        let out = teacher.forward_probe(&x)?;
        let ce1 = cross_entropy(&out.logits, &y, 0.0)?;
        let bns = bns_loss(&out.bn)?;
        let mut loss = ((&ce1 * w.ce_random)? + (&bns * w.bns)?)?;
        let mut parts = [scalar(&ce1)?, scalar(&bns)?, 0.0, 0.0, 0.0];
        let (mut class, mut noise) = (None, false);
        if w.uses_class_batch() {
            let c = self.sampler.draw(epoch, rng);
            let (z2, _) = self.generator.sample_inputs(s.batch, rng, &dev)?;
            let labels = Tensor::from_vec(vec![c as u32; s.batch], s.batch, &dev)?;
            let out2 = teacher.forward_probe(&self.generator.forward(&z2, &labels)?)?;
            let ce2 = cross_entropy(&out2.logits, &labels, 0.0)?;
            let start = s.deep_start.unwrap_or_else(|| deep_start(out2.bn.len()));
            let (dbns, cbns) = match self.sampler.branch(epoch, c) {
                Branch::Centred => (
                    dbns_loss(&out2.bn, &self.centres, c, start, s.sigma.0, s.sigma.1, rng)?,
                    Some(cbns_loss(&out2.bn, &self.centres, c, start)?),
                ),
                Branch::Noise => {
                    noise = true;
                    (noise_loss(&out2.bn, rng)?, None)
                }
            };
            loss = ((loss + (&ce2 * w.ce_class)?)? + (&dbns * w.dbns)?)?;
            parts[2] = scalar(&ce2)?;
            parts[3] = scalar(&dbns)?;
            if let Some(cb) = cbns {
                parts[4] = scalar(&cb)?;
                loss = (loss + (cb * w.cbns)?)?;
            }
            class = Some(c);
        }
        let total = scalar(&loss)?;
        if !total.is_finite() {
            return Err(config_err(format!("non-finite generator loss {parts:?} at epoch {epoch}")));
        }
        let grads = loss.backward()?;
        self.opt.step(&grads, s.lr_at(epoch))?;
        Ok((x.detach(), y, GeneratorParts { parts, total, class, noise }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use compress_nn::Network;
    use compress_nn::zoo::{Vgg, VggConfig};
    use compress_synth::GenConfig;
    use compress_synth::generator::Conditioning;
    use rand::SeedableRng;

    fn setup(weights: LossWeights) -> (Network<Vgg>, FddaGenerator) {
        let cfg = VggConfig::new(&[4, 0, 6, 0], 3).unwrap().input(1, 8).unwrap().single_linear();
        let teacher = Network::<Vgg>::new(cfg, 0, &Device::Cpu).unwrap();
        let gen_cfg = GenConfig {
            latent: 8,
            classes: 3,
            init_size: 2,
            channels: 1,
            inner_eps: 0.8,
            conditioning: Conditioning::CondBn,
            widths: [8, 6, 4],
        };
        let generator = CondGenerator::new(gen_cfg, 0, &Device::Cpu).unwrap();
        let img = |v: f64| (Tensor::ones((1, 8, 8), DType::F32, &Device::Cpu).unwrap() * v).unwrap();
        let mut centres = BnsCentres::compute(&teacher, &[(img(0.1), 0), (img(-0.5), 1), (img(1.0), 2)], 3).unwrap();
        centres.correct = vec![true, false, true]; // class 1 outside K
        let settings = GeneratorSettings { batch: 4, weights, ..GeneratorSettings::code() };
        (teacher, FddaGenerator::new(generator, centres, settings).unwrap())
    }

    #[test]
    fn a_step_combines_the_terms_moves_the_generator_and_follows_the_branch_rule() {
        let (teacher, mut g) = setup(LossWeights::code());
        let before = g.generator.varmap().all_vars()[0].as_tensor().copy().unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let mut noise_seen = false;
        for epoch in [0usize, 0, 0, 0, 0, 0, 5, 5, 5] {
            let (x, y, p) = g.step(&teacher, epoch, &mut rng).unwrap();
            assert_eq!((x.dims(), y.dims()), (&[4, 1, 8, 8][..], &[4][..]));
            assert!((p.total - LossWeights::code().total(p.parts)).abs() < 1e-4 * p.total.abs().max(1.0), "{p:?}");
            let c = p.class.unwrap();
            assert_eq!(p.noise, epoch <= 4 && c == 1, "{p:?}");
            assert!(epoch <= 4 || c != 1, "after the warm-up only K");
            if p.noise {
                noise_seen = true;
                assert_eq!(p.parts[4], 0.0, "no C-BNS in the noise branch");
            }
        }
        assert!(noise_seen, "the noise branch fired for class 1 in the warm-up");
        let after = g.generator.varmap().all_vars()[0].as_tensor().copy().unwrap();
        assert!((before - after).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        // FDDA off: no class batch.
        let (teacher, mut g) = setup(LossWeights::gdfq());
        let (_, _, p) = g.step(&teacher, 0, &mut rng).unwrap();
        assert_eq!((p.class, &p.parts[2..]), (None, &[0.0, 0.0, 0.0][..]));
    }

    /// Section 8: `L_G` with every component 1 is 0.5 + 0.2 + 0.5 + 0.9 + 0.01 = 2.11.
    #[test]
    fn loss_weights_of_the_code() {
        assert!((LossWeights::code().total([1.0; 5]) - 2.11).abs() < 1e-12);
        assert_eq!(LossWeights::gdfq().total([1.0, 1.0, 5.0, 5.0, 5.0]), 1.2);
        let s = GeneratorSettings::code();
        let got = [0, 99, 100, 200, 399].map(|e| s.lr_at(e));
        for (g, want) in got.iter().zip([1e-3, 1e-3, 1e-4, 1e-5, 1e-6]) {
            assert!((g / want - 1.0).abs() < 1e-12, "{got:?}");
        }
    }
}
