//! One named test per finding of the reliability review (issue #12); the
//! shard findings (2, 3, 10) are in `tests/shard.rs`, those about work
//! recorded into an application's encoder (4, 6) in `tests/recorded_work.rs`.

mod common;

use wgpu_batchnorm::{
    cpu, wgpu, BatchNorm1d, BatchNormConfig, Error, GpuContext, ShardMoments, Tensor,
};

fn f64s(v: &[f32]) -> Vec<f64> {
    common::f64s(v)
}

/// #12.1: a constant channel of huge values normalizes to the bias, with
/// finite gradients (was NaN: eps * scale^2 underflowed).
#[test]
fn constant_huge_channel_normalizes_to_the_bias() {
    let Some(ctx) = common::context() else { return };
    for value in [1e21f32, -3e30, 1e38, 1e-30, 0.0] {
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(1)).expect("bn");
        bn.set_bias(&[0.5]).expect("bias");
        let x = Tensor::from_slice(&ctx, &[value; 4], &[4, 1]).expect("x");
        let y = bn.forward(&x).expect("forward").to_vec().expect("read");
        assert_eq!(y, vec![0.5; 4], "x = {value}");
        let dy = Tensor::from_slice(&ctx, &[1.0, -2.0, 0.5, 3.0], &[4, 1]).expect("dy");
        let g = bn.backward(&dy).expect("backward");
        let dx = g.grad_input.to_vec().expect("read");
        assert!(dx.iter().all(|v| v.is_finite()), "x = {value}: {dx:?}");
        assert_eq!(
            g.grad_bias.expect("affine").to_vec().expect("read"),
            vec![2.5]
        );
        let rm = bn.running_mean().expect("rm").expect("some");
        assert_eq!(rm, vec![(0.1 * f64::from(value)) as f32], "x = {value}");
    }
}

/// #12.8: values far from the channel's first value, in any order, keep
/// exact statistics (was: the scale came from the first value only, so
/// `[0, 1e20, -1e20, 1e20]` overflowed M2 and normalized to the bias).
#[test]
fn outliers_far_from_the_first_value_keep_exact_statistics() {
    let Some(ctx) = common::context() else { return };
    let columns: Vec<Vec<f32>> = vec![
        vec![0.0, 1e20, -1e20, 1e20],
        vec![1.0, 2.0, 3e25, 4.0, -5e30, 6.0, 7.0, 8.0],
        vec![1e-3, 1e10, 1e20, 1e30, 1e37, 0.0, -3e36, 5.0],
        vec![3.0, 3.0, 3.0, 1e19, 3.0, 3.0],
    ];
    for col in columns {
        let n = col.len();
        // The column in channel 0; a well-behaved channel beside it, in
        // every layout: (N, 2), (N, 2, 1), (N, 2, 4) (a vec4 per row).
        for l in [1usize, 4] {
            let shape = if l == 1 { vec![n, 2] } else { vec![n, 2, l] };
            let data: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let a = std::iter::repeat_n(col[i], l);
                    let b = (0..l).map(move |k| (i * l + k) as f32 * 0.25);
                    a.chain(b)
                })
                .collect();
            let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(2)).expect("bn");
            let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(2)).expect("cpu");
            let y = gpu
                .forward(&Tensor::from_slice(&ctx, &data, &shape).expect("x"))
                .expect("forward")
                .to_vec()
                .expect("read");
            let want = reference.forward(&data, &shape).expect("cpu");
            common::check_close(&format!("{col:?} l={l}"), &y, &f64s(&want), 1e-5).expect("output");
            let rm = gpu.running_mean().expect("rm").expect("some");
            let want_rm = f64s(&reference.running_mean().expect("some"));
            common::check_close(
                &format!("{col:?} l={l} running_mean {rm:?} vs {want_rm:?}"),
                &rm,
                &want_rm,
                1e-5,
            )
            .expect("running_mean");
        }
    }
}

