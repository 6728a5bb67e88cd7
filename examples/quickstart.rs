//! Quick start: the two seed examples of `torch.nn.BatchNorm1d`, on the GPU.
//!
//! `cargo run --release --example quickstart`

use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, GpuContext, Tensor};

fn print_rows(name: &str, values: &[f32], row: usize) {
    println!("{name}:");
    for r in values.chunks(row) {
        let cells: Vec<String> = r.iter().map(|v| format!("{v:8.4}")).collect();
        println!("  [{}]", cells.join(", "));
    }
}

fn run() -> wgpu_batchnorm::Result<()> {
    let ctx = GpuContext::new()?;
    if let Some(info) = ctx.adapter_info() {
        println!(
            "adapter: {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        );
    }

    // BatchNorm1d(3) on [[0, 1, 2], [3, 4, 5], [6, 7, 8]], training mode.
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3))?;
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let y = bn.forward(&Tensor::from_slice(&ctx, &x, &[3, 3])?)?;
    println!("\nBatchNorm1d(3), input shape [3, 3]");
    print_rows("output", &y.to_vec()?, 3);
    println!("running_mean: {:?}", bn.running_mean()?.unwrap_or_default());
    println!("running_var:  {:?}", bn.running_var()?.unwrap_or_default());
    println!("num_batches_tracked: {}", bn.num_batches_tracked());

    // BatchNorm1d(2) on arange(12).reshape(2, 2, 3).
    let mut bn2 = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(2))?;
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let y = bn2.forward(&Tensor::from_slice(&ctx, &x, &[2, 2, 3])?)?;
    println!("\nBatchNorm1d(2), input shape [2, 2, 3]");
    print_rows("output", &y.to_vec()?, 3);
    println!(
        "running_mean: {:?}",
        bn2.running_mean()?.unwrap_or_default()
    );
    println!("running_var:  {:?}", bn2.running_var()?.unwrap_or_default());

    // Eval mode uses the running statistics.
    bn2.eval();
    let y = bn2.forward(&Tensor::from_slice(&ctx, &x, &[2, 2, 3])?)?;
    print_rows("eval output", &y.to_vec()?, 3);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        // Display, not Debug: the message says what went wrong and what to do.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
