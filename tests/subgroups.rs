//! Both reduction paths — subgroup operations (where the adapter has them)
//! and the shared-memory tree fallback — agree with the CPU reference, on
//! forward statistics and on gradient sums.

mod common;

use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNorm1dConfig, ContextOptions, GpuContext, Tensor};

fn check(ctx: &GpuContext, shape: &[usize], seed: u64) {
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = common::Rng(seed);
    let mut gpu = BatchNorm1d::new(ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let mut reference = cpu::BatchNorm1d::new(BatchNorm1dConfig::new(c)).expect("cpu");
    let f = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    let x = rng.normals(numel, 1e3, 0.5);
    let dy = rng.normals(numel, 0.0, 1.0);
    let y = gpu
        .forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
        .expect("fw");
    let want = reference.forward(&x, shape).expect("cpu");
    common::check_close("output", &y.to_vec().expect("read"), &f(&want), 2e-4).expect("output");
    let rv = gpu.running_var().expect("rv").expect("some");
    common::check_close(
        "running_var",
        &rv,
        &f(&reference.running_var().expect("rv")),
        1e-5,
    )
    .expect("running_var");
    let g = gpu
        .backward(&Tensor::from_slice(ctx, &dy, shape).expect("dy"))
        .expect("bw");
    let cg = reference.backward(&dy).expect("cpu bw");
    common::check_close(
        "grad_input",
        &g.grad_input.to_vec().expect("read"),
        &f(&cg.grad_input),
        1e-3,
    )
    .expect("grad_input");
    common::check_close(
        "grad_weight",
        &g.grad_weight.expect("gw").to_vec().expect("read"),
        &f(&cg.grad_weight.expect("gw")),
        1e-3,
    )
    .expect("grad_weight");
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
