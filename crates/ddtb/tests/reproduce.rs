//! The smoke profile of `cargo xtask reproduce ddtb` runs end to end (tiny FP baseline, every
//! arm for a few steps), writes its report, and a resumed run continues from its checkpoints.

#![allow(clippy::unwrap_used)]

use candle_core::Device;
use compress_train::{RunContext, harness};
use ddtb::reproduce::DdtbReproduction;

#[test]
fn smoke_reproduction_runs_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&DdtbReproduction, "smoke", &ctx).unwrap();
    let (run, report) = (out.dir(), out.report());
    assert!(run.join("report.md").is_file());
    let text = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(text.contains("DDTB >= PAMS + 0.03 dB") && text.contains("| ddtb | 0 |"), "{text}");
    // The smoke evaluation set is photos-12's first test image and sr-heldout's first image;
    // the per-image table lists both, each arm's column scored image by image.
    let eval = compress_data::embedded::SrEval::load(2, Some(1)).unwrap();
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("scores.json")).unwrap()).unwrap();
    for name in ["camera", "acanthus"] {
        assert!(text.contains(&format!("| {name} |")), "{name} missing from the per-image table");
    }
    for r in scores["runs"].as_array().unwrap() {
        let images = r["score"]["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        let m = (images[0]["psnr"].as_f64().unwrap() + images[1]["psnr"].as_f64().unwrap()) / 2.0;
        assert!((m - r["score"]["psnr"].as_f64().unwrap()).abs() < 1e-9, "{r}");
        // Each arm trained at the rate that scored best on the validation image (ties: first).
        let arm = r["arm"].as_str().unwrap();
        let col = scores["choice"]["lrs"].as_array().unwrap().iter().position(|c| c[0] == arm).unwrap();
        let table = scores["choice"]["table"].as_array().unwrap();
        let best = table.iter().map(|t| t[1][col].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        let first = table.iter().find(|t| t[1][col].as_f64().unwrap() == best).unwrap();
        assert_eq!(r["lr"].as_f64(), first[0].as_f64(), "{arm}");
    }
    // The FP row is the full-precision start evaluated on the smoke test image: recompute it
    // with the zoo's EDSR and the training crate's evaluation (a wrong model, image set or scale
    // in the reproduction's FP join would differ).
    let fp_path = compress_train::baselines::cached(
        "edsr-mini-photos",
        compress_train::baselines::Profile::Smoke,
        &dir.path().join("smoke"),
    )
    .unwrap()
    .expect("the smoke FP start was trained and cached");
    let cfg = compress_nn::zoo::EdsrConfig::new(2, 4, 32, 1.0).unwrap();
    let fp = compress_nn::Network::<compress_nn::zoo::Edsr>::load(cfg, &fp_path, &Device::Cpu).unwrap();
    let test = eval.pairs;
    let fp_psnr = compress_train::super_resolution::evaluate(&fp, &test).unwrap().psnr;
    let fp_row = report.rows.iter().find(|r| r.claim.starts_with("FP > DDTB > bicubic")).expect("FP row");
    let reported = fp_row.baseline.expect("FP figure");
    assert!((reported - fp_psnr).abs() < 1e-3, "reported FP {reported} dB vs recomputed {fp_psnr} dB");
    let bicubic = compress_train::super_resolution::bicubic_score(&test).unwrap().psnr;
    assert!(fp_row.setting.contains(&format!("bicubic {bicubic:.3}")), "{} vs bicubic {bicubic:.3}", fp_row.setting);
    // Every arm produced a finite score.
    for row in report.rows.iter().take(5) {
        for v in [row.baseline, row.method].into_iter().flatten() {
            assert!(v.is_finite() && v > 5.0, "{row:?}");
        }
    }
    // Resuming finished runs repeats nothing and gives the same scores.
    let again = harness::reproduce(&DdtbReproduction, "smoke", &ctx.clone().resume(true)).unwrap();
    for (a, b) in report.rows.iter().zip(&again.report().rows) {
        assert_eq!(a.method, b.method, "{}", a.setting);
    }
    // The second run reused the recorded rate choice (same settings and FP start).
    assert!(!report.notes.contains("reused") && again.report().notes.contains("reused"), "{}", again.report().notes);
}

/// The diagnosis at smoke scale: every probe trains, its clipping is counted at every DDTB site
/// of every image, and it uses the mini's recorded rate choice.
#[test]
fn smoke_diagnosis_runs_every_probe() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true).bound("ddtb", "diagnose");
    let out = ddtb::diagnose::diagnose(&ddtb::reproduce::MiniSettings::smoke(), &ctx).unwrap();
    let probes = ddtb::diagnose::probes();
    // A row per probe after the first, the FP start on the varied images, clipping, the two MSE
    // rows, correlations.
    assert_eq!(out.report().rows.len(), probes.len() - 1 + 5);
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.dir().join("diagnosis.json")).unwrap()).unwrap();
    let runs = d["runs"].as_array().unwrap();
    assert_eq!(runs.len(), probes.len(), "one seed per probe at smoke scale");
    for r in runs {
        let clip = r["clipping"].as_array().unwrap();
        assert_eq!(clip.len(), 2, "both smoke evaluation images");
        for image in clip {
            let sites = image.as_array().unwrap();
            assert!(!sites.is_empty());
            for s in sites {
                let c = &s[1];
                let (below, above, total) =
                    (c["below"].as_u64().unwrap(), c["above"].as_u64().unwrap(), c["total"].as_u64().unwrap());
                assert!(total > 0 && below + above <= total, "{s}");
            }
        }
    }
    // The rate is the DDTB column's choice recorded under the mini's profile.
    let choice_dir = std::path::PathBuf::from(d["choice"].as_str().unwrap());
    assert!(choice_dir.starts_with(dir.path().join("ddtb").join("mini").join("choice")), "{choice_dir:?}");
    let choice: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(choice_dir.join("choice.json")).unwrap()).unwrap();
    let ddtb_lr = choice["lrs"].as_array().unwrap().iter().find(|c| c[0] == "Ddtb").unwrap()[1].as_f64().unwrap();
    assert_eq!(d["lr"].as_f64().unwrap(), ddtb_lr);
    // The varied FP start trained on three times the training images.
    let fp = std::fs::read_dir(dir.path().join("train").join("edsr-mini-photos-varied")).unwrap().count();
    assert_eq!(fp, 1);
}
