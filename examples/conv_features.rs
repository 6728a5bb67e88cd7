//! A CNN block's normalization: `BatchNorm2d` with ResNet's fused
//! `relu(bn(x) + shortcut)` on a channels-last image batch `(N, H, W, C)`,
//! as image pipelines and many convolution kernels produce it; training
//! steps with backward, then eval, each checked against the CPU reference
//! (the example fails, exit code 1, when a value differs by more than
//! 1e-4; CI runs it).
//!
//! `cargo run --release --example conv_features`

use wgpu_batchnorm::{
    cpu, BatchNorm2d, BatchNormConfig, Epilogue, GpuContext, MemoryFormat, Tensor,
};

/// A deterministic stand-in for conv outputs and the block's shortcut.
fn feature_map(seed: u32, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let t = (i as f32 * 0.37 + seed as f32 * 1.7).sin();
            2.0 * t + 0.5 * (i as f32 * 0.011).cos()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .map(|d| if d.is_nan() { f32::INFINITY } else { d })
        .fold(0.0, f32::max)
}

/// The largest difference from the CPU reference that passes.
const TOLERANCE: f32 = 1e-4;

/// Runs the block; returns the largest difference from the reference.
fn run() -> wgpu_batchnorm::Result<f32> {
    let ctx = GpuContext::new()?;
    let (n, c, h, w) = (8, 16, 12, 12);
    // Logical shape (N, C, H, W), as PyTorch; stored (N, H, W, C).
    let shape = [n, c, h, w];
    let nhwc = MemoryFormat::ChannelsLast;
    let numel = n * c * h * w;

    let mut bn = BatchNorm2d::new(&ctx, BatchNormConfig::new(c))?;
    let mut reference = cpu::BatchNorm2d::new(BatchNormConfig::new(c))?;
    let gamma: Vec<f32> = (0..c).map(|i| 1.0 + 0.05 * i as f32).collect();
    bn.set_weight(&gamma)?;
    reference.set_weight(&gamma)?;

    // Refilled every step: a training loop allocates nothing.
    let x = Tensor::zeros_with(&ctx, &shape, wgpu_batchnorm::DType::F32, nhwc)?;
    let shortcut = Tensor::zeros_with(&ctx, &shape, wgpu_batchnorm::DType::F32, nhwc)?;
    let dy = Tensor::zeros_with(&ctx, &shape, wgpu_batchnorm::DType::F32, nhwc)?;
    let y = Tensor::zeros_with(&ctx, &shape, wgpu_batchnorm::DType::F32, nhwc)?;
    let mut grads = None;
    let mut worst = 0.0f32;

    for step in 0..3u32 {
        let (xs, rs, gs) = (
            feature_map(step, numel),
            feature_map(step + 10, numel),
            feature_map(step + 20, numel),
        );
        x.write_from_slice(&xs)?;
        shortcut.write_from_slice(&rs)?;
        dy.write_from_slice(&gs)?;
        bn.forward_fused_into(&x, Epilogue::relu().with_residual(&shortcut), &y)?;
        let g = match grads.as_mut() {
            None => grads.insert(bn.backward(&dy)?),
            Some(g) => {
                bn.backward_into(&dy, g)?;
                g
            }
        };
        let want = reference.forward_fused(&xs, &shape, nhwc, Some(&rs), true)?;
        let want_g = reference.backward(&gs)?;
        let dr = g.grad_residual.as_ref().map(|t| t.to_vec()).transpose()?;
        let diffs = [
            max_diff(&y.to_vec()?, &want),
            max_diff(&g.grad_input.to_vec()?, &want_g.grad_input),
            match (dr, want_g.grad_residual) {
                (Some(a), Some(b)) if a.len() == b.len() => max_diff(&a, &b),
                _ => f32::INFINITY, // the shortcut's gradient is missing
            },
        ];
        println!(
            "train step {step}: max |diff| output {:.1e}, grad_input {:.1e}, grad_shortcut {:.1e}",
            diffs[0], diffs[1], diffs[2]
        );
        worst = diffs.into_iter().fold(worst, f32::max);
    }

    bn.eval();
    reference.eval();
    let xs = feature_map(99, numel);
    x.write_from_slice(&xs)?;
    let out = bn.forward_fused(&x, Epilogue::relu().with_residual(&shortcut))?;
    let rs = shortcut.to_vec()?;
    let want = reference.forward_fused(&xs, &shape, nhwc, Some(&rs), true)?;
    let got = out.to_vec()?;
    let zeros = got.iter().filter(|&&v| v == 0.0).count();
    let diff = max_diff(&got, &want);
    worst = worst.max(diff);
    println!(
        "eval: max |diff| {:.1e}; {:.0}% of activations clipped by the ReLU; running_mean[0..4] {:?}",
        diff,
        100.0 * zeros as f32 / numel as f32,
        &bn.running_mean()?.unwrap_or_default()[..4]
    );
    Ok(worst)
}

fn main() {
    match run() {
        Ok(worst) if worst <= TOLERANCE => println!("ok: largest difference {worst:.1e}"),
        Ok(worst) => {
            eprintln!(
                "error: a value differs from the CPU reference by {worst:.1e} (> {TOLERANCE:.0e})"
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
