//! The tasks behind each subcommand.

use anyhow::{Result, bail};
use compress_data::batch::Dataset;
use compress_data::embedded;
use compress_data::fetch::{Fetcher, FileOutcome, default_cache_root};
use compress_data::manifest::Manifest;
use compress_data::mnist::Split;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// The ten methods, each with the issue that brings it.
pub const METHODS: [(&str, &str); 10] = [
    ("ddtb", "2-4 bit quantization of super-resolution networks"),
    ("cf-vit", "coarse-to-fine vision transformer"),
    ("clr-rnf", "filter pruning by reciprocal neighbours"),
    ("dcff", "dynamic-coded filter fusion"),
    ("optg", "gradient-driven unstructured sparsity"),
    ("intraq", "zero-shot quantization from synthetic images"),
    ("fdda", "post-training quantization with synthetic + calibration data"),
    ("pss-net", "resource-adaptive supernet"),
    ("onexn", "1xN block sparsity"),
    ("whitebox", "class-wise channel pruning"),
];

const PROFILES: [&str; 4] = ["smoke", "mini", "mini-long", "paper"];

fn known_methods() -> String {
    METHODS.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ")
}

pub fn reproduce(method: &str, profile: &str, device: &str, resume: bool, quiet: bool) -> Result<()> {
    let Some((_, what)) = METHODS.iter().find(|(m, _)| *m == method) else {
        bail!("unknown method {method:?}; known methods: {}", known_methods());
    };
    if !PROFILES.contains(&profile) {
        bail!("unknown profile {profile:?}; profiles: {}", PROFILES.join(", "));
    }
    if profile == "mini-long" && method != "intraq" {
        bail!("the mini-long profile is IntraQ's; {method} has smoke, mini and paper");
    }
    let dev = crate::device::parse(device)?;
    let start = std::time::Instant::now();
    let runs = std::path::Path::new("runs");
    if method == "dcff" {
        let p = match profile {
            "smoke" => dcff::reproduce::Profile::Smoke,
            "mini" => dcff::reproduce::Profile::Mini,
            _ => dcff::reproduce::Profile::Paper,
        };
        let (dir, report) = dcff::reproduce::reproduce(p, runs, resume, quiet, &dev)?;
        println!("{}", report.markdown());
        println!("run: {} ({:.0} s)", dir.display(), start.elapsed().as_secs_f64());
        return Ok(());
    }
    if method == "ddtb" {
        let p = match profile {
            "smoke" => ddtb::reproduce::Profile::Smoke,
            "mini" => ddtb::reproduce::Profile::Mini,
            _ => ddtb::reproduce::Profile::Paper,
        };
        if p != ddtb::reproduce::Profile::Paper && dev.is_cpu() && !compress_train::parallel::candle_single_threaded() {
            // Train (or find) the full-precision start on every core, then run the arms side by
            // side, one core each, in a child process whose candle pool is single-threaded.
            ddtb::reproduce::prepare(p, runs, quiet)?;
            return rerun_single_threaded("DDTB");
        }
        let (dir, report) = ddtb::reproduce::reproduce(p, runs, resume, quiet, &dev)?;
        println!("{}", report.markdown_with(3));
        println!("run: {} ({:.0} s)", dir.display(), start.elapsed().as_secs_f64());
        return Ok(());
    }
    if method == "cf-vit" {
        let p = match profile {
            "smoke" => cf_vit::reproduce::Profile::Smoke,
            "mini" => cf_vit::reproduce::Profile::Mini,
            _ => cf_vit::reproduce::Profile::Paper,
        };
        if p == cf_vit::reproduce::Profile::Mini && dev.is_cpu() && !compress_train::parallel::candle_single_threaded()
        {
            // Six small runs (3 seeds x CF-ViT / baseline), two side by side on one core each.
            return rerun_single_threaded("CF-ViT");
        }
        let (dir, report) = cf_vit::reproduce::reproduce(p, runs, resume, quiet, &dev)?;
        println!("{}", report.markdown());
        println!("run: {} ({:.0} s)", dir.display(), start.elapsed().as_secs_f64());
        return Ok(());
    }
    if method == "intraq" {
        let p = match profile {
            "smoke" => intraq::reproduce::Profile::Smoke,
            "mini" => intraq::reproduce::Profile::Mini,
            "mini-long" => intraq::reproduce::Profile::MiniLong,
            _ => intraq::reproduce::Profile::Paper,
        };
        let side_by_side = matches!(p, intraq::reproduce::Profile::Mini | intraq::reproduce::Profile::MiniLong);
        if side_by_side && dev.is_cpu() && !compress_train::parallel::candle_single_threaded() {
            // Seeds run two at a time, one core each.
            return rerun_single_threaded("IntraQ");
        }
        let (dir, report) = intraq::reproduce::reproduce(p, runs, resume, quiet, &dev)?;
        println!("{}", report.markdown_with(3));
        println!("run: {} ({:.0} s)", dir.display(), start.elapsed().as_secs_f64());
        return Ok(());
    }
    if method == "onexn" {
        let p = match profile {
            "smoke" => onexn::reproduce::Profile::Smoke,
            "mini" => onexn::reproduce::Profile::Mini,
            _ => bail!(
                "onexn has no paper profile yet: it needs ImageNet and the authors' pretrained \
                 MobileNet/ResNet-50 checkpoints (Google Drive, not on the Hub) and 180 epochs per setting; \
                 the mini profile and `cargo xtask bench onexn` are what runs here"
            ),
        };
        let (dir, report) = onexn::reproduce::reproduce(p, runs, resume, quiet, &dev)?;
        println!("{}", report.markdown());
        println!("run: {} ({:.0} s)", dir.display(), start.elapsed().as_secs_f64());
        return Ok(());
    }
    bail!(
        "{method} ({what}) is not implemented yet: its crate arrives with its own issue, after the three \
         foundation issues. `cargo xtask data` checks the embedded datasets today."
    )
}

