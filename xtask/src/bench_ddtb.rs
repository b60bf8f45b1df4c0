//! `cargo xtask bench ddtb`: the training-step cost of fake quantization. For each arm of the
//! DDTB mini experiment (EDSR-mini x2, W2A2, batch 8 of 24 px LR patches), one Adam step of the
//! quantized student (teacher forward, attention transfer, both parameter groups) against one
//! full-precision step (L1, Adam) on the same batch, medians in one process on the same threads.

use anyhow::Result;
use candle_core::Device;
use ddtb::overhead::{arms, step_times};
use ddtb::reproduce::{MiniSettings, Profile, prepare};

pub fn run(seconds: f64) -> Result<()> {
    let fp_path = prepare(Profile::Mini, std::path::Path::new("runs"), true)?;
    let fp = compress_nn::weights::read(&fp_path, &Device::Cpu)?;
    let train = compress_data::embedded::photos_12("train", 2)?;
    let s = MiniSettings::mini();
    println!(
        "EDSR-mini x2 W2A2 train step, batch {} x {} px, {} candle thread(s); FP = full precision, L1, Adam",
        s.batch,
        s.lr_patch,
        candle_core::utils::get_num_threads()
    );
    println!("| arm | FP step (ms) | quantized step (ms) | ratio |");
    println!("| --- | --- | --- | --- |");
    for arm in arms() {
        let t = step_times(&s.config(arm, 0)?, &fp, &train, seconds)?;
        println!("| {} | {:.1} | {:.1} | {:.2} |", arm.key(), t.fp * 1e3, t.quantized * 1e3, t.ratio());
    }
    Ok(())
}
