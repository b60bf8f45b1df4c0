//! The reproduction on its smoke scale.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use compress_train::{RunContext, Verdict, harness};
use whitebox::reproduce::WhiteBoxReproduction;

#[test]
fn smoke_reproduction_writes_a_report_whose_structural_claims_hold() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&WhiteBoxReproduction, "smoke", &ctx).unwrap();
    let (dir, report) = (out.dir(), out.report());
    assert!(out.missing().is_empty());
    assert!(dir.join("report.md").is_file());
    assert!(report.title.starts_with("White-Box smoke:"), "{:?}", report.title);
    assert_eq!(report.rows.len(), 10);
    // The L1 arm's FLOPs match the vote's plan within 1 %.
    assert_eq!(report.rows[0].verdict, Verdict::Holds, "{:?}", report.rows[0]);
    let arms: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("arms.json")).unwrap()).unwrap();
    let seed = &arms["seeds"][0];
    assert!(seed["reduction"].as_f64().unwrap() >= 0.7, "{seed}");
    let arms = seed["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 4);
    // (a), (c) and (d) share the vote's widths; (b) has its own uniform ones.
    assert_eq!(arms[0]["widths"], seed["vote_widths"]);
    assert_eq!(arms[2]["widths"], seed["vote_widths"]);
    assert_eq!(arms[3]["widths"], seed["vote_widths"]);
    for a in arms {
        let acc = a["curve"].as_array().unwrap().last().unwrap().as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{a}");
    }
    // Every mask moved off its initial t = K / 2 = 5 only slightly in one epoch, none is NaN.
    for t in seed["mean_fold"].as_array().unwrap() {
        let t = t.as_f64().unwrap();
        assert!(t.is_finite() && (3.0..6.0).contains(&t), "{t}");
    }
}

#[test]
fn paper_profile_checks_layouts_and_lists_training_as_missing() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&WhiteBoxReproduction, "paper", &ctx).unwrap();
    assert_eq!(out.missing().len(), 2);
    let report = out.report();
    assert!(report.rows.iter().all(|r| r.verdict == Verdict::Holds), "{:?}", report.rows);
}
