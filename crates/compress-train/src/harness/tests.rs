use super::*;
use crate::report::{ReportRow, Rule};
use candle_core::Device;

/// A reproduction whose paper profile needs a file that is not there.
struct Toy;

const INFO: Info =
    Info { name: "toy", about: "a toy", profiles: &[("smoke", "seconds"), ("mini", "minutes"), ("paper", "weights")] };

impl Reproduction for Toy {
    fn info(&self) -> &'static Info {
        &INFO
    }
    fn run(&self, profile: &str, ctx: &RunContext) -> Result<Outcome, BoxError> {
        let seeds = ctx.seeds_or(&[0, 1, 2]);
        #[derive(serde::Serialize)]
        struct Config<'a> {
            seeds: &'a [u64],
        }
        let run = ctx.run("", &Config { seeds: &seeds }, 0)?;
        let squares = ctx.side_by_side(&seeds, 2, |s, _| Ok::<_, crate::TrainError>((s * s) as f64))?;
        let report = ctx.report("toy", &seeds).rows(vec![ReportRow::claim(
            "sum of squares",
            Some(0.0),
            Some(squares.iter().sum()),
            "positive",
            Rule::Above(0.0),
        )]);
        run.write_report(&report)?;
        let missing = if profile == "paper" { vec!["weights/toy.safetensors".to_string()] } else { vec![] };
        Ok(Outcome::new(run.dir(), report, missing))
    }
}

#[test]
fn profiles_are_checked_and_smoke_runs_live_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let e = reproduce(&Toy, "huge", &ctx).expect_err("no such profile");
    assert!(e.to_string().contains("its profiles: smoke, mini, paper"), "{e}");
    let smoke = reproduce(&Toy, "smoke", &ctx).expect("smoke");
    assert!(smoke.dir().starts_with(dir.path().join("smoke/toy/smoke")), "{}", smoke.dir().display());
    let mini = reproduce(&Toy, "mini", &ctx).expect("mini");
    assert!(mini.dir().starts_with(dir.path().join("toy/mini")), "{}", mini.dir().display());
    let meta = std::fs::read_to_string(mini.dir().join("meta.json")).expect("meta");
    assert!(meta.contains("\"device\": \"cpu\""), "{meta}");
}

#[test]
fn seeds_reach_the_report_and_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true).seeds(Some(vec![3, 4, 5]));
    let out = reproduce(&Toy, "mini", &ctx).expect("mini");
    let r = out.report();
    assert_eq!(r.seeds, vec![3, 4, 5]);
    assert_eq!(r.command, "cargo xtask reproduce toy --seeds 3,4,5");
    assert_eq!(r.rows[0].method, Some(50.0));
    let md = std::fs::read_to_string(out.dir().join("report.md")).expect("md");
    assert!(md.contains("(profile mini, seeds 3, 4, 5)"), "{md}");
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let out = reproduce(&Toy, "smoke", &ctx).expect("smoke");
    assert_eq!(out.report().command, "cargo xtask reproduce toy --profile smoke");
    assert_eq!(out.report().seeds, vec![0, 1, 2]);
}

#[test]
fn a_partial_outcome_names_what_is_missing_and_resume_reuses_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true);
    let out = reproduce(&Toy, "paper", &ctx).expect("paper");
    assert!(matches!(out, Outcome::Partial { .. }));
    assert_eq!(out.missing(), ["weights/toy.safetensors".to_string()]);
    let again = reproduce(&Toy, "paper", &ctx.clone().resume(true)).expect("resumed");
    assert_eq!(again.dir(), out.dir(), "resume reopens the newest run");
    let fresh = reproduce(&Toy, "paper", &ctx).expect("fresh");
    assert_ne!(fresh.dir(), out.dir(), "without resume a new run is made");
}

#[test]
fn side_by_side_returns_results_in_order_and_the_first_failure() {
    let ctx = RunContext::new("unused", Device::Cpu).quiet(true).threads(Some(2)).bound("toy", "mini");
    let jobs: Vec<u64> = (0..5).collect();
    let out = ctx.side_by_side(&jobs, 2, |j, sub| Ok::<_, crate::TrainError>((*j, sub.thread_count()))).expect("ran");
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), jobs);
    let e = ctx
        .side_by_side(&jobs, 2, |j, _| if *j == 3 { Err(crate::TrainError::Config("job 3".into())) } else { Ok(*j) })
        .expect_err("job 3 fails");
    assert!(e.to_string().contains("job 3"), "{e}");
    assert_eq!(device_name_of_cpu(), "cpu");
}

fn device_name_of_cpu() -> String {
    context::device_name(&Device::Cpu)
}

#[test]
fn a_memo_is_computed_once_per_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = RunContext::new(dir.path(), Device::Cpu).quiet(true).bound("toy", "mini");
    #[derive(serde::Serialize)]
    struct Grid {
        grid: u32,
    }
    let calls = std::cell::Cell::new(0);
    let choose = |x: f64| {
        calls.set(calls.get() + 1);
        Ok::<_, crate::TrainError>(vec![x, 2.0 * x])
    };
    let (a, dir_a, reused) = ctx.memo("choice", &Grid { grid: 1 }, "choice.json", || choose(1.5)).expect("first");
    assert_eq!((a, reused, calls.get()), (vec![1.5, 3.0], false, 1));
    assert!(dir_a.join("choice.json").is_file() && dir_a.starts_with(dir.path().join("toy/mini/choice")));
    // The same configuration reuses the record (whatever the closure would compute now) ...
    let (b, dir_b, reused) = ctx.memo("choice", &Grid { grid: 1 }, "choice.json", || choose(9.0)).expect("again");
    assert_eq!((b, reused, calls.get(), dir_b), (vec![1.5, 3.0], true, 1, dir_a.clone()));
    // ... another configuration computes and records its own.
    let (c, dir_c, reused) = ctx.memo("choice", &Grid { grid: 2 }, "choice.json", || choose(9.0)).expect("other");
    assert_eq!((c, reused, calls.get()), (vec![9.0, 18.0], false, 2));
    assert_ne!(dir_c, dir_a);
    // A failure records nothing.
    let e = ctx.memo::<Vec<f64>, _, _>("choice", &Grid { grid: 3 }, "choice.json", || {
        Err(crate::TrainError::Config("diverged".into()))
    });
    assert!(e.is_err());
    let (d, _, reused) = ctx.memo("choice", &Grid { grid: 3 }, "choice.json", || choose(4.0)).expect("after failure");
    assert_eq!((d, reused), (vec![4.0, 8.0], false));
}
