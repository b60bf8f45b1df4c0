//! A convolution, its training-mode BatchNorm, the residual addition and the activation as one
//! autograd node: `z = act(BN(conv(x, w)) (+ r))`.
//!
//! Built from the same kernels as [`super::conv2d()`] and [`super::batch_norm_act_train`]; what
//! the fusion saves is candle's per-node cost in the backward pass. candle accumulates each
//! node's input gradient into a freshly zeroed buffer (a zero fill and an addition over the whole
//! activation), so the conv output `y`, a node boundary in the composed form, costs two passes
//! for nothing. Here `y` stays inside the op (kept for the backward, as the composed graph keeps
//! it): the BatchNorm backward hands `dy` straight to the convolution's gradient kernels.
//!
//! Backward, with `st` the batch statistics of `y` and `m` the activation's mask at `z`:
//! `dy = BN'(y, m dz)` (two passes: the per-channel sums, then `dy`), `dx = conv^T(dy, w)`,
//! `dw = dy * x`, `[dgamma; dbeta]` from the sums, `dr = m dz`.

use super::batch_norm::{self, Stats};
use super::conv2d::{self, Conv2dGeometry, ConvInputGrad, ConvWeightGrad, Dims};
use super::residual_op::{ResidualOp, Scalar};
use candle_core::{Device, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

/// What the forward keeps for the backward: the conv output and its batch statistics.
#[derive(Debug)]
struct Saved {
    y: Tensor,
    st: Arc<Stats>,
}

/// `(x, [w; gamma; beta] (, r)) -> z`; the weight and the BatchNorm's affine parameters travel
/// as one flat tensor (candle's custom ops take at most three inputs).
struct ConvBnAct {
    d: Dims,
    eps: f64,
    bounds: (f64, f64),
    saved: Arc<OnceLock<Saved>>,
}

impl ResidualOp for ConvBnAct {
    const NAMES: [&'static str; 2] = ["conv-bn-act-train", "conv-bn-add-act-train"];

    /// The conv output and its statistics are kept for the backward; returns the activated
    /// normalisation.
    fn run<T: Scalar>(&self, x: &[T], _: &Layout, wgb: &[T], r: Option<&[T]>) -> Result<(Vec<T>, Shape)> {
        let d = &self.d;
        let (w, gb) = wgb.split_at(d.cout * d.kk());
        let y = conv2d::forward(x, w, d);
        let p = d.oh * d.ow;
        let st = batch_norm::stats(&y, d.n, d.cout, p, self.eps);
        let z = batch_norm::normalize_act(&y, gb, r, &st, (d.cout, p), self.bounds);
        let shape = Shape::from((d.n, d.cout, d.oh, d.ow));
        let y = Tensor::from_vec(y, shape.clone(), &Device::Cpu)?;
        if self.saved.set(Saved { y, st: Arc::new(st) }).is_err() {
            candle_core::bail!("conv_bn_act: the op ran twice")
        }
        Ok((z, shape))
    }

    /// `(dx, d[w; gamma; beta], dr)` from `dz` (no `dx` for an input that needs no gradient:
    /// the data batch into a network's first layer).
    fn grads(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        z: &Tensor,
        dz: &Tensor,
        residual: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else { candle_core::bail!("conv_bn_act: backward before forward") };
        let d = self.d;
        let nw = d.cout * d.kk();
        let w = wgb.narrow(0, 0, nw)?.reshape((d.cout, d.cin_g(), d.k, d.k))?;
        let gb = wgb.narrow(0, nw, 2 * d.cout)?;
        let (dy, dgb, dr) = batch_norm::train_grads(&saved.y, &gb, z, dz, &saved.st, self.bounds, residual)?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(&w, &ConvInputGrad(d))?) } else { None };
        let dw = x.apply_op2_no_bwd(&dy, &ConvWeightGrad(d))?;
        Ok((dx, Tensor::cat(&[dw.flatten_all()?, dgb], 0)?, dr))
    }
}

super::residual_op::residual_op!(ConvBnAct);

