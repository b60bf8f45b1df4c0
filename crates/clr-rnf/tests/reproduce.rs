//! The reproduction on its smoke scale.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use clr_rnf::reproduce::ClrRnfReproduction;
use compress_train::{RunContext, Verdict, harness};

#[test]
fn smoke_reproduction_writes_a_report_whose_structural_claims_hold() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&ClrRnfReproduction, "smoke", &ctx).unwrap();
    let (dir, report) = (out.dir(), out.report());
    assert!(out.missing().is_empty());
    assert!(dir.join("report.md").is_file() && dir.join("accuracy.svg").is_file());
    assert!(report.title.starts_with("CLR-RNF smoke:"), "{:?}", report.title);
    assert_eq!(report.rows.len(), 11);
    // (3) the plan's cost equals the analytic count, and the uniform arm's FLOPs match CLR's.
    assert_eq!(report.rows[2].verdict, Verdict::Holds, "{:?}", report.rows[2]);
    assert_eq!(report.rows[3].verdict, Verdict::Holds, "{:?}", report.rows[3]);
    let arms: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("arms.json")).unwrap()).unwrap();
    let seed = &arms["seeds"][0];
    assert_eq!(seed["arms"].as_array().unwrap().len(), 6);
    // CLR prunes the high-FLOPs second conv harder (rho 0.7: about -70 % FLOPs).
    let p: Vec<f64> =
        seed["ranking"]["layers"].as_array().unwrap().iter().map(|l| l["prune_ratio"].as_f64().unwrap()).collect();
    assert!(p[1] > p[0], "{p:?}");
    for a in seed["arms"].as_array().unwrap() {
        let acc = a["curve"].as_array().unwrap().last().unwrap().as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{a}");
    }
}
