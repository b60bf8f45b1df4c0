//! Pretrained weights of pytorchcv (`osmr/imgclsmob`), the model zoo the quantization papers
//! (GDFQ, IntraQ, FDDA) take their teachers from, mapped onto the zoo's tensor names.
//!
//! pytorchcv publishes its weights as zipped PyTorch pickles, not on the Hub; they are read here
//! from a safetensors file converted from the model's `state_dict()` with pytorchcv's own names
//! (`tools/convert_pytorchcv.py` does it). A file already in the zoo's names loads too.
//!
//! pytorchcv's layout: `features.init_block`, `features.stage{s}.unit{u}` (1-based), `output`.
//! Every conv is a `ConvBlock` (`.conv` + `.bn`), so ResNet units are `body.conv{1,2}.{conv,bn}`
//! with an `identity_conv` shortcut, MobileNet units `dw_conv` / `pw_conv`, MobileNetV2 units
//! `conv1` (expansion) / `conv2` (depthwise) / `conv3` (linear projection). The zoo's MobileNetV2
//! must be built with [`MobileNetV2Config::pytorchcv`](crate::zoo::MobileNetV2Config::pytorchcv).

use crate::error::{NnError, Result};
use crate::network::{Architecture, Network};
use crate::weights::select_mapped;
use candle_core::Device;
use std::path::Path;

/// A pytorchcv model family, i.e. how its tensor names map to the zoo's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// `resnet{20,56,110}_cifar{10,100}` onto the zoo's `ResNetCifar` (B shortcuts).
    ResNetCifar,
    /// `resnet{18,34}` onto the zoo's `ResNet`.
    ResNet,
    /// `mobilenet_w*` onto the zoo's `MobileNetV1`.
    MobileNetV1,
    /// `mobilenetv2_w*` onto the zoo's `MobileNetV2` in pytorchcv layout.
    MobileNetV2,
    /// `regnetx*` onto the zoo's `RegNet`.
    RegNet,
}

/// Units per stage of MobileNetV1 (after the init block) in pytorchcv.
const V1_STAGES: [usize; 5] = [1, 2, 2, 6, 2];
/// Units per stage of MobileNetV2: pytorchcv starts a stage only where the resolution halves, so
/// the 64- and 96-channel settings share stage 4 and the 160- and 320-channel ones stage 5.
const V2_STAGES: [usize; 5] = [1, 2, 3, 7, 4];

/// `stage{s}.unit{u}` (both 1-based) of the `i`-th (0-based) unit over stages of `sizes`.
fn unit(i: usize, sizes: &[usize]) -> Option<String> {
    let mut first = 0;
    for (s, &n) in sizes.iter().enumerate() {
        if i < first + n {
            return Some(format!("stage{}.unit{}", s + 1, i - first + 1));
        }
        first += n;
    }
    None
}

/// `(prefix, leaf)` of a tensor name.
fn split(ours: &str) -> Option<(&str, &str)> {
    ours.rsplit_once('.')
}

/// A ResNet block's part (`conv1`, `bn2`, `shortcut.0`, `downsample.1`) -> pytorchcv's.
fn resnet_part(part: &str) -> Option<&'static str> {
    Some(match part {
        "conv1" => "body.conv1.conv",
        "bn1" => "body.conv1.bn",
        "conv2" => "body.conv2.conv",
        "bn2" => "body.conv2.bn",
        "shortcut.0" | "downsample.0" => "identity_conv.conv",
        "shortcut.1" | "downsample.1" => "identity_conv.bn",
        _ => return None,
    })
}

impl Family {
    /// pytorchcv's name of the zoo tensor `ours` (unchanged if it has no counterpart).
    pub fn name(self, ours: &str) -> String {
        self.map(ours).unwrap_or_else(|| ours.to_string())
    }

