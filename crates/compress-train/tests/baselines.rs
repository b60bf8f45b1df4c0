//! The dense baseline recipes run end to end at smoke size and write their records.

use compress_train::baselines::{BASELINES, Profile, cached, train};

#[test]
fn every_baseline_runs_at_smoke_size_and_writes_its_record() {
    let runs = tempfile::tempdir().expect("tempdir");
    for (name, _) in BASELINES {
        let out = train(name, Profile::Smoke, None, runs.path(), false, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.weights.is_file(), "{name}: no weights");
        for f in ["report.json", "report.md", "config.toml", "meta.json", "log.jsonl"] {
            assert!(out.dir.join(f).is_file(), "{name}: no {f}");
        }
        assert!(!out.report.rows.is_empty());
        assert_eq!(cached(name, Profile::Smoke, runs.path()).expect("cached"), Some(out.weights.clone()));
        // A smoke model is never the cached result of the full recipe.
        assert_eq!(cached(name, Profile::Full, runs.path()).expect("cached"), None, "{name}");
    }
    assert!(train("vgg-imagenet", Profile::Smoke, None, runs.path(), false, true).is_err());
}
