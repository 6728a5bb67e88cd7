//! Gradient sums past f32's range: dy near its limit (of both signs, so
//! that f32 sums overflow where the reference's f64 sums cancel), and, in
//! eval, x_hat itself past f32's range (x far from a running mean, a tiny
//! running variance). Every strategy redoes such sums carefully
//! (`shaders/grads_careful.wgsl`) and must match the reference: no NaN
//! where it is finite, no infinity of the wrong sign, and grad_input from
//! means that stay finite where the sums do not. Both ways the column
//! kernels take: redoing them in the kernel (inputs of at most 2^16
//! values) and raising the rescue flag for `backward_columns_rescue` (or,
//! sums alone, `grads_rescue`). Also across chunks (the rescue carries its
//! sums from chunk to chunk) and with NaN or infinite inputs (which take
//! the slow path too and keep their IEEE results).

mod common;
#[path = "huge_gradients/inputs.rs"]
mod inputs;

use common::{check_channels, check_close, context_tuned, Rng};
use inputs::{check_sums, inputs, term_scales, Inputs, Kind};
use wgpu_batchnorm::{
    cpu, wgpu, BatchNorm1d, BatchNormConfig, Epilogue, GpuContext, MemoryFormat, Tensor,
};

/// Runs one training or eval step and compares the gradients channel by
/// channel (grad_input too, except for `CancellingDy`, whose grad_input
/// lies within a factor of two of f32's limit: see README's limits).
fn case(ctx: &GpuContext, shape: &[usize], kind: Kind, train: bool) {
    let inp = inputs(shape, kind);
    let (dy_scale, dyx_scale) = term_scales(&inp, shape, train);
    let Inputs {
        x,
        dy,
        mean,
        var,
        cfg,
    } = inp;
    let (c, l) = (shape[1], shape[2..].iter().product::<usize>());
    let (mut gpu, mut reference) = pair(ctx, cfg, (&mean, &var), train);
    gpu.forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
        .expect("forward");
    reference.forward(&x, shape).expect("cpu forward");
    let g = gpu
        .backward(&Tensor::from_slice(ctx, &dy, shape).expect("dy"))
        .expect("backward");
    let want = reference.backward(&dy).expect("cpu backward");
    let at = format!("{kind:?} train {train} {shape:?}");
    let gw = g.grad_weight.expect("affine").to_vec().expect("read");
    let gb = g.grad_bias.expect("affine").to_vec().expect("read");
    let (gw_want, gb_want) = (
        want.grad_weight.expect("affine"),
        want.grad_bias.expect("affine"),
    );
    check_sums(&format!("{at} grad_weight"), &gw, &gw_want, &dyx_scale);
    check_sums(&format!("{at} grad_bias"), &gb, &gb_want, &dy_scale);
    if kind == Kind::CancellingDy {
        // Terms of +-3e38 (the even channels), exact in f32: their sum is
        // exact (0, or 3e38 for an odd row count), no rounding allowed.
        for ch in (0..c).step_by(2) {
            assert_eq!(gb[ch], gb_want[ch], "{at} grad_bias channel {ch}: exact");
        }
    }
    if kind != Kind::CancellingDy {
        let dx = g.grad_input.to_vec().expect("read");
        check_channels(
            &format!("{at} grad_input"),
            &dx,
            &want.grad_input,
            (c, l),
            1e-3,
        );
    }
}

/// The GPU module and its CPU reference with `cfg` and these running
/// statistics, in training or eval.
fn pair(
    ctx: &GpuContext,
    cfg: BatchNormConfig,
    (mean, var): (&[f32], &[f32]),
    train: bool,
) -> (BatchNorm1d, cpu::BatchNorm1d) {
    let mut gpu = BatchNorm1d::new(ctx, cfg.clone()).expect("module");
    let mut reference = cpu::BatchNorm1d::new(cfg).expect("cpu");
    gpu.set_running_mean(mean).expect("mean");
    gpu.set_running_var(var).expect("var");
    reference.set_running_mean(mean).expect("mean");
    reference.set_running_var(var).expect("var");
    if !train {
        gpu.eval();
        reference.eval();
    }
    (gpu, reference)
}

const KINDS: [(Kind, bool); 7] = [
    (Kind::FarFromRunningMean, false),
    (Kind::TinyVariance, false),
    (Kind::HugeDy, false),
    (Kind::HugeDy, true),
    (Kind::CancellingDy, true),
    (Kind::InfiniteDy, false),
    (Kind::InfiniteDy, true),
];

