//! Unit tests of the rows reductions' forms: sweeps and paired lanes on
//! CPU adapters, the chunks of whole rows the paired lanes need, and the
//! workgroups they aim for on GPUs.

use super::tests::{layout, limits, CPU, GPU};
use super::*;

/// Rows of at least 256 channels (virtual channels of odd C too) sweep and
/// rows of 64 to 255 channels (C % 4 == 0) take paired lanes, where threads
/// write their own partials (CPU adapters), never on GPUs, never for short
/// rows; either plan still covers every lane once.
#[test]
fn wide_rows_sweep_or_pair_lanes_on_cpu_adapters() {
    let lim = limits(1 << 30, 256, 65535);
    let plan = |n: usize, c: usize, merge: MergeModel| {
        let layout = Layout { n, c, l: 1 };
        let plan = plan_exec(&layout, 4, lim, merge.with_columns(Some(false))).expect("plan");
        let lanes = plan.variant.reduce_layout(&plan.layout).c.div_ceil(4) as u32;
        for ch in &plan.chunks {
            let r = ch.reduce;
            assert!(r.lanes_per_group.is_power_of_two());
            assert_eq!(r.lanes_per_group * r.threads_per_lane, WG);
            assert!(r.tiles * r.lanes_per_tile() >= lanes, "{n}x{c}: {r:?}");
            assert!(!(r.paired && r.sweep));
            if r.paired {
                assert!(r.lanes_per_group >= 8);
            }
            if r.paired || r.sweep {
                assert!(plan.thread_partials);
            }
        }
        let r = plan.chunks[0].reduce;
        (r.paired, r.sweep)
    };
    for (n, c) in [
        (4096, 1024),
        (1000, 4096),
        (16_384, 256),
        (1000, 1021),
        (1000, 65),
    ] {
        assert_eq!(plan(n, c, CPU), (false, true), "{n}x{c}");
        assert_eq!(plan(n, c, GPU), (false, false), "{n}x{c}");
    }
    for (n, c) in [(300, 64), (100, 68), (65_536, 128)] {
        assert_eq!(plan(n, c, CPU), (true, false), "{n}x{c}");
        assert_eq!(plan(n, c, GPU), (false, false), "{n}x{c}");
    }
    for (n, c) in [(262_144, 16), (1000, 60), (1000, 3)] {
        assert_eq!(plan(n, c, CPU), (false, false), "{n}x{c}");
    }
    // Several chunks of whole rows: paired.
    let small = limits(1 << 20, 256, 65535);
    let chunked = |n: usize, c: usize| {
        let layout = Layout { n, c, l: 1 };
        plan_exec(&layout, 4, small, CPU.with_columns(Some(false))).expect("plan")
    };
    let p = chunked(10_000, 68);
    assert!(p.chunks.len() > 1 && p.thread_partials);
    assert!(p
        .chunks
        .iter()
        .all(|c| c.lead == 0 && c.count % 68 == 0 && c.reduce.paired));
    // Rows long next to a chunk: cut by chunks (leads), never paired.
    let p = chunked(100, 8196);
    assert!(p.chunks.iter().any(|c| c.lead != 0));
    assert!(p.chunks.iter().all(|c| !c.reduce.paired));
    // The column kernels' register entry points sweep for rows of at least
    // 256 channels past 2^16 values, on CPU adapters only.
    let plan = |n: usize, c: usize, merge: MergeModel| {
        plan_exec(&layout(n, c, 1), 4, lim, merge).expect("plan")
    };
    let cols = |n, c, merge| plan(n, c, merge).column_regs(ColumnPass::Backward);
    let fwd = |n, c, residual| plan(n, c, CPU).column_regs(ColumnPass::Forward { residual });
    // Up to 64 rows of C % 4 == 0 they sweep four lanes per thread
    // (`Rows64Lanes`), odd C one.
    use strategy::ColumnRegs::*;
    assert_eq!(cols(64, 65_536, CPU), Rows64Lanes);
    assert_eq!(cols(64, 65_535, CPU), Rows64Sweep);
    assert_eq!(cols(200, 4096, CPU), Rows256Sweep);
    assert_eq!(cols(32, 20, CPU), Rows64);
    assert_eq!(cols(32, 1024, CPU), Rows64);
    assert_eq!(cols(16, 65_536, GPU), Plain);
    // A training forward sweeps only from 17 rows, or from 9 adding a
    // residual.
    // (Up to 16 rows in arrays of 16.)
    assert_eq!(cols(16, 262_144, CPU), Rows16Lanes);
    assert_eq!(cols(17, 262_144, CPU), Rows64Lanes);
    assert_eq!(fwd(16, 262_144, false), Rows64);
    assert_eq!(fwd(17, 65_536, false), Rows64Lanes);
    assert_eq!(fwd(64, 65_536, false), Rows64Lanes);
    assert_eq!(fwd(9, 262_144, true), Rows16Lanes);
    assert_eq!(fwd(16, 262_144, true), Rows16Lanes);
    assert_eq!(fwd(17, 65_535, false), Rows64Sweep);
    assert_eq!(fwd(8, 262_144, true), Plain);
    for regs in [Plain, Rows64, Rows256, Rows64Sweep, Rows256Sweep] {
        assert_eq!(regs.lanes_per_thread(), 1);
    }
    assert_eq!(Rows64Lanes.lanes_per_thread(), 4);
    assert_eq!(Rows16Lanes.lanes_per_thread(), 4);
    // Tiny column inputs (at most 8 rows of at most 256 lanes, CPU
    // adapters): one workgroup of them all; more rows or lanes: a quarter
    // of the target's workgroups at least.
    let groups = |n, c, merge| {
        let p = plan(n, c, merge);
        let pass = ColumnPass::Backward;
        p.column_groups(p.column_kernel(pass), p.column_regs(pass))
    };
    assert_eq!(groups(8, 512, CPU), 1);
    assert_eq!(groups(2, 1024, CPU), 1);
    assert_eq!(groups(9, 512, CPU), 4);
    assert_eq!(groups(8, 2048, CPU), 4);
    assert_eq!(groups(8, 512, GPU), 4);
    // The *_regs64_lanes kernels take four lanes per thread: 16384 lanes,
    // 256 a workgroup's threads, four each.
    assert_eq!(plan(32, 65_536, CPU).column_lanes, 256);
    assert_eq!(groups(32, 65_536, CPU), 16);
    assert_eq!(groups(100, 65_536, CPU), 64);
    // The workgroups are sized by threads, not lanes: on a host of 64
    // threads (a target of 256 workgroups) the four-lane kernels keep a
    // quarter of the target (4096 threads, 64 a workgroup), and near the
    // fill threshold more, smaller workgroups.
    let many = MergeModel {
        target_groups: 256,
        rows_target_groups: 256,
        ..CPU
    };
    assert_eq!(plan(64, 65_536, many).column_lanes, 64);
    assert_eq!(groups(64, 65_536, many), 64);
    assert_eq!(plan(17, 4100, CPU).column_lanes, 64);
    assert_eq!(groups(17, 4100, CPU), 5);
    // Each workgroup has as many invocations as threads with lanes
    // (`COLUMN_WG`): `64x2048`, 128 threads of four lanes in four
    // workgroups of 32, not of 256 with 224 idle.
    let grid = |n, c| {
        let p = plan(n, c, CPU);
        let pass = ColumnPass::Backward;
        p.column_grid(p.column_kernel(pass), p.column_regs(pass))
    };
    let g = grid(64, 2048);
    assert_eq!((g.groups, g.threads), (4, 32));
    for (n, c) in [(64, 2048), (17, 4100), (32, 65_536), (8, 512), (20, 4099)] {
        let p = plan(n, c, CPU);
        let g = grid(n, c);
        assert_eq!(g.threads, p.column_lanes, "{n}x{c}");
        assert!(g.threads.is_power_of_two() && (32..=WG).contains(&g.threads));
    }
    assert_eq!(
        plan(17, 4100, CPU).column_regs(ColumnPass::Forward { residual: false }),
        Rows64Lanes
    );
    // A whole workgroup of lanes: one thread per lane over its segment.
    let wide = plan_exec(
        &layout(4096, 1024, 1),
        4,
        lim,
        CPU.with_columns(Some(false)),
    );
    let wide = wide.expect("plan").chunks[0].reduce;
    assert_eq!((wide.lanes_per_group, wide.threads_per_lane), (WG, 1));
}

