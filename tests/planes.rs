//! Planes (`(N, C, L)` with `L % 4 == 0`) of at least 1024 values, planes
//! or masked runs (odd L, or L % 4 == 2, from 12) of at least 128
//! channels or of few vec4s a channel (small inputs), and masked runs of
//! 12 to 23 values: CPU adapters spread a
//! reduction workgroup over up to eight channels there, GPUs keep one
//! channel per workgroup. Both splits against the reference, with
//! channel counts that fill a workgroup's eight lanes, leave some idle, or
//! need a second tile, and data far from zero.

mod common;

use common::{assert_matches_reference, assert_matches_reference_in};
use wgpu_batchnorm::{MemoryFormat, Rank2d};

#[test]
fn spread_planes_match_the_reference_in_either_split() {
    let modes = [true, true, false, true];
    // Per-thread partials (CPU adapters) and workgroup merges (GPUs).
    for thread_partials in [true, false] {
        let Some(ctx) = common::context_tuned(Some(thread_partials), None) else {
            return;
        };
        for (i, shape) in [
            [2usize, 8, 1024],
            [3, 5, 1024],
            [2, 13, 1028],
            [1, 3, 4096],
            [4, 1, 2048],
            [3, 17, 1020],
            [2, 130, 16],
            [3, 257, 8],
            [2, 127, 16],
            [2, 130, 49],
            [3, 257, 21],
            [40, 3, 21],
            [3, 257, 22],
            [5, 6, 14],
            [9, 11, 23],
            [9, 11, 25],
        ]
        .iter()
        .enumerate()
        {
            assert_matches_reference(&ctx, shape, &modes, 400 + i as u64, 1e4, 0.1);
        }
        assert_matches_reference_in::<Rank2d>(
            &ctx,
            &[3, 11, 32, 32],
            MemoryFormat::ChannelsFirst,
            &modes,
            410,
            -3.0,
            2.0,
        );
    }
}
