//! The fused network (section 2): every prunable convolution keeps all `C` of its filters `W` as
//! parameters, but the forward pass uses the `m` fused filters `W^ = Phi W` (and `b^ = Phi b`),
//! where `Phi` (`m x C`, a buffer) holds the proxies of the selected filters. The rest of the
//! network (BatchNorm, the next layer's input side, the classifier) has its compact width, so
//! the forward pass is the zoo's compact model built on fused weights, and extraction is reading
//! those weights off.

use crate::error::{DcffError, Result};
use crate::proxy::{KlMode, filter_proxies};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use compress_nn::init::SeededVarMap;
use compress_nn::{ArchConfig, Architecture, Model, Network, model_tensors};
use compress_prune::{LayerwiseRates, compact_config, top_k};
use std::collections::{BTreeMap, HashMap};

/// One fused convolution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FusedLayer {
    /// Tensor prefix of the convolution.
    pub conv: String,
    /// `C`: filters kept as parameters (the original width).
    pub filters: usize,
    /// `m = int(C (1 - r))`: fused filters the forward pass uses.
    pub keep: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
}

impl FusedLayer {
    fn weight(&self) -> String {
        format!("{}.weight", self.conv)
    }
    fn bias_name(&self) -> String {
        format!("{}.bias", self.conv)
    }
    fn phi(&self) -> String {
        format!("{}.buffer_phi", self.conv)
    }
    fn stored(&self) -> String {
        format!("{}.buffer_scores", self.conv)
    }
}

/// What one layer's refresh found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerRefresh {
    /// The convolution.
    pub conv: String,
    /// Whether every new score was finite (and so replaced the stored ones).
    pub finite: bool,
    /// The selected filters `S`, ascending.
    pub selected: Vec<usize>,
    /// Whether `S` differs from the previous refresh's.
    pub changed: bool,
}

/// What the refresh at the start of an epoch found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRefresh {
    /// The epoch.
    pub epoch: usize,
    /// The temperature.
    pub temperature: f64,
    /// Per fused layer.
    pub layers: Vec<LayerRefresh>,
}

/// Name of the buffer holding `1 + the last refreshed epoch` (0: never refreshed).
const REFRESHED: &str = "dcff.buffer_refreshed";

/// A network trained by filter fusion. Its variables: the over-provisioned convolution weights
/// (`C x C' x k x k`), the compact rest, and the buffers `<conv>.buffer_phi` (`m x C`),
/// `<conv>.buffer_scores` (the stored scores, `C`) and `dcff.buffer_refreshed`: all saved and
/// restored by checkpoints, so a resumed run continues exactly.
pub struct FusedNetwork<A: Architecture> {
    /// The original (unpruned) configuration.
    pub original: A::Config,
    /// The compact configuration the forward pass runs at.
    pub compact: A::Config,
    /// The fused convolutions, in forward order.
    pub layers: Vec<FusedLayer>,
    /// How scores treat underflow.
    pub mode: KlMode,
    varmap: VarMap,
    device: Device,
}

impl<A: Architecture> std::fmt::Debug for FusedNetwork<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedNetwork").field("compact", &self.compact).field("layers", &self.layers).finish()
    }
}

/// A seeded backend that creates the listed convolution weights and biases with `C` output rows
/// (fans computed on the full `C x C' x k x k` shape) and hands the builder their first `m` rows.
struct OverProvisioned {
    inner: SeededVarMap,
    widen: HashMap<String, usize>,
}

