//! Pretrained ImageNet weights from the Hugging Face Hub (timm's safetensors), mapped onto the
//! zoo's tensor names.
//!
//! timm's ResNets and DeiTs use the zoo's names already (torchvision's and timm's own); timm's
//! MobileNetV2 uses its EfficientNet-builder names, mapped by [`mobilenetv2_timm_name`].
//! Nothing here is downloaded in tests: they fill hf-hub's cache layout with a small file.

use crate::error::{NnError, Result};
use crate::network::{Architecture, Network};
use crate::weights::{HubWeights, hub_file, load_mapped};
use candle_core::Device;
use std::path::Path;

/// A known pretrained checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Pretrained {
    /// Zoo name (`resnet50`, `deit_small`, ...).
    pub name: &'static str,
    /// Hub repository.
    pub repo: &'static str,
    /// How the repository names tensors.
    pub naming: Naming,
}

/// Tensor naming scheme of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The zoo's own names (torchvision ResNets in timm, timm ViTs/DeiTs).
    Same,
    /// timm's EfficientNet-builder names for MobileNetV2.
    TimmMobileNetV2,
}

/// The checkpoints the zoo knows, all ImageNet-1k classifiers in safetensors.
pub const CATALOGUE: [Pretrained; 5] = [
    Pretrained { name: "resnet18", repo: "timm/resnet18.tv_in1k", naming: Naming::Same },
    Pretrained { name: "resnet34", repo: "timm/resnet34.tv_in1k", naming: Naming::Same },
    Pretrained { name: "resnet50", repo: "timm/resnet50.tv_in1k", naming: Naming::Same },
    Pretrained { name: "mobilenetv2", repo: "timm/mobilenetv2_100.ra_in1k", naming: Naming::TimmMobileNetV2 },
    Pretrained { name: "deit_small", repo: "timm/deit_small_patch16_224.fb_in1k", naming: Naming::Same },
];

/// Looks a checkpoint up by zoo name, or lists the known ones.
pub fn find(name: &str) -> Result<Pretrained> {
    CATALOGUE.iter().find(|p| p.name == name).copied().ok_or_else(|| {
        NnError::Config(format!(
            "no pretrained weights for {name:?}; known: {}",
            CATALOGUE.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// `(stage, index in stage, expands)` of torchvision's `features.{i}` in MobileNetV2 1.0.
fn v2_block(i: usize) -> Option<(usize, usize, bool)> {
    const REPEATS: [usize; 7] = [1, 2, 3, 4, 3, 3, 1];
    let mut first = 1;
    for (s, &n) in REPEATS.iter().enumerate() {
        if i < first + n {
            return Some((s, i - first, s > 0));
        }
        first += n;
    }
    None
}

/// Maps a zoo MobileNetV2 tensor name (torchvision layout) to timm's `mobilenetv2_100` name.
pub fn mobilenetv2_timm_name(ours: &str) -> String {
    let (prefix, leaf) = match ours.rsplit_once('.') {
        Some(p) => p,
        None => return ours.to_string(),
    };
    let mapped = match prefix {
        "features.0.0" => Some("conv_stem".to_string()),
        "features.0.1" => Some("bn1".to_string()),
        "features.18.0" => Some("conv_head".to_string()),
        "features.18.1" => Some("bn2".to_string()),
        "classifier.1" => Some("classifier".to_string()),
        p => p.strip_prefix("features.").and_then(|rest| {
            let (idx, part) = rest.split_once(".conv.")?;
            let (s, r, expands) = v2_block(idx.parse().ok()?)?;
            let layer = match (expands, part) {
                (false, "0.0") => "conv_dw",
                (false, "0.1") => "bn1",
                (false, "1") => "conv_pw",
                (false, "2") => "bn2",
                (true, "0.0") => "conv_pw",
                (true, "0.1") => "bn1",
                (true, "1.0") => "conv_dw",
                (true, "1.1") => "bn2",
                (true, "2") => "conv_pwl",
                (true, "3") => "bn3",
                _ => return None,
            };
            Some(format!("blocks.{s}.{r}.{layer}"))
        }),
    };
    match mapped {
        Some(m) => format!("{m}.{leaf}"),
        None => ours.to_string(),
    }
}

/// Builds `config` and fills it with the checkpoint `p` from the Hub (or hf-hub's cache under
/// `cache_dir`). The config must match the checkpoint (1000 classes, 3 x 224 x 224 inputs).
pub fn load<A: Architecture>(
    p: &Pretrained,
    config: A::Config,
    cache_dir: Option<&Path>,
    endpoint: Option<&str>,
    device: &Device,
) -> Result<Network<A>> {
    let w = HubWeights { repo: p.repo.into(), revision: "main".into(), file: "model.safetensors".into() };
    let file = hub_file(&w, cache_dir, endpoint)?;
    let reference = Network::<A>::new(config.clone(), 0, device)?.tensors()?;
    let tensors = match p.naming {
        Naming::Same => load_mapped(&file, &reference, |n| n.to_string(), device)?,
        Naming::TimmMobileNetV2 => load_mapped(&file, &reference, mobilenetv2_timm_name, device)?,
    };
    Network::from_tensors(config, &tensors, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobilenetv2_names_map_to_timm() {
        assert_eq!(mobilenetv2_timm_name("features.0.0.weight"), "conv_stem.weight");
        assert_eq!(mobilenetv2_timm_name("features.1.conv.0.0.weight"), "blocks.0.0.conv_dw.weight");
        assert_eq!(mobilenetv2_timm_name("features.1.conv.2.running_var"), "blocks.0.0.bn2.running_var");
        assert_eq!(mobilenetv2_timm_name("features.2.conv.0.0.weight"), "blocks.1.0.conv_pw.weight");
        assert_eq!(mobilenetv2_timm_name("features.3.conv.2.weight"), "blocks.1.1.conv_pwl.weight");
        assert_eq!(mobilenetv2_timm_name("features.17.conv.3.bias"), "blocks.6.0.bn3.bias");
        assert_eq!(mobilenetv2_timm_name("features.18.1.weight"), "bn2.weight");
        assert_eq!(mobilenetv2_timm_name("classifier.1.bias"), "classifier.bias");
        assert!(find("vgg99").is_err());
    }
}
