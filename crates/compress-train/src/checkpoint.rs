//! Checkpoints: model variables, optimizer state and the loop position, written atomically.
//!
//! A checkpoint is a folder `step-<n>/` holding `model.safetensors`, `optimizer.safetensors` and
//! `state.json`. It is written under a temporary name and renamed when complete, so a crash leaves
//! either the previous checkpoint or the new one, never half of one. The two newest are kept.

use crate::error::{Result, file_err};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the loop stands, and what it has measured so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epoch to run next (or the one in progress).
    pub epoch: usize,
    /// First batch of `epoch` still to run.
    pub next_batch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
    /// Sum of the training losses of the current epoch so far.
    pub loss_sum: f64,
    /// Micro-batches in that sum.
    pub loss_count: usize,
    /// Per-epoch records so far (JSON objects).
    pub history: Vec<serde_json::Value>,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Model variables.
    pub model: HashMap<String, Tensor>,
    /// Optimizer state tensors.
    pub optimizer: HashMap<String, Tensor>,
    /// Loop position.
    pub state: LoopState,
}

fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Writes a checkpoint under `root` atomically and prunes all but the two newest.
pub fn save(
    root: &Path,
    model: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    state: &LoopState,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| file_err(root, e))?;
    let fin = step_dir(root, state.step);
    // Temporaries a killed writer left behind (the run's lock makes this process the only one).
    for e in std::fs::read_dir(root).map_err(|e| file_err(root, e))?.filter_map(|e| e.ok()) {
        if e.file_name().to_str().is_some_and(|n| n.starts_with("step-") && n.ends_with(".tmp")) {
            std::fs::remove_dir_all(e.path()).map_err(|err| file_err(&e.path(), err))?;
        }
    }
    let tmp = compress_core::atomic::temporary(&fin);
    std::fs::create_dir_all(&tmp).map_err(|e| file_err(&tmp, e))?;
    candle_core::safetensors::save(model, tmp.join("model.safetensors")).map_err(|e| file_err(&tmp, e))?;
    candle_core::safetensors::save(optimizer, tmp.join("optimizer.safetensors")).map_err(|e| file_err(&tmp, e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| file_err(&tmp, e))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| file_err(&tmp, e))?;
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| file_err(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| file_err(&fin, e))?;
    let all = list(root)?;
    for old in all.iter().rev().skip(2) {
        std::fs::remove_dir_all(old).map_err(|e| file_err(old, e))?;
    }
    Ok(fin)
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| file_err(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
                && p.join("state.json").is_file()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads a checkpoint folder.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let read = |f: &str| candle_core::safetensors::load(dir.join(f), device).map_err(|e| file_err(&dir.join(f), e));
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| file_err(&state_path, e))?;
    let state: LoopState = serde_json::from_str(&text).map_err(|e| file_err(&state_path, e))?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        model: read("model.safetensors")?,
        optimizer: read("optimizer.safetensors")?,
        state,
    })
}

/// The newest readable checkpoint under `root`, if any: a newer one that cannot be read (a
/// corrupt or truncated file) is passed over for the older one, saying so on stderr; if none
/// can be read, the newest one's error.
pub fn latest(root: &Path, device: &Device) -> Result<Option<Checkpoint>> {
    let mut first_error = None;
    for dir in list(root)?.iter().rev() {
        match load(dir, device) {
            Ok(ck) => {
                if let Some(e) = &first_error {
                    eprintln!(
                        "resuming from the older checkpoint {}: the newer one is unreadable ({e})",
                        ck.dir.display()
                    );
                }
                return Ok(Some(ck));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}
