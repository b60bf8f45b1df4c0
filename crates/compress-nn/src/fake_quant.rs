//! Fake quantization of any zoo model without rewriting it (GDFQ / IntraQ / FDDA placement,
//! intraq spec 2.2): while a closure runs under a [`FakeQuant`] scope, every `Conv2d` and `Linear`
//! uses its weight fake-quantized per output channel from its current min / max at `wbits`, and
//! every ReLU / ReLU6 output passes a per-tensor quantizer at `abits` whose range is a running
//! average of batch extrema (while running) or frozen. Activation sites are numbered in call
//! order, which a model's forward keeps fixed. Everything else (inputs, BatchNorm, biases,
//! residual sums, linear bottlenecks) stays in full precision. Straight-through gradients.

use candle_core::{Result, Tensor};
use compress_core::quant::{RangeRule, RunningRange, asym_fake_quant, check_bits, per_channel_minmax};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Sites quantized at other bits than the scope's (FDDA's F8L8: the first and last layers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitOverrides {
    /// Weight bits by layer variable prefix (`features.conv0`, `fc`).
    pub weights: BTreeMap<String, u32>,
    /// Activation bits by site index (call order).
    pub activations: BTreeMap<usize, u32>,
}

/// Bits and the activation ranges of one quantized model.
#[derive(Debug)]
pub struct FakeQuant {
    /// Weight bits.
    pub wbits: u32,
    /// Activation bits.
    pub abits: u32,
    /// Sites at other bits.
    pub overrides: BitOverrides,
    /// How ranges average batch extrema.
    pub rule: RangeRule,
    /// One range per activation site, in call order (created on first use, running).
    pub ranges: Mutex<Vec<RunningRange>>,
}

impl FakeQuant {
    /// A quantizer set at `(wbits, abits)` with no site seen yet.
    pub fn new(wbits: u32, abits: u32, rule: RangeRule) -> Result<Arc<Self>> {
        Self::with_overrides(wbits, abits, BitOverrides::default(), rule)
    }

    /// A quantizer set at `(wbits, abits)` except the sites of `overrides`.
    pub fn with_overrides(wbits: u32, abits: u32, overrides: BitOverrides, rule: RangeRule) -> Result<Arc<Self>> {
        for b in [wbits, abits].iter().chain(overrides.weights.values()).chain(overrides.activations.values()) {
            check_bits(*b).map_err(candle_core::Error::wrap)?;
        }
        Ok(Arc::new(Self { wbits, abits, overrides, rule, ranges: Mutex::new(Vec::new()) }))
    }

    /// Freezes (`false`) or releases (`true`) every range.
    pub fn set_running(&self, running: bool) -> Result<()> {
        let mut r = self.ranges.lock().map_err(|_| candle_core::Error::Msg("range lock poisoned".into()))?;
        r.iter_mut().for_each(|x| if running { x.unfix() } else { x.fix() });
        Ok(())
    }

    /// Copies of the ranges.
    pub fn snapshot(&self) -> Result<Vec<RunningRange>> {
        Ok(self.ranges.lock().map_err(|_| candle_core::Error::Msg("range lock poisoned".into()))?.clone())
    }
}

/// How many quantization sites one scope saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sites {
    /// Activation outputs quantized (ReLU / ReLU6 of the toolkit's layers).
    pub activations: usize,
    /// Weights quantized (the toolkit's `Conv2d` and `Linear`).
    pub weights: usize,
    /// The ids of the weight tensors quantized: a model's weight that is not among them ran
    /// through a layer that is not the toolkit's (and stayed in full precision).
    pub weight_ids: std::collections::HashSet<candle_core::TensorId>,
    /// Every weight site in call order: the layer's variable prefix and its bits.
    pub weight_bits: Vec<(String, u32)>,
    /// Every activation site's bits, in call order.
    pub activation_bits: Vec<u32>,
}

thread_local! {
    static SCOPE: RefCell<Option<(Arc<FakeQuant>, Sites)>> = const { RefCell::new(None) };
}

/// Runs `f` with every layer it calls fake-quantized by `q` (nested scopes: the inner wins; the
/// previous scope is restored afterwards, also when `f` panics).
pub fn with<R>(q: &Arc<FakeQuant>, f: impl FnOnce() -> R) -> R {
    with_sites(q, f).0
}

/// [`with`], also returning how many sites `f` went through: none means the network is not
/// built from the toolkit's layers and nothing was quantized.
pub fn with_sites<R>(q: &Arc<FakeQuant>, f: impl FnOnce() -> R) -> (R, Sites) {
    let (r, mine) = crate::scope::scoped(&SCOPE, (q.clone(), Sites::default()), f);
    (r, mine.map(|(_, s)| s).unwrap_or_default())
}

