//! [`Scalar`]: the element types the CPU ops run on (f32 and f64), one trait for every kernel.

use candle_core::WithDType;

/// An element type of the CPU kernels: arithmetic in its own precision, statistics through
/// `f64`, and candle's dtype.
pub(crate) trait Scalar:
    Copy
    + Default
    + Send
    + Sync
    + 'static
    + PartialOrd
    + WithDType
    + std::ops::Add<Output = Self>
    + std::ops::AddAssign
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    /// 1 (the GEMM's scaling factors).
    const ONE: Self;

    /// The value as `f64`.
    fn f(self) -> f64;

    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
}

impl Scalar for f32 {
    const ONE: Self = 1.0;

    fn f(self) -> f64 {
        f64::from(self)
    }

    fn of(v: f64) -> Self {
        v as f32
    }
}

impl Scalar for f64 {
    const ONE: Self = 1.0;

    fn f(self) -> f64 {
        self
    }

    fn of(v: f64) -> Self {
        v
    }
}
