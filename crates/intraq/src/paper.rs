//! The paper's settings (spec sections 3-5): CIFAR-10/100 ResNet-20 and ImageNet ResNet-18,
//! MobileNetV1 and MobileNetV2 (zoo models, quantized through `compress_nn::fake_quant`), the
//! official synthesis and fine-tuning hyperparameters per dataset, and the published results.

use crate::error::Result;
use crate::finetune::{CalibSource, FinetuneConfig};
use candle_core::{Device, Tensor};
use compress_nn::Model;
use compress_nn::network::Network;
use compress_nn::pytorchcv::{self, Family};
use compress_nn::zoo::{
    MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config, ResNet, ResNetCifar, ResNetCifarConfig,
    ResNetConfig, Shortcut,
};
use compress_synth::{GenConfig, SynthConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A dataset of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dataset {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100.
    Cifar100,
    /// ImageNet-1k.
    ImageNet,
}

/// A pretrained model of the paper (pytorchcv names in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaperModel {
    /// `resnet20_cifar10` / `resnet20_cifar100`: 16/32/64 channels, 1x1 conv + BN shortcuts.
    ResNet20,
    /// `resnet18`.
    ResNet18,
    /// `mobilenet_w1` (MobileNetV1 1.0).
    MobileNetV1,
    /// `mobilenetv2_w1` (ReLU6).
    MobileNetV2,
}

/// One row of the paper's table 5.
#[derive(Debug, Clone, Copy)]
pub struct PaperRow {
    /// Dataset.
    pub dataset: Dataset,
    /// Model.
    pub model: PaperModel,
    /// `(w, a)` bits (all layers).
    pub bits: (u32, u32),
    /// Full-precision top-1 (None: UNKNOWN).
    pub fp: Option<f64>,
    /// IntraQ's top-1.
    pub intraq: f64,
}

/// Section 5 (the CIFAR-100 rows in the correct order, not the README's swapped one).
pub const PAPER_ROWS: [PaperRow; 10] = [
    PaperRow { dataset: Dataset::Cifar10, model: PaperModel::ResNet20, bits: (3, 3), fp: Some(93.89), intraq: 77.07 },
    PaperRow { dataset: Dataset::Cifar10, model: PaperModel::ResNet20, bits: (4, 4), fp: Some(93.89), intraq: 91.49 },
    PaperRow { dataset: Dataset::Cifar100, model: PaperModel::ResNet20, bits: (3, 3), fp: Some(70.33), intraq: 48.25 },
    PaperRow { dataset: Dataset::Cifar100, model: PaperModel::ResNet20, bits: (4, 4), fp: Some(70.33), intraq: 64.98 },
    PaperRow { dataset: Dataset::ImageNet, model: PaperModel::ResNet18, bits: (4, 4), fp: Some(71.47), intraq: 66.47 },
    PaperRow { dataset: Dataset::ImageNet, model: PaperModel::ResNet18, bits: (5, 5), fp: Some(71.47), intraq: 69.94 },
    PaperRow { dataset: Dataset::ImageNet, model: PaperModel::MobileNetV1, bits: (4, 4), fp: None, intraq: 51.36 },
    PaperRow { dataset: Dataset::ImageNet, model: PaperModel::MobileNetV1, bits: (5, 5), fp: None, intraq: 68.17 },
    PaperRow {
        dataset: Dataset::ImageNet,
        model: PaperModel::MobileNetV2,
        bits: (4, 4),
        fp: Some(73.03),
        intraq: 65.10,
    },
    PaperRow {
        dataset: Dataset::ImageNet,
        model: PaperModel::MobileNetV2,
        bits: (5, 5),
        fp: Some(73.03),
        intraq: 71.28,
    },
];

impl Dataset {
    /// Classes.
    pub fn classes(self) -> usize {
        match self {
            Dataset::Cifar10 => 10,
            Dataset::Cifar100 => 100,
            Dataset::ImageNet => 1000,
        }
    }

    /// The official synthesis script of the dataset: the loop's settings.
    pub fn synth(self) -> SynthConfig {
        match self {
            Dataset::Cifar10 => SynthConfig::cifar10(),
            Dataset::Cifar100 => SynthConfig::cifar100(),
            Dataset::ImageNet => SynthConfig::imagenet(),
        }
    }

    /// The official synthesis script of the dataset: IntraQ's terms.
    pub fn terms(self) -> crate::synthesis::IntraqTerms {
        use crate::synthesis::IntraqTerms;
        match self {
            Dataset::Cifar10 => IntraqTerms::cifar10(),
            Dataset::Cifar100 => IntraqTerms::cifar100(),
            Dataset::ImageNet => IntraqTerms::imagenet(),
        }
    }

    /// GDFQ's generator for the dataset (CIFAR: `z * Emb(y)`, 32 px; ImageNet: conditional BN,
    /// 224 px).
    pub fn generator(self) -> GenConfig {
        match self {
            Dataset::ImageNet => GenConfig::imagenet(1000),
            d => GenConfig::cifar(d.classes()),
        }
    }

