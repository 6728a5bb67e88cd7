//! BatchNorm2d and BatchNorm3d at the edges, in both memory formats: empty
//! batches, NaN in one channel, and f16 backward.

mod common;

use wgpu_batchnorm::{
    cpu, BatchNorm, BatchNormConfig, MemoryFormat, Rank1d, Rank2d, Rank3d, SpatialRank, Tensor,
};

const FORMATS: [MemoryFormat; 2] = [MemoryFormat::ChannelsFirst, MemoryFormat::ChannelsLast];

fn read(t: &Tensor) -> Vec<f32> {
    t.to_vec().expect("read")
}

/// An empty batch, as PyTorch: the output is empty, the channel check is
/// skipped, training still counts the batch, the running statistics stay,
/// and the parameter gradients are zeros of `num_features`.
fn empty_batch<R: SpatialRank>(shapes: &[Vec<usize>]) {
    let Some(ctx) = common::context() else { return };
    for format in FORMATS {
        for shape in shapes {
            let at = format!("{shape:?} {format:?}");
            let mut bn = BatchNorm::<R>::new(&ctx, BatchNormConfig::new(3)).expect("bn");
            let mut reference = cpu::BatchNorm::<R>::new(BatchNormConfig::new(3)).expect("cpu");
            let x = Tensor::zeros_with(&ctx, shape, wgpu_batchnorm::DType::F32, format).expect("x");
            let y = bn.forward(&x).expect(&at);
            assert_eq!(y.shape(), &shape[..], "{at}");
            assert!(read(&y).is_empty(), "{at}");
            reference
                .forward_with_format(&[], shape, format)
                .expect(&at);
            assert_eq!(bn.num_batches_tracked(), 1, "{at}");
            assert_eq!(reference.num_batches_tracked(), 1, "{at}");
            assert_eq!(bn.running_mean().expect("rm"), Some(vec![0.0; 3]), "{at}");
            assert_eq!(bn.running_var().expect("rv"), Some(vec![1.0; 3]), "{at}");
            let g = bn.backward(&x).expect("backward");
            assert!(read(&g.grad_input).is_empty(), "{at}");
            for t in [g.grad_weight, g.grad_bias] {
                assert_eq!(read(&t.expect("affine")), vec![0.0; 3], "{at}");
            }
            let cg = reference.backward(&[]).expect("cpu backward");
            assert_eq!(cg.grad_weight, Some(vec![0.0; 3]), "{at}");
        }
    }
}

#[test]
fn empty_batches_of_batchnorm2d_behave_as_pytorch() {
    // The second shape has the wrong channel count: skipped when empty.
    // The last two have dimensions whose products pass usize (N * H * W,
    // H * W), which only an empty tensor may have.
    empty_batch::<Rank2d>(&[
        vec![0, 3, 2, 2],
        vec![0, 5, 2, 2],
        vec![2, 3, 0, 4],
        vec![0, 3, 1 << 33, 1 << 33],
        vec![1 << 33, 0, 1 << 33, 2],
    ]);
}

/// The same for `BatchNorm1d`, where a wrapped `N * L` of an empty input
/// (`[3, 0, 0xAAAA_AAAA_AAAA_AAAB]`: 1 modulo 2^64) must not read as one
/// value per channel.
#[test]
fn empty_batches_of_batchnorm1d_behave_as_pytorch() {
    empty_batch::<Rank1d>(&[
        vec![0, 3],
        vec![0, 3, 5],
        vec![1 << 33, 0, 1 << 33],
        vec![3, 0, 0xAAAA_AAAA_AAAA_AAAB],
    ]);
}

#[test]
fn empty_batches_of_batchnorm3d_behave_as_pytorch() {
    empty_batch::<Rank3d>(&[
        vec![0, 3, 1, 2, 2],
        vec![0, 7, 2, 1, 1],
        vec![1, 3, 2, 0, 2],
        vec![0, 3, 1 << 22, 1 << 22, 1 << 22],
    ]);
}