/// The scope's quantizers and the bits of layer `prefix`, counting one weight site for `w`.
fn current_weight_site(w: &Tensor, prefix: &str) -> Option<(Arc<FakeQuant>, u32)> {
    SCOPE.with(|s| {
        s.borrow_mut().as_mut().map(|(q, sites)| {
            let bits = q.overrides.weights.get(prefix).copied().unwrap_or(q.wbits);
            sites.weights += 1;
            sites.weight_ids.insert(w.id());
            sites.weight_bits.push((prefix.to_string(), bits));
            (q.clone(), bits)
        })
    })
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("fake-quant range lock poisoned".into())
}

/// The weight layer `prefix` computes with: itself outside a scope, its per-output-channel fake
/// quantization inside one.
pub(crate) fn weight(w: &Tensor, prefix: &str) -> Result<Tensor> {
    match current_weight_site(w, prefix) {
        None => Ok(w.clone()),
        Some((_, bits)) => {
            let (lo, hi) = per_channel_minmax(w).map_err(candle_core::Error::wrap)?;
            asym_fake_quant(w, &lo, &hi, bits).map_err(candle_core::Error::wrap)
        }
    }
}

/// A ReLU / ReLU6 output: itself outside a scope, quantized per tensor by the next site's range
/// inside one (the range moves first while running).
pub(crate) fn activation(x: &Tensor) -> Result<Tensor> {
    let Some((q, site, bits)) = SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        s.as_mut().map(|(q, sites)| {
            let site = sites.activations;
            let bits = q.overrides.activations.get(&site).copied().unwrap_or(q.abits);
            sites.activations += 1;
            sites.activation_bits.push(bits);
            (q.clone(), site, bits)
        })
    }) else {
        return Ok(x.clone());
    };
    let (lo, hi) = {
        let mut ranges = q.ranges.lock().map_err(poisoned)?;
        while ranges.len() <= site {
            ranges.push(RunningRange::new(0.9, q.rule));
        }
        let r = &mut ranges[site];
        if r.running {
            let d = x.detach();
            let mn = d.min_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            let mx = d.max_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            r.update(mn, mx);
        }
        r.range()
    };
    let dev = x.device();
    let lo_t = Tensor::new(lo as f32, dev)?.to_dtype(x.dtype())?;
    let hi_t = Tensor::new(hi.max(lo) as f32, dev)?.to_dtype(x.dtype())?;
    asym_fake_quant(x, &lo_t, &hi_t, bits).map_err(candle_core::Error::wrap)
}

/// A model whose every forward runs under its [`FakeQuant`] scope: the quantized student of a
/// full-precision model (same variables, so weights load and train unchanged).
pub struct Quantized<M> {
    /// The full-precision model.
    pub inner: M,
    /// Its quantizers.
    pub quant: Arc<FakeQuant>,
}

impl<M> Quantized<M> {
    /// Wraps `inner`, quantized at `(wbits, abits)` with ranges averaged by `rule`.
    pub fn new(inner: M, wbits: u32, abits: u32, rule: RangeRule) -> Result<Self> {
        Ok(Self { inner, quant: FakeQuant::new(wbits, abits, rule)? })
    }
}

impl<M> std::fmt::Debug for Quantized<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantized").field("quant", &self.quant).finish()
    }
}