/// Runs this command again in a child process whose candle and rayon pools are
/// single-threaded, so that small runs can share the cores side by side
/// (`compress_train::parallel`).
fn rerun_single_threaded(what: &str) -> Result<()> {
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .status()?;
    if !status.success() {
        bail!("the {what} runs failed ({status})");
    }
    Ok(())
}

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
    let pb = bar(quiet, 4, "{msg} [{bar:20}] {pos}/{len}");
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
    pb.finish_and_clear();
    for d in [&train, &test] {
        let [c, h, w] = d.sample_shape();
        println!(
            "mnist-5k {:<11} {:>5} images {c}x{h}x{w}, {} classes, per class {:?}, sha256 verified",
            d.name(),
            d.len(),
            d.num_classes(),
            d.class_counts()
        );
    }
    for (split, s) in [("train", &sr_train), ("test", &sr_test)] {
        let sizes: Vec<String> = s
            .pairs
            .iter()
            .map(|p| {
                let name = p.path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!("{name} {}x{}", p.width, p.height)
            })
            .collect();
        println!(
            "photos-12 {split:<5} {} HR images (x2 LR made by MATLAB bicubic): {}",
            s.pairs.len(),
            sizes.join(", ")
        );
    }
    println!("photos-12 sha256 verified");
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
    let out = compress_train::baselines::train(baseline, profile, epochs, std::path::Path::new("runs"), resume, quiet)?;
    println!("{}", out.report.markdown());
    println!("run: {} ({:.0} s)", out.dir.display(), start.elapsed().as_secs_f64());
    Ok(())
}

pub fn report() -> Result<()> {
    let reports = compress_train::record::newest_reports(std::path::Path::new("runs"))?;
    if reports.is_empty() {
        bail!(
            "no reports under runs/ yet: `cargo xtask train <model>` or `cargo xtask reproduce <method>` writes them"
        );
    }
    println!("| run | setting | baseline | method | paper | delta | claim | verdict |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    for (path, r) in reports {
        let run = path.parent().and_then(|p| p.parent()).map(|p| p.display().to_string()).unwrap_or_default();
        for row in r.rows {
            println!(
                "| {run} | {} | {} | {} | {} | {} | {} | {:?} |",
                row.setting,
                f(row.baseline),
                f(row.method),
                f(row.paper),
                row.delta(),
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
    fn unknown_method_lists_known_ones() {
        let e = reproduce("prune-all", "mini", "cpu", false, true).expect_err("unknown");
        assert!(e.to_string().contains("known methods: ddtb, cf-vit"), "{e}");
        let e = reproduce("dcff", "huge", "cpu", false, true).expect_err("bad profile");
        assert!(e.to_string().contains("profiles: smoke, mini, mini-long, paper"), "{e}");
        let e = reproduce("dcff", "mini-long", "cpu", false, true).expect_err("intraq only");
        assert!(e.to_string().contains("IntraQ's"), "{e}");
        let e = reproduce("optg", "mini", "cpu", false, true).expect_err("not yet");
        assert!(e.to_string().contains("not implemented yet"), "{e}");
    }

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
