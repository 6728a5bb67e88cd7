//! Unit tests of the pure launch planners.

use super::*;

pub(super) fn limits(max_binding: u64, align: u64, max_dim: u32) -> DeviceLimits {
    DeviceLimits {
        max_binding,
        align,
        max_dim,
        storage_buffers: 8,
        bounded_loops: true,
    }
}

pub(super) const GPU: MergeModel = MergeModel {
    target_groups: 512,
    rows_target_groups: 256,
    thread_partials: false,
    columns: None,
};
pub(super) const CPU: MergeModel = MergeModel {
    target_groups: 16,
    rows_target_groups: 16,
    thread_partials: true,
    columns: None,
};

/// Every unit of every lane belongs to exactly one segment, in the usual
/// split, the spread one and either made thicker (per-thread partials).
#[test]
fn reductions_cover_every_value_once() {
    for (n, c, l) in [
        (1, 1, 1),
        (7, 3, 5),
        (4096, 64, 1),
        (2, 2048, 1),
        (3, 1, 4096),
        (1000, 5, 8),
        (1001, 3, 1),
        (77, 6, 1),
    ] {
        let layout = Layout { n, c, l };
        for (target, spread) in [(1, false), (16, false), (512, false), (16, true), (2, true)] {
            let variant = Variant::of(&layout);
            let p = if spread {
                reduce::plan_spread(&layout, variant, 1 << 20, target)
            } else {
                plan_reduce(&layout, variant, 1 << 20, target)
            };
            let units = variant.units(&layout).max(1) as u32;
            let thick = p.thicker(units as usize, reduce::THREAD_MIN_UNITS);
            assert!(thick.segments <= p.segments, "{layout:?}");
            assert!(
                thick.segments == 1
                    || thick.seg_len as usize
                        >= thick.threads_per_lane as usize * reduce::THREAD_MIN_UNITS
            );
            for p in [p, thick] {
                assert!(p.segments * p.seg_len >= units, "{layout:?}");
                assert!((p.segments - 1) * p.seg_len < units, "{layout:?}");
                assert_eq!(p.lanes_per_group * p.threads_per_lane, WG);
                // Four-channel lanes over the (virtual) channels of a row.
                let lanes = if variant.four_channel_lanes() {
                    variant.reduce_layout(&layout).c.div_ceil(4)
                } else {
                    c
                } as u32;
                assert!(p.tiles * p.lanes_per_tile() >= lanes);
            }
        }
    }
}

#[test]
fn chunks_cover_the_tensor_on_aligned_starts() {
    let layout = Layout {
        n: 1000,
        c: 7,
        l: 13,
    };
    let lim = limits(4096, 256, 65535);
    let plan = plan_exec(&layout, 4, lim, GPU).expect("plan");
    assert!(plan.chunks.len() > 1);
    let mut next = 0;
    let mut base = 0;
    for ch in &plan.chunks {
        assert_eq!(ch.start, next);
        assert_eq!((ch.start * 4) as u64 % 256, 0, "aligned start");
        assert!((ch.count * 4) as u64 <= lim.max_binding);
        assert_eq!(ch.lead, ch.start % layout.row());
        assert_eq!(ch.partial_base, base);
        base += ch.reduce.segments;
        next += ch.count;
    }
    assert_eq!(next, layout.numel());
    assert_eq!(plan.partial_rows, base);
    assert_eq!(plan.head, layout.row().min(1024 / 4 * 4));
}

#[test]
fn thread_partials_only_where_they_stay_small() {
    let big = Layout {
        n: 262_144,
        c: 64,
        l: 1,
    };
    let lim = limits(1 << 27, 256, 65535);
    let plan = plan_exec(&big, 4, lim, CPU).expect("plan");
    assert!(plan.thread_partials);
    let rows: u32 = plan
        .chunks
        .iter()
        .map(|c| c.reduce.segments * c.reduce.threads_per_lane)
        .sum();
    assert_eq!(plan.partial_rows, rows);
    // Two rows of two million channels: per-thread partials would dwarf
    // the tensor, so the workgroups merge.
    let wide = Layout {
        n: 2,
        c: 2_097_152,
        l: 1,
    };
    let plan = plan_exec(&wide, 4, lim, CPU).expect("plan");
    assert!(!plan.thread_partials);
    assert!(!plan_exec(&big, 4, lim, GPU).expect("plan").thread_partials);
}

