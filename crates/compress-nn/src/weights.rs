//! safetensors in and out: atomic saves, checked loads, and pretrained weights from the Hub.

use crate::error::{NnError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Writes `tensors` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a half-written checkpoint under the final name.
pub fn save_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    compress_core::atomic::write_with(path, |tmp| candle_core::safetensors::save(tensors, tmp))
        .map_err(|e| NnError::File { path: path.to_path_buf(), source: e.into() })
}

/// Reads a safetensors file (a clear error for a missing, truncated or corrupt file).
pub fn read(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| NnError::File { path: path.to_path_buf(), source: e.into() })
}

/// Loads `path` and checks it against `reference` (name -> tensor of the wanted shape and
/// dtype): every reference tensor must be present with that shape and dtype.
pub fn load_checked(
    path: &Path,
    reference: &HashMap<String, Tensor>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut found = read(path, device)?;
    let mut out = HashMap::with_capacity(reference.len());
    let mut names: Vec<&String> = reference.keys().collect();
    names.sort();
    for name in names {
        let want = &reference[name];
        let t = found
            .remove(name)
            .ok_or_else(|| NnError::MissingTensor { name: name.clone(), context: Some(path.display().to_string()) })?;
        check(name, &t, want.dims(), want.dtype())?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

fn check(name: &str, t: &Tensor, dims: &[usize], dtype: DType) -> Result<()> {
    if t.dims() != dims {
        return Err(NnError::ShapeMismatch { name: name.into(), expected: dims.to_vec(), found: t.dims().to_vec() });
    }
    if t.dtype() != dtype {
        return Err(NnError::DtypeMismatch { name: name.into(), expected: dtype, found: t.dtype() });
    }
    Ok(())
}

/// Where pretrained weights come from on the Hugging Face Hub, and how their names map to ours.
#[derive(Debug, Clone)]
pub struct HubWeights {
    /// Model repository id (`timm/resnet50.a1_in1k`).
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// File in the repository (`model.safetensors`).
    pub file: String,
}

/// Downloads (or finds in hf-hub's cache under `cache_dir`) a safetensors file of a model repo.
/// `endpoint` overrides the Hub's address (a mirror).
pub fn hub_file(w: &HubWeights, cache_dir: Option<&Path>, endpoint: Option<&str>) -> Result<PathBuf> {
    let mut b = hf_hub::api::sync::ApiBuilder::new().with_progress(false);
    if let Some(c) = cache_dir {
        b = b.with_cache_dir(c.to_path_buf());
    }
    if let Some(e) = endpoint {
        b = b.with_endpoint(e.to_string());
    }
    let hub =
        |e: hf_hub::api::sync::ApiError| NnError::Hub { repo: w.repo.clone(), file: w.file.clone(), source: e.into() };
    let api = b.build().map_err(hub)?;
    let repo = api.repo(hf_hub::Repo::with_revision(w.repo.clone(), hf_hub::RepoType::Model, w.revision.clone()));
    repo.get(&w.file).map_err(hub)
}

/// Loads pretrained weights for a model whose own tensors are `reference`: names are mapped with
/// `map` (ours -> theirs), floating dtypes are converted to the reference dtype, and a missing
/// tensor or a shape mismatch names both names; a `[o, i, 1, 1]` tensor fills an `[o, i]` one.
/// Tensors of the file the model does not use
/// (classifier heads of another task, `num_batches_tracked`) are ignored.
pub fn load_mapped(
    path: &Path,
    reference: &HashMap<String, Tensor>,
    map: impl Fn(&str) -> String,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    select_mapped(read(path, device)?, path, reference, map)
}

/// [`load_mapped`] on tensors already read from `path` (named in errors).
pub fn select_mapped(
    mut found: HashMap<String, Tensor>,
    path: &Path,
    reference: &HashMap<String, Tensor>,
    map: impl Fn(&str) -> String,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(reference.len());
    for (ours, want) in reference {
        let theirs = map(ours);
        let t = found.remove(&theirs).ok_or_else(|| NnError::MissingTensor {
            name: if theirs == *ours { theirs.clone() } else { format!("{theirs} (ours: {ours})") },
            context: Some(path.display().to_string()),
        })?;
        if !t.dtype().is_float() {
            return Err(NnError::DtypeMismatch { name: theirs, expected: want.dtype(), found: t.dtype() });
        }
        let mut t = t.to_dtype(want.dtype())?;
        if let (&[o, i, 1, 1], &[wo, wi]) = (t.dims(), want.dims())
            && (o, i) == (wo, wi)
        {
            // A 1x1-conv classifier (pytorchcv's MobileNetV2) into a linear one.
            t = t.reshape((o, i))?;
        }
        check(ours, &t, want.dims(), want.dtype())?;
        out.insert(ours.clone(), t);
    }
    Ok(out)
}
