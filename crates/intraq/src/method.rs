//! IntraQ on any network built from the toolkit's layers: [`quantize`] synthesises images from
//! the full-precision teacher (stage 1), calibrates and fine-tunes a fake-quantized copy of it
//! (stage 2), and [`export_weights`] writes the student's integer weights.
//!
//! The method's settings ([`IntraqSettings`]: bits, what to synthesise, IntraQ's own terms, the
//! range rule) are apart from the fine-tuning recipe ([`FinetuneConfig`]). The network must run
//! its convolutions, linear layers and activations through `compress_nn::layers` (that is where
//! the quantizers sit) and have BatchNorm layers (whose statistics synthesis matches); a network
//! whose forward leaves a conv or linear weight unquantized (a layer of its own) is refused with
//! an error naming the weights, one that goes through no quantization site with its type.

use crate::error::{IntraqError, Result};
use crate::finetune::{FinetuneConfig, calibrate, finetune, top1};
use crate::synthesis::IntraqTerms;
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use compress_core::quant::{QuantizedTensor, RangeRule, per_channel_minmax};
use compress_data::batch::Dataset;
use compress_nn::fake_quant::{FakeQuant, Quantized, Sites, with_sites};
use compress_nn::half::{HalfModel, Precision};
use compress_nn::{ArchConfig, Architecture, Model, Network};
use compress_synth::{SynthConfig, SyntheticSet, synthesize};
use compress_train::record::Run;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What IntraQ itself needs to know.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntraqSettings {
    /// Weight bits (every conv and linear layer, per output channel).
    pub wbits: u32,
    /// Activation bits (every ReLU / ReLU6 output, per tensor).
    pub abits: u32,
    /// What stage 1 synthesises (images, iterations, learning rate, image shape, classes).
    pub synth: SynthConfig,
    /// IntraQ's terms: soft targets, the marginal distance constraint, local object
    /// reinforcement.
    pub terms: IntraqTerms,
    /// How activation ranges average batch extrema.
    pub range_rule: RangeRule,
    /// The precision of the teacher's passes (synthesis, calibration targets, distillation):
    /// `Bf16` on a GPU halves their cost; the student, its quantizers and every loss stay f32.
    pub teacher_precision: Precision,
}

impl IntraqSettings {
    /// The official CIFAR-10 settings (synthesis loop and terms, bias-corrected ranges) at
    /// `W{wbits}A{abits}` for a teacher of `[C, S, S]` inputs and `classes` classes.
    pub fn official(wbits: u32, abits: u32, input: [usize; 3], classes: usize) -> Self {
        let synth = SynthConfig { channels: input[0], image_size: input[1], classes, ..SynthConfig::cifar10() };
        Self {
            wbits,
            abits,
            synth,
            terms: IntraqTerms::cifar10(),
            range_rule: RangeRule::BiasCorrected,
            teacher_precision: Precision::F32,
        }
    }
}

/// What [`quantize`] produced.
#[derive(Debug)]
pub struct Quantization<A: Architecture> {
    /// The fake-quantized student (frozen activation ranges); a `compress_nn::Model`.
    pub student: Quantized<Network<A>>,
    /// The synthetic images it was calibrated and fine-tuned on.
    pub synthetic: SyntheticSet,
    /// Top-1 (%) on the evaluation data after calibration, before fine-tuning.
    pub calibrated_top1: f64,
    /// Top-1 (%) after every `eval_every` fine-tuning steps (the last: the final student).
    pub evals: Vec<f64>,
}

/// How many quantization sites one eval forward of `net` goes through (throwaway quantizers,
/// so no range moves).
pub fn sites<A: Architecture>(net: &Network<A>, wbits: u32, abits: u32) -> Result<Sites> {
    let probe = FakeQuant::new(wbits, abits, RangeRule::Plain)?;
    let [c, h, w] = net.config.input_shape();
    let x = Tensor::zeros((1, c, h, w), DType::F32, net.device())?;
    let (y, sites) = with_sites(&probe, || net.forward_t(&x, false));
    y?;
    Ok(sites)
}

