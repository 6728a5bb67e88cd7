//! Edge values through every strategy: the vec4 the tensor's end cuts in
//! the rows reductions of odd C or short runs of odd L (virtual channels),
//! the rows reductions of wide rows with two lanes per thread (paired
//! lanes, CPU adapters), eval backwards, which never read the input, and
//! gradients of huge spreads.

mod common;

use common::{check_step, context_with, Rng};
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNormConfig, MemoryFormat, Tensor};

/// Odd `C`, or short runs of odd `L`, over rows of virtual channels
/// (`lcm(C * L, 4)` values): where the tensor ends inside a vec4 of the
/// last virtual row (N * C * L % 4 != 0), that vec4's values enter the
/// statistics once each, with their own channels, whatever they are (NaN
/// poisons only its channel; values near f32's limit rescale only theirs),
/// and the padding past the end never does; data far from 0 (1e4 + 0.1 *
/// noise) keeps its variance.
#[test]
fn odd_channel_tails_keep_their_values() {
    let Some(ctx) = context_with(Some(false)) else {
        return;
    };
    let shapes: [&[usize]; 11] = [
        &[131, 3],
        &[130, 7],
        &[129, 6],
        &[67, 5],
        &[97, 2],
        &[65, 3, 7],
        &[33, 5, 21],
        &[9, 2, 3],
        &[17, 1, 3],
        &[31, 3, 5],
        &[41, 3, 21],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let (n, c) = (shape[0], shape[1]);
        let numel: usize = shape.iter().product();
        for tail in 0..4 {
            let mut rng = Rng(200 + i as u64);
            let mut x = rng.normals(numel, 5.0, 2.0);
            match tail {
                0 => x[numel - 1] = f32::NAN,
                1 => {
                    // Near f32's limit, in the last two channels (the same
                    // channel's +-3e38 would cancel to f32 rounding of 3e38).
                    x[numel - 1] = 3e38;
                    if c > 1 {
                        x[numel - 1 - numel / n / c] = -3e38;
                    }
                }
                2 => x[numel - 1] = 1e4,
                _ => x = rng.normals(numel, 1e4, 0.1),
            }
            let dy = rng.normals(numel, 0.0, 1.0);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            let at = |what: &str| format!("{shape:?} tail {tail} {what}");
            check_step(
                &ctx,
                (&mut gpu, &mut reference),
                (&x, &dy),
                (shape, MemoryFormat::ChannelsFirst),
                &at,
                (1e-3, 1e-3),
            );
        }
    }
}

/// Wide rows (`C % 4 == 0`, `C >= 64`, many rows) take paired lanes on
/// CPU adapters: each reduction thread walks lanes `q` and `q + 8` (four
/// channels each) over the same rows. Each lane keeps its own values: NaN
/// in the second lane, values near f32's limit there (its careful fold runs
/// alone), a lane without a partner (`C = 68`, `100`, `132`: the last lane
/// of a tile walks alone), data far from 0; as in the reference.
#[test]
fn paired_lanes_keep_their_values() {
    let Some(ctx) = context_with(Some(false)) else {
        return;
    };
    let shapes: [[usize; 2]; 6] = [
        [300, 64],
        [100, 68],
        [70, 100],
        [130, 132],
        [257, 1024],
        [90, 260],
    ];
    for (i, &[n, c]) in shapes.iter().enumerate() {
        let numel = n * c;
        for case in 0..4 {
            let mut rng = Rng(400 + i as u64);
            let mut x = rng.normals(numel, 5.0, 2.0);
            // Channel 33 lies in lane 8, the second lane of the pair (0, 8).
            match case {
                0 => {
                    x[(n - 1) * c + 33] = f32::NAN;
                    x[c - 1] = f32::NAN;
                }
                1 => {
                    x[(n - 1) * c + 33] = 3e38;
                    x[(n - 2) * c + 34] = -3e38;
                    x[c + c - 1] = 3e38;
                }
                2 => x[(n - 1) * c + c - 1] = 1e4,
                _ => x = rng.normals(numel, 1e4, 0.1),
            }
            let dy = rng.normals(numel, 0.0, 1.0);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            let at = |what: &str| format!("[{n}, {c}] case {case} {what}");
            check_step(
                &ctx,
                (&mut gpu, &mut reference),
                (&x, &dy),
                (&[n, c], MemoryFormat::ChannelsFirst),
                &at,
                (1e-3, 1e-3),
            );
        }
    }
}

