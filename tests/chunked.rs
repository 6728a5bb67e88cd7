//! Tensors larger than one storage binding are processed in chunks of rows.
//! A device created with a tiny `max_storage_buffer_binding_size` forces
//! many chunks on small shapes; results must equal the CPU reference.

mod common;

use wgpu_batchnorm::GpuContext;

fn small_binding_context() -> Option<GpuContext> {
    binding_context(64 * 1024)
}

fn binding_context(bytes: u64) -> Option<GpuContext> {
    common::context()?;
    let mut opts = common::options();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: bytes,
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
    // C % 4 == 0: four channels per reduction thread, in chunks of whole
    // rows (paired lanes on CPU adapters from C = 64), or, where a row is
    // long next to a chunk, rows cut by chunks (sweeping on CPU adapters).
    compare(&ctx, &[3000, 36], 7);
    compare(&ctx, &[1000, 64], 8);
    compare(&ctx, &[2000, 68], 9);
    compare(&ctx, &[60, 516], 10);
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

/// Chunks of whole rows large enough for per-thread partials: the paired
/// lanes of CPU adapters over every chunk (plan tests check the plan).
#[test]
fn paired_lanes_span_chunks_of_whole_rows() {
    let Some(ctx) = binding_context(1 << 20) else {
        return;
    };
    compare(&ctx, &[10_000, 68], 11);
    compare(&ctx, &[5_000, 128], 12);
}

/// Chunks of planes and masked runs that spread a workgroup over up to
/// eight channels on CPU adapters: many channels, short masked runs, and long
/// planes cut by a chunk mid-run (plan tests check the plan).
#[test]
fn spread_reductions_span_chunks() {
    let Some(ctx) = binding_context(1 << 20) else {
        return;
    };
    compare(&ctx, &[40, 130, 100], 13);
    compare(&ctx, &[8000, 3, 21], 14);
    compare(&ctx, &[40, 3, 4100], 15);
}
