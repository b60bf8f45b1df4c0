//! BNS centres (spec 2.1): one calibration image per class through the frozen teacher, alone
//! (batch 1), and at every BatchNorm input (forward-execution order) the per-channel mean and
//! biased variance over `H x W`; the classes whose image the teacher classifies correctly form
//! `K`, the set the class sampler keeps to after the warm-up. [`BnsCentres::cached`] keeps them
//! in a safetensors file named by the SHA-256 of the teacher's weights and the calibration set,
//! so a teacher computes its centres once and a changed teacher or image never reuses them.

use crate::error::{Result, config_err};
use candle_core::{D, DType, Device, Tensor};
use compress_synth::Teacher;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

    /// The centres of `calib` through `teacher` (whose variables are `weights`), read from
    /// `dir/centres-<key>.safetensors` when a previous call wrote them, else computed and written
    /// there atomically; the key is [`centres_key`]. Returns them and whether they were read.
    pub fn cached<T: Teacher + ?Sized>(
        teacher: &T,
        weights: &HashMap<String, Tensor>,
        calib: &[(Tensor, usize)],
        classes: usize,
        dir: &Path,
    ) -> Result<(Self, bool)> {
        let path = centres_file(dir, &centres_key(weights, calib, classes)?);
        if path.is_file() {
            let device = calib.first().map_or(Device::Cpu, |(x, _)| x.device().clone());
            return Ok((Self::read(&path, classes, &device)?, true));
        }
        let c = Self::compute(teacher, calib, classes)?;
        std::fs::create_dir_all(dir).map_err(|e| config_err(format!("{}: {e}", dir.display())))?;
        compress_nn::weights::save_atomic(&c.tensors()?, &path)?;
        Ok((c, false))
    }

    /// The centres as named tensors: `mean.{k}.{l}`, `var.{k}.{l}`, `correct` (`[K]`, 0 / 1).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut t = HashMap::new();
        for (k, (m, v)) in self.mean.iter().zip(&self.var).enumerate() {
            for (l, (a, b)) in m.iter().zip(v).enumerate() {
                t.insert(format!("mean.{k}.{l}"), a.to_dtype(DType::F32)?);
                t.insert(format!("var.{k}.{l}"), b.to_dtype(DType::F32)?);
            }
        }
        let correct: Vec<f32> = self.correct.iter().map(|&c| f32::from(u8::from(c))).collect();
        let device = self.mean.first().and_then(|m| m.first()).map_or(Device::Cpu, |x| x.device().clone());
        t.insert("correct".into(), Tensor::from_vec(correct, self.correct.len(), &device)?);
        Ok(t)
    }

    /// Centres written by [`BnsCentres::tensors`], checked: `classes` classes, the same layers
    /// and widths for every class, variances non-negative.
    pub fn read(path: &Path, classes: usize, device: &Device) -> Result<Self> {
        let bad = |why: String| config_err(format!("centres file {}: {why}", path.display()));
        let t = compress_nn::weights::read(path, device).map_err(|e| bad(e.to_string()))?;
        let correct = t.get("correct").ok_or_else(|| bad("no `correct`".into()))?.to_vec1::<f32>()?;
        if correct.len() != classes {
            return Err(bad(format!("{} classes, expected {classes}", correct.len())));
        }
        let layers = (0..).take_while(|l| t.contains_key(&format!("mean.0.{l}"))).count();
        if layers == 0 || t.len() != 1 + 2 * classes * layers {
            return Err(bad(format!("{} tensors for {classes} classes of {layers} layers", t.len())));
        }
        let (mut mean, mut var) = (Vec::new(), Vec::new());
        for k in 0..classes {
            let (mut m, mut v) = (Vec::new(), Vec::new());
            for l in 0..layers {
                let get = |n: String| t.get(&n).cloned().ok_or_else(|| bad(format!("no `{n}`")));
                let (a, b) = (get(format!("mean.{k}.{l}"))?, get(format!("var.{k}.{l}"))?);
                let width = mean.first().map_or(a.dim(0)?, |m0: &Vec<Tensor>| m0[l].dims()[0]);
                if a.dims() != [width] || b.dims() != [width] {
                    return Err(bad(format!(
                        "layer {l} of class {k} is {:?} / {:?}, not [{width}]",
                        a.dims(),
                        b.dims()
                    )));
                }
                if b.min(0)?.to_scalar::<f32>()? < 0.0 || a.sum_all()?.to_scalar::<f32>()?.is_nan() {
                    return Err(bad(format!("layer {l} of class {k} has a negative variance or a NaN mean")));
                }
                m.push(a);
                v.push(b);
            }
            mean.push(m);
            var.push(v);
        }
        Ok(Self { mean, var, correct: correct.into_iter().map(|c| c != 0.0).collect() })
    }
}

