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

use super::scalar::Scalar;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Per-channel statistics of one batch.
#[derive(Debug, Clone)]
pub(super) struct Stats {
    pub(super) mean: Vec<f64>,
    pub(super) invstd: Vec<f64>,
    pub(super) var: Vec<f64>,
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

/// Whether `bounds` clamp nothing (no activation: every `dy` passes).
fn no_activation((lo, hi): (f64, f64)) -> bool {
    lo == f64::NEG_INFINITY && hi == f64::INFINITY
}

/// The activation's gradient mask as a function of its output: `dy` where `lo < y < hi`, else 0
/// (PyTorch's ReLU / hardtanh rule). Callers take `|_, d| d` instead when there is no
/// activation: a run-time flag inside the loops stops the compiler from vectorising them.
fn clamp_mask<T: Scalar>((lo, hi): (f64, f64)) -> impl Fn(T, T) -> T + Copy + Send + Sync {
    let (lo, hi) = (T::of(lo), T::of(hi));
    move |y, d| if (y > lo) & (y < hi) { d } else { T::default() }
}

/// Per-channel totals of `K` element-wise quantities over `[N, C, plane]` data: `add(i, acc)`
/// adds sample `i`'s values into `K` accumulators of one sample's shape (`C plane` values:
/// loops without a reduction chain, so they vectorise, and no per-plane overhead where planes
/// hold four values). The samples are split into chunks that depend on the shape alone (at
/// most [`crate::cpu::PARTS`], each worth a task), each chunk's accumulators are folded per
/// channel in f64, and the chunks' totals are added in order: the same bits on any number of
/// threads. Returns `K` blocks of `C` f64 totals.
fn channel_sums<T: Scalar, const K: usize>(
    (n, c, p): (usize, usize, usize),
    add: impl Fn(usize, &mut [Vec<T>; K]) + Sync + Send,
) -> Vec<f64> {
    let cp = c * p;
    let per_channel = |acc: [Vec<T>; K]| -> Vec<f64> {
        let total = |v: &[T]| v.iter().map(|t| t.f()).sum::<f64>();
        acc.iter().flat_map(|a| a.chunks(p.max(1)).map(total).collect::<Vec<_>>()).collect()
    };
    let chunk = crate::cpu::rows_per_task(cp).max(n.div_ceil(crate::cpu::PARTS)).max(1);
    let parts: Vec<Vec<f64>> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|k| {
            let mut acc: [Vec<T>; K] = std::array::from_fn(|_| vec![T::default(); cp]);
            for i in k * chunk..((k + 1) * chunk).min(n) {
                add(i, &mut acc);
            }
            per_channel(acc)
        })
        .collect();
    let mut total = vec![0.0; K * c];
    for part in parts {
        total.iter_mut().zip(part).for_each(|(s, t)| *s += t);
    }
    total
}

/// Each channel's value repeated over its plane: one sample's `C plane` values.
fn per_value<T: Scalar>(v: &[f64], p: usize) -> Vec<T> {
    v.iter().flat_map(|&m| std::iter::repeat_n(T::of(m), p)).collect()
}

