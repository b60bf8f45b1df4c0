//! Training-mode batch normalisation on the CPU as one fused op with its backward.
//!
//! candle-nn's BatchNorm composes about ten tensor passes (transpose, copy, means, broadcasts),
//! each with its own backward, which costs more than the convolutions in a small CNN's step.
//! Here, per channel `c` over the `M = N H W` values of the batch:
//! - forward: `mu = mean(x)`, `var = mean((x - mu)^2)` (biased), `xhat = (x - mu) / sqrt(var + eps)`,
//!   `y = gamma xhat + beta`;
//! - backward: `dbeta = sum(dy)`, `dgamma = sum(dy xhat)`,
//!   `dx = gamma / sqrt(var + eps) / M * (M dy - dbeta - xhat dgamma)`.
//!
//! [`batch_norm_train`] also returns the batch mean and biased variance so the caller can update
//! its running statistics (PyTorch uses the unbiased variance there).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Per-channel statistics of one batch.
#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    var: Vec<f64>,
}

/// Runs `$f` on the three contiguous operands when all are f32 or all f64.
macro_rules! dispatch3 {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $f:expr, $name:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                CpuStorage::F32($f(contiguous(a, $l1)?, contiguous(b, $l2)?, contiguous(c, $l3)?))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                CpuStorage::F64($f(contiguous(a, $l1)?, contiguous(b, $l2)?, contiguous(c, $l3)?))
            }
            _ => candle_core::bail!("{}: operands must all be f32 or all f64", $name),
        }
    };
}

/// `(N, C, plane)` of an `[N, C, ...]` layout.
fn ncp(l: &Layout) -> Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() < 2 {
        candle_core::bail!("batch_norm: input needs at least 2 dimensions, got {d:?}")
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("batch_norm: operands must be contiguous"),
    }
}

trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    fn f(self) -> f64;
    fn of(v: f64) -> Self;
}

impl Float for f32 {
    fn f(self) -> f64 {
        f64::from(self)
    }
    fn of(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn f(self) -> f64 {
        self
    }
    fn of(v: f64) -> Self {
        v
    }
}

const LANES: usize = 8;

/// `sum f(v)` over `x` with eight independent accumulators in `T` (so the loop vectorizes; a
/// single running sum cannot be reordered), totalled in f64.
fn lane_sum<T: Float>(x: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut acc = [T::default(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = *a + f(v);
        }
    }
    acc.iter().map(|a| a.f()).sum::<f64>() + chunks.remainder().iter().map(|&v| f(v).f()).sum::<f64>()
}

/// [`lane_sum`] of `f(x_i, y_i)`.
fn lane_sum2<T: Float>(x: &[T], y: &[T], f: impl Fn(T, T) -> T) -> f64 {
    let mut acc = [T::default(); LANES];
    let (mut cx, mut cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    for (a8, b8) in (&mut cx).zip(&mut cy) {
        for ((a, &u), &v) in acc.iter_mut().zip(a8).zip(b8) {
            *a = *a + f(u, v);
        }
    }
    let tail: f64 = cx.remainder().iter().zip(cy.remainder()).map(|(&u, &v)| f(u, v).f()).sum();
    acc.iter().map(|a| a.f()).sum::<f64>() + tail
}

fn stats<T: Float>(x: &[T], n: usize, c: usize, p: usize, eps: f64) -> Stats {
    let per: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let m = (n * p) as f64;
            let plane = |i: usize| &x[(i * c + ch) * p..][..p];
            let mean = (0..n).map(|i| lane_sum(plane(i), |v| v)).sum::<f64>() / m;
            let mt = T::of(mean);
            let q = (0..n)
                .map(|i| {
                    lane_sum(plane(i), |v| {
                        let d = v - mt;
                        d * d
                    })
                })
                .sum::<f64>();
            (mean, q / m)
        })
        .collect();
    Stats {
        mean: per.iter().map(|s| s.0).collect(),
        invstd: per.iter().map(|s| 1.0 / (s.1 + eps).sqrt()).collect(),
        var: per.iter().map(|s| s.1).collect(),
    }
}

/// `(x) -> [2, C]` mean and biased variance (no backward).
struct StatsOp {
    eps: f64,
}

