//! Tensors larger than one storage binding are processed in chunks of rows.
//! A device created with a tiny `max_storage_buffer_binding_size` forces
//! many chunks on small shapes; results must equal the CPU reference.

mod common;

use wgpu_batchnorm::GpuContext;

fn small_binding_context() -> Option<GpuContext> {
    binding_context(64 * 1024)
}

fn binding_context(bytes: u64) -> Option<GpuContext> {
    common::context()?;
    let mut opts = common::options();
    opts.limits = Some(wgpu::Limits {
        max_storage_buffer_binding_size: bytes,
        ..wgpu::Limits::default()
    });
    Some(GpuContext::with_options(opts).expect("context with small bindings"))
}

use wgpu_batchnorm::wgpu;

fn compare(ctx: &GpuContext, shape: &[usize], seed: u64) {
    common::assert_matches_reference(ctx, shape, &[true, false], seed, 5.0, 2.0);
}

#[test]
fn chunked_2d_matches_reference() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[3000, 37], 1);
    compare(&ctx, &[20000, 3], 2);
    // C % 4 == 0: four channels per reduction thread, in chunks of whole
    // rows (paired lanes on CPU adapters from C = 64), or, where a row is
    // long next to a chunk, rows cut by chunks (sweeping on CPU adapters).
    compare(&ctx, &[3000, 36], 7);
    compare(&ctx, &[1000, 64], 8);
    compare(&ctx, &[2000, 68], 9);
    compare(&ctx, &[60, 516], 10);
}

#[test]
fn chunked_3d_matches_reference() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[300, 5, 17], 3);
    compare(&ctx, &[40, 3, 500], 4);
}

#[test]
fn rows_larger_than_a_binding_are_split() {
    let Some(ctx) = small_binding_context() else {
        return;
    };
    compare(&ctx, &[3, 2, 20_001], 5);
    compare(&ctx, &[20, 900], 6);
}

/// Chunks of whole rows large enough for per-thread partials: the paired
/// lanes of CPU adapters over every chunk (plan tests check the plan).
#[test]
fn paired_lanes_span_chunks_of_whole_rows() {
    let Some(ctx) = binding_context(1 << 20) else {
        return;
    };
    compare(&ctx, &[10_000, 68], 11);
    compare(&ctx, &[5_000, 128], 12);
}

/// Chunks of planes and masked runs that spread a workgroup over up to
/// eight channels on CPU adapters: many channels, short masked runs, and long
/// planes cut by a chunk mid-run (plan tests check the plan).
#[test]
fn spread_reductions_span_chunks() {
    let Some(ctx) = binding_context(1 << 20) else {
        return;
    };
    compare(&ctx, &[40, 130, 100], 13);
    compare(&ctx, &[8000, 3, 21], 14);
    compare(&ctx, &[40, 3, 4100], 15);
}