impl SimpleBackend for OverProvisioned {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.widen.get(name) {
            Some(&full) => {
                let mut dims = s.dims().to_vec();
                let m = dims[0];
                dims[0] = full;
                self.inner.get(Shape::from(dims), name, h, dtype, dev)?.narrow(0, 0, m)
            }
            None => self.inner.get(s, name, h, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

impl<A: Architecture> FusedNetwork<A>
where
    A::Config: LayerwiseRates,
{
    /// A fresh fused network: `original` pruned by one rate per prunable convolution (the
    /// expanded official list), weights drawn from `seed` as the architecture initialises them.
    pub fn new(original: A::Config, rates: &[f64], mode: KlMode, seed: u64, device: &Device) -> Result<Self> {
        let compact = compact_config(&original, rates)?;
        let mut layers = Vec::new();
        let groups = original.groups();
        for pc in original.prunable_convs() {
            let filters = original.widths()[&pc.group];
            let keep = compact.widths()[&pc.group];
            let bias = groups.iter().flat_map(|g| &g.members).any(|m| m.tensor == format!("{}.bias", pc.conv));
            layers.push(FusedLayer { conv: pc.conv, filters, keep, bias });
        }
        let varmap = VarMap::new();
        let mut widen = HashMap::new();
        for l in &layers {
            widen.insert(l.weight(), l.filters);
            if l.bias {
                widen.insert(l.bias_name(), l.filters);
            }
        }
        let backend = OverProvisioned { inner: SeededVarMap::new(varmap.clone(), seed), widen };
        A::build(&compact, VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()))?;
        {
            let mut data = varmap.data().lock().map_err(|_| DcffError::Poisoned)?;
            for l in &layers {
                // Before the first refresh Phi selects the first m filters unmixed.
                let phi = Tensor::eye(l.filters, DType::F32, device)?.narrow(0, 0, l.keep)?;
                data.insert(l.phi(), Var::from_tensor(&phi)?);
                data.insert(l.stored(), Var::from_tensor(&Tensor::full(f32::NAN, l.filters, device)?)?);
            }
            data.insert(REFRESHED.into(), Var::from_tensor(&Tensor::new(0f32, device)?)?);
        }
        Ok(Self { original, compact, layers, mode, varmap, device: device.clone() })
    }

    /// The epoch of the last refresh, if any.
    pub fn refreshed_epoch(&self) -> Result<Option<usize>> {
        let v = self.var(REFRESHED)?.as_tensor().to_scalar::<f32>()?;
        Ok((v >= 1.0).then(|| v as usize - 1))
    }

    fn var(&self, name: &str) -> Result<Var> {
        let data = self.varmap.data().lock().map_err(|_| DcffError::Poisoned)?;
        data.get(name).cloned().ok_or_else(|| DcffError::Missing(name.to_string()))
    }

    /// The refresh at the start of `epoch` at temperature `t` (section 2, steps 2-8): new
    /// proxies and scores from the current filters; the stored scores are replaced at epoch 0
    /// and afterwards only when the new ones rank the filters ([`crate::FilterProxies::informative`]:
    /// every score finite, as the official code requires, and `P` not the identity, where the
    /// stable rule's scores all tie); `S` = the `m` best stored scores in ascending index order;
    /// `Phi = P[S, :]` at the current temperature.
    pub fn refresh(&self, epoch: usize, t: f64) -> Result<EpochRefresh> {
        let mut out = Vec::new();
        for l in &self.layers {
            let w = self.var(&l.weight())?;
            let rows: Vec<f32> = w.as_tensor().flatten_from(1)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            let f = filter_proxies(&rows, l.filters, t, self.mode);
            let stored_var = self.var(&l.stored())?;
            let old: Vec<f32> = stored_var.as_tensor().to_vec1()?;
            let finite = f.all_finite();
            let stored = if epoch == 0 || f.informative() { f.scores.clone() } else { old };
            stored_var.set(&Tensor::new(stored.as_slice(), &self.device)?)?;
            let selected = top_k(&stored, l.keep)?;
            let phi_var = self.var(&l.phi())?;
            let previous = selected_of(&phi_var.as_tensor().to_vec2::<f32>()?);
            let phi: Vec<f32> = selected.iter().flat_map(|&j| f.row(j).iter().copied()).collect();
            phi_var.set(&Tensor::from_vec(phi, (l.keep, l.filters), &self.device)?)?;
            let changed = epoch > 0 && previous != selected;
            out.push(LayerRefresh { conv: l.conv.clone(), finite, selected, changed });
        }
        self.var(REFRESHED)?.set(&Tensor::new((epoch + 1) as f32, &self.device)?)?;
        Ok(EpochRefresh { epoch, temperature: t, layers: out })
    }

    /// The tensors of the compact model: fused weights `Phi W` and biases `Phi b` (in the graph,
    /// so gradients reach `W`), the other variables as they are.
    fn compact_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(|_| DcffError::Poisoned)?;
        let mut map = model_tensors(&data);
        for l in &self.layers {
            let get = |n: String| data.get(&n).cloned().ok_or(DcffError::Missing(n));
            let phi = get(l.phi())?;
            let w = get(l.weight())?;
            let dims = w.dims().to_vec();
            let fused = phi.as_tensor().matmul(&w.as_tensor().flatten_from(1)?)?;
            let mut shape = dims;
            shape[0] = l.keep;
            map.insert(l.weight(), fused.reshape(shape)?);
            if l.bias {
                let b = get(l.bias_name())?;
                let fb = phi.as_tensor().matmul(&b.as_tensor().unsqueeze(1)?)?.squeeze(1)?;
                map.insert(l.bias_name(), fb);
            }
        }
        Ok(map)
    }

    /// The compact network (section 2, "Extraction"): `Phi W`, `Phi b` and every other variable
    /// copied. It computes the same function as the fused network.
    pub fn to_compact(&self) -> Result<Network<A>> {
        let tensors = self.compact_tensors()?.into_iter().map(|(k, t)| Ok((k, t.copy()?))).collect::<Result<_>>()?;
        Ok(Network::from_tensors(self.compact.clone(), &tensors, &self.device)?)
    }

    /// The per-layer selections of the last refresh (`conv -> S`).
    pub fn selections(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        self.layers
            .iter()
            .map(|l| Ok((l.conv.clone(), selected_of(&self.var(&l.phi())?.as_tensor().to_vec2::<f32>()?))))
            .collect()
    }
}

/// `S` read back from `Phi`: the position of each row's largest entry (exact once `Phi` is
/// one-hot; before, the diagonal of the proxy rows dominates: `P_jj` is the row maximum).
fn selected_of(phi: &[Vec<f32>]) -> Vec<usize> {
    phi.iter()
        .map(|row| row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect()
}

impl<A: Architecture> Model for FusedNetwork<A>
where
    A::Config: LayerwiseRates,
{
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> compress_nn::Result<Tensor> {
        let tensors = self.compact_tensors().map_err(|e| compress_nn::NnError::Method(Box::new(e)))?;
        let model = A::build(&self.compact, VarBuilder::from_tensors(tensors, DType::F32, &self.device))?;
        Ok(model.forward_t(x, train)?)
    }
}
