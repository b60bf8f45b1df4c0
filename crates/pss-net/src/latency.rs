//! Latency as a resource (spec 2.2): a lookup table of per-block times, keyed by (block type,
//! input side, `c_in`, `c_out`, `c_mid`, kernel, stride, padding), measured on **this** machine
//! with the toolkit's own CPU kernels (the official pickles were timed on unknown hardware). A
//! subnet's latency is the sum of its blocks' entries: the stem conv, each MobileNetV1 separable
//! block (depthwise + pointwise) or MobileNetV2 inverted residual (expansion, depthwise,
//! projection, the residual add), MobileNetV2's head conv, and the pooled classifier (BatchNorm
//! and activations included). [`LatencyBlocks`] lists an architecture's blocks.
//! Stored as JSON; [`LatencyTable::predict`] is checked against whole-subnet measurements by the
//! reproduction.

use crate::error::{Result, config_err};
use crate::flops::{SlimMobileNetV1, SlimMobileNetV2};
use crate::space::{SubnetConfig, make_divisible};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_core::timing::median_seconds;
use compress_nn::layers::{Activation, ConvBn, ConvSpec, Linear, WeightInit, global_avg_pool};
use std::collections::{BTreeMap, BTreeSet};

/// One block of a subnet, as the table keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct BlockKey {
    /// 0: the stem conv; 1: a separable block; 2: global pooling + the classifier; 3: an inverted
    /// residual (`c_mid` its hidden width, no expansion when `c_mid == c_in` in the first
    /// block); 4: a 1x1 conv + BatchNorm + ReLU6 (MobileNetV2's head).
    pub kind: u8,
    /// Input side.
    pub input: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Middle channels (a separable block's depthwise width = `c_in`; 0 elsewhere).
    pub c_mid: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
}

impl BlockKey {
    fn text(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}-{}-{}-{}",
            self.kind, self.input, self.c_in, self.c_out, self.c_mid, self.kernel, self.stride, self.padding
        )
    }
}

/// The pooled classifier's key on an `h x h x c_in` input.
fn classifier_key(h: usize, c_in: usize, classes: usize) -> BlockKey {
    BlockKey { kind: 2, input: h, c_in, c_out: classes, c_mid: 0, kernel: 1, stride: 1, padding: 0 }
}

/// Output side of a 3x3 conv with padding 1.
fn out_side(h: usize, stride: usize) -> usize {
    (h + 2 - 3) / stride + 1
}

/// An architecture whose subnets the latency table can price.
pub trait LatencyBlocks {
    /// The blocks of `cfg`, in forward order.
    fn blocks(&self, cfg: &SubnetConfig) -> Vec<BlockKey>;
    /// Every block key any subnet can have.
    fn all_blocks(&self) -> Vec<BlockKey>;
}

impl LatencyBlocks for SlimMobileNetV1 {
    fn blocks(&self, cfg: &SubnetConfig) -> Vec<BlockKey> {
        blocks(self, cfg)
    }
    fn all_blocks(&self) -> Vec<BlockKey> {
        all_blocks(self)
    }
}

/// MobileNetV2's stages `(t, n, s)`.
const V2: [(usize, usize, usize); 7] = [(1, 1, 1), (6, 2, 2), (6, 3, 2), (6, 4, 2), (6, 3, 1), (6, 3, 2), (6, 1, 1)];

