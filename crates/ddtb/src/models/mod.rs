//! The quantized SR networks of spec section 4, built from the zoo's configs with the zoo's
//! variable names (so a full-precision checkpoint loads into the student as it is), with an
//! [`ActQuant`] at each of the paper's sites and a [`QuantConv2d`] for each body conv. Built with
//! [`QuantScheme::full_precision`] they compute exactly the zoo's network (tested), which is how
//! the teacher is built.

pub mod edsr;
pub mod rdn;
pub mod srresnet;

use crate::act_quant::Phase;
use crate::error::Result;
use crate::scheme::{ActQuant, QuantConv2d, QuantScheme};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use compress_nn::zoo::{EdsrConfig, RdnConfig, SrResNetConfig, SrSetting};

/// The output of a forward pass: the SR image and the feature `F` fed to the tail, which the
/// attention-transfer loss compares (spec 2.6).
#[derive(Debug, Clone)]
pub struct SrOutput {
    /// Super-resolved image.
    pub sr: Tensor,
    /// EDSR: body output + head skip; RDN: GFF output + first shallow feature; SRResNet:
    /// `bn_mid(conv_mid)` + long skip.
    pub feature: Tensor,
}

/// A quantized SR network.
pub trait QuantSr: Send + Sync + std::fmt::Debug {
    /// The forward pass.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<SrOutput>;
    /// Activation quantizers in forward order.
    fn act_quants(&self) -> Vec<&ActQuant>;
    /// The body convs (quantized when the scheme quantizes weights).
    fn body_convs(&self) -> Vec<&QuantConv2d>;

    /// Moves every quantizer to `phase` (dynamic sites: `phase`; static ones: `Static` for any
    /// phase past calibration).
    fn set_phase(&self, phase: Phase) -> Result<()> {
        for q in self.act_quants() {
            let p = match (phase, q.ddtb().is_some_and(|d| d.is_dynamic())) {
                (Phase::Calibrate, _) => Phase::Calibrate,
                (p, true) => p,
                (_, false) => Phase::Static,
            };
            q.set_phase(p)?;
        }
        for c in self.body_convs() {
            c.set_phase(phase);
        }
        Ok(())
    }
}

/// A super-resolution network DDTB can quantize: code that builds it for a [`QuantScheme`]
/// (an [`ActQuant`] at each activation site, a [`QuantConv2d`] for each body conv; with
/// [`QuantScheme::full_precision`] it is the plain network, which is how the teacher is built)
/// and its pixel setting. The paper's networks are the [`SrArch`] variants; a user's own network
/// implements this trait (see `crates/ddtb/examples/tiny_sr.rs`).
pub trait SrNet: std::fmt::Debug {
    /// Builds the network under `vb`: the same variable names at every scheme, so full-precision
    /// weights load into the quantized student.
    fn build(&self, scheme: &QuantScheme, vb: VarBuilder) -> Result<Box<dyn QuantSr>>;
    /// Scale, colours and pixel range (`rgb_range`: the network sees pixels in `[0, rgb_range]`).
    fn setting(&self) -> SrSetting;
}

impl SrNet for SrArch {
    fn build(&self, scheme: &QuantScheme, vb: VarBuilder) -> Result<Box<dyn QuantSr>> {
        SrArch::build(self, scheme, vb)
    }
    fn setting(&self) -> SrSetting {
        SrArch::setting(self)
    }
}

/// The architectures DDTB quantizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SrArch {
    /// EDSR (baseline: 16 x 64).
    Edsr(EdsrConfig),
    /// RDN (config B).
    Rdn(RdnConfig),
    /// SRResNet with BatchNorm.
    SrResNet(SrResNetConfig),
}

impl SrArch {
    /// `edsr`, `rdn` or `srresnet`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Edsr(_) => "edsr",
            Self::Rdn(_) => "rdn",
            Self::SrResNet(_) => "srresnet",
        }
    }

    /// Scale, colours, pixel range.
    pub fn setting(&self) -> SrSetting {
        match self {
            Self::Edsr(c) => c.setting,
            Self::Rdn(c) => c.setting,
            Self::SrResNet(c) => c.setting,
        }
    }

    /// Builds the network under `vb` with `scheme`.
    pub fn build(&self, scheme: &QuantScheme, vb: VarBuilder) -> Result<Box<dyn QuantSr>> {
        scheme.validate()?;
        Ok(match self {
            Self::Edsr(c) => Box::new(edsr::QuantEdsr::new(c, scheme, vb)?),
            Self::Rdn(c) => Box::new(rdn::QuantRdn::new(c, scheme, vb)?),
            Self::SrResNet(c) => Box::new(srresnet::QuantSrResNet::new(c, scheme, vb)?),
        })
    }

    /// The zoo network with the same variables (for checks and full-precision training).
    pub fn zoo_forward(&self, vb: VarBuilder, x: &Tensor, train: bool) -> Result<Tensor> {
        use candle_core::ModuleT;
        use compress_nn::Architecture;
        Ok(match self {
            Self::Edsr(c) => compress_nn::zoo::Edsr::build(c, vb)?.forward_t(x, train)?,
            Self::Rdn(c) => compress_nn::zoo::Rdn::build(c, vb)?.forward_t(x, train)?,
            Self::SrResNet(c) => compress_nn::zoo::SrResNet::build(c, vb)?.forward_t(x, train)?,
        })
    }
}

