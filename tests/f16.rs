//! f16 tensors: f16 storage, f32 accumulation. Checked against the f32 path
//! on the same (f16-representable) data with f16 tolerances; without
//! SHADER_F16 (e.g. wgpu's GL backend) the library returns a clear error,
//! and the tests that need f16 kernels are recorded as skipped.
#![cfg(feature = "f16")]

mod common;

use half::f16;
use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, DType, Error, Tensor};

fn f16_matches_f32(shape: &[usize], offset: f64, seed: u64) {
    let Some(ctx) = common::context() else { return };
    if !common::f16_or_skip(&ctx) {
        return;
    }
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let mut rng = common::Rng(seed);
    let halves: Vec<f16> = rng
        .normals(numel, offset, 1.5)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let x32: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let dy16: Vec<f16> = rng
        .normals(numel, 0.0, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let dy32: Vec<f32> = dy16.iter().map(|h| h.to_f32()).collect();
    let w = rng.normals(c, 1.0, 0.2);
    let mut a = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    let mut b = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(c)).expect("bn");
    a.set_weight(&w).expect("w");
    b.set_weight(&w).expect("w");
    for train in [true, false] {
        if !train {
            a.eval();
            b.eval();
        }
        let t16 = Tensor::from_f16(&ctx, &halves, shape).expect("x16");
        assert_eq!(t16.dtype(), DType::F16);
        let y16 = a.forward(&t16).expect("f16 forward");
        assert_eq!(y16.dtype(), DType::F16);
        let y32 = b
            .forward(&Tensor::from_slice(&ctx, &x32, shape).expect("x32"))
            .expect("f32");
        let want: Vec<f64> = y32
            .to_vec()
            .expect("read")
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        // f16 output rounding: relative 2^-11 of values up to ~4.
        common::check_close("f16 output", &y16.to_vec().expect("read"), &want, 2e-3)
            .expect("output");
        let g16 = a
            .backward(&Tensor::from_f16(&ctx, &dy16, shape).expect("dy"))
            .expect("f16 bw");
        let g32 = b
            .backward(&Tensor::from_slice(&ctx, &dy32, shape).expect("dy"))
            .expect("f32 bw");
        let f = |t: &Tensor| {
            t.to_vec()
                .expect("read")
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()
        };
        common::check_close(
            "f16 grad_input",
            &g16.grad_input.to_vec().expect("read"),
            &f(&g32.grad_input),
            3e-3,
        )
        .expect("grad_input");
        let gw16 = g16.grad_weight.expect("gw");
        assert_eq!(gw16.dtype(), DType::F32, "parameter gradients stay f32");
        common::check_close(
            "f16 grad_weight",
            &gw16.to_vec().expect("read"),
            &f(&g32.grad_weight.expect("gw")),
            1e-4,
        )
        .expect("grad_weight");
        let rm: Vec<f64> = b
            .running_mean()
            .expect("rm")
            .expect("some")
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        common::check_close(
            "f16 running_mean",
            &a.running_mean().expect("rm").expect("some"),
            &rm,
            1e-5,
        )
        .expect("running_mean");
    }
}

#[test]
fn f16_planes_layout_matches_f32() {
    f16_matches_f32(&[16, 6, 12], 0.5, 1);
    // Many channels, and short masked runs: spread on CPU adapters.
    f16_matches_f32(&[2, 130, 16], 0.5, 5);
    f16_matches_f32(&[4, 5, 21], -0.5, 6);
}

#[test]
fn f16_rows_layout_matches_f32() {
    f16_matches_f32(&[64, 8], -1.0, 2);
    // Odd C in 9 to 256 rows of many channels: four channels per thread
    // (below 17 rows the training forward only), each f16 value written on
    // its own and read from the two vec4s a lane's values span, on CPU
    // adapters; 17x3857 and 9x7285 have odd counts (a padded last vec4).
    f16_matches_f32(&[20, 4099], 0.5, 7);
    f16_matches_f32(&[40, 2050], -0.5, 8);
    f16_matches_f32(&[17, 3857], 0.25, 9);
    f16_matches_f32(&[9, 7285], -0.25, 10);
    // C % 4 == 0 in 9 to 64 rows past 2^16 values: four lanes per thread
    // where the column kernels sweep (the backward; the training forward
    // from 17 rows), the last thread with one live lane.
    f16_matches_f32(&[17, 4100], 0.5, 11);
    f16_matches_f32(&[16, 4100], -0.5, 12);
}

