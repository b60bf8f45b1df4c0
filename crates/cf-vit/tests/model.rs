//! Section 8's invariants at the model level, the paper configurations, and the smoke
//! reproduction end to end.
#![allow(clippy::unwrap_used)]

use candle_core::{D, DType, Device, Tensor};
use cf_vit::paper::{PAPER_ROWS, PaperModel, PaperRecipe};
use cf_vit::reproduce::{CfVitReproduction, MiniSettings, mini_macs, mini_vit};
use cf_vit::{CfVitConfig, Selection, Target, build, cf_loss};
use compress_train::{RunContext, harness};
use std::collections::HashMap;

fn mini_model(seed: u64) -> cf_vit::CfVit<compress_nn::zoo::Vit> {
    build::deit(&mini_vit().unwrap(), CfVitConfig::mini(), &HashMap::new(), seed, &Device::Cpu).unwrap()
}

fn images(b: usize, seed: u64) -> Tensor {
    let mut rng = compress_core::rng::SeededRng::new(seed).stream("img", 0);
    let v: Vec<f32> = (0..b * 32 * 32).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..2.0)).collect();
    Tensor::from_vec(v, (b, 1, 32, 32), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn set(model: &cf_vit::CfVit<compress_nn::zoo::Vit>, name: &str, t: Tensor) {
    model.varmap().data().lock().unwrap()[name].set(&t).unwrap();
}

#[test]
fn per_stage_macs_match_the_spec() {
    // DeiT-S (section 8): n = 7: 1.0996 / 4.0138 G; n = 9: 1.8274 / 6.7591 G.
    for (n, c, total) in [(7, 1.0996, 4.0138), (9, 1.8274, 6.7591)] {
        let (mc, mt) = PaperModel::DeitS(n).stage_macs_g().unwrap();
        assert!((mc - c).abs() < 5e-4, "n {n}: coarse {mc}");
        assert!((mt - total).abs() < 5e-4, "n {n}: total {mt}");
    }
    // LV-ViT-S against the paper's table (stem and token head counted): within 2 %.
    for row in &PAPER_ROWS[2..] {
        let (mc, mt) = row.model.stage_macs_g().unwrap();
        assert!((mc / row.gmacs_coarse - 1.0).abs() < 0.02, "{}: {mc}", row.name);
        assert!((mt / row.gmacs_total - 1.0).abs() < 0.02, "{}: {mt}", row.name);
    }
    // Section 9: baseline 10.75 M, coarse 2.39 M, coarse + fine 8.96 M (reuse MLP counted).
    let (c, f, b) = mini_macs().unwrap();
    assert!((b / 1e6 - 10.75).abs() < 0.005, "{b}");
    assert!((c / 1e6 - 2.39).abs() < 0.005, "{c}");
    assert!(((c + f) / 1e6 - 8.96).abs() < 0.005, "{}", c + f);
}

#[test]
fn fine_sequence_length_is_constant_and_selection_picks_from_both_grids() {
    let m = mini_model(0);
    let x = images(5, 1);
    let coarse = m.forward_coarse(&x, false).unwrap();
    assert_eq!(coarse.scores.dims(), &[5, 16]);
    assert_eq!(m.fine_tokens(&x, &coarse, Selection::Informative, false).unwrap().dims(), &[5, 41, 64]);
    assert_eq!(m.fine_tokens(&x, &coarse, Selection::Uninformative, false).unwrap().dims(), &[5, 41, 64]);
    assert_eq!(m.fine_tokens(&x, &coarse, Selection::Off, false).unwrap().dims(), &[5, 65, 64]);
    // The last N_c - k tokens are coarse input embeddings (rows of x_in), the rest fine ones.
    let seq = m.fine_tokens(&x, &coarse, Selection::Informative, false).unwrap();
    let order = cf_vit::regions::rank_descending(&coarse.scores.get(2).unwrap().to_vec1::<f32>().unwrap());
    for (pos, &j) in order[8..].iter().enumerate() {
        let got = seq.get(2).unwrap().get(33 + pos).unwrap();
        let want = coarse.x_in.get(2).unwrap().get(1 + j).unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
    }
}

#[test]
fn with_a_zero_reuse_output_the_fine_stage_ignores_the_coarse_features() {
    let m = mini_model(3);
    let x = images(3, 2);
    let coarse = m.forward_coarse(&x, false).unwrap();
    let noisy = cf_vit::CoarseOut {
        z: (&coarse.z + Tensor::randn(0f32, 1.0, coarse.z.shape(), &Device::Cpu).unwrap()).unwrap(),
        ..coarse.clone()
    };
    let a = m.forward_fine(&x, &coarse, Selection::Informative, false).unwrap();
    let b = m.forward_fine(&x, &noisy, Selection::Informative, false).unwrap();
    assert!(max_diff(&a, &b) > 1e-4, "the reuse MLP carries coarse features");
    set(&m, "reuse.fc2.weight", Tensor::zeros((64, 128), DType::F32, &Device::Cpu).unwrap());
    set(&m, "reuse.fc2.bias", Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap());
    let a = m.forward_fine(&x, &coarse, Selection::Informative, false).unwrap();
    let b = m.forward_fine(&x, &noisy, Selection::Informative, false).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn gradients_reach_the_coarse_path_through_reuse_and_kept_tokens() {
    let m = mini_model(4);
    let x = images(4, 3);
    let labels = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
    let (y_c, y_f) = m.forward_train(&x, Selection::Informative, true).unwrap();
    // The fine loss alone already trains the coarse table (U tokens, reuse of z_c).
    let g = compress_train::loss::cross_entropy(&y_f, &labels, 0.1).unwrap().backward().unwrap();
    let vars = m.varmap().data().lock().unwrap().clone();
    let norm = |name: &str, g: &candle_core::backprop::GradStore| {
        g.get(vars[name].as_tensor())
            .map(|t| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
            .unwrap_or(0.0)
    };
    for name in [
        "pos_embed_coarse",
        "reuse.fc1.weight",
        "reuse.norm.weight",
        "pos_embed",
        "cls_token",
        "blocks.0.attn.qkv.weight",
    ] {
        assert!(norm(name, &g) > 0.0, "{name} gets no gradient from the fine loss");
    }
    // The full loss: the KL term trains the coarse stage, the fine logits are its constant target.
    let g = cf_loss(&y_c, &y_f, Target::Hard(&labels, 0.1)).unwrap().backward().unwrap();
    assert!(norm("head.weight", &g) > 0.0 && norm("patch_embed.proj.weight", &g) > 0.0);
}

#[test]
fn batched_early_exit_matches_both_stages_image_by_image() {
    let m = mini_model(5);
    let x = images(9, 4);
    let coarse = m.forward_coarse(&x, false).unwrap();
    let fine = m.forward_fine(&x, &coarse, Selection::Informative, false).unwrap();
    let conf: Vec<f32> =
        candle_nn::ops::softmax_last_dim(&coarse.logits).unwrap().max(D::Minus1).unwrap().to_vec1().unwrap();
    let mut sorted = conf.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    for eta in [0.0, f64::from(sorted[4]), 2.0] {
        let r = m.infer(&x, eta).unwrap();
        for (i, &c) in conf.iter().enumerate() {
            assert_eq!(r.exited[i], f64::from(c) >= eta);
            let want = if r.exited[i] { coarse.logits.get(i).unwrap() } else { fine.get(i).unwrap() };
            assert!(max_diff(&r.logits.get(i).unwrap(), &want) < 1e-5, "eta {eta}, image {i}");
        }
    }
    assert!(m.infer(&x, 0.0).unwrap().exited.iter().all(|e| *e), "eta = 0: every image exits");
}

#[test]
fn the_deit_compat_flag_drops_the_fine_table_only_without_selection() {
    let on = mini_model(6);
    let cfg = CfVitConfig { pos_fine_without_selection: false, ..CfVitConfig::mini() };
    let tensors = build::tensors(on.varmap()).unwrap();
    let off = build::deit(&mini_vit().unwrap(), cfg, &tensors, 6, &Device::Cpu).unwrap();
    let x = images(2, 5);
    let c = on.forward_coarse(&x, false).unwrap();
    let a = on.fine_tokens(&x, &c, Selection::Off, false).unwrap();
    let b = off.fine_tokens(&x, &c, Selection::Off, false).unwrap();
    let pf = on.backbone().pos_embed().broadcast_as(a.shape()).unwrap();
    assert!(max_diff(&(a - pf).unwrap(), &b) < 1e-6);
    let a = on.fine_tokens(&x, &c, Selection::Informative, false).unwrap();
    let b = off.fine_tokens(&x, &c, Selection::Informative, false).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn impossible_configurations_are_errors() {
    let vit = mini_vit().unwrap();
    let dev = Device::Cpu;
    let none = HashMap::new();
    for cfg in [
        CfVitConfig { alpha: 0.0, ..CfVitConfig::mini() },
        CfVitConfig { beta: 1.0, ..CfVitConfig::mini() },
        CfVitConfig { ema_from_layer: 4, ..CfVitConfig::mini() },
        CfVitConfig { reuse_ratio: 0, ..CfVitConfig::mini() },
        CfVitConfig { coarse_side: 3, ..CfVitConfig::mini() },
    ] {
        assert!(build::deit(&vit, cfg.clone(), &none, 0, &dev).is_err(), "{cfg:?}");
    }
    let wrong = compress_nn::zoo::VitConfig::new(28, 7, 64, 4, 4, 128, 10).unwrap().channels(1);
    assert!(build::deit(&wrong, CfVitConfig::mini(), &none, 0, &dev).is_err());
}

#[test]
fn paper_configurations_build_and_train_one_step() {
    let dev = Device::Cpu;
    assert_eq!(PaperRecipe::deit().select_from, 201);
    assert_eq!(PaperRecipe::lvvit().epochs, 310);
    for model in [PaperModel::DeitS(7), PaperModel::LvVitS(7)] {
        let cfg = model.config();
        assert_eq!((cfg.k(), cfg.fine_len()), (25, 125));
        let x = Tensor::randn(0f32, 1.0, (2, 3, cfg.fine_image(), cfg.fine_image()), &dev).unwrap();
        let labels = Tensor::new(&[3u32, 999], &dev).unwrap();
        let step = |varmap: &candle_nn::VarMap, loss: Tensor| {
            let groups = compress_train::optim::decay_and_no_decay(varmap, 0.05).unwrap();
            let mut opt =
                compress_train::optim::Optimizer::new(compress_train::optim::OptimizerKind::adamw(), groups).unwrap();
            let before = varmap.data().lock().unwrap()["pos_embed_coarse"].as_tensor().copy().unwrap();
            opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
            let after = varmap.data().lock().unwrap()["pos_embed_coarse"].as_tensor().copy().unwrap();
            assert!(max_diff(&before, &after) > 0.0, "{model:?}: the step moved P_c");
        };
        match model.build(0, &dev).unwrap() {
            cf_vit::paper::Built::Deit(m) => {
                let (c, f) = m.forward_train(&x, Selection::Informative, true).unwrap();
                assert_eq!(f.dims(), &[2, 1000]);
                step(m.varmap(), cf_loss(&c, &f, Target::Hard(&labels, 0.1)).unwrap());
            }
            cf_vit::paper::Built::LvVit(m) => {
                let (c, f) = m.forward_train(&x, Selection::Informative, true).unwrap();
                assert_eq!(c.dims(), &[2, 1000]);
                step(m.varmap(), cf_loss(&c, &f, Target::Hard(&labels, 0.1)).unwrap());
            }
        }
    }
}

#[test]
fn pretrained_deit_tensors_adapt_to_both_grids() {
    // A small DeiT standing in for timm's checkpoint: its 8 x 8 position table becomes the fine
    // table of a 4 x 4-coarse CF-ViT as is, and resampled to 4 x 4 for the coarse table.
    let dev = Device::Cpu;
    let base = compress_nn::zoo::VitConfig::new(32, 4, 64, 4, 4, 128, 10).unwrap().channels(1);
    let net = compress_nn::network::Network::<compress_nn::zoo::Vit>::new(base.clone(), 9, &dev).unwrap();
    let cfg = CfVitConfig::mini();
    let (vit, tensors) = build::adapt_deit_tensors(&base, &net.tensors().unwrap(), &cfg).unwrap();
    assert_eq!(tensors["pos_embed_coarse"].dims(), &[1, 17, 64]);
    // Values, not only the shape: a table whose class row is 7 and whose 8 x 8 grid holds
    // `column + 0.01 channel`. Resampled to 4 x 4 (bicubic, half-pixel centres as timm), the
    // class row stays 7, every row of the grid is alike, and the interior columns 1 and 2 sit
    // at source columns 2.5 and 4.5 (all four taps inside), where cubic convolution reproduces
    // a linear function exactly. A transposed grid or a class row mixed in fails.
    let mut crafted = net.tensors().unwrap();
    let table: Vec<f32> = (0..65 * 64)
        .map(|i| {
            let (pos, ch) = (i / 64, i % 64);
            if pos == 0 { 7.0 } else { ((pos - 1) % 8) as f32 + 0.01 * ch as f32 }
        })
        .collect();
    crafted.insert("pos_embed".into(), Tensor::from_vec(table, (1, 65, 64), &dev).unwrap());
    let (_, adapted) = build::adapt_deit_tensors(&base, &crafted, &cfg).unwrap();
    let coarse: Vec<f32> = adapted["pos_embed_coarse"].flatten_all().unwrap().to_vec1().unwrap();
    assert!(coarse[..64].iter().all(|&v| v == 7.0), "the class row was resampled");
    for r in 0..4 {
        for c in 0..4 {
            for ch in 0..64 {
                let v = coarse[(1 + r * 4 + c) * 64 + ch];
                assert!((v - coarse[(1 + c) * 64 + ch]).abs() < 1e-5, "row {r} differs from row 0");
                if c == 1 || c == 2 {
                    let want = 2.0 * c as f32 + 0.5 + 0.01 * ch as f32;
                    assert!((v - want).abs() < 1e-4, "({r}, {c}) channel {ch}: {v} vs {want}");
                }
            }
        }
    }
    assert_eq!(max_diff(&tensors["pos_embed"], &net.tensors().unwrap()["pos_embed"]), 0.0);
    let m = build::deit(&vit, cfg, &tensors, 0, &dev).unwrap();
    assert_eq!(max_diff(m.backbone().cls_token(), &net.tensors().unwrap()["cls_token"]), 0.0);
    // timm's DeiT-S is not reachable offline: the loader says where it looked.
    let e =
        build::pretrained_deit_small(7, Some(tempfile::tempdir().unwrap().path()), Some("http://127.0.0.1:9"), 0, &dev);
    assert!(e.is_err());
}

#[test]
fn smoke_reproduction_runs_and_resumes_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let a = harness::reproduce(&CfVitReproduction, "smoke", &ctx).unwrap();
    assert_eq!(a.report().rows.len(), 6);
    // Early exit joins the two stages: at eta = 1 no image exits, so CF-ViT's accuracy is the
    // fine stage's; at eta = 0 every image exits, so it is the coarse stage's. Swapped stages or
    // a threshold compared the wrong way round fail.
    let rows = &a.report().rows;
    let (at_one, stages, at_zero) = (&rows[0], &rows[2], &rows[4]);
    assert!(at_one.setting.contains("eta = 1") && at_zero.setting.contains("eta = 0"), "{rows:?}");
    assert_eq!(at_one.method, stages.method, "eta = 1 vs the fine stage");
    assert_eq!(at_zero.method, stages.baseline, "eta = 0 vs the coarse stage");
    assert_eq!(at_one.baseline, at_zero.baseline, "one baseline");
    // Each model trains at the rate that scored best on the validation digits (ties: the first).
    let choice: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.dir().join("choice.json")).unwrap()).unwrap();
    let table = choice["table"].as_array().unwrap();
    assert_eq!(table.len(), MiniSettings::smoke().lr_grid.len());
    for (model, lr) in choice["lrs"].as_array().unwrap().iter().enumerate() {
        let best = table.iter().map(|r| r[1][model].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        let first = table.iter().find(|r| r[1][model].as_f64().unwrap() == best).unwrap();
        assert_eq!(lr.as_f64(), first[0].as_f64(), "model {model}: {choice}");
    }
    assert!(a.report().notes.contains("Peak rates chosen on the last 64 training digits"));
    let b = harness::reproduce(&CfVitReproduction, "smoke", &ctx.clone().resume(true)).unwrap();
    for (x, y) in a.report().rows.iter().zip(&b.report().rows) {
        assert_eq!((x.baseline, x.method), (y.baseline, y.method), "{}", x.setting);
    }
    // The second run reused the recorded rate choice (same settings) instead of choosing again.
    assert!(!a.report().notes.contains("reused") && b.report().notes.contains("reused"), "{}", b.report().notes);
    assert!(MiniSettings::mini().train.select_from() == 15);
}
