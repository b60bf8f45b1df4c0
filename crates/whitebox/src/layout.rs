//! Where the masks sit (spec 2.3), declared through the channel groups: a [`MaskSlot`] names the
//! group whose channels a mask gates, the BatchNorm point where it is applied (none for the
//! masks the official models create and never apply), whether the vote may prune the group,
//! whether its votes enter the pool, and the BatchNorms its fold factor scales (spec 2.6).
//!
//! The default rule, for a user's network ([`StackConfig`]) and most of the zoo: every prunable
//! group carrying a BatchNorm gets a mask at its last BatchNorm's output (after the activation),
//! folded into every BatchNorm of the group. The zoo's architectures add the official
//! exceptions: the CIFAR ResNet's masks before `bn1` and its never-applied stem and block-output
//! masks, ResNet-50's never-applied `conv3` masks, VGG's random last layer outside the pool,
//! MobileNetV2's random half of the head.

use crate::error::Result;
use compress_nn::ArchConfig;
use compress_nn::stack::StackConfig;
use compress_nn::structure::ChannelGroup;
use compress_nn::tap::TapPoint;
use compress_nn::zoo::{MobileNetV2Config, ResNetCifarConfig, ResNetConfig, VggConfig};

/// One mask tensor of the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskSlot {
    /// The channel group it gates (its width is the mask's `C`).
    pub group: String,
    /// Its width.
    pub width: usize,
    /// Where it is applied: a BatchNorm (variable prefix) and the point there; `None` for a mask
    /// that only the sparsity term and weight decay touch.
    pub site: Option<(String, TapPoint)>,
    /// Whether the vote decides the group's channels.
    pub prunable: bool,
    /// Whether its votes enter the pool that sets the threshold.
    pub in_pool: bool,
    /// The BatchNorms (variable prefixes) whose `gamma`, `beta` are scaled by `t_c`.
    pub fold: Vec<String>,
}

/// How a group outside the vote keeps a random subset of its channels (seeded).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum KeepRule {
    /// `int(C (1 - r_prev))`, `r_prev` the reduction of the vote's previous pass (VGG's last
    /// conv).
    PreviousReduction,
    /// `int(C f)` (MobileNetV2's final 1x1 conv: 640 of 1280).
    Fraction(f64),
}

/// A group whose channels are chosen at random.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomGroup {
    /// The group.
    pub group: String,
    /// How many it keeps.
    pub rule: KeepRule,
}

/// An architecture White-Box can mask and prune.
pub trait WhiteBoxLayout: ArchConfig {
    /// Every mask tensor, in the official model's order.
    fn mask_slots(&self) -> Result<Vec<MaskSlot>>;
    /// Groups pruned at random alongside the vote.
    fn random_groups(&self) -> Vec<RandomGroup> {
        Vec::new()
    }
}

/// The BatchNorm prefixes of a group, in declaration order.
pub fn batch_norms(g: &ChannelGroup) -> Vec<String> {
    g.members.iter().filter_map(|m| m.tensor.strip_suffix(".running_mean").map(str::to_string)).collect()
}

/// The default slot of a group: applied at its last BatchNorm's output, folded into all of them,
/// prunable as the group is, in the pool. `None` when the group has no BatchNorm.
pub fn group_slot(g: &ChannelGroup) -> Option<MaskSlot> {
    let bns = batch_norms(g);
    let last = bns.last()?.clone();
    Some(MaskSlot {
        group: g.name.clone(),
        width: g.width,
        site: Some((last, TapPoint::Output)),
        prunable: g.prunable,
        in_pool: true,
        fold: bns,
    })
}

fn never_applied(group: &str, width: usize, fold: &[&str]) -> MaskSlot {
    MaskSlot {
        group: group.to_string(),
        width,
        site: None,
        prunable: false,
        in_pool: true,
        fold: fold.iter().map(|s| s.to_string()).collect(),
    }
}

/// A user's network: the default rule on every prunable group with a BatchNorm.
impl WhiteBoxLayout for StackConfig {
    fn mask_slots(&self) -> Result<Vec<MaskSlot>> {
        Ok(self.groups().iter().filter(|g| g.prunable).filter_map(group_slot).collect())
    }
}

