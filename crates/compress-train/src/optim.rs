//! Optimizers with parameter groups and checkpointable state, as PyTorch defines them.
//!
//! - SGD: `g = grad + wd p`; `b = g` at the first step, else `b = mu b + (1 - dampening) g`;
//!   `g = g + mu b` (Nesterov) or `g = b`; `p -= lr g`.
//! - Adam: `g = grad + wd p`; `m = b1 m + (1 - b1) g`; `v = b2 v + (1 - b2) g^2`;
//!   `p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
//! - AdamW: as Adam without the `wd p` term, and `p *= 1 - lr wd` first (decoupled decay).
//!
//! candle-nn's SGD has no momentum or decay, and its AdamW hides its moments (no checkpoint).
//! BatchNorm running statistics are never parameters here.

use crate::error::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::{BTreeMap, HashMap};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with momentum.
    Sgd {
        /// Momentum `mu` (0 disables the buffer).
        momentum: f64,
        /// Dampening of the momentum update.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam with L2 weight decay in the gradient.
    Adam {
        /// beta1.
        beta1: f64,
        /// beta2.
        beta2: f64,
        /// eps.
        eps: f64,
    },
    /// AdamW with decoupled weight decay.
    AdamW {
        /// beta1.
        beta1: f64,
        /// beta2.
        beta2: f64,
        /// eps.
        eps: f64,
    },
}

impl OptimizerKind {
    /// SGD with momentum 0.9, no dampening, no Nesterov (the CIFAR/ImageNet recipe).
    pub fn sgd(momentum: f64, nesterov: bool) -> Self {
        Self::Sgd { momentum, dampening: 0.0, nesterov }
    }

    /// Adam with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adam() -> Self {
        Self::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// AdamW with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adamw() -> Self {
        Self::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Parameters sharing a learning-rate factor and a weight decay.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Name, for logs.
    pub name: String,
    /// `(variable name, variable)`.
    pub vars: Vec<(String, Var)>,
    /// Multiplies the scheduled learning rate.
    pub lr_scale: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

/// The variables an optimizer updates (buffers excluded), sorted by name.
pub fn trainable(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    Ok(compress_nn::network::trainable_vars(varmap)?)
}

/// One group with every trainable variable and decay `wd` (PyTorch's default behaviour).
pub fn all_params(varmap: &VarMap, wd: f64) -> Result<Vec<ParamGroup>> {
    Ok(vec![ParamGroup { name: "all".into(), vars: trainable(varmap)?, lr_scale: 1.0, weight_decay: wd }])
}

/// Two groups: weights of rank >= 2 with decay `wd`, and biases / norm parameters without, nor
/// position embeddings and class tokens (timm's `no_weight_decay`: `pos_embed*`, `cls_token`).
pub fn decay_and_no_decay(varmap: &VarMap, wd: f64) -> Result<Vec<ParamGroup>> {
    let exempt = |name: &str| {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        leaf.starts_with("pos_embed") || leaf == "cls_token"
    };
    let (decay, no): (Vec<_>, Vec<_>) = trainable(varmap)?.into_iter().partition(|(k, v)| v.rank() >= 2 && !exempt(k));
    Ok(vec![
        ParamGroup { name: "decay".into(), vars: decay, lr_scale: 1.0, weight_decay: wd },
        ParamGroup { name: "no_decay".into(), vars: no, lr_scale: 1.0, weight_decay: 0.0 },
    ])
}

/// An optimizer over parameter groups with saveable state.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    groups: Vec<ParamGroup>,
    /// Per variable: SGD `[buffer]`, Adam(W) `[m, v]`.
    state: HashMap<String, Vec<Tensor>>,
    steps: u64,
}

