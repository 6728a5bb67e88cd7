//! BatchNorm2d and BatchNorm3d beyond the PyTorch replays: channels-last
//! against channels-first, the fused epilogue against its unfused parts,
//! folding into a convolution, checkpoints, shards and f16, all through the
//! one implementation the three ranks share.

mod common;

use common::to_channels_last;

use wgpu_batchnorm::{
    cpu, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormConfig, Epilogue, Error, GpuContext,
    MemoryFormat, ShardGradSums, ShardMoments, Tensor,
};

#[path = "nd/fold.rs"]
mod fold;

fn read(t: &Tensor) -> Vec<f32> {
    t.to_vec().expect("read")
}

/// Forward and backward of the same data in both memory formats agree to
/// f32 rounding, for every rank, with and without the fused epilogue.
#[test]
fn channels_last_equals_channels_first() {
    let Some(ctx) = common::context() else { return };
    let shapes: [&[usize]; 6] = [
        &[4, 3, 7],
        &[5, 8, 3, 3],
        &[3, 5, 4, 6],
        &[2, 3, 2, 3, 4],
        &[6, 4, 1, 1],
        &[2, 12, 5, 5],
    ];
    for (k, shape) in shapes.into_iter().enumerate() {
        let numel: usize = shape.iter().product();
        let mut rng = common::Rng(70 + k as u64);
        let (x, r, dy) = (
            rng.normals(numel, 1.0, 2.0),
            rng.normals(numel, 0.0, 1.0),
            rng.normals(numel, 0.0, 1.0),
        );
        for relu in [false, true] {
            let mut out = Vec::new();
            for format in [MemoryFormat::ChannelsFirst, MemoryFormat::ChannelsLast] {
                let store = |v: &[f32]| match format {
                    MemoryFormat::ChannelsLast => to_channels_last(v, shape),
                    MemoryFormat::ChannelsFirst => v.to_vec(),
                };
                let t = |v: &[f32]| {
                    Tensor::from_slice_with_format(&ctx, &store(v), shape, format).expect("t")
                };
                let (tx, tr, tdy) = (t(&x), t(&r), t(&dy));
                let epilogue = if relu {
                    Epilogue::relu().with_residual(&tr)
                } else {
                    Epilogue::none()
                };
                let c = shape[1];
                let (y, g) = match shape.len() {
                    3 => {
                        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
                        (bn.forward_fused(&tx, epilogue), bn.backward(&tdy))
                    }
                    4 => {
                        let mut bn = BatchNorm2d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
                        (bn.forward_fused(&tx, epilogue), bn.backward(&tdy))
                    }
                    _ => {
                        let mut bn = BatchNorm3d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
                        (bn.forward_fused(&tx, epilogue), bn.backward(&tdy))
                    }
                };
                let (y, g) = (y.expect("forward"), g.expect("backward"));
                assert_eq!(y.memory_format(), format);
                assert_eq!(g.grad_input.memory_format(), format);
                out.push((
                    read(&y),
                    read(&g.grad_input),
                    read(g.grad_weight.as_ref().expect("affine")),
                    g.grad_residual.as_ref().map(read),
                ));
            }
            let (cf, cl) = (&out[0], &out[1]);
            let cf_as_cl = |v: &[f32]| common::f64s(&to_channels_last(v, shape));
            let at = |w: &str| format!("{shape:?} relu={relu} {w}");
            common::check_close(&at("output"), &cl.0, &cf_as_cl(&cf.0), 1e-5).expect("output");
            common::check_close(&at("grad_input"), &cl.1, &cf_as_cl(&cf.1), 1e-5)
                .expect("grad_input");
            common::check_close(&at("grad_weight"), &cl.2, &common::f64s(&cf.2), 1e-5)
                .expect("grad_weight");
            if let (Some(a), Some(b)) = (&cl.3, &cf.3) {
                common::check_close(&at("grad_residual"), a, &cf_as_cl(b), 1e-6)
                    .expect("grad_residual");
            }
        }
    }
}

