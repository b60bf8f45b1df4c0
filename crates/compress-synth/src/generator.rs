//! GDFQ's class-conditional generator (Xu et al. 2020), which IntraQ's code trains to calibrate
//! activation ranges (intraq spec 2.3) and FDDA trains throughout (fdda spec 2.2), and its
//! plain training step `CE(F(G(z, y)), y) + w L_BNS`.
//!
//! `z (+ label) -> Linear -> 128 x s x s -> BN -> 2x nearest -> conv3x3 128->128, BN(eps 0.8),
//! LeakyReLU 0.2 -> 2x nearest -> conv3x3 128->64, BN(eps 0.8), LeakyReLU 0.2 -> conv3x3 64->3 ->
//! tanh -> BN(3, no affine)`, every BN on batch statistics (the generator is always in train
//! mode). The CIFAR variant conditions by `z * Emb(y)` (embedding `N(0, 1)`) with affine BNs; the
//! ImageNet variant feeds `z` alone and conditions every inner BN on the label (`gamma_y`,
//! `beta_y` rows of `K x C` tables initialised to 1 and 0). The 0.8 is GDFQ's positional-argument
//! quirk (`BatchNorm2d(128, 0.8)` sets eps), kept because the published numbers use it.

use crate::error::{Result, SynthError};
use crate::teacher::Teacher;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_nn::layers::{Conv2d, ConvSpec};
use compress_train::loss::cross_entropy;
use compress_train::optim::{Optimizer, OptimizerKind, all_params};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// How the label enters the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conditioning {
    /// `z * Emb(y)` before the first linear layer; BNs with one affine per channel (CIFAR).
    EmbedMul,
    /// Categorical conditional BN: per-class affine in the three inner BNs (ImageNet).
    CondBn,
}

/// The generator's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenConfig {
    /// Latent dimension (100).
    pub latent: usize,
    /// Classes.
    pub classes: usize,
    /// Side of the first feature map (image side / 4: 8 for CIFAR, 56 for ImageNet).
    pub init_size: usize,
    /// Output channels (3).
    pub channels: usize,
    /// eps of the two inner BNs (GDFQ's 0.8).
    pub inner_eps: f64,
    /// Label conditioning.
    pub conditioning: Conditioning,
    /// Channels of the first feature map and of the two inner convs' outputs (GDFQ: 128, 128,
    /// 64; FDDA's MNIST mini: 32, 16, 8).
    #[serde(default = "gdfq_widths")]
    pub widths: [usize; 3],
}

fn gdfq_widths() -> [usize; 3] {
    [128, 128, 64]
}

impl GenConfig {
    /// GDFQ's CIFAR generator (32 x 32 images).
    pub fn cifar(classes: usize) -> Self {
        Self {
            latent: 100,
            classes,
            init_size: 8,
            channels: 3,
            inner_eps: 0.8,
            conditioning: Conditioning::EmbedMul,
            widths: gdfq_widths(),
        }
    }

    /// GDFQ's ImageNet generator (224 x 224 images).
    pub fn imagenet(classes: usize) -> Self {
        Self {
            latent: 100,
            classes,
            init_size: 56,
            channels: 3,
            inner_eps: 0.8,
            conditioning: Conditioning::CondBn,
            widths: gdfq_widths(),
        }
    }

    /// Output image side.
    pub fn image_size(&self) -> usize {
        4 * self.init_size
    }

    fn validate(&self) -> Result<()> {
        if self.latent == 0
            || self.classes == 0
            || self.init_size == 0
            || self.channels == 0
            || self.widths.contains(&0)
        {
            return Err(SynthError::Config(format!("generator needs non-zero sizes, got {self:?}")));
        }
        if self.inner_eps.is_nan() || self.inner_eps <= 0.0 {
            return Err(SynthError::Config(format!("generator BN eps must be > 0, got {}", self.inner_eps)));
        }
        Ok(())
    }
}

