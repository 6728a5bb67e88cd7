//! Running statistics near f32's limit, in every strategy: PyTorch's
//! update `(1 - m) * running + m * batch` is a blend of two finite values,
//! so it stays finite where `batch - running` itself overflows f32 (a
//! running mean of -2e38 and a batch of 2e38; a negative running variance
//! set by the application and a huge batch variance). The kernels' form
//! `running + m * (batch - running)` must fall back to PyTorch's there.

mod common;

use common::{check_close, check_step, context_tuned, f64s, Rng};
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNormConfig, MemoryFormat, ShardMoments, Tensor};

/// Shapes that reach every column kernel (one channel per thread, four
/// aligned or odd, their register and swept forms) and the split path
/// (rows, odd rows, planes).
const SHAPES: [&[usize]; 8] = [
    &[2, 4],
    &[2, 5],
    &[20, 4100],
    &[20, 4099],
    &[10, 4100],
    &[300, 4],
    &[301, 5],
    &[3, 4, 8],
];

/// The tunings: per-thread partials and the column kernels each forced on
/// and off.
const TUNINGS: [(Option<bool>, Option<bool>); 4] = [
    (Some(true), Some(true)),
    (Some(true), Some(false)),
    (Some(false), Some(true)),
    (Some(false), Some(false)),
];

/// One training step from `running` (mean, var) on `x`, GPU against the
/// reference (output, gradients and the running statistics), which must
/// come out finite.
fn step_from(
    ctx: &wgpu_batchnorm::GpuContext,
    shape: &[usize],
    running: (f32, f32),
    x: &[f32],
    at: &str,
) {
    let c = shape[1];
    let mut gpu = BatchNorm1d::new(ctx, BatchNormConfig::new(c)).expect("module");
    let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
    gpu.set_running_mean(&vec![running.0; c]).expect("rm");
    gpu.set_running_var(&vec![running.1; c]).expect("rv");
    reference.set_running_mean(&vec![running.0; c]).expect("rm");
    reference.set_running_var(&vec![running.1; c]).expect("rv");
    let dy = Rng(3).normals(x.len(), 0.0, 1.0);
    let label = |what: &str| format!("{at} {shape:?} {what}");
    check_step(
        ctx,
        (&mut gpu, &mut reference),
        (x, &dy),
        (shape, MemoryFormat::ChannelsFirst),
        &label,
        (1e-3, 1e-3),
    );
    for stat in [gpu.running_mean(), gpu.running_var()] {
        let stat = stat.expect("read").expect("tracked");
        assert!(stat.iter().all(|v| v.is_finite()), "{}", label("finite"));
    }
}

#[test]
fn running_updates_past_the_difference_range() {
    for (partials, columns) in TUNINGS {
        let Some(ctx) = context_tuned(partials, columns) else {
            return;
        };
        for shape in SHAPES {
            let numel: usize = shape.iter().product();
            let at = format!("partials {partials:?} columns {columns:?}");
            // The mean: a constant batch of 2e38 from a running mean of
            // -2e38 (PyTorch: 0.9 * -2e38 + 0.1 * 2e38 = -1.6e38).
            step_from(&ctx, shape, (-2e38, 1.0), &vec![2e38; numel], &at);
            // The variance: 1e18 +- 1.2e19 (a batch variance of about
            // 1.44e38, unbiased up to 2.88e38) from a running variance of
            // -3e38 (PyTorch: 0.9 * -3e38 + 0.1 * 1.44e38 = -2.56e38). The
            // offset keeps the mean away from 0 (the f32 rounding of such
            // sums, about 1e12, is then within the tolerance).
            let row = numel / shape[0];
            let x: Vec<f32> = (0..numel)
                .map(|i| {
                    1e18 + if (i / row).is_multiple_of(2) {
                        1.2e19
                    } else {
                        -1.2e19
                    }
                })
                .collect();
            step_from(&ctx, shape, (0.0, -3e38), &x, &at);
        }
    }
}

/// The cumulative average (`momentum = None`): batches of -2e38 then 2e38
/// average to 0 (m = 1/2 at the second step), as in PyTorch.
#[test]
fn cumulative_average_of_opposite_huge_batches() {
    let Some(ctx) = common::context() else {
        return;
    };
    for shape in [[2usize, 1], [2, 4], [2, 5], [300, 4]] {
        let c = shape[1];
        let numel = shape[0] * c;
        let cfg = BatchNormConfig::new(c).momentum(None);
        let mut gpu = BatchNorm1d::new(&ctx, cfg.clone()).expect("module");
        let mut reference = cpu::BatchNorm1d::new(cfg).expect("module");
        for v in [-2e38f32, 2e38] {
            let x = vec![v; numel];
            gpu.forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
                .expect("forward");
            reference.forward(&x, &shape).expect("cpu forward");
        }
        let got = gpu.running_mean().expect("read").expect("tracked");
        let want = reference.running_mean().expect("tracked");
        assert!(want.iter().all(|&v| v == 0.0), "reference {want:?}");
        check_close(&format!("{shape:?} running_mean"), &got, &f64s(&want), 1e-6)
            .expect("running_mean");
    }
}

/// Statistics merged across devices (`forward_with_moments`) update the
/// running statistics the same way.
#[test]
fn merged_moments_update_past_the_difference_range() {
    let Some(ctx) = common::context() else {
        return;
    };
    for shape in [[2usize, 4], [2, 5], [300, 4]] {
        let c = shape[1];
        let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
        gpu.set_running_mean(&vec![-2e38; c]).expect("rm");
        let x = Tensor::from_slice(&ctx, &vec![2e38; shape[0] * c], &shape).expect("x");
        let global =
            ShardMoments::merge(&[gpu.shard_moments(&x).expect("moments")]).expect("merge");
        gpu.forward_with_moments(&x, &global).expect("forward");
        let got = gpu.running_mean().expect("read").expect("tracked");
        check_close(
            &format!("{shape:?} running_mean"),
            &got,
            &vec![-1.6e38; c],
            1e-6,
        )
        .expect("running_mean");
    }
}