/// The conv and linear weights of `net` (`*.weight` of rank 2 or 4) that a forward did not
/// quantize, by name.
pub fn unquantized_weights<A: Architecture>(net: &Network<A>, seen: &Sites) -> Result<Vec<String>> {
    let data = net.varmap.data().lock().map_err(|_| IntraqError::Config("VarMap lock poisoned".into()))?;
    let mut v: Vec<String> = data
        .iter()
        .filter(|(k, t)| {
            k.ends_with(".weight") && matches!(t.rank(), 2 | 4) && !seen.weight_ids.contains(&t.as_tensor().id())
        })
        .map(|(k, _)| k.clone())
        .collect();
    v.sort();
    Ok(v)
}

/// Zero-shot quantization of `teacher` by IntraQ: synthesis from its BatchNorm statistics,
/// range calibration, fine-tuning with distillation. `eval` (real, labelled data) is only
/// evaluated, never trained on. The fine-tuning's run folder (log, checkpoints) goes under
/// `runs/intraq`.
pub fn quantize<A: Architecture, D: Dataset>(
    teacher: &Network<A>,
    settings: &IntraqSettings,
    recipe: &FinetuneConfig,
    eval: &D,
    seed: u64,
    runs: &Path,
) -> Result<Quantization<A>> {
    let s = sites(teacher, settings.wbits, settings.abits)?;
    let missed = unquantized_weights(teacher, &s)?;
    if !missed.is_empty() && s.weights > 0 {
        return Err(IntraqError::Config(format!(
            "the weights {missed:?} of {} were not quantized in its forward: their layers are not \
             compress_nn::layers::{{Conv2d, Linear}} (build them from those) ",
            std::any::type_name::<A>()
        )));
    }
    if s.weights == 0 || s.activations == 0 {
        return Err(IntraqError::Config(format!(
            "{} went through {} weight and {} activation quantization sites: IntraQ quantizes \
             compress_nn::layers::{{Conv2d, Linear, Activation}}; build the network from them",
            std::any::type_name::<A>(),
            s.weights,
            s.activations
        )));
    }
    let [c, h, w] = teacher.config.input_shape();
    let sc = &settings.synth;
    if (sc.channels, sc.image_size, sc.image_size) != (c, h, w) {
        return Err(IntraqError::Config(format!(
            "synthesis makes [{}, {}, {}] images, the network takes [{c}, {h}, {w}]",
            sc.channels, sc.image_size, sc.image_size
        )));
    }
    let device = teacher.device();
    let half = match settings.teacher_precision {
        Precision::F32 => None,
        p => Some(HalfModel::new(teacher, p.dtype())?),
    };
    let passes: &dyn Model = match &half {
        Some(h) => h,
        None => teacher,
    };
    let method = &mut settings.terms.method(sc.classes)?;
    let set = match &half {
        Some(h) => synthesize(h, sc, method, seed, None, device)?,
        None => synthesize(teacher, sc, method, seed, None, device)?,
    };
    let copy = Network::<A>::from_tensors(teacher.config.clone(), &teacher.tensors()?, device)?;
    let student = Quantized::new(copy, settings.wbits, settings.abits, settings.range_rule)?;
    calibrate(&student, passes, &set, recipe, seed)?;
    let calibrated_top1 = top1(&student, eval)?;
    let device_name = if device.is_cpu() { "cpu" } else { "cuda" };
    #[derive(Serialize)]
    struct Recorded<'a> {
        settings: &'a IntraqSettings,
        recipe: &'a FinetuneConfig,
    }
    let mut run = Run::create(runs, "intraq", &Recorded { settings, recipe }, seed, device_name)?;
    run.quiet = true;
    let evals = finetune(&student, passes, &set, eval, recipe, seed, &mut run, false, device)?;
    Ok(Quantization { student, synthetic: set, calibrated_top1, evals })
}

/// The integer form of every conv and linear weight of `varmap` (`*.weight` of rank 2 or 4), as
/// the student computes with it: IntraQ's per-output-channel asymmetric quantizer over the
/// weight's min / max at `wbits`. `QuantizedTensor::dequantize` gives those values bit for bit.
pub fn export_weights(varmap: &VarMap, wbits: u32) -> Result<BTreeMap<String, QuantizedTensor>> {
    let data = varmap.data().lock().map_err(|_| IntraqError::Config("VarMap lock poisoned".into()))?;
    data.iter()
        .filter(|(k, v)| k.ends_with(".weight") && matches!(v.rank(), 2 | 4))
        .map(|(k, v)| {
            let (lo, hi) = per_channel_minmax(v.as_tensor())?;
            Ok((k.clone(), QuantizedTensor::asym(v.as_tensor(), &lo, &hi, wbits)?))
        })
        .collect()
}
