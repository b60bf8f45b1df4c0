//! Replacing a model's layers by other implementations at build time (deployment: a pruned
//! layer packed for a sparse kernel, a folded or quantized layer). While [`build_with`] runs,
//! every [`super::Conv2d`] and [`super::Linear`] whose variable prefix (e.g.
//! `features.3.conv.1`) has an entry in the map forwards through that module instead of its
//! dense weight (bias included: the replacement computes the whole layer). Models need no
//! change: the zoo's layers look the map up when they are built.

use candle_core::{Module, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// A layer's replacement: computes the layer's output (bias included) from its input.
#[derive(Clone)]
pub struct Replacement(pub Arc<dyn Module + Send + Sync>);

impl std::fmt::Debug for Replacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replacement(..)")
    }
}

impl Replacement {
    /// Wraps a module.
    pub fn new(m: impl Module + Send + Sync + 'static) -> Self {
        Self(Arc::new(m))
    }

    /// Runs it.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(x)
    }
}

/// Replacements by variable prefix.
pub type Replacements = HashMap<String, Replacement>;

thread_local! {
    static ACTIVE: RefCell<Option<Replacements>> = const { RefCell::new(None) };
}

/// Runs `build` with `map` active on this thread (nested calls see the innermost map; the
/// previous map is restored afterwards, also when `build` panics).
pub fn build_with<R>(map: &Replacements, build: impl FnOnce() -> R) -> R {
    crate::scope::scoped(&ACTIVE, map.clone(), build).0
}

/// The replacement of the layer at `prefix`, if one is active.
pub(crate) fn lookup(prefix: &str) -> Option<Replacement> {
    ACTIVE.with(|a| a.borrow().as_ref().and_then(|m| m.get(prefix).cloned()))
}
