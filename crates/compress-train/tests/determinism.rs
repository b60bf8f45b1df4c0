//! The same seed gives the same bits on one thread or several: no reduction's result may depend
//! on how the work was split between threads (convolution weight gradients, BatchNorm
//! statistics, LayerNorm, GEMMs).

mod common;
use candle_core::Device;
use common::data;
use compress_nn::zoo::{MobileNetV2, MobileNetV2Config, ResNetCifar, ResNetCifarConfig, Vit, VitConfig};
use compress_nn::{Architecture, Network};
use compress_train::optim::OptimizerKind;
use compress_train::schedule::Schedule;
use compress_train::{NoHooks, Run, TrainConfig, classify};

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 32,
        accumulate: 1,
        optimizer: OptimizerKind::sgd(0.9, true),
        weight_decay: 5e-4,
        no_decay_on_norm_and_bias: true,
        schedule: Schedule::constant(0.05),
        label_smoothing: 0.1,
        seed: 7,
        checkpoint_every: 0,
        log_every: 0,
        stop_after_steps: None,
    }
}

/// Trains `config` for three steps on a pool of `threads` threads; the final weights' bits.
fn train_on<A: Architecture>(config: A::Config, threads: usize) -> Vec<(String, Vec<u32>)>
where
    A::Config: Clone + Send + serde::Serialize,
{
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    pool.install(|| {
        let (train, test) = (data(96, true), data(32, false));
        let root = tempfile::tempdir().expect("tempdir");
        let mut run = Run::create(root.path(), "det", &cfg(), 7, "cpu").expect("run");
        run.quiet = true;
        let net = Network::<A>::new(config, 7, &Device::Cpu).expect("net");
        classify::fit(&net, &train, &test, &cfg(), &mut run, false, &mut NoHooks).expect("fit");
        let mut w: Vec<(String, Vec<u32>)> = net
            .tensors()
            .expect("tensors")
            .into_iter()
            .map(|(k, t)| {
                let v = t.flatten_all().expect("flat").to_vec1::<f32>().expect("f32");
                (k, v.into_iter().map(f32::to_bits).collect())
            })
            .collect();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    })
}

fn same_bits<A: Architecture>(config: A::Config)
where
    A::Config: Clone + Send + serde::Serialize,
{
    let one = train_on::<A>(config.clone(), 1);
    for threads in [2, 3] {
        let many = train_on::<A>(config.clone(), threads);
        assert_eq!(one.len(), many.len());
        for ((name, a), (_, b)) in one.iter().zip(&many) {
            let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(differ, 0, "{name}: {differ} of {} values differ between 1 and {threads} threads", a.len());
        }
    }
}

#[test]
fn resnet_training_is_bit_identical_on_one_and_several_threads() {
    same_bits::<ResNetCifar>(ResNetCifarConfig::new(8, 10).expect("cfg").input(1, 28));
}

#[test]
fn mobilenet_training_is_bit_identical_on_one_and_several_threads() {
    same_bits::<MobileNetV2>(MobileNetV2Config::new(0.25, 10).expect("cfg").input(1, 28).small_input());
}

#[test]
fn vit_training_is_bit_identical_on_one_and_several_threads() {
    same_bits::<Vit>(VitConfig::new(28, 7, 32, 2, 2, 64, 10).expect("cfg").channels(1));
}
