//! Batch norm as a component of an app's GPU pipeline: the app's own buffer
//! and command encoder, async read-back, a PyTorch-compatible checkpoint,
//! folding into the preceding Linear layer, statistics across two devices,
//! and f16 tensors.
//!
//! `cargo run --release --example app_integration`

use wgpu_batchnorm::{
    wgpu, BatchNorm1d, BatchNorm1dConfig, DType, GpuContext, ShardGradSums, ShardMoments, Tensor,
};

fn run() -> wgpu_batchnorm::Result<()> {
    let ctx = GpuContext::new()?;
    let device = ctx.device();
    let (n, c) = (8, 4);
    let data: Vec<f32> = (0..n * c)
        .map(|i| (i as f32 * 0.7).sin() * 2.0 + 1.0)
        .collect();

    // 1. The app's own buffer, recorded into the app's own encoder.
    let app_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app/activations"),
        size: (n * c * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    ctx.queue()
        .write_buffer(&app_buffer, 0, bytemuck::cast_slice(&data));
    let x = Tensor::from_buffer(&ctx, app_buffer, 0, &[n, c])?;
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c))?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("app/frame"),
    });
    let y = bn.encode_forward(&mut encoder, &x)?;
    // ... the app records more passes here ...
    ctx.queue().submit([encoder.finish()]);

    // 2. Async read-back (here driven by pollster; any executor works).
    let y_host = pollster::block_on(y.to_vec_async())?;
    println!("normalized row 0: {:?}", &y_host[..c]);

    // 3. PyTorch-compatible checkpoint: names, dtypes and shapes of
    //    `bn.state_dict()`, loadable with `safetensors.torch.load_file`.
    let path = std::env::temp_dir().join("bn1.safetensors");
    bn.save_safetensors(&path, "bn1.")?;
    let mut restored = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c))?;
    restored.load_safetensors(&path, "bn1.")?;
    println!("restored state keys: {:?}", restored.state_dict()?.keys());

    // 4. Fold the eval transform into the preceding Linear(3, 4).
    let (w, b) = (vec![0.5f32; c * 3], vec![0.1f32; c]);
    let folded = bn.fold_into_linear(&w, Some(&b), 3)?;
    println!("folded bias: {:?}", folded.bias);

    // 5. Statistics across two devices (SyncBatchNorm), forward and backward.
    let ctx2 = GpuContext::new()?;
    let mut bn_a = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c))?;
    let mut bn_b = BatchNorm1d::new(&ctx2, BatchNorm1dConfig::new(c))?;
    let xa = Tensor::from_slice(&ctx, &data[..3 * c], &[3, c])?;
    let xb = Tensor::from_slice(&ctx2, &data[3 * c..], &[n - 3, c])?;
    let global = ShardMoments::merge(&[bn_a.shard_moments(&xa)?, bn_b.shard_moments(&xb)?])?;
    let ya = bn_a.forward_with_moments(&xa, &global)?.to_vec()?;
    println!("sharded row 0: {:?} (same as above)", &ya[..c]);
    let _ = bn_b.forward_with_moments(&xb, &global)?;
    let dya = Tensor::from_slice(&ctx, &vec![1.0f32; 3 * c], &[3, c])?;
    let dyb = Tensor::from_slice(&ctx2, &vec![1.0f32; (n - 3) * c], &[n - 3, c])?;
    let sums = ShardGradSums::merge(&[bn_a.shard_grad_sums(&dya)?, bn_b.shard_grad_sums(&dyb)?])?;
    let grads_a = bn_a.backward_with_sums(&dya, &sums)?;
    let grads_b = bn_b.backward_with_sums(&dyb, &sums)?;
    // Parameter gradients are each device's local sums (PyTorch's
    // SyncBatchNorm convention); data-parallel training all-reduces them.
    if let (Some(ga), Some(gb)) = (&grads_a.grad_bias, &grads_b.grad_bias) {
        let total: Vec<f32> = ga
            .to_vec()?
            .iter()
            .zip(gb.to_vec()?)
            .map(|(a, b)| a + b)
            .collect();
        println!("grad_bias summed over devices (N = {n} rows of ones): {total:?}");
    }

    // 6. f16 storage, f32 accumulation (needs SHADER_F16).
    let halves: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
    let x16 = Tensor::from_f16(&ctx, &halves, &[n, c])?;
    let mut bn16 = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c))?;
    match bn16.forward(&x16) {
        Ok(y16) => println!(
            "f16 row 0: {:?} ({:?})",
            &y16.to_vec()?[..c],
            y16.dtype() == DType::F16
        ),
        Err(e) => println!("f16 not available on this adapter: {e}"),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        // Display, not Debug: the message says what went wrong and what to do.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
