//! CLR-RNF on any network in one call: plan (CLR) -> select (RNF) -> shrink (inherit).

use crate::candidates::ClrCandidates;
use crate::clr::ClrConfig;
use crate::error::Result;
use crate::inherit::{InheritPolicy, shrink};
use crate::plan::Plan;
use crate::select::{Selected, Selection, select};
use compress_nn::{Architecture, Network};

/// The method's settings (the fine-tuning recipe is separate: the pruned network is an ordinary
/// network, trained as any other).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClrRnfSettings {
    /// `rho` and `lambda`.
    pub clr: ClrConfig,
    /// Which filters stay ([`Selection::Rnf`] is the paper's).
    pub selection: Selection,
    /// What the narrow network inherits ([`InheritPolicy::Official`] by default).
    pub inherit: InheritPolicy,
}

impl ClrRnfSettings {
    /// The paper's method at `pr_target` and `lambda`: RNF, official inheritance.
    pub fn new(pr_target: f64, lambda: f64) -> Self {
        Self { clr: ClrConfig { pr_target, lambda }, selection: Selection::Rnf, inherit: InheritPolicy::Official }
    }
}

/// A pruned network with the decisions that made it.
#[derive(Debug)]
pub struct Pruned<A: Architecture> {
    /// The narrow network (an ordinary network of the same architecture at the planned widths).
    pub network: Network<A>,
    /// CLR's plan.
    pub plan: Plan,
    /// The kept filters.
    pub selected: Selected,
}

/// Prunes `net` (usually pretrained) as the paper does: CLR plans the widths, the selection
/// picks the filters, the narrow network inherits them. `seed` feeds the random selection and
/// the re-initialised classifier.
pub fn prune<A: Architecture>(net: &Network<A>, settings: &ClrRnfSettings, seed: u64) -> Result<Pruned<A>>
where
    A::Config: ClrCandidates,
{
    let plan = Plan::new(net, &settings.clr)?;
    let selected = select(net, &plan.candidates, &plan.widths, settings.selection, seed)?;
    let network = shrink(net, &selected.kept, &plan.groups(), settings.inherit, seed)?;
    Ok(Pruned { network, plan, selected })
}
