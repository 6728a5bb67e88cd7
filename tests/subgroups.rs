//! Both reduction paths — subgroup operations (where the adapter has them)
//! and the shared-memory tree fallback — agree with the CPU reference, on
//! forward statistics and on gradient sums.

mod common;

use wgpu_batchnorm::{ContextOptions, GpuContext};

fn check(ctx: &GpuContext, shape: &[usize], seed: u64) {
    common::assert_matches_reference(ctx, shape, &[true, true, false], seed, 1e3, 0.5);
}

fn shapes(ctx: &GpuContext) {
    // (N, C, L): one channel per workgroup, where subgroups apply;
    // (N, C): several channels per workgroup, always the tree.
    for (i, shape) in [
        vec![64, 3, 256],
        vec![5, 7, 33],
        vec![300, 2, 8],
        vec![500, 40],
    ]
    .into_iter()
    .enumerate()
    {
        check(ctx, &shape, 40 + i as u64);
    }
}

#[test]
fn subgroup_reductions_match_reference() {
    let Some(ctx) = common::context() else { return };
    let supported = ctx
        .device()
        .features()
        .contains(wgpu_batchnorm::wgpu::Features::SUBGROUP);
    assert_eq!(
        ctx.uses_subgroups(),
        supported && {
            let i = ctx.adapter_info().expect("info");
            i.subgroup_min_size == i.subgroup_max_size
        }
    );
    shapes(&ctx);
}

#[test]
fn tree_fallback_matches_reference() {
    let Some(_) = common::context() else { return };
    let opts = ContextOptions {
        subgroups: false,
        ..ContextOptions::from_env()
    };
    let ctx = GpuContext::with_options(opts).expect("context");
    assert!(!ctx.uses_subgroups());
    shapes(&ctx);
}
