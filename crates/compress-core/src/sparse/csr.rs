//! Unstructured sparsity in compressed sparse rows: the weight-pruning baseline the 1xN kernel
//! must beat (spec section 9, "Speed check"). Row `o` of `A = W[C_out, C_in]` keeps its non-zeros
//! `(col[e], val[e])` for `e in ptr[o]..ptr[o + 1]`.
//! - NCHW: `y[o, :] = sum_e val[e] x[col[e], :]`, tiles of pixels, one accumulator row (the
//!   best a scalar-per-output layout can do: contiguous loads, vectorised over pixels);
//! - NHWC: the same on tiles of pixels transposed to channel-major order.
//!
//! Compiled for AVX-512, AVX2 + FMA and the baseline; the best is picked at run time.

use super::{Result, SparseError};
use candle_core::{DType, Tensor};

/// A `[C_out, C_in]` matrix (a 1x1 conv or linear weight) in CSR.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (input channels).
    pub cols: usize,
    /// Row pointers, `rows + 1` entries.
    pub ptr: Vec<u32>,
    /// Column of each non-zero, increasing within a row.
    pub col: Vec<u32>,
    /// Values.
    pub val: Vec<f32>,
}

impl Csr {
    /// Packs the non-zeros of a `[C_out, C_in]` or `[C_out, C_in, 1, 1]` weight.
    pub fn from_dense(w: &Tensor) -> Result<Self> {
        let (rows, cols) = match w.dims() {
            [o, i] | [o, i, 1, 1] => (*o, *i),
            d => return Err(SparseError::Shape(d.to_vec())),
        };
        let v: Vec<f32> = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let mut ptr = vec![0u32];
        let (mut col, mut val) = (Vec::new(), Vec::new());
        for o in 0..rows {
            for (j, &x) in v[o * cols..(o + 1) * cols].iter().enumerate() {
                if x != 0.0 {
                    col.push(j as u32);
                    val.push(x);
                }
            }
            ptr.push(col.len() as u32);
        }
        Ok(Self { rows, cols, ptr, col, val })
    }

    /// Non-zeros.
    pub fn nnz(&self) -> usize {
        self.val.len()
    }
}

const TILE: usize = 256;

#[inline(always)]
fn nchw_row(a: &Csr, o: usize, x: &[f32], p: usize, out: &mut [f32]) {
    let (lo, hi) = (a.ptr[o] as usize, a.ptr[o + 1] as usize);
    for start in (0..p).step_by(TILE) {
        let len = TILE.min(p - start);
        let acc = &mut out[start..start + len];
        acc.fill(0.0);
        for e in lo..hi {
            let v = a.val[e];
            let row = &x[a.col[e] as usize * p + start..][..len];
            for (y, &xv) in acc.iter_mut().zip(row) {
                *y += v * xv;
            }
        }
    }
}

super::kernel::dispatch!(nchw_row_best, nchw_row, (a: &Csr, o: usize, x: &[f32], p: usize, out: &mut [f32]));

fn check(a: &Csr, x_len: usize, per_sample: usize) -> Result<usize> {
    if a.ptr.len() != a.rows + 1
        || a.ptr.last().map(|&l| l as usize) != Some(a.col.len())
        || a.col.len() != a.val.len()
        || a.ptr.windows(2).any(|w| w[0] > w[1])
        || a.col.iter().any(|&c| c as usize >= a.cols)
    {
        return Err(SparseError::Malformed("inconsistent CSR matrix".into()));
    }
    if per_sample == 0 || !x_len.is_multiple_of(per_sample) {
        return Err(SparseError::Malformed(format!("{x_len} input values are not whole samples of {per_sample}")));
    }
    Ok(x_len / per_sample)
}

/// `y = A x` for NCHW `x` of `batch x C_in x pixels` values.
pub fn csr_conv1x1_nchw(a: &Csr, x: &[f32], pixels: usize) -> Result<Vec<f32>> {
    let batch = check(a, x.len(), a.cols * pixels)?;
    // A task per output row, or several rows where a plane has few pixels (a task per row of 49
    // pixels costs more in hand-offs than in work).
    let rows_per_task = (1024 / pixels).max(1);
    let y = crate::cpu::par_pieces(
        batch * a.rows * pixels,
        rows_per_task * pixels,
        || (),
        |(), t, out| {
            for (r, row) in out.chunks_mut(pixels).enumerate() {
                let g = t * rows_per_task + r;
                let (b, o) = (g / a.rows, g % a.rows);
                nchw_row_best(a, o, &x[b * a.cols * pixels..(b + 1) * a.cols * pixels], pixels, row);
            }
        },
    );
    Ok(y)
}

