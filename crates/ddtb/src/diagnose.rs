//! `cargo xtask reproduce ddtb --profile diagnose` (issue 25): why W2A2 DDTB falls below bicubic
//! on some of the 23 evaluation images, and whether the training changes that could plausibly
//! help do.
//!
//! The DDTB arm, at the rate the mini chose (its recorded choice, computed if missing), is
//! trained on each seed under each [`Probe`]; every trained student is scored image by image,
//! and at each activation site the share of inputs outside its bounds (the per-sample bounds
//! `f_l l`, `f_u u` at a dynamic site) is counted image by image ([`clipping`]).

use crate::act_quant::Clipping;
use crate::config::Arm;
use crate::error::Result;
use crate::models::QuantSr;
use crate::reproduce::{MiniSettings, Start, chosen};
use crate::trainer::{self, engine_config};
use candle_core::{Device, Tensor};
use compress_data::SrPairs;
use compress_train::baselines;
use compress_train::metrics::{mean, median, pearson};
use compress_train::super_resolution::{SrScore, bicubic_score};
use compress_train::{Outcome as RunOutcome, ReportRow, RunContext};
use std::collections::HashMap;
use std::fmt::Write as _;

/// One training change tried on the DDTB arm.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Probe {
    /// Run-name key.
    pub key: &'static str,
    /// What it changes.
    pub what: &'static str,
    /// Calibration batches times this.
    pub calibration_factor: usize,
    /// LR patch side times this, batch divided by its square (the same pixels per step).
    pub patch_factor: usize,
    /// The 7 training images with a grayscale and a half-size copy of each, for the FP start too.
    pub varied: bool,
}

/// The probes, the mini's own settings first.
pub fn probes() -> Vec<Probe> {
    let p = |key, what, calibration_factor, patch_factor, varied| Probe {
        key,
        what,
        calibration_factor,
        patch_factor,
        varied,
    };
    vec![
        p("as-mini", "the mini's settings", 1, 1, false),
        p("calibration-x10", "10x the calibration batches (mini: 20 -> 200)", 10, 1, false),
        p(
            "patch-x2",
            "LR patches twice as wide at a quarter of the batch (mini: 24 px x 8 -> 48 px x 2, the paper's DIV2K patch)",
            1,
            2,
            false,
        ),
        p(
            "varied-images",
            "a grayscale and a half-size copy of each training image (21 images), for the FP start too",
            1,
            1,
            true,
        ),
    ]
}

impl Probe {
    /// The mini's settings changed as the probe says.
    pub fn settings(&self, s: &MiniSettings) -> MiniSettings {
        MiniSettings {
            calibration_batches: s.calibration_batches * self.calibration_factor,
            lr_patch: s.lr_patch * self.patch_factor,
            batch: (s.batch / (self.patch_factor * self.patch_factor)).max(1),
            ..s.clone()
        }
    }
}

/// `pairs` with a grayscale and a half-size copy of each image after the originals.
pub fn varied(pairs: &SrPairs) -> Result<SrPairs> {
    let mut out = pairs.pairs.clone();
    for p in &pairs.pairs {
        out.push(p.grayscale(pairs.scale)?);
    }
    for p in &pairs.pairs {
        out.push(p.downscaled(2, pairs.scale)?);
    }
    Ok(SrPairs { pairs: out, scale: pairs.scale })
}

/// Per image of `eval` (one forward pass each, inference phase), per DDTB activation site in
/// forward order: `(site, inputs outside the bounds)`.
pub fn clipping(
    model: &dyn QuantSr,
    eval: &SrPairs,
    rgb_range: f32,
    device: &Device,
) -> Result<Vec<Vec<(String, Clipping)>>> {
    let sites: Vec<_> = model.act_quants().into_iter().filter_map(|q| Some((q.name.clone(), q.ddtb()?))).collect();
    let mut out = Vec::with_capacity(eval.pairs.len());
    for pair in &eval.pairs {
        for (_, q) in &sites {
            q.count_clipping()?;
        }
        trainer::evaluate(model, &SrPairs { pairs: vec![pair.clone()], scale: eval.scale }, rgb_range, device)?;
        let mut per_site = Vec::with_capacity(sites.len());
        for (name, q) in &sites {
            per_site.push((name.clone(), q.take_clipping()?.unwrap_or_default()));
        }
        out.push(per_site);
    }
    Ok(out)
}

/// One probe on one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeRun {
    /// The probe's key.
    pub probe: &'static str,
    /// Seed.
    pub seed: u64,
    /// PSNR-Y / SSIM-Y per image.
    pub score: SrScore,
    /// Per image, per site.
    pub clipping: Vec<Vec<(String, Clipping)>>,
}