/// Every strategy: the split reductions (per-thread partials or not: the
/// rescue after the finalize step) and the column kernels (one channel
/// per thread, four, four of odd C; rows in registers or not).
#[test]
fn overflowing_gradient_sums_match_the_reference() {
    let shapes: [&[usize]; 17] = [
        &[64, 2],
        &[6, 2],
        &[16, 2, 5],
        &[64, 8],
        &[300, 8],
        &[9, 7],
        &[6, 1024],
        &[32, 1024],
        &[200, 1024],
        &[32, 4095],
        &[4096, 4],
        &[40, 4, 8],
        // C = 1, and one channel of odd L.
        &[4096, 1],
        &[3, 1, 7],
        // Past COLUMN_SMALL values, where the column kernels leave the
        // sums to a rescue dispatch: four channels per thread in 8 rows
        // and in 40, one per thread in 9 (in 2 or 3 rows, dy of 2e37 makes
        // grad_input's slope overflow for channels of a small std: README's
        // limits).
        &[8, 16384],
        &[40, 2048],
        &[9, 7283],
    ];
    for (threads, columns) in [(true, false), (false, false), (true, true)] {
        let Some(ctx) = context_tuned(Some(threads), Some(columns)) else {
            return;
        };
        for shape in shapes {
            for (kind, train) in KINDS {
                case(&ctx, shape, kind, train);
            }
        }
    }
}

/// A shard's gradient sums alone (`shard_grad_sums`: the sums-only
/// backward, which the column kernels of one channel per thread do with
/// `grads_columns`, then the rescue) against the reference's grad_bias and
/// grad_weight, for small inputs (redone in the kernel) and large ones.
#[test]
fn overflowing_shard_sums_match_the_reference() {
    for columns in [false, true] {
        let Some(ctx) = context_tuned(None, Some(columns)) else {
            return;
        };
        for shape in [&[6usize, 2][..], &[9, 7], &[9, 7283], &[300, 8]] {
            for kind in [Kind::HugeDy, Kind::CancellingDy, Kind::InfiniteDy] {
                let Inputs { x, dy, cfg, .. } = inputs(shape, kind);
                let mut gpu = BatchNorm1d::new(&ctx, cfg.clone()).expect("module");
                let mut reference = cpu::BatchNorm1d::new(cfg).expect("cpu");
                let xt = Tensor::from_slice(&ctx, &x, shape).expect("x");
                let moments = gpu.shard_moments(&xt).expect("moments");
                gpu.forward_with_moments(&xt, &moments).expect("forward");
                let dyt = Tensor::from_slice(&ctx, &dy, shape).expect("dy");
                let sums = gpu.shard_grad_sums(&dyt).expect("sums");
                reference.forward(&x, shape).expect("cpu forward");
                let want = reference.backward(&dy).expect("cpu backward");
                let at = format!("shard {kind:?} columns {columns} {shape:?}");
                let f32s = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<_>>();
                let (gw, gb) = (f32s(&sums.sum_dy_xhat), f32s(&sums.sum_dy));
                let gw_want = want.grad_weight.expect("affine");
                let gb_want = want.grad_bias.expect("affine");
                let (dy_scale, dyx_scale) = term_scales(&inputs(shape, kind), shape, true);
                check_sums(&format!("{at} sum_dy_xhat"), &gw, &gw_want, &dyx_scale);
                check_sums(&format!("{at} sum_dy"), &gb, &gb_want, &dy_scale);
            }
        }
    }
}