    fn map(self, ours: &str) -> Option<String> {
        let (prefix, leaf) = split(ours)?;
        let mapped = match (self, prefix) {
            (Family::ResNetCifar, "conv1") | (Family::MobileNetV1, "stem.conv") => {
                "features.init_block.conv".to_string()
            }
            (Family::ResNetCifar, "bn1") | (Family::MobileNetV1, "stem.bn") => "features.init_block.bn".to_string(),
            (Family::ResNet, "conv1") => "features.init_block.conv.conv".to_string(),
            (Family::ResNet, "bn1") => "features.init_block.conv.bn".to_string(),
            (Family::ResNetCifar | Family::ResNet | Family::MobileNetV1, "fc") => "output".to_string(),
            (Family::ResNetCifar | Family::ResNet, p) => {
                // layer{s}.{b}.{part}
                let rest = p.strip_prefix("layer")?;
                let (s, rest) = rest.split_once('.')?;
                let (b, part) = rest.split_once('.')?;
                let b: usize = b.parse().ok()?;
                format!("features.stage{s}.unit{}.{}", b + 1, resnet_part(part)?)
            }
            (Family::MobileNetV1, p) => {
                // blocks.{i}.{dw,pw}.{conv,bn}
                let rest = p.strip_prefix("blocks.")?;
                let (i, rest) = rest.split_once('.')?;
                let (kind, layer) = rest.split_once('.')?;
                let kind = match kind {
                    "dw" => "dw_conv",
                    "pw" => "pw_conv",
                    _ => return None,
                };
                format!("features.{}.{kind}.{layer}", unit(i.parse().ok()?, &V1_STAGES)?)
            }
            (Family::RegNet, "stem.0") => "features.init_block.conv".to_string(),
            (Family::RegNet, "stem.1") => "features.init_block.bn".to_string(),
            (Family::RegNet, "fc") => "output".to_string(),
            (Family::RegNet, p) => {
                // trunk_output.block{s}.block{s}-{b}.{f.a|f.b|f.c|proj}.{0|1}
                let rest = p.strip_prefix("trunk_output.block")?;
                let (s, rest) = rest.split_once('.')?;
                let rest = rest.strip_prefix(&format!("block{s}-"))?;
                let (b, part) = rest.split_once('.')?;
                let b: usize = b.parse().ok()?;
                let layer = match part {
                    "f.a.0" => "body.conv1.conv",
                    "f.a.1" => "body.conv1.bn",
                    "f.b.0" => "body.conv2.conv",
                    "f.b.1" => "body.conv2.bn",
                    "f.c.0" => "body.conv3.conv",
                    "f.c.1" => "body.conv3.bn",
                    "proj.0" => "identity_conv.conv",
                    "proj.1" => "identity_conv.bn",
                    _ => return None,
                };
                format!("features.stage{s}.unit{}.{layer}", b + 1)
            }
            (Family::MobileNetV2, "features.0.0") => "features.init_block.conv".to_string(),
            (Family::MobileNetV2, "features.0.1") => "features.init_block.bn".to_string(),
            (Family::MobileNetV2, "features.18.0") => "features.final_block.conv".to_string(),
            (Family::MobileNetV2, "features.18.1") => "features.final_block.bn".to_string(),
            (Family::MobileNetV2, "classifier.1") => "output".to_string(),
            (Family::MobileNetV2, p) => {
                // features.{i}.conv.{part}: every block expands in the pytorchcv layout.
                let rest = p.strip_prefix("features.")?;
                let (i, part) = rest.split_once(".conv.")?;
                let i: usize = i.parse().ok()?;
                let layer = match part {
                    "0.0" => "conv1.conv",
                    "0.1" => "conv1.bn",
                    "1.0" => "conv2.conv",
                    "1.1" => "conv2.bn",
                    "2" => "conv3.conv",
                    "3" => "conv3.bn",
                    _ => return None,
                };
                format!("features.{}.{layer}", unit(i.checked_sub(1)?, &V2_STAGES)?)
            }
        };
        Some(format!("{mapped}.{leaf}"))
    }
}

/// Builds `config` and fills it from `path`, a safetensors file in pytorchcv's names (or the
/// zoo's own). Extra tensors (`num_batches_tracked`) are ignored; a missing one or a shape
/// mismatch is an error naming both names; a bias-free 1x1-conv classifier loads into the zoo's
/// linear classifier.
pub fn load<A: Architecture>(family: Family, path: &Path, config: A::Config, device: &Device) -> Result<Network<A>> {
    if !path.is_file() {
        return Err(NnError::File {
            path: path.to_path_buf(),
            source: "no such file (convert pytorchcv's weights with tools/convert_pytorchcv.py)".into(),
        });
    }
    let reference = Network::<A>::new(config.clone(), 0, device)?.tensors()?;
    let found = crate::weights::read(path, device)?;
    let tensors = if reference.keys().all(|k| found.contains_key(k)) {
        select_mapped(found, path, &reference, |n| n.to_string())?
    } else {
        select_mapped(found, path, &reference, |n| family.name(n))?
    };
    Network::from_tensors(config, &tensors, device)
}