/// Batch mean and biased variance per channel (two passes: the mean, then the squared
/// deviations from it).
pub(super) fn stats<T: Scalar>(x: &[T], n: usize, c: usize, p: usize, eps: f64) -> Stats {
    let (cp, m) = (c * p, (n * p).max(1) as f64);
    let sample = |i: usize| &x[i * cp..(i + 1) * cp];
    let sums = channel_sums((n, c, p), |i, [a]: &mut [Vec<T>; 1]| {
        for (a, &v) in a.iter_mut().zip(sample(i)) {
            *a += v;
        }
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / m).collect();
    let mu = per_value::<T>(&mean, p);
    let sq = channel_sums((n, c, p), |i, [a]: &mut [Vec<T>; 1]| {
        for ((a, &v), &u) in a.iter_mut().zip(sample(i)).zip(&mu) {
            let d = v - u;
            *a += d * d;
        }
    });
    let var: Vec<f64> = sq.iter().map(|q| q / m).collect();
    Stats { invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(), mean, var }
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
        let _span = super::profile::span(|| self.name().to_string());
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
/// `(a_c, b_c)` with `gamma xhat + beta = a_c x + b_c`: `a_c = gamma_c / sigma_c`,
/// `b_c = beta_c - mu_c a_c` (`gb = [gamma; beta]`). The forward and the backward's activation
/// mask both take the pre-activation from these, so they agree to the bit.
fn scale_shift(st: &Stats, gb: &[f64]) -> Vec<(f64, f64)> {
    let c = st.mean.len();
    (0..c)
        .map(|ch| {
            let a = st.invstd[ch] * gb[ch];
            (a, gb[c + ch] - st.mean[ch] * a)
        })
        .collect()
}

pub(super) fn normalize_act<T: Scalar>(
    x: &[T],
    gb: &[T],
    r: Option<&[T]>,
    st: &Stats,
    (c, p): (usize, usize),
    (lo, hi): (f64, f64),
) -> Vec<T> {
    let gb: Vec<f64> = gb.iter().map(|v| v.f()).collect();
    let ab = scale_shift(st, &gb);
    let consts = |ch: usize| (T::of(ab[ch].0), T::of(ab[ch].1));
    let (lo, hi) = (T::of(lo), T::of(hi));
    let clamp = move |z: T| {
        let z = if z < lo { lo } else { z };
        if z > hi { hi } else { z }
    };
    match r {
        None => crate::cpu::par_map_planes(x, (c, p), consts, |&(a, b), v| clamp(v * a + b)),
        Some(r) => crate::cpu::par_map2_planes(x, r, (c, p), consts, |&(a, b), v, rv| clamp(v * a + b + rv)),
    }
}

impl super::residual_op::ResidualOp for NormalizeAct {
    const NAMES: [&'static str; 2] = ["batch-norm-act-train", "batch-norm-add-act-train"];

    fn run<T: super::residual_op::Scalar>(
        &self,
        x: &[T],
        lx: &Layout,
        gb: &[T],
        r: Option<&[T]>,
    ) -> Result<(Vec<T>, Shape)> {
        let (_, c, p) = ncp(lx)?;
        Ok((normalize_act(x, gb, r, &self.st, (c, p), (self.lo, self.hi)), lx.shape().clone()))
    }

    /// Backward of `y` from `dy`: BatchNorm's `dx` and `[dgamma; dbeta]`, and (when `want_dz`)
    /// `dz`, the gradient at the pre-activation (the residual's).
    fn grads(
        &self,
        x: &Tensor,
        gb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        want_dz: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let bounds = (self.lo, self.hi);
        if self.batch {
            let (dx, dgb, dz) = train_grads(x, gb, y, dy, &self.st, bounds, want_dz)?;
            return Ok((Some(dx), dgb, dz));
        }
        // Fixed statistics: dx = gamma / sigma dz.
        let dz = masked_grad(y, dy, bounds)?;
        let c = x.dim(1)?;
        let sums = x.apply_op3_no_bwd(y, dy, &Sums { st: self.st.clone(), bounds, pre: vec![(1.0, 0.0); c] })?;
        let dx = dz.apply_op2_no_bwd(&gb.narrow(0, 0, c)?, &EvalInputGrad { st: self.st.clone() })?;
        Ok((Some(dx), gamma_beta_grads(&sums, c, gb.dtype())?, want_dz.then_some(dz)))
    }
}

/// `dy` masked by the activation at its output `y` (one pass; none without an activation).
fn masked_grad(y: &Tensor, dy: &Tensor, (lo, hi): (f64, f64)) -> Result<Tensor> {
    if lo == f64::NEG_INFINITY && hi == f64::INFINITY {
        dy.contiguous()
    } else {
        super::clamp::clamp_grad(y, dy, lo, hi)
    }
}

/// `[dgamma; dbeta]` in `dtype` from the `[2, C]` sums `[sum dz; sum dz xhat]`.
fn gamma_beta_grads(sums: &Tensor, c: usize, dtype: candle_core::DType) -> Result<Tensor> {
    Tensor::cat(&[sums.narrow(0, 1, 1)?, sums.narrow(0, 0, 1)?], 0)?.reshape(2 * c)?.to_dtype(dtype)
}

/// The training-mode backward of `y = act(gamma xhat + beta (+ r))` from `dy`, with the batch
/// statistics `st` of the input `x`: `(dx, [dgamma; dbeta], dz)` (`dz`, the masked `dy` that the
/// residual receives, only when `want_dz`). Two passes over the data: the per-channel sums, then
/// `dx`; both apply the activation's mask themselves.
pub(super) fn train_grads(
    x: &Tensor,
    gb: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    st: &Arc<Stats>,
    bounds: (f64, f64),
    want_dz: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (y, dy) = (y.contiguous()?, dy.contiguous()?);
    let c = x.dim(1)?;
    let gbv: Vec<f64> = gb.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    // The mask's operand: without a residual, the pre-activation is `a_c x + b_c` (from `x`,
    // which the passes read anyway: one stream fewer than reading the output `y`); with one it
    // is not recoverable from `x`, so the output (`1 y + 0`).
    let (m, pre) = if want_dz { (&y, vec![(1.0, 0.0); c]) } else { (x, scale_shift(st, &gbv)) };
    let sums = x.apply_op3_no_bwd(m, &dy, &Sums { st: st.clone(), bounds, pre: pre.clone() })?;
    let sv: Vec<f64> = sums.flatten_all()?.to_vec1()?;
    let gamma = gbv[..c].to_vec();
    let dx = x.apply_op3_no_bwd(m, &dy, &InputGrad { st: st.clone(), sums: sv, gamma, bounds, pre })?;
    let dz = if want_dz { Some(masked_grad(&y, &dy, bounds)?) } else { None };
    Ok((dx, gamma_beta_grads(&sums, c, gb.dtype())?, dz))
}

super::residual_op::residual_op!(NormalizeAct);

/// `(dz, gamma) -> gamma_c / sigma_c dz` (eval mode's input gradient).
struct EvalInputGrad {
    st: Arc<Stats>,
}

impl candle_core::CustomOp2 for EvalInputGrad {
    fn name(&self) -> &'static str {
        "batch-norm-eval-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let (_, c, p) = ncp(l1)?;
        fn scale<T: Scalar>(dz: &[T], g: &[T], st: &Stats, c: usize, p: usize) -> Vec<T> {
            crate::cpu::par_map_planes(dz, (c, p), |ch| T::of(g[ch].f() * st.invstd[ch]), |&a, v| v * a)
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

/// `(x, m, dy) -> [2, C]`: `sum(dz)` and `sum(dz xhat)` per channel, `dz` the output gradient
/// `dy` masked by the activation at its input `pre_a m + pre_b` (per channel).
struct Sums {
    st: Arc<Stats>,
    bounds: (f64, f64),
    pre: Vec<(f64, f64)>,
}

impl Sums {
    fn run<T: Scalar>(&self, x: &[T], y: &[T], dy: &[T], dims: (usize, usize, usize)) -> Vec<f64> {
        if no_activation(self.bounds) {
            return self.run_masked(x, y, dy, dims, |_, d| d);
        }
        self.run_masked(x, y, dy, dims, clamp_mask(self.bounds))
    }

    /// `[sum dz; sum dz xhat]` per channel, `dz = mask(pre_a y + pre_b, dy)`, in one pass.
    fn run_masked<T: Scalar, M: Fn(T, T) -> T + Copy + Send + Sync>(
        &self,
        x: &[T],
        y: &[T],
        dy: &[T],
        (n, c, p): (usize, usize, usize),
        mask: M,
    ) -> Vec<f64> {
        let (cp, st, pre) = (c * p, &self.st, &self.pre);
        let mu = per_value::<T>(&st.mean, p);
        // (mu, pre_a, pre_b) of every value of a sample.
        let k: Vec<(T, T, T)> = (0..cp).map(|j| (mu[j], T::of(pre[j / p].0), T::of(pre[j / p].1))).collect();
        let mut out = channel_sums((n, c, p), |i, [a, b]: &mut [Vec<T>; 2]| {
            let (xs, ys, ds) = (&x[i * cp..(i + 1) * cp], &y[i * cp..(i + 1) * cp], &dy[i * cp..(i + 1) * cp]);
            for (((((a, b), &xv), &yv), &dv), &(m, pa, pb)) in
                a.iter_mut().zip(b.iter_mut()).zip(xs).zip(ys).zip(ds).zip(&k)
            {
                let g = mask(yv * pa + pb, dv);
                *a += g;
                *b += g * (xv - m);
            }
        });
        for (ch, v) in out[c..].iter_mut().enumerate() {
            *v *= st.invstd[ch];
        }
        out
    }
}

impl CustomOp3 for Sums {
    fn name(&self) -> &'static str {
        "batch-norm-sums"
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
        let _span = super::profile::span(|| self.name().to_string());
        let dims = ncp(l1)?;
        let v = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(d)) => {
                self.run(contiguous(x, l1)?, contiguous(y, l2)?, contiguous(d, l3)?, dims)
            }
            (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(d)) => {
                self.run(contiguous(x, l1)?, contiguous(y, l2)?, contiguous(d, l3)?, dims)
            }
            _ => candle_core::bail!("batch_norm backward: only f32 and f64 are supported"),
        };
        Ok((CpuStorage::F64(v), Shape::from((2, dims.1))))
    }
}

/// `(x, m, dy) -> dx`, the activation's mask (at `pre_a m + pre_b`) applied to `dy` on the way.
struct InputGrad {
    st: Arc<Stats>,
    /// `[sum dz; sum dz xhat]` per channel.
    sums: Vec<f64>,
    gamma: Vec<f64>,
    bounds: (f64, f64),
    pre: Vec<(f64, f64)>,
}

impl InputGrad {
    /// `dx = k (M dz - dbeta - xhat dgamma)`, `k = gamma / sigma / M`, as `A dz + B x + C` per
    /// channel (one pass).
    fn run<T: Scalar>(&self, x: &[T], y: &[T], dy: &[T], c: usize, p: usize) -> Vec<T> {
        if no_activation(self.bounds) {
            return self.run_masked(x, y, dy, (c, p), |_, d| d);
        }
        self.run_masked(x, y, dy, (c, p), clamp_mask(self.bounds))
    }

    fn run_masked<T: Scalar, M: Fn(T, T) -> T + Sync>(
        &self,
        x: &[T],
        y: &[T],
        dy: &[T],
        (c, p): (usize, usize),
        mask: M,
    ) -> Vec<T> {
        let (st, sums) = (&self.st, &self.sums);
        // M = N * plane values per channel.
        let m = (x.len() / c) as f64;
        crate::cpu::par_map3_planes(
            x,
            y,
            dy,
            (c, p),
            |ch| {
                let (mu, s) = (st.mean[ch], st.invstd[ch]);
                let (db, dg) = (sums[ch], sums[c + ch]);
                let k = self.gamma[ch] * s / m;
                // k (M dz - db - (x - mu) s dg) = (k M) dz + (-k s dg) x + k (mu s dg - db)
                let (pa, pb) = self.pre[ch];
                (T::of(k * m), T::of(-k * s * dg), T::of(k * (mu * s * dg - db)), T::of(pa), T::of(pb))
            },
            |&(a, b, cc, pa, pb), xv, yv, gy| a * mask(yv * pa + pb, gy) + b * xv + cc,
        )
    }
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
        let _span = super::profile::span(|| self.name().to_string());
        let (_, c, p) = ncp(l1)?;
        let out = dispatch3!(s1, l1, s2, l2, s3, l3, |x, y, d| self.run(x, y, d, c, p), "batch_norm backward");
        Ok((out, l1.shape().clone()))
    }
}

/// Training-mode batch norm of an `[N, C, ...]` tensor: returns `y` and the batch
/// `(mean, biased variance)` as `[C]` f64 tensors (for the running statistics). The CPU kernels
/// in f32 / f64; on other devices and dtypes the same function composed from candle's ops.
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
    if !on_kernels(x) {
        return composed_train(x, gamma, beta, residual, eps, bounds);
    }
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
    if !on_kernels(x) {
        let c = |t: &Tensor| per_channel(&t.to_dtype(compute_dtype(x))?, x);
        return composed(x, gamma, beta, (&c(running_mean)?, &c(running_var)?), residual, eps, (lo, hi));
    }
    let f64s = |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1() };
    let (mean, var) = (f64s(running_mean)?, f64s(running_var)?);
    if mean.len() != x.dim(1)? || var.len() != mean.len() {
        candle_core::bail!("batch_norm: {} running statistics for {} channels", mean.len(), x.dim(1)?)
    }
    let st = Stats { invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(), mean, var };
    apply(&x.contiguous()?, gamma, beta, residual, NormalizeAct { st: Arc::new(st), lo, hi, batch: false })
}