/// The affine part of one generator BN.
#[derive(Debug, Clone)]
enum Affine {
    /// No affine (the output BN).
    None,
    /// `gamma`, `beta` per channel `[C]`.
    Channel(Tensor, Tensor),
    /// Per class `[K, C]` tables.
    Class(Tensor, Tensor),
}

#[derive(Debug, Clone)]
struct GenBn {
    eps: f64,
    affine: Affine,
}

impl GenBn {
    fn new(c: usize, eps: f64, conditioning: Option<Conditioning>, classes: usize, vb: VarBuilder) -> Result<Self> {
        let one = candle_nn::Init::Const(1.0);
        let zero = candle_nn::Init::Const(0.0);
        let affine = match conditioning {
            None => Affine::None,
            Some(Conditioning::EmbedMul) => {
                Affine::Channel(vb.get_with_hints(c, "weight", one)?, vb.get_with_hints(c, "bias", zero)?)
            }
            Some(Conditioning::CondBn) => Affine::Class(
                vb.get_with_hints((classes, c), "embed_gamma", one)?,
                vb.get_with_hints((classes, c), "embed_beta", zero)?,
            ),
        };
        Ok(Self { eps, affine })
    }

    /// `(x - mean_b) / sqrt(var_b + eps)` over (N, H, W) with the biased batch variance, then
    /// the affine (gradients through the batch statistics).
    fn forward(&self, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let xhat = if x.device().is_cpu() && x.dtype() == DType::F32 {
            let ones = Tensor::ones(c, DType::F32, x.device())?;
            let zeros = Tensor::zeros(c, DType::F32, x.device())?;
            compress_core::ops::batch_norm_train(x, &ones, &zeros, self.eps)?.0
        } else {
            normalise_composed(x, self.eps)?
        };
        Ok(match &self.affine {
            Affine::None => xhat,
            Affine::Channel(g, b) => {
                xhat.broadcast_mul(&g.reshape((1, c, 1, 1))?)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?
            }
            Affine::Class(g, b) => {
                let n = x.dim(0)?;
                let g = g.index_select(labels, 0)?.reshape((n, c, 1, 1))?;
                let b = b.index_select(labels, 0)?.reshape((n, c, 1, 1))?;
                xhat.broadcast_mul(&g)?.broadcast_add(&b)?
            }
        })
    }
}

/// Batch normalisation from candle's primitives (the path off the CPU).
fn normalise_composed(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    Ok(centred.broadcast_div(&(var + eps)?.sqrt()?)?)
}

/// `2x` nearest-neighbour upsampling as a broadcast (its backward sums each 2 x 2 block).
fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?.reshape((n, c, 2 * h, 2 * w))?)
}

fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(x.maximum(&(x * slope)?)?)
}

/// The conditional generator; its parameters live in its own `VarMap`.
pub struct CondGenerator {
    cfg: GenConfig,
    varmap: VarMap,
    embed: Option<Tensor>,
    l1_w: Tensor,
    l1_b: Tensor,
    bn0: GenBn,
    conv1: Conv2d,
    bn1: GenBn,
    conv2: Conv2d,
    bn2: GenBn,
    conv3: Conv2d,
    bn_out: GenBn,
}

