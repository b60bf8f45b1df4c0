//! `cargo xtask bench synth`: speed of data-free image synthesis (IntraQ's stage 1) for a CIFAR
//! ResNet-20 at 32 x 32, batch 256, with LOR, soft labels and MDC on (the CIFAR-10 script): one
//! Adam iteration = probed forward of the teacher, BN-statistics + inception + MDC losses,
//! backward to the images, Adam step. Weights are random (speed does not depend on them; the BN
//! running statistics are the initial 0 / 1).

use anyhow::Result;
use candle_core::Device;
use compress_nn::network::Network;
use compress_nn::zoo::{ResNetCifar, ResNetCifarConfig};
use compress_synth::{SynthConfig, synthesize};

pub fn run(iters: usize) -> Result<()> {
    let dev = Device::Cpu;
    let net = Network::<ResNetCifar>::new(ResNetCifarConfig::new(20, 10)?, 0, &dev)?;
    let iters = iters.max(2);
    let cfg = |n: usize| SynthConfig { groups: 2, batches_per_group: 1, iters: n, ..SynthConfig::cifar10() };
    // Group 2 has class centres (MDC on); a 1-iteration run measures the fixed per-batch cost.
    let t0 = std::time::Instant::now();
    synthesize(&net, &cfg(1), 0, &[], None, &dev)?;
    let fixed = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    synthesize(&net, &cfg(iters), 0, &[], None, &dev)?;
    let total = t1.elapsed().as_secs_f64();
    let per_iter = (total - fixed) / (2 * (iters - 1)) as f64;
    println!(
        "ResNet-20, 32x32, batch 256, {} candle thread(s): {:.0} ms per Adam iteration, {:.0} image-iterations/s; \
         at the official 1,000 iterations a 256-image batch takes {:.0} s ({:.2} finished images/s)",
        candle_core::utils::get_num_threads(),
        per_iter * 1e3,
        256.0 / per_iter,
        per_iter * 1000.0,
        256.0 / (per_iter * 1000.0)
    );
    Ok(())
}
