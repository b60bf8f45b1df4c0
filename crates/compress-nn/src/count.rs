//! The counting forward pass: layers report their MACs and parameters while a closure runs, so
//! the analytic cost of a config can be cross-checked against what the model really computes.

use compress_core::cost::Cost;
use std::cell::RefCell;

thread_local! {
    static COUNTER: RefCell<Option<Cost>> = const { RefCell::new(None) };
    static LAYERS: RefCell<Option<Vec<(String, Cost)>>> = const { RefCell::new(None) };
}

/// Adds `c` to the running count, if a count is in progress on this thread.
pub fn record(c: Cost) {
    COUNTER.with(|k| {
        if let Some(total) = k.borrow_mut().as_mut() {
            *total += c;
        }
    });
}

/// Adds `c` to the running count and, if a per-layer count is in progress, to the entry of the
/// layer whose variables live under `prefix` (conv and linear layers).
pub fn record_layer(prefix: &str, c: Cost) {
    record(c);
    LAYERS.with(|k| {
        if let Some(layers) = k.borrow_mut().as_mut() {
            match layers.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, total)) => *total += c,
                None => layers.push((prefix.to_string(), c)),
            }
        }
    });
}

/// Runs `f` and returns every conv and linear layer's cost (MACs, params, bias adds) by variable
/// prefix, in the order the layers first ran; a layer run twice adds up.
pub fn count_layers<R>(f: impl FnOnce() -> R) -> (R, Vec<(String, Cost)>) {
    let (r, layers) = crate::scope::scoped(&LAYERS, Vec::new(), f);
    (r, layers.unwrap_or_default())
}

/// Runs `f` and returns its result with the cost its layers recorded. Run it on a single sample
/// (batch 1) to get per-sample MACs. A nested count records its own layers (the outer one
/// resumes after it); a panic in `f` leaves no count running.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Cost) {
    let (r, c) = crate::scope::scoped(&COUNTER, Cost::default(), f);
    (r, c.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;
    use crate::zoo::{Vgg, VggConfig};
    use candle_core::{Device, Tensor};

    #[test]
    fn per_layer_counts_name_the_layers_and_add_up() {
        let cfg = VggConfig::new(&[4, 0, 6, 0], 3).unwrap().input(1, 8).unwrap().single_linear();
        let net = Network::<Vgg>::new(cfg, 0, &Device::Cpu).unwrap();
        let x = Tensor::zeros((1, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let ((_, total), layers) = count_layers(|| count(|| net.forward_t(&x, false).unwrap()));
        let names: Vec<&str> = layers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["features.conv0", "features.conv1", "classifier.linear"]);
        // conv0: 8 x 8 x 4 outputs of 9 MACs; conv1: 4 x 4 x 6 of 36; the linear 6 * 2 * 2 -> 3.
        let macs: Vec<u64> = layers.iter().map(|(_, c)| c.macs).collect();
        assert_eq!(macs, [8 * 8 * 4 * 9, 4 * 4 * 6 * 36, 24 * 3]);
        assert_eq!(layers.iter().map(|(_, c)| c.macs).sum::<u64>(), total.macs);
        assert!(count_layers(|| ()).1.is_empty());
    }
}
