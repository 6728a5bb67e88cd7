//! Unit tests of the layout classes (`Variant`) and the virtual channels
//! of the rows reductions.

use super::tests::{layout, limits, CPU, GPU};
use super::*;

#[test]
fn variant_choice() {
    let v = |n, c, l| Variant::of(&Layout { n, c, l });
    assert_eq!(v(8, 3, 4), Variant::Planes);
    assert_eq!(v(8, 3, 64), Variant::Planes);
    assert_eq!(v(8, 8, 1), Variant::Rows);
    assert_eq!(v(8, 6, 1), Variant::OddRows);
    assert_eq!(v(8, 1, 1), Variant::OddRows);
    // Short rows of L % 4 != 0: virtual channels too (rows of lcm(C * L, 4)).
    assert_eq!(v(8, 8, 3), Variant::OddRows);
    assert_eq!(v(8, 3, 5), Variant::OddRows);
    assert_eq!(v(8, 341, 3), Variant::OddRows);
    // Long rows, or many virtual channels per channel: masked or general.
    assert_eq!(v(8, 3, 174763), Variant::Masked);
    assert_eq!(v(8, 1, 1001), Variant::Masked);
    assert_eq!(v(8, 1025, 3), Variant::General);
    assert_eq!(v(8, 1, 3), Variant::OddRows);
    assert_eq!(v(8, 1, 255), Variant::Masked);
    // Runs of 12 or more: masked.
    assert_eq!(v(8, 16, 13), Variant::Masked);
    assert_eq!(v(8, 3, 21), Variant::Masked);
    assert_eq!(v(8, 3, 11), Variant::OddRows);
    // Masked units: the aligned vec4s a run of L values touches at most.
    assert_eq!(Variant::Masked.units(&Layout { n: 2, c: 3, l: 21 }), 2 * 6);
    assert_eq!(Variant::Masked.units(&Layout { n: 1, c: 3, l: 5 }), 2);
    assert_eq!(Variant::Planes.width(), 4);
    assert_eq!(Variant::Rows.width(), 1);
}

/// Odd `C` rows: rows of `lcm(C, 4)` virtual channels covering every value
/// (the last row cut short), `folds` of them per channel, partial rows
/// of `C * folds` states plus the tail row; where those would not fit one
/// binding, the general reductions (`C` wide) instead.
#[test]
fn odd_rows_reduce_over_virtual_channels() {
    let cases = [
        ((7, 3), (2, 12)),
        ((5, 6), (3, 12)),
        ((9, 1), (3, 4)),
        ((12, 5), (3, 20)),
        ((1001, 13), (251, 52)),
        ((3, 1_048_577), (1, 4_194_308)),
    ];
    for ((n, c), (rows, vc)) in cases {
        let layout = Layout { n, c, l: 1 };
        assert_eq!(Variant::of(&layout), Variant::OddRows);
        let v = Variant::OddRows.reduce_layout(&layout);
        assert_eq!((v.n, v.c, v.l), (rows, vc, 1), "({n}, {c})");
        assert!(v.numel() >= layout.numel() && v.numel() - layout.numel() < vc);
        assert_eq!(Variant::OddRows.folds(&layout), vc / c);
        assert_eq!(Variant::OddRows.units(&layout), rows);
        // The split covers every virtual row.
        let p = plan_reduce(&layout, Variant::OddRows, 65535, 16);
        assert!((p.segments * p.seg_len) as usize >= rows, "({n}, {c})");
    }
    let rows = Layout { n: 7, c: 8, l: 1 };
    assert_eq!(Variant::Rows.reduce_layout(&rows), rows);
    assert_eq!(
        (Variant::Rows.folds(&rows), Variant::Rows.tail_rows()),
        (1, 0)
    );
    for model in [CPU, GPU] {
        let plan =
            plan_exec(&layout(1001, 3, 1), 4, limits(1 << 30, 256, 65535), model).expect("plan");
        assert_eq!(plan.variant, Variant::OddRows);
        assert_eq!(plan.folds(), 4);
        let rows: u32 = plan
            .chunks
            .iter()
            .map(|c| {
                let per = if plan.thread_partials {
                    c.reduce.threads_per_lane
                } else {
                    1
                };
                c.reduce.segments * per
            })
            .sum();
        assert_eq!(plan.partial_rows, rows + 1, "the tail row");
        assert_eq!(plan.partial_count(), plan.partial_rows as usize * 12);
    }
    // (2, 2^20 + 1): 4 * C virtual states per row need 2 * 64 MiB.
    let wide = layout(2, 1_048_577, 1);
    let tight = plan_exec(&wide, 4, limits(128 << 20, 256, 65535), GPU).expect("plan");
    assert_eq!(tight.variant, Variant::General);
    assert!(tight.partial_count() as u64 * 16 <= 128 << 20);
    let roomy = plan_exec(&wide, 4, limits(1 << 30, 256, 65535), GPU).expect("plan");
    assert_eq!(roomy.variant, Variant::OddRows);
}

