//! CF-ViT on a vision transformer of your own: a ViT with a convolutional stem (two strided convs
//! instead of a linear patch embedding), 3 transformer blocks, trained coarse-to-fine on 2,000
//! digits, then run with early exit. Run: `cargo run --release -p cf-vit --example conv_stem_vit`
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, Optimizer, VarBuilder, VarMap};
use cf_vit::{CfVit, CfVitConfig, Selection, Stage, Target, TokenBackbone, cf_loss};
use compress_data::{batch::Batcher, embedded::mnist_5k_digits};
use compress_nn::layers::{Conv2d, ConvSpec, LayerNorm, Linear};
use compress_nn::zoo::VitBlock as Block;

/// Patches of 4 px through a conv stem (3x3 stride 2, then 2x2 stride 2), 48 wide, 3 blocks.
struct ConvStemVit {
    stem: (Conv2d, Conv2d),
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
}

impl ConvStemVit {
    fn new(grid: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = 48;
        let s1 = Conv2d::new(1, 16, ConvSpec::same(3).stride(2).with_bias(), vb.pp("stem.0"))?;
        let s2 = Conv2d::new(
            16,
            d,
            ConvSpec { kernel: 2, stride: 2, padding: 0, ..ConvSpec::same(2) }.with_bias(),
            vb.pp("stem.1"),
        )?;
        let tn = Init::Randn { mean: 0.0, stdev: 0.02 };
        let blocks = (0..3)
            .map(|i| Block::new(d, 3, 16, 2 * d, true, vb.pp(format!("blocks.{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            stem: (s1, s2),
            cls: vb.get_with_hints((1, 1, d), "cls_token", tn)?,
            pos: vb.get_with_hints((1, 1 + grid * grid, d), "pos_embed", tn)?, // the fine grid's table
            blocks,
            norm: LayerNorm::new(d, 1e-6, vb.pp("norm"))?,
            head: Linear::new(d, 10, true, vb.pp("head"))?,
        })
    }
}

impl TokenBackbone for ConvStemVit {
    fn dim(&self) -> usize {
        48
    }
    fn depth(&self) -> usize {
        self.blocks.len()
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn embed(&self, img: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let x = self.stem.1.forward(&self.stem.0.forward(img)?.relu()?)?; // [B, D, g, g]
        x.flatten_from(2)?.transpose(1, 2) // [B, g * g, D]
    }
    fn cls_token(&self) -> &Tensor {
        &self.cls
    }
    fn pos_embed(&self) -> &Tensor {
        &self.pos
    }
    fn block(&self, i: usize, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        self.blocks[i].forward_attn(x)
    }
    fn norm(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward(x)
    }
    fn logits(&self, z: &Tensor, _stage: Stage) -> candle_core::Result<Tensor> {
        self.head.forward(&z.narrow(1, 0, 1)?.squeeze(1)?)
    }
    fn embed_macs(&self, g: usize) -> u64 {
        (g * g * (4 * 16 * 9 + 48 * 16 * 4)) as u64
    }
    fn blocks_macs(&self, t: usize) -> u64 {
        cf_vit::vit_macs(t, 48, 3, 96)
    } // MLP ratio 2
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = CfVitConfig::mini(); // 32 px: coarse 4 x 4 patches of 8 px, fine 8 x 8 of 4 px
    let (dev, varmap) = (Device::Cpu, VarMap::new());
    let vb = compress_nn::init::seeded_builder(&varmap, 0, DType::F32, &dev);
    let model = CfVit::new(ConvStemVit::new(2 * cfg.coarse_side, vb.clone())?, cfg, vb, varmap.clone())?;
    let (train, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let (train, test) = (train.padded(2)?, test.padded(2)?);
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW { lr: 2e-3, weight_decay: 0.05, ..Default::default() },
    )?;
    for epoch in 0..8 {
        let selection = if epoch >= 5 { Selection::Informative } else { Selection::Off }; // re-split the informative half last
        for b in Batcher::new(64, true, 0, dev.clone())?.epoch(&train, epoch, 0)? {
            let b = b?;
            let (y_c, y_f) = model.forward_train(&b.images, selection, true)?;
            opt.backward_step(&cf_loss(&y_c, &y_f, Target::Hard(&b.labels, 0.1))?)?;
        }
    }
    let (macs_c, macs_f) = model.stage_macs();
    for eta in [0.5, 0.9, 1.0] {
        let (mut right, mut exits) = (0.0, 0);
        for b in Batcher::new(250, false, 0, dev.clone())?.epoch(&test, 0, 0)? {
            let b = b?;
            let out = model.infer(&b.images, eta)?;
            right += out.logits.argmax(1)?.eq(&b.labels)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            exits += out.exited.iter().filter(|&&e| e).count();
        }
        let macs = macs_c as f64 + (1.0 - exits as f64 / 500.0) * macs_f as f64;
        println!(
            "eta {eta}: top-1 {:.1} %, {:.0} % exit coarse, {:.2} MMACs per image",
            right / 5.0,
            exits as f64 / 5.0,
            macs / 1e6
        );
    }
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
