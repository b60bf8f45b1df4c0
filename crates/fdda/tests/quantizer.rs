//! Section 8's quantizer and activation-range numbers, on the shared quantizers FDDA uses.

use candle_core::{Device, Tensor};
use compress_core::quant::asym::asym_fake_quant;
use compress_core::quant::range::{RangeRule, RunningRange};

fn q(x: f32, lo: f32, hi: f32, bits: u32) -> f32 {
    let t = |v: f32| Tensor::new(&[v], &Device::Cpu).expect("tensor");
    asym_fake_quant(&t(x), &t(lo), &t(hi), bits).expect("quant").to_vec1::<f32>().expect("vec")[0]
}

#[test]
fn asymmetric_quantizer_rounds_half_to_even() {
    // k = 4, [0, 7.5]: s = 2, z = 8, round(1.5 - 8) = round(-6.5) = -6 (even), (-6 + 8) / 2 = 1.
    assert_eq!(q(0.75, 0.0, 7.5, 4), 1.0);
    // k = 2, [-1, 2]: s = 1, z = round(-1) + 2 = 1, round(0.5 - 1) = round(-0.5) = -0, x = 1.
    assert_eq!(q(0.5, -1.0, 2.0, 2), 1.0);
}

#[test]
fn plain_activation_ema_from_zero() {
    let mut r = RunningRange::new(0.9, RangeRule::Plain);
    let mut his = Vec::new();
    for _ in 0..4 {
        r.update(0.0, 1.0);
        his.push(r.range().1);
    }
    for (h, want) in his.iter().zip([0.1, 0.19, 0.271, 0.3439]) {
        assert!((h - want).abs() < 1e-12, "{his:?}");
    }
}
