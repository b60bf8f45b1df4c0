//! The straight-through estimator of supermask training (spec section 2): with
//! `G = dL/dW_eff`,
//! - `dL/dW = G (.) M`: pruned weights get no loss gradient;
//! - `dL/dS = G (.) W` for every entry, pruned ones included (the binarisation as the identity).
//!
//! Two equal routes: [`supermask_weight`] builds `W_eff = W (.) M + (S - sg(S)) (.) sg(W)` into
//! the graph (a layer written for it), [`routed_gradients`] applies the same rule to the gradient
//! of a weight the model reads directly (any candle model: [`crate::Sparsified`] keeps `W` and
//! `S` beside the model's `W_eff` and routes `G` after the backward pass).

use candle_core::{Result, Tensor};

/// `W_eff = W (.) M + (S - sg(S)) (.) sg(W)`: the value of `W (.) M` (up to the sign of zero),
/// the gradients of the module documentation.
pub fn supermask_weight(w: &Tensor, s: &Tensor, m: &Tensor) -> Result<Tensor> {
    let zero_with_grad = (s - s.detach())?;
    (w * m)? + (zero_with_grad * w.detach())?
}

/// `(dL/dW, dL/dS) = (G (.) M, G (.) W)` from `G = dL/dW_eff`.
pub fn routed_gradients(g: &Tensor, w: &Tensor, m: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(((g * m)?, (g * w)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn v(t: &Tensor) -> Vec<f32> {
        t.to_vec1().unwrap()
    }

    /// Section 8: W = [0.5, -1, 2, 0], M = [1, 0, 1, 0], G = [0.2, 0.3, -0.1, 0.4].
    #[test]
    fn both_routes_give_the_gradients_of_section_8() {
        let w = Var::new(&[0.5f32, -1.0, 2.0, 0.0], &Device::Cpu).unwrap();
        let s = Var::new(&[0.3f32, -0.7, 0.0, 1.2], &Device::Cpu).unwrap();
        let m = t(&[1.0, 0.0, 1.0, 0.0]);
        let g = t(&[0.2, 0.3, -0.1, 0.4]);
        let eff = supermask_weight(w.as_tensor(), s.as_tensor(), &m).unwrap();
        assert_eq!(v(&eff), [0.5, 0.0, 2.0, 0.0], "the forward trick's value is W (.) M");
        // L = sum(G (.) W_eff): dL/dW_eff = G.
        let grads = (&eff * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (gw, gs) = (grads.get(w.as_tensor()).unwrap(), grads.get(s.as_tensor()).unwrap());
        assert_eq!(v(gw), [0.2, 0.0, -0.1, 0.0]);
        let want_s = [0.1f32, -0.3, -0.2, 0.0];
        assert!(v(gs).iter().zip(want_s).all(|(a, b)| (a - b).abs() < 1e-7), "{:?}", v(gs));
        let (rw, rs) = routed_gradients(&g, w.as_tensor(), &m).unwrap();
        assert_eq!(v(&rw), v(gw));
        assert_eq!(v(&rs), v(gs), "the routed score gradient is the graph's, bit for bit");
        assert!(v(&rs)[1] == -0.3, "the pruned entry 1 still gets -0.3");
    }
}
