//! Ours against Burn's `BatchNorm` (burn-wgpu) on the same shapes, training
//! and eval forward, each timed to GPU completion; prints a table with the
//! ratio ours / Burn's (lower is better).
//!
//! `cd bench-peers && cargo run --release`
//! (`BN_BENCH_SHAPES=2048x64x64,... ` to choose shapes).

use std::time::{Duration, Instant};

use burn::backend::wgpu::WgpuDevice;
use burn::nn::BatchNormConfig;
use burn::tensor::{Device, Distribution, Tensor as BurnTensor};
use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, GpuContext, Tensor};

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn burn_times<const D: usize>(shape: [usize; D], runs: usize) -> (Duration, Duration) {
    let device = Device::new(WgpuDevice::default());
    let c = shape[1];
    // Training: an autodiff device makes Burn use batch statistics.
    let train_device = device.clone().autodiff();
    let bn_train = BatchNormConfig::new(c).init(&train_device);
    let x_train = BurnTensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &train_device);
    let train = median(
        || {
            // Keep the output alive across the sync so no lazy/fused
            // backend can skip computing it.
            let y = bn_train.forward(x_train.clone());
            train_device.sync().expect("sync");
            drop(y);
        },
        runs,
    );
    let bn_eval = BatchNormConfig::new(c).init(&device);
    let x_eval = BurnTensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let eval = median(
        || {
            let y = bn_eval.forward(x_eval.clone());
            device.sync().expect("sync");
            drop(y);
        },
        runs,
    );
    (train, eval)
}

fn our_times(ctx: &GpuContext, shape: &[usize], runs: usize) -> (Duration, Duration) {
    let numel: usize = shape.iter().product();
    let host: Vec<f32> = (0..numel).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let x = Tensor::from_slice(ctx, &host, shape).expect("x");
    let y = Tensor::zeros(ctx, shape).expect("y");
    let mut bn = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(shape[1])).expect("bn");
    let train = median(
        || {
            bn.forward_into(&x, &y).expect("forward");
            ctx.synchronize().expect("sync");
        },
        runs,
    );
    bn.eval();
    let eval = median(
        || {
            bn.forward_into(&x, &y).expect("forward");
            ctx.synchronize().expect("sync");
        },
        runs,
    );
    (train, eval)
}

fn main() {
    let shapes: Vec<Vec<usize>> = std::env::var("BN_BENCH_SHAPES")
        .unwrap_or_else(|_| "262144x64,2048x64x64,4096x3x256,32x20".into())
        .split(',')
        .map(|s| s.split('x').filter_map(|d| d.parse().ok()).collect())
        .collect();
    let runs = 11;
    let ctx = GpuContext::new().expect("adapter");
    let adapter = ctx.adapter_info().map(|i| i.name.clone()).unwrap_or_default();
    println!("Ours vs Burn 0.22 BatchNorm (wgpu backend) on {adapter}, median of {runs}");
    println!("| op | shape | ours | Burn | ours / Burn |");
    println!("| --- | --- | --- | --- | --- |");
    for shape in shapes {
        let (ot, oe) = our_times(&ctx, &shape, runs);
        let (bt, be) = match shape.len() {
            2 => burn_times([shape[0], shape[1]], runs),
            _ => burn_times([shape[0], shape[1], shape[2]], runs),
        };
        let name = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        for (op, o, b) in [("train_forward", ot, bt), ("eval_forward", oe, be)] {
            println!(
                "| {op} | {name} | {:.3} ms | {:.3} ms | {:.2} |",
                o.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                o.as_secs_f64() / b.as_secs_f64()
            );
        }
    }
}
