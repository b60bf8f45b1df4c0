//! A zoo model with its config and weights: build, prune (surgery), mask, save and load.

use crate::error::{NnError, Result, config_err};
use crate::init::seeded_builder;
use crate::structure::{ChannelGroup, Role, Widths};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use compress_core::cost::Cost;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// A model configuration whose structure is data.
pub trait ArchConfig: Clone + std::fmt::Debug {
    /// Every width, by group name.
    fn widths(&self) -> &Widths;
    /// The same architecture with other widths (every key must be known; widths >= 1).
    fn with_widths(&self, widths: Widths) -> Result<Self>;
    /// The channel groups at the current widths.
    fn groups(&self) -> Vec<ChannelGroup>;
    /// `[C, H, W]` of one input sample.
    fn input_shape(&self) -> [usize; 3];
}

/// A config whose cost has a closed form (the zoo's). Any model's cost can be measured by a
/// counting forward pass ([`Network::counted_cost`]); the zoo's tests check the two agree.
pub trait AnalyticCost: ArchConfig {
    /// Analytic cost of one forward pass on one sample.
    fn cost(&self) -> Cost;
}

/// A model of the zoo: built from its config and a `VarBuilder`.
pub trait Architecture: ModuleT + Sized {
    /// Its configuration type.
    type Config: ArchConfig;
    /// Builds the model; variables are created (seeded) or taken from the builder's backend.
    fn build(cfg: &Self::Config, vb: VarBuilder) -> candle_core::Result<Self>;
}

/// Whether a variable is a buffer (state, not a parameter): BatchNorm running statistics and any
/// variable whose last name segment starts with `buffer_` (e.g. DCFF's fusion matrix). No
/// optimizer touches buffers; checkpoints save and restore them.
pub fn is_buffer(name: &str) -> bool {
    is_running_statistic(name) || name.rsplit('.').next().unwrap_or(name).starts_with("buffer_")
}

/// The variables of `varmap` an optimizer may update (every one but the buffers, [`is_buffer`]),
/// sorted by name.
pub fn trainable_vars(varmap: &VarMap) -> Result<Vec<(String, candle_core::Var)>> {
    let data = varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
    let mut v: Vec<(String, candle_core::Var)> =
        data.iter().filter(|(k, _)| !is_buffer(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Whether a variable is a norm's running statistic (`*.running_mean`, `*.running_var`): a buffer
/// the model itself reads.
pub fn is_running_statistic(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "running_mean" || last == "running_var"
}

/// The tensors a model is built from, out of a `VarMap`'s variables: the parameters and the running
/// statistics (sharing storage, so BatchNorm's updates reach the variables), without the other
/// buffers. Methods that build the zoo model from computed weights start from this map.
pub fn model_tensors(vars: &HashMap<String, Var>) -> HashMap<String, Tensor> {
    vars.iter()
        .filter(|(k, _)| !is_buffer(k) || is_running_statistic(k))
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// What a training loop needs of a model: its variables, its device and a forward pass. The
/// zoo's [`Network`] is one; a method's training-time wrapper (e.g. DCFF's fused network) is
/// another.
pub trait Model {
    /// Every variable, parameters and buffers (see [`is_buffer`]).
    fn varmap(&self) -> &VarMap;
    /// The variables an optimizer may update: every variable but the buffers ([`is_buffer`]:
    /// running statistics, `buffer_*` such as DCFF's `Phi`), by name. Hand these, not
    /// `varmap().all_vars()`, to an optimizer of your own.
    fn trainable_vars(&self) -> Result<Vec<(String, candle_core::Var)>> {
        trainable_vars(self.varmap())
    }
    /// The device the variables live on.
    fn device(&self) -> &Device;
    /// Forward pass (`train`: BatchNorm batch statistics, running ones updated).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

impl<A: Architecture> Model for Network<A> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.model.forward_t(x, train)?)
    }
}

/// A zoo network is a candle `ModuleT`, so candle code can run it (`x.apply_t(&net, train)`).
impl<A: Architecture> candle_core::ModuleT for Network<A> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Network::forward_t(self, xs, train).map_err(candle_core::Error::wrap)
    }
}

