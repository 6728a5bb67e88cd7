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

/// The workgroup merge keeps a NaN to its channel and far-from-zero data
/// exact: a NaN in one channel's last row poisons that channel only
/// (output and running statistics), 1e4 + noise keeps its variance.
#[test]
fn workgroup_finalize_keeps_nan_to_its_channel() {
    let Some(_) = common::context() else { return };
    let ctx = workgroup_merge(false);
    let (n, c) = (200_003usize, 3usize);
    let mut x = common::Rng(7).normals(n * c, 0.0, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        if i % c == 2 {
            *v = 1e4 + 0.1 * *v;
        }
    }
    x[(n - 1) * c + 1] = f32::NAN;
    let cfg = wgpu_batchnorm::BatchNormConfig::new(c);
    let mut gpu = wgpu_batchnorm::BatchNorm1d::new(&ctx, cfg.clone()).expect("module");
    let mut reference = wgpu_batchnorm::cpu::BatchNorm1d::new(cfg).expect("cpu");
    let tx = wgpu_batchnorm::Tensor::from_slice(&ctx, &x, &[n, c]).expect("x");
    let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
    let want = reference.forward(&x, &[n, c]).expect("cpu");
    for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
        if i % c == 1 {
            assert!(g.is_nan(), "value {i} of the NaN channel is {g}");
        } else {
            assert!(
                (g - w).abs() <= 2e-4 * (1.0 + w.abs()),
                "value {i}: {g} vs {w}"
            );
        }
    }
    let rv = gpu.running_var().expect("read").expect("tracked");
    let want_rv = reference.running_var().expect("tracked");
    for ch in 0..c {
        if ch == 1 {
            assert!(rv[ch].is_nan(), "running_var {rv:?}");
        } else {
            assert!(
                (rv[ch] - want_rv[ch]).abs() <= 1e-5 * want_rv[ch].abs(),
                "running_var {rv:?} vs {want_rv:?}"
            );
        }
    }
}
