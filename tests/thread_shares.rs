//! Small and mid-sized inputs where threads write their own partial
//! states (CPU adapters): each thread folds at least `THREAD_MIN_UNITS`
//! units of its lane (rows, vec4s of a plane or masked runs) where the
//! lane has them, so these splits have fewer, longer segments than the
//! workgroup target alone would give. Every variant against the
//! reference, the column kernels off, with data near zero and far from it.

mod common;

use common::assert_matches_reference;

#[test]
fn longer_thread_shares_match_the_reference() {
    let Some(ctx) = common::context_tuned(Some(true), Some(false)) else {
        return;
    };
    let modes = [true, true, false, true];
    for (i, shape) in [
        // Rows (C % 4 == 0), paired lanes, a sweep.
        &[2048usize, 64][..],
        &[3000, 20],
        &[1500, 256],
        // Odd rows (virtual channels).
        &[1001, 3],
        &[4099, 7],
        // Planes, masked runs, the general layout.
        &[64, 16, 256],
        &[50, 5, 100],
        &[33, 4, 30],
        &[300, 3, 3],
    ]
    .iter()
    .enumerate()
    {
        assert_matches_reference(&ctx, shape, &modes, 900 + i as u64, 0.0, 1.0);
        assert_matches_reference(&ctx, shape, &modes, 950 + i as u64, 1e4, 0.1);
    }
}