impl CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, p) = ncp(l)?;
        let st = match s {
            CpuStorage::F32(v) => stats(contiguous(v, l)?, n, c, p, self.eps),
            CpuStorage::F64(v) => stats(contiguous(v, l)?, n, c, p, self.eps),
            _ => candle_core::bail!("batch_norm: only f32 and f64 are supported"),
        };
        let mut out = st.mean;
        out.extend(st.var);
        Ok((CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// `(x, [gamma; beta] (, r)) -> clamp(gamma xhat + beta (+ r), lo, hi)` with the batch
/// statistics fixed in the op: BatchNorm, the residual addition and the activation of a block
/// as one node (candle's backward zero-fills and adds a gradient buffer for every node).
struct NormalizeAct {
    st: Arc<Stats>,
    lo: f64,
    hi: f64,
    /// Batch statistics (training: the gradient flows through them) or running ones (eval).
    batch: bool,
}

/// `y = clamp(a_c x + b_c (+ r), lo, hi)` with `a_c = gamma_c / sigma_c`,
/// `b_c = beta_c - mu_c a_c` (one pass; the clamp is two selects, so it vectorizes).
fn normalize_act<T: Float + PartialOrd>(
    x: &[T],
    gb: &[T],
    r: Option<&[T]>,
    st: &Stats,
    (c, p): (usize, usize),
    (lo, hi): (f64, f64),
) -> Vec<T> {
    let consts = |i: usize| {
        let ch = i % c;
        let a = st.invstd[ch] * gb[ch].f();
        (T::of(a), T::of(gb[c + ch].f() - st.mean[ch] * a))
    };
    let (lo, hi) = (T::of(lo), T::of(hi));
    let clamp = move |z: T| {
        let z = if z < lo { lo } else { z };
        if z > hi { hi } else { z }
    };
    match r {
        None => crate::cpu::par_map_planes(x, p, consts, |&(a, b), v| clamp(v * a + b)),
        Some(r) => crate::cpu::par_map2_planes(x, r, p, consts, |&(a, b), v, rv| clamp(v * a + b + rv)),
    }
}

impl NormalizeAct {
    /// Backward of `y` from `dy`: `dz` (the gradient at the pre-activation, also the residual's),
    /// then BatchNorm's `dx` and `[dgamma; dbeta]`.
    fn grads(&self, x: &Tensor, gb: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let dz = if self.lo == f64::NEG_INFINITY && self.hi == f64::INFINITY {
            dy.contiguous()?
        } else {
            super::clamp::clamp_grad(y, dy, self.lo, self.hi)?
        };
        // One op computes [dbeta; dgamma] per channel, another dx from them.
        let sums = x.apply_op2_no_bwd(&dz, &Sums { st: self.st.clone() })?;
        let c = x.dim(1)?;
        let dgb =
            Tensor::cat(&[sums.narrow(0, 1, 1)?, sums.narrow(0, 0, 1)?], 0)?.reshape(2 * c)?.to_dtype(gb.dtype())?;
        let gamma = gb.narrow(0, 0, c)?;
        let dx = if self.batch {
            x.apply_op3_no_bwd(&dz, &gamma, &InputGrad { st: self.st.clone(), sums })?
        } else {
            // Fixed statistics: dx = gamma / sigma dz.
            dz.apply_op2_no_bwd(&gamma, &EvalInputGrad { st: self.st.clone() })?
        };
        Ok((dx, dgb, dz))
    }
}

impl candle_core::CustomOp2 for NormalizeAct {
    fn name(&self) -> &'static str {
        "batch-norm-act-train"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, p) = ncp(l1)?;
        let b = (self.lo, self.hi);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(normalize_act(contiguous(x, l1)?, contiguous(g, l2)?, None, &self.st, (c, p), b))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(normalize_act(contiguous(x, l1)?, contiguous(g, l2)?, None, &self.st, (c, p), b))
            }
            _ => candle_core::bail!("batch_norm: operands must all be f32 or all f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gb: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dgb, _) = self.grads(x, gb, y, dy)?;
        Ok((Some(dx), Some(dgb)))
    }
}

impl CustomOp3 for NormalizeAct {
    fn name(&self) -> &'static str {
        "batch-norm-add-act-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, p) = ncp(l1)?;
        let b = (self.lo, self.hi);
        let out = dispatch3!(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            |x, g, r| normalize_act(x, g, Some(r), &self.st, (c, p), b),
            "batch_norm"
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgb, dz) = self.grads(x, gb, y, dy)?;
        Ok((Some(dx), Some(dgb), Some(dz)))
    }
}