impl Optimizer {
    /// An optimizer; variable names must be unique across groups.
    pub fn new(kind: OptimizerKind, groups: Vec<ParamGroup>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for g in &groups {
            if g.weight_decay < 0.0 || g.lr_scale < 0.0 {
                return Err(TrainError::Config(format!("group {}: negative weight decay or lr scale", g.name)));
            }
            for (n, _) in &g.vars {
                if !seen.insert(n.clone()) {
                    return Err(TrainError::Config(format!("variable {n} is in two parameter groups")));
                }
            }
        }
        if let OptimizerKind::Sgd { momentum, dampening, nesterov } = kind
            && (momentum < 0.0 || (nesterov && (momentum <= 0.0 || dampening != 0.0)))
        {
            return Err(TrainError::Config("Nesterov momentum needs momentum > 0 and zero dampening".into()));
        }
        Ok(Self { kind, groups, state: HashMap::new(), steps: 0 })
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Sets the learning-rate factor of the group named `group` (e.g. a rate that follows a
    /// schedule of its own, such as OptG's score rate).
    pub fn set_lr_scale(&mut self, group: &str, scale: f64) -> Result<()> {
        if !(scale >= 0.0 && scale.is_finite()) {
            return Err(TrainError::Config(format!("group {group}: learning-rate factor {scale}")));
        }
        let g = self
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| TrainError::Config(format!("no parameter group {group:?}")))?;
        g.lr_scale = scale;
        Ok(())
    }

    /// Applies one update with base learning rate `lr`; variables without a gradient are left.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for g in &self.groups {
            let (lr, wd) = (lr * g.lr_scale, g.weight_decay);
            for (name, var) in &g.vars {
                // candle returns a leaf's gradient without detaching it (it can still reference
                // the forward graph): detach, or the state would keep every past graph alive.
                let Some(grad) = grads.get(var.as_tensor()).map(|g| g.detach()) else { continue };
                let grad = &grad;
                // Detached: optimizer arithmetic must not join the autograd graph, or every
                // momentum buffer would keep the whole history of updates alive.
                let p = &var.as_tensor().detach();
                match self.kind {
                    OptimizerKind::Sgd { momentum, dampening, nesterov } => {
                        let h = compress_core::ops::SgdStep { lr, weight_decay: wd, momentum, dampening, nesterov };
                        let prev = self.state.get(name).and_then(|s| s.first());
                        if let Some((new_p, new_buf)) = compress_core::ops::sgd_step(p, grad, prev, h)? {
                            if let Some(b) = new_buf {
                                self.state.insert(name.clone(), vec![b]);
                            }
                            var.set(&new_p)?;
                            continue;
                        }
                        let mut d = if wd != 0.0 { (grad + p.affine(wd, 0.0)?)? } else { grad.clone() };
                        if momentum != 0.0 {
                            let buf = match self.state.get(name) {
                                Some(s) => ((&s[0] * momentum)? + d.affine(1.0 - dampening, 0.0)?)?,
                                None => d.copy()?,
                            };
                            d = if nesterov { (d + (&buf * momentum)?)? } else { buf.clone() };
                            self.state.insert(name.clone(), vec![buf]);
                        }
                        var.set(&(p - d.affine(lr, 0.0)?)?)?;
                    }
                    OptimizerKind::Adam { beta1, beta2, eps } | OptimizerKind::AdamW { beta1, beta2, eps } => {
                        let decoupled = matches!(self.kind, OptimizerKind::AdamW { .. });
                        let base = if decoupled && wd != 0.0 { p.affine(1.0 - lr * wd, 0.0)? } else { p.clone() };
                        let d = if !decoupled && wd != 0.0 { (grad + p.affine(wd, 0.0)?)? } else { grad.clone() };
                        let (m, v) = match self.state.get(name) {
                            Some(s) => (
                                ((&s[0] * beta1)? + d.affine(1.0 - beta1, 0.0)?)?,
                                ((&s[1] * beta2)? + d.sqr()?.affine(1.0 - beta2, 0.0)?)?,
                            ),
                            None => (d.affine(1.0 - beta1, 0.0)?, d.sqr()?.affine(1.0 - beta2, 0.0)?),
                        };
                        let mhat = m.affine(1.0 / (1.0 - beta1.powi(t)), 0.0)?;
                        let vhat = v.affine(1.0 / (1.0 - beta2.powi(t)), 0.0)?;
                        let upd = (mhat / (vhat.sqrt()? + eps)?)?;
                        var.set(&(base - upd.affine(lr, 0.0)?)?)?;
                        self.state.insert(name.clone(), vec![m, v]);
                    }
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`<var>#<slot>`) plus the step count, for checkpoints.
    pub fn state_tensors(&self) -> (BTreeMap<String, Tensor>, u64) {
        let mut out = BTreeMap::new();
        for (name, slots) in &self.state {
            for (i, t) in slots.iter().enumerate() {
                out.insert(format!("{name}#{i}"), t.clone());
            }
        }
        (out, self.steps)
    }

    /// Restores what [`Optimizer::state_tensors`] saved.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let mut state: HashMap<String, Vec<Tensor>> = HashMap::new();
        let mut keys: Vec<&String> = tensors.keys().collect();
        keys.sort();
        for k in keys {
            let (name, slot) =
                k.rsplit_once('#').ok_or_else(|| TrainError::Config(format!("bad optimizer state key {k}")))?;
            let slot: usize = slot.parse().map_err(|_| TrainError::Config(format!("bad optimizer state key {k}")))?;
            let e = state.entry(name.to_string()).or_default();
            if e.len() != slot {
                return Err(TrainError::Config(format!("optimizer state of {name} has a gap at slot {slot}")));
            }
            e.push(tensors[k].clone());
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(kind: OptimizerKind, wd: f64, steps: usize) -> Vec<f64> {
        run_in(candle_core::DType::F64, kind, wd, steps)
    }

    /// f64 parameters take the composed update, f32 ones the one-pass kernel on the CPU.
    fn run_in(dt: candle_core::DType, kind: OptimizerKind, wd: f64, steps: usize) -> Vec<f64> {
        let map = VarMap::new();
        let v = Var::from_tensor(
            &Tensor::from_vec(vec![1.0f64, -2.0], 2, &Device::Cpu).expect("t").to_dtype(dt).expect("dt"),
        )
        .expect("v");
        map.data().lock().expect("lock").insert("w".into(), v.clone());
        let mut opt = Optimizer::new(kind, all_params(&map, wd).expect("groups")).expect("opt");
        for _ in 0..steps {
            // Loss = sum(w^2): grad 2w.
            let g = v.as_tensor().sqr().expect("s").sum_all().expect("s").backward().expect("b");
            opt.step(&g, 0.1).expect("step");
        }
        v.as_tensor().to_dtype(candle_core::DType::F64).expect("f64").to_vec1::<f64>().expect("v")
    }

    #[test]
    fn one_pass_sgd_equals_the_composed_update() {
        let kinds = [
            OptimizerKind::sgd(0.0, false),
            OptimizerKind::sgd(0.9, false),
            OptimizerKind::sgd(0.9, true),
            OptimizerKind::Sgd { momentum: 0.9, dampening: 0.3, nesterov: false },
        ];
        for kind in kinds {
            for wd in [0.0, 5e-4, 0.5] {
                let (a, b) = (run_in(candle_core::DType::F32, kind, wd, 4), run(kind, wd, 4));
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-6 * (1.0 + y.abs()), "{kind:?} wd {wd}: {a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn sgd_matches_pytorch_by_hand() {
        // Plain: w - 0.1 * 2w = 0.8 w.
        assert_eq!(run(OptimizerKind::sgd(0.0, false), 0.0, 1), vec![0.8, -1.6]);
        // Momentum 0.9, two steps: b1 = 2, w1 = 0.8; b2 = 0.9*2 + 1.6 = 3.4, w2 = 0.8 - 0.34 = 0.46.
        let w = run(OptimizerKind::sgd(0.9, false), 0.0, 2);
        assert!((w[0] - 0.46).abs() < 1e-12, "{w:?}");
        // Nesterov, one step: b = 2, g = 2 + 0.9*2 = 3.8, w = 1 - 0.38 = 0.62.
        let w = run(OptimizerKind::sgd(0.9, true), 0.0, 1);
        assert!((w[0] - 0.62).abs() < 1e-12, "{w:?}");
        // Weight decay 0.5: g = 2 + 0.5 = 2.5, w = 0.75.
        let w = run(OptimizerKind::sgd(0.0, false), 0.5, 1);
        assert!((w[0] - 0.75).abs() < 1e-12, "{w:?}");
    }

    #[test]
    fn adam_and_adamw_match_pytorch_by_hand() {
        // First Adam step moves every coordinate by lr * sign(g) (up to eps).
        let w = run(OptimizerKind::adam(), 0.0, 1);
        assert!((w[0] - 0.9).abs() < 1e-7 && (w[1] + 1.9).abs() < 1e-7, "{w:?}");
        // AdamW with wd 0.1: w = 1 * (1 - 0.1 * 0.1) - 0.1 = 0.89.
        let w = run(OptimizerKind::adamw(), 0.1, 1);
        assert!((w[0] - 0.89).abs() < 1e-7, "{w:?}");
    }

    #[test]
    fn optimizer_state_never_joins_the_autograd_graph() {
        // With weight decay the update reads the parameter; a buffer that tracked that op would
        // chain every past step together (a leak of one parameter copy per step).
        for kind in [OptimizerKind::sgd(0.9, true), OptimizerKind::adamw(), OptimizerKind::adam()] {
            let map = VarMap::new();
            let v = Var::from_vec(vec![1.0f32, -2.0], 2, &Device::Cpu).expect("v");
            map.data().lock().expect("lock").insert("w".into(), v.clone());
            let mut opt = Optimizer::new(kind, all_params(&map, 0.1).expect("g")).expect("o");
            for _ in 0..3 {
                let g = v.as_tensor().sqr().expect("s").sum_all().expect("s").backward().expect("b");
                opt.step(&g, 0.1).expect("step");
            }
            let (state, _) = opt.state_tensors();
            assert!(state.values().all(|t| !t.track_op()), "{kind:?}: optimizer state tracks an op");
        }
    }

    #[test]
    fn state_roundtrips_and_bad_configs_fail() {
        let map = VarMap::new();
        let v = Var::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).expect("v");
        map.data().lock().expect("lock").insert("w".into(), v.clone());
        let mut opt = Optimizer::new(OptimizerKind::adamw(), all_params(&map, 0.0).expect("g")).expect("o");
        let g = v.as_tensor().sqr().expect("s").sum_all().expect("s").backward().expect("b");
        opt.step(&g, 0.1).expect("step");
        let (state, steps) = opt.state_tensors();
        assert_eq!(state.len(), 2);
        let mut other = Optimizer::new(OptimizerKind::adamw(), all_params(&map, 0.0).expect("g")).expect("o");
        other.load_state(&state.into_iter().collect(), steps).expect("load");
        assert_eq!(other.steps(), 1);
        assert!(Optimizer::new(OptimizerKind::Sgd { momentum: 0.0, dampening: 0.0, nesterov: true }, vec![]).is_err());
    }
}
