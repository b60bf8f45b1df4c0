//! The weight-only methods on a candle-transformers ResNet-18, through the `VarMap` its
//! `VarBuilder` was built from: 1xN block pruning (masks in place, packed kernels checked layer by
//! layer) and 4-bit per-channel weight quantization exported as integer codes. Each result is
//! checked against a reference model built from the masked / fake-quantized tensors.
//! Run: `cargo run --release -p compress-examples --example candle_transformers_resnet`
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::resnet::resnet18;
use compress_core::quant::{asym_fake_quant, per_channel_minmax};
use compress_core::sparse::PackedConv2d;
use onexn::{OneByN, Pattern, prunable_weights, prune_weights};
use std::collections::HashMap;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn tensors(varmap: &VarMap) -> Res<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| "lock")?;
    Ok(data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect::<candle_core::Result<_>>()?)
}

/// The largest difference between the model over `varmap` and a ResNet-18 built from `reference`.
fn gap(model: &dyn Module, reference: HashMap<String, Tensor>, x: &Tensor) -> Res<f32> {
    let want = resnet18(10, VarBuilder::from_tensors(reference, DType::F32, &Device::Cpu))?.forward(x)?;
    Ok((model.forward(x)? - want)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Res<()> {
    let varmap = VarMap::new();
    let model = resnet18(10, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    // With pretrained weights: varmap.load("resnet18.safetensors")? (the layers share these variables).
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu)?;
    let dense = tensors(&varmap)?;

    // 1xN (N = 4) at 50 % on every conv but the stem, the classifier dense, as the paper does.
    let names = prunable_weights(&varmap, 4, &["conv1.weight", "fc.weight"])?;
    let masks = prune_weights(&varmap, &names, Pattern::Block(OneByN::l1(4, false)), 0.5)?;
    let mut reference = dense.clone();
    for (name, m) in masks.masks() {
        reference.insert(name.clone(), (&dense[name] * m)?);
    }
    println!(
        "1x4: {} convs pruned, density {:.3}, |model - masked reference| = {:.1e}",
        names.len(),
        masks.density()?,
        gap(&model, reference, &x)?
    );
    let mut worst = 0f32;
    for (name, bsr) in masks.pack(&varmap, 4)? {
        let w = &tensors(&varmap)?[&name];
        let (c_in, k) = (w.dim(1)?, w.dim(2)?);
        let xi = Tensor::randn(0f32, 1.0, (1, c_in, 8, 8), &Device::Cpu)?;
        let packed = PackedConv2d::new(bsr, None, 1, k / 2)?.forward(&xi)?;
        worst = worst.max((packed - xi.conv2d(w, k / 2, 1, 1, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?);
    }
    println!("packed 1x4 kernels vs dense convs of the masked weights: max |dy| = {worst:.1e}");
    assert!(worst < 1e-3);

    // 4-bit weights (IntraQ's per-output-channel quantizer), exported as codes, loaded back.
    let codes = intraq::export_weights(&varmap, 4)?;
    let mut reference = tensors(&varmap)?;
    {
        let data = varmap.data().lock().map_err(|_| "lock")?;
        for (name, q) in &codes {
            let w = &reference[name];
            let (lo, hi) = per_channel_minmax(w)?;
            let fake = asym_fake_quant(w, &lo, &hi, 4)?;
            reference.insert(name.clone(), fake);
            data[name].set(&q.dequantize(&Device::Cpu)?)?;
        }
    }
    let bytes: usize = codes.values().map(|q| q.to_bytes().map(|b| b.len())).sum::<Result<_, _>>()?;
    let d = gap(&model, reference, &x)?;
    println!(
        "W4: {} weights, {bytes} bytes exported; |model on codes - fake-quantized reference| = {d:.1e}",
        codes.len()
    );
    assert_eq!(d, 0.0, "dequantized codes are the fake-quantized weights bit for bit");
    Ok(())
}

#[test]
fn example_runs() {
    main().expect("the example runs");
}
