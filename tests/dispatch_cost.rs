//! The cost of one op on a small shape stays a dispatch's, not a shader
//! compilation's. lavapipe of Mesa 22 (Debian 12's, the CI adapter)
//! inlines uniform values read at constant offsets by loop and branch
//! conditions and, while that halves the shader (small shapes do), compiles
//! the shader again at every dispatch: 15-30 ms per op on `(9, 4)` instead
//! of ~0.15 ms. The kernels read their parameters through an index the
//! driver cannot fold (`P()` in `shaders/common.wgsl`). Alone in its test
//! binary, so no other test's GPU work runs beside it.

mod common;

use std::time::{Duration, Instant};

use common::context_with;
use wgpu_batchnorm::{BatchNorm1d, BatchNormConfig, Tensor};

/// Median time of `op` over `runs` runs, each waited for.
fn median(runs: usize, mut op: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

#[test]
fn small_shapes_cost_a_dispatch_not_a_compilation() {
    // The column kernels (the default for these shapes), then the split
    // reductions, finalize and elementwise kernels.
    for columns in [None, Some(false)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        check_small_shapes(&ctx, columns);
    }
}

fn check_small_shapes(ctx: &wgpu_batchnorm::GpuContext, columns: Option<bool>) {
    // The first shapes each pipeline sees: the driver decides whether to
    // keep inlining on them.
    for shape in [&[9usize, 4][..], &[10, 5], &[2, 4], &[3, 7], &[6, 3, 5]] {
        let c = shape[1];
        let numel: usize = shape.iter().product();
        let x: Vec<f32> = (0..numel).map(|i| (i % 7) as f32 - 3.0).collect();
        let x = Tensor::from_slice(ctx, &x, shape).expect("x");
        let y = Tensor::from_slice(ctx, &vec![0.0; numel], shape).expect("y");
        for training in [true, false] {
            let mut bn = BatchNorm1d::new(ctx, BatchNormConfig::new(c)).expect("module");
            if !training {
                bn.eval();
            }
            // Pipeline creation happens on the first call.
            for _ in 0..3 {
                bn.forward_into(&x, &y).expect("forward");
                ctx.synchronize().expect("sync");
            }
            let t = median(15, || {
                bn.forward_into(&x, &y).expect("forward");
                ctx.synchronize().expect("sync");
            });
            assert!(
                t < Duration::from_millis(5),
                "{shape:?} training={training} columns={columns:?}: {t:?} per forward (a shader compilation per dispatch?)"
            );
            let t = median(15, || {
                bn.backward(&y).expect("backward");
                ctx.synchronize().expect("sync");
            });
            assert!(
                t < Duration::from_millis(5),
                "{shape:?} training={training} columns={columns:?}: {t:?} per backward (a shader compilation per dispatch?)"
            );
        }
    }
}
