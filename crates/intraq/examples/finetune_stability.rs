//! Why the mini's W4A4 fine-tuning swings between evaluations (issue 26): the mini's teacher and
//! arm B's synthetic digits (seed 0), then the same calibrated W4A4 student fine-tuned under a few
//! recipes, evaluated on the 1,000 test digits every 25 steps. Not run in CI (about 5 minutes).
//! Run: `cargo run --release -p intraq --example finetune_stability`
use candle_core::Device;
use compress_nn::fake_quant::Quantized;
use compress_synth::synthesize;
use compress_train::{RunContext, record::Run};
use intraq::DigitCnn;
use intraq::finetune::{FinetuneConfig, calibrate, finetune, top1};
use intraq::reproduce::{Arm, MiniSettings, teacher};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (s, dev) = (MiniSettings::mini(), Device::Cpu);
    let root = std::env::temp_dir().join(format!("intraq-stability-{}", std::process::id()));
    let ctx = RunContext::new(&root, dev.clone()).quiet(true);
    let (teacher, acc) = teacher(&s, &ctx)?;
    let test = compress_data::embedded::mnist_5k_digits(Some(1), None)?.1;
    let (cfg, terms) = Arm::IntraQ.synth(s.groups, s.synth_batch, s.synth_iters);
    let set = synthesize(&teacher, &cfg, &mut terms.method(cfg.classes)?, 0, None, &dev)?;
    println!("teacher {acc:.1} %; {} synthetic digits (arm B, seed 0)", set.labels.len());
    let m = &s.finetune; // lr 1e-5 (x0.1 at step 400), alpha = T = 20: alpha T^2 = 8000
    let recipes = [
        ("mini: lr 1e-5, alpha 20, T 20 (KD x8000)", FinetuneConfig { eval_every: 25, ..m.clone() }),
        ("lr 1e-6, alpha 20, T 20", FinetuneConfig { eval_every: 25, lr: 1e-6, ..m.clone() }),
        ("lr 1e-5, alpha 1, T 20 (KD x400)", FinetuneConfig { eval_every: 25, kd_alpha: 1.0, ..m.clone() }),
        ("lr 1e-5, alpha 20, T 4 (KD x320)", FinetuneConfig { eval_every: 25, kd_t: 4.0, ..m.clone() }),
    ];
    for (name, ft) in recipes {
        let student = Quantized::new(DigitCnn::from_tensors(&teacher.tensors()?, &dev)?, 4, 4, s.range_rule)?;
        calibrate(&student, &teacher, &set, &ft, 0)?;
        let calibrated = top1(&student, &test)?;
        let mut run = Run::create(&root, "stability", &ft, 0, "cpu")?;
        run.quiet = true;
        let evals = finetune(&student, &teacher, &set, &test, &ft, 0, &mut run, false, &dev)?;
        let again = top1(&student, &test)?; // the same weights evaluated twice
        let drops = evals.windows(2).map(|w| w[0] - w[1]).fold(0f64, f64::max);
        let tail = &evals[evals.len().saturating_sub(8)..];
        let tail_mean = tail.iter().sum::<f64>() / tail.len() as f64;
        let tail_range =
            tail.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - tail.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("{name}: calibrated {calibrated:.1}; every 25 steps {evals:.1?}");
        println!(
            "  final {:.1} (re-evaluated {again:.1}), best {:.1}, largest drop between evaluations {drops:.1}, last 8: mean {tail_mean:.1}, range {tail_range:.1}",
            evals.last().copied().unwrap_or(f64::NAN),
            evals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        );
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