/// #12.4: an error of the application's own work on a device the library
/// made is returned by the next library call, once.
#[test]
fn uncaptured_device_errors_are_returned_not_dropped() {
    let Some(_) = common::context() else { return };
    let ctx = GpuContext::with_options(common::options()).expect("own context");
    // The application's own invalid work: a copy past the end of a buffer.
    let small = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test/small"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    encoder.copy_buffer_to_buffer(&small, 0, &small, 8, 64);
    ctx.queue().submit([encoder.finish()]);
    let err = Tensor::zeros(&ctx, &[4]).expect_err("the app's error comes back");
    assert!(matches!(err, Error::Uncaptured(_)), "{err}");
    Tensor::zeros(&ctx, &[4]).expect("once only");
}

/// #12.5: what a successful forward saved stays intact until the next
/// successful forward, whatever runs in between.
#[test]
fn unrelated_calls_do_not_change_a_later_backward() {
    let Some(ctx) = common::context() else { return };
    let cfg = BatchNormConfig::new(4)
        .affine(false)
        .track_running_stats(false);
    let mut rng = common::Rng(12);
    let x = Tensor::from_slice(&ctx, &rng.normals(32, 1.0, 2.0), &[8, 4]).expect("x");
    let wide = Tensor::from_slice(&ctx, &rng.normals(512, 0.0, 1.0), &[8, 64]).expect("wide");
    let dy = Tensor::from_slice(&ctx, &rng.normals(32, 0.0, 1.0), &[8, 4]).expect("dy");
    let run = |interleave: bool| {
        let mut bn = BatchNorm1d::new(&ctx, cfg.clone()).expect("bn");
        bn.forward(&x).expect("forward");
        if interleave {
            bn.shard_moments(&wide).expect("moments");
            bn.eval();
            assert!(bn
                .forward(&Tensor::zeros(&ctx, &[1, 4]).expect("x"))
                .is_err());
            bn.train();
        }
        bn.backward(&dy)
            .expect("backward")
            .grad_input
            .to_vec()
            .expect("read")
    };
    assert_eq!(run(true), run(false));
}

/// #12 (review): threads whose values stay far from the shift but near
/// their own mean (a large M2 in the starting units, with a mean near 0)
/// merge without overflow: `[a, -a, a, -a]` rows with `a = 2^58` after a
/// first row of zeros normalize to +-1, not to the bias, in every layout
/// and on many rows (several threads and workgroups per channel).
#[test]
fn large_spreads_around_the_shift_merge_without_overflow() {
    let Some(ctx) = common::context() else { return };
    let a = 2f32.powi(58);
    for (n, l) in [(4097usize, 4usize), (4097, 1), (1025, 12), (300, 7)] {
        let shape = if l == 1 { vec![n, 4] } else { vec![n, 4, l] };
        let c = 4;
        let data: Vec<f32> = (0..n * c * l)
            .map(|i| {
                let (row, ch, k) = (i / (c * l), (i / l) % c, i % l);
                match (ch, row) {
                    (0 | 2, 0) => 0.0,
                    (0 | 2, _) => {
                        if (row * l + k) % 2 == 0 {
                            a
                        } else {
                            -a
                        }
                    }
                    _ => (i % 13) as f32 * 0.5,
                }
            })
            .collect();
        let mut gpu = BatchNorm1d::new(&ctx, BatchNormConfig::new(c)).expect("bn");
        let mut reference = cpu::BatchNorm1d::new(BatchNormConfig::new(c)).expect("cpu");
        let x = Tensor::from_slice(&ctx, &data, &shape).expect("x");
        let y = gpu.forward(&x).expect("forward").to_vec().expect("read");
        let want = reference.forward(&data, &shape).expect("cpu");
        common::check_close(&format!("{shape:?} output"), &y, &f64s(&want), 1e-4).expect("output");
        let rv = gpu.running_var().expect("rv").expect("some");
        let want_rv = f64s(&reference.running_var().expect("some"));
        common::check_close(&format!("{shape:?} running_var"), &rv, &want_rv, 1e-4)
            .expect("running_var");
    }
}

