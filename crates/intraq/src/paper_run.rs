//! The paper's pipeline on real data (spec sections 2-5): a pytorchcv teacher and its test set,
//! the dataset's official synthesis (5,120 images), then, per bit-width, generator calibration
//! and fine-tuning with the test top-1 after every epoch (the official code reports the best).

use crate::error::{IntraqError, Result};
use crate::finetune::{FinetuneConfig, QuantOutcome, Stage2, top1};
use crate::paper::{Built, Dataset, PAPER_ROWS, PaperModel};
use crate::reproduce::Arm;
use crate::synthesis::IntraqTerms;
use compress_core::quant::RangeRule;
use compress_data::batch::{Augment, Dataset as TestSet, PixelTransform};
use compress_data::cifar::{self, Variant};
use compress_data::image_folder::{FolderTransform, ImageFolder};
use compress_nn::{Architecture, Network};
use compress_synth::{SynthConfig, synthesize};
use compress_train::harness::RunContext;
use compress_train::metrics::mean;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One (dataset, model) of table 5 with everything a run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaperRun {
    /// Dataset.
    pub dataset: Dataset,
    /// Model.
    pub model: PaperModel,
    /// `(w, a)` bit-widths (all layers), sharing one synthetic set.
    pub bits: Vec<(u32, u32)>,
    /// Seed (the official scripts: run id + 1).
    pub seed: u64,
    /// Synthesis: the loop.
    pub synth: SynthConfig,
    /// Synthesis: IntraQ's terms.
    pub terms: IntraqTerms,
    /// Calibration and fine-tuning.
    pub finetune: FinetuneConfig,
    /// Activation ranges: the official double bias correction.
    pub range_rule: RangeRule,
    /// The test split: `cifar-10-batches-bin` / `cifar-100-binary`, or ImageNet's `val` folder.
    pub data_dir: PathBuf,
    /// pytorchcv's weights (`tools/convert_pytorchcv.py`).
    pub weights: PathBuf,
}

impl PaperRun {
    /// The official settings of `model` on `dataset` with the table's bit-widths, the fetched
    /// test set and the converted weights under `weights/intraq/`.
    pub fn official(dataset: Dataset, model: PaperModel, seed: u64) -> Self {
        use compress_data::fetch::default_dataset_dir as dataset_dir;
        let data_dir = match dataset {
            Dataset::Cifar10 => dataset_dir("cifar10").join("cifar-10-batches-bin"),
            Dataset::Cifar100 => dataset_dir("cifar100").join("cifar-100-binary"),
            Dataset::ImageNet => dataset_dir("imagenet").join("val"),
        };
        Self {
            dataset,
            model,
            bits: PAPER_ROWS.iter().filter(|r| r.dataset == dataset && r.model == model).map(|r| r.bits).collect(),
            seed,
            synth: dataset.synth(),
            terms: dataset.terms(),
            finetune: dataset.finetune(),
            range_rule: RangeRule::Legacy,
            data_dir,
            weights: model.weights_path(dataset),
        }
    }

