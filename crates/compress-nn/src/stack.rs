//! The structure of a user's own sequential or residual network, declared in a few lines.
//!
//! A [`Stack`] lists the network's layers in forward order by their tensor prefixes; each conv
//! or linear layer opens a channel group named after it, a norm joins the current group, a
//! residual block's last layer adds back into the block's input group, and the output layer's
//! channels are fixed. [`Stack::build`] checks the declaration and returns a [`StackConfig`]: an
//! [`ArchConfig`] whose groups are derived, so a user's `Architecture` only reads its widths.
//!
//! ```
//! use compress_nn::stack::Stack;
//! use compress_nn::ArchConfig;
//!
//! let cfg = Stack::new([1, 28, 28])
//!     .conv("stem", 16).norm("stem_bn")
//!     .residual(|b| b.conv("block.conv1", 16).norm("block.bn1").conv_into("block.conv2").norm("block.bn2"))
//!     .conv("head", 32).norm("head_bn")
//!     .output("fc", 10).bias()
//!     .build()?;
//! let groups = cfg.groups();
//! assert_eq!(groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["stem", "block.conv1", "head", "fc"]);
//! // The residual block's second conv produces into the stem's group.
//! assert!(groups[0].members.iter().any(|m| m.tensor == "block.conv2.weight"));
//! # Ok::<(), compress_nn::NnError>(())
//! ```

use crate::error::{Result, config_err};
use crate::network::{ArchConfig, replace_widths};
use crate::structure::{ChannelGroup, Member, Widths};
use std::collections::BTreeSet;

/// One declared step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A conv or linear layer that produces a new group, named after its prefix.
    Layer { prefix: String, width: usize, bias: bool },
    /// A layer that adds into the enclosing residual block's input group.
    Into { prefix: String, bias: bool },
    /// A BatchNorm over the current group.
    Norm { prefix: String },
    /// A flatten: each channel becomes `positions` consecutive inputs of the next layer.
    Flatten { positions: usize },
    /// The output layer: `outputs` channels that are never pruned.
    Output { prefix: String, outputs: usize, bias: bool },
    /// A block whose output is added to its input (an identity shortcut).
    Residual(Vec<Step>),
    /// `bias()` after a step that is not a layer (refused by `build`).
    MisplacedBias,
}

/// A network's layers in forward order (see the [module](self) example).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    input: [usize; 3],
    steps: Vec<Step>,
}

impl Stack {
    /// An empty stack for inputs of `[C, H, W]`.
    pub fn new(input: [usize; 3]) -> Self {
        Self { input, steps: Vec::new() }
    }

    fn push(mut self, s: Step) -> Self {
        self.steps.push(s);
        self
    }

    /// A convolution `<prefix>.weight` (`[width, C_in, k, k]`) with `width` filters, no bias
    /// unless [`Stack::bias`] follows.
    pub fn conv(self, prefix: &str, width: usize) -> Self {
        self.push(Step::Layer { prefix: prefix.into(), width, bias: false })
    }

    /// A hidden linear layer `<prefix>.weight` (`[width, F_in]`); the same as a conv to the
    /// structure.
    pub fn linear(self, prefix: &str, width: usize) -> Self {
        self.conv(prefix, width)
    }

    /// Inside a [`Stack::residual`] block: the layer whose output is added to the block's
    /// input, so it produces the input's channels.
    pub fn conv_into(self, prefix: &str) -> Self {
        self.push(Step::Into { prefix: prefix.into(), bias: false })
    }

    /// The previous layer has a bias `<prefix>.bias`.
    pub fn bias(mut self) -> Self {
        match self.steps.last_mut() {
            Some(Step::Layer { bias, .. } | Step::Into { bias, .. } | Step::Output { bias, .. }) => *bias = true,
            _ => self.steps.push(Step::MisplacedBias),
        }
        self
    }

    /// A BatchNorm `<prefix>.{weight, bias, running_mean, running_var}` over the current
    /// channels.
    pub fn norm(self, prefix: &str) -> Self {
        self.push(Step::Norm { prefix: prefix.into() })
    }

    /// The feature map is flattened (NCHW order) before the next layer: each channel becomes
    /// `positions = H x W` consecutive inputs. Global average pooling needs no step.
    pub fn flatten(self, positions: usize) -> Self {
        self.push(Step::Flatten { positions })
    }

    /// A block `x + f(x)`: `f` is declared on an empty stack and must end with
    /// [`Stack::conv_into`] (and norms after it).
    pub fn residual(self, f: impl FnOnce(Stack) -> Stack) -> Self {
        let inner = f(Stack::new(self.input));
        self.push(Step::Residual(inner.steps))
    }

