//! White-Box's joins on whole networks: masks applied through the tap (OneHot identity, gradients
//! by slot, `D` keyed by batch), inheritance against masking and against the gate it folds, the
//! keep-everything identity, and stage 1 resumed bit for bit.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{DType, Device, Tensor};
use compress_nn::tap::{Tap, TapPoint};
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
use compress_nn::{ArchConfig, Architecture, Network};
use compress_train::classify::Objective;
use compress_train::record::Run;
use compress_train::{TrainConfig, TrainError, schedule::Decay};
use std::collections::BTreeMap;
use std::sync::Arc;
use whitebox::net::{VggTiny, vgg_tiny};
use whitebox::{GateMode, MaskSlot, MaskTraining, MaskedNetwork, WhiteBoxLayout, WhiteBoxSettings};

fn digits(n: usize) -> Tensor {
    let x = Tensor::arange(0f32, (n * 28 * 28) as f32, &Device::Cpu).unwrap();
    (x * 0.37).unwrap().sin().unwrap().reshape((n, 1, 28, 28)).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Trains the BatchNorm statistics a little so eval mode is not the identity normalisation.
fn warm<A: Architecture>(net: &Network<A>, x: &Tensor) {
    for _ in 0..3 {
        net.forward_t(x, true).unwrap();
    }
}

/// Masks of distinct values (positive unless `signed`), `K x C` each.
fn distinct(masked: &MaskedNetwork<'_, impl Architecture>, signed: bool) -> Vec<Tensor> {
    masked
        .masks()
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let s =
                ((m.ones_like().unwrap().cumsum(1).unwrap() * (0.7 + j as f64)).unwrap().sin().unwrap() * 0.8).unwrap();
            if signed { s } else { (s.abs().unwrap() + 0.1).unwrap() }
        })
        .collect()
}

/// OneHot masks of ones leave the network unchanged (`G = M[y] = 1`); RandomOthers does not.
#[test]
fn onehot_ones_is_the_identity_and_random_others_is_not() {
    let net = Network::<VggTiny>::new(vgg_tiny().unwrap(), 0, &Device::Cpu).unwrap();
    let x = digits(6);
    let y = [0u32, 3, 9, 1, 1, 7];
    let plain = net.forward_t(&x, true).unwrap();
    let one = MaskedNetwork::new(&net, 10, 0.0, GateMode::OneHot, 0).unwrap();
    assert_eq!(max_diff(&one.forward_labelled(&x, &y, 0, 0, true).unwrap(), &plain), 0.0);
    let rnd = MaskedNetwork::new(&net, 10, 0.0, GateMode::RandomOthers, 0).unwrap();
    assert!(max_diff(&rnd.forward_labelled(&x, &y, 0, 0, true).unwrap(), &plain) > 1e-3);
}

/// `D` depends on (epoch, batch) only: the same pair repeats its draw, another batch does not.
#[test]
fn d_is_keyed_by_epoch_and_batch() {
    let net = Network::<VggTiny>::new(vgg_tiny().unwrap(), 0, &Device::Cpu).unwrap();
    warm(&net, &digits(8));
    let m = MaskedNetwork::new(&net, 10, 0.0, GateMode::RandomOthers, 5).unwrap();
    let (x, y) = (digits(4), [2u32, 2, 5, 0]);
    let a = m.forward_labelled(&x, &y, 1, 3, false).unwrap();
    assert_eq!(max_diff(&a, &m.forward_labelled(&x, &y, 1, 3, false).unwrap()), 0.0);
    assert!(max_diff(&a, &m.forward_labelled(&x, &y, 1, 4, false).unwrap()) > 1e-4);
    assert!(max_diff(&a, &m.forward_labelled(&x, &y, 2, 3, false).unwrap()) > 1e-4);
}