/// Whether the CPU kernels run on `x` (the CPU, f32 / f64, kernels not switched off); elsewhere
/// (CUDA, half precision) the composed forms below, from candle's ops and their gradients.
fn on_kernels(x: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && !super::candle_only()
}

/// The composed forms compute in f32 (f64 for f64 inputs), also for half-precision inputs.
fn compute_dtype(x: &Tensor) -> candle_core::DType {
    if x.dtype() == candle_core::DType::F64 { candle_core::DType::F64 } else { candle_core::DType::F32 }
}

/// A `[C]` tensor as `[1, C, 1, ...]`, broadcastable against `x`.
fn per_channel(t: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; x.rank()];
    dims[1] = x.dim(1)?;
    t.reshape(dims)
}

/// [`batch_norm_act_train`] from candle's ops: the batch statistics over every axis but the
/// channels, with their gradient; `(mean, biased variance)` returned as `[C]` f64 constants.
fn composed_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    bounds: (f64, f64),
) -> Result<(Tensor, Tensor, Tensor)> {
    if x.rank() < 2 {
        candle_core::bail!("batch_norm: input {:?} has no channel axis", x.dims())
    }
    let xc = x.to_dtype(compute_dtype(x))?;
    let axes: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let mean = xc.mean_keepdim(axes.clone())?;
    let var = xc.broadcast_sub(&mean)?.sqr()?.mean_keepdim(axes)?;
    let y = composed(x, gamma, beta, (&mean, &var), residual, eps, bounds)?;
    let constant = |t: &Tensor| t.detach().flatten_all()?.to_dtype(candle_core::DType::F64);
    Ok((y, constant(&mean)?, constant(&var)?))
}

