//! Class-wise gating (spec 2.1). A mask `M` (`K x C`, initialised to ones) gates the `C` channels
//! of an activation `a` (`[N, C, H, W]` or `[N, C]`) by sample: `G = D M`, `a'[n, c] = a[n, c]
//! G[n, c]`, where `D` (`N x K`) holds `D[n, k] ~ U[0, 1)` and `D[n, y_n] = 1` (the official
//! code's "Gaussian", which draws uniformly), or `D = onehot(y)` in the unused deterministic
//! variant. `D` is a constant, so autograd of the product is the official hand-written backward:
//! `da = da' G`, `dG[n, c] = sum_hw da' a`, `dM = D^T dG`.

use crate::error::{Result, config_err};
use candle_core::{DType, Tensor, Var};
use rand::Rng;

/// How the non-target classes weigh in a sample's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GateMode {
    /// `D[n, k] ~ U[0, 1)` for `k != y_n` (the official code).
    RandomOthers,
    /// `D = onehot(y)`: `G = M[y]`.
    OneHot,
}

/// `D` (`labels.len() x classes`, row-major): 1 at each sample's class, uniform `[0, 1)` draws
/// (in row-major order, skipping nothing) or zeros elsewhere.
pub fn draw_d(labels: &[u32], classes: usize, mode: GateMode, rng: &mut impl Rng) -> Result<Vec<f32>> {
    let mut d = vec![0f32; labels.len() * classes];
    for (n, &y) in labels.iter().enumerate() {
        let y = y as usize;
        if y >= classes {
            return Err(config_err(format!("label {y} of sample {n} is not one of the mask's {classes} classes")));
        }
        let row = &mut d[n * classes..(n + 1) * classes];
        if mode == GateMode::RandomOthers {
            row.iter_mut().for_each(|v| *v = rng.random::<f32>());
        }
        row[y] = 1.0;
    }
    Ok(d)
}

/// `a'[n, c, ...] = a[n, c, ...] G[n, c]` for `G = D M` (`d`: `N x K`, `m`: `K x C`).
pub fn apply_gate(a: &Tensor, d: &Tensor, m: &Tensor) -> Result<Tensor> {
    let g = d.matmul(&m.to_dtype(d.dtype())?)?.to_dtype(a.dtype())?;
    let (n, c) = g.dims2()?;
    if a.dim(0)? != n || a.dim(1)? != c {
        return Err(config_err(format!("a gate of {n} x {c} for an activation of {:?}", a.dims())));
    }
    let mut shape = vec![n, c];
    shape.resize(a.rank(), 1);
    Ok(a.broadcast_mul(&g.reshape(shape)?)?)
}

/// A class-wise mask on one layer's channels.
#[derive(Debug, Clone)]
pub struct ClassWiseMask {
    /// `M`, `K x C`.
    pub m: Var,
    /// How `D` is drawn.
    pub mode: GateMode,
}

impl ClassWiseMask {
    /// `M = 1` (`classes x channels`, f32) on `device`.
    pub fn ones(classes: usize, channels: usize, mode: GateMode, device: &candle_core::Device) -> Result<Self> {
        if classes == 0 || channels == 0 {
            return Err(config_err(format!("a mask needs classes and channels, not {classes} x {channels}")));
        }
        Ok(Self { m: Var::ones((classes, channels), DType::F32, device)?, mode })
    }

    /// Classes `K`.
    pub fn classes(&self) -> usize {
        self.m.dim(0).unwrap_or(0)
    }

    /// `x` gated for samples of class `labels`, `D` drawn from `rng`.
    pub fn gate(&self, x: &Tensor, labels: &[u32], rng: &mut impl Rng) -> Result<Tensor> {
        let k = self.classes();
        let d = Tensor::from_vec(draw_d(labels, k, self.mode, rng)?, (labels.len(), k), x.device())?;
        apply_gate(x, &d, self.m.as_tensor())
    }

    /// The global vote's score of every channel: `|sum_k M[k, c]|` (spec 2.5).
    pub fn votes(&self) -> Result<Vec<f32>> {
        votes(self.m.as_tensor())
    }
}

/// `|sum_k M[k, c]|` per channel.
pub fn votes(m: &Tensor) -> Result<Vec<f32>> {
    Ok(class_sum(m)?.into_iter().map(f32::abs).collect())
}

/// The BatchNorm fold factor of every channel: `t_c = (sum_k M[k, c]) / 2`, signed (spec 2.6;
/// the expected training gate is `M[y] + 1/2 sum_{k != y} M[k]`).
pub fn fold_scale(m: &Tensor) -> Result<Vec<f32>> {
    Ok(class_sum(m)?.into_iter().map(|s| s / 2.0).collect())
}

