//! Per-channel bias of an NCHW activation as one op: `y[n, c, h, w] = x[n, c, h, w] + b[c]`,
//! `dx = dy`, `db[c] = sum_{n, h, w} dy[n, c, h, w]`.
//!
//! candle's broadcast add is fine forward, but its backward reduces `dy` over axes 0, 2 and 3
//! with a strided generic reduction, which in SR networks (a bias on every conv) cost about a
//! tenth of a training step; here each `(n, c)` plane is one contiguous sum.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x + b` with `x` `[N, C, H, W]` and `b` `[C]` (CPU f32; elsewhere candle's broadcast add).
pub fn bias_add_nchw(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || b.dtype() != DType::F32 || x.rank() != 4 {
        return x.broadcast_add(&b.reshape((1, (), 1, 1))?);
    }
    if b.dims() != [x.dim(1)?] {
        candle_core::bail!("bias of shape {:?} for {} channels", b.dims(), x.dim(1)?)
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
}

/// `x + b` with `x` `[.., D]` and `b` `[D]` (a linear layer's bias; CPU f32, elsewhere
/// candle's broadcast add): `db[d] = sum over rows of dy[.., d]`, summed row by row.
pub fn bias_add_last(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if b.dims() != [d] {
        candle_core::bail!("bias of shape {:?} for width {d}", b.dims())
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return x.broadcast_add(b);
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasAddLast)
}

#[derive(Debug, Clone, Copy)]
struct BiasAdd;

#[derive(Debug, Clone, Copy)]
struct BiasAddLast;

impl CustomOp2 for BiasAddLast {
    fn name(&self) -> &'static str {
        "bias-add-last"
    }

    fn cpu_fwd(&self, sx: &CpuStorage, lx: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let (x, b) = (slice(sx, lx)?, slice(sb, lb)?);
        let d = b.len().max(1);
        // One memory-bound pass (no copy-then-add).
        let y: Vec<f32> = x.chunks_exact(d).flat_map(|row| row.iter().zip(b).map(|(a, v)| a + v)).collect();
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = b.dim(0)?;
        let db = crate::cpu::with_f32(grad, |dy| {
            let parts: Vec<Vec<f64>> = dy
                .par_chunks(crate::cpu::rows_per_task(d) * d.max(1))
                .map(|c| {
                    let mut acc = vec![0f64; d];
                    for row in c.chunks_exact(d.max(1)) {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += f64::from(v));
                    }
                    acc
                })
                .collect();
            let mut db = vec![0f32; d];
            for i in 0..d {
                db[i] = parts.iter().map(|p| p[i]).sum::<f64>() as f32;
            }
            db
        })?;
        Ok((Some(grad.clone()), Some(Tensor::from_vec(db, d, b.device())?)))
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("bias_add: not contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("bias_add: f32 only"),
    }
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add-nchw"
    }

    fn cpu_fwd(&self, sx: &CpuStorage, lx: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let _span = super::profile::span(|| self.name().to_string());
        let (x, b) = (slice(sx, lx)?, slice(sb, lb)?);
        let dims = lx.dims();
        let plane = dims[2] * dims[3];
        let c = dims[1];
        let mut y = x.to_vec();
        if plane > 0 {
            y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
                let v = b[i % c];
                p.iter_mut().for_each(|a| *a += v);
            });
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, c, h, w) = x.dims4()?;
        let plane = h * w;
        let g = grad.contiguous()?;
        let (st, l) = g.storage_and_layout();
        let candle_core::Storage::Cpu(cs) = &*st else { candle_core::bail!("bias_add: CPU only") };
        let dy = slice(cs, l)?;
        // An empty plane has nothing to sum: every `db[c]` stays 0.
        let sums: Vec<f64> = dy.par_chunks(plane.max(1)).map(|p| p.iter().map(|&v| f64::from(v)).sum()).collect();
        let mut db = vec![0f64; c];
        for (i, s) in sums.iter().enumerate() {
            db[i % c] += s;
        }
        drop(st);
        let db = Tensor::from_vec(db.into_iter().map(|v| v as f32).collect::<Vec<f32>>(), b.shape(), b.device())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `ours(x, b)` equals `theirs(x, b)` exactly, and their gradients of `sum(y * w)` agree.
    fn check(
        shape: &[usize],
        c: usize,
        ours: impl Fn(&Tensor, &Tensor) -> Tensor,
        theirs: impl Fn(&Tensor, &Tensor) -> Tensor,
    ) {
        let dev = &Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, c, dev).unwrap()).unwrap();
        let wgt = Tensor::randn(0f32, 1.0, shape, dev).unwrap();
        let (y1, y2) = (ours(x.as_tensor(), b.as_tensor()), theirs(x.as_tensor(), b.as_tensor()));
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert_eq!(diff(&y1, &y2), 0.0, "{shape:?}");
        let g1 = (y1 * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (y2 * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &b] {
            let (a, e) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            let scale = e.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(diff(a, e) / scale < 1e-5, "{shape:?}");
        }
    }

    #[test]
    fn last_axis_bias_equals_candle_broadcast_add() {
        for shape in [vec![1usize, 1], vec![3, 5, 7], vec![4000, 9]] {
            let d = *shape.last().unwrap();
            check(&shape, d, |x, b| bias_add_last(x, b).unwrap(), |x, b| x.broadcast_add(b).unwrap());
        }
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(bias_add_last(&x, &Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn equals_candle_broadcast_add_values_and_gradients() {
        let dev = &Device::Cpu;
        for &(n, c, h, w) in &[(1usize, 1usize, 1usize, 1usize), (2, 3, 5, 7), (3, 8, 4, 1), (1, 5, 9, 9)] {
            check(
                &[n, c, h, w],
                c,
                |x, b| bias_add_nchw(x, b).unwrap(),
                |x, b| x.broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap(),
            );
        }
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, dev).unwrap();
        assert!(bias_add_nchw(&x, &Tensor::zeros(4, DType::F32, dev).unwrap()).is_err());
    }
}