/// The blocks of a MobileNetV2 subnet with channels `c` at resolution `r` (the head keyed by its
/// real 1280 outputs: the official tables' lookup by `m_9` is not reproduced).
fn v2_blocks(arch: &SlimMobileNetV2, r: usize, c: &[usize]) -> Vec<BlockKey> {
    let mut h = r;
    let mut out =
        vec![BlockKey { kind: 0, input: h, c_in: 3, c_out: c[0], c_mid: 0, kernel: 3, stride: 2, padding: 1 }];
    h = out_side(h, 2);
    let mut c_in = c[0];
    for (k, &(t, n, st)) in V2.iter().enumerate() {
        for b in 0..n {
            let stride = if b == 0 { st } else { 1 };
            let mid = if t == 1 { c_in } else { make_divisible((t * c_in) as f64, arch.space.divisor) };
            out.push(BlockKey { kind: 3, input: h, c_in, c_out: c[k + 1], c_mid: mid, kernel: 3, stride, padding: 1 });
            h = out_side(h, stride);
            c_in = c[k + 1];
        }
    }
    out.push(BlockKey { kind: 4, input: h, c_in, c_out: 1280, c_mid: 0, kernel: 1, stride: 1, padding: 0 });
    out.push(classifier_key(h, 1280, arch.classes));
    out
}

impl LatencyBlocks for SlimMobileNetV2 {
    fn blocks(&self, cfg: &SubnetConfig) -> Vec<BlockKey> {
        v2_blocks(self, cfg.resolution, &self.space.channels(cfg))
    }
    /// Every resolution with every stage's width options (a block's key depends on its own input
    /// and output widths only).
    fn all_blocks(&self) -> Vec<BlockKey> {
        let options = self.space.width_options();
        let mut keys = BTreeSet::new();
        for r in self.space.resolution_grid() {
            // Every (input width, output width) pair a block can see: vary one stage pair at a
            // time over a base of all-largest widths.
            for i in 0..options.len() - 1 {
                for &a in &options[i] {
                    for &b in &options[i + 1] {
                        let mut c: Vec<usize> = options.iter().map(|o| o[o.len() - 1]).collect();
                        c[i] = a;
                        c[i + 1] = b;
                        keys.extend(v2_blocks(self, r, &c));
                    }
                }
            }
        }
        keys.into_iter().collect()
    }
}

/// The blocks of `cfg` on `arch`, in forward order.
pub fn blocks(arch: &SlimMobileNetV1, cfg: &SubnetConfig) -> Vec<BlockKey> {
    let c = arch.space.channels(cfg);
    let mut h = cfg.resolution;
    let mut out = vec![BlockKey {
        kind: 0,
        input: h,
        c_in: arch.in_channels,
        c_out: c[0],
        c_mid: 0,
        kernel: 3,
        stride: 2,
        padding: 1,
    }];
    h = out_side(h, 2);
    for (i, &s) in arch.strides.iter().enumerate() {
        out.push(BlockKey {
            kind: 1,
            input: h,
            c_in: c[i],
            c_out: c[i + 1],
            c_mid: c[i],
            kernel: 3,
            stride: s,
            padding: 1,
        });
        h = out_side(h, s);
    }
    let last = c[arch.strides.len()];
    out.push(classifier_key(h, last, arch.classes));
    out
}

/// Every block key any subnet of `arch`'s space can have.
pub fn all_blocks(arch: &SlimMobileNetV1) -> Vec<BlockKey> {
    let options = arch.space.width_options();
    let mut keys = BTreeSet::new();
    for r in arch.space.resolution_grid() {
        for &c0 in &options[0] {
            keys.insert(BlockKey {
                kind: 0,
                input: r,
                c_in: arch.in_channels,
                c_out: c0,
                c_mid: 0,
                kernel: 3,
                stride: 2,
                padding: 1,
            });
        }
        let mut h = out_side(r, 2);
        for (i, &s) in arch.strides.iter().enumerate() {
            for &ci in &options[i] {
                for &co in &options[i + 1] {
                    keys.insert(BlockKey {
                        kind: 1,
                        input: h,
                        c_in: ci,
                        c_out: co,
                        c_mid: ci,
                        kernel: 3,
                        stride: s,
                        padding: 1,
                    });
                }
            }
            h = out_side(h, s);
        }
        for &cl in &options[arch.strides.len()] {
            keys.insert(classifier_key(h, cl, arch.classes));
        }
    }
    keys.into_iter().collect()
}

