//! Access to the `f32` data of CPU tensors inside the toolkit's custom ops.

use candle_core::{CpuStorage, Layout, Tensor};
use rayon::prelude::*;

/// The contiguous `f32` slice a layout addresses.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("custom op: not contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("custom op: f32 only"),
    }
}

/// Runs `f` on the contiguous `f32` data of a CPU tensor (copying only a strided tensor).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cs) = &*st else { candle_core::bail!("custom op: CPU tensors only") };
    Ok(f(f32_slice(cs, l)?))
}

/// Rows of `d` values per parallel task: about 16 K values, at least one row.
pub(crate) fn rows_per_task(d: usize) -> usize {
    ((1 << 14) / d.max(1)).max(1)
}

/// Applies `f` to matching `chunk`-value pieces of `out` and `inp`: on the rayon pool when there
/// are several, on the caller's thread when there is one (a hand-off to the pool costs
/// microseconds, more than a small op: batch-1 inference).
pub(crate) fn zip_chunks<F>(out: &mut [f32], inp: &[f32], chunk: usize, f: F)
where
    F: Fn(&mut [f32], &[f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        f(out, inp);
    } else {
        out.par_chunks_mut(chunk).zip(inp.par_chunks(chunk)).for_each(|(o, i)| f(o, i));
    }
}

/// [`zip_chunks`] over two inputs.
pub(crate) fn zip_chunks2<F>(out: &mut [f32], a: &[f32], b: &[f32], chunk: usize, f: F)
where
    F: Fn(&mut [f32], &[f32], &[f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        f(out, a, b);
    } else {
        out.par_chunks_mut(chunk).zip(a.par_chunks(chunk).zip(b.par_chunks(chunk))).for_each(|(o, (x, y))| f(o, x, y));
    }
}
