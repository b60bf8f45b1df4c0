//! Max pooling with a correct gradient.
//!
//! candle 0.11's `max_pool2d` backward scales the gradient by 1/(k*k) and refuses overlapping
//! windows (`k != stride`). [`max_pool2d`] is a custom op on the CPU whose backward routes each
//! output gradient to the first maximum of its window (row-major), as PyTorch does; padding never
//! wins (it acts as -inf). Other devices use a composition of slices and a `max` reduction, whose
//! backward candle computes correctly.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Pool geometry: `k x k` windows, stride `s`, padding `p` (`p <= k / 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pool {
    k: usize,
    s: usize,
    p: usize,
}

impl Pool {
    fn out(&self, n: usize) -> usize {
        (n + 2 * self.p - self.k) / self.s + 1
    }

    /// Index (in the plane) of the first maximum of window `(oy, ox)`.
    fn argmax<T: Copy + PartialOrd>(&self, plane: &[T], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let mut best = usize::MAX;
        for dy in 0..self.k {
            let iy = (oy * self.s + dy) as isize - self.p as isize;
            if iy < 0 || iy as usize >= h {
                continue;
            }
            for dx in 0..self.k {
                let ix = (ox * self.s + dx) as isize - self.p as isize;
                if ix < 0 || ix as usize >= w {
                    continue;
                }
                let i = iy as usize * w + ix as usize;
                if best == usize::MAX || plane[i] > plane[best] {
                    best = i;
                }
            }
        }
        best
    }
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("max_pool2d: input must be contiguous"),
    }
}

fn fwd_typed<T: Copy + PartialOrd + Send + Sync>(pool: Pool, x: &[T], dims: &[usize]) -> Vec<T> {
    let (h, w) = (dims[2], dims[3]);
    let (oh, ow) = (pool.out(h), pool.out(w));
    let mut out = Vec::with_capacity(dims[0] * dims[1] * oh * ow);
    out.par_extend(
        x.par_chunks(h * w)
            .flat_map_iter(|plane| (0..oh * ow).map(move |o| plane[pool.argmax(plane, h, w, o / ow, o % ow)])),
    );
    out
}

fn bwd_typed<T: Copy + PartialOrd + Default + std::ops::AddAssign + Send + Sync>(
    pool: Pool,
    x: &[T],
    g: &[T],
    dims: &[usize],
) -> Vec<T> {
    let (h, w) = (dims[2], dims[3]);
    let (oh, ow) = (pool.out(h), pool.out(w));
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).zip(g.par_chunks(oh * ow)).for_each(|((d, plane), gp)| {
        for o in 0..oh * ow {
            d[pool.argmax(plane, h, w, o / ow, o % ow)] += gp[o];
        }
    });
    dx
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l.dims();
        let shape = Shape::from((d[0], d[1], self.out(d[2]), self.out(d[3])));
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(fwd_typed(*self, contiguous(v, l)?, d)),
            CpuStorage::F64(v) => CpuStorage::F64(fwd_typed(*self, contiguous(v, l)?, d)),
            _ => candle_core::bail!("max_pool2d: only f32 and f64 are supported"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &PoolBackward(*self))?))
    }
}

/// `(x, dL/dy) -> dL/dx` of [`Pool`].
struct PoolBackward(Pool);

impl CustomOp2 for PoolBackward {
    fn name(&self) -> &'static str {
        "max-pool2d-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l1.dims();
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(bwd_typed(self.0, contiguous(x, l1)?, contiguous(g, l2)?, d))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(bwd_typed(self.0, contiguous(x, l1)?, contiguous(g, l2)?, d))
            }
            _ => candle_core::bail!("max_pool2d backward: only f32 and f64 are supported"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Max pooling of NCHW `x` with `k x k` windows, stride `s`, padding `p` (PyTorch semantics).
pub fn max_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if k == 0 || s == 0 || 2 * p > k || h + 2 * p < k || w + 2 * p < k {
        candle_core::bail!("max_pool2d: impossible window k={k} s={s} p={p} on {h}x{w}")
    }
    let pool = Pool { k, s, p };
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        x.contiguous()?.apply_op1(pool)
    } else {
        max_pool2d_composed(x, pool)
    }
}