/// `(N, C, L)` with short rows of `L % 4 != 0`: rows of `lcm(C * L, 4)`
/// virtual channels, `folds = lcm(C * L, 4) / C` per channel; chunked, the
/// masked (L > 4) or general reductions.
#[test]
fn short_runs_reduce_over_virtual_channels() {
    for ((n, c, l), (rows, vc)) in [
        ((65536, 3, 7), (16384, 84)),
        ((5, 2, 3), (3, 12)),
        ((7, 16, 5), (7, 80)),
    ] {
        let layout = Layout { n, c, l };
        assert_eq!(Variant::of(&layout), Variant::OddRows);
        let v = Variant::OddRows.reduce_layout(&layout);
        assert_eq!((v.n, v.c, v.l), (rows, vc, 1), "({n}, {c}, {l})");
        assert_eq!(Variant::OddRows.folds(&layout), vc / c);
        let p = plan_reduce(&layout, Variant::OddRows, 65535, 16);
        assert!((p.segments * p.seg_len) as usize >= rows, "({n}, {c}, {l})");
    }
    let big = layout(65536, 3, 7);
    let chunked = plan_exec(&big, 4, limits(1 << 20, 256, 65535), CPU).expect("plan");
    assert_eq!(chunked.variant, Variant::Masked);
    let short = layout(65536, 3, 3);
    let chunked = plan_exec(&short, 4, limits(1 << 20, 256, 65535), CPU).expect("plan");
    assert_eq!(chunked.variant, Variant::General);
}

/// The careful gradient walk's windows (`ExecPlan::rescue_split`):
/// `RESCUE_WINDOW` of a channel's values inside the chunk each, across
/// rows; their sums fit before the rescue flag; and `grads_rescue`'s grid
/// gives no thread more than four (channel, window) items.
#[test]
fn rescue_windows_cover_each_channel_in_bounded_walks() {
    let lim = limits(1 << 27, 256, 65535);
    let plan = |n, c, l| plan_exec(&Layout { n, c, l }, 4, lim, CPU).expect("plan");
    // (N, C): RESCUE_WINDOW rows a window.
    let p = plan(30_000, 2, 1);
    assert_eq!(p.rescue_windows(0), 30_000usize.div_ceil(RESCUE_WINDOW));
    // Rows longer than a window: pieces of RESCUE_WINDOW values.
    let p = plan(1, 1, 100_001);
    assert_eq!(p.rescue_windows(0), 100_001usize.div_ceil(RESCUE_WINDOW));
    // Runs of 1001: the channel's values in order, across rows.
    let p = plan(100, 2, 1001);
    assert_eq!(
        p.rescue_windows(0),
        (100 * 1001usize).div_ceil(RESCUE_WINDOW)
    );
    assert!(p.rescue_flag() >= 2 * 2 * (1 + p.rescue_windows(0)));
    assert_eq!(p.rescue_windows(1), 0);
    // Chunks: each its own windows over the rows it overlaps.
    let p = plan_exec(&layout(32_763, 1, 1), 4, limits(100_096, 256, 65535), CPU).expect("plan");
    assert!(p.chunks.len() > 1);
    for (k, ch) in p.chunks.iter().enumerate() {
        let (n, l) = (ch.layout.n, ch.layout.l);
        let values = p.rescue_windows(k) * RESCUE_WINDOW;
        assert!(values >= n * l, "chunk {k}: {n}x{l} in {values}");
    }
    // A row longer than a chunk: windows of the part inside it only.
    let lim = limits(64 << 10, 256, 65535);
    let p = plan_exec(&layout(1, 2, 1 << 20), 4, lim, CPU).expect("plan");
    for (k, ch) in p.chunks.iter().enumerate() {
        let inside = ch.count.min(ch.layout.n << 20);
        assert_eq!(
            p.rescue_windows(k),
            inside.div_ceil(RESCUE_WINDOW),
            "chunk {k}"
        );
    }
    // The grid: one thread an item up to RESCUE_GROUPS workgroups, then at
    // most four items a thread.
    assert_eq!(rescue_window_groups(30), 1);
    assert_eq!(rescue_window_groups(64 * 256), 64);
    assert_eq!(rescue_window_groups(1 << 20), (1 << 20) / (4 * 256));
}
