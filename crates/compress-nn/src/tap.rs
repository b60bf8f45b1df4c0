//! Taps: a scope in which a method rewrites the activations at the zoo's BatchNorm layers without
//! rewriting a model (White-Box's class-wise channel gates). A BatchNorm layer is named by its
//! variable prefix; it offers two points: [`TapPoint::BnInput`], its input (the convolution's
//! output, before normalisation), and [`TapPoint::Output`], after the normalisation, the
//! residual addition and the activation that the layer applies (the block's output). Outside a
//! scope, or at points the tap does not want, nothing changes (and the fused CPU ops run).

use candle_core::{Result, Tensor};
use std::cell::RefCell;
use std::sync::Arc;

/// Where at a BatchNorm layer a tap acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum TapPoint {
    /// The layer's input `[N, C, H, W]` (a convolution's output).
    BnInput,
    /// The layer's output after its residual addition and activation.
    Output,
}

/// What a scope does at the points it wants.
pub trait Tap: Send + Sync {
    /// Whether the tap acts at `point` of BatchNorm layer `layer` (its variable prefix).
    fn wants(&self, layer: &str, point: TapPoint) -> bool;
    /// The tensor that replaces `x` at that point (called only where [`Tap::wants`] is true).
    fn apply(&self, layer: &str, point: TapPoint, x: &Tensor) -> Result<Tensor>;
}

thread_local! {
    static SCOPE: RefCell<Option<Arc<dyn Tap>>> = const { RefCell::new(None) };
}

/// Runs `f` with `tap` acting at every BatchNorm layer it calls (nested scopes: the inner wins;
/// the previous scope is restored afterwards, also when `f` panics).
pub fn with<R>(tap: Arc<dyn Tap>, f: impl FnOnce() -> R) -> R {
    crate::scope::scoped(&SCOPE, tap, f).0
}

fn current() -> Option<Arc<dyn Tap>> {
    SCOPE.with(|s| s.borrow().clone())
}

/// Whether the scope's tap acts at `point` of `layer`.
pub(crate) fn wants(layer: &str, point: TapPoint) -> bool {
    current().is_some_and(|t| t.wants(layer, point))
}

/// `x` as the scope's tap rewrites it at `point` of `layer` (itself outside a scope).
pub(crate) fn at(layer: &str, point: TapPoint, x: Tensor) -> Result<Tensor> {
    match current() {
        Some(t) if t.wants(layer, point) => t.apply(layer, point, &x),
        _ => Ok(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, ConvBn, ConvSpec};
    use candle_core::{DType, Device, ModuleT};
    use candle_nn::VarMap;

    /// Doubles the input of `b_bn` and negates the output of `a_bn`.
    struct Probe;
    impl Tap for Probe {
        fn wants(&self, layer: &str, point: TapPoint) -> bool {
            matches!((layer, point), ("b_bn", TapPoint::BnInput) | ("a_bn", TapPoint::Output))
        }
        fn apply(&self, _: &str, point: TapPoint, x: &Tensor) -> Result<Tensor> {
            match point {
                TapPoint::BnInput => x * 2.0,
                TapPoint::Output => x.neg(),
            }
        }
    }

    /// A tap at a BatchNorm's output acts after the activation, one at its input before the
    /// normalisation, in the fused training path and in eval; outside the scope nothing changes.
    #[test]
    fn taps_act_where_asked_in_training_and_eval() {
        let vm = VarMap::new();
        let vb = crate::init::seeded_builder(&vm, 3, DType::F32, &Device::Cpu);
        let a = ConvBn::new(2, 3, ConvSpec::same(3), Activation::Relu, vb.pp("a"), vb.pp("a_bn")).unwrap();
        let b = ConvBn::new(3, 3, ConvSpec::same(3), Activation::None, vb.pp("b"), vb.pp("b_bn")).unwrap();
        let x = Tensor::arange(0f32, 2.0 * 2.0 * 25.0, &Device::Cpu).unwrap().reshape((2, 2, 5, 5)).unwrap();
        let x = x.sin().unwrap();
        let max = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        for train in [true, false] {
            let plain_a = a.forward_t(&x, train).unwrap();
            let (tapped_a, tapped_b) = with(Arc::new(Probe), || {
                let h = a.forward_t(&x, train).unwrap();
                (h.clone(), b.forward_t(&h.neg().unwrap(), train).unwrap())
            });
            assert_eq!(max(&(&tapped_a + &plain_a).unwrap()), 0.0, "output negated after the ReLU");
            assert!(max(&plain_a) > 0.0);
            let doubled =
                b.bn.forward_t(&(candle_core::Module::forward(&b.conv, &plain_a).unwrap() * 2.0).unwrap(), train)
                    .unwrap();
            assert!(max(&(tapped_b - doubled).unwrap()) < 1e-5, "input doubled before the norm");
            assert!(!wants("a_bn", TapPoint::Output), "the scope ended");
        }
    }
}