/// `(dz, gamma) -> gamma_c / sigma_c dz` (eval mode's input gradient).
struct EvalInputGrad {
    st: Arc<Stats>,
}

impl candle_core::CustomOp2 for EvalInputGrad {
    fn name(&self) -> &'static str {
        "batch-norm-eval-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, p) = ncp(l1)?;
        fn scale<T: Float>(dz: &[T], g: &[T], st: &Stats, c: usize, p: usize) -> Vec<T> {
            crate::cpu::par_map_planes(dz, p, |i| T::of(g[i % c].f() * st.invstd[i % c]), |&a, v| v * a)
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(d), CpuStorage::F32(g)) => {
                CpuStorage::F32(scale(contiguous(d, l1)?, contiguous(g, l2)?, &self.st, c, p))
            }
            (CpuStorage::F64(d), CpuStorage::F64(g)) => {
                CpuStorage::F64(scale(contiguous(d, l1)?, contiguous(g, l2)?, &self.st, c, p))
            }
            _ => candle_core::bail!("batch_norm backward: only f32 and f64 are supported"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `(x, dy) -> [2, C]`: `sum(dy)` and `sum(dy xhat)` per channel.
struct Sums {
    st: Arc<Stats>,
}

fn sums<T: Float>(x: &[T], dy: &[T], st: &Stats, n: usize, c: usize, p: usize) -> Vec<f64> {
    let per: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, s) = (T::of(st.mean[ch]), st.invstd[ch]);
            let (mut a, mut b) = (0.0, 0.0);
            for i in 0..n {
                let o = (i * c + ch) * p;
                let (xp, gp) = (&x[o..o + p], &dy[o..o + p]);
                a += lane_sum(gp, |g| g);
                b += lane_sum2(xp, gp, |xv, g| g * (xv - m));
            }
            (a, b * s)
        })
        .collect();
    per.iter().map(|v| v.0).chain(per.iter().map(|v| v.1)).collect()
}

impl candle_core::CustomOp2 for Sums {
    fn name(&self) -> &'static str {
        "batch-norm-sums"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, p) = ncp(l1)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(d)) => sums(contiguous(x, l1)?, contiguous(d, l2)?, &self.st, n, c, p),
            (CpuStorage::F64(x), CpuStorage::F64(d)) => sums(contiguous(x, l1)?, contiguous(d, l2)?, &self.st, n, c, p),
            _ => candle_core::bail!("batch_norm backward: only f32 and f64 are supported"),
        };
        Ok((CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// `(x, dy, gamma) -> dx`.
struct InputGrad {
    st: Arc<Stats>,
    sums: Tensor,
}

/// `dx = k (M dy - dbeta - xhat dgamma)`, `k = gamma / sigma / M`, as `A dy + B x + C` per
/// channel (one pass).
fn input_grad<T: Float>(x: &[T], dy: &[T], g: &[T], st: &Stats, sums: &[f64], c: usize, p: usize) -> Vec<T> {
    // M = N * plane values per channel.
    let m = (x.len() / c) as f64;
    crate::cpu::par_map2_planes(
        x,
        dy,
        p,
        |i| {
            let ch = i % c;
            let (mu, s) = (st.mean[ch], st.invstd[ch]);
            let (db, dg) = (sums[ch], sums[c + ch]);
            let k = g[ch].f() * s / m;
            // k (M dy - db - (x - mu) s dg) = (k M) dy + (-k s dg) x + k (mu s dg - db)
            (T::of(k * m), T::of(-k * s * dg), T::of(k * (mu * s * dg - db)))
        },
        |&(a, b, cc), xv, gy| a * gy + b * xv + cc,
    )
}

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, p) = ncp(l1)?;
        let sums: Vec<f64> = self.sums.flatten_all()?.to_vec1()?;
        let out = dispatch3!(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            |x, d, g| input_grad(x, d, g, &self.st, &sums, c, p),
            "batch_norm backward"
        );
        Ok((out, l1.shape().clone()))
    }
}

/// Training-mode batch norm of a contiguous CPU `[N, C, ...]` tensor: returns `y` and the batch
/// `(mean, biased variance)` as `[C]` f64 tensors (for the running statistics).
pub fn batch_norm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_act_train(x, gamma, beta, None, eps, (f64::NEG_INFINITY, f64::INFINITY))
}