/// The fused `relu(bn(x) + r)` equals batch norm, then the add, then the
/// ReLU, and its gradients equal the chain rule through the three; also
/// over long runs of odd L in few rows (run slabs, `H * W = 143`) and
/// over few rows of odd C (one channel per thread).
#[test]
fn fused_epilogue_equals_its_parts() {
    let Some(ctx) = common::context() else { return };
    common::fused_equals_parts(&ctx, [6, 4, 3, 5], 81);
    common::fused_equals_parts(&ctx, [2, 4, 13, 11], 82);
    // (N, C) of odd C in few rows: one channel per thread, single values.
    common::fused_equals_parts(&ctx, [6, 5, 1, 1], 83);
    // (N, C) of 9 and 12 rows of many channels: on CPU adapters the column
    // kernel sweeps where it adds a residual (the plain forward does not).
    common::fused_equals_parts(&ctx, [9, 8192, 1, 1], 84);
    common::fused_equals_parts(&ctx, [12, 8192, 1, 1], 85);
    // Past 2^16 values the column kernels' lanes sweep four to a thread
    // (in arrays of 16 rows up to 16 rows, then of 64): 1025 lanes, so
    // the last thread has one live lane.
    common::fused_equals_parts(&ctx, [16, 4100, 1, 1], 86);
    common::fused_equals_parts(&ctx, [17, 4100, 1, 1], 87);
}

#[test]
fn fused_epilogue_errors_change_nothing() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm2d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    let x = Tensor::from_slice(&ctx, &[1.0; 24], &[2, 3, 2, 2]).expect("x");
    let wrong = Tensor::zeros(&ctx, &[2, 3, 4]).expect("r");
    let err = bn
        .forward_fused(&x, Epilogue::relu().with_residual(&wrong))
        .expect_err("shape");
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let cl = Tensor::zeros(&ctx, &[2, 3, 2, 2])
        .expect("r")
        .with_memory_format(MemoryFormat::ChannelsLast);
    assert!(matches!(
        bn.forward_fused(&x, Epilogue::none().with_residual(&cl)),
        Err(Error::FormatMismatch { .. })
    ));
    let out = Tensor::zeros(&ctx, &[2, 3, 2, 2]).expect("out");
    assert!(matches!(
        bn.forward_fused_into(&x, Epilogue::relu().with_residual(&out), &out),
        Err(Error::Aliasing { .. })
    ));
    assert_eq!(bn.num_batches_tracked(), 0);
    // A fused forward with a residual needs a grad_residual tensor; the
    // saved output must not change before backward.
    let r = Tensor::from_slice(&ctx, &[0.5; 24], &[2, 3, 2, 2]).expect("r");
    bn.forward_fused_into(&x, Epilogue::relu().with_residual(&r), &out)
        .expect("forward");
    let dy = Tensor::from_slice(&ctx, &[1.0; 24], &[2, 3, 2, 2]).expect("dy");
    let mut g = bn.backward(&dy).expect("backward");
    // grad_residual holds dy through the epilogue until grad_input reads
    // it: grad_input (or a parameter gradient) over it is an error.
    let mut same = bn.backward(&dy).expect("backward");
    same.grad_input = same.grad_residual.clone().expect("grad_residual");
    assert!(matches!(
        bn.backward_into(&dy, &mut same),
        Err(Error::Aliasing {
            what: "grad_residual"
        })
    ));
    g.grad_residual = None;
    assert!(matches!(
        bn.backward_into(&dy, &mut g),
        Err(Error::NotAvailable { .. })
    ));
    out.write_from_slice(&[0.0; 24])
        .expect("overwrite the output");
    assert!(matches!(
        bn.backward(&dy),
        Err(Error::ModifiedSinceForward { what: "output" })
    ));
    assert_eq!(bn.num_batches_tracked(), 1);
}

