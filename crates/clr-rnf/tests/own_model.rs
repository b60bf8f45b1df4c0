//! CLR-RNF on a user's network with a residual block and a hidden linear layer: a group produced
//! by two convolutions is one candidate (scored and compared over both), the narrow network
//! computes what the masked wide one computes when everything is copied, and the official
//! inheritance re-initialises the linear layer that reads a pruned group.
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use clr_rnf::{ClrCandidates, ClrRnfSettings, Factor, InheritPolicy, Selection, prune};
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{Architecture, Network};

/// A residual stem, then a hidden linear layer on the flattened map.
#[derive(Debug)]
struct Res {
    convs: [ConvBn; 3],
    hidden: Linear,
    fc: Linear,
}

impl Architecture for Res {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (s, a, h) = (cfg.width("stem")?, cfg.width("a")?, cfg.width("hidden")?);
        let c =
            |i, o, n: &str| ConvBn::new(i, o, ConvSpec::same(3), Activation::Relu, vb.pp(n), vb.pp(format!("{n}_bn")));
        Ok(Self {
            convs: [c(1, s, "stem")?, c(s, a, "a")?, c(a, s, "b")?],
            hidden: Linear::new(s * 36, h, true, vb.pp("hidden"))?,
            fc: Linear::new(h, 4, true, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for Res {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let [stem, a, b] = &self.convs;
        let x = stem.forward_t(x, train)?;
        let x = b.forward_residual(&a.forward_t(&x, train)?, &x, Activation::Relu, train)?;
        let h = candle_core::Module::forward(&self.hidden, &x.flatten_from(1)?)?.relu()?;
        candle_core::Module::forward(&self.fc, &h)
    }
}

fn config() -> StackConfig {
    Stack::new([1, 6, 6])
        .conv("stem", 8)
        .norm("stem_bn")
        .residual(|b| b.conv("a", 12).norm("a_bn").conv_into("b").norm("b_bn"))
        .flatten(36)
        .linear("hidden", 10)
        .bias()
        .output("fc", 4)
        .bias()
        .build()
        .unwrap()
}

#[test]
fn residual_groups_are_one_candidate_and_copy_all_equals_masking() {
    let cfg = config();
    let c = cfg.candidates().unwrap();
    assert_eq!(c.len(), 3, "stem (with b), a, and the hidden linear layer");
    assert_eq!(c[2].scored, ["hidden.weight"]);
    assert_eq!(c[0].group, "stem");
    assert_eq!(c[0].scored, ["stem.weight", "b.weight"], "both producers of the stem's channels");
    assert_eq!(c[0].factor, Factor::Measured(vec!["stem".into(), "b".into()]));
    let net = Network::<Res>::new(cfg, 1, &Device::Cpu).unwrap();
    let x = Tensor::arange(0f32, 72.0, &Device::Cpu).unwrap().reshape((2, 1, 6, 6)).unwrap().cos().unwrap();
    for _ in 0..2 {
        net.forward_t(&x, true).unwrap(); // running statistics that are not the defaults
    }
    for selection in [Selection::Rnf, Selection::L1, Selection::Random] {
        let s = ClrRnfSettings { selection, inherit: InheritPolicy::CopyAll, ..ClrRnfSettings::new(0.5, 0.5) };
        let p = prune(&net, &s, 3).unwrap();
        assert!(p.plan.widths["stem"] < 8 || p.plan.widths["a"] < 12 || p.plan.widths["hidden"] < 10);
        let masked = net.masked(&p.selected.kept).unwrap();
        let d = (p.network.forward_t(&x, false).unwrap() - masked.forward_t(&x, false).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{selection:?}: pruned and masked differ by {d}");
    }
}

#[test]
fn official_inheritance_resets_the_linear_reader_of_a_candidate() {
    let net = Network::<Res>::new(config(), 2, &Device::Cpu).unwrap();
    let p = prune(&net, &ClrRnfSettings::new(0.5, 0.5), 0).unwrap();
    let t = p.network.tensors().unwrap();
    // `fc` reads the candidate "hidden": fresh N(0, 0.01^2) weights and a zero bias.
    let w = t["fc.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!(rms < 0.03 && rms > 0.0, "{rms}");
    assert!(t["fc.bias"].to_vec1::<f32>().unwrap().iter().all(|&b| b == 0.0));
    assert!(t["hidden.bias"].to_vec1::<f32>().unwrap().iter().all(|&b| b == 0.0), "a candidate's bias is zeroed");
    assert!(t["b_bn.weight"].to_vec1::<f32>().unwrap().iter().all(|&g| g == 1.0));
}