/// Through a fused forward (residual add and ReLU): the backward takes dy
/// through the epilogue into a scratch tensor first, and every kernel
/// that sums, or redoes the sums, must read that one.
#[test]
fn overflowing_sums_through_a_fused_epilogue_match_the_reference() {
    let Some(ctx) = context_tuned(None, None) else {
        return;
    };
    for shape in [&[8usize, 64][..], &[8, 16384], &[300, 8]] {
        for kind in [Kind::HugeDy, Kind::CancellingDy, Kind::InfiniteDy] {
            let inp = inputs(shape, kind);
            let (dy_scale, dyx_scale) = term_scales(&inp, shape, true);
            let c = shape[1];
            let residual = Rng(7).normals(inp.x.len(), 0.0, 1.0);
            let (mut gpu, mut reference) = pair(&ctx, inp.cfg, (&inp.mean, &inp.var), true);
            let xt = Tensor::from_slice(&ctx, &inp.x, shape).expect("x");
            let rt = Tensor::from_slice(&ctx, &residual, shape).expect("residual");
            gpu.forward_fused(&xt, Epilogue::relu().with_residual(&rt))
                .expect("forward");
            let format = MemoryFormat::ChannelsFirst;
            reference
                .forward_fused(&inp.x, shape, format, Some(&residual), true)
                .expect("cpu forward");
            let g = gpu
                .backward(&Tensor::from_slice(&ctx, &inp.dy, shape).expect("dy"))
                .expect("backward");
            let want = reference.backward(&inp.dy).expect("cpu backward");
            let at = format!("fused {kind:?} {shape:?}");
            let gw = g.grad_weight.expect("affine").to_vec().expect("read");
            let gb = g.grad_bias.expect("affine").to_vec().expect("read");
            // (The scales of the unmasked dy: a bound on the masked sums'.)
            let gw_want = want.grad_weight.expect("affine");
            check_sums(&format!("{at} grad_weight"), &gw, &gw_want, &dyx_scale);
            let gb_want = want.grad_bias.expect("affine");
            check_sums(&format!("{at} grad_bias"), &gb, &gb_want, &dy_scale);
            if kind != Kind::CancellingDy {
                let dx = g.grad_input.to_vec().expect("read");
                let want_dx = &want.grad_input;
                check_channels(&format!("{at} grad_input"), &dx, want_dx, (c, 1), 1e-3);
            }
        }
    }
}

/// Tensors in many chunks (64 KiB bindings): the careful sums of a channel
/// whose values span several chunks, some starting inside a row, carried
/// from chunk to chunk; on a device with WebGPU's downlevel limits (four
/// storage buffers per stage, which the rescue kernels fit).
#[test]
fn overflowing_sums_across_chunks_match_the_reference() {
    if common::context().is_none() {
        return;
    }
    let mut opts = common::options();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: 64 * 1024,
        ..wgpu::Limits::downlevel_defaults()
    });
    let ctx = GpuContext::with_options(opts).expect("context with small bindings");
    for shape in [&[3000usize, 37][..], &[40, 3, 500], &[3, 2, 20_001]] {
        for (kind, train) in KINDS {
            case(&ctx, shape, kind, train);
        }
    }
}

/// Long walks: a channel's careful sums over more values than one loop may
/// run on Mesa's llvmpipe (65535 iterations per invocation in all, after
/// which every loop ends silently: one thread per channel summed 21845
/// rows, so grad_bias of a NaN-poisoned channel of 30000 rows came out
/// 21845), in windows of rows and of pieces of long rows, with one chunk
/// and with chunks of 25024 values.
#[test]
fn overflowing_sums_of_long_channels_match_the_reference() {
    let Some(ctx) = common::context() else { return };
    let mut opts = common::options();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: 100_096,
        ..wgpu::Limits::default()
    });
    let chunked = GpuContext::with_options(opts).expect("context with small bindings");
    let long: [&[usize]; 3] = [&[30_000, 2], &[1, 1, 100_001], &[100, 2, 1001]];
    // Chunks of 25024 values: starting inside a row, a run that enters the
    // chunk part-way (pieces of runs longer than a window), and runs
    // shorter than a window walked across rows and chunk edges.
    let edges: [&[usize]; 3] = [&[32_763, 1], &[3, 2, 20_001], &[40, 3, 1001]];
    for (ctx, shapes) in [(&ctx, &long[..]), (&chunked, &edges[..])] {
        for shape in shapes {
            for (kind, train) in [KINDS[2], KINDS[3], KINDS[6]] {
                case(ctx, shape, kind, train);
            }
            // A NaN in channel 0's x takes it to the rescue: grad_bias is
            // still the exact count of its dy of 1.
            let numel: usize = shape.iter().product();
            let mut x: Vec<f32> = (0..numel).map(|i| (i % 101) as f32 / 50.0).collect();
            x[0] = f32::NAN;
            let mut bn = BatchNorm1d::new(ctx, BatchNormConfig::new(shape[1])).expect("bn");
            bn.forward(&Tensor::from_slice(ctx, &x, shape).expect("x"))
                .expect("forward");
            let dy = Tensor::from_slice(ctx, &vec![1.0; numel], shape).expect("dy");
            let g = bn.backward(&dy).expect("backward");
            let gb = g.grad_bias.expect("affine").to_vec().expect("read");
            let per_channel = (numel / shape[1]) as f32;
            assert!(gb.iter().all(|&v| v == per_channel), "{shape:?}: {gb:?}");
        }
    }
}