/// A parameter gradient inside grad_residual (views of one buffer from
/// `Tensor::from_buffer`) is an error, not gradients read back from over
/// each other; so is grad_input there.
#[test]
fn grad_residual_shares_no_bytes_with_other_gradients() {
    let Some(ctx) = common::context() else { return };
    let align = u64::from(ctx.device().limits().min_storage_buffer_offset_alignment).max(16);
    let c = 4;
    let l = (align as usize / 4).next_multiple_of(4);
    let shape = [4, c, l];
    let numel = 4 * c * l;
    let mut rng = common::Rng(12);
    let t = |v: Vec<f32>| Tensor::from_slice(&ctx, &v, &shape).expect("t");
    let (x, r, dy) = (
        t(rng.normals(numel, 0.0, 1.0)),
        t(rng.normals(numel, 0.0, 1.0)),
        t(rng.normals(numel, 0.0, 1.0)),
    );
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
    bn.forward_fused(&x, Epilogue::relu().with_residual(&r))
        .expect("forward");
    let buffer = ctx
        .device()
        .create_buffer(&wgpu_batchnorm::wgpu::BufferDescriptor {
            label: Some("test/shared-gradients"),
            size: (numel * 4) as u64,
            usage: wgpu_batchnorm::wgpu::BufferUsages::STORAGE
                | wgpu_batchnorm::wgpu::BufferUsages::COPY_SRC
                | wgpu_batchnorm::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
    let view = |offset: u64, shape: &[usize]| {
        Tensor::from_buffer(&ctx, buffer.clone(), offset, shape).expect("view")
    };
    for (weight_at, bias_at) in [(Some(align), None), (None, Some(align))] {
        let mut g = bn.backward(&dy).expect("backward");
        g.grad_residual = Some(view(0, &shape));
        if let Some(o) = weight_at {
            g.grad_weight = Some(view(o, &[c]));
        }
        if let Some(o) = bias_at {
            g.grad_bias = Some(view(o, &[c]));
        }
        assert!(matches!(
            bn.backward_into(&dy, &mut g),
            Err(Error::Aliasing {
                what: "grad_residual"
            })
        ));
    }
    assert_eq!(bn.num_batches_tracked(), 1);
}

/// Shards of a 2-D batch (channels-last) match one device on the whole.
#[test]
fn shard_of_batchnorm2d_matches_one_device() {
    let Some(ctx) = common::context() else { return };
    let other = GpuContext::with_options(common::options()).expect("second");
    let (n, c, h, w) = (6, 3, 2, 4);
    let shape = [n, c, h, w];
    let mut rng = common::Rng(17);
    let x = rng.normals(n * c * h * w, 2.0, 1.5);
    let cl = to_channels_last(&x, &shape);
    let rows = |a: usize, b: usize| cl[a * c * h * w..b * c * h * w].to_vec();
    let t = |cx: &GpuContext, v: &[f32], n: usize| {
        Tensor::from_slice_with_format(cx, v, &[n, c, h, w], MemoryFormat::ChannelsLast).expect("t")
    };
    let mut single = BatchNorm2d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
    let want = read(&single.forward(&t(&ctx, &cl, n)).expect("single"));
    let (xa, xb) = (t(&ctx, &rows(0, 2), 2), t(&other, &rows(2, n), n - 2));
    let mut a = BatchNorm2d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
    let mut b = BatchNorm2d::new(&other, BatchNormConfig::new(c)).expect("bn");
    let global = ShardMoments::merge(&[
        a.shard_moments(&xa).expect("a"),
        b.shard_moments(&xb).expect("b"),
    ])
    .expect("merge");
    let mut got = read(&a.forward_with_moments(&xa, &global).expect("a"));
    got.extend(read(&b.forward_with_moments(&xb, &global).expect("b")));
    common::check_close("sharded 2d", &got, &common::f64s(&want), 1e-5).expect("output");
    let dy = rng.normals(n * c * h * w, 0.0, 1.0);
    let dya = t(&ctx, &dy[..2 * c * h * w], 2);
    let dyb = t(&other, &dy[2 * c * h * w..], n - 2);
    let sums = ShardGradSums::merge(&[
        a.shard_grad_sums(&dya).expect("a"),
        b.shard_grad_sums(&dyb).expect("b"),
    ])
    .expect("merge");
    let mut dx = read(&a.backward_with_sums(&dya, &sums).expect("a").grad_input);
    dx.extend(read(
        &b.backward_with_sums(&dyb, &sums).expect("b").grad_input,
    ));
    let want = single.backward(&t(&ctx, &dy, n)).expect("single");
    common::check_close(
        "sharded 2d dx",
        &dx,
        &common::f64s(&read(&want.grad_input)),
        1e-4,
    )
    .expect("grad_input");
}

/// The same rules for every rank: a 4-D input to BatchNorm3d, a 5-D one to
/// BatchNorm2d, one value per channel in training.
#[test]
fn nd_errors_use_pytorch_wording() {
    let Some(ctx) = common::context() else { return };
    let mut bn2 = BatchNorm2d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    let mut bn3 = BatchNorm3d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    let x5 = Tensor::zeros(&ctx, &[2, 3, 1, 2, 2]).expect("x");
    let x4 = Tensor::zeros(&ctx, &[2, 3, 2, 2]).expect("x");
    assert_eq!(
        bn2.forward(&x5).expect_err("5d").to_string(),
        "expected 4D input (got 5D input)"
    );
    assert_eq!(
        bn3.forward(&x4).expect_err("4d").to_string(),
        "expected 5D input (got 4D input)"
    );
    let one = Tensor::zeros(&ctx, &[1, 3, 1, 1]).expect("x");
    assert!(matches!(bn2.forward(&one), Err(Error::TooFewValues { .. })));
    bn2.eval();
    bn2.forward(&one).expect("eval takes one value");
    assert_eq!(bn2.num_batches_tracked(), 0);
    assert_eq!(bn3.num_batches_tracked(), 0);
}

/// The CPU reference's fused path (ReLU) gives the same values in both
/// formats, for a 3-D input.
#[test]
fn cpu_reference_runs_every_rank_and_format() {
    let mut bn = cpu::BatchNorm3d::new(BatchNormConfig::new(2)).expect("bn");
    let shape = [2, 2, 2, 1, 3];
    let x: Vec<f32> = (0..24).map(|v| v as f32 * 0.5).collect();
    let cf = bn
        .forward_fused(&x, &shape, MemoryFormat::ChannelsFirst, None, true)
        .expect("cf");
    let mut bn_cl = cpu::BatchNorm3d::new(BatchNormConfig::new(2)).expect("bn");
    let cl = bn_cl
        .forward_fused(
            &to_channels_last(&x, &shape),
            &shape,
            MemoryFormat::ChannelsLast,
            None,
            true,
        )
        .expect("cl");
    assert_eq!(cl, to_channels_last(&cf, &shape));
    assert!(cf.iter().all(|&v| v >= 0.0));
}

#[cfg(feature = "f16")]
#[test]
fn f16_batchnorm2d_channels_last_matches_f32() {
    let Some(ctx) = common::context() else { return };
    if !common::f16_or_skip(&ctx) {
        return;
    }
    let shape = [4, 8, 3, 3];
    let numel: usize = shape.iter().product();
    let halves: Vec<half::f16> = common::Rng(9)
        .normals(numel, 0.5, 1.5)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let x32: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let cl = MemoryFormat::ChannelsLast;
    let x16 = Tensor::from_f16_with_format(&ctx, &halves, &shape, cl).expect("x16");
    let x = Tensor::from_slice_with_format(&ctx, &x32, &shape, cl).expect("x");
    let mut a = BatchNorm2d::new(&ctx, BatchNormConfig::new(8)).expect("bn");
    let mut b = BatchNorm2d::new(&ctx, BatchNormConfig::new(8)).expect("bn");
    let y16 = read(&a.forward_fused(&x16, Epilogue::relu()).expect("f16"));
    let y32 = read(&b.forward_fused(&x, Epilogue::relu()).expect("f32"));
    common::check_close("f16 vs f32", &y16, &common::f64s(&y32), 5e-3).expect("f16");
}
