//! OptG on a candle-nn network of your own (not from the zoo): a 3x3 conv, a 1x1 conv and a
//! classifier, every weight under one global budget of 90 % sparsity, trained from scratch for
//! 6 epochs on 2,000 digits; then the 1x1 conv and the classifier run on the CSR kernel and give
//! the logits of the masked dense network.
//! Run: `cargo run --release -p optg --example own_mlp`
use candle_core::{DType, Device, Module, Result as CandleResult, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use compress_data::batch::Batcher;
use compress_data::embedded::mnist_5k_digits;
use compress_train::schedule::Decay;
use compress_train::{Run, TrainConfig, classify};
use optg::deploy::{CsrConv1x1, CsrLinear};
use optg::{OptgSettings, Sparsified, sparsifiable_weights, train};

struct Net {
    c1: Conv2d,
    c2: Conv2d,
    fc: Linear,
    varmap: VarMap,
    device: Device,
}

impl Net {
    fn new() -> CandleResult<Self> {
        let (varmap, device) = (VarMap::new(), Device::Cpu);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let s2 = Conv2dConfig { stride: 2, padding: 1, ..Default::default() };
        Ok(Self {
            c1: candle_nn::conv2d(1, 16, 3, s2, vb.pp("c1"))?,
            c2: candle_nn::conv2d_no_bias(16, 32, 1, Default::default(), vb.pp("c2"))?,
            fc: candle_nn::linear(32 * 14 * 14, 10, vb.pp("fc"))?,
            varmap,
            device,
        })
    }

    /// The forward pass with the 1x1 conv and the classifier given as any modules.
    fn forward_with(&self, x: &Tensor, c2: &dyn Module, fc: &dyn Module) -> CandleResult<Tensor> {
        let h = c2.forward(&self.c1.forward(x)?.relu()?)?.relu()?;
        fc.forward(&h.flatten_from(1)?)
    }
}

/// What the training loop needs: the variables, their device, the forward pass.
impl compress_nn::Model for Net {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward_t(&self, x: &Tensor, _train: bool) -> compress_nn::Result<Tensor> {
        Ok(self.forward_with(x, &self.c2, &self.fc)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = Net::new()?;
    let (train_set, test) = mnist_5k_digits(Some(2000), Some(500))?;
    // Every conv and linear weight (the first conv and the classifier included), one budget.
    let names = sparsifiable_weights(&net.varmap, &[])?;
    println!("sparsified: {names:?}");
    let sparse = Sparsified::new(&net.varmap, &names)?;
    // The recipe: SGD 0.9, OptG's per-epoch cosine from 0.1 (no warm-up), decay 5e-4 on weights.
    let (epochs, batch) = (6, 50);
    let decay = Decay::EpochCosine { steps_per_epoch: (2000 / batch) as u64, epochs, warmup: 0 };
    let mut cfg = TrainConfig::sgd(epochs as usize, batch, 0.1, decay, 5e-4, 0);
    cfg.no_decay_on_norm_and_bias = true;
    let root = std::env::temp_dir().join(format!("optg-example-{}", std::process::id()));
    let mut run = Run::create(&root, "own-cnn", &cfg, 0, "cpu")?;
    run.quiet = true;
    let trained = train(&net, &sparse, &OptgSettings::new(0.9), &cfg, &train_set, &test, &mut run, false)?;
    println!("OptG at 90 %: test top-1 {:.1} %, realised sparsity {:.4}", trained.top1, trained.sparsity);
    for (name, kept, all) in sparse.kept()? {
        println!("  {name}: {kept} of {all} kept ({:.1} %)", 100.0 * kept as f64 / all as f64);
    }
    if (trained.sparsity - 0.9).abs() > 1e-4 {
        return Err(format!("realised sparsity {} is not the target", trained.sparsity).into());
    }

    // Deploy: the 1x1 conv and the classifier on the CSR kernel (the model's weights are W (.) M).
    let csr = sparse.export_csr()?;
    let c2 = CsrConv1x1::from_dense(&net.c2.weight().clone())?;
    let fc = CsrLinear::new(csr["fc.weight"].clone(), net.fc.bias())?;
    let batch = Batcher::new(64, false, 0, Device::Cpu)?.epoch(&test, 0, 0)?.next().ok_or("no test batch")??;
    let x = batch.images;
    let dense = net.forward_with(&x, &net.c2, &net.fc)?;
    let deployed = net.forward_with(&x, &c2, &fc)?;
    let diff = (dense - deployed)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("deployed (CSR) vs masked dense logits: max |difference| {diff:.2e}");
    if diff > 1e-4 {
        return Err(format!("the CSR model disagrees with the masked one by {diff}").into());
    }
    let top1 = classify::evaluate(&net, &test, 250)?.0;
    println!("masked dense model: test top-1 {top1:.1} %");
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