#[test]
fn f16_general_layout_matches_f32() {
    f16_matches_f32(&[9, 5, 7], 2.0, 3);
    f16_matches_f32(&[33, 3], 0.0, 4);
    // Split reductions over virtual channels, with a cut tail.
    f16_matches_f32(&[30_001, 3], 1.0, 5);
}

#[test]
fn f16_round_trips_and_mixed_dtypes_are_rejected() {
    let Some(ctx) = common::context() else { return };
    let vals = [f16::from_f32(1.5), f16::from_f32(-2.25), f16::from_f32(3.0)];
    let t = Tensor::from_f16(&ctx, &vals, &[3]).expect("upload");
    assert_eq!(t.to_vec_f16().expect("read"), vals.to_vec());
    assert_eq!(t.to_vec().expect("read"), vec![1.5, -2.25, 3.0]);
    assert!(Tensor::zeros(&ctx, &[3]).expect("z").to_vec_f16().is_err());
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(3)).expect("bn");
    let x16 = Tensor::from_f16(&ctx, &[f16::from_f32(1.0); 12], &[4, 3]).expect("x");
    if !common::f16_or_skip(&ctx) {
        // Without SHADER_F16 the library says so, and changes nothing.
        assert!(matches!(bn.forward(&x16), Err(Error::Unsupported(_))));
        assert_eq!(bn.num_batches_tracked(), 0);
        return;
    }
    let y32 = Tensor::zeros(&ctx, &[4, 3]).expect("y");
    assert!(
        bn.forward_into(&x16, &y32).is_err(),
        "f16 input into an f32 output"
    );
    bn.forward(&x16).expect("forward");
    let dy32 = Tensor::zeros(&ctx, &[4, 3]).expect("dy");
    assert!(
        bn.backward(&dy32).is_err(),
        "f32 grad_output for an f16 forward"
    );
}

/// One channel of f16 values in runs shorter or longer than a careful
/// window (odd counts stay rows), from 2^25 values to a little more than
/// one 128 MiB chunk of 2^26: forward, backward and eval plan and run (the
/// careful walk's windows count the channel's values inside the chunk,
/// across rows; counted by whole rows or by pieces of each row they passed
/// the merge's bound, and every op was `TooLarge`).
#[test]
fn one_long_f16_channel_of_short_runs_plans() {
    let Some(ctx) = common::context() else { return };
    if !common::f16_or_skip(&ctx) {
        return;
    }
    for shape in [[32_769usize, 1, 1025], [32_755, 1, 2049]] {
        let numel: usize = shape.iter().product();
        let ramp: Vec<f16> = (0..numel).map(|i| f16::from_f32((i % 7) as f32)).collect();
        let x = Tensor::from_f16(&ctx, &ramp, &shape).expect("x");
        let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(1)).expect("bn");
        bn.forward(&x).expect("train");
        let g = bn.backward(&x).expect("backward");
        assert!(g.grad_bias.expect("affine").to_vec().expect("read")[0].is_finite());
        bn.eval();
        bn.forward(&x).expect("eval");
        // A NaN takes the channel to the careful walk, 32768 windows of
        // 2048 values: grad_bias is still the count of its dy of 1.
        let mut poisoned = ramp;
        poisoned[0] = f16::NAN;
        bn.train();
        bn.forward(&Tensor::from_f16(&ctx, &poisoned, &shape).expect("x"))
            .expect("train");
        let ones = Tensor::from_f16(&ctx, &vec![f16::ONE; numel], &shape).expect("dy");
        let gb = bn
            .backward(&ones)
            .expect("backward")
            .grad_bias
            .expect("affine");
        assert_eq!(gb.to_vec().expect("read"), vec![numel as f32], "{shape:?}");
    }
}