/// Runs the diagnosis (`s`: the mini's settings) in `ctx`.
pub fn diagnose(s: &MiniSettings, ctx: &RunContext) -> Result<RunOutcome> {
    let s = &MiniSettings { seeds: ctx.seeds_or(&s.seeds), ..s.clone() };
    let device = ctx.device();
    let Start { fp_path, fp, train, eval } = Start::load(s, ctx)?;
    // The mini's recorded choice (the mini reuses what this computes, and the reverse).
    let (choice, choice_dir, _) = chosen(s, (&fp, &fp_path), &train, &ctx.bound("ddtb", "mini"))?;
    let lr = choice.lr(Arm::Ddtb)?;
    let varied_train = varied(&train)?;
    let profile = if s.smoke { baselines::Profile::Smoke } else { baselines::Profile::Full };
    let fp_varied_path =
        baselines::edsr_mini_on("edsr-mini-photos-varied", &varied_train, profile, &ctx.root(), ctx.is_quiet())?;
    let fp_varied = compress_nn::weights::read(&fp_varied_path, &Device::Cpu)?;
    let probes = probes();
    let jobs: Vec<(Probe, u64)> = probes.iter().flat_map(|&p| s.seeds.iter().map(move |&seed| (p, seed))).collect();
    let runs = ctx.side_by_side(&jobs, s.parallel_runs, |&(probe, seed), sub| -> Result<ProbeRun> {
        let cfg = probe.settings(s).config_at(Arm::Ddtb, seed, lr)?;
        let (fp, data) = if probe.varied { (&fp_varied, &varied_train) } else { (&fp, &train) };
        let (mut run, resuming) = sub.arm(&format!("{}-seed{seed}", probe.key), &engine_config(&cfg.recipe))?;
        let (outcome, model) = trainer::train(&cfg, fp, data, &eval.pairs, &mut run, resuming, sub.device())?;
        let clipping = clipping(model.as_ref(), &eval.pairs, cfg.arch.setting().rgb_range, sub.device())?;
        if !ctx.is_quiet() {
            println!("{} seed {seed}: PSNR-Y {:.3} dB", probe.key, outcome.score.psnr);
        }
        Ok(ProbeRun { probe: probe.key, seed, score: outcome.score, clipping })
    })?;
    let arch = s.config(Arm::Ddtb, 0)?.arch;
    let rgb = arch.setting().rgb_range;
    let fp_score = |w: &HashMap<String, Tensor>| -> Result<SrScore> {
        trainer::evaluate(trainer::teacher(&arch, w, device)?.as_ref(), &eval.pairs, rgb, device)
    };
    let scores = Scores { bicubic: bicubic_score(&eval.pairs)?, fp: fp_score(&fp)?, fp_varied: fp_score(&fp_varied)? };
    let run = ctx.run("", s, 0)?;
    run.write_json(
        "diagnosis.json",
        &serde_json::json!({"lr": lr, "choice": choice_dir, "probes": probes, "runs": runs,
            "bicubic": scores.bicubic, "fp": scores.fp, "fp_varied": scores.fp_varied}),
    )?;
    let report = report(s, ctx, lr, &probes, &runs, &scores);
    run.write_report(&report)?;
    Ok(RunOutcome::new(run.dir(), report, vec![]))
}

/// The references every probe is read against.
struct Scores {
    bicubic: SrScore,
    fp: SrScore,
    fp_varied: SrScore,
}

/// A probe's per-image PSNR / SSIM averaged over its seeds.
fn seed_mean(runs: &[ProbeRun], probe: &str) -> Option<SrScore> {
    SrScore::mean_over(&runs.iter().filter(|r| r.probe == probe).map(|r| &r.score).collect::<Vec<_>>())
}

/// A probe's clipping share per image and site, averaged over its seeds: `[image][site]`.
fn clipping_shares(runs: &[ProbeRun], probe: &str) -> Vec<Vec<f64>> {
    let mine: Vec<&ProbeRun> = runs.iter().filter(|r| r.probe == probe).collect();
    let Some(first) = mine.first() else { return vec![] };
    (0..first.clipping.len())
        .map(|i| (0..first.clipping[i].len()).map(|j| mean(mine.iter().map(|r| r.clipping[i][j].1.share()))).collect())
        .collect()
}

/// The mean squared error (8-bit grey levels squared) of a PSNR-Y at peak 255:
/// `255^2 10^(-PSNR / 10)`.
pub fn mse_of_psnr(psnr: f64) -> f64 {
    255.0f64.powi(2) * 10f64.powf(-psnr / 10.0)
}

