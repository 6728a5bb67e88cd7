//! Unit tests of the column kernels' choice for odd C.

use super::tests::{limits, CPU, GPU};
use super::*;
use crate::semantics::Layout;

/// `(N, C)` of `C % 4 != 0` takes four-channel lanes only on CPU adapters,
/// where they would sweep (at least 64 lanes, more than 2^16 values): a
/// training forward without a residual from 9 rows, the other passes from
/// 17 (one channel per thread below, with the plan's lanes per
/// workgroup); they sweep from 17 rows, and every dispatch covers every
/// lane.
#[test]
fn odd_channels_take_four_channel_lanes_where_they_sweep() {
    use ColumnKernel::*;
    let lim = limits(1 << 30, 256, 65535);
    let plan = |n: usize, c: usize, merge: MergeModel| {
        plan_exec(&Layout { n, c, l: 1 }, 4, lim, merge).expect("plan")
    };
    let back = ColumnPass::Backward;
    let fwd = ColumnPass::Forward { residual: false };
    let res = ColumnPass::Forward { residual: true };
    let kernels = |p: &ExecPlan| {
        (
            p.column_kernel(fwd),
            p.column_kernel(res),
            p.column_kernel(back),
        )
    };
    assert_eq!(kernels(&plan(9, 7285, CPU)), (Odd4, PerChannel, PerChannel));
    assert_eq!(
        kernels(&plan(16, 262_143, CPU)),
        (Odd4, PerChannel, PerChannel)
    );
    assert_eq!(kernels(&plan(17, 3857, CPU)), (Odd4, Odd4, Odd4));
    assert_eq!(kernels(&plan(32, 131_071, CPU)), (Odd4, Odd4, Odd4));
    assert_eq!(kernels(&plan(33, 2050, CPU)), (Odd4, Odd4, Odd4));
    assert_eq!(kernels(&plan(256, 1021, CPU)), (Odd4, Odd4, Odd4));
    // 8 rows, 2^16 values, fewer than 64 lanes: one channel each; GPUs:
    // one channel each or the split reductions.
    for p in [
        plan(8, 524_287, CPU),
        plan(16, 4095, CPU),
        plan(17, 3855, CPU),
        plan(200, 251, CPU),
        plan(17, 3857, GPU),
    ] {
        assert_ne!(p.strategy, Strategy::Columns, "{p:?}");
        assert_eq!(kernels(&p), (PerChannel, PerChannel, PerChannel));
    }
    // A larger CPU (64 target workgroups): four-channel lanes too few to
    // fill it take one channel per thread, unless the column kernels are
    // forced on.
    let wide = MergeModel {
        target_groups: 64,
        rows_target_groups: 64,
        ..CPU
    };
    assert_eq!(plan(256, 1021, wide).strategy, Strategy::ColumnStats);
    assert_eq!(plan(256, 4093, wide).strategy, Strategy::Columns);
    let forced = wide.with_columns(Some(true));
    assert_eq!(plan(256, 1021, forced).strategy, Strategy::Columns);
    assert_eq!(plan(16, 4093, forced).strategy, Strategy::ColumnStats);
    // C % 4 == 0 keeps whole vec4s.
    assert_eq!(
        kernels(&plan(32, 131_072, CPU)),
        (Aligned4, Aligned4, Aligned4)
    );
    // All but two, whose lanes are too few to fill the CPU unforced: the
    // last's 65, and `40x2063`'s 516 (three workgroups of 256).
    for (n, c) in ODD_LANE_SHAPES {
        let p = plan(n, c, CPU);
        if [(40, 2063), (256, 257)].contains(&(n, c)) {
            assert_eq!(p.strategy, Strategy::ColumnStats, "{n}x{c}");
        } else {
            odd_lanes_as_planned(&p, n, c);
        }
    }
}

/// The shapes of tests/odd_lanes.rs.
const ODD_LANE_SHAPES: [(usize, usize); 11] = [
    (9, 7285),
    (16, 4098),
    (17, 3857),
    (20, 4099),
    (24, 4106),
    (40, 2063),
    (33, 2050),
    (64, 1025),
    (100, 1023),
    (256, 1021),
    (256, 257),
];

/// An `n x c` plan of four-channel lanes for odd C: the training forward
/// without a residual in four-channel lanes, the other passes from 17 rows
/// (one channel per thread below); four-channel lanes sweep from 17 rows,
/// one channel per thread never (columns.wgsl has no sweeping entry
/// points); and every dispatch covers every lane.
fn odd_lanes_as_planned(p: &ExecPlan, n: usize, c: usize) {
    assert_eq!(p.strategy, Strategy::Columns, "{n}x{c}");
    let fwd = ColumnPass::Forward { residual: false };
    let res = ColumnPass::Forward { residual: true };
    for pass in [fwd, res, ColumnPass::Backward] {
        let regs = p.column_regs(pass);
        let swept = matches!(regs, ColumnRegs::Rows64Sweep | ColumnRegs::Rows256Sweep);
        let four = p.column_kernel(pass) == ColumnKernel::Odd4;
        assert_eq!(swept, four && n >= 17, "{n}x{c} {pass:?}");
        assert_eq!(four, pass == fwd || n >= 17, "{n}x{c} {pass:?}");
        let lanes = if four { c.div_ceil(4) } else { c };
        let kernel = p.column_kernel(pass);
        // Odd C never takes four lanes per thread.
        let per_thread = regs.lanes_per_thread();
        assert_eq!(per_thread, 1, "{n}x{c} {pass:?}");
        let groups = p.column_groups(kernel, regs) as usize;
        let per_group = p.column_lanes as usize * per_thread;
        assert!(groups * per_group >= lanes, "{n}x{c} {pass:?}");
        assert!((groups - 1) * per_group < lanes, "{n}x{c} {pass:?}");
    }
}

/// tests/odd_lanes.rs forces per-thread partials and the column kernels on
/// any adapter: there every one of its shapes takes four-channel lanes
/// (the plain training forward; the backward and the residual forward
/// from 17 rows), whatever the merge model's target workgroups.
#[test]
fn odd_lane_tests_reach_the_four_channel_lanes_on_every_adapter() {
    let lim = limits(1 << 30, 256, 65535);
    let forced = |m: MergeModel| {
        MergeModel {
            thread_partials: true,
            ..m
        }
        .with_columns(Some(true))
    };
    for merge in [forced(CPU), forced(GPU)] {
        for (n, c) in ODD_LANE_SHAPES {
            let p = plan_exec(&Layout { n, c, l: 1 }, 4, lim, merge).expect("plan");
            odd_lanes_as_planned(&p, n, c);
        }
    }
}
