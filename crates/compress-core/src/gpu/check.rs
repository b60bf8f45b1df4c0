//! The device check of `cargo xtask gpu-check`: every owned kernel run on a device against the
//! CPU reference on the same inputs, over shapes that cover each kernel's branches (every
//! specialised block height and the generic one, ragged pixel counts, K x K with stride and
//! padding, bounds per tensor / channel / sample, both affine modes), and every owned CPU op's
//! composed form (what runs on other devices) against its CPU kernel, with gradients. The
//! quantizers must agree bit for bit (their kernels round each operation as the CPU does); sums
//! (the 1xN products, the bound gradients, the ops) to a relative bound.

use crate::quant::{affine_fake_quant, asym_fake_quant, symmetric_fake_quant};
use crate::sparse::{BlockOrder, PackedConv2d, PackedLinear, block_mask};
use candle_core::{Device, Module, Result, Tensor, Var};

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What ran.
    pub name: String,
    /// Largest difference to the CPU, relative to the CPU's largest magnitude.
    pub error: f64,
    /// The bound it must stay within (0: bit for bit).
    pub bound: f64,
}

impl Check {
    /// Whether it held.
    pub fn passed(&self) -> bool {
        self.error <= self.bound
    }
}

fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((((i + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5) * 2.0 * scale).collect()
}

fn tensor(shape: &[usize], seed: usize, scale: f32) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed, scale), shape, &Device::Cpu)
}

/// `max |a - b| / max(max |b|, 1e-6)` with `b` the CPU result.
fn relative(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.flatten_all()?.to_dtype(candle_core::DType::F64)?;
    let b = b.flatten_all()?.to_dtype(candle_core::DType::F64)?;
    if a.dims() != b.dims() {
        return Ok(f64::INFINITY);
    }
    let d = (a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(d / b.abs()?.max(0)?.to_scalar::<f64>()?.max(1e-6))
}

/// Every kernel on `device` against the CPU.
pub fn against_cpu(device: &Device) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let mut push = |name: String, got: &Tensor, want: &Tensor, bound: f64| -> Result<()> {
        out.push(Check { name, error: relative(got, want)?, bound });
        Ok(())
    };
    // The 1xN product: every block height (specialised and generic), 1x1 and K x K.
    for (n, c_in, c_out, k, stride, pad, side, batch) in [
        (1, 5, 3, 1, 1, 0, 7, 2),
        (2, 16, 8, 1, 1, 0, 13, 1),
        (3, 7, 12, 3, 2, 1, 9, 2),
        (4, 64, 256, 1, 1, 0, 14, 3),
        (8, 24, 144, 1, 1, 0, 11, 1),
        (8, 12, 16, 3, 1, 1, 10, 2),
        (16, 32, 64, 5, 2, 2, 12, 1),
        (32, 40, 64, 1, 2, 0, 9, 2),
    ] {
        let w = tensor(&[c_out, c_in, k, k], n + c_in, 1.0)?;
        let wm = (&w * block_mask(&w, n, 0.6, BlockOrder::Strict).map_err(candle_core::Error::wrap)?)?;
        let bias = tensor(&[c_out], 3, 0.5)?;
        let layer = PackedConv2d::from_dense(&wm, Some(&bias), n, stride, pad).map_err(candle_core::Error::wrap)?;
        let x = tensor(&[batch, c_in, side, side], side, 1.0)?;
        let want = layer.forward(&x)?;
        let got = layer.forward(&x.to_device(device)?)?;
        let name = format!("1xN conv N={n} {c_in}->{c_out} {k}x{k}/{stride} pad {pad} @{side} batch {batch}");
        push(name, &got, &want, 1e-5)?;
    }
    let w = tensor(&[24, 30], 7, 1.0)?;
    let wm = (&w * block_mask(&w, 4, 0.5, BlockOrder::Strict).map_err(candle_core::Error::wrap)?)?;
    let linear = PackedLinear::from_dense(&wm, Some(&tensor(&[24], 1, 0.5)?), 4).map_err(candle_core::Error::wrap)?;
    let x = tensor(&[3, 5, 30], 2, 1.0)?;
    push(
        "1xN linear N=4 30->24, [3, 5] rows".into(),
        &linear.forward(&x.to_device(device)?)?,
        &linear.forward(&x)?,
        1e-5,
    )?;

    // The fake quantizers: values bit for bit, gradients to f32 summation error.
    let x = tensor(&[4, 3, 5, 6], 11, 2.0)?;
    let scalar = |v: f32| Tensor::new(v, &Device::Cpu);
    let bounds = [
        ("per tensor", scalar(-0.7)?, scalar(1.3)?),
        (
            "per sample",
            tensor(&[4, 1, 1, 1], 5, 0.3)?.affine(1.0, -1.0)?,
            tensor(&[4, 1, 1, 1], 9, 0.3)?.affine(1.0, 1.2)?,
        ),
        (
            "per channel",
            tensor(&[1, 3, 1, 1], 5, 0.3)?.affine(1.0, -0.9)?,
            tensor(&[1, 3, 1, 1], 2, 0.3)?.affine(1.0, 0.8)?,
        ),
    ];
    for bits in [2u32, 3, 4, 8] {
        for (what, lo, hi) in &bounds {
            let on = |t: &Tensor| t.to_device(device);
            let (xc, lc, hc) = (Var::from_tensor(&x)?, Var::from_tensor(lo)?, Var::from_tensor(hi)?);
            let (xd, ld, hd) = (Var::from_tensor(&on(&x)?)?, Var::from_tensor(&on(lo)?)?, Var::from_tensor(&on(hi)?)?);
            let want = affine_fake_quant(&xc, &lc, &hc, bits).map_err(candle_core::Error::wrap)?;
            let got = affine_fake_quant(&xd, &ld, &hd, bits).map_err(candle_core::Error::wrap)?;
            push(format!("affine (DDTB) W{bits} {what}: values"), &got, &want, 0.0)?;
            let g = tensor(x.dims(), 4, 1.0)?;
            let gw = (&want * &g)?.sum_all()?.backward()?;
            let gg = (&got * &on(&g)?)?.sum_all()?.backward()?;
            for (v, d, part) in [(&xc, &xd, "dx"), (&lc, &ld, "dl"), (&hc, &hd, "du")] {
                let (Some(a), Some(b)) = (gg.get(d.as_tensor()), gw.get(v.as_tensor())) else {
                    candle_core::bail!("affine W{bits} {what}: no gradient for {part}")
                };
                push(format!("affine (DDTB) W{bits} {what}: {part}"), a, b, 1e-5)?;
            }
            let want = asym_fake_quant(&x, lo, hi, bits).map_err(candle_core::Error::wrap)?;
            let got = asym_fake_quant(&on(&x)?, &on(lo)?, &on(hi)?, bits).map_err(candle_core::Error::wrap)?;
            push(format!("asymmetric (IntraQ / FDDA) W{bits} {what}: values"), &got, &want, 0.0)?;
        }
        let alpha = scalar(1.1)?;
        let (xc, ac) = (Var::from_tensor(&x)?, Var::from_tensor(&alpha)?);
        let (xd, ad) = (Var::from_tensor(&x.to_device(device)?)?, Var::from_tensor(&alpha.to_device(device)?)?);
        let want = symmetric_fake_quant(&xc, &ac, bits).map_err(candle_core::Error::wrap)?;
        let got = symmetric_fake_quant(&xd, &ad, bits).map_err(candle_core::Error::wrap)?;
        push(format!("symmetric (PAMS) W{bits}: values"), &got, &want, 0.0)?;
        let gw = want.sum_all()?.backward()?;
        let gg = got.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (gg.get(ad.as_tensor()), gw.get(ac.as_tensor())) else {
            candle_core::bail!("symmetric W{bits}: no gradient for alpha")
        };
        push(format!("symmetric (PAMS) W{bits}: dalpha"), a, b, 1e-5)?;
    }
    for c in owned_ops(device)? {
        out.push(c);
    }
    Ok(out)
}

