//! The smoke profile end to end: trains, masks, fine-tunes, deploys and writes its report.
#![allow(clippy::unwrap_used)]

use candle_core::Device;
use compress_train::{RunContext, Verdict, harness};
use onexn::reproduce::OnexnReproduction;

#[test]
fn smoke_profile_deploys_exactly_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let out = harness::reproduce(&OnexnReproduction, "smoke", &ctx).unwrap();
    let (run, report) = (out.dir(), out.report());
    assert!(report.title.starts_with("1xN smoke:"), "a smoke report titled {:?}", report.title);
    assert!(run.join("report.md").is_file() && run.join("arms.json").is_file());
    assert!(run.join("fine_tuned.svg").is_file());
    // Deployment is exact whatever the training does: packed == masked.
    let deploy = report.rows.iter().find(|r| r.setting.starts_with("deployed")).unwrap();
    assert_eq!(deploy.verdict, Verdict::Holds, "{}", deploy.claim);
    // Every arm trained to better than chance, at both rates.
    let arms: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("arms.json")).unwrap()).unwrap();
    let outcomes = arms["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 4 * 2, "four patterns at two rates, one seed");
    assert!(outcomes.iter().all(|o| o["fine_tuned"].as_f64().unwrap() > 30.0), "{outcomes:?}");
    // The rates were chosen on held-out digits: one dense rate, one per arm and rate.
    let choice = &arms["choice"];
    assert_eq!(choice["finetune"].as_array().unwrap().len(), 4 * 2, "{choice}");
    assert_eq!(choice["finetune_table"][0][1].as_array().unwrap().len(), 4 * 2, "{choice}");
    assert!(choice["dense"].as_f64().unwrap() > 0.0);
    assert!(report.notes.contains("Rates chosen on the last 256 training digits"), "{}", report.notes);
    // A resumed run finds the finished arms and reproduces the same numbers.
    let again = harness::reproduce(&OnexnReproduction, "smoke", &ctx.clone().resume(true)).unwrap();
    assert_eq!(again.dir(), run, "the resumed run is the same folder");
    let pick = |r: &compress_train::Report| r.rows.iter().map(|x| x.method).take(4).collect::<Vec<_>>();
    assert_eq!(pick(report), pick(again.report()));
}