impl std::fmt::Debug for CondGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CondGenerator").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl CondGenerator {
    /// A freshly initialised generator (PyTorch's default initialisations) seeded by `seed`.
    pub fn new(cfg: GenConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let varmap = VarMap::new();
        let vb = compress_nn::init::seeded_builder(&varmap, seed, DType::F32, device);
        let embed = match cfg.conditioning {
            Conditioning::EmbedMul => Some(vb.get_with_hints(
                (cfg.classes, cfg.latent),
                "label_emb.weight",
                candle_nn::Init::Randn { mean: 0.0, stdev: 1.0 },
            )?),
            Conditioning::CondBn => None,
        };
        let s = cfg.init_size;
        let bound = 1.0 / (cfg.latent as f64).sqrt();
        let u = candle_nn::Init::Uniform { lo: -bound, up: bound };
        let [w0, w1, w2] = cfg.widths;
        let l1_w = vb.get_with_hints((w0 * s * s, cfg.latent), "l1.weight", u)?;
        let l1_b = vb.get_with_hints(w0 * s * s, "l1.bias", u)?;
        let cond = Some(cfg.conditioning);
        let conv = |cin, cout, name: &str| Conv2d::new(cin, cout, ConvSpec::same(3).with_bias(), vb.pp(name));
        let (k, eps) = (cfg.classes, cfg.inner_eps);
        Ok(Self {
            bn0: GenBn::new(w0, 1e-5, cond, k, vb.pp("bn0"))?,
            conv1: conv(w0, w1, "conv1")?,
            bn1: GenBn::new(w1, eps, cond, k, vb.pp("bn1"))?,
            conv2: conv(w1, w2, "conv2")?,
            bn2: GenBn::new(w2, eps, cond, k, vb.pp("bn2"))?,
            conv3: conv(w2, cfg.channels, "conv3")?,
            bn_out: GenBn::new(cfg.channels, 1e-5, None, k, vb.pp("bn_out"))?,
            embed,
            l1_w,
            l1_b,
            varmap,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// The device its variables live on.
    pub fn device(&self) -> &Device {
        self.l1_w.device()
    }

    /// The trainable variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Images `[B, C, 4s, 4s]` in the teacher's normalised input space from `z` `[B, latent]` and
    /// `labels` `[B]` (u32).
    pub fn forward(&self, z: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (b, latent) = z.dims2()?;
        if latent != self.cfg.latent || labels.dims() != [b] {
            return Err(SynthError::Config(format!(
                "generator input z {:?} / labels {:?}, expected [B, {}] / [B]",
                z.dims(),
                labels.dims(),
                self.cfg.latent
            )));
        }
        let input = match &self.embed {
            Some(e) => (e.index_select(labels, 0)? * z)?,
            None => z.clone(),
        };
        let s = self.cfg.init_size;
        let h = input.matmul(&self.l1_w.t()?)?.broadcast_add(&self.l1_b)?.reshape((b, self.cfg.widths[0], s, s))?;
        let h = upsample2(&self.bn0.forward(&h, labels)?)?;
        let h = leaky_relu(&self.bn1.forward(&self.conv1.forward(&h)?, labels)?, 0.2)?;
        let h = upsample2(&h)?;
        let h = leaky_relu(&self.bn2.forward(&self.conv2.forward(&h)?, labels)?, 0.2)?;
        self.bn_out.forward(&self.conv3.forward(&h)?.tanh()?, labels)
    }

    /// A random batch: `z ~ N(0, I)` and uniform labels from `rng`.
    pub fn sample_inputs(&self, batch: usize, rng: &mut StdRng, device: &Device) -> Result<(Tensor, Tensor)> {
        let z: Vec<f32> = (0..batch * self.cfg.latent).map(|_| StandardNormal.sample(rng)).collect();
        let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..self.cfg.classes as u32)).collect();
        Ok((Tensor::from_vec(z, (batch, self.cfg.latent), device)?, Tensor::from_vec(y, batch, device)?))
    }
}

/// One GDFQ generator step's losses (spec 2.3): `CE(F(x), y) + bns_weight L_BNS`.
#[derive(Debug, Clone)]
pub struct GdfqLoss {
    /// The total, to differentiate.
    pub loss: Tensor,
    /// The cross-entropy.
    pub ce: f64,
    /// `L_BNS`.
    pub bns: f64,
}

/// The GDFQ generator loss of images `x` with labels `y` against `teacher` (eval mode, frozen:
/// gradients reach `x` and through it the generator).
pub fn gdfq_loss<T: Teacher + ?Sized>(teacher: &T, x: &Tensor, y: &Tensor, bns_weight: f64) -> Result<GdfqLoss> {
    let out = teacher.forward_probe(x)?;
    let ce = cross_entropy(&out.logits, y, 0.0)?;
    let bns = crate::losses::bns_loss(&out.bn)?;
    let loss = (&ce + (&bns * bns_weight)?)?;
    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    Ok(GdfqLoss { ce: scalar(&ce)?, bns: scalar(&bns)?, loss })
}

