//! `cargo xtask reproduce fdda --profile diagnose`: why the mini's FDDA arm (C) settles below
//! the calibration-only arm (A).
//!
//! Same teacher, centres, calibration digits and schedule as the mini, at the rate the mini's
//! selection chose for every arm (1e-5). Each probe changes one thing:
//! - the real digits' share of the step: C's loss is one mean over 8 real + 16 synthetic
//!   images, so its real digits get 8 / 24 of A's gradient at the same rate. A at a third of the
//!   rate and C at three times it put the two arms' real-digit steps level;
//! - the synthetic share itself: C with 8 or 4 of the generator's 16 images per step;
//! - the budget: A and C with 3x the joint iterations (the spec's "longer" check).
//!
//! Every probe records, for the final student, its test accuracy on the classes whose
//! calibration digit the teacher classifies correctly (`K`) and on the others, and for the
//! generator arms how often the teacher gives a fresh synthetic image of class `c` the label `c`
//! (the synthetic labels the student's cross-entropy trusts).

use crate::error::{Result, config_err};
use crate::reproduce::{Arm, MiniSettings, Shared, arm_generator};
use crate::student::{StudentSettings, TestSet, run_student};
use candle_core::Tensor;
use compress_core::rng::SeededRng;
use compress_nn::fake_quant::with;
use compress_train::{Outcome, ReportRow, Rule, RunContext};
use serde_json::json;

/// The rate the mini's selection chose for every arm (seed 100, held-out digits).
const RATE: f64 = 1e-5;

/// One probe: an arm under one change of the mini's recipe.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Probe {
    /// What it changes.
    pub label: &'static str,
    /// The arm.
    pub arm: Arm,
    /// The student's base rate.
    pub lr: f64,
    /// Multiple of the mini's joint iterations (and of its cosine's length).
    pub budget: usize,
    /// Synthetic images per student step (`None`: the generator's 16).
    pub synth: Option<usize>,
}

/// The probes, the mini's three arms first.
pub fn probes() -> Vec<Probe> {
    let p = |label, arm, lr, budget, synth| Probe { label, arm, lr, budget, synth };
    vec![
        p("(A) as the mini", Arm::Calibration, RATE, 1, None),
        p("(B) as the mini", Arm::Gdfq, RATE, 1, None),
        p("(C) as the mini", Arm::Fdda, RATE, 1, None),
        p("(A) at lr / 3 (its real-digit step = C's)", Arm::Calibration, RATE / 3.0, 1, None),
        p("(C) at lr x 3 (its real-digit step = A's)", Arm::Fdda, RATE * 3.0, 1, None),
        p("(A) at lr x 3", Arm::Calibration, RATE * 3.0, 1, None),
        p("(C) with 8 of 16 synthetic images per step", Arm::Fdda, RATE, 1, Some(8)),
        p("(C) with 4 of 16 synthetic images per step", Arm::Fdda, RATE, 1, Some(4)),
        p("(A) with 3x the joint iterations", Arm::Calibration, RATE, 3, None),
        p("(C) with 3x the joint iterations", Arm::Fdda, RATE, 3, None),
    ]
}

/// One probe on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeOutcome {
    /// Mean of the last 3 evaluations (%).
    pub settled: f64,
    /// Best evaluation (%).
    pub best: f64,
    /// The final student's mean per-class test accuracy over the classes in `K` and outside it.
    pub in_k: f64,
    /// See `in_k`.
    pub out_k: f64,
    /// How often the teacher labels fresh class-`c` synthetic images `c`, over `K` and outside it
    /// (generator arms).
    pub agreement: Option<(f64, f64)>,
}

