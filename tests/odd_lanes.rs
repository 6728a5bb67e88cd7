//! #16: `(N, C)` inputs of `C % 4 != 0` in 9 to 256 rows of many channels
//! take four channels per thread on CPU adapters (the training forward
//! without a residual from 9 rows, the other passes from 17) (`lanes4_odd.wgsl`: each
//! value read and written on its own, the last lane short of one to three
//! channels), forced here on any adapter (per-thread partials and the
//! column kernels forced on; without, the kernels the adapter picks). Every
//! mode against the reference; edge values kept to their channels, those
//! of the last lane included; the state and gradients of each channel
//! (a dead component written past the last channel would land on the next
//! section's first channel) checked channel by channel; the fused
//! residual + ReLU against its parts, a ReLU alone, and recorded work.

mod common;

use common::{assert_matches_reference, check_per_channel, context_tuned, Rng};
use wgpu_batchnorm::{cpu, BatchNorm1d, BatchNormConfig, Epilogue, Tensor};

/// The shapes: each `C % 4`, value counts just past 2^16 (9, 16 and 17
/// rows: below 17 only the plain training forward in four-channel lanes,
/// which do not sweep there), the arrays of 64 and of 256 rows, the most
/// rows (256), and the fewest lanes (65, the last of one channel); rows
/// of `16k + 10` and `16k + 15` channels (`24x4106`, `40x2063`).
const SHAPES: [[usize; 2]; 11] = [
    [9, 7285],
    [16, 4098],
    [17, 3857],
    [20, 4099],
    [24, 4106],
    [40, 2063],
    [33, 2050],
    [64, 1025],
    [100, 1023],
    [256, 1021],
    [256, 257],
];

#[test]
fn odd_channels_in_four_channel_lanes_match_the_reference() {
    for forced in [Some(true), None] {
        let Some(ctx) = context_tuned(forced, forced) else {
            return;
        };
        let modes = [true, true, false, true];
        for (i, shape) in SHAPES.iter().enumerate() {
            assert_matches_reference(&ctx, shape, &modes, 300 + i as u64, 0.0, 1.0);
            assert_matches_reference(&ctx, shape, &modes, 320 + i as u64, 1e4, 0.1);
        }
    }
}

/// Data whose channels at both ends hold edge values: NaN in the first and
/// the last channel, a constant 1e21, values of both signs at 3e37 (their
/// squares overflow f32), an outlier far past its channel's scale, tiny
/// values; the rest normal around 1e3 (far from zero; eval's output is
/// exact to the f32 running mean's rounding, which at 1e4 would be 1e-3 of
/// these outputs).
fn edge_data(shape: [usize; 2], seed: u64) -> Vec<f32> {
    let [n, c] = shape;
    let mut x = Rng(seed).normals(n * c, 1e3, 0.5);
    for (i, v) in x.iter_mut().enumerate() {
        let (r, ch) = (i / c, i % c);
        *v = match (ch, c - 1 - ch) {
            (0, _) if r == 2 => f32::NAN,
            (_, 0) if r == n - 1 => f32::NAN,
            (_, 1) => 1e21,
            (_, 2) | (5, _) if r % 2 == 0 => 3e37,
            (_, 2) | (5, _) => -3e37,
            (6, _) if r == n / 2 => 3e30,
            (_, 3) | (7, _) => 1e-30 * r as f32,
            _ => *v,
        };
    }
    x
}

#[test]
fn odd_channel_lanes_keep_edge_values_to_their_channels() {
    let Some(ctx) = context_tuned(Some(true), Some(true)) else {
        return;
    };
    for (i, shape) in SHAPES.iter().enumerate() {
        let (shape, c) = (shape.to_vec(), shape[1]);
        let x = edge_data([shape[0], c], 40 + i as u64);
        let dy = Rng(50 + i as u64).normals(x.len(), 0.0, 1.0);
        for config in [
            BatchNormConfig::new(c),
            BatchNormConfig::new(c).affine(false).momentum(None),
        ] {
            let mut gpu = BatchNorm1d::new(&ctx, config.clone()).expect("module");
            let mut reference = cpu::BatchNorm1d::new(config).expect("module");
            for step in 0..3 {
                if step == 2 {
                    gpu.eval();
                    reference.eval();
                }
                let at = |what: &str| format!("{shape:?} step {step} {what}");
                let tx = Tensor::from_slice(&ctx, &x, &shape).expect("x");
                let y = gpu.forward(&tx).expect("forward").to_vec().expect("read");
                let want = reference.forward(&x, &shape).expect("cpu");
                check_per_channel(&at("y"), &y, &want, c, 2e-4);
                let g = gpu
                    .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
                    .expect("backward");
                let cg = reference.backward(&dy).expect("cpu backward");
                let gi = g.grad_input.to_vec().expect("read");
                check_per_channel(&at("dx"), &gi, &cg.grad_input, c, 1e-3);
                for (name, got, want) in [
                    ("grad_weight", g.grad_weight, cg.grad_weight),
                    ("grad_bias", g.grad_bias, cg.grad_bias),
                ] {
                    if let (Some(got), Some(want)) = (got, want) {
                        let got = got.to_vec().expect("read");
                        check_per_channel(&at(name), &got, &want, c, 1e-3);
                    }
                }
                for (name, got, want) in [
                    ("running_mean", gpu.running_mean(), reference.running_mean()),
                    ("running_var", gpu.running_var(), reference.running_var()),
                ] {
                    let got = got.expect("read").expect("tracked");
                    let want = want.expect("tracked");
                    check_per_channel(&at(name), &got, &want, c, 1e-5);
                }
            }
        }
    }
}