/// `y = A x` for NHWC `x` of `rows x C_in` values: tiles of 32 pixels transposed to
/// channel-major order, then the NCHW row loop (as the 1xN kernel does, so that the two differ
/// only in the sparsity pattern). Fewer than 8 rows (batch-1 linear layers) take gathered dot
/// products `y[q, o] = sum_e val[e] x[q, col[e]]`, parallel over outputs: a tile of one row
/// would run one thread at scalar speed.
pub fn csr_conv1x1_nhwc(a: &Csr, x: &[f32]) -> Result<Vec<f32>> {
    let rows = check(a, x.len(), a.cols)?;
    const T: usize = 32;
    if rows < 8 {
        // Pieces of at least ~16k multiply-adds (one piece, on the caller's thread, below that).
        let per_output = (a.nnz() / a.rows.max(1)).max(1);
        let chunk = (16_384 / per_output).max(16);
        return Ok(crate::cpu::par_pieces(
            rows * a.rows,
            chunk,
            || (),
            |(), t, out| {
                for (j, y) in out.iter_mut().enumerate() {
                    let g = t * chunk + j;
                    let (q, o) = (g / a.rows, g % a.rows);
                    let xq = &x[q * a.cols..(q + 1) * a.cols];
                    let (lo, hi) = (a.ptr[o] as usize, a.ptr[o + 1] as usize);
                    *y = a.col[lo..hi].iter().zip(&a.val[lo..hi]).map(|(&c, &v)| v * xq[c as usize]).sum();
                }
            },
        ));
    }
    let y = crate::cpu::par_pieces(
        rows * a.rows,
        T * a.rows.max(1),
        || (vec![0f32; a.cols * T], vec![0f32; T]),
        |(xt, acc), t, out| {
            let start = t * T;
            let len = T.min(rows - start);
            for q in 0..len {
                for (j, &v) in x[(start + q) * a.cols..(start + q + 1) * a.cols].iter().enumerate() {
                    xt[j * len + q] = v;
                }
            }
            for o in 0..a.rows {
                nchw_row_best(a, o, &xt[..a.cols * len], len, &mut acc[..len]);
                for q in 0..len {
                    out[q * a.rows + o] = acc[q];
                }
            }
        },
    );
    Ok(y)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sparse::weight_mask;
    use candle_core::Device;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_the_dense_product(rows in 1usize..40, cols in 1usize..40, px in 1usize..300, batch in 1usize..3,
                                     rate in 0.0f64..0.95, seed in 0u64..100) {
            let dev = Device::Cpu;
            let v: Vec<f32> = (0..rows * cols).map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0).collect();
            let w = Tensor::from_vec(v, (rows, cols), &dev).unwrap();
            let wm = (&w * weight_mask(&w, rate).unwrap()).unwrap();
            let a = Csr::from_dense(&wm).unwrap();
            let xv: Vec<f32> = (0..batch * cols * px).map(|i| ((i as u64 * 40503 + seed) % 777) as f32 / 388.0 - 1.0).collect();
            let x = Tensor::from_vec(xv.clone(), (batch, cols, px), &dev).unwrap();
            let want: Vec<f32> = wm.broadcast_matmul(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = csr_conv1x1_nchw(&a, &xv, px).unwrap();
            prop_assert_eq!(got.len(), want.len());
            let tol = 1e-5 * (cols as f32).sqrt();
            prop_assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= tol * (1.0 + w.abs())));
            let xt: Vec<f32> = x.transpose(1, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let want_t: Vec<f32> = wm.broadcast_matmul(&x).unwrap().transpose(1, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = csr_conv1x1_nhwc(&a, &xt).unwrap();
            prop_assert_eq!(got.len(), want_t.len());
            prop_assert!(got.iter().zip(&want_t).all(|(g, w)| (g - w).abs() <= tol * (1.0 + w.abs())));
        }
    }

    #[test]
    fn malformed_matrices_are_errors() {
        let w = Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let mut a = Csr::from_dense(&w).unwrap();
        assert_eq!(a.nnz(), 2);
        a.col[1] = 9;
        assert!(csr_conv1x1_nhwc(&a, &[1.0, 1.0]).is_err());
        // Each inconsistency alone is refused, by both layouts.
        let good = Csr::from_dense(&w).unwrap();
        let broken: [fn(&mut Csr); 5] = [
            |a| a.ptr.push(2),   // one pointer too many
            |a| a.ptr[2] = 1,    // the last pointer is not the count
            |a| a.val.push(3.0), // a value without a column
            |a| a.ptr[1] = 3,    // pointers decrease
            |a| a.col[0] = 2,    // a column past the matrix
        ];
        for (i, f) in broken.iter().enumerate() {
            let mut a = good.clone();
            f(&mut a);
            assert!(matches!(csr_conv1x1_nchw(&a, &[1.0; 4], 2), Err(SparseError::Malformed(_))), "case {i}");
            assert!(matches!(csr_conv1x1_nhwc(&a, &[1.0; 4]), Err(SparseError::Malformed(_))), "case {i}");
        }
        // Inputs that are not whole samples, or samples of no values.
        assert!(matches!(csr_conv1x1_nchw(&good, &[1.0; 5], 2), Err(SparseError::Malformed(_))));
        assert!(matches!(csr_conv1x1_nhwc(&good, &[1.0; 3]), Err(SparseError::Malformed(_))));
        assert!(matches!(csr_conv1x1_nchw(&good, &[], 0), Err(SparseError::Malformed(_))));
        assert_eq!(csr_conv1x1_nchw(&good, &[1.0, 2.0, 3.0, 4.0], 2).unwrap(), vec![1.0, 2.0, 6.0, 8.0]);
    }

    /// Batches under 8 rows take the gathered dot products; on a 256 x 256 weight they run in
    /// several pieces, each row reading its own sample.
    #[test]
    fn small_batches_match_the_dense_product_in_every_piece() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..256 * 256).map(|i| ((i * 7919) % 613) as f32 / 306.0 - 1.0).collect();
        let w = Tensor::from_vec(v, (256, 256), &dev).unwrap();
        let wm = (&w * weight_mask(&w, 0.5).unwrap()).unwrap();
        let a = Csr::from_dense(&wm).unwrap();
        for rows in [1usize, 3, 7, 8] {
            let xv: Vec<f32> = (0..rows * 256).map(|i| ((i * 40503) % 777) as f32 / 388.0 - 1.0).collect();
            let x = Tensor::from_vec(xv.clone(), (rows, 256), &dev).unwrap();
            let want: Vec<f32> = x.matmul(&wm.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = csr_conv1x1_nhwc(&a, &xv).unwrap();
            assert_eq!(got.len(), want.len());
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{rows} rows: {worst}");
        }
        assert!(Csr::from_dense(&Tensor::zeros((2, 2, 3, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