fn class_sum(m: &Tensor) -> Result<Vec<f32>> {
    Ok(m.to_dtype(DType::F32)?.sum(0)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use compress_core::rng::SeededRng;

    fn t2(v: &[[f32; 2]]) -> Tensor {
        Tensor::from_vec(v.iter().flatten().copied().collect::<Vec<_>>(), (v.len(), 2), &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &[[f32; 2]]) {
        let a = a.to_vec2::<f32>().unwrap();
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// Section 8's worked gate: forward, and dx / dG / dM by autograd.
    #[test]
    fn worked_gate_forward_and_backward() {
        let m = Var::from_tensor(&Tensor::new(&[[1f32, 0.5], [0.2, 1.0], [0.0, 2.0]], &Device::Cpu).unwrap()).unwrap();
        let d = Tensor::new(&[[1f32, 0.5, 0.25], [0.2, 0.4, 1.0]], &Device::Cpu).unwrap();
        let x = Var::from_tensor(&t2(&[[2.0, -1.0], [3.0, 4.0]])).unwrap();
        let g = d.matmul(m.as_tensor()).unwrap();
        close(&g, &[[1.1, 1.5], [0.28, 2.5]]);
        let out = apply_gate(x.as_tensor(), &d, m.as_tensor()).unwrap();
        close(&out, &[[2.2, -1.5], [0.84, 10.0]]);
        // With 1 x 1 spatial extent as in the spec.
        let x4 = x.as_tensor().reshape((2, 2, 1, 1)).unwrap();
        let out4 = apply_gate(&x4, &d, m.as_tensor()).unwrap().reshape((2, 2)).unwrap();
        close(&out4, &[[2.2, -1.5], [0.84, 10.0]]);
        let up = t2(&[[1.0, 1.0], [0.5, -1.0]]);
        let grads = (out * &up).unwrap().sum_all().unwrap().backward().unwrap();
        close(grads.get(x.as_tensor()).unwrap(), &[[1.1, 1.5], [0.14, -2.5]]);
        let dm = grads.get(m.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let want = [[2.3f32, -1.8], [1.6, -2.1], [2.0, -4.25]];
        for (a, b) in dm.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{dm:?}");
        }
        // dG = da' * a summed over space, and dM = D^T dG.
        let dg = (&up * x.as_tensor()).unwrap();
        close(&dg, &[[2.0, -1.0], [1.5, -4.0]]);
        let dm2 = d.t().unwrap().matmul(&dg).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(dm.len(), dm2.len());
        for (a, b) in dm.iter().flatten().zip(dm2.iter().flatten()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// `D[n, y_n] == 1` exactly, other entries in `[0, 1)` and not all equal; OneHot gives `M[y]`.
    #[test]
    fn d_rows_and_onehot() {
        let labels = [3u32, 0, 9, 3, 5, 1, 1, 7];
        let mut r = SeededRng::new(4).stream("d", 0);
        let d = draw_d(&labels, 10, GateMode::RandomOthers, &mut r).unwrap();
        for (n, &y) in labels.iter().enumerate() {
            let row = &d[n * 10..n * 10 + 10];
            assert_eq!(row[y as usize], 1.0);
            assert!(row.iter().enumerate().all(|(k, &v)| k == y as usize || (0.0..1.0).contains(&v)));
        }
        let others: Vec<f32> = d.iter().copied().filter(|&v| v != 1.0).collect();
        let mean = others.iter().sum::<f32>() / others.len() as f32;
        assert!(others.len() == 72 && (0.35..0.65).contains(&mean), "mean {mean}");
        let mask = ClassWiseMask::ones(10, 4, GateMode::OneHot, &Device::Cpu).unwrap();
        let mv: Vec<f32> = (0..40).map(|i| i as f32 * 0.1 - 1.0).collect();
        mask.m.set(&Tensor::from_vec(mv, (10, 4), &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::ones((8, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let g = mask.gate(&x, &labels, &mut r).unwrap().narrow(2, 0, 1).unwrap().narrow(3, 0, 1).unwrap();
        let idx = Tensor::new(&labels, &Device::Cpu).unwrap();
        let want = mask.m.as_tensor().index_select(&idx, 0).unwrap();
        assert_eq!(g.reshape((8, 4)).unwrap().to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        assert!(draw_d(&[10], 10, GateMode::OneHot, &mut r).is_err(), "a label outside the classes");
    }

    /// Section 8: the vote and fold of layer A.
    #[test]
    fn votes_and_fold_scale() {
        let a = Tensor::new(&[[1f32, 0.2, 0.5, -0.1], [0.8, 0.1, 0.6, 0.05]], &Device::Cpu).unwrap();
        let v = votes(&a).unwrap();
        for (x, y) in v.iter().zip([1.8f32, 0.3, 1.1, 0.05]) {
            assert!((x - y).abs() < 1e-6, "{v:?}");
        }
        let t = fold_scale(&a).unwrap();
        for (x, y) in t.iter().zip([0.9f32, 0.15, 0.55, -0.025]) {
            assert!((x - y).abs() < 1e-6, "{t:?}");
        }
    }
}