#[test]
fn rows_reductions_aim_for_fewer_workgroups_on_gpus() {
    let lim = limits(1 << 30, 256, 65535);
    let tiles = |n, c, l, merge| {
        let plan = plan_exec(&layout(n, c, l), 4, lim, merge).expect("plan");
        (plan.variant, plan.chunks[0].reduce.groups())
    };
    // Several channels per thread: about GPU_ROWS_TARGET_GROUPS.
    assert_eq!(tiles(262_144, 16, 1, GPU), (Variant::Rows, 256));
    assert_eq!(tiles(1_398_101, 3, 1, GPU), (Variant::OddRows, 256));
    // Up to four tiles of 64 lanes (1024 channels); wider rows keep the
    // usual target, and their workgroup finalize.
    assert_eq!(tiles(4096, 1024, 1, GPU), (Variant::Rows, 256));
    assert_eq!(tiles(4096, 2048, 1, GPU), (Variant::Rows, 512));
    let wide = plan_exec(&layout(4096, 2048, 1), 4, lim, GPU).expect("plan");
    assert!(wide.finalize_groups(), "{wide:?}");
    // Planes of one channel and masked runs: about GPU_TARGET_GROUPS.
    assert_eq!(tiles(2048, 64, 64, GPU), (Variant::Planes, 512));
    let (variant, masked) = tiles(65_536, 3, 21, GPU);
    assert_eq!(variant, Variant::Masked);
    assert!(masked > 500, "{masked}");
    // CPU adapters: their one target for rows too.
    assert_eq!(tiles(262_144, 16, 1, CPU), (Variant::Rows, 16));
}

