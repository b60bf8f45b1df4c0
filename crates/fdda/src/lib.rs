//! FDDA: post-training quantization with fine-grained data distribution alignment (Zhong et al.,
//! "Fine-grained Data Distribution Alignment for Post-Training Quantization", ECCV 2022, arXiv
//! 2109.04186; official code `zysxmu/FDDA`).
//!
//! One real calibration image per class is too little data at 4 bits; FDDA adds synthetic images
//! from GDFQ's class-conditional generator, steered by per-class BatchNorm statistics: the
//! calibration images' statistics are "BNS centres", C-BNS pulls a class batch's deep-layer
//! statistics to its centre and D-BNS to Gaussian-perturbed centres. The quantized student is
//! then fine-tuned on real + synthetic images by distillation.
//!
//! Modules, one concept each, with their spec-section-8 tests: [`bits`] (`F{k}L{k}` and `F8L8`
//! students through the fake-quant scope's per-site bits), [`centres`] (BNS centres and `K`,
//! cached per teacher), [`losses`] (`deep_start`, C-BNS, D-BNS, the warm-up noise branch),
//! [`sampler`] (the class sampler and the branch rule), [`generator`] (the generator step with
//! the code's loss weights and Adam milestones), [`schedule`] (the student's cosine rate),
//! [`student`] (the schedule of spec 2.5 on any teacher: [`run_student`]), [`reproduce`] (the
//! section-9 mini), [`diagnose`] (why its FDDA arm settles below the calibration-only arm),
//! [`paper`] (the ImageNet table's structure on the zoo's ResNet-18, MobileNetV1/V2 and
//! RegNetX-600MF).

pub mod bench;
pub mod bits;
pub mod centres;
pub mod diagnose;
pub mod error;
pub mod generator;
pub mod losses;
pub mod net;
pub mod paper;
pub mod reproduce;
pub mod sampler;
pub mod schedule;
pub mod student;

pub use bits::{BitPolicy, student_quantizers};
pub use centres::BnsCentres;
pub use error::{FddaError, Result};
pub use generator::{FddaGenerator, GeneratorParts, GeneratorSettings, LossWeights};
pub use losses::{cbns_loss, dbns_loss, deep_start, noise_loss};
pub use sampler::{Branch, ClassSampler};
pub use schedule::student_lr;
pub use student::{
    Calibration, RangeSource, StudentOutcome, StudentSettings, SynthAug, TestSet, cbns_distance, run_student,
};
