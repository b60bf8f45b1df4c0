//! 1xN pruning of a plain candle-nn CNN of your own, by its weights' names: train it on 2,000
//! digits, prune 1x4 blocks at 50 %, fine-tune with the masks re-applied after every step, pack
//! the pruned layers in the 1xN format and run them with the packed kernels.
//! Run: `cargo run --release -p onexn --example candle_cnn`
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap, loss::cross_entropy};
use compress_core::sparse::PackedConv2d;
use compress_data::{batch::Batcher, embedded::mnist_5k_digits};
use onexn::{OneByN, Pattern, prunable_weights, prune_weights};

struct Cnn {
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
    fc: Linear,
}

impl Cnn {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let s2 = Conv2dConfig { stride: 2, padding: 1, ..Default::default() };
        let c1 = candle_nn::conv2d(1, 16, 3, s2, vb.pp("c1"))?;
        let c2 = candle_nn::conv2d(16, 32, 3, s2, vb.pp("c2"))?;
        Ok(Self {
            c1,
            c2,
            c3: candle_nn::conv2d(32, 64, 1, Default::default(), vb.pp("c3"))?,
            fc: candle_nn::linear(64 * 49, 10, vb.pp("fc"))?,
        })
    }

    /// The forward pass with `c3` given as any module (dense or packed).
    fn forward_with(&self, x: &Tensor, c3: &dyn Module) -> candle_core::Result<Tensor> {
        let x = self.c2.forward(&self.c1.forward(x)?.relu()?)?.relu()?;
        self.fc.forward(&c3.forward(&x)?.relu()?.flatten_from(1)?)
    }
}

fn accuracy(
    net: &Cnn,
    c3: &dyn Module,
    test: &compress_data::batch::ImageDataset,
) -> Result<f64, Box<dyn std::error::Error>> {
    let (mut right, mut n) = (0f64, 0f64);
    for b in Batcher::new(250, false, 0, Device::Cpu)?.epoch(test, 0, 0)? {
        let b = b?;
        let pred = net.forward_with(&b.images, c3)?.argmax(D::Minus1)?;
        right += pred.eq(&b.labels)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        n += b.images.dim(0)? as f64;
    }
    Ok(100.0 * right / n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let varmap = VarMap::new();
    let net = Cnn::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let (train, test) = mnist_5k_digits(Some(2000), Some(500))?;
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW { lr: 3e-3, ..Default::default() })?;
    let mut epoch = |masks: Option<&onexn::WeightMasks>, e: u64| -> Result<(), Box<dyn std::error::Error>> {
        for b in Batcher::new(32, true, 0, Device::Cpu)?.epoch(&train, e, 0)? {
            let b = b?;
            opt.backward_step(&cross_entropy(&net.forward_with(&b.images, &net.c3)?, &b.labels)?)?;
            if let Some(m) = masks {
                m.apply(&varmap)?; // pruned entries stay zero
            }
        }
        Ok(())
    };
    (0..4).try_for_each(|e| epoch(None, e))?;
    println!("dense: test top-1 {:.1} %", accuracy(&net, &net.c3, &test)?);

    // The paper keeps the first conv and the classifier dense.
    let names = prunable_weights(&varmap, 4, &["c1.weight", "fc.weight"])?;
    let masks = prune_weights(&varmap, &names, Pattern::Block(OneByN::l1(4, false)), 0.5)?;
    println!(
        "1x4 at 50 % on {names:?}: density {:.3}, top-1 {:.1} %",
        masks.density()?,
        accuracy(&net, &net.c3, &test)?
    );
    (4..6).try_for_each(|e| epoch(Some(&masks), e))?;
    let dense_top1 = accuracy(&net, &net.c3, &test)?;

    let packed = masks.pack(&varmap, 4)?;
    let bias = varmap.data().lock().map_err(|_| "lock")?["c3.bias"].as_tensor().to_vec1::<f32>()?;
    let c3 = PackedConv2d::new(packed["c3.weight"].clone(), Some(bias), 1, 0)?;
    let x = test.subset(&(0..64).collect::<Vec<_>>())?;
    let xb = Batcher::new(64, false, 0, Device::Cpu)?.epoch(&x, 0, 0)?.next().ok_or("no batch")??.images;
    let diff = (net.forward_with(&xb, &net.c3)? - net.forward_with(&xb, &c3)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "fine-tuned: top-1 {dense_top1:.1} % masked dense, {:.1} % with c3 packed ({} of {} blocks kept; max |dy| {diff:.1e})",
        accuracy(&net, &c3, &test)?,
        packed["c3.weight"].nnzb(),
        64 / 4 * 32
    );
    assert!(diff < 1e-4, "the packed kernel computes the masked layer");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