/// VGG: a mask after every conv's ReLU; the last conv's mask is applied but outside the pool,
/// its BatchNorm is not folded, and the layer keeps a random `int(C (1 - r_prev))` channels.
impl WhiteBoxLayout for VggConfig {
    fn mask_slots(&self) -> Result<Vec<MaskSlot>> {
        let n = self.num_convs();
        let mut out: Vec<MaskSlot> =
            self.groups().iter().filter(|g| g.name.starts_with("conv")).filter_map(group_slot).collect();
        if let Some(last) = out.get_mut(n.saturating_sub(1)) {
            last.prunable = false;
            last.in_pool = false;
            last.fold.clear();
        }
        Ok(out)
    }

    fn random_groups(&self) -> Vec<RandomGroup> {
        vec![RandomGroup {
            group: format!("conv{}", self.num_convs().saturating_sub(1)),
            rule: KeepRule::PreviousReduction,
        }]
    }
}

/// CIFAR ResNet: mask 0 on the stem (never applied, folded into `bn1`), then per block the
/// applied mask on `conv1`'s output before `bn1` (prunable, folded into `bn1`) and the
/// never-applied block-output mask (folded into `bn2`): `2 blocks + 1` tensors.
impl WhiteBoxLayout for ResNetCifarConfig {
    fn mask_slots(&self) -> Result<Vec<MaskSlot>> {
        let groups = self.groups();
        let width = |name: &str| groups.iter().find(|g| g.name == name).map_or(0, |g| g.width);
        let mut out = vec![never_applied("stage1", width("stage1"), &["bn1"])];
        for g in groups.iter().filter(|g| g.name.ends_with(".inner")) {
            let p = g.name.trim_end_matches(".inner");
            let stage = format!("stage{}", &p[5..p.find('.').unwrap_or(6)]);
            out.push(MaskSlot {
                group: g.name.clone(),
                width: g.width,
                site: Some((format!("{p}.bn1"), TapPoint::BnInput)),
                prunable: g.prunable,
                in_pool: true,
                fold: vec![format!("{p}.bn1")],
            });
            out.push(never_applied(&stage, width(&stage), &[&format!("{p}.bn2")]));
        }
        Ok(out)
    }
}

/// torchvision ResNet: per block the masks after `ReLU(bn1)` and (bottleneck) `ReLU(bn2)`,
/// prunable and folded; a bottleneck also carries a never-applied mask on its output (`4
/// planes` wide, not folded): 48 tensors, 32 applied, on ResNet-50.
impl WhiteBoxLayout for ResNetConfig {
    fn mask_slots(&self) -> Result<Vec<MaskSlot>> {
        let groups = self.groups();
        let bottleneck = groups.iter().any(|g| g.name.ends_with(".inner2"));
        let mut out = Vec::new();
        for g in groups.iter().filter(|g| g.name.ends_with(".inner1") || g.name.ends_with(".inner2")) {
            out.extend(group_slot(g));
            if bottleneck && g.name.ends_with(".inner2") {
                let p = g.name.trim_end_matches(".inner2");
                let stage = format!("stage{}", &p[5..p.find('.').unwrap_or(6)]);
                let w = groups.iter().find(|x| x.name == stage).map_or(0, |x| x.width);
                out.push(never_applied(&stage, w, &[]));
            }
        }
        Ok(out)
    }
}

/// MobileNetV2: one mask per expanding block after `ReLU6(BN(depthwise))` on the hidden width,
/// folded into both of the block's hidden BatchNorms (17 with `pytorchcv()`, whose first block
/// expands as the CIFAR model's does; 16 in torchvision's layout); the final 1x1 conv keeps a
/// random half.
impl WhiteBoxLayout for MobileNetV2Config {
    fn mask_slots(&self) -> Result<Vec<MaskSlot>> {
        Ok(self.groups().iter().filter(|g| g.name.ends_with(".expand")).filter_map(group_slot).collect())
    }

    fn random_groups(&self) -> Vec<RandomGroup> {
        vec![RandomGroup { group: "head".into(), rule: KeepRule::Fraction(0.5) }]
    }
}