/// PyTorch's eval backward is `dx = dy * weight * invstd(running)`: it
/// never reads x, so a NaN or infinite input leaves dx finite (its
/// channel's grad_weight, `sum dy * x_hat`, is NaN). In every layout and
/// strategy, as in the reference.
#[test]
fn eval_backward_does_not_read_the_input() {
    for columns in [Some(true), Some(false)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        for shape in [
            vec![6usize, 8],
            vec![6, 7],
            vec![300, 16],
            vec![300, 5],
            vec![40, 3, 8],
            vec![40, 3, 7],
            vec![2, 3, 301],
        ] {
            let c = shape[1];
            let numel: usize = shape.iter().product();
            let mut rng = Rng(7);
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
            let w = rng.normals(c, 1.0, 0.3);
            gpu.set_weight(&w).expect("w");
            reference.set_weight(&w).expect("w");
            // One training step for finite running statistics.
            let x0 = rng.normals(numel, 2.0, 1.5);
            gpu.forward(&Tensor::from_slice(&ctx, &x0, &shape).expect("x"))
                .expect("train");
            reference.forward(&x0, &shape).expect("cpu train");
            gpu.eval();
            reference.eval();
            let mut x = rng.normals(numel, 2.0, 1.5);
            x[0] = f32::NAN;
            x[numel / 2] = f32::INFINITY;
            x[numel - 1] = f32::NEG_INFINITY;
            let dy = rng.normals(numel, 0.0, 1.0);
            let at = |what: &str| format!("{columns:?} {shape:?} {what}");
            let gi = check_step(
                &ctx,
                (&mut gpu, &mut reference),
                (&x, &dy),
                (&shape, MemoryFormat::ChannelsFirst),
                &at,
                (1e-5, 1e-4),
            );
            assert!(gi.iter().all(|v| v.is_finite()), "{}", at("dx finite"));
        }
    }
}

/// Huge spreads: std from 1e19 to 1e34, where weight * invstd * invstd
/// (about 1 / var) falls below f32's range (flushed to zero by GPUs that
/// flush subnormals from 1e19 on, lost by every adapter from about 1e23
/// on). grad_input (relative to its own size, about invstd) and
/// grad_weight still match the reference in every strategy, rows and
/// columns, with C % 4 == 0 and not, and with L > 1. (Past 1e34 the
/// smallest entries of grad_input are themselves subnormal, which such GPUs
/// store as 0.)
#[test]
fn huge_spreads_keep_their_gradients() {
    for columns in [Some(false), Some(true)] {
        let Some(ctx) = context_with(columns) else {
            return;
        };
        for (k, shape) in [vec![64usize, 8], vec![6, 8], vec![9, 7], vec![16, 3, 5]]
            .iter()
            .enumerate()
        {
            for (j, sd) in [1e19f64, 1e25, 1e30, 1e34].into_iter().enumerate() {
                let numel: usize = shape.iter().product();
                let mut rng = Rng(100 + (k * 4 + j) as u64);
                let x = rng.normals(numel, 0.0, sd);
                let dy = rng.normals(numel, 0.0, 1.0);
                let c = shape[1];
                let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
                let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("cpu");
                let tx = Tensor::from_slice(&ctx, &x, shape).expect("x");
                let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
                let want = reference.forward(&x, shape).expect("cpu forward");
                let at = |what: &str| format!("{columns:?} {shape:?} sd {sd:e} {what}");
                common::check_close(&at("y"), &y, &common::f64s(&want), 2e-4).expect("y");
                let tdy = Tensor::from_slice(&ctx, &dy, shape).expect("dy");
                let g = gpu.backward(&tdy).expect("backward");
                let cg = reference.backward(&dy).expect("cpu backward");
                // dx is about invstd in size: compared in units of it.
                let dx: Vec<f32> = g
                    .grad_input
                    .to_vec()
                    .expect("read")
                    .iter()
                    .map(|v| (f64::from(*v) * sd) as f32)
                    .collect();
                let want_dx: Vec<f64> = cg.grad_input.iter().map(|v| f64::from(*v) * sd).collect();
                common::check_close(&at("dx * sd"), &dx, &want_dx, 1e-3).expect("dx");
                let gw = g.grad_weight.expect("affine").to_vec().expect("read");
                let want_gw = common::f64s(&cg.grad_weight.expect("affine"));
                common::check_close(&at("grad_weight"), &gw, &want_gw, 1e-3).expect("gw");
            }
        }
    }
}

