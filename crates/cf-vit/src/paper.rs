//! The paper's setting (sections 3 and 5): CF-ViT on DeiT-S and LV-ViT-S with 7 x 7 and 9 x 9
//! coarse grids, their training recipes, and the published operating points.

use crate::TokenBackbone;
use crate::backbone::LvVitConfig;
use crate::build;
use crate::config::CfVitConfig;
use crate::error::Result;
use crate::model::CfVit;
use crate::reproduce::baseline_macs;
use candle_core::Device;
use compress_nn::zoo::VitConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A backbone of the paper with its coarse grid side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaperModel {
    /// DeiT-S, coarse side n.
    DeitS(usize),
    /// LV-ViT-S, coarse side n.
    LvVitS(usize),
}

/// A built paper model (either backbone).
#[derive(Debug)]
pub enum Built {
    /// DeiT-S.
    Deit(CfVit<compress_nn::zoo::Vit>),
    /// LV-ViT-S.
    LvVit(CfVit<crate::backbone::LvVit>),
}

impl PaperModel {
    /// The CF-ViT configuration.
    pub fn config(self) -> CfVitConfig {
        match self {
            PaperModel::DeitS(n) => CfVitConfig::deit_s(n),
            PaperModel::LvVitS(n) => CfVitConfig::lvvit_s(n),
        }
    }

    /// A freshly initialised model (1,000 classes).
    pub fn build(self, seed: u64, device: &Device) -> Result<Built> {
        let cfg = self.config();
        Ok(match self {
            PaperModel::DeitS(_) => {
                let vit = VitConfig::new(cfg.fine_image(), 16, 384, 12, 6, 1536, 1000)?;
                Built::Deit(build::deit(&vit, cfg, &HashMap::new(), seed, device)?)
            }
            PaperModel::LvVitS(_) => {
                let lv = LvVitConfig::small(cfg.fine_image(), 1000);
                Built::LvVit(build::lvvit(&lv, cfg, &HashMap::new(), seed, device)?)
            }
        })
    }

    /// `(coarse, coarse + fine, baseline)` GMACs per image (section 2.9 plus the reuse MLP);
    /// the baseline is the backbone at 224 px (14 x 14 tokens).
    pub fn stage_macs_g(self) -> Result<(f64, f64)> {
        let m = self.build(0, &Device::Cpu)?;
        let (c, f) = match &m {
            Built::Deit(m) => m.stage_macs(),
            Built::LvVit(m) => m.stage_macs(),
        };
        Ok((c as f64 / 1e9, (c + f) as f64 / 1e9))
    }
}

/// The baseline's GMACs at 224 px for a backbone (DeiT-S 4.6, LV-ViT-S 6.6 in the paper).
pub fn baseline_gmacs<B: TokenBackbone>(m: &CfVit<B>) -> f64 {
    baseline_macs(m) / 1e9
}

/// A published CF-ViT result (section 5).
#[derive(Debug, Clone, Copy)]
pub struct PaperRow {
    /// Name.
    pub name: &'static str,
    /// Model.
    pub model: PaperModel,
    /// Coarse-stage GMACs (eta = 0).
    pub gmacs_coarse: f64,
    /// Both stages' GMACs (eta -> 1).
    pub gmacs_total: f64,
    /// Top-1 at eta = 0.
    pub top1_coarse: f64,
    /// Top-1 at eta -> 1.
    pub top1_full: f64,
}

/// Section 5's table.
pub const PAPER_ROWS: [PaperRow; 4] = [
    PaperRow {
        name: "CF-ViT DeiT-S 7x7",
        model: PaperModel::DeitS(7),
        gmacs_coarse: 1.10,
        gmacs_total: 4.00,
        top1_coarse: 75.48,
        top1_full: 80.78,
    },
    PaperRow {
        name: "CF-ViT DeiT-S 9x9",
        model: PaperModel::DeitS(9),
        gmacs_coarse: 1.83,
        gmacs_total: 6.70,
        top1_coarse: 77.89,
        top1_full: 81.93,
    },
    PaperRow {
        name: "CF-ViT LV-ViT-S 7x7",
        model: PaperModel::LvVitS(7),
        gmacs_coarse: 1.57,
        gmacs_total: 6.18,
        top1_coarse: 79.47,
        top1_full: 83.55,
    },
    PaperRow {
        name: "CF-ViT LV-ViT-S 9x9",
        model: PaperModel::LvVitS(9),
        gmacs_coarse: 2.62,
        gmacs_total: 10.30,
        top1_coarse: 81.54,
        top1_full: 84.41,
    },
];

/// The official training recipes (section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperRecipe {
    /// Epochs run (LV-ViT: 300 + 10 cool-down).
    pub epochs: usize,
    /// First epoch (0-based) with selection on.
    pub select_from: usize,
    /// Global batch.
    pub batch: usize,
    /// Peak learning rate (AdamW, eps 1e-8).
    pub lr: f64,
    /// Cosine floor.
    pub min_lr: f64,
    /// Warm-up epochs and start value.
    pub warmup_epochs: usize,
    /// Warm-up start.
    pub warmup_lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Stochastic depth.
    pub drop_path: f64,
    /// Mixup alpha (0: off).
    pub mixup: f64,
    /// CutMix alpha (0: off).
    pub cutmix: f64,
    /// Label smoothing.
    pub smoothing: f64,
    /// Random-erasing probability.
    pub reprob: f64,
    /// Model EMA decay.
    pub model_ema: f64,
    /// Evaluation centre-crop ratio.
    pub crop_ratio: f64,
}

impl PaperRecipe {
    /// DeiT-S: 300 epochs, batch 1024, lr 1e-3, warm-up 5 from 1e-6, min 1e-5, wd 0.05,
    /// drop-path 0.1, mixup 0.8 / cutmix 1.0, smoothing 0.1, reprob 0.25, EMA 0.99996, crop 0.875.
    pub fn deit() -> Self {
        Self {
            epochs: 300,
            select_from: 201,
            batch: 1024,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 5,
            warmup_lr: 1e-6,
            weight_decay: 0.05,
            drop_path: 0.1,
            mixup: 0.8,
            cutmix: 1.0,
            smoothing: 0.1,
            reprob: 0.25,
            model_ema: 0.99996,
            crop_ratio: 0.875,
        }
    }

    /// LV-ViT-S: 310 epochs, lr 1.6e-3, mixup/cutmix off (MixToken), EMA 0.99992, crop 0.9.
    pub fn lvvit() -> Self {
        Self { epochs: 310, lr: 1.6e-3, mixup: 0.0, cutmix: 0.0, model_ema: 0.99992, crop_ratio: 0.9, ..Self::deit() }
    }
}
