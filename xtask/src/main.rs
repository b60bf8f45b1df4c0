//! `cargo xtask`: the toolkit's command line. Orchestration only: every task calls a library.

mod device;
mod features;
mod gpu_check;
mod reproduce;
mod tasks;
mod zoo;

use clap::{Parser, Subcommand};

/// Neural-network compression toolkit on candle: reproduce the papers, fetch datasets, train
/// baselines, benchmark and report.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", arg_required_else_help = true, version)]
struct Cli {
    /// No progress bars (also when stderr is not a terminal or CI is set).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Reproduce a paper's claim (default: the `mini` profile on the embedded data, CPU); with no
    /// method, list the methods and their profiles; `all` runs every method's mini.
    Reproduce {
        /// One of: ddtb, cf-vit, clr-rnf, dcff, optg, intraq, fdda, pss-net, onexn, whitebox; or all.
        method: Option<String>,
        /// The method's profile: smoke (seconds), mini (minutes, embedded data), paper (the
        /// paper's setting); `cargo xtask reproduce` lists each method's.
        #[arg(long, default_value = "mini")]
        profile: String,
        /// cpu, cuda:N or metal:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Continue the newest interrupted runs of this method and profile.
        #[arg(long)]
        resume: bool,
        /// Seeds to run instead of the profile's, e.g. 3,4,5 (the report names them).
        #[arg(long)]
        seeds: Option<String>,
        /// Cores to use (default: all).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Download a full dataset of datasets/manifest.toml into the cache, checked.
    Fetch {
        /// A dataset name from datasets/manifest.toml (`--list` shows them).
        dataset: Option<String>,
        /// List the datasets with their size and cache status.
        #[arg(long)]
        list: bool,
        /// Cache root (default: $COMPRESS_DATA, else ~/.cache/compress-rs).
        #[arg(long)]
        cache: Option<std::path::PathBuf>,
    },
    /// Check and describe the datasets embedded in datasets/ (checksums, sizes, class balance).
    Data,
    /// The model zoo's cost table: MACs and parameters, analytic and counted, vs published.
    Zoo,
    /// Train a dense baseline: resnet20 or mobilenetv2 on mnist-5k, edsr-mini on photos-12.
    Train {
        /// resnet20, mobilenetv2 or edsr-mini.
        model: String,
        /// The dataset (default: the model's embedded one).
        #[arg(long)]
        dataset: Option<String>,
        /// Override the recipe's number of epochs (rounds for edsr-mini).
        #[arg(long)]
        epochs: Option<usize>,
        /// Seconds-long run on a subset (what the tests run).
        #[arg(long)]
        smoke: bool,
        /// Continue the newest run of this baseline from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Timing benches: `train-step` (ResNet-20 step, ours vs candle's convolution), `conv` (one
    /// conv layer), `onexn` (the 1xN kernel against dense and CSR; MobileNetV2 packed), `ddtb`
    /// (a W2A2 training step of each DDTB arm against the full-precision step), `cf-vit`
    /// (early-exit throughput at batch 1 and 64 against the fine-only ViT), `synth` (IntraQ's
    /// image synthesis on ResNet-20, 32 x 32, batch 256, and FDDA's generator step), `clr-rnf` (the compact VGG-16 /
    /// ResNet-56 forward against the unpruned one at batch 1 and 64), `optg` (the CSR kernel against
    /// the dense layers of ResNet-50, MobileNetV1 and the mini's MLP at 90-99 % sparsity).
    Bench {
        /// Which bench.
        #[arg(default_value = "train-step")]
        what: String,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// onexn: least seconds per timing (median of the repetitions).
        #[arg(long, default_value_t = 0.1)]
        seconds: f64,
        /// onexn: batch 8, p 0.5 / 0.75, N = 8 only; train-step: the toolkit's convolution only
        /// (no candle comparison, e.g. under a profiler).
        #[arg(long)]
        quick: bool,
        /// train-step: also the time of each of the toolkit's ops per step (conv shapes apart).
        #[arg(long)]
        ops: bool,
    },
    /// Print the newest report of each method as one table.
    Report,
    /// On a GPU machine (xtask built with --features cuda): every owned kernel against the CPU,
    /// the CUDA 1xN bench against dense, every method's smoke reproduction on the device; one
    /// report (tools/gpu-check.sh builds it here and prints the command to run there).
    GpuCheck {
        /// The device: cuda:N (cpu checks the command itself).
        #[arg(long, default_value = "cuda:0")]
        device: String,
        /// Least seconds per bench timing.
        #[arg(long, default_value_t = 0.2)]
        seconds: f64,
        /// Leave out the smoke reproductions.
        #[arg(long)]
        no_smoke: bool,
        /// Bench only the first N of the ten 1x1 layers.
        #[arg(long, default_value_t = 10)]
        layers: usize,
        /// Bench batches, comma-separated.
        #[arg(long, default_value = "1,64")]
        batches: String,
    },
}

/// Keeps freed memory in the process instead of returning it to the kernel. candle allocates a
/// fresh buffer for every tensor op; with glibc's defaults each large buffer is a new `mmap`
/// whose pages fault in again, which cost about 20 % of a ResNet-20 training step here.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// An error and its causes joined by ": ", leaving out a cause whose text the message before it
/// already ends with (errors that print their source, such as `path: source`, would otherwise
/// print it twice).
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.ends_with(&c) {
            out = format!("{out}: {c}");
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match features::split(&args).and_then(|(f, rest)| Ok((features::reexec_if_needed(&f, &rest)?, rest))) {
        Ok((Some(code), _)) => return std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Ok((None, rest)) => rest,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(std::iter::once("xtask".to_string()).chain(rest));
    let quiet = cli.quiet || std::env::var_os("CI").is_some() || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match cli.task {
        Task::Reproduce { method, profile, device, resume, seeds, threads } => match method {
            None => {
                print!("{}", reproduce::list());
                Ok(())
            }
            Some(m) => seeds.as_deref().map(reproduce::parse_seeds).transpose().and_then(|seeds| {
                reproduce::reproduce(&m, &reproduce::Options { profile, device, resume, seeds, threads, quiet })
            }),
        },
        Task::Fetch { dataset, list, cache } => tasks::fetch(dataset.as_deref(), list, cache, quiet),
        Task::Data => tasks::data(quiet),
        Task::Zoo => zoo::cost_table(),
        Task::Train { model, dataset, epochs, smoke, resume } => {
            tasks::train(&model, dataset.as_deref(), epochs, smoke, resume, quiet)
        }
        Task::Bench { what, steps, seconds, quick, ops } => {
            if what == "onexn" {
                onexn::bench::run(&mut std::io::stdout(), seconds, quick).map_err(Into::into)
            } else if what == "ddtb" {
                ddtb::overhead::bench(std::path::Path::new("runs"), seconds.max(1.0))
                    .map(|t| print!("{t}"))
                    .map_err(Into::into)
            } else if what == "cf-vit" {
                cf_vit::throughput::bench(std::path::Path::new("runs"), seconds.max(1.0))
                    .map(|t| print!("{t}"))
                    .map_err(Into::into)
            } else if what == "optg" {
                optg::bench::run(&mut std::io::stdout(), seconds, quick).map_err(Into::into)
            } else if what == "clr-rnf" {
                clr_rnf::bench::run(&mut std::io::stdout(), seconds.max(0.2)).map_err(Into::into)
            } else if what == "synth" {
                intraq::synthesis::bench(steps)
                    .map(|t| println!("{t}"))
                    .map_err(anyhow::Error::from)
                    .and_then(|()| fdda::bench::generator_step(steps).map(|t| println!("{t}")).map_err(Into::into))
            } else if what == "train-step" {
                compress_train::bench::train_step(&mut std::io::stdout(), steps, quick, ops).map_err(Into::into)
            } else if what == "conv" {
                compress_train::bench::conv_layer(&mut std::io::stdout(), steps).map_err(Into::into)
            } else {
                Err(anyhow::anyhow!(
                    "unknown bench {what:?}; benches: train-step, conv, onexn, ddtb, cf-vit, synth, clr-rnf, optg"
                ))
            }
        }
        Task::Report => tasks::report(),
        Task::GpuCheck { device, seconds, no_smoke, layers, batches } => batches
            .split(',')
            .map(|b| b.trim().parse::<usize>().map_err(|e| anyhow::anyhow!("batch {b:?}: {e}")))
            .collect::<anyhow::Result<Vec<usize>>>()
            .and_then(|batches| {
                let root = std::path::PathBuf::from("runs");
                gpu_check::run(&gpu_check::Options { device, seconds, no_smoke, layers, batches, root }).map(|_| ())
            }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_prints_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e: anyhow::Error = compress_data::DataError::io("datasets/x.gz", io).into();
        let text = describe(&e);
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.starts_with("datasets/x.gz: "), "{text}");
        // A cause the message does not repeat is kept.
        let wrapped = anyhow::Error::from(std::io::Error::other("disk full")).context("writing runs/x");
        assert_eq!(describe(&wrapped), "writing runs/x: disk full");
    }
}
