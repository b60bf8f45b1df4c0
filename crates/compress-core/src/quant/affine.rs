//! The zero-anchored asymmetric quantizer with bounds `l < u` and `b` bits (DDTB, spec 2.1):
//! `c = clamp(x, l, u)`, `s = (2^b - 1) / (u - l)`, `z = round(s l) + 2^(b-1)`,
//! `q = (round(s c - z) + z) / s`, both rounds straight-through. The grid is anchored at 0
//! (outputs `k / s` for integers `k`), and the gradients reach `l` and `u`:
//! inside, `dq/dx = 1`, `dq/du = (q - x)/(u - l)`, `dq/dl = (x - q)/(u - l)`.

use super::round::{rne_f32, ste_round};
use super::{QuantError, Result, check_bits};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// The integer grid of one quantization: `q = k / s`.
#[derive(Debug, Clone)]
pub struct AffineGrid {
    /// `k`, integer-valued, shaped like the input.
    pub k: Tensor,
    /// `s = (2^b - 1) / (u - l)`, shaped like the bounds.
    pub s: Tensor,
    /// The `k` of the lower bound (the smallest level), shaped like the bounds.
    pub k_min: Tensor,
}

impl AffineGrid {
    /// Computes the grid of `x` for bounds `lower < upper` (scalars, or shapes that broadcast to
    /// `x`: per channel `[C, 1, 1, 1]`, per sample `[N, 1, 1, 1]`).
    pub fn new(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Self> {
        check_bits(bits)?;
        check_bounds(lower, upper)?;
        let n = f64::from((1u32 << bits) - 1);
        let half = f64::from(1u32 << (bits - 1));
        let s = ((upper - lower)?.recip()? * n)?;
        let c = x.broadcast_maximum(lower)?.broadcast_minimum(upper)?;
        let z = (ste_round(&(&s * lower)?)? + half)?;
        let k = (ste_round(&c.broadcast_mul(&s)?.broadcast_sub(&z)?)?.broadcast_add(&z))?;
        let k_min = (ste_round(&((&s * lower)? - &z)?)? + &z)?;
        Ok(Self { k, s, k_min })
    }

    /// `q = k / s`.
    pub fn values(&self) -> Result<Tensor> {
        Ok(self.k.broadcast_div(&self.s)?)
    }
}

/// `q(x; l, u, b)` of the module docs, differentiable in `x`, `lower` and `upper`. On the CPU
/// and (under the `cuda` feature) on a CUDA device, for f32 and bounds that are scalars or vary
/// along one axis, it is one fused op with the same values and the closed-form
/// straight-through gradients; elsewhere the composed form.
pub fn affine_fake_quant(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Tensor> {
    check_bits(bits)?;
    check_bounds(lower, upper)?;
    if super::is_half(x) {
        return super::in_f32(x, lower, Some(upper), |x, l, u| affine_fake_quant(x, l, u.unwrap_or(l), bits));
    }
    if let Some(axis) = fused_axis(x, lower, upper) {
        let (l, u) = (lower.contiguous()?, upper.contiguous()?);
        return Ok(x.contiguous()?.apply_op3(&l, &u, FusedAffine { bits, axis, mode: Mode::ClipInput })?);
    }
    affine_fake_quant_composed(x, lower, upper, bits)
}

/// The composed form (candle ops with `ste_round`): the reference the fused op is tested against.
pub fn affine_fake_quant_composed(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Tensor> {
    AffineGrid::new(x, lower, upper, bits)?.values()
}

/// `Some(None)` for scalar bounds, `Some(Some(a))` for bounds varying along axis `a` only (same
/// rank as `x`), `None` when the fused CPU op does not apply.
pub(crate) fn fused_axis(x: &Tensor, lower: &Tensor, upper: &Tensor) -> Option<Option<usize>> {
    if !fused_device(x.device()) || [x.dtype(), lower.dtype(), upper.dtype()].iter().any(|t| *t != DType::F32) {
        return None;
    }
    if lower.dims() != upper.dims() {
        return None;
    }
    if lower.elem_count() == 1 {
        return Some(None);
    }
    if lower.rank() != x.rank() {
        return None;
    }
    let varying: Vec<usize> = (0..x.rank()).filter(|&a| lower.dims()[a] != 1).collect();
    match varying[..] {
        [a] if lower.dims()[a] == x.dims()[a] => Some(Some(a)),
        _ => None,
    }
}

/// Where the fused quantizer clips and how it differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// DDTB (2.1): `x` clamped to `[l, u]`, `s = (1 / (u - l)) n`; closed-form gradients to `x`,
    /// `l` and `u`.
    ClipInput,
    /// IntraQ / GDFQ (intraq 2.2): codes clamped to `[-2^(b-1), 2^(b-1) - 1]`,
    /// `s = n / max(u - l, 1e-8)`; identity gradient to `x`, none to the bounds.
    ClipCodes,
}

/// The fused quantizer: `(x, lower, upper) -> q`. In [`Mode::ClipInput`] the backward is the
/// closed form of spec 2.1: with `r = (clamp(x, l, u) - q) / (u - l)`, `dq/dx = [l < x < u]`,
/// `dq/du = [x >= u] - r`, `dq/dl = [x <= l] + r`, bound gradients summed per bound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FusedAffine {
    pub(crate) bits: u32,
    pub(crate) axis: Option<usize>,
    pub(crate) mode: Mode,
}

impl FusedAffine {
    /// `(group count, elements per group step)`: element `i` uses bound `(i / inner) % groups`.
    fn grouping(&self, dims: &[usize]) -> (usize, usize) {
        crate::gpu::launch::bound_grouping(dims, self.axis)
    }
}

/// Devices with a fused quantizer kernel: the CPU, and CUDA under the `cuda` feature.
pub(crate) fn fused_device(d: &candle_core::Device) -> bool {
    d.is_cpu() || (cfg!(feature = "cuda") && d.is_cuda())
}

pub(crate) use crate::cpu::{f32_slice, with_f32};

/// Elements per parallel chunk of the fused ops.
pub(crate) const CHUNK: usize = 1 << 14;

impl CustomOp3 for FusedAffine {
    fn name(&self) -> &'static str {
        "affine-fake-quant"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sl: &CpuStorage,
        ll: &Layout,
        su: &CpuStorage,
        lu: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, lo, up) = (f32_slice(sx, lx)?, f32_slice(sl, ll)?, f32_slice(su, lu)?);
        let (groups, inner) = self.grouping(lx.dims());
        let n = ((1u32 << self.bits) - 1) as f32;
        let half = (1u32 << (self.bits - 1)) as f32;
        // Per bound: s = n / (u - l) and z = round(s l) + 2^(b-1), in the composed form's order.
        let codes = self.mode == Mode::ClipCodes;
        let params: Vec<(f32, f32, f32, f32)> = lo
            .iter()
            .zip(up)
            .map(|(&l, &u)| {
                let s = if codes { n / (u - l).max(1e-8) } else { (1.0 / (u - l)) * n };
                (l, u, s, rne_f32(s * l) + half)
            })
            .collect();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(ci, (o, xc))| {
            for (j, (o, &xi)) in o.iter_mut().zip(xc).enumerate() {
                let i = ci * CHUNK + j;
                let (l, u, s, z) = params[if groups == 1 { 0 } else { (i / inner) % groups }];
                *o = if codes {
                    (rne_f32(s * xi - z).clamp(-half, half - 1.0) + z) / s
                } else {
                    let c = xi.max(l).min(u);
                    (rne_f32(c * s - z) + z) / s
                };
            }
        });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &candle_core::CudaStorage,
        lx: &Layout,
        sl: &candle_core::CudaStorage,
        ll: &Layout,
        su: &candle_core::CudaStorage,
        lu: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::gpu::cuda;
        let (x, lo, up) = (cuda::f32_input(sx, lx, self.name())?, cuda::f32_input(sl, ll, self.name())?, {
            cuda::f32_input(su, lu, self.name())?
        });
        let codes = self.mode == Mode::ClipCodes;
        let q = cuda::affine_fake_quant(&sx.device, &x, &lo, &up, self.grouping(lx.dims()), self.bits, codes)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(q, sx.device.clone()), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        lower: &Tensor,
        upper: &Tensor,
        q: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.mode == Mode::ClipCodes {
            return Ok((Some(grad.clone()), None, None));
        }
        if !x.device().is_cpu() {
            let (dx, dl, du) = super::ste::affine_backward(x, lower, upper, q, grad)?;
            return Ok((Some(dx), Some(dl), Some(du)));
        }
        let lo: Vec<f32> = lower.flatten_all()?.to_vec1()?;
        let up: Vec<f32> = upper.flatten_all()?.to_vec1()?;
        let (groups, inner) = self.grouping(x.dims());
        let nb = lo.len();
        let (dx, dl, du) = with_f32(x, |xs| {
            with_f32(q, |qs| {
                with_f32(grad, |gs| {
                    let mut dx = vec![0f32; xs.len()];
                    let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
                        .par_chunks_mut(CHUNK)
                        .enumerate()
                        .map(|(ci, d)| {
                            let (mut dl, mut du) = (vec![0f64; nb], vec![0f64; nb]);
                            let start = ci * CHUNK;
                            for (j, d) in d.iter_mut().enumerate() {
                                let i = start + j;
                                let k = if groups == 1 { 0 } else { (i / inner) % groups };
                                let (l, u, xi, g) = (lo[k], up[k], xs[i], gs[i]);
                                let r = f64::from(xi.max(l).min(u) - qs[i]) / f64::from(u - l);
                                let (above, below) = (xi >= u, xi <= l);
                                *d = if above || below { 0.0 } else { g };
                                let g = f64::from(g);
                                du[k] += g * (if above { 1.0 } else { 0.0 } - r);
                                dl[k] += g * (if below { 1.0 } else { 0.0 } + r);
                            }
                            (dl, du)
                        })
                        .collect();
                    let (mut dl, mut du) = (vec![0f64; nb], vec![0f64; nb]);
                    for (a, b) in partial {
                        dl.iter_mut().zip(a).for_each(|(s, v)| *s += v);
                        du.iter_mut().zip(b).for_each(|(s, v)| *s += v);
                    }
                    (dx, dl, du)
                })
            })
        })???;
        let back = |v: Vec<f64>, like: &Tensor| {
            Tensor::from_vec(v.into_iter().map(|a| a as f32).collect::<Vec<f32>>(), like.shape(), like.device())
        };
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), Some(back(dl, lower)?), Some(back(du, upper)?)))
    }
}

