//! Every way the reductions combine threads agrees with the CPU reference,
//! on forward statistics and on gradient sums: merging each workgroup with
//! subgroup operations (where the adapter has them) or with the
//! shared-memory tree, and per-thread partials (the default on CPU
//! adapters).

mod common;

use wgpu_batchnorm::{ContextOptions, GpuContext, ReductionMerge, Tuning};

fn check(ctx: &GpuContext, shape: &[usize], seed: u64) {
    common::assert_matches_reference(ctx, shape, &[true, true, false], seed, 1e3, 0.5);
}

fn shapes(ctx: &GpuContext) {
    // (N, C, L): one channel per workgroup, where subgroups apply;
    // (N, C): several channels (or quads of channels when C % 4 == 0) per
    // workgroup, always the tree.
    for (i, shape) in [
        vec![64, 3, 256],
        vec![5, 7, 33],
        vec![300, 2, 8],
        vec![500, 40],
        vec![777, 6],
        vec![3000, 12],
    ]
    .into_iter()
    .enumerate()
    {
        check(ctx, &shape, 40 + i as u64);
    }
}

fn with_tuning(tuning: Tuning) -> GpuContext {
    let opts = ContextOptions {
        tuning,
        ..common::options()
    };
    GpuContext::with_options(opts).expect("context")
}

fn workgroup_merge(subgroups: bool) -> GpuContext {
    let ctx = with_tuning(Tuning {
        subgroups,
        thread_partials: Some(false),
        ..Tuning::default()
    });
    assert_ne!(ctx.reduction_merge(), ReductionMerge::ThreadPartials);
    ctx
}

#[test]
fn subgroup_reductions_match_reference() {
    let Some(_) = common::context() else { return };
    let ctx = workgroup_merge(true);
    let supported = ctx
        .device()
        .features()
        .contains(wgpu_batchnorm::wgpu::Features::SUBGROUP)
        && {
            let i = ctx.adapter_info().expect("info");
            i.subgroup_min_size == i.subgroup_max_size
        };
    assert_eq!(
        ctx.reduction_merge() == ReductionMerge::Subgroups,
        supported
    );
    if !supported {
        common::skip(
            "subgroup reductions",
            "the adapter has no fixed-size subgroups; the tree ran instead",
        );
    }
    shapes(&ctx);
}

#[test]
fn tree_fallback_matches_reference() {
    let Some(_) = common::context() else { return };
    let ctx = workgroup_merge(false);
    assert_eq!(ctx.reduction_merge(), ReductionMerge::WorkgroupTree);
    shapes(&ctx);
}

#[test]
fn thread_partials_match_reference() {
    let Some(_) = common::context() else { return };
    let ctx = with_tuning(Tuning {
        thread_partials: Some(true),
        ..Tuning::default()
    });
    assert_eq!(ctx.reduction_merge(), ReductionMerge::ThreadPartials);
    shapes(&ctx);
}

#[test]
fn thread_partials_default_to_cpu_adapters() {
    let Some(_) = common::context() else { return };
    let mut opts = common::options();
    opts.tuning = Tuning::default();
    let ctx = GpuContext::with_options(opts).expect("context");
    let cpu =
        ctx.adapter_info().expect("info").device_type == wgpu_batchnorm::wgpu::DeviceType::Cpu;
    assert_eq!(ctx.reduction_merge() == ReductionMerge::ThreadPartials, cpu);
}

/// GPUs merge a channel's partial states with a workgroup per channel
/// where there are many (`moments_finalize_groups`,
/// `grads_finalize_groups`): long inputs of few channels, in rows of
/// C % 4 == 0 and of odd C (virtual channels), and planes, with subgroups
/// and with the tree, against the reference (on a CPU adapter, which aims
/// at fewer workgroups, odd C's virtual channels reach it; on a GPU all
/// three); per-thread partials keep the one-thread merge.
#[test]
fn workgroup_finalize_matches_reference() {
    let Some(_) = common::context() else { return };
    for subgroups in [true, false] {
        let ctx = workgroup_merge(subgroups);
        for (i, shape) in [vec![262_144, 16], vec![200_003, 3], vec![64, 2, 16_384]]
            .iter()
            .enumerate()
        {
            check(&ctx, shape, 90 + i as u64);
        }
    }
}