fn report(
    s: &MiniSettings,
    ctx: &RunContext,
    lr: f64,
    probes: &[Probe],
    runs: &[ProbeRun],
    sc: &Scores,
) -> compress_train::Report {
    let n = sc.bicubic.images.len();
    let psnr_seeds = |probe: &str| -> Vec<f64> {
        let mut v: Vec<(u64, f64)> = runs.iter().filter(|r| r.probe == probe).map(|r| (r.seed, r.score.psnr)).collect();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    };
    let base = seed_mean(runs, probes[0].key);
    let gain = |x: &SrScore| x.minus(&sc.bicubic);
    let above = |x: &SrScore| gain(x).images.iter().filter(|i| i.psnr > 0.0).count();
    // The images the mini's settings leave below bicubic (seed means).
    let below: Vec<usize> =
        base.as_ref().map(|b| (0..n).filter(|&i| gain(b).images[i].psnr <= 0.0).collect()).unwrap_or_default();
    let names = |idx: &[usize]| idx.iter().map(|&i| sc.bicubic.images[i].name.clone()).collect::<Vec<_>>();
    let on_below = |x: &SrScore| {
        below
            .iter()
            .map(|&i| format!("{} {:+.2}", x.images[i].name, gain(x).images[i].psnr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = Vec::new();
    for p in &probes[1..] {
        let Some(m) = seed_mean(runs, p.key) else { continue };
        let base_above = base.as_ref().map(above).unwrap_or(0);
        rows.push(ReportRow::info_seeds(
            format!("PSNR-Y x2 (dB), all {n} images, per seed: as the mini vs {}", p.key),
            &psnr_seeds(probes[0].key),
            &psnr_seeds(p.key),
            format!(
                "{}: above bicubic on {} of {n} images (mini: {base_above}); DDTB - bicubic on the mini's below-bicubic images: {}",
                p.what,
                above(&m),
                on_below(&m)
            ),
        ));
    }
    rows.push(ReportRow::info(
        format!("PSNR-Y x2 (dB), all {n} images: FP start vs FP start trained on the varied images"),
        Some(sc.fp.psnr),
        Some(sc.fp_varied.psnr),
        format!(
            "above bicubic on {} vs {} of {n} images; FP - bicubic there: {} / {}",
            above(&sc.fp),
            above(&sc.fp_varied),
            on_below(&sc.fp),
            on_below(&sc.fp_varied)
        ),
    ));
    let shares = clipping_shares(runs, probes[0].key);
    let site_names: Vec<String> =
        runs.first().map(|r| r.clipping[0].iter().map(|c| c.0.clone()).collect()).unwrap_or_default();
    let per_image: Vec<f64> = shares.iter().map(|s| mean(s.iter().copied())).collect();
    let others: Vec<usize> = (0..n).filter(|i| !below.contains(i)).collect();
    let share_of = |idx: &[usize]| 100.0 * mean(idx.iter().map(|&i| per_image[i]));
    rows.push(ReportRow::info(
        format!(
            "activation inputs outside the bounds (%, mean of {} sites, seed means), as the mini: the other {} images vs the below-bicubic ones ({})",
            site_names.len(),
            others.len(),
            names(&below).join(", ")
        ),
        Some(share_of(&others)),
        Some(share_of(&below)),
        "measured: clipping at the learned (per-sample) bounds",
    ));
    // The error in grey levels squared: the image is below bicubic when the error W2A2 adds to
    // the FP model exceeds the FP model's margin over bicubic.
    let mse = |x: &SrScore| -> Vec<f64> { x.images.iter().map(|i| mse_of_psnr(i.psnr)).collect() };
    let (bic_mse, fp_mse) = (mse(&sc.bicubic), mse(&sc.fp));
    let margin: Vec<f64> = (0..n).map(|i| bic_mse[i] - fp_mse[i]).collect();
    let added: Vec<f64> =
        base.as_ref().map(|b| mse(b).iter().zip(&fp_mse).map(|(d, f)| d - f).collect()).unwrap_or_default();
    let median_of = |v: &[f64], idx: &[usize]| median(idx.iter().filter_map(|&i| v.get(i).copied()).collect());
    rows.push(ReportRow::info(
        "MSE added by W2A2 to the FP model (grey levels^2, seed means): median of the others vs of the below-bicubic images",
        Some(median_of(&added, &others)),
        Some(median_of(&added, &below)),
        "the quantization's own error, in absolute terms",
    ));
    rows.push(ReportRow::info(
        "the FP model's margin over bicubic (MSE, grey levels^2): median of the others vs of the below-bicubic images",
        Some(median_of(&margin, &others)),
        Some(median_of(&margin, &below)),
        "what the FP model leaves for the quantization to spend",
    ));
    if let Some(b) = &base {
        let g: Vec<f64> = gain(b).images.iter().map(|i| i.psnr).collect();
        let bic: Vec<f64> = sc.bicubic.images.iter().map(|i| i.psnr).collect();
        rows.push(ReportRow::info(
            format!("correlation over the {n} images (Pearson r): clipping share vs DDTB - bicubic; bicubic PSNR vs DDTB - bicubic"),
            Some(pearson(&per_image, &g)),
            Some(pearson(&bic, &g)),
            "what goes with the loss to bicubic: clipping (left) or how easy bicubic has it (right)",
        ));
    }
    let mut notes = format!(
        "\nThe DDTB arm at the mini's chosen rate {lr:e} (bounds at {}x), seeds {:?}; probes:\n\n",
        s.bound_lr / s.lr,
        s.seeds
    );
    for p in probes {
        let _ = writeln!(notes, "- `{}`: {}", p.key, p.what);
    }
    let _ = write!(
        notes,
        "\nPer image, seed means (PSNR-Y in dB over bicubic; MSE in grey levels^2: bicubic's, the FP model's \
         margin over it, what W2A2 adds to the FP model as the mini; clipping in % of the site's inputs, as \
         the mini):\n\n| image | bicubic | FP | FP varied |"
    );
    for p in probes {
        let _ = write!(notes, " {} |", p.key);
    }
    notes += " MSE bicubic | FP margin | W2A2 added | clipped, mean of sites | most clipped site |\n|";
    notes += &" --- |".repeat(4 + probes.len() + 5);
    notes += "\n";
    let means: Vec<Option<SrScore>> = probes.iter().map(|p| seed_mean(runs, p.key)).collect();
    for i in 0..n {
        let img = &sc.bicubic.images[i];
        let _ = write!(
            notes,
            "| {}{} | {:.2} | {:+.2} | {:+.2} |",
            img.name,
            if below.contains(&i) { " (below)" } else { "" },
            img.psnr,
            sc.fp.images[i].psnr - img.psnr,
            sc.fp_varied.images[i].psnr - img.psnr
        );
        for m in &means {
            let _ = write!(
                notes,
                " {} |",
                m.as_ref().map(|m| format!("{:+.2}", m.images[i].psnr - img.psnr)).unwrap_or("-".into())
            );
        }
        let (site, most) = shares
            .get(i)
            .and_then(|s| s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)))
            .map(|(j, v)| (site_names.get(j).cloned().unwrap_or_default(), *v))
            .unwrap_or_default();
        let _ = writeln!(
            notes,
            " {:.3} | {:.3} | {:.3} | {:.2} | {site} {:.2} |",
            bic_mse[i],
            margin[i],
            added.get(i).copied().unwrap_or(f64::NAN),
            100.0 * per_image.get(i).copied().unwrap_or(f64::NAN),
            100.0 * most
        );
    }
    let _ = write!(
        notes,
        "\nPer site (as the mini, seed means, % of inputs outside the bounds):\n\n| site | below-bicubic images | the others |\n| --- | --- | --- |\n"
    );
    for (j, name) in site_names.iter().enumerate() {
        let at = |idx: &[usize]| 100.0 * mean(idx.iter().map(|&i| shares[i][j]));
        let _ = writeln!(notes, "| {name} | {:.2} | {:.2} |", at(&below), at(&others));
    }
    ctx.report(format!("DDTB {}: why W2A2 falls below bicubic on some images", ctx.profile()), &s.seeds)
        .rows(rows)
        .notes(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compress_data::embedded;

    #[test]
    fn probes_keep_the_pixels_per_step_and_start_with_the_mini() {
        let s = MiniSettings::mini();
        let ps = probes();
        assert_eq!(ps[0].settings(&s).lr_patch, s.lr_patch);
        assert_eq!(ps[0].settings(&s).calibration_batches, 20);
        assert_eq!(ps[1].settings(&s).calibration_batches, 200);
        let wide = ps[2].settings(&s);
        assert_eq!((wide.lr_patch, wide.batch), (48, 2));
        assert_eq!(wide.lr_patch * wide.lr_patch * wide.batch, s.lr_patch * s.lr_patch * s.batch);
        assert!(ps[3].varied && !ps[..3].iter().any(|p| p.varied));
    }

    #[test]
    fn mse_of_a_psnr() {
        // 48.13 dB at peak 255 is an MSE of one grey level squared.
        assert!((mse_of_psnr(10.0 * (255.0f64 * 255.0).log10()) - 1.0).abs() < 1e-9);
        assert!((mse_of_psnr(20.0) - 650.25).abs() < 1e-9);
    }

    #[test]
    fn the_varied_set_adds_a_gray_and_a_half_size_copy_of_each_image() {
        let train = embedded::photos_12("train", 2).unwrap();
        let v = varied(&train).unwrap();
        assert_eq!(v.pairs.len(), 3 * train.pairs.len());
        let k = train.pairs.len();
        assert_eq!(v.pairs[k].name(), format!("{}-gray", train.pairs[0].name()));
        assert_eq!(v.pairs[2 * k].height, (train.pairs[0].height / 2) / 2 * 2);
    }
}
