//! A scope in which the toolkit's layers run as the leading slice of themselves: a
//! weight-sharing subnet of a slimmable supernet (PSS-Net, US-Net), with no second copy of the
//! network. A conv's output width is looked up by its variable prefix (from the widths of the
//! network's channel groups, [`out_widths`]); every layer's input width is its input's:
//! - a conv uses `W[..c_out, ..c_in]` (a depthwise conv its first `c_in` filters, `groups =
//!   c_in`) and `b[..c_out]`;
//! - BatchNorm uses the first `c` entries of `gamma`, `beta` and the running statistics, and in
//!   training does **not** update the running statistics (each subnet recalibrates its own);
//! - a linear layer uses `W[.., ..c_in]` (its outputs stay whole: the classifier).
//!
//! Gradients reach the slices of the shared variables (the rest get zeros).

use crate::network::ArchConfig;
use crate::structure::{Role, Widths};
use candle_core::{Result, Tensor};
use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static SLIM: RefCell<Option<BTreeMap<String, usize>>> = const { RefCell::new(None) };
}

/// The output width of every conv / linear layer producing a group of `cfg` when the groups
/// have the `active` widths (a group missing from `active` keeps its width in `cfg`).
pub fn out_widths<C: ArchConfig>(cfg: &C, active: &Widths) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for g in cfg.groups() {
        let w = active.get(&g.name).copied().unwrap_or(g.width);
        for m in &g.members {
            if m.axis == 0
                && matches!(m.role, Role::Produce)
                && let Some(prefix) = m.tensor.strip_suffix(".weight")
            {
                out.insert(prefix.to_string(), w);
            }
        }
    }
    out
}

/// Runs `f` with the layers slimmed to `out_widths` (conv prefix -> output channels).
pub fn slimmed<R>(out_widths: BTreeMap<String, usize>, f: impl FnOnce() -> R) -> R {
    crate::scope::scoped(&SLIM, out_widths, f).0
}

/// Whether a slim scope is active on this thread.
pub fn active() -> bool {
    SLIM.with(|s| s.borrow().is_some())
}

fn out_width(prefix: &str) -> Option<usize> {
    SLIM.with(|s| s.borrow().as_ref().and_then(|m| m.get(prefix).copied()))
}

/// The first `c` entries along axis 0.
pub(crate) fn leading(t: &Tensor, c: usize) -> Result<Tensor> {
    if c > t.dim(0)? {
        candle_core::bail!("slim scope: {c} channels asked of a layer of {}", t.dim(0)?)
    }
    if c == t.dim(0)? { Ok(t.clone()) } else { t.narrow(0, 0, c) }
}