/// The cache key: SHA-256 over the teacher's variables (sorted by name: name, shape, f32 values)
/// and the calibration images (class, shape, f32 values, in order) and the class count.
pub fn centres_key(weights: &HashMap<String, Tensor>, calib: &[(Tensor, usize)], classes: usize) -> Result<String> {
    let mut bytes = format!("fdda-centres v1 classes {classes}\n").into_bytes();
    let mut push = |label: &str, t: &Tensor| -> Result<()> {
        bytes.extend(format!("{label} {:?}\n", t.dims()).into_bytes());
        for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
            bytes.extend(v.to_le_bytes());
        }
        Ok(())
    };
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for n in names {
        push(n, &weights[n])?;
    }
    for (x, class) in calib {
        push(&format!("image of class {class}"), x)?;
    }
    Ok(compress_data::checksum::sha256_bytes(&bytes))
}

/// Where [`BnsCentres::cached`] keeps the centres of `key` under `dir`.
pub fn centres_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("centres-{key}.safetensors"))
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

    /// The cache: the first call computes and writes, the second reads the same centres; another
    /// teacher or another image gets another file; a damaged file is a clear error naming it.
    #[test]
    fn centres_are_cached_by_teacher_and_images() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VggConfig::new(&[4, 0, 6, 0], 3).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg.clone(), 0, &Device::Cpu).unwrap();
        let img = |v: f32| {
            (Tensor::arange(0f32, 64.0, &Device::Cpu).unwrap().reshape((1, 8, 8)).unwrap() * f64::from(v)).unwrap()
        };
        let calib = vec![(img(0.5), 2), (img(-1.0), 0), (img(2.0), 1)];
        let w = net.tensors().unwrap();
        let (a, read) = BnsCentres::cached(&net, &w, &calib, 3, dir.path()).unwrap();
        assert!(!read);
        let (b, read) = BnsCentres::cached(&net, &w, &calib, 3, dir.path()).unwrap();
        assert!(read);
        assert_eq!(a.correct, b.correct);
        for k in 0..3 {
            for l in 0..2 {
                let d = (&a.var[k][l] - &b.var[k][l]).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
        let key = centres_key(&w, &calib, 3).unwrap();
        let other = Network::<Vgg>::new(cfg, 1, &Device::Cpu).unwrap().tensors().unwrap();
        assert_ne!(key, centres_key(&other, &calib, 3).unwrap(), "another teacher");
        let mut moved = calib.clone();
        moved[0].0 = img(0.25);
        assert_ne!(key, centres_key(&w, &moved, 3).unwrap(), "another image");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Damaged: truncated, then a file for another class count.
        let path = centres_file(dir.path(), &key);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = BnsCentres::cached(&net, &w, &calib, 3, dir.path()).unwrap_err().to_string();
        assert!(e.contains("centres file") && e.contains(&key), "{e}");
        std::fs::write(&path, &bytes).unwrap();
        assert!(BnsCentres::read(&path, 4, &Device::Cpu).unwrap_err().to_string().contains("3 classes, expected 4"));
    }
}