/// Training + residual + ReLU (in four-channel lanes from 17 rows, one
/// channel per thread below, as its backward) equals batch norm, add and
/// ReLU, and so do their gradients.
#[test]
fn odd_channel_lanes_fuse_the_epilogue_exactly() {
    let Some(ctx) = context_tuned(Some(true), Some(true)) else {
        return;
    };
    for (i, [n, c]) in SHAPES.iter().copied().enumerate() {
        common::fused_equals_parts(&ctx, [n, c, 1, 1], 60 + i as u64);
    }
}

/// A training forward with a ReLU alone (four-channel lanes from 9 rows,
/// as the plain forward), equal to batch norm then ReLU exactly, and its
/// backward to the masked gradient's.
#[test]
fn odd_channel_lanes_take_a_relu_alone() {
    let Some(ctx) = context_tuned(Some(true), Some(true)) else {
        return;
    };
    for (i, [n, c]) in SHAPES.iter().copied().enumerate() {
        let shape = [n, c];
        let mut rng = Rng(90 + i as u64);
        let (x, dy) = (rng.normals(n * c, 1.0, 2.0), rng.normals(n * c, 0.0, 1.0));
        let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &shape).expect("tensor");
        let read = |t: &Tensor| t.to_vec().expect("read");
        let mut fused = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
        let mut plain = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
        let y = read(
            &fused
                .forward_fused(&t(&x), Epilogue::relu())
                .expect("fused"),
        );
        let bn = read(&plain.forward(&t(&x)).expect("plain"));
        let want: Vec<f32> = bn.iter().map(|v| v.max(0.0)).collect();
        check_per_channel(&format!("{shape:?} relu"), &y, &want, c, 0.0);
        let masked: Vec<f32> = dy
            .iter()
            .zip(&bn)
            .map(|(&g, &v)| if v > 0.0 { g } else { 0.0 })
            .collect();
        let g = read(&fused.backward(&t(&dy)).expect("backward").grad_input);
        let want = read(&plain.backward(&t(&masked)).expect("backward").grad_input);
        check_per_channel(&format!("{shape:?} relu dx"), &g, &want, c, 1e-5);
    }
}

/// Recorded work (`encode_forward`, `encode_backward` into the
/// application's encoder) in four-channel lanes: a training forward in
/// four, unswept (9 and 16 rows) or swept (20 and 40), a rejected call,
/// then the backward, one channel per thread (9 and 16 rows) or four, twice
/// in a row (the running statistics move between), against the reference.
#[test]
fn odd_channel_lanes_in_recorded_work_match_the_reference() {
    let Some(ctx) = context_tuned(Some(true), Some(true)) else {
        return;
    };
    for (i, shape) in [[9usize, 7285], [16, 4098], [20, 4099], [40, 2050]]
        .iter()
        .enumerate()
    {
        let (shape, c) = (shape.to_vec(), shape[1]);
        let numel: usize = shape.iter().product();
        let mut rng = Rng(70 + i as u64);
        let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("module");
        let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("module");
        let w = rng.normals(c, 1.0, 0.3);
        gpu.set_weight(&w).expect("weight");
        reference.set_weight(&w).expect("weight");
        for step in 0..2 {
            let x = rng.normals(numel, 50.0, 4.0);
            let dy = rng.normals(x.len(), 0.0, 1.0);
            let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &shape).expect("tensor");
            let mut e = common::encoder(&ctx);
            let y = gpu
                .encode_forward(&mut e, &t(&x))
                .expect("recorded forward");
            let bad = Tensor::from_slice(&ctx, &vec![1.0; 2 * (c + 1)], &[2, c + 1]).expect("bad");
            assert!(gpu.forward(&bad).is_err(), "channel count mismatch");
            let g = gpu
                .encode_backward(&mut e, &t(&dy))
                .expect("recorded backward");
            ctx.queue().submit([e.finish()]);
            let at = |what: &str| format!("{shape:?} step {step} {what}");
            let want = reference.forward(&x, &shape).expect("cpu forward");
            check_per_channel(&at("y"), &y.to_vec().expect("read"), &want, c, 2e-4);
            let cg = reference.backward(&dy).expect("cpu backward");
            let gi = g.grad_input.to_vec().expect("read");
            check_per_channel(&at("dx"), &gi, &cg.grad_input, c, 1e-3);
            let gw = g.grad_weight.expect("affine").to_vec().expect("read");
            check_per_channel(
                &at("grad_weight"),
                &gw,
                &cg.grad_weight.expect("affine"),
                c,
                1e-3,
            );
            let rm = gpu.running_mean().expect("read").expect("tracked");
            check_per_channel(
                &at("running_mean"),
                &rm,
                &reference.running_mean().expect("tracked"),
                c,
                1e-5,
            );
        }
    }
}