/// A first row longer than one binding (here 16384 values): each channel's
/// shift is its first value wherever the row's chunks put it, so data far
/// from 0 keeps its statistics (channels past the first binding took a
/// shift of 0: `1e7 + 0..4` got a running variance of 2.36 instead of
/// 2.0001 and outputs in steps of 0.5), with per-thread partials or
/// without, and through the shard protocol. (Rows of `(N, C)` and
/// channels-last rows are C values: a module's state, 16 bytes a channel,
/// would not fit one binding first.)
#[test]
fn rows_larger_than_a_binding_keep_each_channels_shift() {
    use wgpu_batchnorm::{
        BatchNorm2d, BatchNormConfig, MemoryFormat, Rank2d, ShardMoments, Tensor,
    };
    for thread_partials in [None, Some(false), Some(true)] {
        let Some(_) = common::context() else { return };
        let mut opts = common::options();
        opts.limits = Some(wgpu::Limits {
            max_storage_buffer_binding_size: 64 * 1024,
            ..wgpu::Limits::default()
        });
        opts.tuning.thread_partials = thread_partials;
        let ctx = GpuContext::with_options(opts).expect("context");
        common::assert_matches_reference(&ctx, &[3, 2, 20_001], &[true], 11, 1e4, 0.1);
        common::assert_matches_reference(&ctx, &[1, 3, 30_000], &[true], 12, -3e4, 1.0);
        common::assert_matches_reference_in::<Rank2d>(
            &ctx,
            &[1, 3, 130, 129],
            MemoryFormat::ChannelsFirst,
            &[true, false],
            13,
            1e4,
            0.1,
        );
        // 1e7 + 0, 1, 2, 3, 4 repeated in each channel: biased variance 2.
        let (c, l) = (2usize, 20_000usize);
        let x: Vec<f32> = (0..c * l).map(|i| 1e7 + ((i % l) % 5) as f32).collect();
        let cfg = BatchNormConfig::new(c).momentum(Some(1.0));
        let mut bn = BatchNorm2d::new(&ctx, cfg.clone()).expect("bn");
        let tx = Tensor::from_slice(&ctx, &x, &[1, c, 1, l]).expect("x");
        let y = bn.forward(&tx).expect("forward").to_vec().expect("read");
        let rv = bn.running_var().expect("rv").expect("tracked");
        let unbiased = 2.0 * l as f32 / (l - 1) as f32;
        assert!(rv.iter().all(|v| (v - unbiased).abs() < 1e-4), "{rv:?}");
        let step = 1.0 / 2f32.sqrt();
        for (k, v) in y[l..l + 5].iter().enumerate() {
            assert!(
                (v - (k as f32 - 2.0) * step).abs() < 1e-4,
                "{:?}",
                &y[l..l + 5]
            );
        }
        let mut shard = BatchNorm2d::new(&ctx, cfg).expect("shard");
        let m = shard.shard_moments(&tx).expect("moments");
        assert!(
            (0..c).all(|ch| (m.variance(ch).unwrap_or(0.0) - 2.0).abs() < 1e-5),
            "{m:?}"
        );
        let merged = ShardMoments::merge(&[m]).expect("merge");
        let ys = shard.forward_with_moments(&tx, &merged).expect("forward");
        let ys = ys.to_vec().expect("read");
        assert!(ys.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-4));
        // A constant channel of 1e21 has variance 0.
        let t = Tensor::from_slice(&ctx, &vec![1e21f32; c * l], &[1, c, 1, l]).expect("x");
        bn.forward(&t).expect("constant");
        assert_eq!(bn.running_var().expect("rv"), Some(vec![0.0; c]));
        // f16 (32768 values a binding): 1500 + 0..4, the gather in f16.
        #[cfg(feature = "f16")]
        if common::f16_or_skip(&ctx) {
            let h: Vec<half::f16> = (0..c * l)
                .map(|i| half::f16::from_f32(1500.0 + ((i % l) % 5) as f32))
                .collect();
            let t = Tensor::from_f16(&ctx, &h, &[1, c, 1, l]).expect("x16");
            let y = bn.forward(&t).expect("f16").to_vec_f16().expect("read");
            for (k, v) in y[l..l + 5].iter().enumerate() {
                let want = (k as f32 - 2.0) * step;
                assert!((v.to_f32() - want).abs() < 2e-3, "{:?}", &y[l..l + 5]);
            }
        }
    }
}

/// Many partial states per channel (chunks of small bindings, each with
/// its segments): the finalize step and `shard_moments` merge every one
/// (one thread per channel stopped after about 11000 states on llvmpipe,
/// which ends an invocation's loops after 65535 iterations: a ramp's mean
/// came out 0.33 instead of 0.5). Ramps `x = n / N + c`: mean `c + (N - 1)
/// / 2N`, biased variance `(1 - 1 / N^2) / 12`.
#[test]
fn long_merges_keep_every_partial_state() {
    use wgpu_batchnorm::{BatchNorm1d, BatchNormConfig, Tensor};
    for (shape, binding) in [
        (vec![1_398_096usize, 12], 4u64 << 20),
        (vec![436_906, 1, 3], 1 << 20),
    ] {
        let Some(ctx) = binding_context(binding) else {
            return;
        };
        let (n, c) = (shape[0], shape[1]);
        let l: usize = shape[2..].iter().product();
        let x: Vec<f32> = (0..n * c * l)
            .map(|i| {
                let (row, ch) = (i / (c * l), i / l % c);
                (row * l + i % l) as f32 / (n * l) as f32 + ch as f32
            })
            .collect();
        let count = (n * l) as f64;
        let mean = |ch: usize| ch as f64 + (count - 1.0) / (2.0 * count);
        let var = (1.0 - 1.0 / (count * count)) / 12.0;
        let t = Tensor::from_slice(&ctx, &x, &shape).expect("x");
        let cfg = BatchNormConfig::new(c).momentum(Some(1.0));
        let mut bn = BatchNorm1d::new(&ctx, cfg).expect("bn");
        bn.forward(&t).expect("forward");
        let rm = bn.running_mean().expect("rm").expect("tracked");
        let rv = bn.running_var().expect("rv").expect("tracked");
        for ch in 0..c {
            let at = format!("{shape:?} at {binding}, channel {ch}: {rm:?} {rv:?}");
            assert!((f64::from(rm[ch]) - mean(ch)).abs() < 1e-4, "{at}");
            let unbiased = var * count / (count - 1.0);
            assert!((f64::from(rv[ch]) - unbiased).abs() < 1e-4, "{at}");
        }
        let m = bn.shard_moments(&t).expect("moments");
        for ch in 0..c {
            let at = format!("{shape:?} at {binding}: shard {m:?}");
            assert!((m.mean[ch] - mean(ch)).abs() < 1e-4, "{at}");
            assert!((m.variance(ch).unwrap_or(0.0) - var).abs() < 1e-4, "{at}");
        }
    }
}
