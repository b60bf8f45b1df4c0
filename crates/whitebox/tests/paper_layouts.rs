//! The paper profile's deterministic checks: each official model's mask tensors (count, applied,
//! sizes), the unpruned MACs against the spec's reference counts, and the vote loop reaching every
//! script's target with the floors respected on randomly drawn masks.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use compress_nn::tap::TapPoint;
use whitebox::paper::{check_row, floors_respected, paper_rows};

#[test]
fn every_row_has_the_official_masks_and_reaches_its_target() {
    for row in paper_rows().unwrap() {
        let c = check_row(&row, 0).unwrap();
        let applied = c.slots.iter().filter(|s| s.site.is_some()).count();
        assert_eq!((c.slots.len(), applied), row.masks, "{}", row.name);
        if let Some(m) = row.macs {
            assert_eq!(c.macs, m, "{}: MACs", row.name);
        }
        assert!(c.plan.reduction >= row.target, "{}: {}", row.name, c.plan.reduction);
        assert!(floors_respected(&c.slots, &c.plan), "{}", row.name);
        let qs: Vec<f64> = c.plan.passes.iter().map(|p| p.q).collect();
        assert!(qs.windows(2).all(|w| w[1] < w[0]), "{}: q decreases", row.name);
        // Only the last pass reaches the target.
        let (last, before) = c.plan.passes.split_last().unwrap();
        assert!(before.iter().all(|p| p.reduction < row.target) && last.reduction >= row.target);
    }
}

/// VGG-16's last conv keeps a random `int(512 (1 - r_prev))`, `r_prev` the previous pass's
/// reduction; MobileNetV2's final 1x1 conv a random 640 of 1280.
#[test]
fn random_groups_follow_their_rules() {
    let rows = paper_rows().unwrap();
    let vgg = check_row(rows.iter().find(|r| r.name == "VGG-16 C10").unwrap(), 0).unwrap();
    let passes = &vgg.plan.passes;
    let r_prev = passes[passes.len() - 2].reduction;
    assert_eq!(vgg.plan.widths["conv12"], (512.0 * (1.0 - r_prev)) as usize);
    let kept = &vgg.plan.kept["conv12"];
    assert!(kept.windows(2).all(|w| w[0] < w[1]) && kept.last().unwrap() < &512, "sorted subset");
    assert_ne!(kept, &(0..kept.len()).collect::<Vec<_>>(), "a random subset, not the first channels");
    let again = check_row(rows.iter().find(|r| r.name == "VGG-16 C10").unwrap(), 0).unwrap();
    assert_eq!(&again.plan.kept["conv12"], kept, "seeded");
    let mb = check_row(rows.iter().find(|r| r.name == "MobileNetV2 C10").unwrap(), 0).unwrap();
    assert_eq!(mb.plan.widths["head"], 640);
}

#[test]
fn mask_sizes_and_sites_follow_the_official_models() {
    let rows = paper_rows().unwrap();
    let slots = |name: &str| check_row(rows.iter().find(|r| r.name == name).unwrap(), 0).unwrap().slots;
    let vgg = slots("VGG-16 C10");
    let w: Vec<usize> = vgg.iter().map(|s| s.width).collect();
    assert_eq!(w, [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]);
    assert!(vgg.iter().all(|s| s.site.as_ref().unwrap().1 == TapPoint::Output));
    assert_eq!(vgg.iter().filter(|s| s.in_pool).count(), 12, "masks 1-12 vote");
    assert!(vgg[12].fold.is_empty() && !vgg[12].prunable, "layer 13: random, BN not scaled");

    let r56 = slots("ResNet-56 C10");
    // Mask 0 (stem) and the even ones are never applied; the odd ones sit before each bn1.
    assert!(r56[0].site.is_none() && r56[0].fold == ["bn1"]);
    assert_eq!(r56[1].site, Some(("layer1.0.bn1".to_string(), TapPoint::BnInput)));
    assert!(r56[2].site.is_none() && r56[2].fold == ["layer1.0.bn2"]);
    assert!(r56.iter().enumerate().all(|(j, s)| s.site.is_some() == (j % 2 == 1)));
    let inner: Vec<usize> = r56.iter().filter(|s| s.prunable).map(|s| s.width).collect();
    assert_eq!(inner, [vec![16; 9], vec![32; 9], vec![64; 9]].concat());

    let r50 = slots("ResNet-50 IN 45%");
    assert_eq!(r50[0].site, Some(("layer1.0.bn1".to_string(), TapPoint::Output)));
    assert_eq!((r50[0].width, r50[1].width, r50[2].width), (64, 64, 256));
    assert!(r50[2].site.is_none() && r50[2].fold.is_empty(), "conv3's mask: never applied, bn3 not scaled");
    assert_eq!(r50[47].width, 2048);

    let mb = slots("MobileNetV2 C10");
    let w: Vec<usize> = mb.iter().map(|s| s.width).collect();
    assert_eq!(w, [32, 96, 144, 144, 192, 192, 192, 384, 384, 384, 384, 576, 576, 576, 960, 960, 960]);
    assert!(mb.iter().all(|s| s.fold.len() == 2), "bn1 and bn2 of each block");
}

/// Section 8: in a CIFAR basic block at 32x32 with 16 output channels, keeping 8 of 16 inner
/// channels halves conv1 + conv2: 4,718,592 -> 2,359,296 MACs.
#[test]
fn half_the_inner_channels_halve_the_block() {
    use compress_nn::ArchConfig;
    use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
    let cfg = ResNetCifarConfig::new(20, 10).unwrap();
    let half = cfg.with_widths([("layer1.0.inner".to_string(), 8)].into()).unwrap();
    let block = |c: &ResNetCifarConfig| -> u64 {
        let net = compress_nn::Network::<ResNetCifar>::new(c.clone(), 0, &candle_core::Device::Cpu).unwrap();
        let x = candle_core::Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, net.device()).unwrap();
        let (y, per) = compress_nn::count::count_layers(|| net.forward_t(&x, false));
        y.unwrap();
        per.iter().filter(|(p, _)| p == "layer1.0.conv1" || p == "layer1.0.conv2").map(|(_, c)| c.macs).sum()
    };
    assert_eq!(block(&cfg), 4_718_592);
    assert_eq!(block(&half), 2_359_296);
}
