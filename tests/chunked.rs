//! Tensors larger than one storage binding are processed in chunks of rows.
//! A device created with a tiny `max_storage_buffer_binding_size` forces
//! many chunks on small shapes; results must equal the CPU reference.

mod common;

use wgpu_batchnorm::GpuContext;

fn small_binding_context() -> Option<GpuContext> {
    common::context()?;
    let mut opts = common::options();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: 64 * 1024,
        ..wgpu::Limits::default()
    });
    Some(GpuContext::with_options(opts).expect("context with small bindings"))
}

use wgpu_batchnorm::wgpu;

fn compare(ctx: &GpuContext, shape: &[usize], seed: u64) {
    common::assert_matches_reference(ctx, shape, &[true, false], seed, 5.0, 2.0);
}

#[test]
fn chunked_2d_matches_reference() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[3000, 37], 1);
    compare(&ctx, &[20000, 3], 2);
    // C % 4 == 0: four channels per reduction thread, rows cut by chunks.
    compare(&ctx, &[3000, 36], 7);
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