    /// The five (dataset, model) pairs of table 5.
    pub fn table(seed: u64) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for r in PAPER_ROWS {
            if !out.iter().any(|p| p.dataset == r.dataset && p.model == r.model) {
                out.push(Self::official(r.dataset, r.model, seed));
            }
        }
        out
    }

    /// pytorchcv's name of the teacher.
    pub fn name(&self) -> &'static str {
        self.model.pytorchcv_name(self.dataset)
    }

    /// What the run needs that is not on this machine.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.data_dir.is_dir() {
            out.push(format!("{} ({:?} test split)", self.data_dir.display(), self.dataset));
        }
        if !self.weights.is_file() {
            out.push(format!("{} (pytorchcv {})", self.weights.display(), self.name()));
        }
        out
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaperOutcome {
    /// Dataset.
    pub dataset: Dataset,
    /// Model.
    pub model: PaperModel,
    /// Seed.
    pub seed: u64,
    /// The full-precision teacher's top-1 (%).
    pub fp_top1: f64,
    /// Mean final BN-statistics loss of the synthesis batches.
    pub bns: f64,
    /// One per bit-width.
    pub quant: Vec<QuantOutcome>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// The test split, normalised as the official loaders do (spec section 4).
fn cifar_test(dir: &Path, dataset: Dataset) -> Result<compress_data::ImageDataset> {
    let (variant, mean, std) = match dataset {
        Dataset::Cifar10 => (Variant::Cifar10, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
        _ => (Variant::Cifar100, [0.5071, 0.4867, 0.4408], [0.2675, 0.2557, 0.2761]),
    };
    let t = PixelTransform { augment: Augment::None, mean: mean.to_vec(), std: std.to_vec() };
    Ok(cifar::load(dir, variant, false)?.with_transform(t)?)
}

/// Runs `r` in `ctx` (`intraq/paper/...`); on resume the synthesis cache and the fine-tuning
/// checkpoints are continued.
pub fn run(r: &PaperRun, ctx: &RunContext) -> Result<PaperOutcome> {
    let missing = r.missing();
    if !missing.is_empty() {
        return Err(IntraqError::Config(format!("{} needs {}", r.name(), missing.join(", "))));
    }
    let built = r.model.load(r.dataset.classes(), &r.weights, ctx.device())?;
    match r.dataset {
        Dataset::Cifar10 | Dataset::Cifar100 => dispatch(r, built, &cifar_test(&r.data_dir, r.dataset)?, ctx),
        Dataset::ImageNet => dispatch(r, built, &ImageFolder::open(&r.data_dir, FolderTransform::IMAGENET_EVAL)?, ctx),
    }
}

fn dispatch<D: TestSet>(r: &PaperRun, built: Built, test: &D, cx: &RunContext) -> Result<PaperOutcome> {
    match built {
        Built::ResNet20(n) => run_network(r, &n, test, cx),
        Built::ResNet18(n) => run_network(r, &n, test, cx),
        Built::MobileNetV1(n) => run_network(r, &n, test, cx),
        Built::MobileNetV2(n) => run_network(r, &*n, test, cx),
    }
}

fn run_network<A: Architecture, D: TestSet>(
    r: &PaperRun,
    teacher: &Network<A>,
    test: &D,
    ctx: &RunContext,
) -> Result<PaperOutcome> {
    let start = std::time::Instant::now();
    let device = ctx.device();
    let fp_top1 = top1(teacher, test)?;
    if !ctx.is_quiet() {
        println!("{} full precision: {fp_top1:.2} %", r.name());
    }
    let dir = ctx.root().join(ctx.name(&format!("synth/{}-seed{}", r.name(), r.seed)));
    if !ctx.resuming() && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| IntraqError::Io { path: dir.clone(), source })?;
    }
    let teacher_id = format!("pytorchcv {} sha256 {}", r.name(), compress_data::checksum::sha256_file(&r.weights)?);
    let mut method = r.terms.method(r.synth.classes)?;
    let set = synthesize(teacher, &r.synth, &mut method, r.seed, Some((&dir, &teacher_id)), device)?;
    let tensors = teacher.tensors()?;
    let stage2 = Stage2 {
        bits: &r.bits,
        finetune: &r.finetune,
        range_rule: r.range_rule,
        seed: r.seed,
        arm: Arm::IntraQ,
        name: r.name().to_string(),
    };
    let fresh = || Ok(Network::<A>::from_tensors(teacher.config.clone(), &tensors, device)?);
    let quant = stage2.run(fresh, teacher, &set, test, ctx)?;
    Ok(PaperOutcome {
        dataset: r.dataset,
        model: r.model,
        seed: r.seed,
        fp_top1,
        bns: mean(set.stats.iter().map(|s| s.bns)),
        quant,
        seconds: start.elapsed().as_secs_f64(),
    })
}
