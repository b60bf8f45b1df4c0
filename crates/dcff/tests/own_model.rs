//! DCFF's entry point on a user's own network (declared with a `Stack`, with a residual block):
//! buffers stay out of the trainable list, and the extracted compact network computes the fused
//! network's function at a soft `Phi` (T = 1), where extraction is more than a row pick.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, global_avg_pool};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{ArchConfig, Architecture, is_buffer};
use dcff::{Dcff, DcffSettings};

#[derive(Debug)]
struct Net {
    stem: ConvBn,
    a: ConvBn,
    b: ConvBn,
    fc: Linear,
}

impl Architecture for Net {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (s, a) = (cfg.width("stem")?, cfg.width("a")?);
        let conv = |cin, cout, n: &str| {
            ConvBn::new(cin, cout, ConvSpec::same(3).with_bias(), Activation::Relu, vb.pp(n), vb.pp(format!("{n}_bn")))
        };
        Ok(Self {
            stem: conv(1, s, "stem")?,
            a: conv(s, a, "a")?,
            b: conv(a, s, "b")?,
            fc: Linear::new(s, 3, true, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.stem.forward_t(x, train)?;
        let y = self.a.forward_t(&x, train)?;
        let x = self.b.forward_residual(&y, &x, Activation::Relu, train)?;
        candle_core::Module::forward(&self.fc, &global_avg_pool(&x)?)
    }
}

fn config() -> StackConfig {
    Stack::new([1, 6, 6])
        .conv("stem", 8)
        .bias()
        .norm("stem_bn")
        .residual(|b| b.conv("a", 6).bias().norm("a_bn").conv_into("b").bias().norm("b_bn"))
        .output("fc", 3)
        .bias()
        .build()
        .expect("stack")
}

#[test]
fn buffers_are_not_trainable_and_the_compact_network_is_the_fused_one_at_a_soft_phi() {
    let cfg = config();
    let settings = DcffSettings::uniform(&cfg, 0.5, 4);
    assert_eq!(settings.rates.len(), 3, "stem, a, b");
    let dcff = Dcff::<Net>::new(cfg, &settings, 7, &Device::Cpu).expect("dcff");
    let trainable = dcff.trainable_vars().expect("vars");
    let all = dcff.varmap().all_vars();
    let buffers = dcff.varmap().data().lock().expect("lock").keys().filter(|k| is_buffer(k)).count();
    assert_eq!(trainable.len() + buffers, all.len());
    assert!(buffers >= 3 * 2 + 1 + 3 * 2, "Phi and scores per layer, the epoch, BN statistics");
    for v in &trainable {
        let name = dcff
            .varmap()
            .data()
            .lock()
            .expect("lock")
            .iter()
            .find(|(_, w)| w.as_tensor().id() == v.as_tensor().id())
            .map(|(k, _)| k.clone());
        assert!(name.as_deref().is_some_and(|n| !is_buffer(n)), "{name:?}");
    }
    let refresh = dcff.begin_epoch(0).expect("refresh at T = 1");
    assert_eq!(refresh.temperature, 1.0);
    let phi = dcff.varmap().data().lock().expect("lock")["stem.buffer_phi"].as_tensor().copy().expect("phi");
    let max: f32 = phi.max_all().expect("max").to_scalar().expect("s");
    assert!(max < 0.999, "Phi at T = 1 is soft (largest entry {max})");
    let x: Vec<f32> = (0..4 * 36).map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0).collect();
    let x = Tensor::from_vec(x, (4, 1, 6, 6), &Device::Cpu).expect("x");
    let fused = dcff.forward_t(&x, false).expect("fused");
    let compact = dcff.extract().expect("extract");
    assert_eq!(compact.config.widths()["stem"], 4);
    assert_eq!(compact.config.widths()["a"], 3);
    let y = compact.forward_t(&x, false).expect("compact");
    let d: f32 = (&fused - &y)
        .expect("d")
        .abs()
        .expect("a")
        .max_all()
        .expect("m")
        .to_dtype(DType::F32)
        .expect("t")
        .to_scalar()
        .expect("s");
    assert!(d < 1e-5, "compact vs fused: {d}");
}