/// [`batch_norm_train`] followed by `+ residual` (same shape as `x`) and `clamp(., lo, hi)`
/// (ReLU: `(0, inf)`; ReLU6: `(0, 6)`; none: `(-inf, inf)`) in one op; the gradient passes
/// where the output lies strictly inside `(lo, hi)`, as PyTorch's.
pub fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    bounds: (f64, f64),
) -> Result<(Tensor, Tensor, Tensor)> {
    let x = x.contiguous()?;
    let st_t = x.apply_op1_no_bwd(&StatsOp { eps })?;
    let v: Vec<f64> = st_t.flatten_all()?.to_vec1()?;
    let c = x.dim(1)?;
    let st = Stats {
        mean: v[..c].to_vec(),
        invstd: v[c..].iter().map(|var| 1.0 / (var + eps).sqrt()).collect(),
        var: v[c..].to_vec(),
    };
    let mean = Tensor::from_vec(st.mean.clone(), c, x.device())?;
    let var = Tensor::from_vec(st.var.clone(), c, x.device())?;
    let y =
        apply(&x, gamma, beta, residual, NormalizeAct { st: Arc::new(st), lo: bounds.0, hi: bounds.1, batch: true })?;
    Ok((y, mean, var))
}

/// Eval-mode batch norm from the running statistics, followed by `+ residual` and
/// `clamp(., lo, hi)`, as one op with its backward (to `x`, `gamma`, `beta` and the residual;
/// the statistics are constants): `y = clamp(gamma (x - mu) / sqrt(var + eps) + beta (+ r))`.
pub fn batch_norm_act_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (running_mean, running_var): (&Tensor, &Tensor),
    residual: Option<&Tensor>,
    eps: f64,
    (lo, hi): (f64, f64),
) -> Result<Tensor> {
    let f64s = |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1() };
    let (mean, var) = (f64s(running_mean)?, f64s(running_var)?);
    if mean.len() != x.dim(1)? || var.len() != mean.len() {
        candle_core::bail!("batch_norm: {} running statistics for {} channels", mean.len(), x.dim(1)?)
    }
    let st = Stats { invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(), mean, var };
    apply(&x.contiguous()?, gamma, beta, residual, NormalizeAct { st: Arc::new(st), lo, hi, batch: false })
}