/// Planes of at least 1024 values or of few vec4s a channel, planes or
/// masked runs of at least 128 channels, and masked runs of 12 to 23
/// values, spread a workgroup over
/// up to eight channels where threads write their own partials (CPU adapters),
/// never on GPUs; the spread plan still covers every lane.
#[test]
fn long_planes_spread_over_channels_on_cpu_adapters() {
    let lim = limits(1 << 30, 256, 65535);
    let lanes = |n, c, l, merge| {
        let plan = plan_exec(&layout(n, c, l), 4, lim, merge).expect("plan");
        assert_eq!(plan.variant, Variant::Planes);
        let r = plan.chunks[0].reduce;
        assert!(r.tiles * r.lanes_per_group >= c as u32, "{r:?}");
        assert_eq!(r.threads_per_lane * r.lanes_per_group, WG, "{r:?}");
        r.lanes_per_group
    };
    assert_eq!(lanes(128, 64, 1024, CPU), 8);
    assert_eq!(lanes(3, 5, 4096, CPU), 8);
    assert_eq!(lanes(3, 3, 4096, CPU), 4);
    assert_eq!(lanes(128, 64, 1020, CPU), 1);
    assert_eq!(lanes(128, 64, 1024, GPU), 1);
    // Many channels spread whatever the planes' length.
    assert_eq!(lanes(64, 128, 16, CPU), 8);
    assert_eq!(lanes(4096, 127, 16, CPU), 1);
    // Small planes spread: under 256 * 64 vec4s a channel.
    assert_eq!(lanes(64, 64, 64, CPU), 8);
    assert_eq!(lanes(64, 127, 16, CPU), 8);
    assert_eq!(lanes(2048, 64, 64, CPU), 1);
    assert_eq!(lanes(64, 64, 64, GPU), 1);
    assert_eq!(lanes(8, 2048, 256, GPU), 1);
    // Spread, 2048 channels' partial states fit where one channel per
    // workgroup's would not.
    assert_eq!(lanes(8, 2048, 256, CPU), 8);
    let wide = plan_exec(&layout(8, 2048, 256), 4, lim, CPU).expect("plan");
    assert!(wide.thread_partials, "{wide:?}");
    // Masked runs (odd L) spread for many channels or short runs.
    // (Small ones whatever their channels: 32 rows of 49 have 416 units.)
    for (n, c, l, want) in [
        (32, 128, 49, 8),
        (400, 64, 49, 1),
        (32, 64, 49, 8),
        (32, 64, 23, 8),
        (700, 64, 25, 1),
        (32, 3, 21, 4),
    ] {
        let plan = plan_exec(&layout(n, c, l), 4, lim, CPU).expect("plan");
        assert_eq!(plan.variant, Variant::Masked);
        assert_eq!(plan.chunks[0].reduce.lanes_per_group, want, "{plan:?}");
    }
    // Masked runs below 12 (chunked odd rows) keep one channel each.
    let tiny = limits(64 * 1024, 256, 65535);
    let short = plan_exec(&layout(20_000, 3, 7), 4, tiny, CPU).expect("plan");
    assert_eq!(short.variant, Variant::Masked);
    assert!(short.chunks.iter().all(|k| k.reduce.lanes_per_group == 1));
    // In chunks too (tests/chunked.rs runs these).
    let small = limits(1 << 20, 256, 65535);
    for (n, c, l, want) in [(40, 130, 100, 8), (8000, 3, 21, 4), (40, 3, 4100, 4)] {
        let plan = plan_exec(&layout(n, c, l), 4, small, CPU).expect("plan");
        assert!(plan.chunks.len() > 1 && plan.thread_partials, "{plan:?}");
        assert!(plan.chunks.iter().all(|k| k.reduce.lanes_per_group == want));
    }
}