/// `clamp(gamma (x - mean) / sqrt(var + eps) + beta (+ r), lo, hi)` from candle's ops with the
/// statistics as `[1, C, 1, ...]`; in [`compute_dtype`], returned in `x`'s dtype.
fn composed(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, var): (&Tensor, &Tensor),
    residual: Option<&Tensor>,
    eps: f64,
    (lo, hi): (f64, f64),
) -> Result<Tensor> {
    let dt = compute_dtype(x);
    let c = |t: &Tensor| per_channel(&t.to_dtype(dt)?, x);
    let scale = c(gamma)?.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut y = x.to_dtype(dt)?.broadcast_sub(mean)?.broadcast_mul(&scale)?.broadcast_add(&c(beta)?)?;
    if let Some(r) = residual {
        if r.dims() != x.dims() {
            candle_core::bail!("batch_norm: residual {:?} does not match the input {:?}", r.dims(), x.dims())
        }
        y = (y + r.to_dtype(dt)?)?;
    }
    if lo > f64::NEG_INFINITY || hi < f64::INFINITY {
        y = super::clamp_activation(&y, lo, hi)?;
    }
    y.to_dtype(x.dtype())
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

    /// The f32 path (computed in f32 with per-value accumulators over the samples)
    /// against the f64 one, on planes long enough for the vector loops and their remainders
    /// (63 values), values and gradients, with each activation.
    #[test]
    fn f32_matches_f64_within_single_precision() {
        let dims = [3usize, 4, 7, 9];
        let n: usize = dims.iter().product();
        let run = |dt: DType, bounds: (f64, f64)| {
            let var = |v: Vec<f64>, s: &[usize]| {
                Var::from_tensor(&Tensor::from_vec(v, s, &Device::Cpu).expect("t").to_dtype(dt).expect("dt"))
                    .expect("var")
            };
            let x = var(values(n, 5).iter().map(|v| v * 4.0 + 2.0).collect(), &dims[..]);
            let g = var(values(4, 6).iter().map(|v| v + 1.2).collect(), &[4]);
            let b = var(values(4, 7), &[4]);
            let r = Tensor::from_vec(values(n, 8), &dims[..], &Device::Cpu).expect("r").to_dtype(dt).expect("dt");
            let (y, _, _) =
                batch_norm_act_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), None, 1e-5, bounds).expect("bn");
            let gx = (&y * &r).expect("m").sum_all().expect("s").backward().expect("b");
            let to64 = |t: &Tensor| {
                t.to_dtype(DType::F64).expect("f64").flatten_all().expect("f").to_vec1::<f64>().expect("v")
            };
            let mut out = to64(&y);
            for v in [&x, &g, &b] {
                out.extend(to64(gx.get(v.as_tensor()).expect("grad")));
            }
            out
        };
        for bounds in [(f64::NEG_INFINITY, f64::INFINITY), (0.0, f64::INFINITY), (0.0, 0.5)] {
            let (a32, a64) = (run(DType::F32, bounds), run(DType::F64, bounds));
            for (a, b) in a32.iter().zip(&a64) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b} with {bounds:?}");
            }
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

    /// The composed forms (other devices and dtypes) compute the kernels' function, gradients and
    /// batch statistics, in training and eval, with and without residual and activation.
    #[test]
    fn composed_forms_match_the_kernels() {
        let dev = Device::Cpu;
        for dims in [vec![3usize, 4, 5, 6], vec![8, 4]] {
            let n: usize = dims.iter().product();
            let var = |seed: u64, scale: f64, shift: f64, len: usize, shape: &[usize]| {
                let v: Vec<f64> = values(len, seed).iter().map(|v| v * scale + shift).collect();
                Var::from_vec(v, shape, &dev).expect("var")
            };
            let (x, r) = (var(31, 2.0, 0.3, n, &dims), var(32, 1.0, 0.0, n, &dims));
            let (g, b) = (var(33, 1.0, 1.5, 4, &[4]), var(34, 0.5, 0.0, 4, &[4]));
            let running = (
                Tensor::from_vec(values(4, 35), 4, &dev).expect("m"),
                (var(36, 0.4, 1.0, 4, &[4]).as_tensor()).clone(),
            );
            let w = Tensor::from_vec(values(n, 37), dims.as_slice(), &dev).expect("w");
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .expect("d")
                    .abs()
                    .expect("a")
                    .flatten_all()
                    .expect("f")
                    .max(0)
                    .expect("m")
                    .to_scalar::<f64>()
                    .expect("s")
            };
            let vars = [x.as_tensor(), g.as_tensor(), b.as_tensor(), r.as_tensor()];
            for bounds in [(0.0, f64::INFINITY), (0.0, 6.0), (f64::NEG_INFINITY, f64::INFINITY)] {
                let res = Some(r.as_tensor());
                let (yk, mk, vk) = batch_norm_act_train(&x, &g, &b, res, 1e-5, bounds).expect("kernel");
                let (yc, mc, vc) = composed_train(&x, &g, &b, res, 1e-5, bounds).expect("composed");
                assert!(
                    diff(&yk, &yc) < 1e-12 && diff(&mk, &mc) < 1e-12 && diff(&vk, &vc) < 1e-12,
                    "{dims:?} {bounds:?}"
                );
                let ek = batch_norm_act_eval(&x, &g, &b, (&running.0, &running.1), res, 1e-5, bounds).expect("kernel");
                let c = |t: &Tensor| per_channel(t, &x);
                let rc = (&c(&running.0).expect("m"), &c(&running.1).expect("v"));
                let ec = composed(&x, &g, &b, rc, res, 1e-5, bounds).expect("composed");
                assert!(diff(&ek, &ec) < 1e-12, "eval {dims:?} {bounds:?}");
                for (k, c) in [(yk, yc), (ek, ec)] {
                    let gk = (k * &w).expect("m").sum_all().expect("s").backward().expect("b");
                    let gc = (c * &w).expect("m").sum_all().expect("s").backward().expect("b");
                    for v in vars {
                        let (a, e) = (gk.get(v).expect("kernel grad"), gc.get(v).expect("composed grad"));
                        assert!(a.sqr().expect("s").sum_all().expect("s").to_scalar::<f64>().expect("s") > 1e-6);
                        assert!(diff(a, e) < 1e-10, "gradient {:?} {dims:?} {bounds:?}", v.dims());
                    }
                }
            }
            // Half precision on the CPU takes the composed form and returns its dtype.
            let h = x.as_tensor().to_dtype(DType::F16).expect("f16");
            let (yh, _, _) = batch_norm_act_train(&h, &g, &b, None, 1e-5, (0.0, 6.0)).expect("f16");
            let (yk, _, _) = batch_norm_act_train(&x, &g, &b, None, 1e-5, (0.0, 6.0)).expect("f64");
            assert_eq!(yh.dtype(), DType::F16);
            assert!(diff(&yh.to_dtype(DType::F64).expect("f64"), &yk) < 1e-2);
        }
    }

    #[test]
    fn rejects_one_dimensional_input() {
        let bad = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("z");
        assert!(batch_norm_train(&bad, &bad, &bad, 1e-5).is_err());
    }
}
