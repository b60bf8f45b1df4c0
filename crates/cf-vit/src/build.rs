//! Building CF-ViTs: fresh (seeded), from saved tensors, and from timm's pretrained DeiT-S
//! (position tables resampled to the fine and coarse grids).

use crate::backbone::{LvVit, LvVitConfig};
use crate::config::CfVitConfig;
use crate::error::{CfVitError, Result};
use crate::model::CfVit;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use compress_nn::init::seeded_builder;
use compress_nn::network::Architecture;
use compress_nn::zoo::{Vit, VitConfig, resize_pos_embed};
use std::collections::HashMap;
use std::path::Path;

fn filled(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<VarMap> {
    Ok(compress_nn::init::varmap_from(tensors, device)?)
}

fn check_deit(vit: &VitConfig, cfg: &CfVitConfig) -> Result<()> {
    if vit.patch != cfg.patch || vit.image_size != cfg.fine_image() {
        return Err(CfVitError::Config(format!(
            "the ViT ({} px, patch {}) must take the fine image ({} px, patch {})",
            vit.image_size,
            vit.patch,
            cfg.fine_image(),
            cfg.patch
        )));
    }
    Ok(())
}

/// A CF-ViT on a DeiT whose `image_size` is the fine image; variables in `tensors` are used,
/// the others drawn from `seed` (timm's initialisation).
pub fn deit(
    vit: &VitConfig,
    cfg: CfVitConfig,
    tensors: &HashMap<String, Tensor>,
    seed: u64,
    device: &Device,
) -> Result<CfVit<Vit>> {
    check_deit(vit, &cfg)?;
    let varmap = filled(tensors, device)?;
    let vb = seeded_builder(&varmap, seed, DType::F32, device);
    let backbone = Vit::build(vit, vb.clone())?;
    CfVit::new(backbone, cfg, vb, varmap)
}

/// A CF-ViT on an LV-ViT whose `image_size` is the fine image.
pub fn lvvit(
    lv: &LvVitConfig,
    cfg: CfVitConfig,
    tensors: &HashMap<String, Tensor>,
    seed: u64,
    device: &Device,
) -> Result<CfVit<LvVit>> {
    if cfg.patch != 16 || lv.image_size != cfg.fine_image() {
        return Err(CfVitError::Config(format!(
            "LV-ViT (stride 16, {} px) must take the fine image ({} px, patch {})",
            lv.image_size,
            cfg.fine_image(),
            cfg.patch
        )));
    }
    let varmap = filled(tensors, device)?;
    let vb = seeded_builder(&varmap, seed, DType::F32, device);
    let backbone = LvVit::new(lv, vb.clone())?;
    CfVit::new(backbone, cfg, vb, varmap)
}

/// Pretrained DeiT tensors (224 px, 14 x 14 grid) adapted to a CF-ViT of coarse side `n`: the
/// position table resampled (bicubic, as timm) to the fine grid `2n x 2n` as `pos_embed` and to
/// the coarse grid `n x n` as `pos_embed_coarse`. The reuse MLP is left to the seeded init.
pub fn adapt_deit_tensors(
    vit224: &VitConfig,
    tensors: &HashMap<String, Tensor>,
    cfg: &CfVitConfig,
) -> Result<(VitConfig, HashMap<String, Tensor>)> {
    let (fine_cfg, mut out) = resize_pos_embed(vit224, tensors, cfg.fine_image())?;
    let (_, coarse) = resize_pos_embed(vit224, tensors, cfg.coarse_image())?;
    let pc = coarse
        .get("pos_embed")
        .ok_or_else(|| CfVitError::Config("the resampled tensors lack pos_embed".into()))?
        .clone();
    out.insert("pos_embed_coarse".into(), pc);
    Ok((fine_cfg, out))
}

/// CF-ViT DeiT-S with coarse side `n` from timm's `deit_small_patch16_224` on the Hub (or
/// hf-hub's cache under `cache_dir`).
pub fn pretrained_deit_small(
    n: usize,
    cache_dir: Option<&Path>,
    endpoint: Option<&str>,
    seed: u64,
    device: &Device,
) -> Result<CfVit<Vit>> {
    let p = compress_nn::pretrained::find("deit_small")?;
    let base = VitConfig::deit_small(1000)?;
    let net = compress_nn::pretrained::load::<Vit>(&p, base.clone(), cache_dir, endpoint, device)?;
    let cfg = CfVitConfig::deit_s(n);
    let (vit, tensors) = adapt_deit_tensors(&base, &net.tensors()?, &cfg)?;
    deit(&vit, cfg, &tensors, seed, device)
}

/// Every variable of a model by name (for saving).
pub fn tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    Ok(compress_nn::init::varmap_tensors(varmap)?)
}