/// Runs `f` on a rayon pool of `threads` threads (the toolkit's kernels and candle's matmul run
/// on the current pool): latencies are measured, and must be used, at one thread count. At batch
/// 1 on the mini's network one thread is faster than two (the hand-offs cost more than the work).
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build().map_err(|e| config_err(e.to_string()))?;
    Ok(pool.install(f))
}

/// Microseconds per block at a batch size and thread count, measured here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyTable {
    /// Batch size of the measurements.
    pub batch: usize,
    /// Threads of the measurements (see [`on_threads`]).
    pub threads: usize,
    /// Microseconds by key (`kind-input-c_in-c_out-c_mid-kernel-stride-padding`).
    pub entries: BTreeMap<String, f64>,
}

/// Median microseconds of one block (random weights, eval mode) on `batch` inputs.
fn time_block(k: &BlockKey, batch: usize, seconds: f64) -> Result<f64> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let spec = |kernel: usize, stride: usize, groups: usize| {
        ConvSpec::same(kernel).stride(stride).groups(groups).init(WeightInit::KaimingFanOut)
    };
    let x = Tensor::randn(0f32, 1.0, (batch, k.c_in, k.input, k.input), &dev)?;
    let us = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<f64> {
        Ok(1e6 * median_seconds(2, 10, seconds, || f().map(|_| ()))?)
    };
    match k.kind {
        0 => {
            let l = ConvBn::new(k.c_in, k.c_out, spec(3, k.stride, 1), Activation::Relu, vb.pp("c"), vb.pp("b"))?;
            us(&|| l.forward_t(&x, false))
        }
        1 => {
            let dw =
                ConvBn::new(k.c_in, k.c_in, spec(3, k.stride, k.c_in), Activation::Relu, vb.pp("dc"), vb.pp("db"))?;
            let pw = ConvBn::new(k.c_in, k.c_out, spec(1, 1, 1), Activation::Relu, vb.pp("pc"), vb.pp("pb"))?;
            us(&|| pw.forward_t(&dw.forward_t(&x, false)?, false))
        }
        2 => {
            let fc = Linear::new(k.c_in, k.c_out, true, vb.pp("fc"))?;
            us(&|| fc.forward(&global_avg_pool(&x)?))
        }
        3 => {
            let expand = (k.c_mid != k.c_in)
                .then(|| ConvBn::new(k.c_in, k.c_mid, spec(1, 1, 1), Activation::Relu6, vb.pp("ec"), vb.pp("eb")))
                .transpose()?;
            let dw =
                ConvBn::new(k.c_mid, k.c_mid, spec(3, k.stride, k.c_mid), Activation::Relu6, vb.pp("dc"), vb.pp("db"))?;
            let pw = ConvBn::new(k.c_mid, k.c_out, spec(1, 1, 1), Activation::None, vb.pp("pc"), vb.pp("pb"))?;
            let residual = k.stride == 1 && k.c_in == k.c_out;
            us(&|| {
                let h = match &expand {
                    Some(e) => e.forward_t(&x, false)?,
                    None => x.clone(),
                };
                let y = pw.forward_t(&dw.forward_t(&h, false)?, false)?;
                if residual { y + &x } else { Ok(y) }
            })
        }
        4 => {
            let l = ConvBn::new(k.c_in, k.c_out, spec(1, 1, 1), Activation::Relu6, vb.pp("c"), vb.pp("b"))?;
            us(&|| l.forward_t(&x, false))
        }
        other => Err(config_err(format!("unknown block kind {other}"))),
    }
}

impl LatencyTable {
    /// An empty table for `batch` on `threads` threads.
    pub fn new(batch: usize, threads: usize) -> Self {
        Self { batch, threads, entries: BTreeMap::new() }
    }

    /// Measures every key not yet in the table (`seconds`: least time per median), on the
    /// table's thread count.
    pub fn measure(&mut self, keys: &[BlockKey], seconds: f64) -> Result<()> {
        let (batch, threads) = (self.batch, self.threads);
        let todo: Vec<BlockKey> = keys.iter().filter(|k| !self.entries.contains_key(&k.text())).copied().collect();
        let measured = on_threads(threads, || -> Vec<std::result::Result<(String, f64), String>> {
            todo.iter()
                .map(|k| time_block(k, batch, seconds).map(|t| (k.text(), t)).map_err(|e| e.to_string()))
                .collect()
        })?;
        for m in measured {
            let (k, t) = m.map_err(config_err)?;
            self.entries.insert(k, t);
        }
        Ok(())
    }