/// Per-class top-1 (%) of `forward` on `test`.
fn per_class(forward: &dyn Fn(&Tensor) -> Result<Tensor>, test: &TestSet, classes: usize) -> Result<Vec<f64>> {
    let n = test.labels.dim(0)?;
    let (mut hit, mut all) = (vec![0usize; classes], vec![0usize; classes]);
    for start in (0..n).step_by(256) {
        let len = 256.min(n - start);
        let pred = forward(&test.images.narrow(0, start, len)?)?.argmax(1)?.to_vec1::<u32>()?;
        let labels = test.labels.narrow(0, start, len)?.to_vec1::<u32>()?;
        for (p, l) in pred.iter().zip(&labels) {
            let l = *l as usize;
            if l >= classes {
                return Err(config_err(format!("label {l} of {classes} classes")));
            }
            all[l] += 1;
            hit[l] += usize::from(p == &(l as u32));
        }
    }
    Ok(hit.iter().zip(&all).map(|(h, a)| 100.0 * *h as f64 / (*a).max(1) as f64).collect())
}

/// Means of `v` over the classes in `K` and outside it (NaN for an empty side).
fn split(v: &[f64], k: &[bool]) -> (f64, f64) {
    let mean = |inside: bool| {
        let s: Vec<f64> = v.iter().zip(k).filter(|(_, c)| **c == inside).map(|(x, _)| *x).collect();
        s.iter().sum::<f64>() / s.len() as f64
    };
    (mean(true), mean(false))
}

fn run_probe(s: &MiniSettings, sh: &Shared, p: &Probe, seed: u64) -> Result<ProbeOutcome> {
    let joint = s.student.iters.saturating_sub(s.student.warmup_iters);
    let st = StudentSettings {
        lr: p.lr,
        iters: s.student.warmup_iters + p.budget * joint,
        t_max: p.budget as u64 * s.student.t_max,
        synth_batch: p.synth,
        ..s.student.clone()
    };
    let mut g = arm_generator(s, p.arm, &sh.centres, seed, sh.teacher.device())?;
    let (student, q, out) = run_student(&sh.teacher, g.as_mut(), &sh.calib, &sh.test, &st, seed)?;
    let k = &sh.centres.correct;
    let fwd = |x: &Tensor| Ok(with(&q, || student.forward_t(x, false))?);
    let (in_k, out_k) = split(&per_class(&fwd, &sh.test, k.len())?, k);
    let agreement = match &g {
        Some(g) => {
            let dev = sh.teacher.device();
            let rng = SeededRng::new(seed);
            let mut agree = Vec::new();
            for c in 0..k.len() {
                let (z, _) = g.generator.sample_inputs(64, &mut rng.stream("fdda/diagnose", c as u64), dev)?;
                let y = Tensor::from_vec(vec![c as u32; 64], 64, dev)?;
                let pred = sh.teacher.forward_t(&g.generator.forward(&z, &y)?, false)?.argmax(1)?;
                let same = pred.to_vec1::<u32>()?.iter().filter(|&&p| p as usize == c).count();
                agree.push(100.0 * same as f64 / 64.0);
            }
            Some(split(&agree, k))
        }
        None => None,
    };
    Ok(ProbeOutcome { settled: out.settled(3), best: out.best(), in_k, out_k, agreement })
}