#[test]
fn grids_stay_within_the_dispatch_limit() {
    for (groups, max_dim) in [(1, 7), (7, 7), (8, 7), (49, 7), (65535 * 3, 65535), (0, 5)] {
        let (x, y) = grid(groups, max_dim);
        assert!(x <= max_dim && y <= max_dim, "{groups} {max_dim}");
        assert!(x * y >= groups);
    }
    // Too many channels for a 7x7 grid is an error, not a bad dispatch.
    let wide = Layout {
        n: 2,
        c: 1 << 20,
        l: 1,
    };
    assert!(plan_exec(&wide, 4, limits(1 << 30, 256, 7), GPU).is_err());
    // Chunks keep every elementwise dispatch within the grid too.
    let long = Layout {
        n: 100_000,
        c: 4,
        l: 1,
    };
    let plan = plan_exec(&long, 4, limits(1 << 30, 256, 7), GPU).expect("plan");
    for ch in &plan.chunks {
        assert!(ch.slab.groups() <= 49);
        assert!(ch.reduce.groups() <= 49);
    }
}

#[test]
fn tiny_bindings_are_an_error() {
    let layout = Layout { n: 4, c: 4, l: 4 };
    assert!(plan_exec(&layout, 4, limits(8, 256, 65535), GPU).is_err());
}

/// Every vec4 is covered exactly once and shares its channels with the
/// first vec4 of its invocation, in rows (any row length) and in runs of L
/// (`plane`, long rows of few channels).
#[test]
fn slabs_cover_each_vec4_once_within_its_channels() {
    let cases: &[(usize, usize, Option<usize>)] = &[
        (1, 1, None),
        (7, 3, None),
        (64, 64, None),
        (4096, 64, None),
        (1000, 10, None),
        (999, 333, None),
        (12, 6, None),
        (80, 20, None),
        (4 * 5 * 7, 7, None),
        // (1, 64, 4096): one row; runs of 1024 vec4s.
        (64 * 4096, 64 * 4096, Some(1024)),
        // (2, 3, 256): two rows; runs of 64 vec4s.
        (2 * 3 * 256, 3 * 256, Some(64)),
        // Runs not a multiple of SLAB: rows as before.
        (2 * 3 * 12, 3 * 12, Some(3)),
    ];
    for &(count, row, plane) in cases {
        let slab = Slab::of(count, row, plane, None);
        assert!(!slab.runs);
        let vec4s = count.div_ceil(4);
        let mut seen = vec![0u8; vec4s];
        for g in 0..slab.invocations {
            let first = (g / slab.stride) * slab.stride * SLAB + g % slab.stride;
            for k in 0..SLAB {
                let v = first + k * slab.stride;
                if v < vec4s {
                    seen[v] += 1;
                    // Position in the row, or channel (run of 4p values).
                    let channel = |v: usize| match plane {
                        Some(p) => (v * 4) % row / (4 * p),
                        None => (v * 4) % row,
                    };
                    assert_eq!(channel(v), channel(first), "count {count} row {row}");
                }
            }
        }
        assert!(
            seen.iter().all(|&s| s == 1),
            "count {count} row {row} {slab:?}"
        );
        if let Some(p) = plane.filter(|p| p % SLAB == 0) {
            assert_eq!(slab.stride, p / SLAB, "long rows take runs");
        }
    }
}

