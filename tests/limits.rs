//! The library reads limits from the device, never assumes them: it runs on
//! a device created with `Limits::downlevel_defaults()` (4 storage buffers
//! per stage, WebGPU-level sizes) and with a tiny per-dimension dispatch
//! limit that forces 2-D workgroup grids.

mod common;

use wgpu_batchnorm::{
    cpu, wgpu, BatchNorm1d, BatchNorm1dConfig, ContextOptions, GpuContext, Tensor,
};

fn with_limits(limits: wgpu::Limits) -> Option<GpuContext> {
    common::context()?;
    let opts = ContextOptions {
        limits: Some(limits),
        ..ContextOptions::from_env()
    };
    Some(GpuContext::with_options(opts).expect("context with requested limits"))
}

fn matches_reference(ctx: &GpuContext, shape: &[usize]) {
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = common::Rng(21);
    let mut gpu = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let mut cpu = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(c)).expect("cpu");
    let f = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    for train in [true, false] {
        if !train {
            gpu.eval();
            cpu.eval();
        }
        let x = rng.normals(numel, -2.0, 3.0);
        let dy = rng.normals(numel, 0.0, 1.0);
        let y = gpu
            .forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
            .expect("forward")
            .to_vec()
            .expect("read");
        common::check_close(
            "output",
            &y,
            &f(&cpu.forward(&x, shape).expect("cpu")),
            2e-4,
        )
        .expect("output");
        let g = gpu
            .backward(&Tensor::from_slice(ctx, &dy, shape).expect("dy"))
            .expect("bw");
        let cg = cpu.backward(&dy).expect("cpu bw");
        common::check_close(
            "grad_input",
            &g.grad_input.to_vec().expect("read"),
            &f(&cg.grad_input),
            1e-3,
        )
        .expect("grad_input");
    }
}

#[test]
fn downlevel_default_limits() {
    let Some(ctx) = with_limits(wgpu::Limits::downlevel_defaults()) else {
        return;
    };
    assert_eq!(
        ctx.device().limits().max_storage_buffers_per_shader_stage,
        4
    );
    matches_reference(&ctx, &[64, 20]);
    matches_reference(&ctx, &[8, 6, 50]);
}

#[test]
fn tiny_dispatch_dimension_uses_2d_grids() {
    let limits = wgpu::Limits {
        max_compute_workgroups_per_dimension: 7,
        ..wgpu::Limits::downlevel_defaults()
    };
    let Some(ctx) = with_limits(limits) else {
        return;
    };
    matches_reference(&ctx, &[2000, 33]);
    matches_reference(&ctx, &[300, 40, 12]);
    // More channels than the grid can cover is an error, not a wrong result.
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(300)).expect("bn");
    let x = Tensor::zeros(&ctx, &[3, 300, 12]).expect("x");
    assert!(matches!(
        bn.forward(&x),
        Err(wgpu_batchnorm::Error::TooLarge(_))
    ));
}
