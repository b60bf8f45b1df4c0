//! The reproduction on its smoke scale: every arm and variant runs, the report has its rows, and
//! what does not depend on the training budget holds.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use compress_train::{RunContext, harness};
use fdda::reproduce::FddaReproduction;

#[test]
fn smoke_reproduction_runs_every_arm() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&FddaReproduction, "smoke", &ctx).unwrap();
    let (dir, report) = (out.dir(), out.report());
    assert!(out.missing().is_empty() && dir.join("report.md").is_file());
    assert!(report.title.starts_with("FDDA smoke:"), "{:?}", report.title);
    assert_eq!(report.rows.len(), 11);
    let arms: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("arms.json")).unwrap()).unwrap();
    assert_eq!(arms["w3a3"].as_array().unwrap().len(), 3);
    assert_eq!(arms["w4a4"].as_array().unwrap().len(), 3);
    assert_eq!(arms["as_written"].as_array().unwrap().len(), 2, "B and C");
    for a in arms["w3a3"].as_array().unwrap() {
        let evals = a["student"]["evals"].as_array().unwrap();
        assert_eq!(evals.len(), 1 + 2, "calibrated, then every 5 of 10 joint iterations");
        assert!(evals.iter().all(|e| (0.0..=100.0).contains(&e[1].as_f64().unwrap())));
        assert_eq!(a["cbns_distance"].is_null(), a["arm"] == "Calibration");
    }
}

#[test]
fn smoke_diagnosis_runs_every_probe() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = fdda::diagnose::diagnose(&fdda::reproduce::MiniSettings::smoke(), &ctx).unwrap();
    let probes = fdda::diagnose::probes();
    // One row per probe, the per-class split of the three arms, the generators' agreement, the teacher.
    assert_eq!(out.report().rows.len(), probes.len() + 3 + 2 + 1);
    let first = &out.report().rows[0];
    assert_eq!(first.baseline, first.method, "the first probe is the baseline arm itself");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.dir().join("probes.json")).unwrap()).unwrap();
    let outcomes = record["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), probes.len());
    for (o, p) in outcomes.iter().zip(&probes) {
        let generator = p.arm != fdda::reproduce::Arm::Calibration;
        assert_eq!(o["agreement"].is_null(), !generator, "{}", p.label);
        for key in ["settled", "best"] {
            assert!((0.0..=100.0).contains(&o[key].as_f64().unwrap()), "{} {key}", p.label);
        }
    }
}