/// A fused ReLU keeps NaN as NaN (PyTorch's `relu`), and passes the
/// gradient where the output is NaN (`threshold_backward`: zero only where
/// the output is `<= 0`), on every backend: llvmpipe's GL compiled the
/// comparison into a `max` that made NaN 0. Also `-0.0` stays `-0.0`.
#[test]
fn fused_relu_keeps_nan() {
    use wgpu_batchnorm::Epilogue;
    let Some(ctx) = common::context() else { return };
    // Channel 0 of (4, 2) is poisoned; channel 1 has negatives.
    let x = [f32::NAN, -1.0, 2.0, 1.0, 3.0, -2.0, 0.0, 4.0];
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(2)).expect("bn");
    let t = Tensor::from_slice(&ctx, &x, &[4, 2]).expect("x");
    let y = bn.forward_fused(&t, Epilogue::relu()).expect("forward");
    let y = y.to_vec().expect("read");
    assert!(y.iter().step_by(2).all(|v| v.is_nan()), "{y:?}");
    assert!(y.iter().skip(1).step_by(2).all(|v| *v >= 0.0), "{y:?}");
    assert!(y.iter().skip(1).step_by(2).any(|v| *v == 0.0), "{y:?}");
    let dy = Tensor::from_slice(&ctx, &[1.0; 8], &[4, 2]).expect("dy");
    let g = bn.backward(&dy).expect("backward");
    // Channel 0: x_hat is NaN, so grad_input is NaN; grad_bias is the sum
    // of the passed dy (every output NaN: all four pass).
    let gb = g.grad_bias.expect("affine").to_vec().expect("read");
    assert_eq!(gb[0], 4.0, "{gb:?}");
    let zeros = y.iter().skip(1).step_by(2).filter(|v| **v == 0.0).count();
    assert_eq!(gb[1], (4 - zeros) as f32, "{gb:?} {y:?}");
}

/// A channel holding an infinity and a NaN has a NaN running mean (its
/// batch mean is NaN), on every backend and in every kernel: on llvmpipe's
/// GL the four-channel states' merge kept the infinity (`inf`, or `-inf`,
/// whatever the order of the two values).
#[test]
fn inf_and_nan_in_one_channel_give_a_nan_running_mean() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    for (threads, columns) in [
        (None, None),
        (Some(false), Some(false)),
        (Some(true), Some(true)),
    ] {
        let Some(ctx) = common::context_tuned(threads, columns) else {
            return;
        };
        for (a, b) in [(inf, nan), (nan, inf), (-inf, nan), (nan, -inf)] {
            for c in [4usize, 3, 8] {
                // [2, C]: channel 0 holds a and b; the others are ordinary.
                let mut x: Vec<f32> = (0..2 * c).map(|i| (i % c) as f32 * 0.25 + 0.5).collect();
                x[0] = a;
                x[c] = b;
                let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
                bn.forward(&Tensor::from_slice(&ctx, &x, &[2, c]).expect("x"))
                    .expect("forward");
                let rm = bn.running_mean().expect("rm").expect("tracked");
                assert!(
                    rm[0].is_nan(),
                    "{a} and {b}, C = {c} ({threads:?}, {columns:?}): {rm:?}"
                );
                assert!(rm[1..].iter().all(|v| v.is_finite()), "{rm:?}");
            }
        }
    }
}