    /// The output layer `<prefix>.weight` with `outputs` channels (classes), never pruned.
    pub fn output(self, prefix: &str, outputs: usize) -> Self {
        self.push(Step::Output { prefix: prefix.into(), outputs, bias: false })
    }

    /// Checks the declaration (a layer before any norm, residual blocks that end in their
    /// input's channels, unique names, widths of at least 1, nothing after the output layer).
    pub fn build(self) -> Result<StackConfig> {
        let mut names = BTreeSet::new();
        let mut widths = Widths::new();
        let mut outputs = Widths::new();
        check(&self.steps, false, &mut false, &mut names, &mut widths, &mut outputs)?;
        Ok(StackConfig { input: self.input, steps: self.steps, widths, outputs })
    }
}

/// Walks the steps: `open` tells whether a group is current; returns the error naming the step.
fn check(
    steps: &[Step],
    in_block: bool,
    open: &mut bool,
    names: &mut BTreeSet<String>,
    widths: &mut Widths,
    outputs: &mut Widths,
) -> Result<()> {
    let mut ended = false;
    let mut joined = !in_block;
    for s in steps {
        if ended {
            return Err(config_err(format!("stack: {s:?} comes after the output layer")));
        }
        let mut name = |p: &String| {
            if names.insert(p.clone()) { Ok(()) } else { Err(config_err(format!("stack: {p:?} is declared twice"))) }
        };
        match s {
            Step::Layer { prefix, width, .. } => {
                name(prefix)?;
                if *width == 0 {
                    return Err(config_err(format!("stack: layer {prefix:?} has width 0")));
                }
                widths.insert(prefix.clone(), *width);
                *open = true;
                joined = !in_block;
            }
            Step::Into { prefix, .. } => {
                name(prefix)?;
                if !in_block {
                    return Err(config_err(format!("stack: conv_into({prefix:?}) outside a residual block")));
                }
                joined = true;
            }
            Step::Norm { prefix } => {
                name(prefix)?;
                if !*open {
                    return Err(config_err(format!("stack: norm {prefix:?} before any layer")));
                }
            }
            Step::MisplacedBias => return Err(config_err("stack: bias() must follow a layer")),
            Step::Flatten { positions: 0 } => return Err(config_err("stack: flatten(0) is empty")),
            Step::Flatten { .. } => {}
            Step::Output { prefix, outputs: n, .. } => {
                name(prefix)?;
                if *n == 0 {
                    return Err(config_err(format!("stack: output {prefix:?} has 0 channels")));
                }
                if in_block {
                    return Err(config_err(format!("stack: output {prefix:?} inside a residual block")));
                }
                outputs.insert(prefix.clone(), *n);
                ended = true;
            }
            Step::Residual(inner) => {
                if !*open {
                    return Err(config_err("stack: a residual block needs a layer before it"));
                }
                check(inner, true, open, names, widths, outputs)?;
                joined = !in_block;
            }
        }
    }
    if in_block && !joined {
        return Err(config_err(
            "stack: a residual block must end with conv_into (its output is added to its input), then norms only",
        ));
    }
    Ok(())
}

/// A declared network's configuration: its widths, by layer prefix, and the channel groups the
/// declaration implies. A user's [`crate::Architecture`] uses it as its `Config` and reads
/// [`StackConfig::width`] when it builds its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    input: [usize; 3],
    steps: Vec<Step>,
    widths: Widths,
    outputs: Widths,
}

impl StackConfig {
    /// The width of layer `prefix` (its output channels), for the model's `build`.
    pub fn width(&self, prefix: &str) -> candle_core::Result<usize> {
        self.widths
            .get(prefix)
            .or_else(|| self.outputs.get(prefix))
            .copied()
            .ok_or_else(|| candle_core::Error::Msg(format!("the stack declares no layer {prefix:?}")))
    }

    /// The convolutions and hidden linear layers that produce prunable channels, in forward
    /// order, with the group each produces (a residual block's last layer produces its input's).
    pub fn producers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        producers(&self.steps, None, &mut None, &mut out);
        out
    }
}

fn producers(steps: &[Step], block: Option<&str>, current: &mut Option<String>, out: &mut Vec<(String, String)>) {
    for s in steps {
        match s {
            Step::Layer { prefix, .. } => {
                out.push((prefix.clone(), prefix.clone()));
                *current = Some(prefix.clone());
            }
            Step::Into { prefix, .. } => {
                let g = block.map(str::to_string).unwrap_or_default();
                out.push((prefix.clone(), g.clone()));
                *current = Some(g);
            }
            Step::Residual(inner) => {
                let input = current.clone();
                producers(inner, input.as_deref(), current, out);
            }
            _ => {}
        }
    }
}

