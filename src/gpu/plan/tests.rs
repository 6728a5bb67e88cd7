//! Unit tests of the pure launch planners.

use super::*;

fn limits(max_binding: u64, align: u64, max_dim: u32) -> DeviceLimits {
    DeviceLimits {
        max_binding,
        align,
        max_dim,
    }
}

const GPU: MergeModel = MergeModel {
    target_groups: 512,
    thread_partials: false,
};
const CPU: MergeModel = MergeModel {
    target_groups: 16,
    thread_partials: true,
};

#[test]
fn variant_choice() {
    let v = |n, c, l| Variant::of(&Layout { n, c, l });
    assert_eq!(v(8, 3, 4), Variant::Planes);
    assert_eq!(v(8, 3, 64), Variant::Planes);
    assert_eq!(v(8, 8, 1), Variant::Rows);
    assert_eq!(v(8, 6, 1), Variant::General);
    assert_eq!(v(8, 8, 3), Variant::General);
    assert_eq!(v(8, 1, 1), Variant::General);
    assert_eq!(Variant::Planes.width(), 4);
    assert_eq!(Variant::Rows.width(), 1);
}

/// Every unit of every lane belongs to exactly one segment.
#[test]
fn reductions_cover_every_value_once() {
    for (n, c, l) in [
        (1, 1, 1),
        (7, 3, 5),
        (4096, 64, 1),
        (2, 2048, 1),
        (3, 1, 4096),
        (1000, 5, 8),
    ] {
        let layout = Layout { n, c, l };
        for target in [1, 16, 512] {
            let variant = Variant::of(&layout);
            let p = plan_reduce(&layout, variant, 1 << 20, target);
            let units = (layout.per_channel() / variant.width()).max(1) as u32;
            assert!(p.segments * p.seg_len >= units, "{layout:?}");
            assert!((p.segments - 1) * p.seg_len < units, "{layout:?}");
            assert_eq!(p.lanes_per_group * p.threads_per_lane, WG);
            let lanes = if variant == Variant::Rows { c / 4 } else { c } as u32;
            assert!(p.tiles * p.lanes_per_group >= lanes);
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
        assert!(elementwise_groups(ch.count, long.row()) <= 49);
        assert!(ch.reduce.groups() <= 49);
    }
}

#[test]
fn tiny_bindings_are_an_error() {
    let layout = Layout { n: 4, c: 4, l: 4 };
    assert!(plan_exec(&layout, 4, limits(8, 256, 65535), GPU).is_err());
}

/// Every vec4 is covered exactly once and shares its channels with the
/// first vec4 of its invocation.
#[test]
fn slab_stride_covers_each_vec4_once_within_its_channels() {
    for (count, row) in [
        (1, 1),
        (7, 3),
        (64, 64),
        (4096, 64),
        (1000, 10),
        (999, 333),
        (12, 6),
        (80, 20),
        (4 * 5 * 7, 7),
    ] {
        let stride = slab_stride(count, row);
        let vec4s = count.div_ceil(4);
        let mut seen = vec![0u8; vec4s];
        for i in 0..stride.min(vec4s) {
            for j in 0..SLAB {
                let v = i + j * stride;
                if v < vec4s {
                    seen[v] += 1;
                    if j > 0 {
                        assert_eq!((v * 4) % row, (i * 4) % row, "count {count} row {row}");
                    }
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "count {count} row {row}");
    }
}