fn check_bounds(lower: &Tensor, upper: &Tensor) -> Result<()> {
    let l: Vec<f64> = lower.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let u: Vec<f64> = upper.detach().flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    if l.len() != u.len() || l.is_empty() {
        return Err(QuantError::Shape(format!("{} lower and {} upper bounds", l.len(), u.len())));
    }
    match l.iter().zip(&u).find(|(a, b)| !(a.is_finite() && b.is_finite() && a < b)) {
        Some((&lower, &upper)) => Err(QuantError::Bounds { lower, upper }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(v: f32) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    fn levels(x: &[f32], l: f32, u: f32, bits: u32) -> Vec<f32> {
        let xs = Tensor::from_slice(x, x.len(), &Device::Cpu).unwrap();
        let q = affine_fake_quant(&xs, scalar(l).as_tensor(), scalar(u).as_tensor(), bits).unwrap();
        let mut v: Vec<f32> = q.to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
        v
    }

    #[test]
    fn spec_levels() {
        let sweep: Vec<f32> = (0..=2000).map(|i| -5.0 + i as f32 * 0.005).collect();
        let two = levels(&sweep, -0.3, 1.2, 2);
        assert_eq!(two.len(), 4);
        for (a, b) in two.iter().zip([-0.5, 0.0, 0.5, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{two:?}");
        }
        let three = levels(&sweep, -0.7, 2.1, 3);
        assert_eq!(three.len(), 8);
        for (i, a) in three.iter().enumerate() {
            assert!((a - (-0.8 + 0.4 * i as f32)).abs() < 1e-5, "{three:?}");
        }
    }

    #[test]
    fn spec_values_and_ste_gradients() {
        let want = [
            (-1.0f32, -0.5f32, (0.0f32, 1.1333f32, -0.1333f32)),
            (0.1, 0.0, (1.0, 0.0667, -0.0667)),
            (0.74, 0.5, (1.0, 0.16, -0.16)),
            (0.76, 1.0, (1.0, -0.16, 0.16)),
            (2.0, 1.0, (0.0, 0.1333, 0.8667)),
        ];
        for (x, q, (dx, dl, du)) in want {
            let (xv, l, u) = (scalar(x), scalar(-0.3), scalar(1.2));
            let out = affine_fake_quant(xv.as_tensor(), l.as_tensor(), u.as_tensor(), 2).unwrap();
            assert!((out.to_scalar::<f32>().unwrap() - q).abs() < 1e-6);
            let g = out.backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).map(|t| t.to_scalar::<f32>().unwrap()).unwrap_or(0.0);
            assert!((get(&xv) - dx).abs() < 1e-4, "x={x}: dx {}", get(&xv));
            assert!((get(&l) - dl).abs() < 1e-4, "x={x}: dl {}", get(&l));
            assert!((get(&u) - du).abs() < 1e-4, "x={x}: du {}", get(&u));
        }
    }

    #[test]
    fn per_sample_bounds_broadcast() {
        // Section 8, the gate example: bounds (-0.16136, 1.49390) for the second sample.
        let x = Tensor::new(&[[-1f32, 0.1, 0.74, 0.76, 2.0], [-1.0, 0.1, 0.74, 0.76, 2.0]], &Device::Cpu).unwrap();
        let l = Tensor::new(&[[-0.3f32], [-0.16136]], &Device::Cpu).unwrap();
        let u = Tensor::new(&[[1.2f32], [1.49390]], &Device::Cpu).unwrap();
        let q: Vec<Vec<f32>> = affine_fake_quant(&x, &l, &u, 2).unwrap().to_vec2().unwrap();
        for (a, b) in q[0].iter().zip([-0.5, 0.0, 0.5, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-5);
        }
        for (a, b) in q[1].iter().zip([0.0, 0.0, 0.55176, 0.55176, 1.65527]) {
            assert!((a - b).abs() < 1e-4, "{q:?}");
        }
    }

    proptest::proptest! {
        /// On random inputs, bounds and bits: outputs lie on the zero-anchored grid within half a
        /// step of the clipped input, and the bound gradients equal the spec's formulas summed
        /// over the elements (inside, above and below the range).
        #[test]
        fn grid_and_gradients_follow_the_spec(
            xs in proptest::collection::vec(-5.0f32..5.0, 1..40),
            l in -3.0f32..-0.01,
            width in 0.1f32..5.0,
            bits in 1u32..=8,
        ) {
            let u = l + width;
            let x = Var::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
            let (lv, uv) = (scalar(l), scalar(u));
            let q = affine_fake_quant(x.as_tensor(), lv.as_tensor(), uv.as_tensor(), bits).unwrap();
            let qs: Vec<f32> = q.to_vec1().unwrap();
            let s = ((1u32 << bits) - 1) as f32 / (u - l);
            let (mut dl, mut du) = (0f64, 0f64);
            for (&xi, &qi) in xs.iter().zip(&qs) {
                let k = qi * s;
                proptest::prop_assert!((k - k.round()).abs() < 2e-3, "q {qi} is not on the grid");
                let c = xi.clamp(l, u);
                proptest::prop_assert!((qi - c).abs() <= 0.5 / s + 1e-4);
                let (q, x, l, u) = (f64::from(qi), f64::from(xi), f64::from(l), f64::from(u));
                let w = u - l;
                if x >= u {
                    du += 1.0 + (q - u) / w;
                    dl += (u - q) / w;
                } else if x <= l {
                    dl += 1.0 + (l - q) / w;
                    du += (q - l) / w;
                } else {
                    du += (q - x) / w;
                    dl += (x - q) / w;
                }
            }
            let g = q.sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| f64::from(g.get(v.as_tensor()).map(|t| t.to_scalar::<f32>().unwrap()).unwrap_or(0.0));
            let tol = 1e-3 * xs.len() as f64;
            proptest::prop_assert!((get(&lv) - dl).abs() < tol, "dl {} vs {dl}", get(&lv));
            proptest::prop_assert!((get(&uv) - du).abs() < tol, "du {} vs {du}", get(&uv));
        }
    }

    proptest::proptest! {
        /// The fused CPU op equals the composed candle ops: the same values bit for bit, and the
        /// same gradients, for scalar, per-sample and per-channel bounds.
        #[test]
        fn fused_equals_composed(
            n in 1usize..4, c in 1usize..5, hw in 1usize..6,
            axis in 0usize..3, bits in 1u32..=8, seed in 0u64..1000,
        ) {
            let dev = &Device::Cpu;
            let count = n * c * hw * hw;
            // Off the bounds' grid: at x == l or x == u candle's max/min split the gradient.
            let xs: Vec<f32> = (0..count).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 6.0 + 1.237e-4).collect();
            let x = Var::from_vec(xs, (n, c, hw, hw), dev).unwrap();
            let (shape, len) = match axis {
                0 => (vec![1usize, 1, 1, 1], 1),
                1 => (vec![n, 1, 1, 1], n),
                _ => (vec![1, c, 1, 1], c),
            };
            let lv: Vec<f32> = (0..len).map(|j| -0.2 - 0.37 * j as f32 - (seed % 7) as f32 * 0.1).collect();
            let uv: Vec<f32> = (0..len).map(|j| 0.9 + 0.21 * j as f32 + (seed % 5) as f32 * 0.13).collect();
            let l = Var::from_vec(lv, shape.clone(), dev).unwrap();
            let u = Var::from_vec(uv, shape, dev).unwrap();
            let w = Tensor::from_vec((0..count).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>(), (n, c, hw, hw), dev).unwrap();
            let fused = affine_fake_quant(x.as_tensor(), l.as_tensor(), u.as_tensor(), bits).unwrap();
            let composed = affine_fake_quant_composed(x.as_tensor(), l.as_tensor(), u.as_tensor(), bits).unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) = (fused.flatten_all().unwrap().to_vec1().unwrap(), composed.flatten_all().unwrap().to_vec1().unwrap());
            proptest::prop_assert_eq!(&a, &b);
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &l, &u] {
                let f: Vec<f32> = gf.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let c: Vec<f32> = gc.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (p, q) in f.iter().zip(&c) {
                    proptest::prop_assert!((p - q).abs() <= 1e-3 * (1.0 + q.abs()), "{f:?} vs {c:?}");
                }
            }
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let x = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let (l, u) = (scalar(0.0), scalar(1.0));
        assert!(matches!(affine_fake_quant(&x, l.as_tensor(), u.as_tensor(), 0).unwrap_err(), QuantError::Bits(0)));
        assert!(matches!(affine_fake_quant(&x, l.as_tensor(), u.as_tensor(), 9), Err(QuantError::Bits(9))));
        assert!(matches!(affine_fake_quant(&x, u.as_tensor(), l.as_tensor(), 2), Err(QuantError::Bounds { .. })));
        assert!(matches!(affine_fake_quant(&x, l.as_tensor(), l.as_tensor(), 2), Err(QuantError::Bounds { .. })));
        // As many lower as upper bounds, and at least one.
        let two = Tensor::new(&[0f32, 0.1], &Device::Cpu).unwrap();
        let three = Tensor::new(&[1f32, 1.1, 1.2], &Device::Cpu).unwrap();
        assert!(matches!(affine_fake_quant(&x, &two, &three, 2), Err(QuantError::Shape(_))));
        let none = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(affine_fake_quant(&x, &none, &none, 2), Err(QuantError::Shape(_))));
        // Bounds along an axis of another length than the input's are refused, not read past.
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        for len in [2usize, 4] {
            let l = Tensor::zeros((1, len), DType::F32, &Device::Cpu).unwrap();
            let u = Tensor::ones((1, len), DType::F32, &Device::Cpu).unwrap();
            assert!(fused_axis(&x, &l, &u).is_none(), "{len} bounds for 3 columns");
            assert!(affine_fake_quant(&x, &l, &u, 2).is_err(), "{len} bounds for 3 columns");
        }
    }

    /// Past the first parallel chunk ([`CHUNK`] elements) each element still takes its own
    /// channel's bounds, forward and backward.
    #[test]
    fn fused_equals_composed_past_the_first_chunk() {
        let dev = &Device::Cpu;
        let (n, c, hw) = (4usize, 5usize, 45usize);
        let count = n * c * hw * hw;
        assert!(count > 2 * CHUNK && (hw * hw) % CHUNK != 0);
        let xs: Vec<f32> = (0..count).map(|i| ((i * 7919) % 2003) as f32 / 2003.0 * 5.0 - 2.5 + 1.237e-4).collect();
        let x = Var::from_vec(xs, (n, c, hw, hw), dev).unwrap();
        let l = Var::from_vec((0..c).map(|j| -0.3 - 0.25 * j as f32).collect::<Vec<f32>>(), (1, c, 1, 1), dev).unwrap();
        let u = Var::from_vec((0..c).map(|j| 0.4 + 0.3 * j as f32).collect::<Vec<f32>>(), (1, c, 1, 1), dev).unwrap();
        let w = Tensor::from_vec((0..count).map(|i| (i % 11) as f32 - 5.0).collect::<Vec<f32>>(), (n, c, hw, hw), dev)
            .unwrap();
        let fused = affine_fake_quant(x.as_tensor(), l.as_tensor(), u.as_tensor(), 3).unwrap();
        let composed = affine_fake_quant_composed(x.as_tensor(), l.as_tensor(), u.as_tensor(), 3).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&fused), flat(&composed));
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &w).unwrap().sum_all().unwrap().backward().unwrap();
        // dx is the upstream gradient inside the range, 0 outside (composed: to rounding).
        let (a, b) = (flat(gf.get(x.as_tensor()).unwrap()), flat(gc.get(x.as_tensor()).unwrap()));
        let bad: Vec<_> = (0..count).filter(|&i| (a[i] - b[i]).abs() > 1e-6 * (1.0 + b[i].abs())).take(5).collect();
        assert!(bad.is_empty(), "dx differs at {bad:?}");
        assert!(
            a.iter().filter(|v| **v == 0.0).count() > count / 10
                && a.iter().filter(|v| **v != 0.0).count() > count / 10
        );
        for v in [&l, &u] {
            let (f, c) = (flat(gf.get(v.as_tensor()).unwrap()), flat(gc.get(v.as_tensor()).unwrap()));
            for (p, q) in f.iter().zip(&c) {
                assert!((p - q).abs() <= 1e-3 * (1.0 + q.abs()), "{f:?} vs {c:?}");
            }
        }
    }
}
