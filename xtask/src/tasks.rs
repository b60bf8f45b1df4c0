//! The tasks behind each subcommand.

use anyhow::{Result, bail};
use compress_data::batch::Dataset;
use compress_data::embedded;
use compress_data::fetch::{Fetcher, FileOutcome, default_cache_root};
use compress_data::manifest::Manifest;
use compress_data::mnist::Split;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

fn bar(quiet: bool, len: u64, template: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

fn manifest() -> Result<Manifest> {
    Ok(Manifest::load(&embedded::datasets_dir()?.join("manifest.toml"))?)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

pub fn fetch(dataset: Option<&str>, list: bool, cache: Option<PathBuf>, quiet: bool) -> Result<()> {
    let m = manifest()?;
    let root = cache.unwrap_or_else(default_cache_root);
    let fetcher = Fetcher::new(&root);
    if list || dataset.is_none() {
        println!("{:<10} {:>10}  {:<8} {:<10} description", "dataset", "size", "how", "cached");
        for d in &m.datasets {
            let dir = fetcher.dataset_dir(&d.name);
            let cached = if d.files.iter().all(|f| dir.join(&f.name).is_file()) && dir.exists() { "yes" } else { "no" };
            let size = d.size_bytes.map(human).unwrap_or_else(|| "?".into());
            let how = if d.manual { "manual" } else { "fetch" };
            println!("{:<10} {:>10}  {:<8} {:<10} {}", d.name, size, how, cached, d.description);
        }
        println!("cache root: {}", root.display());
        return Ok(());
    }
    let Some(name) = dataset else { return Ok(()) };
    let entry = m.get(name)?;
    let pb =
        bar(quiet, entry.size_bytes.unwrap_or(0), "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}");
    let report = fetcher.fetch(entry, &|file, done, total| {
        pb.set_message(file.to_string());
        if let Some(t) = total {
            pb.set_length(t);
        }
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    for (file, outcome, published) in &report.files {
        let how = match outcome {
            FileOutcome::Cached => "already cached".to_string(),
            FileOutcome::Downloaded(src) => format!("downloaded from {src}"),
        };
        let check = if *published { "sha256 verified" } else { "sha256 recorded (no published digest)" };
        println!("{file}: {how}, {check}");
    }
    println!("{} is ready in {}", entry.name, report.dir.display());
    Ok(())
}

pub fn data(quiet: bool) -> Result<()> {
    let dir = embedded::datasets_dir()?;
    println!("embedded datasets in {}", dir.display());
    let mut verified = Vec::new();
    for name in embedded::EMBEDDED {
        let n = embedded::verify(name)?;
        verified.push(format!("{name}: sha256 of all {n} files verified against its SHA256SUMS, no unlisted files"));
    }
    let pb = bar(quiet, 5, "{msg} [{bar:20}] {pos}/{len}");
    pb.set_message("mnist-5k");
    let train = embedded::mnist_5k(Split::Train)?;
    pb.inc(1);
    let test = embedded::mnist_5k(Split::Test)?;
    pb.inc(1);
    pb.set_message("photos-12");
    let sr_train = embedded::photos_12("train", 2)?;
    pb.inc(1);
    let sr_test = embedded::photos_12("test", 2)?;
    pb.inc(1);
    pb.set_message("sr-heldout");
    let eval = embedded::SrEval::load(2, None)?;
    let held = compress_data::SrPairs { pairs: eval.pairs.pairs[eval.photos_12_test..].to_vec(), scale: 2 };
    pb.inc(1);
    pb.finish_and_clear();
    for d in [&train, &test] {
        let [c, h, w] = d.sample_shape();
        println!(
            "mnist-5k {:<11} {:>5} images {c}x{h}x{w}, {} classes, per class {:?}",
            d.name(),
            d.len(),
            d.num_classes(),
            d.class_counts()
        );
    }
    for (split, s) in [("photos-12 train", &sr_train), ("photos-12 test", &sr_test), ("sr-heldout", &held)] {
        let sizes: Vec<String> = s.pairs.iter().map(|p| format!("{} {}x{}", p.name(), p.width, p.height)).collect();
        println!("{split:<15} {} HR images (x2 LR made by MATLAB bicubic): {}", s.pairs.len(), sizes.join(", "));
    }
    for line in verified {
        println!("{line}");
    }
    Ok(())
}

/// `(model, dataset, baseline)` of the dense baselines.
const TRAINABLE: [(&str, &str, &str); 3] = [
    ("resnet20", "mnist-5k", "resnet20-mnist"),
    ("mobilenetv2", "mnist-5k", "mobilenetv2-mnist"),
    ("edsr-mini", "photos-12", "edsr-mini-photos"),
];

pub fn train(
    model: &str,
    dataset: Option<&str>,
    epochs: Option<usize>,
    smoke: bool,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    let Some((_, default_ds, _)) = TRAINABLE.iter().find(|t| t.0 == model) else {
        bail!("unknown model {model:?}; trainable baselines: {}", TRAINABLE.map(|t| t.0).join(", "));
    };
    let ds = dataset.unwrap_or(default_ds);
    let Some((_, _, baseline)) = TRAINABLE.iter().find(|t| t.0 == model && t.1 == ds) else {
        bail!("{model} is trained on {default_ds}, not {ds:?} (full datasets arrive with the methods' paper profiles)");
    };
    let profile =
        if smoke { compress_train::baselines::Profile::Smoke } else { compress_train::baselines::Profile::Full };
    let start = std::time::Instant::now();
    // Smoke runs live apart from real ones, as the reproductions' do.
    let runs = if smoke { std::path::Path::new("runs/smoke") } else { std::path::Path::new("runs") };
    let out = compress_train::baselines::train(baseline, profile, epochs, runs, resume, quiet)?;
    println!("{}", out.report.markdown());
    println!("run: {} ({:.0} s)", out.dir.display(), start.elapsed().as_secs_f64());
    Ok(())
}

pub fn report() -> Result<()> {
    let compress_train::record::Reports { found: reports, skipped } =
        compress_train::record::newest_reports(std::path::Path::new("runs"));
    for (path, e) in &skipped {
        eprintln!("skipped {}: {e}", path.display());
    }
    if reports.is_empty() {
        bail!(
            "no reports under runs/ yet: `cargo xtask train <model>` or `cargo xtask reproduce <method>` writes them"
        );
    }
    println!("| run | setting | baseline | method | paper | delta | claim | verdict |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (path, r) in reports {
        let run = path.parent().and_then(|p| p.parent()).map(|p| p.display().to_string()).unwrap_or_default();
        let d = r.decimals;
        for row in &r.rows {
            let f = |v: Option<f64>| v.map(|x| row.figure(x, d, false)).unwrap_or_else(|| "-".into());
            println!(
                "| {run} | {} | {} | {} | {} | {} | {} | {:?} |",
                row.setting,
                f(row.baseline),
                f(row.method),
                f(row.paper),
                row.delta(d),
                row.claim,
                row.verdict
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_dataset_lists_known_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = fetch(Some("imagenet-22k"), false, Some(dir.path().to_path_buf()), true).expect_err("unknown");
        assert!(e.to_string().contains("known datasets: mnist, cifar10"), "{e}");
    }

    #[test]
    fn embedded_data_checks_out() {
        data(true).expect("embedded datasets");
    }
}