/// A conv's weight (and groups) for input `x` inside the scope: `W[..c_out, ..c_in]`, or a
/// depthwise conv's first `c_in` filters with `groups = c_in`.
pub(crate) fn conv_weight(w: &Tensor, groups: usize, prefix: &str, x: &Tensor) -> Result<(Tensor, usize)> {
    let c_in = x.dim(1)?;
    let (c_out_full, c_in_g) = (w.dim(0)?, w.dim(1)?);
    if groups > 1 && groups == c_out_full && c_in_g == 1 {
        return Ok((leading(w, c_in)?, c_in));
    }
    if groups != 1 {
        candle_core::bail!("slim scope: conv {prefix} has {groups} groups (only plain and depthwise convs slim)")
    }
    let c_out = out_width(prefix).unwrap_or(c_out_full);
    let w = leading(w, c_out)?;
    let w = if c_in == c_in_g { w } else { w.narrow(1, 0, c_in)?.contiguous()? };
    Ok((w, 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Network;
    use crate::zoo::{MobileNetV1, MobileNetV1Config};
    use candle_core::{DType, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// Section 8 (PSS-Net): a slimmed conv with `c_out = 768` of 1024 equals the full conv's
    /// first 768 output channels.
    #[test]
    fn a_slimmed_conv_is_the_full_convs_leading_channels() {
        use crate::layers::{Conv2d, ConvSpec};
        use candle_core::Module;
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let conv = Conv2d::new(
            16,
            1024,
            ConvSpec::same(3).with_bias(),
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev).pp("c"),
        )
        .unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 16, 5, 5), &dev).unwrap();
        let full = conv.forward(&x).unwrap();
        let slim = slimmed([("c".to_string(), 768)].into(), || conv.forward(&x)).unwrap();
        assert_eq!(slim.dims(), [2, 768, 5, 5]);
        assert_eq!(max_diff(&slim, &full.narrow(1, 0, 768).unwrap()), 0.0);
        // Its input slims with its input: 12 of 16 channels use the first 12 weight columns.
        let x12 = x.narrow(1, 0, 12).unwrap();
        let w = vm.data().lock().unwrap()["c.weight"]
            .as_tensor()
            .narrow(0, 0, 768)
            .unwrap()
            .narrow(1, 0, 12)
            .unwrap()
            .contiguous()
            .unwrap();
        let b = vm.data().lock().unwrap()["c.bias"].as_tensor().narrow(0, 0, 768).unwrap();
        let want = x12.conv2d(&w, 1, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, 768, 1, 1)).unwrap()).unwrap();
        let got = slimmed([("c".to_string(), 768)].into(), || conv.forward(&x12)).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }

    /// A slimmed MobileNetV1 equals the physically narrower network built from the leading
    /// slices (eval, with those running statistics), and its gradients land on the slices.
    #[test]
    fn a_slimmed_network_is_its_leading_slice() {
        let dev = Device::Cpu;
        let cfg = MobileNetV1Config::custom(16, &[(32, 1), (64, 2), (64, 1), (128, 2)], 10).unwrap().input(1, 28);
        let net = Network::<MobileNetV1>::new(cfg.clone(), 0, &dev).unwrap();
        let mut active = cfg.widths().clone();
        for (k, v) in active.iter_mut() {
            *v = if k == "stem" { 8 } else { *v * 3 / 4 };
        }
        // Distinct running statistics, so slicing them is tested too.
        for (k, v) in net.varmap.data().lock().unwrap().iter() {
            if k.ends_with("running_var") || k.ends_with("running_mean") {
                let n = v.elem_count();
                v.set(&Tensor::arange(1f32, n as f32 + 1.0, &dev).unwrap().affine(0.01, 0.5).unwrap()).unwrap();
            }
        }
        let kept: BTreeMap<String, Vec<usize>> = active.iter().map(|(k, &w)| (k.clone(), (0..w).collect())).collect();
        let narrow = net.prune(&kept).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 20, 20), &dev).unwrap();
        let widths = out_widths(&cfg, &active);
        assert_eq!(widths["stem.conv"], 8);
        assert_eq!(widths["blocks.3.pw.conv"], 96);
        let slim = slimmed(widths.clone(), || net.forward_t(&x, false)).unwrap();
        assert_eq!(max_diff(&slim, &narrow.forward_t(&x, false).unwrap()), 0.0);
        // Training mode: batch statistics, no running-statistics update, gradients on slices.
        let before = net.tensors().unwrap()["stem.bn.running_mean"].to_vec1::<f32>().unwrap();
        let loss = slimmed(widths, || net.forward_t(&x, true)).unwrap().sqr().unwrap().sum_all().unwrap();
        assert_eq!(net.tensors().unwrap()["stem.bn.running_mean"].to_vec1::<f32>().unwrap(), before);
        let grads = loss.backward().unwrap();
        let w = net.varmap.data().lock().unwrap()["blocks.0.pw.conv.weight"].clone();
        let g = grads.get(w.as_tensor()).unwrap();
        assert_eq!(g.dims(), w.dims());
        let kept_part = g.narrow(0, 0, 24).unwrap().narrow(1, 0, 8).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(kept_part.to_scalar::<f32>().unwrap() > 0.0);
        let sum = |t: Tensor| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let rows = g.narrow(0, 24, 8).unwrap();
        let cols = g.narrow(0, 0, 24).unwrap().narrow(1, 8, 8).unwrap();
        assert_eq!((sum(rows), sum(cols)), (0.0, 0.0), "channels outside the subnet get no gradient");
        let _ = DType::F32;
    }
}