    /// The predicted latency (microseconds) of `cfg`: the sum of its blocks' entries.
    pub fn predict(&self, arch: &impl LatencyBlocks, cfg: &SubnetConfig) -> Result<f64> {
        arch.blocks(cfg)
            .iter()
            .map(|k| {
                self.entries.get(&k.text()).copied().ok_or_else(|| config_err(format!("no latency entry {}", k.text())))
            })
            .sum()
    }

    /// The table as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| config_err(e.to_string()))
    }

    /// A table read from JSON (checked: every entry finite and positive).
    pub fn from_json(text: &str) -> Result<Self> {
        let t: Self = serde_json::from_str(text).map_err(|e| config_err(format!("latency table: {e}")))?;
        if let Some((k, v)) = t.entries.iter().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            return Err(config_err(format!("latency table: entry {k} is {v}")));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_subnets_blocks_follow_its_widths_and_sides() {
        let arch = SlimMobileNetV1::tiny();
        let cfg = SubnetConfig::new(20, &[0.6, 0.8, 0.55, 1.0, 0.75]);
        let b = blocks(&arch, &cfg);
        let got: Vec<(u8, usize, usize, usize, usize)> =
            b.iter().map(|k| (k.kind, k.input, k.c_in, k.c_out, k.stride)).collect();
        assert_eq!(
            got,
            [
                (0, 20, 1, 12, 2),
                (1, 10, 12, 24, 1),
                (1, 10, 24, 36, 2),
                (1, 5, 36, 64, 1),
                (1, 5, 64, 96, 2),
                (2, 3, 96, 10, 1)
            ]
        );
        let all = all_blocks(&arch);
        assert!(b.iter().all(|k| all.contains(k)), "every subnet's blocks are in the full key set");
        // Stems: 4 resolutions x {8, 12, 16}.
        assert_eq!(all.iter().filter(|k| k.kind == 0).count(), 12);
        // A measured table predicts the sum of the entries and survives a JSON round trip.
        let mut t = LatencyTable::new(1, 1);
        t.measure(&b, 0.0).unwrap();
        let sum: f64 = b.iter().map(|k| t.entries[&k.text()]).sum();
        assert_eq!(t.predict(&arch, &cfg).unwrap(), sum);
        let back = LatencyTable::from_json(&t.to_json().unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(t.predict(&arch, &SubnetConfig::new(28, &[1.0; 5])).is_err(), "an unmeasured block is an error");
        // MobileNetV2: stem, 17 inverted residuals (the first without expansion), head, classifier.
        let v2 = SlimMobileNetV2::imagenet();
        let cfg2 = SubnetConfig::new(128, &[0.8, 0.9, 0.75, 1.0, 0.85, 0.8, 0.95, 0.77, 1.0]);
        let b2 = v2.blocks(&cfg2);
        assert_eq!(b2.len(), 1 + 17 + 2);
        assert_eq!((b2[1].kind, b2[1].c_in, b2[1].c_mid), (3, 24, 24), "no expansion in the first block");
        assert_eq!((b2[2].c_in, b2[2].c_mid, b2[2].stride), (16, 96, 2));
        let all2 = v2.all_blocks();
        assert!(b2.iter().all(|k| all2.contains(k)), "every subnet's blocks are in the key set");
        let mut t2 = LatencyTable::new(1, 1);
        t2.measure(&b2[..3], 0.0).unwrap();
        assert!(t2.entries.values().all(|v| *v > 0.0));
        let mut bad = t.clone();
        bad.entries.insert("x".into(), f64::NAN);
        assert!(LatencyTable::from_json(&bad.to_json().unwrap()).is_err());
    }
}
