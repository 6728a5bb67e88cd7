//! Tensors larger than one storage binding are processed in chunks of rows.
//! A device created with a tiny `max_storage_buffer_binding_size` forces
//! many chunks on small shapes; results must equal the CPU reference.

mod common;

use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, ContextOptions, GpuContext, Tensor};

fn small_binding_context() -> Option<GpuContext> {
    common::context()?;
    let mut opts = ContextOptions::from_env();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: 64 * 1024,
        ..wgpu::Limits::default()
    });
    Some(GpuContext::with_options(opts).expect("context with small bindings"))
}

use wgpu_batchnorm::wgpu;

fn compare(ctx: &GpuContext, shape: &[usize], seed: u64) {
    let mut rng = common::Rng(seed);
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut gpu = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(c)).expect("gpu");
    let mut cpu = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(c)).expect("cpu");
    let w = rng.normals(c, 1.0, 0.3);
    gpu.set_weight(&w).expect("w");
    cpu.set_weight(&w).expect("w");
    for train in [true, false] {
        if !train {
            gpu.eval();
            cpu.eval();
        }
        let x = rng.normals(numel, 5.0, 2.0);
        let dy = rng.normals(numel, 0.0, 1.0);
        let y = gpu
            .forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
            .expect("forward")
            .to_vec()
            .expect("read");
        let want = cpu.forward(&x, shape).expect("cpu forward");
        let f = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
        common::check_close("output", &y, &f(&want), 2e-4).expect("output");
        let g = gpu
            .backward(&Tensor::from_slice(ctx, &dy, shape).expect("dy"))
            .expect("backward");
        let cg = cpu.backward(&dy).expect("cpu backward");
        let gi = g.grad_input.to_vec().expect("read");
        common::check_close("grad_input", &gi, &f(&cg.grad_input), 1e-3).expect("gi");
        let gw = g.grad_weight.expect("gw").to_vec().expect("read");
        common::check_close("grad_weight", &gw, &f(&cg.grad_weight.expect("gw")), 1e-3)
            .expect("gw");
        let rm = gpu.running_mean().expect("rm").expect("tracked");
        common::check_close(
            "running_mean",
            &rm,
            &f(&cpu.running_mean().expect("rm")),
            1e-4,
        )
        .expect("rm");
        let rv = gpu.running_var().expect("rv").expect("tracked");
        common::check_close(
            "running_var",
            &rv,
            &f(&cpu.running_var().expect("rv")),
            1e-4,
        )
        .expect("rv");
    }
}

#[test]
fn chunked_2d_matches_reference() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[3000, 37], 1);
    compare(&ctx, &[20000, 3], 2);
}

#[test]
fn chunked_3d_matches_reference() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[300, 5, 17], 3);
    compare(&ctx, &[40, 3, 500], 4);
}

#[test]
fn rows_larger_than_a_binding_are_split() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[3, 2, 20_001], 5);
    compare(&ctx, &[20, 900], 6);
}
