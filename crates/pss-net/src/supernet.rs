//! The slimmable supernet: a zoo network built once at its largest widths, a subnet
//! `a = (r, m)` the same network run inside a `compress_nn::slim` scope at the widths of its
//! channel groups on the input resized to `r x r` (bilinear, `align_corners = true`). Structure
//! as data: the subnet is the supernet's config with smaller widths, its weights the leading
//! slices of the supernet's. [`SlimArch`] says, for an architecture, which groups the space's
//! layers are and what a subnet costs: MobileNetV1 / V2 here, and any network of the toolkit's
//! layers with channel groups (a user's own, `examples/own_supernet.rs`).

use crate::error::{Result, config_err};
use crate::flops::{SlimMobileNetV1, SlimMobileNetV2};
use crate::space::{StructureSpace, SubnetConfig, make_divisible};
use candle_core::{DType, Device, Tensor};
use compress_core::rng::SeededRng;
use compress_nn::layers::bilinear_align_corners;
use compress_nn::slim::{out_widths, slimmed};
use compress_nn::structure::Widths;
use compress_nn::zoo::{MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config};
use compress_nn::{Architecture, Network};
use rand_distr::{Distribution, Normal};

/// A slimmable architecture: its space, the largest network, and a subnet's group widths.
pub trait SlimArch: Clone + std::fmt::Debug {
    /// The zoo architecture (or the user's).
    type Net: Architecture + std::fmt::Debug;
    /// The structure space (one base width per multiplier).
    fn space(&self) -> &StructureSpace;
    /// The network at its largest widths.
    fn config(&self) -> Result<<Self::Net as Architecture>::Config>;
    /// The channel groups' widths of a subnet (groups not listed keep their largest width).
    fn widths(&self, cfg: &SubnetConfig) -> Widths;
    /// Input channels.
    fn in_channels(&self) -> usize;
    /// The classifier's variable prefix, re-initialised `N(0, 0.01^2)` with bias 0 as the
    /// official code (`None`: left as built).
    fn classifier(&self) -> Option<&str> {
        None
    }
    /// Analytic MACs of a subnet (`None`: the supernet counts them with a forward pass).
    fn macs(&self, _cfg: &SubnetConfig) -> Option<u64> {
        None
    }
}

