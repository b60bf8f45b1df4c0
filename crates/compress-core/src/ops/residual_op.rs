//! The shape shared by the fused normalisation ops: `(x, p (, r)) -> y`, where `p` packs the
//! op's parameters and the optional third operand `r` is a residual added before the
//! activation. candle's custom ops are one trait per arity; [`residual_op!`] implements both
//! arities for a type from one forward and one backward.

pub(super) use super::scalar::Scalar;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

/// An op `(x, p (, r)) -> y` with its backward.
pub(super) trait ResidualOp {
    /// The op's name without and with the residual.
    const NAMES: [&'static str; 2];

    /// `y` and its shape from contiguous operands (`x` laid out as `lx`).
    fn run<T: Scalar>(&self, x: &[T], lx: &Layout, p: &[T], r: Option<&[T]>) -> Result<(Vec<T>, Shape)>;

    /// `(dx, dp, dr)` from the output `y` and its gradient `dy` (`dr` only when `want_r`; `dx`
    /// may be left out when `x` needs no gradient).
    fn grads(
        &self,
        x: &Tensor,
        p: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        want_r: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)>;
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused op: operands must be contiguous"),
    }
}

/// [`ResidualOp::run`] on candle storages: all f32 or all f64.
pub(super) fn forward<O: ResidualOp>(
    op: &O,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let _span = super::profile::span(|| O::NAMES[usize::from(r.is_some())].to_string());
    match (s1, s2, r) {
        (CpuStorage::F32(x), CpuStorage::F32(p), None) => {
            let (y, s) = op.run(contiguous(x, l1)?, l1, contiguous(p, l2)?, None)?;
            Ok((CpuStorage::F32(y), s))
        }
        (CpuStorage::F32(x), CpuStorage::F32(p), Some((CpuStorage::F32(r), l3))) => {
            let (y, s) = op.run(contiguous(x, l1)?, l1, contiguous(p, l2)?, Some(contiguous(r, l3)?))?;
            Ok((CpuStorage::F32(y), s))
        }
        (CpuStorage::F64(x), CpuStorage::F64(p), None) => {
            let (y, s) = op.run(contiguous(x, l1)?, l1, contiguous(p, l2)?, None)?;
            Ok((CpuStorage::F64(y), s))
        }
        (CpuStorage::F64(x), CpuStorage::F64(p), Some((CpuStorage::F64(r), l3))) => {
            let (y, s) = op.run(contiguous(x, l1)?, l1, contiguous(p, l2)?, Some(contiguous(r, l3)?))?;
            Ok((CpuStorage::F64(y), s))
        }
        _ => candle_core::bail!("{}: operands must all be f32 or all f64", O::NAMES[0]),
    }
}

/// Implements candle's `CustomOp2` (no residual) and `CustomOp3` (with one) for a [`ResidualOp`].
macro_rules! residual_op {
    ($t:ty) => {
        impl candle_core::CustomOp2 for $t {
            fn name(&self) -> &'static str {
                <$t as $crate::ops::residual_op::ResidualOp>::NAMES[0]
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::ops::residual_op::forward(self, (s1, l1), (s2, l2), None)
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                p: &candle_core::Tensor,
                y: &candle_core::Tensor,
                dy: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
                let (dx, dp, _) = $crate::ops::residual_op::ResidualOp::grads(self, x, p, y, dy, false)?;
                Ok((dx, Some(dp)))
            }
        }

        impl candle_core::CustomOp3 for $t {
            fn name(&self) -> &'static str {
                <$t as $crate::ops::residual_op::ResidualOp>::NAMES[1]
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::ops::residual_op::forward(self, (s1, l1), (s2, l2), Some((s3, l3)))
            }

            #[allow(clippy::type_complexity)]
            fn bwd(
                &self,
                x: &candle_core::Tensor,
                p: &candle_core::Tensor,
                _r: &candle_core::Tensor,
                y: &candle_core::Tensor,
                dy: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                let (dx, dp, dr) = $crate::ops::residual_op::ResidualOp::grads(self, x, p, y, dy, true)?;
                Ok((dx, Some(dp), dr))
            }
        }
    };
}

pub(super) use residual_op;