/// Appends the groups of `steps`; `current` is the index of the current group, `unit` the
/// positions per channel of the next consumer (after a flatten), `block` the residual input.
fn walk(
    steps: &[Step],
    widths: &Widths,
    groups: &mut Vec<ChannelGroup>,
    current: &mut Option<usize>,
    unit: &mut usize,
    block: Option<usize>,
) {
    let consume = |groups: &mut Vec<ChannelGroup>, current: Option<usize>, prefix: &str, unit: &mut usize| {
        if let Some(c) = current {
            groups[c].members.push(Member::consume(format!("{prefix}.weight")).unit(*unit));
        }
        *unit = 1;
    };
    for s in steps {
        match s {
            Step::Layer { prefix, bias, .. } => {
                consume(groups, *current, prefix, unit);
                let width = widths.get(prefix).copied().unwrap_or(0);
                groups.push(ChannelGroup::new(prefix.clone(), width).produced_by(prefix, *bias));
                *current = Some(groups.len() - 1);
            }
            Step::Into { prefix, bias } => {
                consume(groups, *current, prefix, unit);
                if let Some(b) = block {
                    let g = std::mem::replace(&mut groups[b], ChannelGroup::new("", 0));
                    groups[b] = g.produced_by(prefix, *bias);
                }
                *current = block;
            }
            Step::Norm { prefix } => {
                if let Some(c) = *current {
                    let g = std::mem::replace(&mut groups[c], ChannelGroup::new("", 0));
                    groups[c] = g.batch_norm(prefix);
                }
            }
            Step::Flatten { positions } => *unit = *positions,
            Step::Output { prefix, outputs, bias } => {
                consume(groups, *current, prefix, unit);
                groups.push(ChannelGroup::new(prefix.clone(), *outputs).fixed().produced_by(prefix, *bias));
                *current = Some(groups.len() - 1);
            }
            Step::Residual(inner) => {
                let input = *current;
                walk(inner, widths, groups, current, unit, input);
            }
            Step::MisplacedBias => {}
        }
    }
}

impl ArchConfig for StackConfig {
    fn widths(&self) -> &Widths {
        &self.widths
    }

    /// Output layers keep their channels: naming one with another width is an error.
    fn with_widths(&self, mut widths: Widths) -> Result<Self> {
        for (name, &n) in &self.outputs {
            match widths.remove(name) {
                Some(w) if w != n => {
                    return Err(config_err(format!("output layer {name:?} has {n} channels, not {w}")));
                }
                _ => {}
            }
        }
        Ok(Self { widths: replace_widths(&self.widths, widths)?, ..self.clone() })
    }

    fn groups(&self) -> Vec<ChannelGroup> {
        let mut groups = Vec::new();
        walk(&self.steps, &self.widths, &mut groups, &mut None, &mut 1, None);
        groups
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_are_named() {
        let err = |s: Stack| s.build().expect_err("must be refused").to_string();
        assert!(err(Stack::new([1, 8, 8]).norm("bn")).contains("norm \"bn\" before any layer"));
        assert!(err(Stack::new([1, 8, 8]).conv("a", 4).conv("a", 4)).contains("\"a\" is declared twice"));
        assert!(err(Stack::new([1, 8, 8]).conv("a", 0)).contains("width 0"));
        assert!(err(Stack::new([1, 8, 8]).conv("a", 4).residual(|b| b.conv("b", 4))).contains("conv_into"));
        assert!(err(Stack::new([1, 8, 8]).conv_into("a")).contains("outside a residual"));
        assert!(err(Stack::new([1, 8, 8]).conv("a", 4).output("fc", 2).conv("c", 3)).contains("after the output"));
        assert!(err(Stack::new([1, 8, 8]).conv("a", 4).flatten(4).bias()).contains("bias() must follow a layer"));
    }

    #[test]
    fn flatten_sets_the_consumer_unit_and_producers_follow_blocks() {
        let cfg = Stack::new([1, 4, 4])
            .conv("c1", 3)
            .residual(|b| b.conv("r1", 5).conv_into("r2").bias())
            .flatten(16)
            .linear("h", 7)
            .bias()
            .output("o", 2)
            .build()
            .expect("valid");
        let g = cfg.groups();
        let c1 = &g[0];
        let m = c1.members.iter().find(|m| m.tensor == "h.weight").expect("h consumes c1");
        assert_eq!((m.axis, m.unit), (1, 16));
        assert!(c1.members.iter().any(|m| m.tensor == "r2.bias"));
        assert_eq!(
            cfg.producers(),
            [("c1", "c1"), ("r1", "r1"), ("r2", "c1"), ("h", "h")].map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(cfg.widths().len(), 3);
        assert_eq!(cfg.width("o").expect("output"), 2);
        assert!(!g[3].prunable);
    }
}