/// Run slabs (long odd L in long rows): every vec4 once, blocks of
/// consecutive vec4s much shorter than a run, so that most slabs lie
/// within one run and none crosses more than one run boundary (the
/// kernels take two runs' terms per slab); rows that whole-row strides
/// serve, and short runs, keep whole-row slabs.
#[test]
fn run_slabs_cover_each_vec4_once_and_cross_at_most_one_run_boundary() {
    let shapes: [(usize, usize, usize); 7] = [
        (8, 3, 174_763),
        (2, 1, 1001),
        (1, 5, 129),
        (3, 2, 4097),
        (4, 1001, 1048),
        (3, 7, 511),
        (1, 3, 1_398_101),
    ];
    for &(n, c, l) in &shapes {
        let (count, row) = (n * c * l, c * l);
        let plane = l.is_multiple_of(4).then_some(l / 4);
        let slab = Slab::of(count, row, plane, Some(l));
        assert!(slab.runs, "({n}, {c}, {l}) {slab:?}");
        let vec4s = count.div_ceil(4);
        let mut seen = vec![0u8; vec4s];
        let (mut within, mut slabs) = (0, 0);
        for g in 0..slab.invocations {
            let first = (g / slab.stride) * slab.stride * SLAB + g % slab.stride;
            if first >= vec4s {
                continue;
            }
            let mut last = first;
            for k in 0..SLAB {
                let v = first + k * slab.stride;
                if v < vec4s {
                    seen[v] += 1;
                    last = v;
                }
            }
            slabs += 1;
            let (run0, run1) = (first * 4 / l, (last * 4 + 3).min(count - 1) / l);
            assert!(
                run1 - run0 <= 1,
                "({n}, {c}, {l}) {slab:?}: slab from {first}"
            );
            within += usize::from(run0 == run1);
        }
        assert!(seen.iter().all(|&s| s == 1), "({n}, {c}, {l}) {slab:?}");
        assert!(
            within * 10 >= slabs * 7,
            "({n}, {c}, {l}): {within} of {slabs}"
        );
    }
    // Short runs, or rows short enough for whole-row strides: no run slabs.
    assert!(!Slab::of(8 * 3 * 127, 3 * 127, None, Some(127)).runs);
    assert!(!Slab::of(4096 * 3 * 1001, 3 * 1001, None, Some(1001)).runs);
    // Runs of a whole number of slabs keep exact plane blocks.
    assert!(!Slab::of(2 * 3 * 256, 3 * 256, Some(64), Some(256)).runs);
}

pub(super) fn layout(n: usize, c: usize, l: usize) -> Layout {
    Layout { n, c, l }
}

/// One channel's values are one run: rows of a power of two, vec4 planes.
#[test]
fn one_channel_layouts_become_rows_of_a_power_of_two() {
    assert_eq!(canonical(&layout(4_194_304, 1, 1)), layout(64, 1, 65536));
    assert_eq!(canonical(&layout(1, 1, 4_194_304)), layout(64, 1, 65536));
    assert_eq!(canonical(&layout(12, 1, 7)), layout(21, 1, 4));
    for odd in [layout(3, 1, 5), layout(2, 3, 4), layout(5, 2, 1)] {
        assert_eq!(canonical(&odd), odd);
    }
    let plan = plan_exec(
        &layout(4_194_304, 1, 1),
        4,
        limits(1 << 30, 256, 65535),
        CPU,
    )
    .expect("plan");
    assert_eq!(plan.variant, Variant::Planes);
}