impl<M: crate::Model> crate::Model for Quantized<M> {
    fn varmap(&self) -> &candle_nn::VarMap {
        self.inner.varmap()
    }
    fn device(&self) -> &candle_core::Device {
        self.inner.device()
    }
    /// The inner forward under the quantizers; an error if it went through no quantization
    /// site (a network not built from the toolkit's `Conv2d`, `Linear` and `Activation` would
    /// otherwise run silently in full precision).
    fn forward_t(&self, x: &Tensor, train: bool) -> crate::error::Result<Tensor> {
        let (y, sites) = with_sites(&self.quant, || self.inner.forward_t(x, train));
        let y = y?;
        if sites == Sites::default() {
            return Err(crate::error::config_err(format!(
                "no quantization site was seen in the forward of {}: fake quantization acts on \
                 compress_nn::layers::{{Conv2d, Linear, Activation}}; build the network from them",
                std::any::type_name::<M>()
            )));
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, Conv2d, ConvSpec, Linear};
    use candle_core::{DType, Device, Module, Var};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn layers_quantize_inside_a_scope_only() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = Conv2d::new(2, 4, ConvSpec::same(3), vb.pp("c")).unwrap();
        let fc = Linear::new(4, 3, true, vb.pp("fc")).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 2, 5, 5), &dev).unwrap()).unwrap();
        let net = |x: &Tensor| -> Tensor {
            let h = Activation::Relu.apply(&conv.forward(x).unwrap()).unwrap();
            let h = Activation::Relu6.apply(&h).unwrap();
            fc.forward(&h.mean((2, 3)).unwrap()).unwrap()
        };
        let fp = net(x.as_tensor());
        let q = FakeQuant::new(2, 2, RangeRule::BiasCorrected).unwrap();
        let yq = with(&q, || net(x.as_tensor()));
        assert!((&fp - &yq).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-4);
        // Two activation sites, each a 2-bit grid: at most 4 distinct values per site.
        let ranges = q.snapshot().unwrap();
        assert_eq!(ranges.len(), 2);
        let levels = with(&q, || {
            let h = Activation::Relu.apply(&conv.forward(x.as_tensor()).unwrap()).unwrap();
            let mut v: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
            v.sort_by(f32::total_cmp);
            v.dedup();
            v.len()
        });
        assert!(levels <= 4, "{levels}");
        // Frozen ranges do not move; outside the scope the network is full precision again.
        q.set_running(false).unwrap();
        let before = q.snapshot().unwrap();
        with(&q, || net(&(x.as_tensor() * 10.0).unwrap()));
        assert_eq!(q.snapshot().unwrap()[..2], before[..2]);
        assert_eq!(
            (net(x.as_tensor()) - &fp).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(),
            0.0
        );
        // Straight-through: the quantized network trains every weight and passes gradients to x.
        let g = with(&q, || net(x.as_tensor())).sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        for (name, v) in vm.data().lock().unwrap().iter() {
            assert!(g.get(v.as_tensor()).is_some(), "{name}");
        }
        assert!(FakeQuant::new(0, 4, RangeRule::Legacy).is_err());
    }

    #[test]
    fn overridden_sites_use_their_own_bits() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = Conv2d::new(2, 4, ConvSpec::same(3), vb.pp("c")).unwrap();
        let fc = Linear::new(4, 3, true, vb.pp("fc")).unwrap();
        let x = Tensor::arange(0f32, 100.0, &dev).unwrap().reshape((2, 2, 5, 5)).unwrap().sin().unwrap();
        let overrides = BitOverrides { weights: [("fc".to_string(), 8)].into(), activations: [(1, 8)].into() };
        let q = FakeQuant::with_overrides(2, 2, overrides, RangeRule::BiasCorrected).unwrap();
        let ((levels_a0, levels_a1), sites) = with_sites(&q, || {
            let a0 = Activation::Relu.apply(&conv.forward(&x).unwrap()).unwrap();
            let a1 = Activation::Relu.apply(&(conv.forward(&x).unwrap() * 0.5).unwrap()).unwrap();
            fc.forward(&a1.mean((2, 3)).unwrap()).unwrap();
            let count = |t: &Tensor| {
                let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.sort_by(f32::total_cmp);
                v.dedup();
                v.len()
            };
            (count(&a0), count(&a1))
        });
        assert_eq!(
            sites.weight_bits,
            [("c".to_string(), 2), ("c".to_string(), 2), ("fc".to_string(), 8)],
            "every call"
        );
        assert_eq!(sites.activation_bits, [2, 8]);
        assert!(levels_a0 <= 4 && levels_a1 > 4, "{levels_a0} / {levels_a1}");
        let wrong = BitOverrides { weights: [("fc".to_string(), 0)].into(), ..Default::default() };
        assert!(FakeQuant::with_overrides(4, 4, wrong, RangeRule::Plain).is_err());
    }

    /// A network of candle's own layers: nothing would be quantized, so the student refuses it.
    struct PlainCandle {
        vm: VarMap,
        fc: candle_nn::Linear,
    }

    impl crate::Model for PlainCandle {
        fn varmap(&self) -> &VarMap {
            &self.vm
        }
        fn device(&self) -> &candle_core::Device {
            &Device::Cpu
        }
        fn forward_t(&self, x: &Tensor, _train: bool) -> crate::error::Result<Tensor> {
            Ok(self.fc.forward(x)?.relu()?)
        }
    }

    #[test]
    fn a_network_without_quantization_sites_is_refused_by_name() {
        use crate::Model;
        let vm = VarMap::new();
        let fc = candle_nn::linear(4, 3, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp("fc")).unwrap();
        let q = Quantized::new(PlainCandle { vm, fc }, 4, 4, RangeRule::Legacy).unwrap();
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let e = q.forward_t(&x, false).expect_err("nothing quantized");
        assert!(e.to_string().contains("no quantization site") && e.to_string().contains("PlainCandle"), "{e}");
        // The toolkit's layers are seen, and counted.
        let vm = VarMap::new();
        let fc = Linear::new(4, 3, true, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp("fc")).unwrap();
        let fq = FakeQuant::new(4, 4, RangeRule::Legacy).unwrap();
        let (y, sites) = with_sites(&fq, || Activation::Relu.apply(&fc.forward(&x).unwrap()).unwrap());
        let id = fc.weight().id();
        let expect = Sites {
            activations: 1,
            weights: 1,
            weight_ids: [id].into(),
            weight_bits: vec![("fc".to_string(), 4)],
            activation_bits: vec![4],
        };
        assert_eq!(sites, expect);
        assert_eq!(y.dims(), &[2, 3]);
    }
}