/// f16 tensors (read as f32 by the careful walk): in eval, values against
/// a running mean of -3e38 with a running variance of 0 give x_hat past
/// f32's range (x - mean = 3e38, invstd 316) while dy * x_hat is not.
#[cfg(feature = "f16")]
#[test]
fn overflowing_sums_of_f16_tensors_match_the_reference() {
    use half::f16;
    for columns in [false, true] {
        let Some(ctx) = context_tuned(None, Some(columns)) else {
            return;
        };
        if !common::f16_or_skip(&ctx) {
            return;
        }
        // (64x2048: past 2^16 values, the column kernels' rescue.)
        for shape in [&[64usize, 8][..], &[32, 1024], &[64, 2048], &[16, 6, 5]] {
            let numel: usize = shape.iter().product();
            let c = shape[1];
            let mut rng = Rng(numel as u64);
            let half = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
            let x16 = half(rng.normals(numel, 0.0, 100.0));
            let dy16 = half(rng.normals(numel, 0.0, 1e-3));
            let f32s = |v: &[f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<_>>();
            let (x, dy) = (f32s(&x16), f32s(&dy16));
            let mean: Vec<f32> = (0..c)
                .map(|ch| if ch % 2 == 0 { -3e38 } else { 0.5 })
                .collect();
            let var = vec![0.0f32; c];
            let cfg = BatchNormConfig::new(c);
            let (mut gpu, mut reference) = pair(&ctx, cfg, (&mean, &var), false);
            gpu.forward(&Tensor::from_f16(&ctx, &x16, shape).expect("x"))
                .expect("forward");
            reference.forward(&x, shape).expect("cpu forward");
            let g = gpu
                .backward(&Tensor::from_f16(&ctx, &dy16, shape).expect("dy"))
                .expect("backward");
            let want = reference.backward(&dy).expect("cpu backward");
            let at = format!("f16 columns {columns} {shape:?}");
            let gw = g.grad_weight.expect("affine").to_vec().expect("read");
            let gb = g.grad_bias.expect("affine").to_vec().expect("read");
            common::check_per_channel(
                &format!("{at} grad_weight"),
                &gw,
                &want.grad_weight.expect("affine"),
                c,
                1e-3,
            );
            common::check_per_channel(
                &format!("{at} grad_bias"),
                &gb,
                &want.grad_bias.expect("affine"),
                c,
                1e-3,
            );
            let dx = g.grad_input.to_vec().expect("read");
            check_close(
                &format!("{at} grad_input"),
                &dx,
                &common::f64s(&want.grad_input),
                3e-3,
            )
            .expect("grad_input");
        }
    }
}

/// Subnormal dy (1e-40) against x_hat past f32's range (eval, running
/// variance 0, eps 1e-30, x about 1e30): the careful sums take each
/// subnormal's exact fraction and exponent (WGSL leaves `frexp` of
/// subnormals undefined). Only where the adapter keeps subnormals (CPU
/// adapters; GPUs may flush them to zero, as WGSL allows).
#[test]
fn subnormal_gradients_keep_their_terms() {
    for columns in [false, true] {
        let Some(ctx) = context_tuned(None, Some(columns)) else {
            return;
        };
        let cpu_adapter = ctx
            .adapter_info()
            .is_some_and(|i| i.device_type == wgpu::DeviceType::Cpu);
        if !cpu_adapter {
            common::skip(
                "subnormal_gradients_keep_their_terms",
                "adapter may flush subnormals",
            );
            return;
        }
        let (shape, c) = ([64usize, 8], 8);
        let mut rng = Rng(3);
        let x: Vec<f32> = rng
            .normals(512, 0.0, 1.0)
            .iter()
            .map(|v| v * 1e30)
            .collect();
        let dy: Vec<f32> = rng
            .normals(512, 0.0, 1.0)
            .iter()
            .map(|v| v * 1e-40)
            .collect();
        let mut cfg = BatchNormConfig::new(c);
        cfg.eps = 1e-30;
        let (mut gpu, mut reference) = pair(&ctx, cfg, (&[0.0; 8], &[0.0; 8]), false);
        gpu.forward(&Tensor::from_slice(&ctx, &x, &shape).expect("x"))
            .expect("forward");
        reference.forward(&x, &shape).expect("cpu forward");
        let g = gpu
            .backward(&Tensor::from_slice(&ctx, &dy, &shape).expect("dy"))
            .expect("backward");
        let want = reference.backward(&dy).expect("cpu backward");
        let gw = g.grad_weight.expect("affine").to_vec().expect("read");
        let want = common::f64s(&want.grad_weight.expect("affine"));
        check_close(&format!("columns {columns} grad_weight"), &gw, &want, 1e-4)
            .expect("matches the reference");
    }
}