/// The upsampler stages, `(conv, factor)`, applied in order (pixel shuffle after each conv).
pub(crate) fn upsample(
    up: &[(compress_nn::layers::Conv2d, usize)],
    mut y: Tensor,
    after: impl Fn(usize, Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    use candle_core::Module;
    for (k, (conv, r)) in up.iter().enumerate() {
        y = after(k, compress_nn::layers::pixel_shuffle(&conv.forward(&y)?, *r)?)?;
    }
    Ok(y)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Builds `arch` with `scheme` on a seeded map, checks the full-precision build against the
    /// zoo, and returns the model and map.
    pub fn build(arch: &SrArch, scheme: &QuantScheme, seed: u64) -> (Box<dyn QuantSr>, VarMap) {
        let map = VarMap::new();
        let vb = compress_nn::init::seeded_builder(&map, seed, DType::F32, &Device::Cpu);
        let m = arch.build(scheme, vb).unwrap();
        (m, map)
    }

    pub fn input(arch: &SrArch, n: usize, side: usize) -> Tensor {
        let c = arch.setting().n_colors;
        let v: Vec<f32> = (0..n * c * side * side).map(|i| ((i * 7919 % 1000) as f32) / 1000.0).collect();
        Tensor::from_vec(v, (n, c, side, side), &Device::Cpu).unwrap()
    }

    /// Full-precision build == zoo network on the same variables.
    pub fn matches_zoo(arch: &SrArch) {
        let (m, map) = build(arch, &QuantScheme::full_precision(), 3);
        let x = input(arch, 2, 9);
        let ours = m.forward_t(&x, false).unwrap().sr;
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let zoo = arch.zoo_forward(vb, &x, false).unwrap();
        let d = (ours - zoo).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{}: full-precision build differs from the zoo", arch.name());
    }

    #[test]
    fn full_precision_builds_are_the_zoo_networks() {
        matches_zoo(&SrArch::Edsr(EdsrConfig::new(2, 2, 8, 1.0).unwrap()));
        matches_zoo(&SrArch::Edsr(EdsrConfig::new(4, 2, 8, 0.1).unwrap()));
        matches_zoo(&SrArch::Rdn(RdnConfig::new(3, 2, 3, 4, 8).unwrap()));
        matches_zoo(&SrArch::SrResNet(SrResNetConfig::new(2, 2, 8).unwrap()));
    }

    #[test]
    fn edsr_mini_has_twelve_sites_and_eight_quantized_convs() {
        use crate::act_quant::BoundInit;
        use crate::scheme::ActScheme;
        let arch = SrArch::Edsr(EdsrConfig::new(2, 4, 32, 1.0).unwrap());
        let scheme = QuantScheme {
            bits: 2,
            act: ActScheme::Ddtb(BoundInit::PercentileIf2Bit { percentile: 99.0 }),
            weight: Some(compress_core::quant::WeightQuantizer::Percentile { lo: 1.0, hi: 99.0 }),
            weights_in_calibration: false,
        };
        let (m, _) = build(&arch, &scheme, 0);
        assert_eq!(m.act_quants().len(), 12);
        assert_eq!(m.body_convs().iter().filter(|c| c.is_quantized()).count(), 8);
        let names: Vec<&str> = m.act_quants().iter().map(|q| q.name.as_str()).collect();
        assert_eq!(&names[..3], ["body.0.quant_skip", "body.0.quant_act", "body.0.quant_out"]);
        // Calibration is full precision: the quantized build computes the zoo network then.
        let x = input(&arch, 1, 6);
        m.set_phase(Phase::Calibrate).unwrap();
        let (fp, _) = build(&arch, &QuantScheme::full_precision(), 0);
        let d = (m.forward_t(&x, false).unwrap().sr - fp.forward_t(&x, false).unwrap().sr)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
        // Quantized, it is not.
        m.set_phase(Phase::Static).unwrap();
        let q = m.forward_t(&x, false).unwrap().sr;
        let fp_out = fp.forward_t(&x, false).unwrap().sr;
        assert!((q - fp_out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}