/// `x` with `before` and `after` slices of -inf along `dim`. A zero-width side makes no tensor:
/// a zero-element allocation fails on CUDA (`CUDA_ERROR_INVALID_VALUE`), as candle#2327.
fn pad_ninf(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    let block = |len: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = len;
        Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// Max pooling as slices + `max` over a window axis (any device; correct candle gradient).
fn max_pool2d_composed(x: &Tensor, pool: Pool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (pool.out(h), pool.out(w));
    // Pad with -inf so that every window offset can take `s * o` rows and columns.
    let (hp, wp) = ((oh - 1) * pool.s + pool.k, (ow - 1) * pool.s + pool.k);
    let (hp, wp) = (hp.max(h + pool.p) + pool.s, wp.max(w + pool.p) + pool.s);
    let xp = pad_ninf(&pad_ninf(x, 3, pool.p, wp - w - pool.p)?, 2, pool.p, hp - h - pool.p)?;
    let mut windows = Vec::with_capacity(pool.k * pool.k);
    for dy in 0..pool.k {
        let rows = xp.narrow(2, dy, oh * pool.s)?.reshape((n, c, oh, pool.s, wp))?.narrow(3, 0, 1)?.squeeze(3)?;
        for dx in 0..pool.k {
            let cols = rows.narrow(3, dx, ow * pool.s)?.reshape((n, c, oh, ow, pool.s))?.narrow(4, 0, 1)?;
            windows.push(cols);
        }
    }
    Tensor::cat(&windows, 4)?.max(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn input(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Vec<f64> {
        // Distinct values (no ties) in a scrambled order.
        (0..n * c * h * w).map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f64 / 100.0 - 5.0).collect()
    }

    #[test]
    fn the_candle_notes_example_gets_unit_gradients() {
        let x = Var::from_vec(vec![1f32, 2., 5., 1., 3., 4., 0., 0.], (1, 1, 2, 4), &Device::Cpu).expect("x");
        let y = max_pool2d(x.as_tensor(), 2, 2, 0).expect("pool");
        assert_eq!(y.flatten_all().expect("f").to_vec1::<f32>().expect("v"), vec![4.0, 5.0]);
        let g = y.sum_all().expect("s").backward().expect("b");
        let gx = g.get(x.as_tensor()).expect("grad").flatten_all().expect("f").to_vec1::<f32>().expect("v");
        assert_eq!(gx, vec![0., 0., 1., 0., 0., 1., 0., 0.]);
    }

    #[test]
    fn custom_op_matches_composition_and_finite_differences() {
        for (k, s, p, h, w) in [(3, 2, 1, 7, 6), (2, 2, 0, 6, 8), (3, 1, 1, 5, 5), (3, 2, 0, 9, 7)] {
            let v = input(2, 3, h, w, (k * 31 + h) as u64);
            let x = Var::from_vec(v.clone(), (2, 3, h, w), &Device::Cpu).expect("x");
            let y = max_pool2d(x.as_tensor(), k, s, p).expect("pool");
            let yc = max_pool2d_composed(x.as_tensor(), Pool { k, s, p }).expect("composed");
            let d = (&y - &yc).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f64>().expect("v");
            assert_eq!(d, 0.0, "k{k} s{s} p{p}");
            // Loss = sum(y * r) for a fixed r; compare dL/dx with central differences.
            let r =
                Tensor::from_vec(input(2, 3, y.dim(2).expect("h"), y.dim(3).expect("w"), 7), y.shape(), &Device::Cpu)
                    .expect("r");
            let loss = |t: &Tensor| (max_pool2d(t, k, s, p).expect("p") * &r).expect("m").sum_all().expect("s");
            let grads = loss(x.as_tensor()).backward().expect("b");
            let g = grads.get(x.as_tensor()).expect("g").flatten_all().expect("f").to_vec1::<f64>().expect("v");
            let gc = (yc * &r).expect("m").sum_all().expect("s").backward().expect("b");
            let gcv = gc.get(x.as_tensor()).expect("g").flatten_all().expect("f").to_vec1::<f64>().expect("v");
            for i in 0..v.len() {
                let eps = 1e-4;
                let (mut a, mut b) = (v.clone(), v.clone());
                a[i] += eps;
                b[i] -= eps;
                let ta = Tensor::from_vec(a, (2, 3, h, w), &Device::Cpu).expect("a");
                let tb = Tensor::from_vec(b, (2, 3, h, w), &Device::Cpu).expect("b");
                let fd =
                    (loss(&ta).to_scalar::<f64>().expect("a") - loss(&tb).to_scalar::<f64>().expect("b")) / (2.0 * eps);
                assert!((fd - g[i]).abs() < 1e-6, "k{k} s{s} p{p} i{i}: fd {fd} vs {}", g[i]);
                assert!((fd - gcv[i]).abs() < 1e-6, "composed k{k} s{s} p{p} i{i}: fd {fd} vs {}", gcv[i]);
            }
        }
    }

    #[test]
    fn impossible_windows_are_errors() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).expect("x");
        assert!(max_pool2d(&x, 3, 2, 2).is_err());
        assert!(max_pool2d(&x, 0, 1, 0).is_err());
        assert!(max_pool2d(&x, 9, 1, 0).is_err());
    }
}