impl SlimArch for SlimMobileNetV1 {
    type Net = MobileNetV1;
    fn space(&self) -> &StructureSpace {
        &self.space
    }
    fn config(&self) -> Result<MobileNetV1Config> {
        let b = &self.space.bases;
        let plan: Vec<(usize, usize)> = b[1..].iter().copied().zip(self.strides.iter().copied()).collect();
        Ok(MobileNetV1Config::custom(b[0], &plan, self.classes)?.input(self.in_channels, self.space.resolutions.1))
    }
    /// `stem` = `c_0`, `blocks.i` = `c_(i+1)`.
    fn widths(&self, cfg: &SubnetConfig) -> Widths {
        let c = self.space.channels(cfg);
        let mut w = Widths::new();
        w.insert("stem".into(), c[0]);
        for (i, &ci) in c.iter().enumerate().skip(1) {
            w.insert(format!("blocks.{}", i - 1), ci);
        }
        w
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn classifier(&self) -> Option<&str> {
        Some("fc")
    }
    fn macs(&self, cfg: &SubnetConfig) -> Option<u64> {
        Some(SlimMobileNetV1::macs(self, cfg))
    }
}

/// MobileNetV2's blocks per stage.
const V2_BLOCKS: [usize; 7] = [1, 2, 3, 4, 3, 3, 1];

impl SlimArch for SlimMobileNetV2 {
    type Net = MobileNetV2;
    fn space(&self) -> &StructureSpace {
        &self.space
    }
    fn config(&self) -> Result<MobileNetV2Config> {
        Ok(MobileNetV2Config::new(1.0, self.classes)?.input(3, self.space.resolutions.1))
    }
    /// `stem` = `c_0`, `stage k` = `c_(k+1)`, each expanding block's hidden width `md(6 x
    /// its input width)`, the head at 1280 (`m_9` names it for the latency table only).
    fn widths(&self, cfg: &SubnetConfig) -> Widths {
        let c = self.space.channels(cfg);
        let mut w = Widths::new();
        w.insert("stem".into(), c[0]);
        let (mut index, mut c_in) = (1, c[0]);
        for (k, &n) in V2_BLOCKS.iter().enumerate() {
            w.insert(format!("stage{k}"), c[k + 1]);
            for _ in 0..n {
                if k > 0 {
                    w.insert(format!("features.{index}.expand"), make_divisible((6 * c_in) as f64, self.space.divisor));
                }
                c_in = c[k + 1];
                index += 1;
            }
        }
        w.insert("head".into(), 1280);
        w
    }
    fn in_channels(&self) -> usize {
        3
    }
    fn classifier(&self) -> Option<&str> {
        Some("classifier.1")
    }
    fn macs(&self, cfg: &SubnetConfig) -> Option<u64> {
        Some(SlimMobileNetV2::macs(self, cfg))
    }
}

/// A slimmable supernet of `A`.
#[derive(Debug)]
pub struct Supernet<A: SlimArch = SlimMobileNetV1> {
    /// The network at its largest widths (its variables are the shared weights).
    pub net: Network<A::Net>,
    /// Its space and cost model.
    pub arch: A,
}

impl<A: SlimArch> Supernet<A> {
    /// The supernet of `arch` (the architecture's initialisation from `seed`; the classifier
    /// `N(0, 0.01^2)` with bias 0 where the architecture names it).
    pub fn new(arch: A, seed: u64, device: &Device) -> Result<Self> {
        let net = Network::<A::Net>::new(arch.config()?, seed, device)?;
        if let Some(fc) = arch.classifier() {
            let mut rng = SeededRng::new(seed).stream("pss-net/fc-init", 0);
            let normal = Normal::new(0.0f32, 0.01).map_err(|e| config_err(e.to_string()))?;
            let data = net.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
            let w = data.get(&format!("{fc}.weight")).ok_or_else(|| config_err(format!("no {fc}.weight")))?;
            let v: Vec<f32> = (0..w.elem_count()).map(|_| normal.sample(&mut rng)).collect();
            w.set(&Tensor::from_vec(v, w.shape(), device)?.to_dtype(w.dtype())?)?;
            if let Some(b) = data.get(&format!("{fc}.bias")) {
                b.set(&b.zeros_like()?)?;
            }
        }
        Ok(Self { net, arch })
    }

    /// The channel groups' widths of `cfg`.
    pub fn widths(&self, cfg: &SubnetConfig) -> Widths {
        self.arch.widths(cfg)
    }

    /// The subnet `cfg` on `x` (full-resolution images, resized to `r` inside).
    pub fn forward(&self, x: &Tensor, cfg: &SubnetConfig, train: bool) -> Result<Tensor> {
        let x = bilinear_align_corners(x, cfg.resolution)?;
        let widths = out_widths(&self.net.config, &self.widths(cfg));
        Ok(slimmed(widths, || self.net.forward_t(&x, train))?)
    }

    /// Its MACs: the architecture's formula, else a counting forward pass of one sample.
    pub fn macs(&self, cfg: &SubnetConfig) -> u64 {
        if let Some(m) = self.arch.macs(cfg) {
            return m;
        }
        self.counted_macs(cfg).unwrap_or(u64::MAX)
    }

    /// The MACs the layers report in a forward pass of one `r x r` sample.
    pub fn counted_macs(&self, cfg: &SubnetConfig) -> Result<u64> {
        let r = cfg.resolution;
        let x = Tensor::zeros((1, self.arch.in_channels(), r, r), DType::F32, self.device())?;
        let widths = out_widths(&self.net.config, &self.widths(cfg));
        let (out, c) = compress_nn::count::count(|| slimmed(widths, || self.net.forward_t(&x, false)));
        out?;
        Ok(c.macs)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.net.device()
    }
}