/// `f` on the device against the CPU on the same inputs: the output and the gradient of
/// `sum(f(inputs) * g)` to each input, for a fixed `g`.
fn with_gradients(
    device: &Device,
    name: &str,
    inputs: &[Tensor],
    bound: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<Check>> {
    let run = |dev: &Device| -> Result<(Tensor, Vec<Tensor>)> {
        let vars = inputs.iter().map(|t| Var::from_tensor(&t.to_device(dev)?)).collect::<Result<Vec<_>>>()?;
        let y = f(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>())?;
        let g = tensor(y.dims(), 13, 1.0)?.to_device(dev)?;
        let grads = (&y * &g)?.sum_all()?.backward()?;
        let mut d = Vec::with_capacity(vars.len());
        for (i, v) in vars.iter().enumerate() {
            match grads.get(v.as_tensor()) {
                Some(t) => d.push(t.clone()),
                None => candle_core::bail!("{name}: no gradient for input {i}"),
            }
        }
        Ok((y, d))
    };
    let ((want, dwant), (got, dgot)) = (run(&Device::Cpu)?, run(device)?);
    let mut out = vec![Check { name: format!("{name}: values"), error: relative(&got, &want)?, bound }];
    for (i, (a, b)) in dgot.iter().zip(&dwant).enumerate() {
        out.push(Check { name: format!("{name}: d input {i}"), error: relative(a, b)?, bound });
    }
    Ok(out)
}

/// The toolkit's own CPU ops (ops/): on another device each runs its composed form (candle's
/// ops), which must compute the CPU kernel's function and gradients.
fn owned_ops(device: &Device) -> Result<Vec<Check>> {
    use crate::ops;
    let mut out = Vec::new();
    let x = tensor(&[2, 3, 9, 9], 3, 2.0)?;
    for (k, st, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
        let name = format!("max_pool2d {k}x{k}/{st} pad {p} @9");
        out.extend(with_gradients(device, &name, std::slice::from_ref(&x), 1e-6, |t| {
            ops::max_pool2d(&t[0], k, st, p)
        })?);
    }
    let (gamma, beta, r) = (tensor(&[3], 4, 1.0)?.affine(1.0, 1.2)?, tensor(&[3], 6, 0.5)?, tensor(x.dims(), 8, 1.0)?);
    for (what, bounds) in
        [("none", (f64::NEG_INFINITY, f64::INFINITY)), ("ReLU", (0.0, f64::INFINITY)), ("ReLU6", (0.0, 6.0))]
    {
        let inputs = [x.clone(), gamma.clone(), beta.clone(), r.clone()];
        let name = format!("batch_norm_act_train + residual, {what}");
        out.extend(with_gradients(device, &name, &inputs, 1e-5, |t| {
            Ok(ops::batch_norm_act_train(&t[0], &t[1], &t[2], Some(&t[3]), 1e-5, bounds)?.0)
        })?);
        let stats = |dev: &Device| ops::batch_norm_act_train(&x.to_device(dev)?, &gamma, &beta, None, 1e-5, bounds);
        let ((_, m0, v0), (_, m1, v1)) = (stats(&Device::Cpu)?, stats(device)?);
        out.push(Check { name: format!("{name}: batch mean"), error: relative(&m1, &m0)?, bound: 1e-6 });
        out.push(Check { name: format!("{name}: batch variance"), error: relative(&v1, &v0)?, bound: 1e-6 });
        let running = (tensor(&[3], 2, 0.3)?, tensor(&[3], 5, 0.4)?.affine(1.0, 1.0)?);
        let name = format!("batch_norm_act_eval, {what}");
        out.extend(with_gradients(device, &name, &[x.clone(), gamma.clone(), beta.clone()], 1e-5, |t| {
            let dev = t[0].device();
            let (m, v) = (running.0.to_device(dev)?, running.1.to_device(dev)?);
            ops::batch_norm_act_eval(&t[0], &t[1], &t[2], (&m, &v), None, 1e-5, bounds)
        })?);
    }
    for (stride, pad, groups) in [(1, 1, 1), (2, 1, 3)] {
        let w = tensor(&[6, 3 / groups, 3, 3], 9, 0.5)?;
        let geo = ops::Conv2dGeometry::new(stride, pad, groups);
        let name = format!("conv2d 3->6 3x3/{stride} pad {pad} groups {groups}");
        out.extend(with_gradients(device, &name, &[x.clone(), w], 1e-5, |t| ops::conv2d(&t[0], &t[1], geo))?);
    }
    let rows = tensor(&[4, 7, 10], 12, 3.0)?;
    out.extend(with_gradients(device, "clamp_activation (0, 6)", std::slice::from_ref(&x), 0.0, |t| {
        ops::clamp_activation(&t[0], 0.0, 6.0)
    })?);
    out.extend(with_gradients(device, "softmax_last", std::slice::from_ref(&rows), 1e-6, |t| {
        ops::softmax_last(&t[0])
    })?);
    out.extend(with_gradients(device, "gelu_erf", std::slice::from_ref(&rows), 1e-5, |t| ops::gelu_erf(&t[0]))?);
    let (w, b) = (tensor(&[10], 3, 1.0)?, tensor(&[10], 7, 0.5)?);
    out.extend(with_gradients(device, "layer_norm", &[rows.clone(), w.clone(), b.clone()], 1e-5, |t| {
        ops::layer_norm(&t[0], &t[1], &t[2], 1e-6)
    })?);
    out.extend(with_gradients(device, "bias_add_last", &[rows, b], 1e-6, |t| ops::bias_add_last(&t[0], &t[1]))?);
    out.extend(with_gradients(device, "bias_add_nchw", &[x, tensor(&[3], 1, 1.0)?], 1e-6, |t| {
        ops::bias_add_nchw(&t[0], &t[1])
    })?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_agrees_with_itself_and_every_check_runs() {
        let checks = against_cpu(&Device::Cpu).unwrap();
        // 8 convs + 1 linear; per bit width 3 bound layouts x (values, dx, dl, du, asym) + 2
        // symmetric; the owned ops: 3 max pools x 2, 3 BatchNorm activations x (train: values,
        // 4 gradients, mean, variance; eval: values, 3 gradients), 2 convs x 3, clamp 2,
        // softmax 2, GELU 2, LayerNorm 4, the two bias additions 3 each.
        assert_eq!(checks.len(), 9 + 4 * (3 * 5 + 2) + 3 * 2 + 3 * (7 + 4) + 2 * 3 + 2 + 2 + 2 + 4 + 3 + 3);
        for c in &checks {
            assert!(c.passed() && c.error == 0.0, "{c:?}");
        }
        let off = Check { name: "x".into(), error: 2e-5, bound: 1e-5 };
        assert!(!off.passed());
    }

    #[test]
    fn relative_error_is_scaled_by_the_reference() {
        let a = Tensor::new(&[1.0f32, 2.0, 4.1], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f32, 2.0, 4.0], &Device::Cpu).unwrap();
        assert!((relative(&a, &b).unwrap() - 0.025).abs() < 1e-6);
        let c = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        assert_eq!(relative(&c, &b).unwrap(), f64::INFINITY, "shapes differ");
    }
}
