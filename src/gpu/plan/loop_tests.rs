//! Unit tests of the loop bounds the plans keep: Mesa's llvmpipe
//! (lavapipe, llvmpipe's GL) ends every loop of a shader invocation once
//! it has run 65535 iterations in all, silently, so no invocation may walk
//! more than a bounded number of units, partial states or careful values,
//! whatever the shape, binding size, dtype and merge model.

use super::tests::{limits, CPU, GPU};
use super::*;

/// Every plan over a grid of shapes up to 2 GiB, bindings from 64 KiB to
/// 128 MiB (many chunks, rows longer than a chunk), f32 and f16, CPU
/// merge models of 16 and 512 target workgroups and the GPU one (at
/// lavapipe's 128 MiB every layout plans; smaller bindings may refuse
/// rows far longer than a chunk, `TooLarge`, never a plan past a bound):
/// each
/// reduction thread walks at most `MAX_THREAD_UNITS` units; one thread
/// merges at most `THREAD_MERGE_MAX_STATES` partial states of a channel,
/// a workgroup's thread as many; the careful walk's windows and their
/// merge stay within bounds.
#[test]
fn no_invocation_loops_past_a_bounded_count() {
    let many_cores = MergeModel {
        target_groups: 512,
        rows_target_groups: 512,
        ..CPU
    };
    let lens = [
        1usize,
        3,
        4,
        13,
        1001,
        1 << 16,
        (1 << 20) + 2,
        1 << 24,
        1 << 28,
    ];
    let mut planned = 0;
    let mut refused = Vec::new();
    for merge in [CPU, many_cores, GPU] {
        for binding in [64 << 10, (1 << 20) + 256, 4 << 20, 128 << 20] {
            for elem in [4usize, 2] {
                for c in [1usize, 2, 3, 9, 12, 64, 1000] {
                    for l in lens {
                        for n in [1usize, 2, 5, 1000, 1 << 20, 1 << 27] {
                            let bytes = (n as u128) * (c as u128) * (l as u128) * elem as u128;
                            if bytes > (1 << 31) {
                                continue;
                            }
                            let layout = Layout { n, c, l };
                            let lim = limits(binding, 256, 65535);
                            let at = format!("{layout:?} x{elem} binding {binding} {merge:?}");
                            // Smaller bindings may refuse (rows far longer
                            // than a chunk); lavapipe's own plan everything.
                            let p = match plan_exec(&layout, elem, lim, merge) {
                                Ok(p) => p,
                                Err(e) if binding < 128 << 20 => {
                                    refused.push(e);
                                    continue;
                                }
                                Err(e) => panic!("{at}: {e}"),
                            };
                            check(&p, &at);
                            planned += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(planned > 1000, "{planned} plans, {} refused", refused.len());
    // GPUs (no cap on loops) with bindings of 2 GiB: one chunk of 2^29
    // values plans, its careful windows widened to keep the merge's count.
    let gpu_limits = DeviceLimits {
        bounded_loops: false,
        ..limits((1 << 31) - 1, 256, 65535)
    };
    for (n, c, l) in [(67_110_000usize, 3usize, 1usize), (171, 3, 1 << 20)] {
        let layout = Layout { n, c, l };
        let p = plan_exec(&layout, 4, gpu_limits, GPU).expect("plan");
        for k in 0..p.chunks.len() {
            let (window, windows) = p.rescue_split(k);
            assert!(windows <= MAX_RESCUE_WINDOWS && window >= RESCUE_WINDOW);
        }
    }
    // Layouts past the old bounds plan (and keep them) at 128 MiB
    // bindings, and at the small bindings of the audit's reproducers.
    for (n, c, l, elem, binding) in [
        (1usize, 2usize, 1usize << 27, 4usize, 128u64 << 20),
        (5, 1, 16_777_217, 4, 128 << 20),
        (1, 3, 1 << 28, 2, 128 << 20),
        (2, 9, 1 << 24, 2, 128 << 20),
        (67_108_864, 12, 1, 2, 128 << 20),
        (1_398_096, 12, 1, 4, 4 << 20),
        (436_906, 1, 3, 4, 1 << 20),
        // Millions of channels: the rescue's room stays two vec4s a
        // channel where each chunk has one window a channel.
        (2, 2_097_152, 1, 4, 128 << 20),
        (2, 2_097_151, 1, 4, 128 << 20),
        (4, 1_048_576, 1, 4, 128 << 20),
        // One channel of 2^26 f16 values and a few more (odd counts stay
        // rows): windows of the channel's values inside the chunk, across
        // rows, not of whole rows or of pieces of each row.
        (32_769, 1, 1025, 2, 128 << 20),
        (65_535, 1, 1023, 2, 128 << 20),
        (65_601, 1, 1023, 2, 128 << 20),
        (32_755, 1, 2049, 2, 128 << 20),
        (16_383, 1, 4097, 2, 128 << 20),
        (11_185, 1, 6001, 2, 128 << 20),
        (22_369_623, 1, 3, 2, 128 << 20),
    ] {
        for merge in [CPU, many_cores, GPU] {
            let layout = Layout { n, c, l };
            let p = plan_exec(&layout, elem, limits(binding, 256, 65535), merge);
            let at = format!("{layout:?} x{elem} binding {binding} {merge:?}");
            let p = p.unwrap_or_else(|e| panic!("{at}: {e}"));
            check(&p, &at);
            let partials = (p.rescue_flag() as u64 + 1) * 16;
            assert!(partials <= binding, "{at}: {partials} bytes of partials");
        }
    }
}

/// The plan's loop bounds (`ExecPlan::check_loops`, which `plan_exec` runs
/// on bounded adapters; called again here, so that a plan that skipped it
/// fails), and its careful windows within the merge's count, covering
/// every value of a chunk's channel.
fn check(p: &ExecPlan, at: &str) {
    p.check_loops().unwrap_or_else(|e| panic!("{at}: {e}"));
    for (k, ch) in p.chunks.iter().enumerate() {
        let (window, windows) = p.rescue_split(k);
        assert!(
            windows <= MAX_RESCUE_WINDOWS,
            "{at}: chunk {k} merges {windows} windows"
        );
        let (n, l) = (ch.layout.n, ch.layout.l);
        let covered = windows * window;
        assert!(
            covered >= (n * l).min(ch.count),
            "{at}: chunk {k} covers {covered}"
        );
    }
}