#[test]
fn column_kernels_take_few_rows_of_many_or_few_values() {
    let big = limits(1 << 30, 256, 65535);
    let strategy = |l: Layout, merge: MergeModel, lim: DeviceLimits| {
        plan_exec(&l, 4, lim, merge).expect("plan").strategy
    };
    for merge in [GPU, CPU] {
        assert_eq!(
            strategy(layout(2, 2_097_152, 1), merge, big),
            Strategy::Columns
        );
        assert_eq!(
            strategy(layout(2, 2_097_151, 1), merge, big),
            Strategy::ColumnStats
        );
        assert_eq!(strategy(layout(32, 20, 1), merge, big), Strategy::Columns);
        assert_eq!(
            strategy(layout(8, 21, 1), merge, big),
            Strategy::ColumnStats
        );
        assert_eq!(strategy(layout(4096, 1024, 1), merge, big), Strategy::Split);
        let tiny_rows = if merge.thread_partials { 256 } else { 64 };
        assert_eq!(
            strategy(layout(tiny_rows, 20, 1), merge, big),
            Strategy::Columns
        );
        assert_eq!(
            strategy(layout(tiny_rows + 1, 20, 1), merge, big),
            Strategy::Split
        );
        assert_eq!(strategy(layout(8, 64, 3), merge, big), Strategy::Split);
        // Forced on: any few rows; forced off: never.
        let on = merge.with_columns(Some(true));
        let off = merge.with_columns(Some(false));
        assert_eq!(strategy(layout(256, 8, 1), on, big), Strategy::Columns);
        assert_eq!(strategy(layout(257, 8, 1), on, big), Strategy::Split);
        assert_eq!(strategy(layout(2, 2_097_152, 1), off, big), Strategy::Split);
        // Devices that bind fewer storage buffers than the kernels need.
        let mut few = big;
        few.storage_buffers = 4;
        assert_eq!(strategy(layout(2, 2_097_152, 1), on, few), Strategy::Split);
    }
    // Mid-sized inputs take columns only where their lanes fill the
    // device, and on GPUs only for at most 16 rows, or 32 of at least
    // 32768 channels (a multiple of 4).
    assert_eq!(strategy(layout(64, 16384, 1), CPU, big), Strategy::Columns);
    assert_eq!(strategy(layout(64, 2048, 1), CPU, big), Strategy::Columns);
    assert_eq!(strategy(layout(64, 16384, 1), GPU, big), Strategy::Split);
    assert_eq!(strategy(layout(16, 16384, 1), GPU, big), Strategy::Columns);
    assert_eq!(strategy(layout(17, 16384, 1), GPU, big), Strategy::Split);
    assert_eq!(strategy(layout(32, 32768, 1), GPU, big), Strategy::Columns);
    assert_eq!(strategy(layout(33, 32768, 1), GPU, big), Strategy::Split);
    assert_eq!(strategy(layout(32, 32764, 1), GPU, big), Strategy::Split);
    assert_eq!(
        strategy(layout(16, 246_723, 1), GPU, big),
        Strategy::ColumnStats
    );
    assert_eq!(strategy(layout(17, 246_723, 1), GPU, big), Strategy::Split);
    assert_eq!(
        strategy(layout(32, 131_072, 1), GPU, big),
        Strategy::Columns
    );
}

/// The column kernels keep a lane's rows in registers on CPU adapters, in
/// the smallest arrays that hold them (the plain four-channel kernels hold
/// 8), and never on GPUs.
#[test]
fn column_registers_take_the_smallest_arrays() {
    use strategy::ColumnRegs::*;
    let cpu = Strategy::reg_rows(CPU);
    assert_eq!(Strategy::reg_rows(GPU), 0);
    for (n, four, one) in [
        (1, Plain, Rows64),
        (8, Plain, Rows64),
        (9, Rows64, Rows64),
        (64, Rows64, Rows64),
        (65, Rows256, Rows256),
        (256, Rows256, Rows256),
        (257, Plain, Plain),
    ] {
        assert_eq!(Strategy::Columns.column_regs(n, cpu), four, "{n}");
        assert_eq!(Strategy::ColumnStats.column_regs(n, cpu), one, "{n}");
        assert_eq!(Strategy::Columns.column_regs(n, 0), Plain, "{n}");
        assert_eq!(Strategy::ColumnStats.column_regs(n, 0), Plain, "{n}");
    }
}

#[test]
fn workgroup_finalize_only_for_many_states_of_few_channels() {
    let lim = limits(1 << 30, 256, 65535);
    let plan = |n, c, merge| plan_exec(&layout(n, c, 1), 4, lim, merge).expect("plan");
    // Many rows of few channels: hundreds of partial rows.
    let long = plan(262_144, 16, GPU);
    assert!(long.partial_rows >= 64, "{long:?}");
    assert!(long.finalize_groups());
    // Odd C: virtual channels, states counted over the folds.
    assert!(plan(200_003, 3, GPU).finalize_groups());
    // The same on a CPU adapter (per-thread partials): a thread each,
    // but for fewer channels than a SIMD group's lanes.
    assert!(!plan(262_144, 16, CPU).finalize_groups());
    let one = plan(4_194_304, 1, CPU);
    assert!(one.partial_rows >= 64 && one.finalize_groups(), "{one:?}");
    assert!(plan(200_003, 3, CPU).finalize_groups());
    let few = plan(16, 2, CPU);
    assert!(!few.finalize_groups(), "few states: {few:?}");
    // Few rows: few partial states per channel.
    assert!(!plan(64, 1024, GPU).finalize_groups());
    // Many channels: a thread each fills the GPU.
    let wide = plan(4096, 16_384, GPU);
    assert!(!wide.finalize_groups(), "{wide:?}");
}
