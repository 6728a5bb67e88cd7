//! The library reads limits from the device, never assumes them: it runs on
//! a device created with `Limits::downlevel_defaults()` (4 storage buffers
//! per stage, WebGPU-level sizes) and with a tiny per-dimension dispatch
//! limit that forces 2-D workgroup grids.

mod common;

use wgpu_batchnorm::{wgpu, BatchNorm1d, BatchNorm1dConfig, ContextOptions, GpuContext, Tensor};

fn with_limits(limits: wgpu::Limits) -> Option<GpuContext> {
    common::context()?;
    let opts = ContextOptions {
        limits: Some(limits),
        ..common::options()
    };
    Some(GpuContext::with_options(opts).expect("context with requested limits"))
}

fn matches_reference(ctx: &GpuContext, shape: &[usize]) {
    common::assert_matches_reference(ctx, shape, &[true, false], 21, -2.0, 3.0);
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