/// The four-channel lanes load whole aligned vec4s (`load4` in
/// `shaders/moments4.wgsl`): every chunk of rows starts a multiple of 4
/// elements into its first row, and the virtual rows of odd C stay in one
/// chunk, for any binding size, alignment and element size.
#[test]
fn four_channel_lanes_start_on_vec4_boundaries() {
    let mut cut_rows = 0;
    for (max_binding, align) in [(1 << 30, 256), (1 << 20, 256), (100_000, 4), (4096, 16)] {
        for (n, c, l) in [
            (10_000, 68, 1),
            (1000, 4096, 1),
            (3000, 1020, 1),
            (200_003, 3, 1),
            (5000, 15, 1),
            (777, 6, 3),
            (1, 8, 1),
        ] {
            for elem in [2, 4] {
                let lim = limits(max_binding, align, 65535);
                // Other limits may refuse a plan; the alignment guard never.
                let plan = match plan_exec(&Layout { n, c, l }, elem, lim, CPU) {
                    Ok(plan) => plan,
                    Err(e) => {
                        assert!(!e.contains("vec4 boundary"), "{n}x{c}x{l}: {e}");
                        continue;
                    }
                };
                if !plan.variant.four_channel_lanes() {
                    continue;
                }
                let at = format!(
                    "{n}x{c}x{l} elem {elem} binding {max_binding}: {:?}",
                    plan.variant
                );
                assert!(
                    plan.chunks
                        .iter()
                        .all(|ch| ch.lead % 4 == 0 && ch.start % 4 == 0),
                    "{at}"
                );
                if plan.variant == Variant::OddRows {
                    assert_eq!(plan.chunks.len(), 1, "{at}");
                }
                cut_rows += plan.chunks.iter().filter(|ch| ch.lead != 0).count();
            }
        }
    }
    // Some chunks start inside a row.
    assert!(cut_rows > 0);
}