/// #12.7: application buffers get the checks library tensors get.
#[test]
fn from_buffer_checks_sizes_and_counts() {
    let Some(ctx) = common::context() else { return };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test/app"),
        size: 256,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let huge = [1usize << 16, 1 << 16, 2];
    assert!(matches!(
        Tensor::from_buffer(&ctx, buffer.clone(), 0, &huge),
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        Tensor::from_buffer(&ctx, buffer.clone(), 0, &[usize::MAX, 2]),
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        Tensor::from_buffer(&ctx, buffer.clone(), u64::MAX - 3, &[1]),
        Err(Error::Misaligned { .. } | Error::TooLarge(_))
    ));
    assert!(matches!(
        Tensor::from_buffer(&ctx, buffer.clone(), 0, &[65]),
        Err(Error::LengthMismatch { .. })
    ));
    Tensor::from_buffer(&ctx, buffer, 0, &[64]).expect("fits exactly");
}

/// #12.9: the awaiting thread stays idle while the GPU works (no
/// busy-polling): its CPU time is a small part of the wall time.
#[cfg(target_os = "linux")]
#[test]
fn async_read_back_waits_without_spinning() {
    let Some(ctx) = common::context() else { return };
    fn thread_cpu_seconds() -> f64 {
        // utime + stime of this thread, in clock ticks (field 14, 15).
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let ticks: f64 =
            f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }
    let shape = [1 << 20, 16];
    let x = Tensor::zeros(&ctx, &shape).expect("x");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(16)).expect("bn");
    let y = Tensor::zeros(&ctx, &shape).expect("y");
    // Queue enough work that the read waits a while: more on faster
    // adapters, until the whole takes at least 0.2 s.
    for round in 0..6 {
        let start = std::time::Instant::now();
        let cpu0 = thread_cpu_seconds();
        for _ in 0..(6usize << (2 * round)) {
            bn.forward_into(&x, &y).expect("forward");
        }
        let queued = thread_cpu_seconds() - cpu0;
        let cpu1 = thread_cpu_seconds();
        let v = pollster::block_on(y.to_vec_async()).expect("read");
        let waited = thread_cpu_seconds() - cpu1;
        let wall = start.elapsed().as_secs_f64();
        assert_eq!(v.len(), 1 << 24);
        if wall < 0.2 {
            continue;
        }
        assert!(
            waited < 0.25 * wall + 0.05,
            "the awaiting thread used {waited:.3} s of CPU in {wall:.3} s (recording took {queued:.3} s)"
        );
        return;
    }
    panic!("24,576 forwards of 16M values took under 0.2 s: too little work to measure");
}

/// #12.11: backward refuses an input that was overwritten through the
/// library after the forward; with `keep_input_copy` it differentiates the
/// forward's own copy.
#[test]
fn backward_detects_an_overwritten_input() {
    let Some(ctx) = common::context() else { return };
    let mut rng = common::Rng(11);
    let (d1, d2) = (rng.normals(32, 1.0, 2.0), rng.normals(32, -3.0, 0.5));
    let dy = Tensor::from_slice(&ctx, &rng.normals(32, 0.0, 1.0), &[8, 4]).expect("dy");
    let want = {
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        bn.forward(&Tensor::from_slice(&ctx, &d1, &[8, 4]).expect("x"))
            .expect("fwd");
        bn.backward(&dy)
            .expect("bw")
            .grad_input
            .to_vec()
            .expect("read")
    };
    // Ping-pong buffers: the input is refilled after the forward.
    let x = Tensor::from_slice(&ctx, &d1, &[8, 4]).expect("x");
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    bn.forward(&x).expect("forward");
    x.write_from_slice(&d2).expect("refill");
    assert!(matches!(
        bn.backward(&dy),
        Err(Error::ModifiedSinceForward { what: "input" })
    ));
    // Used as another forward's output: the same.
    bn.forward(&x).expect("forward");
    let mut other = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    other.forward_into(&dy, &x).expect("overwrites x");
    assert!(bn.backward(&dy).is_err());
    // With a copy kept, the refill does not matter.
    let x = Tensor::from_slice(&ctx, &d1, &[8, 4]).expect("x");
    let mut kept = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
    kept.keep_input_copy(true);
    kept.forward(&x).expect("forward");
    x.write_from_slice(&d2).expect("refill");
    let got = kept
        .backward(&dy)
        .expect("backward")
        .grad_input
        .to_vec()
        .expect("read");
    assert_eq!(got, want);
}