/// GDFQ's generator optimizer (IntraQ's and FDDA's too): Adam, betas 0.5 / 0.999, eps 1e-8, no
/// weight decay, over every parameter of `generator`.
pub fn generator_optimizer(generator: &CondGenerator) -> Result<Optimizer> {
    let kind = OptimizerKind::Adam { beta1: 0.5, beta2: 0.999, eps: 1e-8 };
    Ok(Optimizer::new(kind, all_params(generator.varmap(), 0.0)?)?)
}

/// GDFQ's generator training: Adam (lr 1e-3, betas 0.5 / 0.999) on `CE + bns_weight L_BNS`
/// over random-label batches.
pub struct GdfqTrainer {
    /// The generator.
    pub generator: CondGenerator,
    opt: Optimizer,
    /// Learning rate.
    pub lr: f64,
    /// Weight of `L_BNS` (IntraQ's calibration: 0.1).
    pub bns_weight: f64,
}

impl std::fmt::Debug for GdfqTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdfqTrainer").field("generator", &self.generator).field("lr", &self.lr).finish_non_exhaustive()
    }
}

impl GdfqTrainer {
    /// Adam with GDFQ's betas over every generator parameter.
    pub fn new(generator: CondGenerator, lr: f64, bns_weight: f64) -> Result<Self> {
        let opt = generator_optimizer(&generator)?;
        Ok(Self { generator, opt, lr, bns_weight })
    }

    /// One step on a fresh batch of `batch` from `rng`: returns the batch's images as generated
    /// before the update (detached), its labels and losses. A non-finite loss is an error and
    /// leaves the generator unchanged.
    pub fn step<T: Teacher + ?Sized>(
        &mut self,
        teacher: &T,
        batch: usize,
        rng: &mut StdRng,
    ) -> Result<(Tensor, Tensor, GdfqLoss)> {
        let device = self.generator.device().clone();
        let (z, y) = self.generator.sample_inputs(batch, rng, &device)?;
        let x = self.generator.forward(&z, &y)?;
        let l = gdfq_loss(teacher, &x, &y, self.bns_weight)?;
        if !(l.ce.is_finite() && l.bns.is_finite()) {
            return Err(SynthError::Config(format!(
                "non-finite generator loss (CE {}, BNS {}) at step {}",
                l.ce,
                l.bns,
                self.opt.steps()
            )));
        }
        let grads = l.loss.backward()?;
        self.opt.step(&grads, self.lr)?;
        Ok((x.detach(), y, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_composed_normalisation_agree_with_gradients() {
        let d = Device::Cpu;
        let x = candle_core::Var::from_tensor(&(Tensor::randn(0.3f32, 2.0, (5, 3, 4, 6), &d).unwrap())).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 3, 4, 6), &d).unwrap();
        let bn = GenBn { eps: 0.8, affine: Affine::None };
        let labels = Tensor::zeros(5, DType::U32, &d).unwrap();
        let a = bn.forward(x.as_tensor(), &labels).unwrap();
        let b = normalise_composed(x.as_tensor(), 0.8).unwrap();
        let diff =
            |p: &Tensor, q: &Tensor| (p - q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff(&a, &b) < 1e-5);
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(ga.get(&x).unwrap(), gb.get(&x).unwrap()) < 1e-4);
    }

    #[test]
    fn upsampling_repeats_pixels_and_sums_their_gradients() {
        let d = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::arange(0f32, 4.0, &d).unwrap().reshape((1, 1, 2, 2)).unwrap())
            .unwrap();
        let y = upsample2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[..8], [0., 0., 1., 1., 0., 0., 1., 1.]);
        let w = Tensor::arange(0f32, 16.0, &d).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        // Block sums of 0..16 laid out 4 x 4: (0+1+4+5), (2+3+6+7), (8+9+12+13), (10+11+14+15).
        assert_eq!(g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [10., 18., 42., 50.]);
    }
}
