//! The reproduction on its smoke scale, and the paper profile.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::Device;
use compress_train::{RunContext, Verdict, harness};
use pss_net::reproduce::PssReproduction;

#[test]
fn smoke_reproduction_deploys_exactly_and_ranks_the_arms() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&PssReproduction, "smoke", &ctx).unwrap();
    let (dir, report) = (out.dir(), out.report());
    assert!(out.missing().is_empty());
    for f in ["report.md", "seeds.json", "accuracy_vs_flops.svg", "latency_table.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let deploy = report.rows.iter().find(|r| r.setting.starts_with("largest |deployed")).unwrap();
    assert_eq!(deploy.verdict, Verdict::Holds, "{deploy:?}");
    let seeds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("seeds.json")).unwrap()).unwrap();
    let buckets = seeds["seeds"][0]["buckets"].as_array().unwrap();
    assert!(buckets.len() >= 5, "{}", buckets.len());
    for b in buckets {
        let centre = b["bucket"].as_f64().unwrap();
        // Each arm's subnet costs what its bucket says (+-27.5 kMACs), the uniform one as near as
        // an all-equal multiplier gets.
        for arm in ["pss", "baseline"] {
            let kmacs = b[arm][1].as_f64().unwrap();
            assert!((kmacs - centre).abs() <= 27.5, "{arm} {b}");
        }
        let m = b["uniform"][0]["mults_milli"].as_array().unwrap();
        assert!(m.iter().all(|v| v == &m[0]), "{b}");
        for arm in ["pss", "baseline", "uniform"] {
            let acc = b[arm][2].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&acc), "{arm} {b}");
        }
    }
    // After 2 epochs on 1,280 digits the max net has learned something: recalibration works.
    let max_net = seeds["seeds"][0]["extremes"][0][0].as_f64().unwrap();
    assert!(max_net > 20.0, "{max_net}");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latency_table.json")).unwrap()).unwrap();
    assert!(table["entries"].as_object().unwrap().values().all(|v| v.as_f64().unwrap() > 0.0));
}

#[test]
fn paper_profile_checks_the_scripts_and_lists_training_as_missing() {
    let root = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(root.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&PssReproduction, "paper", &ctx).unwrap();
    assert_eq!(out.missing().len(), 4, "training and the latency scripts' buckets, per supernet");
    let report = out.report();
    let count = |v: Verdict| report.rows.iter().filter(|r| r.verdict == v).count();
    assert_eq!((count(Verdict::Holds), count(Verdict::Missing)), (6, 20), "{:?}", report.rows);
    let b = pss_net::paper::script_buckets(&pss_net::paper::paper_supernets()[1], 100_000).unwrap();
    assert_eq!((b[0], b[b.len() - 1], b.len()), (80.0, 290.0, 22), "MBV2 reaches its whole range");
}