/// A NaN poisons its own channel only (output and running statistics),
/// in both formats and both ranks; the other channels match the reference.
fn nan_channel<R: SpatialRank>(shape: &[usize]) {
    let Some(ctx) = common::context() else { return };
    let c = shape[1];
    let numel: usize = shape.iter().product();
    let per = numel / (shape[0] * c);
    for format in FORMATS {
        let at = format!("{shape:?} {format:?}");
        let mut x = common::Rng(3).normals(numel, 1.0, 2.0);
        // Channel 1 of the last sample, in the storage order of `format`.
        let i = match format {
            MemoryFormat::ChannelsFirst => ((shape[0] - 1) * c + 1) * per + per / 2,
            MemoryFormat::ChannelsLast => ((shape[0] - 1) * per + per / 2) * c + 1,
        };
        x[i] = f32::NAN;
        let channel = |k: usize| match format {
            MemoryFormat::ChannelsFirst => (k / per) % c,
            MemoryFormat::ChannelsLast => k % c,
        };
        let mut bn = BatchNorm::<R>::new(&ctx, BatchNormConfig::new(c)).expect("bn");
        let mut reference = cpu::BatchNorm::<R>::new(BatchNormConfig::new(c)).expect("cpu");
        let t = Tensor::from_slice_with_format(&ctx, &x, shape, format).expect("x");
        let y = read(&bn.forward(&t).expect("forward"));
        let want = reference
            .forward_with_format(&x, shape, format)
            .expect("cpu");
        for (k, (&got, &w)) in y.iter().zip(&want).enumerate() {
            if channel(k) == 1 {
                assert!(got.is_nan(), "{at}: value {k} of the NaN channel is {got}");
            } else {
                assert!(
                    (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{at}: value {k}: {got} vs {w}"
                );
            }
        }
        let rm = bn.running_mean().expect("rm").expect("tracked");
        let rv = bn.running_var().expect("rv").expect("tracked");
        for ch in 0..c {
            assert_eq!(rm[ch].is_nan(), ch == 1, "{at}: running_mean {rm:?}");
            assert_eq!(rv[ch].is_nan(), ch == 1, "{at}: running_var {rv:?}");
        }
    }
}

#[test]
fn nan_poisons_only_its_channel_in_2d_and_3d() {
    nan_channel::<Rank2d>(&[2, 3, 2, 3]);
    nan_channel::<Rank2d>(&[4, 8, 5, 5]);
    nan_channel::<Rank3d>(&[2, 3, 2, 1, 3]);
    nan_channel::<Rank3d>(&[3, 4, 2, 3, 3]);
}

/// f16 storage, f32 accumulation, through backward: a BatchNorm3d on f16
/// tensors matches one on the same (f16-representable) values in f32, in
/// both formats.
#[cfg(feature = "f16")]
#[test]
fn f16_batchnorm3d_forward_and_backward_match_f32() {
    let Some(ctx) = common::context() else { return };
    if !common::f16_or_skip(&ctx) {
        return;
    }
    let shape = [3, 4, 2, 3, 3];
    let numel: usize = shape.iter().product();
    let mut rng = common::Rng(31);
    let halves =
        |v: Vec<f32>| -> Vec<half::f16> { v.into_iter().map(half::f16::from_f32).collect() };
    let (x16, dy16) = (
        halves(rng.normals(numel, 0.5, 1.5)),
        halves(rng.normals(numel, 0.0, 1.0)),
    );
    let wide = |h: &[half::f16]| -> Vec<f32> { h.iter().map(|v| v.to_f32()).collect() };
    for format in FORMATS {
        let at = |w: &str| format!("{format:?} {w}");
        let mut a = BatchNorm::<Rank3d>::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        let mut b = BatchNorm::<Rank3d>::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        for _ in 0..2 {
            let f16 = |h: &[half::f16]| {
                Tensor::from_f16_with_format(&ctx, h, &shape, format).expect("f16")
            };
            let f32t =
                |v: &[f32]| Tensor::from_slice_with_format(&ctx, v, &shape, format).expect("f32");
            let y16 = read(&a.forward(&f16(&x16)).expect("f16 forward"));
            let y32 = read(&b.forward(&f32t(&wide(&x16))).expect("f32 forward"));
            common::check_close(&at("output"), &y16, &common::f64s(&y32), 5e-3).expect("output");
            let g16 = a.backward(&f16(&dy16)).expect("f16 backward");
            let g32 = b.backward(&f32t(&wide(&dy16))).expect("f32 backward");
            let (d16, d32) = (read(&g16.grad_input), read(&g32.grad_input));
            common::check_close(&at("grad_input"), &d16, &common::f64s(&d32), 5e-3)
                .expect("grad_input");
            for (name, p16, p32) in [
                ("grad_weight", g16.grad_weight, g32.grad_weight),
                ("grad_bias", g16.grad_bias, g32.grad_bias),
            ] {
                let (p16, p32) = (read(&p16.expect(name)), read(&p32.expect(name)));
                // Parameter gradients are f32 sums of the same products.
                common::check_close(&at(name), &p16, &common::f64s(&p32), 1e-4).expect(name);
            }
        }
        let (rm16, rm32) = (a.running_mean().expect("rm"), b.running_mean().expect("rm"));
        common::check_close(
            &at("running_mean"),
            &rm16.expect("t"),
            &common::f64s(&rm32.expect("t")),
            1e-5,
        )
        .expect("running_mean");
    }
}
