//! What a quantized SR network quantizes and how (spec sections 2.1-2.3, 4): one
//! [`QuantScheme`] per model; every activation-quantizer site holds an [`ActQuant`], every
//! quantized body conv a [`QuantConv2d`]. The full-precision scheme builds the teacher with the
//! same code and the same variable names as the student, so its features line up for the
//! attention-transfer loss.

use crate::act_quant::{BoundInit, DualBoundActQuant, Phase};
use crate::error::{DdtbError, Result};
use crate::gate::DynamicGate;
use crate::intensity::RangeStats;
use crate::pams::PamsActQuant;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use compress_core::quant::{WeightQuantizer, check_bits};
use compress_nn::layers::{Conv2d, ConvSpec};
use std::sync::atomic::{AtomicBool, Ordering};

/// The activation quantizer a model uses at every site.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ActScheme {
    /// Full precision (the teacher).
    Full,
    /// DDTB's dual trainable bounds.
    Ddtb(BoundInit),
    /// PAMS' symmetric trainable clip.
    Pams,
}

/// Bits, activation quantizer and body-weight quantizer of a model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantScheme {
    /// Weights and activations share the bit-width (spec section 3).
    pub bits: u32,
    /// Activation quantizer.
    pub act: ActScheme,
    /// Body-weight quantizer (`None`: full-precision weights).
    pub weight: Option<WeightQuantizer>,
    /// Quantize weights during the calibration batches too (the official RDN run does, through
    /// its min/max quantizer; the validated mini settings keep them off).
    pub weights_in_calibration: bool,
}

impl QuantScheme {
    /// Everything in full precision.
    pub fn full_precision() -> Self {
        Self { bits: 32, act: ActScheme::Full, weight: None, weights_in_calibration: false }
    }

    /// Checks bits and the weight quantizer.
    pub fn validate(&self) -> Result<()> {
        if self.act != ActScheme::Full || self.weight.is_some() {
            check_bits(self.bits)?;
        }
        if let Some(w) = self.weight {
            w.validate()?;
        }
        if self.act == ActScheme::Pams && self.bits < 2 {
            return Err(DdtbError::Config("PAMS needs at least 2 bits".into()));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Inner {
    Identity,
    Ddtb(Box<DualBoundActQuant>),
    Pams { q: PamsActQuant, full_precision: AtomicBool },
}

/// One activation-quantizer site of a network, named by its variable prefix.
#[derive(Debug)]
pub struct ActQuant {
    /// Variable prefix (e.g. `body.3.quant_act1`).
    pub name: String,
    inner: Inner,
}

impl ActQuant {
    /// The quantizer the scheme asks for, with its variables under `vb`.
    pub fn new(scheme: &QuantScheme, vb: VarBuilder) -> Result<Self> {
        let name = vb.prefix();
        let inner = match scheme.act {
            ActScheme::Full => Inner::Identity,
            ActScheme::Ddtb(init) => Inner::Ddtb(Box::new(DualBoundActQuant::new(scheme.bits, init, vb)?)),
            ActScheme::Pams => {
                Inner::Pams { q: PamsActQuant::new(scheme.bits, vb)?, full_precision: AtomicBool::new(true) }
            }
        };
        Ok(Self { name, inner })
    }

    /// Quantizes `x` as the phase says.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.inner {
            Inner::Identity => Ok(x.clone()),
            Inner::Ddtb(q) => q.forward_t(x, train),
            Inner::Pams { q, full_precision } => {
                if full_precision.load(Ordering::Relaxed) {
                    Ok(x.clone())
                } else {
                    q.forward(x)
                }
            }
        }
    }

    /// Moves to `phase` (PAMS knows only calibration, in full precision, and the rest).
    pub fn set_phase(&self, phase: Phase) -> Result<()> {
        match &self.inner {
            Inner::Identity => Ok(()),
            Inner::Ddtb(q) => q.set_phase(phase),
            Inner::Pams { full_precision, .. } => {
                full_precision.store(phase == Phase::Calibrate, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The DDTB quantizer, if this site has one.
    pub fn ddtb(&self) -> Option<&DualBoundActQuant> {
        match &self.inner {
            Inner::Ddtb(q) => Some(q),
            _ => None,
        }
    }

    /// Calibration statistics (DDTB sites only).
    pub fn stats(&self) -> Result<Option<RangeStats>> {
        self.ddtb().map(|q| q.stats()).transpose()
    }

    /// Gives a DDTB site its gate.
    pub fn attach_gate(&self, gate: DynamicGate) -> Result<()> {
        match &self.inner {
            Inner::Ddtb(q) => q.attach_gate(gate),
            _ => Err(DdtbError::Config(format!("{}: only DDTB quantizers take a gate", self.name))),
        }
    }

    /// Marks the bounds (or PAMS' alpha) as already initialised (resumed runs).
    pub fn mark_initialised(&self) -> Result<()> {
        match &self.inner {
            Inner::Identity => Ok(()),
            Inner::Ddtb(q) => q.mark_initialised(),
            Inner::Pams { q, .. } => q.mark_initialised(),
        }
    }
}

/// A convolution whose weight is fake-quantized at every forward (spec 2.3: per tensor, range
/// recomputed from the detached weight, STE inside it); biases stay in full precision.
#[derive(Debug)]
pub struct QuantConv2d {
    /// The layer (its variables keep the zoo's names).
    pub conv: Conv2d,
    quant: Option<(WeightQuantizer, u32)>,
    calibrating: AtomicBool,
    in_calibration: bool,
}

impl QuantConv2d {
    /// A body conv under `vb`, quantized as the scheme says.
    pub fn new(cin: usize, cout: usize, spec: ConvSpec, scheme: &QuantScheme, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(cin, cout, spec, vb)?,
            quant: scheme.weight.map(|w| (w, scheme.bits)),
            calibrating: AtomicBool::new(true),
            in_calibration: scheme.weights_in_calibration,
        })
    }

    /// Whether the weight is quantized at all.
    pub fn is_quantized(&self) -> bool {
        self.quant.is_some()
    }

    /// Moves to `phase` (weights stay full precision while calibrating unless the scheme says
    /// otherwise).
    pub fn set_phase(&self, phase: Phase) {
        self.calibrating.store(phase == Phase::Calibrate, Ordering::Relaxed);
    }

    /// The weight as the forward pass uses it.
    pub fn effective_weight(&self) -> Result<Tensor> {
        let w = self.conv.weight();
        match self.quant {
            Some(_) if self.calibrating.load(Ordering::Relaxed) && !self.in_calibration => Ok(w.clone()),
            Some((q, bits)) => Ok(q.quantize(w, bits)?),
            None => Ok(w.clone()),
        }
    }

    /// `conv(x)` with the effective weight.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.quant.is_none() {
            return Ok(self.conv.forward(x)?);
        }
        Ok(self.conv.forward_with_weight(x, &self.effective_weight()?)?)
    }
}