fn apply(x: &Tensor, gamma: &Tensor, beta: &Tensor, residual: Option<&Tensor>, op: NormalizeAct) -> Result<Tensor> {
    let gb = Tensor::cat(&[gamma, beta], 0)?;
    match residual {
        None => x.apply_op2(&gb, op),
        Some(r) => {
            if r.dims() != x.dims() {
                candle_core::bail!("batch_norm: residual {:?} does not match the input {:?}", r.dims(), x.dims())
            }
            x.apply_op3(&gb, &r.contiguous()?, op)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 2001) as f64 / 1000.0) - 1.0).collect()
    }

    /// The composed definition, differentiated by candle's autograd.
    fn reference(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let c = x.dim(1).expect("c");
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        let dims: Vec<usize> = (0..x.rank()).filter(|d| *d != 1).collect();
        let mean = x.mean_keepdim(dims.as_slice()).expect("mean");
        let xc = x.broadcast_sub(&mean).expect("xc");
        let var = xc.sqr().expect("s").mean_keepdim(dims.as_slice()).expect("var");
        let xhat = xc.broadcast_div(&(var + eps).expect("e").sqrt().expect("sqrt")).expect("xhat");
        xhat.broadcast_mul(&g.reshape(shape.as_slice()).expect("g"))
            .expect("m")
            .broadcast_add(&b.reshape(shape.as_slice()).expect("b"))
            .expect("a")
    }

    #[test]
    fn matches_the_composed_definition_forward_and_backward() {
        for dims in [vec![4usize, 3, 5, 6], vec![8, 5], vec![2, 7, 3, 1]] {
            let c = dims[1];
            let n: usize = dims.iter().product();
            let x = Var::from_vec(
                values(n, 1).iter().map(|v| v * 3.0 + 0.5).collect::<Vec<_>>(),
                dims.as_slice(),
                &Device::Cpu,
            )
            .expect("x");
            let g =
                Var::from_vec(values(c, 2).iter().map(|v| v + 1.5).collect::<Vec<_>>(), c, &Device::Cpu).expect("g");
            let b = Var::from_vec(values(c, 3), c, &Device::Cpu).expect("b");
            let r = Tensor::from_vec(values(n, 4), dims.as_slice(), &Device::Cpu).expect("r");
            let (y, mean, var) = batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5).expect("ours");
            let yr = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5);
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f64>().expect("s")
            };
            assert!(diff(&y, &yr) < 1e-12, "forward {dims:?}");
            assert_eq!(mean.dims(), &[c]);
            assert!(var.to_vec1::<f64>().expect("v").iter().all(|v| *v > 0.0));
            let g1 = (y * &r).expect("m").sum_all().expect("s").backward().expect("b");
            let g2 = (yr * &r).expect("m").sum_all().expect("s").backward().expect("b");
            for v in [x.as_tensor(), g.as_tensor(), b.as_tensor()] {
                assert!(
                    diff(g1.get(v).expect("ours"), g2.get(v).expect("ref")) < 1e-10,
                    "gradient {:?} {dims:?}",
                    v.dims()
                );
            }
        }
        let bad = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("z");
        assert!(batch_norm_train(&bad, &bad, &bad, 1e-5).is_err());
    }

    /// The f32 path (computed in f32 with eight-lane sums) against the f64 one, on planes long
    /// enough for the lane sums and their remainders, values and gradients.
    #[test]
    fn f32_matches_f64_within_single_precision() {
        let dims = [3usize, 4, 7, 9];
        let n: usize = dims.iter().product();
        let run = |dt: DType| {
            let x = Var::from_tensor(
                &Tensor::from_vec(
                    values(n, 5).iter().map(|v| v * 4.0 + 2.0).collect::<Vec<_>>(),
                    &dims[..],
                    &Device::Cpu,
                )
                .expect("x")
                .to_dtype(dt)
                .expect("dt"),
            )
            .expect("var");
            let g = Tensor::from_vec(values(4, 6).iter().map(|v| v + 1.2).collect::<Vec<_>>(), 4, &Device::Cpu)
                .expect("g")
                .to_dtype(dt)
                .expect("dt");
            let b = Tensor::from_vec(values(4, 7), 4, &Device::Cpu).expect("b").to_dtype(dt).expect("dt");
            let r = Tensor::from_vec(values(n, 8), &dims[..], &Device::Cpu).expect("r").to_dtype(dt).expect("dt");
            let (y, _, _) = batch_norm_train(x.as_tensor(), &g, &b, 1e-5).expect("bn");
            let gx = (&y * &r).expect("m").sum_all().expect("s").backward().expect("b");
            let to64 = |t: &Tensor| {
                t.to_dtype(DType::F64).expect("f64").flatten_all().expect("f").to_vec1::<f64>().expect("v")
            };
            (to64(&y), to64(gx.get(x.as_tensor()).expect("dx")))
        };
        let (y32, d32) = run(DType::F32);
        let (y64, d64) = run(DType::F64);
        for (a, b) in y32.iter().zip(&y64).chain(d32.iter().zip(&d64)) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// BN + residual + ReLU / ReLU6 / nothing as one op against the composed candle ops.
    #[test]
    fn fused_residual_and_activation_match_the_composition() {
        let dims = [3usize, 4, 5, 6];
        let n: usize = dims.iter().product();
        let dev = Device::Cpu;
        let x =
            Var::from_vec(values(n, 11).iter().map(|v| v * 2.0 + 0.3).collect::<Vec<_>>(), &dims[..], &dev).expect("x");
        let g = Var::from_vec(values(4, 12).iter().map(|v| v + 1.5).collect::<Vec<_>>(), 4, &dev).expect("g");
        let b = Var::from_vec(values(4, 13), 4, &dev).expect("b");
        let r = Var::from_vec(values(n, 14).iter().map(|v| v * 3.0).collect::<Vec<_>>(), &dims[..], &dev).expect("r");
        let w = Tensor::from_vec(values(n, 15), &dims[..], &dev).expect("w");
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f64>().expect("s")
        };
        for (lo, hi) in [(0.0, f64::INFINITY), (0.0, 6.0), (f64::NEG_INFINITY, f64::INFINITY)] {
            for with_r in [false, true] {
                let res = with_r.then(|| r.as_tensor());
                let (y, _, _) = batch_norm_act_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), res, 1e-5, (lo, hi))
                    .expect("ours");
                let mut z = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5);
                if with_r {
                    z = (z + r.as_tensor()).expect("add");
                }
                let yr = if hi.is_finite() {
                    z.clamp(lo, hi).expect("clamp")
                } else if lo.is_finite() {
                    z.relu().expect("relu")
                } else {
                    z
                };
                assert!(diff(&y, &yr) < 1e-12, "forward ({lo}, {hi}) residual {with_r}");
                assert!(
                    y.to_vec1::<f64>().is_err()
                        && y.flatten_all()
                            .expect("f")
                            .to_vec1::<f64>()
                            .expect("v")
                            .iter()
                            .all(|v| *v >= lo && *v <= hi)
                );
                let g1 = (y * &w).expect("m").sum_all().expect("s").backward().expect("b");
                let g2 = (yr * &w).expect("m").sum_all().expect("s").backward().expect("b");
                let mut vars = vec![x.as_tensor(), g.as_tensor(), b.as_tensor()];
                if with_r {
                    vars.push(r.as_tensor());
                }
                for v in vars {
                    assert!(
                        diff(g1.get(v).expect("ours"), g2.get(v).expect("ref")) < 1e-10,
                        "gradient {:?} ({lo}, {hi}) residual {with_r}",
                        v.dims()
                    );
                }
            }
        }
        let wrong = Tensor::zeros((3, 4, 5, 5), DType::F64, &dev).expect("z");
        assert!(
            batch_norm_act_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), Some(&wrong), 1e-5, (0.0, 6.0)).is_err()
        );
    }

    /// Eval mode (running statistics as constants) with residual and activation against the
    /// composed candle ops, values and gradients.
    #[test]
    fn eval_mode_matches_the_composition() {
        let dims = [3usize, 4, 5, 6];
        let n: usize = dims.iter().product();
        let dev = Device::Cpu;
        let x = Var::from_vec(values(n, 21).iter().map(|v| v * 2.0).collect::<Vec<_>>(), &dims[..], &dev).expect("x");
        let g = Var::from_vec(values(4, 22).iter().map(|v| v + 1.5).collect::<Vec<_>>(), 4, &dev).expect("g");
        let b = Var::from_vec(values(4, 23), 4, &dev).expect("b");
        let r = Var::from_vec(values(n, 24), &dims[..], &dev).expect("r");
        let rm = Tensor::from_vec(values(4, 25), 4, &dev).expect("rm");
        let rv = Tensor::from_vec(values(4, 26).iter().map(|v| v + 1.2).collect::<Vec<_>>(), 4, &dev).expect("rv");
        let w = Tensor::from_vec(values(n, 27), &dims[..], &dev).expect("w");
        let shape = [1usize, 4, 1, 1];
        let z = x
            .as_tensor()
            .broadcast_sub(&rm.reshape(&shape[..]).expect("rm"))
            .expect("c")
            .broadcast_div(&(rv.reshape(&shape[..]).expect("rv") + 1e-5).expect("e").sqrt().expect("s"))
            .expect("d")
            .broadcast_mul(&g.as_tensor().reshape(&shape[..]).expect("g"))
            .expect("m")
            .broadcast_add(&b.as_tensor().reshape(&shape[..]).expect("b"))
            .expect("a");
        let yr = (z + r.as_tensor()).expect("r").clamp(0.0, 6.0).expect("clamp");
        let y = batch_norm_act_eval(
            x.as_tensor(),
            g.as_tensor(),
            b.as_tensor(),
            (&rm, &rv),
            Some(r.as_tensor()),
            1e-5,
            (0.0, 6.0),
        )
        .expect("ours");
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f64>().expect("s")
        };
        assert!(diff(&y, &yr) < 1e-12);
        let g1 = (y * &w).expect("m").sum_all().expect("s").backward().expect("b");
        let g2 = (yr * &w).expect("m").sum_all().expect("s").backward().expect("b");
        for v in [x.as_tensor(), g.as_tensor(), b.as_tensor(), r.as_tensor()] {
            assert!(diff(g1.get(v).expect("ours"), g2.get(v).expect("ref")) < 1e-10, "gradient {:?}", v.dims());
        }
    }

    #[test]
    fn rejects_one_dimensional_input() {
        let bad = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("z");
        assert!(batch_norm_train(&bad, &bad, &bad, 1e-5).is_err());
    }
}
