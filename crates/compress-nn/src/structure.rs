//! A network's structure as data: widths by name, and the channel groups that tie tensors.
//!
//! A [`ChannelGroup`] is a set of `(tensor, axis)` members that must shrink together when one of
//! the group's channels is removed: the conv that produces the channel, the BatchNorm that
//! follows, every conv or linear layer that consumes it, and, through identity shortcuts, every
//! residual block that adds into it. Group channel `g` maps to tensor indices
//! `offset + c * copy_stride + g * unit + u` for `c < copies`, `u < unit` (plain layers use
//! offset 0, unit 1, one copy; a concatenation uses an offset; attention heads use a unit of
//! the head size and three copies for q, k and v).

use std::collections::BTreeMap;

/// Every width of a network, by group name.
pub type Widths = BTreeMap<String, usize>;

/// How a member holds the group's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The channel is produced here (conv/linear weight rows, biases, norm weight and bias):
    /// zeroing these entries silences the channel.
    Produce,
    /// Running statistics of a norm: sliced by surgery, never masked.
    Statistic,
    /// The channel is consumed here (input columns of the next layer).
    Consume,
}

/// One `(tensor, axis)` of a group, with the map from group channels to tensor indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Tensor name in the model's `VarMap`.
    pub tensor: String,
    /// Axis along which the group's channels lie.
    pub axis: usize,
    /// Produced, statistic, or consumed.
    pub role: Role,
    /// First tensor index of the group along `axis`.
    pub offset: usize,
    /// Tensor indices per group channel.
    pub unit: usize,
    /// Number of copies of the group along `axis` (3 for fused q, k, v).
    pub copies: usize,
    /// Distance between copies.
    pub copy_stride: usize,
}

impl Member {
    fn new(tensor: impl Into<String>, axis: usize, role: Role) -> Self {
        Self { tensor: tensor.into(), axis, role, offset: 0, unit: 1, copies: 1, copy_stride: 0 }
    }

    /// Output rows of a weight or the entries of a bias (`axis 0`, produced).
    pub fn produce(tensor: impl Into<String>) -> Self {
        Self::new(tensor, 0, Role::Produce)
    }

    /// Input columns of a conv or linear weight (`axis 1`, consumed).
    pub fn consume(tensor: impl Into<String>) -> Self {
        Self::new(tensor, 1, Role::Consume)
    }

    /// A running statistic (`axis 0`).
    pub fn statistic(tensor: impl Into<String>) -> Self {
        Self::new(tensor, 0, Role::Statistic)
    }

    /// The same member starting at tensor index `offset`.
    pub fn at(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The same member with `unit` tensor indices per group channel.
    pub fn unit(mut self, unit: usize) -> Self {
        self.unit = unit;
        self
    }

    /// The same member repeated `copies` times, `stride` apart.
    pub fn copies(mut self, copies: usize, stride: usize) -> Self {
        self.copies = copies;
        self.copy_stride = stride;
        self
    }

    /// The tensor indices of group channel `g`.
    pub fn indices(&self, g: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.copies)
            .flat_map(move |c| (0..self.unit).map(move |u| self.offset + c * self.copy_stride + g * self.unit + u))
    }

    /// The largest tensor index this member touches for a group of `width` channels, plus one.
    pub fn extent(&self, width: usize) -> usize {
        self.offset + (self.copies - 1) * self.copy_stride + width * self.unit
    }
}

/// A set of tensor axes that shrink together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// Name, also the key of the group's width in the config's [`Widths`].
    pub name: String,
    /// Current number of channels.
    pub width: usize,
    /// Whether structured pruning may shrink it (false where an architecture ties channels by
    /// position, e.g. zero-padding shortcuts, or normalises over them, e.g. a ViT's LayerNorm).
    pub prunable: bool,
    /// The tied tensor axes.
    pub members: Vec<Member>,
}

impl ChannelGroup {
    /// A prunable group.
    pub fn new(name: impl Into<String>, width: usize) -> Self {
        Self { name: name.into(), width, prunable: true, members: Vec::new() }
    }

    /// Marks the group as not prunable.
    pub fn fixed(mut self) -> Self {
        self.prunable = false;
        self
    }

    /// Adds a member.
    pub fn with(mut self, m: Member) -> Self {
        self.members.push(m);
        self
    }

    /// Adds the members of a conv (or linear) layer `prefix` that produces the group.
    pub fn produced_by(mut self, prefix: &str, bias: bool) -> Self {
        self.members.push(Member::produce(format!("{prefix}.weight")));
        if bias {
            self.members.push(Member::produce(format!("{prefix}.bias")));
        }
        self
    }

    /// Adds a BatchNorm `prefix` over the group (weight and bias produced, statistics sliced).
    pub fn batch_norm(mut self, prefix: &str) -> Self {
        self.members.push(Member::produce(format!("{prefix}.weight")));
        self.members.push(Member::produce(format!("{prefix}.bias")));
        self.members.push(Member::statistic(format!("{prefix}.running_mean")));
        self.members.push(Member::statistic(format!("{prefix}.running_var")));
        self
    }

    /// Adds a conv or linear layer `prefix` that consumes the group on its input axis.
    pub fn consumed_by(mut self, prefix: &str) -> Self {
        self.members.push(Member::consume(format!("{prefix}.weight")));
        self
    }

    /// Adds a depthwise conv `prefix` (weight `[C, 1, k, k]`) that carries the group through.
    pub fn depthwise(mut self, prefix: &str, bias: bool) -> Self {
        self = self.produced_by(prefix, bias);
        self
    }
}

/// Checks a declaration against a model's tensor shapes (`name -> dims`): every member's tensor
/// exists and has the member's axis; the group's channels fit on that axis, and a member that is
/// alone on its axis (no offset, one copy, no other group there) spans it exactly, so a wrong
/// width is caught; a produced `<layer>.weight` whose `<layer>.bias` exists declares the bias in
/// the same group. The error names the group and the entry that is wrong.
pub fn check_groups(groups: &[ChannelGroup], shapes: &BTreeMap<String, Vec<usize>>) -> Result<(), String> {
    let mut on_axis: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for m in groups.iter().flat_map(|g| &g.members) {
        *on_axis.entry((m.tensor.as_str(), m.axis)).or_default() += 1;
    }
    for g in groups {
        for m in &g.members {
            let wrong =
                |what: String| format!("channel group {:?}, member {:?} axis {}: {what}", g.name, m.tensor, m.axis);
            let dims = shapes.get(&m.tensor).ok_or_else(|| wrong("the model has no such tensor".into()))?;
            let n = *dims.get(m.axis).ok_or_else(|| wrong(format!("the tensor has shape {dims:?}")))?;
            let extent = m.extent(g.width);
            let alone = m.offset == 0 && m.copies == 1 && on_axis[&(m.tensor.as_str(), m.axis)] == 1;
            if extent > n || (alone && extent != n) {
                return Err(wrong(format!(
                    "{} channels x {} indices need {extent} entries, the tensor has {n} (shape {dims:?})",
                    g.width, m.unit
                )));
            }
            if m.role == Role::Produce
                && let Some(layer) = m.tensor.strip_suffix(".weight")
            {
                let bias = format!("{layer}.bias");
                let has_bias = shapes.get(&bias).is_some_and(|d| d.len() == 1);
                let is_norm = g.members.iter().any(|o| o.tensor == format!("{layer}.running_mean"));
                if has_bias && !is_norm && !g.members.iter().any(|o| o.tensor == bias) {
                    return Err(wrong(format!("{bias} exists but is not declared in the group")));
                }
            }
        }
    }
    Ok(())
}