/// Replaces widths in `base` with `new`, rejecting unknown names and zero widths.
pub fn replace_widths(base: &Widths, new: Widths) -> Result<Widths> {
    let mut out = base.clone();
    for (k, v) in new {
        if v == 0 {
            return Err(config_err(format!("width {k:?} must be at least 1")));
        }
        match out.get_mut(&k) {
            Some(slot) => *slot = v,
            None => {
                return Err(config_err(format!(
                    "unknown width {k:?}; this model has {}",
                    base.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// A built model, its config and its variables.
pub struct Network<A: Architecture> {
    /// The configuration it was built from.
    pub config: A::Config,
    /// Its variables (BatchNorm running statistics included).
    pub varmap: VarMap,
    /// The model.
    pub model: A,
    device: Device,
}

impl<A: Architecture + std::fmt::Debug> std::fmt::Debug for Network<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("config", &self.config).field("model", &self.model).finish()
    }
}

impl<A: Architecture> Network<A> {
    /// A freshly initialised model, weights drawn from `seed`.
    pub fn new(config: A::Config, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let model = A::build(&config, seeded_builder(&varmap, seed, DType::F32, device))?;
        let net = Self { config, varmap, model, device: device.clone() };
        net.check_declaration()?;
        Ok(net)
    }

    /// Checks the config's channel groups against the built variables
    /// ([`crate::structure::check_groups`]): a wrong declaration is an error naming the entry,
    /// found when the model is built rather than as a shape error in the middle of a surgery.
    pub fn check_declaration(&self) -> Result<()> {
        let shapes: BTreeMap<String, Vec<usize>> = {
            let data = self.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
            data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
        };
        crate::structure::check_groups(&self.config.groups(), &shapes).map_err(config_err)
    }

    /// A model whose variables are exactly `tensors` (every tensor the model needs must be
    /// there, with its shape; extra tensors are an error too).
    pub fn from_tensors(config: A::Config, tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let varmap = crate::init::varmap_from(tensors, device)?;
        // f64 when every tensor is f64 (a network for exact comparisons), else f32.
        let all_f64 = !tensors.is_empty() && tensors.values().all(|t| t.dtype() == DType::F64);
        let dtype = if all_f64 { DType::F64 } else { DType::F32 };
        let model = A::build(&config, VarBuilder::from_varmap(&varmap, dtype, device)).map_err(|e| {
            // VarMap reports a wrong shape as a message; name the tensor in our error.
            let msg = e.to_string();
            match msg.strip_prefix("shape mismatch on ") {
                Some(rest) => config_err(format!("tensor {rest}")),
                None => NnError::Candle(e),
            }
        })?;
        let built = Self { config, varmap, model, device: device.clone() };
        let need: BTreeSet<String> = built.tensors()?.into_keys().collect();
        if let Some(extra) = tensors.keys().find(|k| !need.contains(*k)) {
            return Err(config_err(format!("tensor {extra:?} is not part of this model")));
        }
        if need.len() != tensors.len() {
            let missing = need.iter().find(|k| !tensors.contains_key(*k)).cloned().unwrap_or_default();
            return Err(NnError::MissingTensor { name: missing, context: None });
        }
        built.check_declaration()?;
        Ok(built)
    }

    /// A copy with every variable cast to `dtype`: `BF16` / `F16` for half-precision inference
    /// (a GPU user's teacher or deployed model), `F64` for exact comparisons. The toolkit's CPU
    /// ops run f32 only and fall back to candle's ops for other dtypes; training stays in f32.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let from = self.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
            let mut to = varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
            for (k, v) in from.iter() {
                to.insert(k.clone(), Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?);
            }
        }
        let model = A::build(&self.config, VarBuilder::from_varmap(&varmap, dtype, &self.device))?;
        Ok(Self { config: self.config.clone(), varmap, model, device: self.device.clone() })
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A copy of every variable, by name.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
        data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
    }

    /// The model rebuilt over the same variables with the layers named in `map` (by prefix, e.g.
    /// `features.3.conv.1`) replaced, e.g. by packed sparse kernels (see
    /// [`crate::layers::replace`]). A key that names no layer (no `<key>.weight`) is an error.
    pub fn with_replacements(&self, map: &crate::layers::Replacements) -> Result<A> {
        {
            let data = self.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
            if let Some(k) = map.keys().find(|k| !data.contains_key(&format!("{k}.weight"))) {
                return Err(config_err(format!("no layer {k:?} to replace in this model")));
            }
        }
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        Ok(crate::layers::build_with(map, || A::build(&self.config, vb))?)
    }

    /// Forward pass (`train` selects BatchNorm batch statistics and updates running ones).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.model.forward_t(x, train)?)
    }

    /// Parameters counted from the variables (BatchNorm running statistics excluded).
    pub fn count_params(&self) -> Result<u64> {
        let data = self.varmap.data().lock().map_err(|_| config_err("VarMap lock poisoned"))?;
        Ok(data.iter().filter(|(k, _)| !is_buffer(k)).map(|(_, v)| v.elem_count() as u64).sum())
    }

    /// Cost measured by a counting forward pass on one zero sample, in eval mode.
    pub fn counted_cost(&self) -> Result<Cost> {
        let [c, h, w] = self.config.input_shape();
        let x = Tensor::zeros((1, c, h, w), DType::F32, &self.device)?;
        let (y, cost) = crate::count::count(|| self.model.forward_t(&x, false));
        y?;
        Ok(cost)
    }

    /// The physically smaller model that keeps, for each named group, the listed channels
    /// (groups not named keep all channels).
    pub fn prune(&self, kept: &BTreeMap<String, Vec<usize>>) -> Result<Self> {
        let groups = checked_groups(&self.config, kept)?;
        let mut drops: BTreeMap<(String, usize), BTreeSet<usize>> = BTreeMap::new();
        let mut widths = self.config.widths().clone();
        for (g, keep) in &groups {
            let dropped: Vec<usize> = (0..g.width).filter(|i| !keep.contains(i)).collect();
            for m in &g.members {
                let set = drops.entry((m.tensor.clone(), m.axis)).or_default();
                set.extend(dropped.iter().flat_map(|&d| m.indices(d)));
            }
            widths.insert(g.name.clone(), keep.len());
        }
        let mut tensors = self.tensors()?;
        for ((name, axis), dropped) in drops {
            let t = tensors.get(&name).ok_or_else(|| NnError::MissingTensor { name: name.clone(), context: None })?;
            let n = t.dim(axis)?;
            if let Some(&bad) = dropped.iter().find(|&&d| d >= n) {
                return Err(config_err(format!("group maps to index {bad} of {name} axis {axis}, which has {n}")));
            }
            let keep: Vec<u32> = (0..n).filter(|i| !dropped.contains(i)).map(|i| i as u32).collect();
            let idx = Tensor::from_vec(keep.clone(), keep.len(), t.device())?;
            let sliced = t.index_select(&idx, axis)?;
            tensors.insert(name, sliced);
        }
        let config = self.config.with_widths(widths)?;
        Self::from_tensors(config, &tensors, &self.device)
    }

    /// The same-size model whose removed channels are silenced: every produced entry of a
    /// dropped channel (weights, biases, norm weight and bias) is zero.
    pub fn masked(&self, kept: &BTreeMap<String, Vec<usize>>) -> Result<Self> {
        let groups = checked_groups(&self.config, kept)?;
        let mut tensors = self.tensors()?;
        for (g, keep) in &groups {
            for m in g.members.iter().filter(|m| m.role == Role::Produce) {
                let t = tensors
                    .get(&m.tensor)
                    .ok_or_else(|| NnError::MissingTensor { name: m.tensor.clone(), context: None })?;
                let n = t.dim(m.axis)?;
                let mut mask = vec![1f32; n];
                for d in (0..g.width).filter(|i| !keep.contains(i)) {
                    for i in m.indices(d) {
                        if i >= n {
                            return Err(config_err(format!("group {} maps past {} axis {}", g.name, m.tensor, m.axis)));
                        }
                        mask[i] = 0.0;
                    }
                }
                let mut shape = vec![1; t.rank()];
                shape[m.axis] = n;
                let mask = Tensor::from_vec(mask, shape, t.device())?;
                let masked = t.broadcast_mul(&mask)?;
                tensors.insert(m.tensor.clone(), masked);
            }
        }
        Self::from_tensors(self.config.clone(), &tensors, &self.device)
    }

    /// The same function with the channels of group `group` reordered: new channel `i` is old
    /// channel `perm[i]` in every tied tensor (producer rows, biases, norms and statistics,
    /// depthwise convs, consumer columns), as 1xN filter rearrangement needs. Groups that are
    /// not prunable (tied by position, e.g. zero-padding shortcuts) cannot be permuted.
    pub fn permuted(&self, group: &str, perm: &[usize]) -> Result<Self> {
        let g = self
            .config
            .groups()
            .into_iter()
            .find(|g| g.name == group)
            .ok_or_else(|| config_err(format!("no channel group {group:?}")))?;
        if !g.prunable {
            return Err(config_err(format!("group {group} is tied by position and cannot be permuted")));
        }
        let mut seen = vec![false; g.width];
        if perm.len() != g.width || perm.iter().any(|&p| p >= g.width || std::mem::replace(&mut seen[p], true)) {
            return Err(config_err(format!("{perm:?} is not a permutation of the {} channels of {group}", g.width)));
        }
        let mut tensors = self.tensors()?;
        for m in &g.members {
            let t = tensors
                .get(&m.tensor)
                .ok_or_else(|| NnError::MissingTensor { name: m.tensor.clone(), context: None })?;
            let n = t.dim(m.axis)?;
            let mut src: Vec<u32> = (0..n as u32).collect();
            for (i, &p) in perm.iter().enumerate() {
                for (dst, from) in m.indices(i).zip(m.indices(p)) {
                    if dst >= n || from >= n {
                        return Err(config_err(format!("group {group} maps past {} axis {}", m.tensor, m.axis)));
                    }
                    src[dst] = from as u32;
                }
            }
            let idx = Tensor::from_vec(src, n, t.device())?;
            let permuted = t.index_select(&idx, m.axis)?;
            tensors.insert(m.tensor.clone(), permuted);
        }
        Self::from_tensors(self.config.clone(), &tensors, &self.device)
    }

    /// Checks the channel groups against the forward pass itself: every prunable group keeps a
    /// seeded random half of its channels, and the masked model ([`Network::masked`]) and the
    /// pruned one ([`Network::prune`]) run on `x` in eval mode. Returns the largest difference
    /// relative to the output's magnitude: about 1e-6 when the declaration is right; a missed
    /// residual join or consumer leaves the two models computing different functions.
    pub fn check_surgery(&self, x: &Tensor, seed: u64) -> Result<f32> {
        use rand::seq::SliceRandom;
        let mut rng = compress_core::rng::SeededRng::new(seed).stream("check_surgery", 0);
        let mut kept = BTreeMap::new();
        for g in self.config.groups().into_iter().filter(|g| g.prunable && g.width > 1) {
            let mut idx: Vec<usize> = (0..g.width).collect();
            idx.shuffle(&mut rng);
            idx.truncate(g.width.div_ceil(2));
            idx.sort_unstable();
            kept.insert(g.name, idx);
        }
        let masked = self.masked(&kept)?.forward_t(x, false)?;
        let pruned = self.prune(&kept)?.forward_t(x, false)?;
        let diff = (&masked - &pruned)?.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let scale = masked.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?.max(1e-6);
        Ok(diff / scale)
    }

    /// Saves every variable to a safetensors file, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::weights::save_atomic(&self.tensors()?, path)
    }

    /// Loads a model of `config` from a safetensors file; names the tensor that is missing, of
    /// the wrong shape or of the wrong dtype.
    pub fn load(config: A::Config, path: &Path, device: &Device) -> Result<Self> {
        let reference = Self::new(config.clone(), 0, device)?.tensors()?;
        let tensors = crate::weights::load_checked(path, &reference, device)?;
        Self::from_tensors(config, &tensors, device)
    }
}

/// The groups of `cfg` with their kept sets, validated.
fn checked_groups(
    cfg: &impl ArchConfig,
    kept: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<(ChannelGroup, BTreeSet<usize>)>> {
    let groups = cfg.groups();
    for name in kept.keys() {
        if !groups.iter().any(|g| &g.name == name) {
            return Err(config_err(format!("no channel group {name:?}")));
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let keep: BTreeSet<usize> = match kept.get(&g.name) {
                Some(k) => k.iter().copied().collect(),
                None => (0..g.width).collect(),
            };
            if keep.is_empty() {
                return Err(config_err(format!("group {} would keep no channel", g.name)));
            }
            if let Some(&bad) = keep.iter().find(|&&i| i >= g.width) {
                return Err(config_err(format!("group {} has {} channels; cannot keep {bad}", g.name, g.width)));
            }
            if !g.prunable && keep.len() != g.width {
                return Err(config_err(format!("group {} is not prunable", g.name)));
            }
            Ok((g, keep))
        })
        .collect()
}