    /// The official fine-tuning: 151 epochs x 200 iterations (the first 4 epochs calibrate the
    /// ranges with a GDFQ generator, 800 steps of 16 images; the rate counts them), batch 256
    /// (ImageNet 16), lr 1e-4 with milestones 20/40/60 (ImageNet 1e-6 with 100/200/350),
    /// Nesterov 0.9, wd 1e-4, alpha = T = 20; crops of scale 0.5-1 with flips.
    pub fn finetune(self) -> FinetuneConfig {
        let (batch, lr, milestones) = match self {
            Dataset::ImageNet => (16, 1e-6, [100u64, 200, 350]),
            _ => (256, 1e-4, [20, 40, 60]),
        };
        FinetuneConfig {
            steps: 147 * 200,
            batch,
            lr,
            milestones: milestones.iter().map(|e| e.saturating_sub(4) * 200).collect(),
            momentum: 0.9,
            weight_decay: 1e-4,
            kd_alpha: 20.0,
            kd_t: 20.0,
            calib_batches: 800,
            calib: CalibSource::generator(self.generator()),
            crop_scale: 0.5,
            flip: true,
            eval_every: 200,
        }
    }
}

/// A zoo model standing in for a paper model (same architecture; pretrained weights loaded into
/// it by the caller).
#[derive(Debug)]
pub enum Built {
    /// CIFAR ResNet-20.
    ResNet20(Network<ResNetCifar>),
    /// ResNet-18.
    ResNet18(Network<ResNet>),
    /// MobileNetV1.
    MobileNetV1(Network<MobileNetV1>),
    /// MobileNetV2.
    MobileNetV2(Box<Network<MobileNetV2>>),
}

impl Built {
    /// The model as a trait object.
    pub fn model(&self) -> &dyn Model {
        match self {
            Built::ResNet20(m) => m,
            Built::ResNet18(m) => m,
            Built::MobileNetV1(m) => m,
            Built::MobileNetV2(m) => m.as_ref(),
        }
    }
}

/// A built model is a `Model`, hence also a synthesis `Teacher`.
impl Model for Built {
    fn varmap(&self) -> &candle_nn::VarMap {
        self.model().varmap()
    }
    fn device(&self) -> &Device {
        self.model().device()
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> compress_nn::Result<Tensor> {
        self.model().forward_t(x, train)
    }
}

impl PaperModel {
    /// A freshly initialised zoo model for `classes` classes.
    pub fn build(self, classes: usize, seed: u64, device: &Device) -> Result<Built> {
        Ok(match self {
            PaperModel::ResNet20 => {
                let cfg = ResNetCifarConfig::new(20, classes)?.with_shortcut(Shortcut::B);
                Built::ResNet20(Network::new(cfg, seed, device)?)
            }
            PaperModel::ResNet18 => Built::ResNet18(Network::new(ResNetConfig::resnet18(classes)?, seed, device)?),
            PaperModel::MobileNetV1 => {
                Built::MobileNetV1(Network::new(MobileNetV1Config::new(1.0, classes)?, seed, device)?)
            }
            PaperModel::MobileNetV2 => Built::MobileNetV2(Box::new(Network::new(
                MobileNetV2Config::new(1.0, classes)?.pytorchcv(),
                seed,
                device,
            )?)),
        })
    }

    /// The model filled with pytorchcv's weights from `path` (see [`compress_nn::pytorchcv`]).
    pub fn load(self, classes: usize, path: &Path, device: &Device) -> Result<Built> {
        Ok(match self {
            PaperModel::ResNet20 => {
                let cfg = ResNetCifarConfig::new(20, classes)?.with_shortcut(Shortcut::B);
                Built::ResNet20(pytorchcv::load(Family::ResNetCifar, path, cfg, device)?)
            }
            PaperModel::ResNet18 => {
                Built::ResNet18(pytorchcv::load(Family::ResNet, path, ResNetConfig::resnet18(classes)?, device)?)
            }
            PaperModel::MobileNetV1 => {
                let cfg = MobileNetV1Config::new(1.0, classes)?;
                Built::MobileNetV1(pytorchcv::load(Family::MobileNetV1, path, cfg, device)?)
            }
            PaperModel::MobileNetV2 => {
                let cfg = MobileNetV2Config::new(1.0, classes)?.pytorchcv();
                Built::MobileNetV2(Box::new(pytorchcv::load(Family::MobileNetV2, path, cfg, device)?))
            }
        })
    }

    /// pytorchcv's name of the model trained on `dataset`.
    pub fn pytorchcv_name(self, dataset: Dataset) -> &'static str {
        match (self, dataset) {
            (PaperModel::ResNet20, Dataset::Cifar10) => "resnet20_cifar10",
            (PaperModel::ResNet20, _) => "resnet20_cifar100",
            (PaperModel::ResNet18, _) => "resnet18",
            (PaperModel::MobileNetV1, _) => "mobilenet_w1",
            (PaperModel::MobileNetV2, _) => "mobilenetv2_w1",
        }
    }

    /// Where `tools/convert_pytorchcv.py` writes the model's weights (pytorchcv's names).
    pub fn weights_path(self, dataset: Dataset) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("weights/intraq/{}.safetensors", self.pytorchcv_name(dataset)))
    }
}

/// Random input images of a dataset's shape (tests and step checks).
pub fn random_images(dataset: Dataset, batch: usize, device: &Device) -> Result<Tensor> {
    let s = dataset.synth().image_size;
    Ok(Tensor::randn(0f32, 1.0, (batch, 3, s, s), device)?)
}
