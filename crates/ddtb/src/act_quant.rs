//! The dual-bound activation quantizer (spec 2.1, 2.5, 2.7): trainable bounds `l < u`, the
//! zero-anchored affine grid, and in the dynamic layers per-sample bounds `f_u u`, `f_l l` from
//! the [`DynamicGate`]. Its phase follows the training schedule: calibration (full precision,
//! range statistics recorded), static bounds, gate warm-up (gate logits computed for the
//! regulariser but not applied), dynamic.

use crate::error::{DdtbError, Result};
use crate::gate::DynamicGate;
use crate::intensity::RangeStats;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;
use compress_core::quant::{affine_fake_quant, percentile};
use std::sync::{Mutex, OnceLock};

/// Where the quantizer is in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Full precision; `max(x)` and `min(x)` recorded per batch (spec 2.4).
    Calibrate,
    /// Static bounds (stage 1 for non-dynamic layers, and everything without a gate).
    Static,
    /// Static bounds; the gate's logits are computed and kept for `R_gate` (stage 1).
    GateWarmup,
    /// Per-sample bounds from the gate (stage 2 and inference).
    Dynamic,
}

/// How the bounds start (spec 2.5).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum BoundInit {
    /// Official: 2-bit quantizers take `u = P_M(x)`, `l = P_(100-M)(x)` of the first training
    /// batch; 3 and 4 bits keep the starting `[-10, 10]` and learn.
    PercentileIf2Bit {
        /// `M` (99 for EDSR and SRResNet, 95 for RDN).
        percentile: f64,
    },
    /// Percentile initialisation at every bit-width.
    Percentile {
        /// `M`.
        percentile: f64,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    stats: RangeStats,
    initialised: bool,
    logits: Option<Tensor>,
    channels: Option<usize>,
    clipping: Option<Clipping>,
}

/// How many of a site's inputs fell outside its bounds while counting (the effective per-sample
/// bounds `f_l l`, `f_u u` at a dynamic site): what 2-bit activations lose to clipping.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Clipping {
    /// Inputs below the lower bound.
    pub below: u64,
    /// Inputs above the upper bound.
    pub above: u64,
    /// Inputs seen.
    pub total: u64,
}

impl Clipping {
    /// The share of inputs outside the bounds (0 when none was seen).
    pub fn share(&self) -> f64 {
        if self.total == 0 { 0.0 } else { (self.below + self.above) as f64 / self.total as f64 }
    }
}

/// A DDTB activation quantizer: `lower`, `upper` are trainable (the bounds learning-rate group).
#[derive(Debug)]
pub struct DualBoundActQuant {
    /// `l`.
    pub lower: Var,
    /// `u`.
    pub upper: Var,
    /// Bits.
    pub bits: u32,
    /// Bound initialisation.
    pub init: BoundInit,
    gate: OnceLock<DynamicGate>,
    state: Mutex<State>,
}

impl DualBoundActQuant {
    /// Bounds `lower`/`upper` under `vb`, starting at `[-10, 10]`, in the calibration phase.
    pub fn new(bits: u32, init: BoundInit, vb: VarBuilder) -> Result<Self> {
        compress_core::quant::check_bits(bits)?;
        let m = match init {
            BoundInit::PercentileIf2Bit { percentile } | BoundInit::Percentile { percentile } => percentile,
        };
        if !(50.0..=100.0).contains(&m) {
            return Err(DdtbError::Config(format!("bound percentile {m} is not in [50, 100]")));
        }
        let var = |name: &str, v: f64| -> Result<Var> {
            let t = vb.get_with_hints((), name, candle_nn::Init::Const(v))?;
            Ok(Var::from_tensor(&t)?)
        };
        Ok(Self {
            lower: var("lower", -10.0)?,
            upper: var("upper", 10.0)?,
            bits,
            init,
            gate: OnceLock::new(),
            state: Mutex::new(State {
                phase: Phase::Calibrate,
                stats: RangeStats::default(),
                initialised: false,
                logits: None,
                channels: None,
                clipping: None,
            }),
        })
    }

