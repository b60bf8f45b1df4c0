//! `cargo xtask bench cf-vit`: wall-clock throughput of CF-ViT's early exit against the
//! fine-only ViT, both trained by `cargo xtask reproduce cf-vit` (seed 0), on the 1,000 test
//! digits at batch 1 and 64. The threshold is claim 2's operating point for this seed: the most
//! accurate eta whose expected MACs are at most half the baseline's.

use anyhow::{Context, Result, bail};
use candle_core::Device;
use cf_vit::budget::{budget_curve, eta_grid};
use cf_vit::reproduce::{baseline_macs, best_within, digits, mini_vit};
use cf_vit::throughput::measure;
use cf_vit::trainer::stage_records;
use cf_vit::{CfVitConfig, Selection, build};
use compress_nn::network::Network;
use compress_nn::zoo::Vit;
use std::path::{Path, PathBuf};

fn newest_weights(name: &str) -> Result<PathBuf> {
    let run = compress_train::Run::newest(Path::new("runs"), name)?
        .with_context(|| format!("no run runs/{name}; run `cargo xtask reproduce cf-vit` first"))?;
    let p = run.dir().join("model.safetensors");
    if !p.is_file() {
        bail!("{} has no trained model (an unfinished run?); run `cargo xtask reproduce cf-vit`", run.dir().display());
    }
    Ok(p)
}

pub fn run(seconds: f64) -> Result<()> {
    let dev = Device::Cpu;
    let vit = mini_vit()?;
    let cf_tensors = compress_nn::weights::read(&newest_weights("cf-vit/mini/cf-vit-seed0")?, &dev)?;
    let cf = build::deit(&vit, CfVitConfig::mini(), &cf_tensors, 0, &dev)?;
    let base = Network::<Vit>::load(vit, &newest_weights("cf-vit/mini/baseline-seed0")?, &dev)?;
    let test = digits(false, None)?;
    let (base_top1, _) = compress_train::classify::evaluate(&base, &test, 250)?;
    let records = stage_records(&cf, &test, 250, Selection::Informative)?;
    let (mc, mf) = cf.stage_macs();
    let mb = baseline_macs(&cf);
    let curve = budget_curve(&records, mc as f64, mf as f64, &eta_grid());
    let op = best_within(&curve, 0.5 * mb).context("no threshold within half the baseline's MACs")?;
    println!(
        "CF-ViT (seed 0) at eta {:.2}: top-1 {:.1} % vs baseline {:.1} %, {:.0} % exit, MACs {:.2} M vs {:.2} M ({:.2}x fewer); {} candle thread(s)",
        op.eta,
        op.top1,
        base_top1,
        100.0 * op.exit_rate,
        op.macs / 1e6,
        mb / 1e6,
        mb / op.macs,
        candle_core::utils::get_num_threads()
    );
    println!(
        "| batch | CF-ViT (images/s) | baseline (images/s) | speed-up | MAC ratio | speed-up / MAC ratio | CF top-1 | exit % |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let fwd = |x: &candle_core::Tensor| base.forward_t(x, false).map_err(|e| candle_core::Error::Msg(e.to_string()));
    for batch in [64, 1] {
        let t = measure(&cf, &fwd, &test, op.eta, batch, seconds)?;
        let ratio = mb / op.macs;
        println!(
            "| {batch} | {:.0} | {:.0} | {:.2}x | {ratio:.2}x | {:.0} % | {:.1} | {:.1} |",
            t.cf_images_per_s,
            t.baseline_images_per_s,
            t.speedup(),
            100.0 * t.speedup() / ratio,
            t.cf_top1,
            100.0 * t.exit_rate
        );
    }
    Ok(())
}