/// #12.12: a destroyed device is `DeviceLost` from the first call that
/// waits on it (wgpu reports a loss only through its lost callback, which
/// runs once the device is idle; errors of a lost device are not
/// reported), and on every call after that.
#[test]
fn a_destroyed_device_is_lost_from_the_first_wait() {
    let Some(_) = common::context() else { return };
    for wait in ["to_vec", "synchronize", "running_mean"] {
        let ctx = GpuContext::with_options(common::options()).expect("own context");
        let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(4)).expect("bn");
        let x = Tensor::zeros(&ctx, &[8, 4]).expect("x");
        let y = bn.forward(&x).expect("forward before loss");
        ctx.device().destroy();
        let first = match wait {
            "to_vec" => y.to_vec().map(|_| ()),
            "synchronize" => ctx.synchronize(),
            _ => bn.running_mean().map(|_| ()),
        };
        assert!(
            matches!(first, Err(Error::DeviceLost(_))),
            "{wait}: {first:?}"
        );
        assert!(
            matches!(bn.forward(&x), Err(Error::DeviceLost(_))),
            "{wait}"
        );
        assert!(matches!(
            Tensor::zeros(&ctx, &[2]),
            Err(Error::DeviceLost(_))
        ));
        assert_eq!(bn.num_batches_tracked(), 1);
    }
}

/// The merged moments a replica receives are checked like any input.
#[test]
fn merged_moments_with_nan_poison_their_channel() {
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(2)).expect("bn");
    let x = Tensor::from_slice(&ctx, &[1.0, 2.0, 3.0, 4.0], &[2, 2]).expect("x");
    let global = ShardMoments {
        count: 2,
        mean: vec![f64::NAN, 3.0],
        m2: vec![f64::NAN, 2.0],
    };
    let y = bn
        .forward_with_moments(&x, &global)
        .expect("forward")
        .to_vec()
        .expect("read");
    assert!(y[0].is_nan() && y[2].is_nan());
    assert!(y[1].is_finite() && y[3].is_finite());
}

/// #12 (review): a training step at `num_batches_tracked == u64::MAX` is
/// an error that changes nothing (was a debug-build panic and a release
/// wrap to 0), on the GPU, through the shard path and on the CPU; eval
/// steps do not count and still work.
#[test]
fn the_batch_count_never_wraps() {
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut cpu_bn = cpu::BatchNorm1d::new(BatchNormConfig::new(3)).expect("cpu");
    cpu_bn.set_num_batches_tracked(u64::MAX);
    assert!(matches!(
        cpu_bn.forward(&x, &[2, 3]),
        Err(Error::TooLarge(_))
    ));
    assert_eq!(cpu_bn.num_batches_tracked(), u64::MAX);
    let Some(ctx) = common::context() else { return };
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(3)).expect("bn");
    bn.set_num_batches_tracked(u64::MAX);
    let t = Tensor::from_slice(&ctx, &x, &[2, 3]).expect("x");
    assert!(matches!(bn.forward(&t), Err(Error::TooLarge(_))));
    let m = bn.shard_moments(&t).expect("moments");
    assert!(matches!(
        bn.forward_with_moments(&t, &m),
        Err(Error::TooLarge(_))
    ));
    assert_eq!(bn.num_batches_tracked(), u64::MAX);
    assert_eq!(bn.running_mean().expect("read"), Some(vec![0.0; 3]));
    bn.eval();
    bn.forward(&t).expect("eval does not count");
}
