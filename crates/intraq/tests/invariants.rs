//! Section 8's invariants that live in this crate (the quantizer, range, synthesis-loss and crop
//! invariants are tested where those live: compress_core::quant::{asym, range},
//! compress_synth::{losses, crop}), the quantized network, and the smoke reproduction.
#![allow(clippy::unwrap_used)]

use candle_core::{D, Device, Tensor};
use compress_core::quant::RangeRule;
use compress_nn::Model;
use compress_synth::Teacher;
use intraq::reproduce::{self, Profile};
use intraq::{DigitCnn, lr_at_epoch};

#[test]
fn distillation_of_the_spec_example() {
    let dev = Device::Cpu;
    let s = Tensor::new(&[[1f64, 0.0, -1.0]], &dev).unwrap();
    let t = Tensor::new(&[[2f64, 0.0, -2.0]], &dev).unwrap();
    let y = Tensor::new(&[0u32], &dev).unwrap();
    let kd = compress_train::loss::distillation(&s, &t, 20.0).unwrap().to_scalar::<f64>().unwrap();
    assert!((kd / 400.0 - 8.3039e-4).abs() < 1e-8, "KL {}", kd / 400.0);
    assert!((20.0 * kd - 6.64312).abs() < 1e-4, "{}", 20.0 * kd);
    let ce = compress_train::loss::cross_entropy(&s, &y, 0.0).unwrap().to_scalar::<f64>().unwrap();
    assert!((ce - 0.407606).abs() < 1e-6);
    assert!((ce + 20.0 * kd - 7.05073).abs() < 1e-4);
}

#[test]
fn multi_step_learning_rate_of_the_cifar_script() {
    let got: Vec<f64> = [19, 20, 40, 60].iter().map(|&e| lr_at_epoch(1e-4, &[20, 40, 60], e)).collect();
    for (a, b) in got.iter().zip([1e-4, 1e-5, 1e-6, 1e-7]) {
        assert!((a / b - 1.0).abs() < 1e-9, "{got:?}");
    }
}

#[test]
fn quantized_student_levels_ranges_and_straight_through_gradients() {
    let dev = Device::Cpu;
    let teacher = DigitCnn::new(1, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (8, 1, 28, 28), &dev).unwrap();
    // Full precision from the same tensors computes the teacher exactly.
    let fp = DigitCnn::from_tensors(&teacher.tensors().unwrap(), None, &dev).unwrap();
    let d = (fp.forward_t(&x, false).unwrap() - teacher.forward_t(&x, false).unwrap()).unwrap();
    assert_eq!(d.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    for bits in [2u32, 3] {
        let q = DigitCnn::from_tensors(&teacher.tensors().unwrap(), Some((bits, bits, RangeRule::BiasCorrected)), &dev)
            .unwrap();
        q.forward_t(&x, false).unwrap();
        q.set_running(false).unwrap();
        let r = q.quant().unwrap().ranges.lock().unwrap().clone();
        assert!(r.iter().all(|s| s.updates() == 1 && !s.running && s.range().1 > 0.0));
        // The penultimate features are means of quantized ReLU outputs; the first conv's output
        // after ReLU takes at most 2^bits values: check through the probe of a 1x1-pixel input.
        let (f, logits) = q.features_and_logits(&x, false).unwrap();
        assert_eq!((f.dims(), logits.dims()), (&[8usize, 32][..], &[8usize, 10][..]));
        let after = q.quant().unwrap().ranges.lock().unwrap().clone();
        assert_eq!(r, after, "frozen ranges do not move");
        // Gradients pass the quantizers straight through to every weight.
        let loss = logits.sqr().unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        for (name, v) in q.varmap().data().lock().unwrap().iter() {
            if name.ends_with("weight") {
                assert!(g.get(v.as_tensor()).is_some(), "{name} gets no gradient");
            }
        }
    }
    assert!(DigitCnn::from_tensors(&teacher.tensors().unwrap(), Some((0, 4, RangeRule::Legacy)), &dev).is_err());
}

#[test]
fn the_teacher_probe_sees_four_batchnorms_and_the_features() {
    let dev = Device::Cpu;
    let t = DigitCnn::new(2, &dev).unwrap();
    let out = t.forward_probe(&Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &dev).unwrap()).unwrap();
    assert_eq!(out.bn.len(), 4);
    assert_eq!(out.features.dims(), &[3, 32]);
    let (f, _) =
        t.features_and_logits(&Tensor::zeros((3, 1, 28, 28), candle_core::DType::F32, &dev).unwrap(), false).unwrap();
    assert_eq!(f.dims(), &[3, 32]);
    let p = candle_nn::ops::softmax(&out.logits, D::Minus1).unwrap().sum(D::Minus1).unwrap();
    assert!(p.to_vec1::<f32>().unwrap().iter().all(|v| (v - 1.0).abs() < 1e-5));
}

#[test]
fn smoke_reproduction_runs_and_resumes_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = reproduce::reproduce(Profile::Smoke, dir.path(), false, true, &Device::Cpu).unwrap();
    let (_, b) = reproduce::reproduce(Profile::Smoke, dir.path(), true, true, &Device::Cpu).unwrap();
    assert_eq!(a.rows.len(), b.rows.len());
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!((x.baseline, x.method), (y.baseline, y.method), "{}", x.setting);
    }
    assert!(reproduce::reproduce(Profile::Paper, dir.path(), false, true, &Device::Cpu).is_err());
}
