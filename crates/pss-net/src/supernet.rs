//! The slimmable supernet on the zoo's MobileNetV1: the network is built once at its largest
//! widths, and a subnet `a = (r, m)` is the same network run inside a `compress_nn::slim`
//! scope at the widths `md(base_i m_i)` of its channel groups (`stem`, `blocks.i`), on the input
//! resized to `r x r` (bilinear, `align_corners = true`). Structure as data: the subnet is the
//! supernet's config with smaller widths, its weights the leading slices of the supernet's.

use crate::error::Result;
use crate::flops::SlimMobileNetV1;
use crate::space::SubnetConfig;
use candle_core::{Device, Tensor};
use compress_core::rng::SeededRng;
use compress_nn::Network;
use compress_nn::layers::bilinear_align_corners;
use compress_nn::slim::{out_widths, slimmed};
use compress_nn::structure::Widths;
use compress_nn::zoo::{MobileNetV1, MobileNetV1Config};
use rand_distr::{Distribution, Normal};

/// A slimmable MobileNetV1 supernet.
#[derive(Debug)]
pub struct Supernet {
    /// The network at its largest widths (its variables are the shared weights).
    pub net: Network<MobileNetV1>,
    /// Its space and cost model.
    pub arch: SlimMobileNetV1,
}

impl Supernet {
    /// The supernet of `arch` (weights from `seed`: convs Kaiming-normal fan-out as the zoo's
    /// MobileNet, BatchNorm 1 / 0, the classifier `N(0, 0.01^2)` with bias 0 as the official
    /// code).
    pub fn new(arch: SlimMobileNetV1, seed: u64, device: &Device) -> Result<Self> {
        let b = &arch.space.bases;
        let plan: Vec<(usize, usize)> = b[1..].iter().copied().zip(arch.strides.iter().copied()).collect();
        let cfg =
            MobileNetV1Config::custom(b[0], &plan, arch.classes)?.input(arch.in_channels, arch.space.resolutions.1);
        let net = Network::<MobileNetV1>::new(cfg, seed, device)?;
        let mut rng = SeededRng::new(seed).stream("pss-net/fc-init", 0);
        let normal = Normal::new(0.0f32, 0.01).map_err(|e| crate::error::config_err(e.to_string()))?;
        for (name, var) in
            net.varmap.data().lock().map_err(|_| crate::error::config_err("VarMap lock poisoned"))?.iter()
        {
            if name == "fc.weight" {
                let v: Vec<f32> = (0..var.elem_count()).map(|_| normal.sample(&mut rng)).collect();
                var.set(&Tensor::from_vec(v, var.shape(), device)?)?;
            } else if name == "fc.bias" {
                var.set(&var.zeros_like()?)?;
            }
        }
        Ok(Self { net, arch })
    }

    /// The channel groups' widths of `cfg`: `stem` = `c_0`, `blocks.i` = `c_(i+1)`.
    pub fn widths(&self, cfg: &SubnetConfig) -> Widths {
        let c = self.arch.space.channels(cfg);
        let mut w = Widths::new();
        w.insert("stem".into(), c[0]);
        for (i, &ci) in c.iter().enumerate().skip(1) {
            w.insert(format!("blocks.{}", i - 1), ci);
        }
        w
    }

    /// The subnet `cfg` on `x` (full-resolution images, resized to `r` inside).
    pub fn forward(&self, x: &Tensor, cfg: &SubnetConfig, train: bool) -> Result<Tensor> {
        let x = bilinear_align_corners(x, cfg.resolution)?;
        let widths = out_widths(&self.net.config, &self.widths(cfg));
        Ok(slimmed(widths, || self.net.forward_t(&x, train))?)
    }

    /// Its cost (MACs).
    pub fn macs(&self, cfg: &SubnetConfig) -> u64 {
        self.arch.macs(cfg)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.net.device()
    }
}
