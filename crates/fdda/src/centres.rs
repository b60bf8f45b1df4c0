//! BNS centres (spec 2.1): one calibration image per class through the frozen teacher, alone
//! (batch 1), and at every BatchNorm input (forward-execution order) the per-channel mean and
//! biased variance over `H x W`; the classes whose image the teacher classifies correctly form
//! `K`, the set the class sampler keeps to after the warm-up.

use crate::error::{Result, config_err};
use candle_core::{D, Tensor};
use compress_synth::Teacher;

/// One class's per-layer means and variances, and whether its image is classified correctly.
type ClassStats = (Vec<Tensor>, Vec<Tensor>, bool);

/// Per-class, per-layer BatchNorm-input statistics of the calibration images.
#[derive(Debug, Clone)]
pub struct BnsCentres {
    /// `mean[k][l]`: `[C_l]` channel means of class `k`'s image at BN layer `l`.
    pub mean: Vec<Vec<Tensor>>,
    /// `var[k][l]`: `[C_l]` biased channel variances.
    pub var: Vec<Vec<Tensor>>,
    /// `correct[k]`: whether the teacher classifies class `k`'s image as `k` (`k in K`).
    pub correct: Vec<bool>,
}

impl BnsCentres {
    /// The centres of `calib`, one `([C, H, W] image, class)` per class `0..classes`, in any order.
    pub fn compute<T: Teacher + ?Sized>(teacher: &T, calib: &[(Tensor, usize)], classes: usize) -> Result<Self> {
        let mut slots: Vec<Option<ClassStats>> = vec![None; classes];
        for (image, class) in calib {
            let slot = slots
                .get_mut(*class)
                .ok_or_else(|| config_err(format!("calibration class {class} of {classes} classes")))?;
            if slot.is_some() {
                return Err(config_err(format!("two calibration images of class {class}")));
            }
            let x = if image.rank() == 3 { image.unsqueeze(0)? } else { image.clone() };
            if x.rank() != 4 || x.dim(0)? != 1 {
                return Err(config_err(format!("a calibration image is {:?}, not [C, H, W]", image.dims())));
            }
            let out = teacher.forward_probe(&x.detach())?;
            let predicted = out.logits.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
            let correct = predicted.first().is_some_and(|&p| p as usize == *class);
            let means = out.bn.iter().map(|s| s.mean.detach()).collect();
            let vars = out.bn.iter().map(|s| s.var.detach()).collect();
            *slot = Some((means, vars, correct));
        }
        let (mut mean, mut var, mut correct) = (Vec::new(), Vec::new(), Vec::new());
        for (k, s) in slots.into_iter().enumerate() {
            let (m, v, c) = s.ok_or_else(|| config_err(format!("no calibration image of class {k}")))?;
            mean.push(m);
            var.push(v);
            correct.push(c);
        }
        Ok(Self { mean, var, correct })
    }

    /// Classes `K`.
    pub fn classes(&self) -> usize {
        self.mean.len()
    }

    /// BatchNorm layers `L`.
    pub fn layers(&self) -> usize {
        self.mean.first().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use compress_nn::Network;
    use compress_nn::zoo::{Vgg, VggConfig};

    /// `fc(mean(bn(conv1x1(x))))`: a BN input that is constant per channel for a constant image.
    #[derive(Debug)]
    struct Pointwise {
        conv: compress_nn::layers::ConvBn,
        fc: compress_nn::layers::Linear,
    }

    impl compress_nn::Architecture for Pointwise {
        type Config = compress_nn::stack::StackConfig;
        fn build(cfg: &Self::Config, vb: candle_nn::VarBuilder) -> candle_core::Result<Self> {
            use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear};
            let c = cfg.width("c")?;
            let spec = ConvSpec::same(1).with_bias();
            let conv = ConvBn::new(1, c, spec, Activation::Relu, vb.pp("c"), vb.pp("bn"))?;
            Ok(Self { conv, fc: Linear::new(c, 3, true, vb.pp("fc"))? })
        }
    }

    impl candle_core::ModuleT for Pointwise {
        fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
            let h = compress_nn::layers::global_avg_pool(&self.conv.forward_t(x, train)?)?;
            candle_core::Module::forward(&self.fc, &h)
        }
    }

    /// Section 8: K entries x L layers, channel counts equal the BN widths; a constant-valued
    /// channel has its value as mean and variance 0.
    #[test]
    fn centres_have_every_class_and_layer() {
        let cfg = VggConfig::new(&[4, 0, 6, 0], 3).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg, 0, &Device::Cpu).unwrap();
        let img = |v: f32| (Tensor::ones((1, 8, 8), DType::F32, &Device::Cpu).unwrap() * f64::from(v)).unwrap();
        let calib = vec![(img(0.5), 2), (img(-1.0), 0), (img(2.0), 1)];
        let c = BnsCentres::compute(&net, &calib, 3).unwrap();
        assert_eq!((c.classes(), c.layers(), c.correct.len()), (3, 2, 3));
        for k in 0..3 {
            assert_eq!((c.mean[k][0].dims(), c.var[k][1].dims()), (&[4][..], &[6][..]));
        }
        // A 1 x 1 conv of a constant image is constant per channel: mean w v + b, variance 0.
        let one = Network::<Pointwise>::new(
            compress_nn::stack::Stack::new([1, 4, 4])
                .conv("c", 2)
                .bias()
                .norm("bn")
                .output("fc", 3)
                .bias()
                .build()
                .unwrap(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        let c1 = BnsCentres::compute(
            &one,
            &[
                (img(0.5).narrow(1, 0, 4).unwrap().narrow(2, 0, 4).unwrap(), 0),
                (img(1.0).narrow(1, 0, 4).unwrap().narrow(2, 0, 4).unwrap(), 1),
                (img(2.0).narrow(1, 0, 4).unwrap().narrow(2, 0, 4).unwrap(), 2),
            ],
            3,
        )
        .unwrap();
        let t = one.tensors().unwrap();
        let (w, b) =
            (t["c.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap(), t["c.bias"].to_vec1::<f32>().unwrap());
        let m = c1.mean[1][0].to_vec1::<f32>().unwrap();
        assert!((0..2).all(|c| (m[c] - (w[c] * 1.0 + b[c])).abs() < 1e-6), "{m:?}");
        assert!(c1.var[2][0].to_vec1::<f32>().unwrap().iter().all(|v| v.abs() < 1e-10));
        assert!(BnsCentres::compute(&net, &calib[..2], 3).is_err(), "class 1 missing");
        let twice = vec![(img(0.5), 0), (img(1.0), 0), (img(2.0), 1)];
        assert!(BnsCentres::compute(&net, &twice, 3).is_err());
    }
}
