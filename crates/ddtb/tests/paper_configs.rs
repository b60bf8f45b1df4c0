//! Every configuration of the paper's table 5 builds its model with the spec's quantizer counts
//! (section 4), and one configuration per architecture runs a calibration and a training step
//! on a random batch.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use ddtb::act_quant::Phase;
use ddtb::reproduce::placement;
use ddtb::scheme::QuantScheme;
use ddtb::trainer::{attach_gates, calibrate_on, param_groups, step_loss, student, teacher};
use ddtb::{Arm, DdtbConfig, PAPER_TABLE, SrArch};
use std::collections::HashMap;

#[test]
fn table5_configs_place_the_spec_quantizers() {
    assert_eq!(PAPER_TABLE.len(), 18);
    for r in &PAPER_TABLE {
        let cfg = r.config().unwrap();
        cfg.validate().unwrap();
        let p = placement(&cfg).unwrap();
        let want = match r.model {
            // 16 blocks x 2 convs; 3 sites per block; floor(0.3 x 48).
            "edsr" => (32, 48, 14),
            // 16 x (8 dense + LFF) + 2 GFF convs; 9 sites per block + GFF; floor(0.5 x 145).
            "rdn" => (16 * 9 + 2, 145, 72),
            // 16 blocks x 2 convs and 2 sites; floor(0.1 x 32).
            _ => (32, 32, 3),
        };
        assert_eq!((p.quantized_convs, p.act_quants, p.dynamic), want, "{} x{} W{}", r.model, r.scale, r.bits);
        assert_eq!(cfg.method.bits, r.bits);
        assert_eq!((cfg.recipe.iterations, cfg.recipe.stage1_iterations, cfg.recipe.batch), (59_000, 4_000, 16));
        assert_eq!((cfg.recipe.lr, cfg.recipe.bound_lr, cfg.recipe.w_at), (1e-4, 1e-2, 1000.0));
        assert_eq!(cfg.arch.setting().rgb_range, 255.0);
    }
}

/// Seeded full-precision weights of `arch` (what a downloaded teacher would be).
fn fp_weights(arch: &SrArch) -> HashMap<String, Tensor> {
    let vars = VarMap::new();
    let vb = compress_nn::init::seeded_builder(&vars, 5, DType::F32, &Device::Cpu);
    arch.build(&QuantScheme::full_precision(), vb).unwrap();
    let data = vars.data().lock().unwrap();
    compress_nn::model_tensors(&data)
}

fn one_step(model: &str, scale: usize, bits: u32) {
    let row = PAPER_TABLE.iter().find(|r| r.model == model && r.scale == scale && r.bits == bits).unwrap();
    let mut cfg: DdtbConfig = row.config().unwrap();
    cfg.recipe.batch = 2;
    cfg.recipe.lr_patch = 8;
    let dev = Device::Cpu;
    let fp = fp_weights(&cfg.arch);
    let t = teacher(&cfg.arch, &fp, &dev).unwrap();
    let (s, vars) = student(&cfg.arch, &cfg.scheme(), &fp, cfg.recipe.seed, &dev).unwrap();
    let lr = (Tensor::rand(0f32, 1.0, (2, 3, 8, 8), &dev).unwrap() * 255.0).unwrap();
    let hr = (Tensor::rand(0f32, 1.0, (2, 3, 8 * scale, 8 * scale), &dev).unwrap() * 255.0).unwrap();
    let cal = calibrate_on(s.as_ref(), cfg.method.dynamic_ratio, [Ok(lr.clone()), Ok((&lr * 0.5).unwrap())]).unwrap();
    assert_eq!(cal.dynamic.len(), placement(&cfg).unwrap().dynamic, "{model}: every site is called");
    attach_gates(s.as_ref(), &vars, &cfg.method, cfg.recipe.seed, &cal).unwrap();
    let groups = param_groups(&vars, &cfg.recipe).unwrap();
    assert!(groups[0].vars.iter().all(|(n, _)| n.ends_with(".lower") || n.ends_with(".upper")));
    assert_eq!(groups[0].lr_scale, 100.0);
    let mut opt = compress_train::optim::Optimizer::new(compress_train::optim::OptimizerKind::adam(), groups).unwrap();
    for (stage1, phase) in [(true, Phase::GateWarmup), (false, Phase::Dynamic)] {
        s.set_phase(phase).unwrap();
        let loss = step_loss(&cfg.recipe, t.as_ref(), s.as_ref(), &lr, &hr, stage1).unwrap();
        let v = loss.to_scalar::<f32>().unwrap();
        assert!(v.is_finite() && v > 0.0, "{model}: loss {v}");
        let g = loss.backward().unwrap();
        let data = vars.data().lock().unwrap();
        let bound = data.iter().find(|(k, _)| k.ends_with(".upper")).unwrap().1.clone();
        let gate_w2 = data.iter().find(|(k, _)| k.ends_with(".gate.w2")).unwrap().1.clone();
        drop(data);
        let norm = |t: Option<&Tensor>| -> f32 {
            t.map(|t| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()).unwrap_or(0.0)
        };
        // Every bound's gradient together: a zero gradient must fail, not only a missing one.
        let data = vars.data().lock().unwrap();
        let bounds: f32 = data
            .iter()
            .filter(|(k, _)| k.ends_with(".upper") || k.ends_with(".lower"))
            .map(|(_, v)| norm(g.get(v.as_tensor())))
            .sum();
        drop(data);
        assert!(g.get(bound.as_tensor()).is_some(), "{model}: bounds get a gradient");
        assert!(bounds > 0.0 && bounds.is_finite(), "{model}: the bounds' gradients sum to norm {bounds}");
        if !stage1 {
            let w2 = norm(g.get(gate_w2.as_tensor()));
            assert!(w2 > 0.0 && w2.is_finite(), "{model}: an applied gate's W2 gets gradient norm {w2}");
        }
        opt.step(&g, cfg.recipe.lr).unwrap();
    }
}

#[test]
fn edsr_x4_2bit_runs_a_step() {
    one_step("edsr", 4, 2);
}

#[test]
fn rdn_x2_3bit_runs_a_step() {
    one_step("rdn", 2, 3);
}

#[test]
fn srresnet_x4_4bit_runs_a_step() {
    one_step("srresnet", 4, 4);
}

#[test]
fn the_arms_quantize_as_the_paper_compares_them() {
    let row = &PAPER_TABLE[0];
    let base = row.config().unwrap();
    let with = |arm| DdtbConfig { arm, ..base.clone() }.scheme();
    use compress_core::quant::WeightQuantizer;
    use ddtb::ActScheme;
    assert_eq!(with(Arm::Pams).weight, Some(WeightQuantizer::SymMaxAbs));
    assert_eq!(with(Arm::Pams).act, ActScheme::Pams);
    assert_eq!(with(Arm::PamsDdtbWeights).weight, Some(WeightQuantizer::Percentile { lo: 1.0, hi: 99.0 }));
    assert!(matches!(with(Arm::Ddtb).act, ActScheme::Ddtb(_)));
    assert!(Arm::Ddtb.gated() && !Arm::DdtbNoGates.gated());
}
