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
}
