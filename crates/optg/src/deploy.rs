//! Deployment: a trained sparse model's weights in compressed sparse rows
//! ([`crate::Sparsified::export_csr`]) run on `compress-core`'s CSR layers, re-exported here:
//! [`CsrLinear`] (gathered dot products below 8 rows, transposed 32-row tiles above) and
//! [`CsrConv1x1`].

pub use compress_core::sparse::{CsrConv1x1, CsrLinear};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device, Module, Tensor};
    use compress_core::sparse::weight_mask;
    use proptest::prelude::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    proptest! {
        #[test]
        fn csr_layers_match_the_dense_products(out in 1usize..50, inp in 1usize..70, batch in 1usize..70,
                                               rate in 0.0f64..0.999, side in 1usize..5, seed in 0u64..50) {
            let dev = Device::Cpu;
            let v: Vec<f32> = (0..out * inp).map(|i| ((i as u64 * 2654435761 + seed) % 997) as f32 / 498.0 - 1.0).collect();
            let w = Tensor::from_vec(v, (out, inp), &dev).unwrap();
            let w = (&w * weight_mask(&w, rate).unwrap()).unwrap();
            let b = Tensor::arange(0f32, out as f32, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (batch, inp), &dev).unwrap();
            let dense = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
            let sparse = CsrLinear::from_dense(&w, Some(&b)).unwrap().forward(&x).unwrap();
            prop_assert!(max_diff(&dense, &sparse) < 1e-4);
            let xc = Tensor::randn(0f32, 1.0, (batch.min(3), inp, side, side + 1), &dev).unwrap();
            let w4 = w.reshape((out, inp, 1, 1)).unwrap();
            let dense = xc.conv2d(&w4, 0, 1, 1, 1).unwrap();
            let sparse = CsrConv1x1::from_dense(&w4).unwrap().forward(&xc).unwrap();
            prop_assert!(max_diff(&dense, &sparse) < 1e-4);
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let dev = Device::Cpu;
        let l = CsrLinear::from_dense(&Tensor::ones((3, 4), DType::F32, &dev).unwrap(), None).unwrap();
        assert!(l.forward(&Tensor::ones((2, 5), DType::F32, &dev).unwrap()).is_err());
        let b = Tensor::ones(2, DType::F32, &dev).unwrap();
        assert!(CsrLinear::from_dense(&Tensor::ones((3, 4), DType::F32, &dev).unwrap(), Some(&b)).is_err());
        assert_eq!(l.forward(&Tensor::ones((2, 7, 4), DType::F32, &dev).unwrap()).unwrap().dims(), [2, 7, 3]);
    }
}
