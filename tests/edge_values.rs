//! Edge values through every strategy: the vec4 the tensor's end cuts in
//! the rows reductions of odd C or short runs of odd L (virtual channels),
//! the rows reductions of wide rows with two lanes per thread (paired
//! lanes, CPU adapters), and eval backwards, which never read the input.

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