/// Runs every probe on every seed and reports them against the mini's arm A.
pub fn diagnose(settings: &MiniSettings, ctx: &RunContext) -> Result<Outcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&settings.seeds), ..settings.clone() };
    let probes = probes();
    #[derive(serde::Serialize)]
    struct Config<'a> {
        mini: &'a MiniSettings,
        probes: &'a [Probe],
    }
    let mut exp = ctx.run("", &Config { mini: s, probes: &probes }, 0)?;
    let sh = Shared::build(s, ctx, &mut exp)?;
    let fwd = |x: &Tensor| Ok(sh.teacher.forward_t(x, false)?);
    let (t_in, t_out) = split(&per_class(&fwd, &sh.test, sh.centres.correct.len())?, &sh.centres.correct);
    let jobs: Vec<(usize, u64)> = (0..probes.len()).flat_map(|i| s.seeds.iter().map(move |&x| (i, x))).collect();
    let done = ctx.side_by_side(&jobs, 2, |&(i, seed), _| run_probe(s, &sh, &probes[i], seed))?;
    let of = |i: usize, f: &dyn Fn(&ProbeOutcome) -> f64| -> Vec<f64> {
        jobs.iter().zip(&done).filter(|(j, _)| j.0 == i).map(|(_, o)| f(o)).collect()
    };
    let a = of(0, &|o| o.settled);
    let mut rows: Vec<ReportRow> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let m = of(i, &|o| o.settled);
            let verdict = Rule::Above(0.0).describe_seeds(&a, &m);
            ReportRow::info_seeds(
                format!("W3A3 top-1 (%), settled: (A) as the mini vs {}", p.label),
                &a,
                &m,
                format!("above A: {verdict}; best {:.2}", compress_train::metrics::mean(of(i, &|o| o.best))),
            )
        })
        .collect();
    let outside: Vec<usize> = sh.centres.correct.iter().enumerate().filter(|(_, c)| !**c).map(|(k, _)| k).collect();
    for (i, p) in probes.iter().enumerate().take(3) {
        rows.push(ReportRow::info_seeds(
            format!("{}: final student's per-class top-1 (%), classes in K vs outside K {outside:?}", p.label),
            &of(i, &|o| o.in_k),
            &of(i, &|o| o.out_k),
            "-",
        ));
    }
    for (i, p) in probes.iter().enumerate().take(3).skip(1) {
        rows.push(ReportRow::info_seeds(
            format!("{}: teacher labels fresh class-c synthetic images c (%), c in K vs outside K", p.label),
            &of(i, &|o| o.agreement.map_or(f64::NAN, |x| x.0)),
            &of(i, &|o| o.agreement.map_or(f64::NAN, |x| x.1)),
            "-",
        ));
    }
    rows.push(ReportRow::info(
        "teacher per-class top-1 (%), classes in K vs outside K",
        Some(t_in),
        Some(t_out),
        format!("teacher top-1 {:.2}", sh.teacher_top1),
    ));
    exp.write_json("probes.json", &json!({"jobs": jobs, "outcomes": done}))?;
    let title = format!("FDDA {}: why (C) settles below (A), {} seeds", ctx.profile(), s.seeds.len());
    let report = ctx.report(title, &s.seeds).rows(rows).notes(format!(
        "\nEvery probe: the mini's teacher, centres, calibration digits and schedule at rate {RATE:e} (the mini's \
         choice for every arm) unless its label says otherwise. Baseline column: (A) as the mini.\n"
    ));
    exp.write_report(&report)?;
    Ok(Outcome::new(exp.dir(), report, vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn per_class_accuracy_and_the_k_split() {
        let d = Device::Cpu;
        // Six samples of three classes; predictions (argmax of one-hot logits) 0, 1, 1, 1, 2, 0.
        let pred = [0usize, 1, 1, 1, 2, 0];
        let mut logits = vec![0f32; 18];
        for (i, p) in pred.iter().enumerate() {
            logits[i * 3 + p] = 1.0;
        }
        let test = TestSet {
            images: Tensor::from_vec(logits, (6, 3), &d).unwrap(),
            labels: Tensor::from_vec(vec![0u32, 0, 1, 1, 2, 2], 6, &d).unwrap(),
        };
        let acc = per_class(&|x: &Tensor| Ok(x.clone()), &test, 3).unwrap();
        assert_eq!(acc, [50.0, 100.0, 50.0]);
        assert_eq!(split(&acc, &[true, false, true]), (50.0, 100.0));
        let (_, none) = split(&acc, &[true, true, true]);
        assert!(none.is_nan(), "no class outside K");
        assert!(per_class(&|x: &Tensor| Ok(x.clone()), &test, 2).is_err(), "label 2 of 2 classes");
    }
}