    /// Makes the quantizer dynamic with `gate`.
    pub fn with_gate(self, gate: DynamicGate) -> Result<Self> {
        self.attach_gate(gate)?;
        Ok(self)
    }

    /// Makes the quantizer dynamic (once: the dynamic layers are selected after calibration).
    pub fn attach_gate(&self, gate: DynamicGate) -> Result<()> {
        self.gate.set(gate).map_err(|_| DdtbError::Config("the quantizer already has a gate".into()))
    }

    /// Whether it has a gate.
    pub fn is_dynamic(&self) -> bool {
        self.gate.get().is_some()
    }

    /// Marks the bounds as initialised (a resumed run restores them from its checkpoint).
    pub fn mark_initialised(&self) -> Result<()> {
        self.state()?.initialised = true;
        Ok(())
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| DdtbError::Config("quantizer state poisoned".into()))
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) -> Result<()> {
        self.state()?.phase = phase;
        Ok(())
    }

    /// The calibration statistics so far.
    pub fn stats(&self) -> Result<RangeStats> {
        Ok(self.state()?.stats.clone())
    }

    /// Channels of the input seen while calibrating (what a gate over this site reads).
    pub fn channels(&self) -> Result<Option<usize>> {
        Ok(self.state()?.channels)
    }

    /// Starts counting the inputs outside the bounds (from zero) in every later quantized pass.
    pub fn count_clipping(&self) -> Result<()> {
        self.state()?.clipping = Some(Clipping::default());
        Ok(())
    }

    /// The counts since [`Self::count_clipping`], and stops counting.
    pub fn take_clipping(&self) -> Result<Option<Clipping>> {
        Ok(self.state()?.clipping.take())
    }

    /// The gate logits of the last forward pass in `GateWarmup` or `Dynamic` (for `R_gate`).
    pub fn last_logits(&self) -> Result<Option<Tensor>> {
        Ok(self.state()?.logits.clone())
    }

    fn initialise(&self, x: &Tensor) -> Result<()> {
        let m = match self.init {
            BoundInit::PercentileIf2Bit { percentile } if self.bits == 2 => percentile,
            BoundInit::PercentileIf2Bit { .. } => return Ok(()),
            BoundInit::Percentile { percentile } => percentile,
        };
        let v: Vec<f32> = x.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let (u, l) = (percentile(&v, m)?, percentile(&v, 100.0 - m)?);
        let l = if l < u { l } else { u - 1e-3 };
        self.upper.set(&Tensor::new(u as f32, x.device())?)?;
        self.lower.set(&Tensor::new(l as f32, x.device())?)?;
        Ok(())
    }

    /// Quantizes `x` (`[N, C, H, W]`) as the current phase says.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut st = self.state()?;
        if st.phase == Phase::Calibrate {
            let d = x.detach();
            let (max, min) = (d.max_all()?.to_scalar::<f32>()?, d.min_all()?.to_scalar::<f32>()?);
            st.stats.record(f64::from(max), f64::from(min));
            st.channels = Some(x.dim(1)?);
            return Ok(x.clone());
        }
        if !st.initialised {
            self.initialise(x)?;
            st.initialised = true;
        }
        let (l, u) = (self.lower.as_tensor(), self.upper.as_tensor());
        let logits = match (self.gate.get(), st.phase) {
            (Some(g), Phase::GateWarmup | Phase::Dynamic) => Some(g.logits(x, train)?),
            _ => None,
        };
        st.logits = logits.clone();
        let (lo, hi) = match (logits, st.phase) {
            (Some(z), Phase::Dynamic) => self.gated_bounds(x, &z)?,
            _ => (l.clone(), u.clone()),
        };
        if let Some(c) = st.clipping.as_mut() {
            let count =
                |t: Tensor| -> Result<u64> { Ok(t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as u64) };
            c.below += count(x.broadcast_lt(&lo)?)?;
            c.above += count(x.broadcast_gt(&hi)?)?;
            c.total += x.elem_count() as u64;
        }
        Ok(affine_fake_quant(x, &lo, &hi, self.bits)?)
    }

    /// The dynamic phase's quantization of `x` (`[N, ...]`) under gate logits `z` (`[N, 2]`,
    /// column 0 `z_u`, column 1 `z_l`): sample `i` is quantized on `(f_l,i l, f_u,i u)` with
    /// `f = 2 sigmoid(z)` (spec 2.2).
    pub fn quantize_gated(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.gated_bounds(x, z)?;
        Ok(affine_fake_quant(x, &lo, &hi, self.bits)?)
    }

    /// The per-sample bounds `(f_l,i l, f_u,i u)` as `[N, 1, ...]` tensors (spec 2.2).
    fn gated_bounds(&self, x: &Tensor, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (l, u) = (self.lower.as_tensor(), self.upper.as_tensor());
        let (fu, fl) = DynamicGate::factors(z)?;
        let n = x.dim(0)?;
        let per_sample = |f: &Tensor, b: &Tensor| -> Result<Tensor> {
            let mut shape = vec![1usize; x.rank()];
            shape[0] = n;
            Ok(f.broadcast_mul(b)?.reshape(shape)?)
        };
        Ok((per_sample(&fl, l)?, per_sample(&fu, u)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn quantizer(bits: u32, map: &VarMap) -> DualBoundActQuant {
        let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
        DualBoundActQuant::new(bits, BoundInit::PercentileIf2Bit { percentile: 99.0 }, vb.pp("q")).unwrap()
    }

    fn batch() -> Tensor {
        let v: Vec<f32> = (0..2 * 4 * 5 * 5).map(|i| (i as f32 * 0.37).sin() * 3.0 + 0.5).collect();
        Tensor::from_vec(v, (2, 4, 5, 5), &Device::Cpu).unwrap()
    }

    #[test]
    fn calibration_is_full_precision_and_records_ranges() {
        let map = VarMap::new();
        let q = quantizer(2, &map);
        let x = batch();
        let y = q.forward_t(&x, false).unwrap();
        assert_eq!((y - &x).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let s = q.stats().unwrap();
        assert_eq!(s.maxes.len(), 1);
        assert!((s.maxes[0] - f64::from(x.max_all().unwrap().to_scalar::<f32>().unwrap())).abs() < 1e-9);
    }

    #[test]
    fn two_bit_bounds_start_at_percentiles_three_bit_at_ten() {
        let x = batch();
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let map = VarMap::new();
        let q2 = quantizer(2, &map);
        q2.set_phase(Phase::Static).unwrap();
        q2.forward_t(&x, true).unwrap();
        let u = f64::from(q2.upper.as_tensor().to_scalar::<f32>().unwrap());
        let l = f64::from(q2.lower.as_tensor().to_scalar::<f32>().unwrap());
        assert!((u - percentile(&v, 99.0).unwrap()).abs() < 1e-5);
        assert!((l - percentile(&v, 1.0).unwrap()).abs() < 1e-5, "the lower bound starts at p1: {l}");
        assert!(l < 0.0 && u > 0.0 && (u + l).abs() > 1e-3, "p1 and p99 of this batch are distinct: {l}, {u}");
        let map = VarMap::new();
        let q3 = quantizer(3, &map);
        q3.set_phase(Phase::Static).unwrap();
        q3.forward_t(&x, true).unwrap();
        assert_eq!(q3.upper.as_tensor().to_scalar::<f32>().unwrap(), 10.0);
        assert_eq!(q3.lower.as_tensor().to_scalar::<f32>().unwrap(), -10.0);
    }

    /// A constant input has equal percentiles: the lower bound starts 1e-3 below the upper.
    #[test]
    fn a_constant_input_separates_its_bounds() {
        let map = VarMap::new();
        let q = quantizer(2, &map);
        q.set_phase(Phase::Static).unwrap();
        q.forward_t(&(Tensor::ones((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap() * 0.75).unwrap(), true).unwrap();
        let (u, l) = (q.upper.as_tensor().to_scalar::<f32>().unwrap(), q.lower.as_tensor().to_scalar::<f32>().unwrap());
        assert_eq!(u, 0.75);
        assert_eq!(l, (0.75f64 - 1e-3) as f32);
    }

    /// Static until a gate is attached, dynamic after; one gate only.
    #[test]
    fn a_quantizer_is_dynamic_once_it_has_a_gate() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let q = quantizer(2, &map);
        assert!(!q.is_dynamic());
        q.attach_gate(DynamicGate::new(4, 32, false, vb.pp("g1")).unwrap()).unwrap();
        assert!(q.is_dynamic());
        assert!(q.attach_gate(DynamicGate::new(4, 32, false, vb.pp("g2")).unwrap()).is_err());
    }

    #[test]
    fn a_gate_with_zero_logits_changes_nothing_and_warmup_does_not_apply_it() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let gate = DynamicGate::new(4, 32, false, vb.pp("gate")).unwrap();
        let q = quantizer(2, &map).with_gate(gate).unwrap();
        let x = batch();
        q.set_phase(Phase::Static).unwrap();
        let stat = q.forward_t(&x, true).unwrap();
        q.set_phase(Phase::GateWarmup).unwrap();
        let warm = q.forward_t(&x, true).unwrap();
        let d = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d(&stat, &warm), 0.0, "gate warm-up keeps the static bounds");
        assert!(q.last_logits().unwrap().is_some());
        // W2 = 0: logits 0, factors exactly 1, dynamic output = static output.
        map.data().lock().unwrap()["gate.w2"].set(&Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap()).unwrap();
        q.set_phase(Phase::Dynamic).unwrap();
        let dynamic = q.forward_t(&x, false).unwrap();
        assert_eq!(d(&stat, &dynamic), 0.0);
    }

    #[test]
    fn the_dynamic_phase_applies_each_samples_factors_to_its_own_bounds() {
        // Spec section 8: 2 bits, l = -0.3, u = 1.2; sample 0 under logits (z_u, z_l) = (0.5, -1)
        // has bounds (-0.16136, 1.49390), step 0.55176; sample 1 under zero logits keeps the
        // static grid (step 0.5). Swapping z_u and z_l, or the samples, changes the outputs.
        let map = VarMap::new();
        let q = quantizer(2, &map);
        q.lower.set(&Tensor::new(-0.3f32, &Device::Cpu).unwrap()).unwrap();
        q.upper.set(&Tensor::new(1.2f32, &Device::Cpu).unwrap()).unwrap();
        q.mark_initialised().unwrap();
        let xs = [-1f32, 0.1, 0.74, 0.76, 2.0];
        let x = Tensor::from_vec([xs, xs].concat(), (2, 1, 1, 5), &Device::Cpu).unwrap();
        let z = Tensor::new(&[[0.5f32, -1.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let y: Vec<f32> = q.quantize_gated(&x, &z).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want = [0.0, 0.0, 0.55176, 0.55176, 1.65527, -0.5, 0.0, 0.5, 1.0, 1.0];
        for (i, (a, b)) in y.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-4, "value {i}: {a} vs {b} (all: {y:?})");
        }
        // Through forward_t's dynamic branch: the gate's own logits reach `quantize_gated`.
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let q = q.with_gate(DynamicGate::new(1, 32, false, vb.pp("gate")).unwrap()).unwrap();
        // Fixed gate weights (the initialisation draws from candle's unseeded generator): W1 all
        // +1, W2 rows +1 and -1, so two different positive sample means give non-zero logits.
        let w2: Vec<f32> = (0..64).map(|i| if i < 32 { 1.0 } else { -1.0 }).collect();
        let vars = map.data().lock().unwrap();
        vars["gate.w1"].set(&Tensor::ones((32, 1), DType::F32, &Device::Cpu).unwrap()).unwrap();
        vars["gate.w2"].set(&Tensor::from_vec(w2, (2, 32), &Device::Cpu).unwrap()).unwrap();
        drop(vars);
        q.set_phase(Phase::Dynamic).unwrap();
        // A constant gate input (both samples alike, one channel) quantizes instead of failing.
        q.forward_t(&x, false).expect("a constant gate input");
        let x = Tensor::from_vec([xs, xs.map(|v| v * 0.5 - 0.2)].concat(), (2, 1, 1, 5), &Device::Cpu).unwrap();
        let through = q.forward_t(&x, false).unwrap();
        let z = q.last_logits().unwrap().expect("the gate ran");
        let size = z.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(size > 1e-3, "the gate's logits are ~0, so static and dynamic would agree: {size}");
        let direct = q.quantize_gated(&x, &z).unwrap();
        let d = (through - direct).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0);
    }

    /// The clipping count: static bounds exactly; the dynamic phase against each sample's own
    /// bounds `f_l l`, `f_u u` from the gate's logits; nothing counted before asking or after
    /// taking.
    #[test]
    fn clipping_counts_the_inputs_outside_the_effective_bounds() {
        let map = VarMap::new();
        let q = quantizer(2, &map);
        q.lower.set(&Tensor::new(-0.3f32, &Device::Cpu).unwrap()).unwrap();
        q.upper.set(&Tensor::new(1.2f32, &Device::Cpu).unwrap()).unwrap();
        q.mark_initialised().unwrap();
        q.set_phase(Phase::Static).unwrap();
        let xs = [-1f32, -0.2, 0.1, 1.3, 2.0];
        let x = Tensor::from_vec([xs, xs.map(|v| v * 0.5)].concat(), (2, 1, 1, 5), &Device::Cpu).unwrap();
        q.forward_t(&x, false).unwrap();
        assert_eq!(q.take_clipping().unwrap(), None, "not counting yet");
        q.count_clipping().unwrap();
        q.forward_t(&x, false).unwrap();
        q.forward_t(&x, false).unwrap();
        // Sample 0: -1 below, 1.3 and 2.0 above; sample 1 (halved): -0.5 below, nothing above.
        let c = q.take_clipping().unwrap().expect("counted");
        assert_eq!((c.below, c.above, c.total), (4, 4, 20));
        assert!((c.share() - 0.4).abs() < 1e-12);
        assert_eq!(q.take_clipping().unwrap(), None, "taking stops the count");

        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let q = q.with_gate(DynamicGate::new(1, 32, false, vb.pp("gate")).unwrap()).unwrap();
        let w2: Vec<f32> = (0..64).map(|i| if i < 32 { 1.0 } else { -1.0 }).collect();
        let vars = map.data().lock().unwrap();
        vars["gate.w1"].set(&Tensor::ones((32, 1), DType::F32, &Device::Cpu).unwrap()).unwrap();
        vars["gate.w2"].set(&Tensor::from_vec(w2, (2, 32), &Device::Cpu).unwrap()).unwrap();
        drop(vars);
        q.set_phase(Phase::Dynamic).unwrap();
        q.count_clipping().unwrap();
        q.forward_t(&x, false).unwrap();
        let c = q.take_clipping().unwrap().expect("counted");
        let (fu, fl) = DynamicGate::factors(&q.last_logits().unwrap().expect("gated")).unwrap();
        let (fu, fl): (Vec<f32>, Vec<f32>) = (fu.to_vec1().unwrap(), fl.to_vec1().unwrap());
        assert!(fu[0] > 1.2, "the gate widens sample 0's upper bound: {fu:?}");
        let (mut below, mut above) = (0, 0);
        for (i, sample) in [xs, xs.map(|v| v * 0.5)].iter().enumerate() {
            below += sample.iter().filter(|v| **v < fl[i] * -0.3).count() as u64;
            above += sample.iter().filter(|v| **v > fu[i] * 1.2).count() as u64;
        }
        assert_eq!((c.below, c.above, c.total), (below, above, 10));
        assert!(c.above < 2, "the widened bound keeps 1.3 of sample 0: {c:?}");
    }

    #[test]
    fn bad_configs_are_errors() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        assert!(DualBoundActQuant::new(0, BoundInit::Percentile { percentile: 99.0 }, vb.pp("a")).is_err());
        assert!(DualBoundActQuant::new(2, BoundInit::Percentile { percentile: 120.0 }, vb.pp("b")).is_err());
    }
}
