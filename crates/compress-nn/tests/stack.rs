//! A user's own network declared through a `Stack`: the declaration is checked against the built
//! tensors (errors name the entry), and masked equals pruned through its residual block and its
//! flatten.

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarBuilder;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear};
use compress_nn::stack::{Stack, StackConfig};
use compress_nn::{ArchConfig, Architecture, Network};

/// conv -> residual (conv, conv + x) -> flatten -> linear -> output, with the toolkit's layers.
#[derive(Debug)]
struct Net {
    stem: ConvBn,
    r1: ConvBn,
    r2: ConvBn,
    hidden: Linear,
    out: Linear,
}

impl Architecture for Net {
    type Config = StackConfig;
    fn build(cfg: &StackConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (s, r, h) = (cfg.width("stem")?, cfg.width("r1")?, cfg.width("hidden")?);
        let cb = |cin, cout, name: &str, bn: &str| {
            ConvBn::new(cin, cout, ConvSpec::same(3), Activation::Relu, vb.pp(name), vb.pp(bn))
        };
        Ok(Self {
            stem: cb(1, s, "stem", "stem_bn")?,
            r1: cb(s, r, "r1", "r1_bn")?,
            r2: cb(r, s, "r2", "r2_bn")?,
            hidden: Linear::new(s * 16, h, true, vb.pp("hidden"))?,
            out: Linear::new(h, cfg.width("out")?, true, vb.pp("out"))?,
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.stem.forward_t(x, train)?;
        let y = self.r1.forward_t(&x, train)?;
        let x = self.r2.forward_residual(&y, &x, Activation::Relu, train)?;
        let x = candle_core::Module::forward(&self.hidden, &x.flatten_from(1)?)?.relu()?;
        candle_core::Module::forward(&self.out, &x)
    }
}

fn declared(stem_bn: &str, hidden_bias: bool) -> StackConfig {
    let s = Stack::new([1, 4, 4])
        .conv("stem", 6)
        .norm(stem_bn)
        .residual(|b| b.conv("r1", 5).norm("r1_bn").conv_into("r2").norm("r2_bn"))
        .flatten(16)
        .linear("hidden", 7);
    let s = if hidden_bias { s.bias() } else { s };
    s.output("out", 3).bias().build().expect("a valid stack")
}

fn input() -> Tensor {
    let v: Vec<f32> = (0..2 * 16).map(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0).collect();
    Tensor::from_vec(v, (2, 1, 4, 4), &Device::Cpu).expect("x")
}

#[test]
fn masked_equals_pruned_through_the_residual_and_the_flatten() {
    let net = Network::<Net>::new(declared("stem_bn", true), 3, &Device::Cpu).expect("build");
    // Give the norms non-trivial statistics so that a wrong slice shows.
    for (k, v) in net.varmap.data().lock().expect("lock").iter() {
        if k.ends_with("running_var") || k.ends_with("running_mean") {
            let n = v.dims()[0];
            let t: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / 7.0).collect();
            v.set(&Tensor::from_vec(t, n, &Device::Cpu).expect("t")).expect("set");
        }
    }
    for seed in 0..4 {
        let d = net.check_surgery(&input(), seed).expect("surgery");
        assert!(d < 1e-5, "seed {seed}: masked vs pruned differ by {d}");
    }
    let pruned = net.prune(&[("stem".to_string(), vec![0, 2, 5])].into()).expect("prune");
    assert_eq!(pruned.config.width("stem").expect("w"), 3);
    assert_eq!(pruned.tensors().expect("t")["hidden.weight"].dims(), [7, 3 * 16]);
    assert_eq!(pruned.tensors().expect("t")["r2.weight"].dims(), [3, 5, 3, 3]);
}

#[test]
fn a_wrong_declaration_names_its_entry() {
    let err = Network::<Net>::new(declared("stem_norm", true), 0, &Device::Cpu).expect_err("typo").to_string();
    assert!(
        err.contains("channel group \"stem\", member \"stem_norm.weight\"") && err.contains("no such tensor"),
        "{err}"
    );
    let err = Network::<Net>::new(declared("stem_bn", false), 0, &Device::Cpu).expect_err("bias").to_string();
    assert!(err.contains("hidden.bias exists but is not declared"), "{err}");
    // A width that disagrees with the built tensor.
    let cfg = declared("stem_bn", true);
    let mut groups = cfg.groups();
    groups[1].width = 4;
    let net = Network::<Net>::new(cfg, 0, &Device::Cpu).expect("build");
    let shapes = net.tensors().expect("t").into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
    let err = compress_nn::structure::check_groups(&groups, &shapes).expect_err("width");
    assert!(err.contains("channel group \"r1\", member \"r1.weight\" axis 0: 4 channels"), "{err}");
}

#[test]
fn a_missed_residual_join_is_caught_by_check_surgery() {
    // r2 declared as a plain layer: the shapes agree, the function does not.
    let cfg = Stack::new([1, 4, 4])
        .conv("stem", 6)
        .norm("stem_bn")
        .conv("r1", 5)
        .norm("r1_bn")
        .conv("r2", 6)
        .norm("r2_bn")
        .flatten(16)
        .linear("hidden", 7)
        .bias()
        .output("out", 3)
        .bias()
        .build()
        .expect("stack");
    let net = Network::<Net>::new(cfg, 1, &Device::Cpu).expect("shapes agree");
    // Either the halves kept differ and the residual sum no longer lines up, or it runs and
    // computes another function.
    match net.check_surgery(&input(), 0) {
        Ok(d) => assert!(d > 1e-2, "a missed join must show: {d}"),
        Err(e) => assert!(e.to_string().contains("shape"), "{e}"),
    }
}
