//! The choices a GPU's merge model makes, run on any adapter with
//! `Tuning::thread_partials` off (workgroup merges, no per-thread
//! partials, the column kernels' GPU rules), against the reference: on
//! lavapipe the default merge model is a CPU adapter's, so CI would
//! otherwise reach these plans only where a test forces the column
//! kernels.

mod common;

use common::assert_matches_reference;

/// Up to 32 rows of at least 32768 channels (a multiple of 4) take the
/// column kernels on GPUs, 16 rows otherwise: each side of both limits,
/// odd C at 17 rows, and data far from zero.
#[test]
fn wide_rows_on_either_side_of_the_column_limits_match_the_reference() {
    // The GPU merge model, the column kernels chosen by its rules.
    let Some(ctx) = common::context_tuned(Some(false), None) else {
        return;
    };
    let modes = [true, true, false, true];
    for (i, shape) in [
        [16usize, 32_764],
        [17, 32_764],
        [17, 32_768],
        [32, 32_768],
        [33, 32_768],
        [17, 32_771],
    ]
    .iter()
    .enumerate()
    {
        assert_matches_reference(&ctx, shape, &modes, 300 + i as u64, 1e4, 0.1);
    }
}