/// `act(BN(conv(x, w)) (+ residual))` in training mode (batch statistics) as one node, with
/// `act` the clamp to `bounds` (as [`super::batch_norm_act_train`]); returns the output and the
/// batch mean and biased variance of the conv output as `[C]` f64 tensors. Where the toolkit's
/// convolution does not run (other devices, dtypes, non-square kernels), the composed ops.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_act_train(
    x: &Tensor,
    w: &Tensor,
    geo: Conv2dGeometry,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    bounds: (f64, f64),
) -> Result<(Tensor, Tensor, Tensor)> {
    let Some(d) = conv2d::plan(x, w, geo)? else {
        let y = conv2d::conv2d(x, w, geo)?;
        return batch_norm::batch_norm_act_train(&y, gamma, beta, residual, eps, bounds);
    };
    if gamma.dims() != [d.cout] || beta.dims() != [d.cout] {
        candle_core::bail!("conv_bn_act: gamma {:?} and beta {:?} for {} channels", gamma.dims(), beta.dims(), d.cout)
    }
    let dt = x.dtype();
    let wgb = Tensor::cat(&[w.flatten_all()?, gamma.to_dtype(dt)?, beta.to_dtype(dt)?], 0)?;
    let saved = Arc::new(OnceLock::new());
    let op = ConvBnAct { d, eps, bounds, saved: saved.clone() };
    let x = x.contiguous()?;
    let z = match residual {
        None => x.apply_op2(&wgb, op)?,
        Some(r) => {
            if r.dims() != [d.n, d.cout, d.oh, d.ow] {
                candle_core::bail!(
                    "conv_bn_act: residual {:?} does not match the output {:?}",
                    r.dims(),
                    (d.n, d.cout, d.oh, d.ow)
                )
            }
            x.apply_op3(&wgb, &r.contiguous()?, op)?
        }
    };
    let Some(s) = saved.get() else { candle_core::bail!("conv_bn_act: the forward did not run") };
    let mean = Tensor::from_vec(s.st.mean.clone(), d.cout, x.device())?;
    let var = Tensor::from_vec(s.st.var.clone(), d.cout, x.device())?;
    Ok((z, mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 2001) as f64 / 1000.0) - 1.0).collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let f =
            |t: &Tensor| t.to_dtype(DType::F64).expect("f64").flatten_all().expect("f").to_vec1::<f64>().expect("v");
        let (a, b) = (f(a), f(b));
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        a.iter().zip(&b).map(|(u, v)| (u - v).abs()).fold(0.0, f64::max) / scale
    }

    /// The fused node against the composed ops (conv, then BatchNorm + residual + activation),
    /// output, batch statistics and the gradients of every input, relative to the largest value.
    fn check(
        dims: (usize, usize, usize, usize, usize, usize),
        geo: Conv2dGeometry,
        residual: bool,
        bounds: (f64, f64),
        dt: DType,
    ) {
        let (n, cin, cout, h, w, k) = dims;
        let dev = Device::Cpu;
        let var = |v: Vec<f64>, s: &[usize]| {
            Var::from_tensor(&Tensor::from_vec(v, s, &dev).expect("t").to_dtype(dt).expect("dt")).expect("var")
        };
        let x = var(values(n * cin * h * w, 1).iter().map(|v| 2.0 * v + 0.3).collect(), &[n, cin, h, w]);
        let wt = var(values(cout * cin / geo.groups * k * k, 2), &[cout, cin / geo.groups, k, k]);
        let g = var(values(cout, 3).iter().map(|v| v + 1.2).collect(), &[cout]);
        let b = var(values(cout, 4), &[cout]);
        let y0 = conv2d::conv2d(x.as_tensor(), wt.as_tensor(), geo).expect("conv");
        let r = var(values(y0.elem_count(), 5), y0.dims());
        let res = residual.then(|| r.as_tensor());
        let (z1, m1, v1) =
            conv_bn_act_train(x.as_tensor(), wt.as_tensor(), geo, g.as_tensor(), b.as_tensor(), res, 1e-5, bounds)
                .expect("fused");
        let (z2, m2, v2) =
            batch_norm::batch_norm_act_train(&y0, g.as_tensor(), b.as_tensor(), res, 1e-5, bounds).expect("composed");
        let tol = if dt == DType::F64 { 1e-10 } else { 1e-4 };
        assert!(max_diff(&z1, &z2) < tol, "forward");
        assert!(max_diff(&m1, &m2) < tol && max_diff(&v1, &v2) < tol, "statistics");
        let dz = Tensor::from_vec(values(z1.elem_count(), 6), z1.dims(), &dev).expect("dz").to_dtype(dt).expect("dt");
        let g1 = (z1 * &dz).expect("m").sum_all().expect("s").backward().expect("fused backward");
        let g2 = (z2 * &dz).expect("m").sum_all().expect("s").backward().expect("composed backward");
        let mut vars = vec![("x", &x), ("w", &wt), ("gamma", &g), ("beta", &b)];
        if residual {
            vars.push(("r", &r));
        }
        for (name, v) in vars {
            let (a, b) = (g1.get(v.as_tensor()).expect("fused grad"), g2.get(v.as_tensor()).expect("composed grad"));
            let e = max_diff(a, b);
            assert!(e < tol, "d{name}: {e} for {dims:?} {geo:?} residual {residual} {bounds:?} {dt:?}");
        }
    }

    #[test]
    fn matches_the_composed_ops_values_and_gradients() {
        let g = Conv2dGeometry::new;
        let relu = (0.0, f64::INFINITY);
        for dt in [DType::F64, DType::F32] {
            check((4, 3, 8, 9, 9, 3), g(1, 1, 1), false, relu, dt);
            check((3, 8, 8, 7, 7, 3), g(1, 1, 1), true, relu, dt);
            check((2, 6, 4, 9, 8, 3), g(2, 1, 1), false, (0.0, 6.0), dt);
            check((2, 6, 6, 8, 8, 3), g(1, 1, 6), false, (0.0, 6.0), dt); // depthwise
            check((3, 8, 12, 5, 5, 1), g(1, 0, 1), true, (f64::NEG_INFINITY, f64::INFINITY), dt); // pointwise
            check((2, 4, 6, 9, 9, 1), g(2, 0, 1), false, (f64::NEG_INFINITY, f64::INFINITY), dt); // projection
        }
    }

    /// An input that needs no gradient (the data batch) gets none, and the parameters' gradients
    /// are those computed with it as a variable; likewise for the plain convolution.
    #[test]
    fn constant_inputs_get_no_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(2 * 3 * 6 * 6, 1), (2, 3, 6, 6), &dev).expect("x");
        let w = Var::from_vec(values(4 * 3 * 9, 2), (4, 3, 3, 3), &dev).expect("w");
        let g = Var::from_vec(vec![1.0f64; 4], 4, &dev).expect("g");
        let b = Var::from_vec(values(4, 3), 4, &dev).expect("b");
        let geo = Conv2dGeometry::new(1, 1, 1);
        let relu = (0.0, f64::INFINITY);
        let grads = |x: &Tensor| {
            let (z, _, _) = conv_bn_act_train(x, w.as_tensor(), geo, g.as_tensor(), b.as_tensor(), None, 1e-5, relu)
                .expect("fused");
            let y = conv2d::conv2d(x, w.as_tensor(), geo).expect("conv");
            let (zs, ys) = (z.sqr().expect("s").sum_all().expect("s"), y.sqr().expect("s").sum_all().expect("s"));
            (zs + ys).expect("loss").backward().expect("backward")
        };
        let xv = Var::from_tensor(&x).expect("var");
        let (constant, variable) = (grads(&x), grads(xv.as_tensor()));
        assert!(constant.get(&x).is_none());
        assert!(variable.get(xv.as_tensor()).is_some());
        for v in [&w, &g, &b] {
            let (a, b) = (constant.get(v.as_tensor()).expect("a"), variable.get(v.as_tensor()).expect("b"));
            assert!(max_diff(a, b) < 1e-12);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev).expect("x");
        let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).expect("w");
        let (g3, g4) = (Tensor::ones(3, DType::F32, &dev).expect("g"), Tensor::ones(4, DType::F32, &dev).expect("g"));
        let geo = Conv2dGeometry::new(1, 1, 1);
        let relu = (0.0, f64::INFINITY);
        assert!(conv_bn_act_train(&x, &w, geo, &g3, &g3, None, 1e-5, relu).is_err());
        let r = Tensor::zeros((2, 4, 4, 4), DType::F32, &dev).expect("r");
        assert!(conv_bn_act_train(&x, &w, geo, &g4, &g4, Some(&r), 1e-5, relu).is_err());
        assert!(conv_bn_act_train(&x, &w, geo, &g4, &g4, None, 1e-5, relu).is_ok());
    }
}