/// On a CIFAR ResNet the applied masks (before each bn1) get a loss gradient; the never-applied
/// ones get only the sparsity term's, `lambda s / ||s||` on every row.
#[test]
fn gradients_reach_applied_masks_and_the_penalty_reaches_all() {
    let cfg = ResNetCifarConfig::new(8, 10).unwrap().input(1, 28);
    let net = Network::<ResNetCifar>::new(cfg, 0, &Device::Cpu).unwrap();
    let lambda = 0.01;
    let m = MaskedNetwork::new(&net, 10, lambda, GateMode::RandomOthers, 0).unwrap();
    assert_eq!(m.slots().len(), 7);
    let labels = Tensor::new(&[1u32, 4, 4, 8], &Device::Cpu).unwrap();
    let loss = m.loss_at(&digits(4), &labels, 0, 0).unwrap();
    let grads = loss.backward().unwrap();
    let vars = m.varmap().data().lock().unwrap().clone();
    for (j, s) in m.slots().iter().enumerate() {
        let mask = &vars[&whitebox::masked::mask_name(j)];
        let g = grads.get(mask.as_tensor()).unwrap();
        let (k, c) = g.dims2().unwrap();
        assert_eq!((k, c), (10, s.width));
        // The penalty's part: lambda s_c / ||s|| with s = 10 (all ones), i.e. lambda / sqrt(C).
        let pen = lambda / (c as f64).sqrt();
        let rest = (g - pen).unwrap();
        let norm = rest.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        if s.site.is_some() {
            assert!(norm > 1e-4, "slot {j}: loss gradient {norm}");
        } else {
            assert!(norm < 1e-7, "slot {j} is never applied, yet its gradient is not the penalty's: {norm}");
        }
    }
}

/// A tap gating each slot's site by its fold factor `t_c` (`D = 1/2` everywhere).
struct Expected {
    sites: Vec<((String, TapPoint), Tensor)>,
}

impl Tap for Expected {
    fn wants(&self, layer: &str, point: TapPoint) -> bool {
        self.sites.iter().any(|((l, p), _)| l == layer && *p == point)
    }
    fn apply(&self, layer: &str, point: TapPoint, x: &Tensor) -> candle_core::Result<Tensor> {
        let m = &self.sites.iter().find(|((l, p), _)| l == layer && *p == point).unwrap().1;
        let d = (Tensor::ones((x.dim(0)?, m.dim(0)?), DType::F32, x.device())? * 0.5)?;
        whitebox::apply_gate(x, &d, m).map_err(candle_core::Error::wrap)
    }
}

/// After a ReLU and with `t > 0`, folding `t` into the BatchNorm is exact: the folded network
/// equals the network gated by `t` in eval mode. Pruning the folded network equals masking it.
#[test]
fn fold_equals_the_expected_gate_and_pruning_equals_masking() {
    let net = Network::<VggTiny>::new(vgg_tiny().unwrap(), 1, &Device::Cpu).unwrap();
    let x = digits(5);
    warm(&net, &x);
    let masked = MaskedNetwork::new(&net, 10, 0.0, GateMode::RandomOthers, 0).unwrap();
    let masks = distinct(&masked, false);
    let slots: Vec<MaskSlot> = masked.slots().to_vec();
    let folded = whitebox::fold(&net, &slots, &masks).unwrap();
    let tap = Expected { sites: slots.iter().zip(&masks).map(|(s, m)| (s.site.clone().unwrap(), m.clone())).collect() };
    let gated = compress_nn::tap::with(Arc::new(tap), || net.forward_t(&x, false)).unwrap();
    let f = folded.forward_t(&x, false).unwrap();
    assert!(max_diff(&f, &gated) < 1e-4 * (1.0 + f.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()));
    assert!(max_diff(&f, &net.forward_t(&x, false).unwrap()) > 1e-3, "the fold changed something");

    let kept: BTreeMap<String, Vec<usize>> =
        [("convs.0".to_string(), vec![1, 2, 5, 9, 15]), ("convs.2".to_string(), (0..64).step_by(3).collect())].into();
    let pruned = whitebox::inherit(&net, &slots, &masks, &kept).unwrap();
    assert_eq!(pruned.config.widths()["convs.0"], 5);
    let silenced = folded.masked(&kept).unwrap();
    assert!(max_diff(&pruned.forward_t(&x, false).unwrap(), &silenced.forward_t(&x, false).unwrap()) < 1e-5);
}

