//! The GEMM calls of the convolution (the `gemm` crate candle uses) and outputs written
//! without a zeroing pass.

use super::Scalar;
use std::mem::MaybeUninit;

/// `dst (m x n) = [dst +] a (m x k) . b (k x n)`, with explicit row/column strides for a and b.
/// When `m` is below one register tile and `n` is larger, the transposed product
/// `dst^T = b^T a^T` is computed instead (same memory, strides swapped): the microkernels tile
/// the row dimension, so 16 output channels against 1,024 pixels would waste half of each tile.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul<T: Scalar, D: Dest<T> + ?Sized>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut D,
    acc: bool,
    a: &[T],
    a_rs: usize,
    a_cs: usize,
    b: &[T],
    b_rs: usize,
    b_cs: usize,
    par: gemm::Parallelism,
) {
    const TILE_ROWS: usize = 32;
    let dst = dst.target(acc);
    assert!(dst.1 >= m * n, "matmul: destination holds {} values, the product {m} x {n}", dst.1);
    // The furthest element each operand's strides reach (none when the product is empty).
    let reach = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m > 0 && n > 0 && k > 0 {
        assert!(a.len() > reach(m, a_rs, k, a_cs), "matmul: a holds {} values, its strides reach more", a.len());
        assert!(b.len() > reach(k, b_rs, n, b_cs), "matmul: b holds {} values, its strides reach more", b.len());
    }
    // SAFETY: `dst` holds at least m n values and is a distinct mutable borrow; the asserts
    // above keep every index the strides reach inside `a` and `b`.
    unsafe { gemm_call(m, n, k, dst.0, acc, (a, a_rs, a_cs), (b, b_rs, b_cs), m < TILE_ROWS && n > m, par) }
}

/// One GEMM per sample: each on one thread (the samples run in parallel).
pub(super) const SEQ: gemm::Parallelism = gemm::Parallelism::None;

/// Where a GEMM writes: initialised values (which it may accumulate into) or uninitialised ones
/// (which it only overwrites: no zeroing pass for outputs the product fills completely).
pub(super) trait Dest<T> {
    /// The first element and the length; `acc` says whether the GEMM reads them.
    fn target(&mut self, acc: bool) -> (*mut T, usize);
}

impl<T> Dest<T> for [T] {
    fn target(&mut self, _acc: bool) -> (*mut T, usize) {
        (self.as_mut_ptr(), self.len())
    }
}

impl<T> Dest<T> for [MaybeUninit<T>] {
    fn target(&mut self, acc: bool) -> (*mut T, usize) {
        assert!(!acc, "matmul: cannot accumulate into uninitialised memory");
        (self.as_mut_ptr().cast(), self.len())
    }
}

/// [`crate::cpu::written`] for the convolution's outputs, whose fills are GEMMs without
/// accumulation over the whole output or loops over every element.
///
/// # Safety
/// `fill` must initialise all `len` values (the tests compare every path against candle).
pub(super) unsafe fn written<T: Scalar>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    // SAFETY: the caller's contract is `cpu::written`'s.
    unsafe { crate::cpu::written(len, fill) }
}

/// `dst (m x n, row-major) = [dst +] a . b`, as `dst^T = b^T a^T` when `transpose`.
///
/// # Safety
/// `dst` must point to `m n` writable values (initialised when `acc`) that nothing else
/// borrows, and `a` / `b` must hold every index their strides reach: `(m-1) a_rs + (k-1) a_cs`
/// and `(k-1) b_rs + (n-1) b_cs`. [`matmul`] checks both.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_call<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    acc: bool,
    (a, a_rs, a_cs): (&[T], usize, usize),
    (b, b_rs, b_cs): (&[T], usize, usize),
    transpose: bool,
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract (dst m x n row-major, unaliased; a and b cover their
    // strides); the transposed call addresses the same elements.
    unsafe {
        if transpose {
            gemm::gemm(
                n,
                m,
                k,
                dst,
                n as isize,
                1,
                acc,
                b.as_ptr(),
                b_rs as isize,
                b_cs as isize,
                a.as_ptr(),
                a_rs as isize,
                a_cs as isize,
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                par,
            )
        } else {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                n as isize,
                acc,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                par,
            )
        }
    }
}