/// Section 8: a plan keeping every channel with `t = 1` (`K = 2`, `M = 1`) reproduces the
/// network, here a CIFAR ResNet whose never-applied masks fold into bn2 and the stem too.
#[test]
fn keep_everything_with_unit_fold_is_the_identity() {
    let cfg = ResNetCifarConfig::new(8, 10).unwrap().input(1, 28);
    let net = Network::<ResNetCifar>::new(cfg.clone(), 2, &Device::Cpu).unwrap();
    let x = digits(4);
    warm(&net, &x);
    let slots = cfg.mask_slots().unwrap();
    let ones: Vec<Tensor> =
        slots.iter().map(|s| Tensor::ones((2, s.width), DType::F32, &Device::Cpu).unwrap()).collect();
    let all: BTreeMap<String, Vec<usize>> =
        slots.iter().filter(|s| s.prunable).map(|s| (s.group.clone(), (0..s.width).collect())).collect();
    let same = whitebox::inherit(&net, &slots, &ones, &all).unwrap();
    assert_eq!(max_diff(&same.forward_t(&x, false).unwrap(), &net.forward_t(&x, false).unwrap()), 0.0);
    // Signed masks fold signed factors into every listed BatchNorm, here including the stem's.
    let neg: Vec<Tensor> = ones.iter().map(|m| (m * -1.0).unwrap()).collect();
    let flipped = whitebox::fold(&net, &slots, &neg).unwrap().tensors().unwrap();
    let base = net.tensors().unwrap();
    for bn in ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer3.0.bn2"] {
        let w = format!("{bn}.weight");
        assert_eq!(max_diff(&flipped[&w], &(&base[&w] * -1.0).unwrap()), 0.0, "{bn}");
    }
}

fn stage1(epochs: usize) -> TrainConfig {
    TrainConfig::sgd(epochs, 32, 0.01, Decay::Constant, 5e-4, 7)
}

/// Stage 1 stopped mid-epoch and resumed ends with the masks and weights of an uninterrupted run.
#[test]
fn stage_one_resumes_bit_for_bit() {
    let (train, _) = compress_data::embedded::mnist_5k_digits(Some(192), Some(10)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let settings = WhiteBoxSettings::new(0.01, 0.5);
    let run_whole = |name: &str,
                     cfg: &TrainConfig,
                     seed: u64|
     -> (Result<MaskTraining, whitebox::WhiteBoxError>, Network<VggTiny>) {
        let net = Network::<VggTiny>::new(vgg_tiny().unwrap(), seed, &Device::Cpu).unwrap();
        let mut run = Run::create(root.path(), name, cfg, 7, "cpu").unwrap();
        run.quiet = true;
        (whitebox::train_masks(&net, 10, &settings, &train, cfg, &mut run, false), net)
    };
    let (whole, a) = run_whole("whole", &stage1(2), 0);
    let whole = whole.unwrap();
    let mut stopping = stage1(2);
    stopping.stop_after_steps = Some(9); // 6 steps per epoch: mid-way through the second
    let (e, _) = run_whole("parts", &stopping, 0);
    assert!(matches!(e, Err(whitebox::WhiteBoxError::Train(TrainError::Stopped(9)))), "{e:?}");
    let mut again = Run::newest(root.path(), "parts").unwrap().unwrap();
    again.quiet = true;
    let b = Network::<VggTiny>::new(vgg_tiny().unwrap(), 99, &Device::Cpu).unwrap();
    let resumed = whitebox::train_masks(&b, 10, &settings, &train, &stage1(2), &mut again, true).unwrap();
    for (p, q) in whole.masks.iter().zip(&resumed.masks) {
        assert_eq!(max_diff(p, q), 0.0, "masks differ");
    }
    let (ta, tb) = (a.tensors().unwrap(), b.tensors().unwrap());
    for (k, v) in &ta {
        assert_eq!(max_diff(v, &tb[k]), 0.0, "{k}");
    }
    assert!(whole.masks.iter().any(|m| max_diff(m, &m.ones_like().unwrap()) > 1e-4), "the masks moved");
}

/// With `lambda = 0` a never-applied mask changes only through weight decay: every entry stays
/// equal and shrinks; applied masks move apart.
#[test]
fn never_applied_masks_only_decay() {
    let (train, _) = compress_data::embedded::mnist_5k_digits(Some(128), Some(10)).unwrap();
    let cfg = ResNetCifarConfig::new(8, 10).unwrap().input(1, 28);
    let net = Network::<ResNetCifar>::new(cfg, 0, &Device::Cpu).unwrap();
    let root = tempfile::tempdir().unwrap();
    let tc = stage1(1);
    let mut run = Run::create(root.path(), "decay", &tc, 7, "cpu").unwrap();
    run.quiet = true;
    let m = whitebox::train_masks(&net, 10, &WhiteBoxSettings::new(0.0, 0.5), &train, &tc, &mut run, false).unwrap();
    for (s, v) in m.slots.iter().zip(&m.masks) {
        let flat = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (lo, hi) = flat.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if s.site.is_none() {
            assert!(lo == hi && hi < 1.0 && hi > 0.99, "{}: [{lo}, {hi}]", s.group);
        } else {
            assert!(hi - lo > 1e-4, "{}: [{lo}, {hi}]", s.group);
        }
    }
}
